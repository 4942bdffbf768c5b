//! `Settings`: the Device object's writable resources the reference device keeps, /3/0/14 UTC
//! Offset and /3/0/15 Timezone (strings), written one at a time in plain text or together by
//! an instance write (partial update) in TLV or SenML, as a stock client takes them. Owns the
//! values and the write's rules; the client routes requests here.

use coap_lite::ResponseType;
use fota_engine::coap::Response;
use fota_engine::lwm2m::{ContentFormat, LwM2mPath, Record, Value, content};

/// /3/0: an instance write here updates the settings it carries.
pub const DEVICE: LwM2mPath = LwM2mPath::instance(3, 0);
/// /3/0/4 Reboot (E).
pub const REBOOT: LwM2mPath = LwM2mPath::resource(3, 0, 4);
/// /3/0/14 UTC Offset (RW).
pub const UTC_OFFSET: LwM2mPath = LwM2mPath::resource(3, 0, 14);
/// /3/0/15 Timezone (RW).
pub const TIMEZONE: LwM2mPath = LwM2mPath::resource(3, 0, 15);

/// The writable values of the Device object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// /3/0/14, e.g. `+01:00`.
    pub utc_offset: String,
    /// /3/0/15, e.g. `Europe/Berlin`.
    pub timezone: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            utc_offset: "+00:00".into(),
            timezone: "Etc/UTC".into(),
        }
    }
}

impl Settings {
    /// The values, at their paths.
    pub fn records(&self) -> [(LwM2mPath, Value); 2] {
        [
            (UTC_OFFSET, Value::String(self.utc_offset.clone())),
            (TIMEZONE, Value::String(self.timezone.clone())),
        ]
    }

    /// True for a path a write may target here.
    pub fn writable(path: LwM2mPath) -> bool {
        [DEVICE, UTC_OFFSET, TIMEZONE].contains(&path)
    }

    /// Applies a write of `payload` (Content-Format `format`, plain text when absent) to
    /// `path`, every value or none: 2.04, or the error answered.
    pub fn write(&mut self, path: LwM2mPath, format: Option<u16>, payload: &[u8]) -> Response {
        let number = format.unwrap_or(ContentFormat::TextPlain.number());
        let Some(format) = ContentFormat::from_number(number) else {
            return Response::error(ResponseType::UnsupportedContentFormat, "unknown format");
        };
        let records = match content::decode(format, &path, payload) {
            Ok(records) => records,
            Err(error) => return Response::error(ResponseType::BadRequest, error.to_string()),
        };
        let mut written = self.clone();
        for Record { path, value } in records {
            let Ok(text) = value.as_string() else {
                return Response::error(ResponseType::BadRequest, format!("{path}: not a string"));
            };
            match path {
                UTC_OFFSET => written.utc_offset = text,
                TIMEZONE => written.timezone = text,
                other => {
                    return Response::error(
                        ResponseType::MethodNotAllowed,
                        format!("{other} is not writable"),
                    );
                }
            }
        }
        *self = written;
        Response::new(ResponseType::Changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_take_text_and_instances_and_refuse_the_rest_whole() {
        let mut settings = Settings::default();
        let answer = settings.write(TIMEZONE, None, b"Europe/Berlin");
        assert_eq!(answer.code, ResponseType::Changed);
        assert_eq!(settings.timezone, "Europe/Berlin");
        let both = [
            Record::new(UTC_OFFSET, Value::String("+01:00".into())),
            Record::new(TIMEZONE, Value::String("Europe/Paris".into())),
        ];
        let tlv = content::encode(ContentFormat::Tlv, &DEVICE, &both).unwrap();
        let answer = settings.write(DEVICE, Some(ContentFormat::Tlv.number()), &tlv);
        assert_eq!(answer.code, ResponseType::Changed);
        assert_eq!(settings.utc_offset, "+01:00");
        assert_eq!(settings.timezone, "Europe/Paris");
        let manufacturer = [
            Record::new(TIMEZONE, Value::String("UTC".into())),
            Record::new(LwM2mPath::resource(3, 0, 0), Value::String("x".into())),
        ];
        let tlv = content::encode(ContentFormat::Tlv, &DEVICE, &manufacturer).unwrap();
        let answer = settings.write(DEVICE, Some(ContentFormat::Tlv.number()), &tlv);
        assert_eq!(answer.code, ResponseType::MethodNotAllowed);
        assert_eq!(settings.timezone, "Europe/Paris", "nothing written");
    }
}
