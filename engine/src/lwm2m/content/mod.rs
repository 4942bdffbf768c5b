//! LwM2M content formats: the `ContentFormat` numbers, the `Value` and `Record` model shared by
//! every format, the `ContentError` they report, and `decode`/`encode`, which dispatch to one
//! module per format. Owns payload bytes only: no CoAP, no knowledge of what a resource means.

pub mod link_format;
pub mod opaque;
mod senml;
pub mod senml_cbor;
pub mod senml_json;
pub mod text;
pub mod tlv;

mod value;

use std::fmt;

pub use link_format::{Link, format_links, parse_links};
pub use value::Value;

use super::LwM2mPath;

/// A CoAP Content-Format an LwM2M peer may use, with its IANA number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentFormat {
    /// `text/plain` (0): one resource as text.
    TextPlain,
    /// `application/link-format` (40): CoRE links, as in registration payloads.
    LinkFormat,
    /// `application/octet-stream` (42): one opaque resource.
    Opaque,
    /// `application/vnd.oma.lwm2m+tlv` (11542): OMA TLV.
    Tlv,
    /// `application/senml+json` (110): SenML JSON (LwM2M 1.1).
    SenmlJson,
    /// `application/senml+cbor` (112): SenML CBOR (LwM2M 1.1).
    SenmlCbor,
    /// `application/vnd.oma.lwm2m+json` (11543): the LwM2M 1.0 JSON format. Recognised only:
    /// `decode` and `encode` report it as unsupported.
    LwM2mJson,
}

impl ContentFormat {
    const ALL: [ContentFormat; 7] = [
        ContentFormat::TextPlain,
        ContentFormat::LinkFormat,
        ContentFormat::Opaque,
        ContentFormat::Tlv,
        ContentFormat::SenmlJson,
        ContentFormat::SenmlCbor,
        ContentFormat::LwM2mJson,
    ];

    /// The format with this IANA Content-Format number, if it is one of ours.
    pub fn from_number(number: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.number() == number)
    }

    /// The IANA Content-Format number.
    pub fn number(self) -> u16 {
        match self {
            ContentFormat::TextPlain => 0,
            ContentFormat::LinkFormat => 40,
            ContentFormat::Opaque => 42,
            ContentFormat::Tlv => 11542,
            ContentFormat::SenmlJson => 110,
            ContentFormat::SenmlCbor => 112,
            ContentFormat::LwM2mJson => 11543,
        }
    }

    /// The media type, e.g. `application/senml+json`.
    pub fn media_type(self) -> &'static str {
        match self {
            ContentFormat::TextPlain => "text/plain",
            ContentFormat::LinkFormat => "application/link-format",
            ContentFormat::Opaque => "application/octet-stream",
            ContentFormat::Tlv => "application/vnd.oma.lwm2m+tlv",
            ContentFormat::SenmlJson => "application/senml+json",
            ContentFormat::SenmlCbor => "application/senml+cbor",
            ContentFormat::LwM2mJson => "application/vnd.oma.lwm2m+json",
        }
    }
}

impl fmt::Display for ContentFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.media_type())
    }
}

/// One value at one path: a resource or a resource instance.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// Where the value lives (absolute, not relative to the request path).
    pub path: LwM2mPath,
    /// The value.
    pub value: Value,
}

impl Record {
    /// A record of `value` at `path`.
    pub fn new(path: LwM2mPath, value: Value) -> Self {
        Record { path, value }
    }
}

/// Why a payload could not be decoded or records could not be encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContentError {
    /// The payload breaks the format at a known byte offset.
    #[error("malformed {format} payload at byte {offset}: {reason}")]
    Malformed {
        /// The format being decoded.
        format: ContentFormat,
        /// Byte offset into the payload where the problem was found.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// The payload is well formed but does not describe valid LwM2M data.
    #[error("invalid {format} payload: {reason}")]
    Invalid {
        /// The format being decoded.
        format: ContentFormat,
        /// What is wrong (names the record where it applies).
        reason: String,
    },
    /// The records cannot be written in this format.
    #[error("cannot encode {format}: {reason}")]
    Encode {
        /// The format being encoded.
        format: ContentFormat,
        /// What is wrong.
        reason: String,
    },
    /// The format carries no values (link format) or is not implemented (LwM2M JSON).
    #[error("{format} is not supported here: {reason}")]
    Unsupported {
        /// The format asked for.
        format: ContentFormat,
        /// Why, and what to use instead.
        reason: &'static str,
    },
    /// A value cannot be read as the type asked for.
    #[error("cannot read {found} value as {expected}: {reason}")]
    Conversion {
        /// The type asked for.
        expected: &'static str,
        /// The kind of value held.
        found: &'static str,
        /// Why it does not convert.
        reason: String,
    },
}

/// Decodes `payload`, the answer to a request on `base`, into one record per value.
///
/// Paths in the records are absolute. Link format is not a value format: use [`parse_links`].
pub fn decode(
    format: ContentFormat,
    base: &LwM2mPath,
    payload: &[u8],
) -> Result<Vec<Record>, ContentError> {
    match format {
        ContentFormat::TextPlain => text::decode(base, payload),
        ContentFormat::Opaque => opaque::decode(base, payload),
        ContentFormat::Tlv => tlv::decode(base, payload),
        ContentFormat::SenmlJson => senml_json::decode(base, payload),
        ContentFormat::SenmlCbor => senml_cbor::decode(base, payload),
        ContentFormat::LinkFormat | ContentFormat::LwM2mJson => Err(unsupported(format)),
    }
}

/// Encodes `records`, all at or below `base`, as the payload of a request on `base`.
///
/// Link format is not a value format: use [`format_links`].
pub fn encode(
    format: ContentFormat,
    base: &LwM2mPath,
    records: &[Record],
) -> Result<Vec<u8>, ContentError> {
    match format {
        ContentFormat::TextPlain => text::encode(base, records),
        ContentFormat::Opaque => opaque::encode(base, records),
        ContentFormat::Tlv => tlv::encode(base, records),
        ContentFormat::SenmlJson => senml_json::encode(base, records),
        ContentFormat::SenmlCbor => senml_cbor::encode(base, records),
        ContentFormat::LinkFormat | ContentFormat::LwM2mJson => Err(unsupported(format)),
    }
}

/// Encodes the paths a composite request (Read-Composite) names, in `format`: SenML JSON or
/// SenML CBOR, the formats LwM2M 1.1 gives composite operations.
pub fn encode_paths(format: ContentFormat, paths: &[LwM2mPath]) -> Result<Vec<u8>, ContentError> {
    match format {
        ContentFormat::SenmlJson => senml_json::encode_paths(paths),
        ContentFormat::SenmlCbor => senml_cbor::encode_paths(paths),
        _ => Err(not_composite(format)),
    }
}

/// Decodes the paths a composite request names, from a `format` payload.
pub fn decode_paths(format: ContentFormat, payload: &[u8]) -> Result<Vec<LwM2mPath>, ContentError> {
    match format {
        ContentFormat::SenmlJson => senml_json::decode_paths(payload),
        ContentFormat::SenmlCbor => senml_cbor::decode_paths(payload),
        _ => Err(not_composite(format)),
    }
}

fn not_composite(format: ContentFormat) -> ContentError {
    ContentError::Unsupported {
        format,
        reason: "composite requests name their paths in SenML JSON or SenML CBOR",
    }
}

fn unsupported(format: ContentFormat) -> ContentError {
    let reason = match format {
        ContentFormat::LinkFormat => {
            "link format carries links, not values: use parse_links and format_links"
        }
        _ => "LwM2M 1.0 JSON is not implemented: use SenML JSON, SenML CBOR or TLV",
    };
    ContentError::Unsupported { format, reason }
}

/// Checks that `base` names one resource or resource instance, as the single-value formats
/// (text, opaque) require.
fn check_single_resource(format: ContentFormat, base: &LwM2mPath) -> Result<(), String> {
    if base.depth() < 3 {
        return Err(format!(
            "{format} carries one resource, but {base} is not a resource path"
        ));
    }
    Ok(())
}

/// The one value a single-value format (text, opaque) encodes: exactly one record, at `base`.
fn single_value<'a>(
    format: ContentFormat,
    base: &LwM2mPath,
    records: &'a [Record],
) -> Result<&'a Value, ContentError> {
    let encode_error = |reason| ContentError::Encode { format, reason };
    check_single_resource(format, base).map_err(encode_error)?;
    match records {
        [record] if record.path == *base => Ok(&record.value),
        [record] => Err(encode_error(format!(
            "the record is at {}, not at the request path {base}",
            record.path
        ))),
        _ => Err(encode_error(format!(
            "{format} carries exactly one value, got {} records",
            records.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for format in ContentFormat::ALL {
            assert_eq!(ContentFormat::from_number(format.number()), Some(format));
        }
        assert_eq!(ContentFormat::from_number(11542), Some(ContentFormat::Tlv));
        assert_eq!(
            ContentFormat::from_number(112),
            Some(ContentFormat::SenmlCbor)
        );
        assert_eq!(ContentFormat::from_number(50), None);
    }

    #[test]
    fn link_format_and_lwm2m_json_are_not_value_formats() {
        let base = LwM2mPath::resource(3, 0, 0);
        for format in [ContentFormat::LinkFormat, ContentFormat::LwM2mJson] {
            let err = decode(format, &base, b"x").unwrap_err();
            assert!(matches!(err, ContentError::Unsupported { .. }), "{err}");
            assert!(encode(format, &base, &[]).is_err());
        }
        let message = decode(ContentFormat::LinkFormat, &base, b"")
            .unwrap_err()
            .to_string();
        assert!(message.contains("parse_links"), "{message}");
    }

    #[test]
    fn dispatch_reaches_each_format() {
        let base = LwM2mPath::resource(3, 0, 9);
        let records = [Record::new(base, Value::Integer(95))];
        for format in [
            ContentFormat::TextPlain,
            ContentFormat::Tlv,
            ContentFormat::SenmlJson,
            ContentFormat::SenmlCbor,
        ] {
            let payload = encode(format, &base, &records).unwrap();
            let decoded = decode(format, &base, &payload).unwrap();
            assert_eq!(decoded.len(), 1, "{format}");
            assert_eq!(decoded[0].path, base);
            assert_eq!(decoded[0].value.as_i64().unwrap(), 95, "{format}");
        }
        let opaque = [Record::new(base, Value::Opaque(vec![1, 2]))];
        let payload = encode(ContentFormat::Opaque, &base, &opaque).unwrap();
        assert_eq!(
            decode(ContentFormat::Opaque, &base, &payload).unwrap(),
            opaque
        );
    }
}
