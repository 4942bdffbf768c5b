//! SenML JSON (`application/senml+json`, content format 110; RFC 8428 as LwM2M 1.1 uses it):
//! translates between JSON text and the shared SenML record model in `senml`.

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value as Json};

use super::senml::{self, SenmlRecord, SenmlValue};
use super::{ContentError, ContentFormat, LwM2mPath, Record};

const FORMAT: ContentFormat = ContentFormat::SenmlJson;

/// base64url as `vd` uses it: written without padding, read with or without.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes a SenML JSON array into records (see the `senml` rules: names resolve to
/// resource paths under `base`, one value per record; `bt`, `t` and unknown labels are
/// ignored, labels ending in `_` are errors).
pub fn decode(base: &LwM2mPath, payload: &[u8]) -> Result<Vec<Record>, ContentError> {
    senml::to_records(FORMAT, base, parse(payload)?)
}

/// Decodes the paths a composite request names (records with names and no values).
pub fn decode_paths(payload: &[u8]) -> Result<Vec<LwM2mPath>, ContentError> {
    senml::to_paths(FORMAT, parse(payload)?)
}

/// The records of a SenML JSON array, as on the wire.
fn parse(payload: &[u8]) -> Result<Vec<SenmlRecord>, ContentError> {
    let json: Json = serde_json::from_slice(payload).map_err(|e| ContentError::Malformed {
        format: FORMAT,
        offset: byte_offset(payload, e.line(), e.column()),
        reason: e.to_string(),
    })?;
    let Json::Array(items) = json else {
        return Err(ContentError::Invalid {
            format: FORMAT,
            reason: "the payload is not a JSON array of records".into(),
        });
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_record(item).map_err(|r| senml::invalid(FORMAT, index, r)))
        .collect()
}

/// The byte offset of a 1-based line and column (serde_json counts columns in bytes).
fn byte_offset(payload: &[u8], line: usize, column: usize) -> usize {
    let line_start: usize = payload
        .split(|b| *b == b'\n')
        .take(line.saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    (line_start + column.saturating_sub(1)).min(payload.len())
}

fn parse_record(item: &Json) -> Result<SenmlRecord, String> {
    let Json::Object(fields) = item else {
        return Err("not a JSON object".into());
    };
    let mut record = SenmlRecord::default();
    for (label, field) in fields {
        match label.as_str() {
            "bn" => record.base_name = Some(text(label, field)?.to_owned()),
            "n" => record.name = Some(text(label, field)?.to_owned()),
            "v" => record.values.push(number(field)?),
            "vs" => record
                .values
                .push(SenmlValue::String(text(label, field)?.to_owned())),
            "vb" => match field {
                Json::Bool(b) => record.values.push(SenmlValue::Bool(*b)),
                _ => return Err("\"vb\" must be true or false".into()),
            },
            "vd" => {
                let data = BASE64URL
                    .decode(text(label, field)?)
                    .map_err(|e| format!("\"vd\" is not base64url: {e}"))?;
                record.values.push(SenmlValue::Data(data));
            }
            "vlo" => record
                .values
                .push(SenmlValue::ObjectLink(text(label, field)?.to_owned())),
            label if label.ends_with('_') => return Err(senml::must_understand(label)),
            _ => {}
        }
    }
    Ok(record)
}

fn text<'a>(label: &str, field: &'a Json) -> Result<&'a str, String> {
    field
        .as_str()
        .ok_or_else(|| format!("{label:?} must be a string"))
}

fn number(field: &Json) -> Result<SenmlValue, String> {
    let Json::Number(n) = field else {
        return Err("\"v\" must be a number".into());
    };
    if let Some(i) = n.as_i64() {
        Ok(SenmlValue::Integer(i))
    } else if let Some(u) = n.as_u64() {
        Ok(SenmlValue::Unsigned(u))
    } else {
        n.as_f64()
            .map(SenmlValue::Float)
            .ok_or_else(|| format!("\"v\" {n} is out of range"))
    }
}

/// Encodes records, all at or below `base`, as a SenML JSON array.
pub fn encode(base: &LwM2mPath, records: &[Record]) -> Result<Vec<u8>, ContentError> {
    write(&senml::from_records(FORMAT, base, records)?)
}

/// Encodes the paths a composite request names, as records with names and no values.
pub fn encode_paths(paths: &[LwM2mPath]) -> Result<Vec<u8>, ContentError> {
    write(&senml::from_paths(paths))
}

/// A SenML JSON array of `senml`.
fn write(senml: &[SenmlRecord]) -> Result<Vec<u8>, ContentError> {
    let items: Vec<Json> = senml.iter().map(to_json).collect();
    serde_json::to_vec(&items).map_err(|e| ContentError::Encode {
        format: FORMAT,
        reason: e.to_string(),
    })
}

fn to_json(record: &SenmlRecord) -> Json {
    let mut fields = Map::new();
    if let Some(bn) = &record.base_name {
        fields.insert("bn".into(), bn.clone().into());
    }
    if let Some(n) = &record.name {
        fields.insert("n".into(), n.clone().into());
    }
    for value in &record.values {
        let (label, json) = match value {
            SenmlValue::Integer(i) => ("v", Json::from(*i)),
            SenmlValue::Unsigned(u) => ("v", Json::from(*u)),
            SenmlValue::Float(f) => ("v", Json::from(*f)),
            SenmlValue::String(s) => ("vs", Json::from(s.clone())),
            SenmlValue::Bool(b) => ("vb", Json::from(*b)),
            SenmlValue::Data(bytes) => ("vd", Json::from(BASE64URL.encode(bytes))),
            SenmlValue::ObjectLink(link) => ("vlo", Json::from(link.clone())),
        };
        fields.insert(label.into(), json);
    }
    Json::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::super::Value;
    use super::super::senml::test_support;
    use super::*;

    const DEVICE: &str = r#"[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},{"n":"9","v":95}]"#;

    #[test]
    fn decodes_the_lwm2m_example() {
        let records = decode(&LwM2mPath::instance(3, 0), DEVICE.as_bytes()).unwrap();
        assert_eq!(
            records,
            vec![
                Record::new(
                    LwM2mPath::resource(3, 0, 0),
                    Value::String("Open Mobile Alliance".into())
                ),
                Record::new(LwM2mPath::resource(3, 0, 9), Value::Integer(95)),
            ]
        );
        assert_eq!(
            encode(&LwM2mPath::instance(3, 0), &records).unwrap(),
            DEVICE.as_bytes()
        );
    }

    #[test]
    fn known_encodings() {
        let battery = LwM2mPath::resource(3, 0, 9);
        let one = [Record::new(battery, Value::Integer(95))];
        assert_eq!(
            encode(&battery, &one).unwrap(),
            br#"[{"bn":"/3/0/9","v":95}]"#
        );
        let p = |res| LwM2mPath::resource(3, 0, res);
        let records = [
            Record::new(p(1), Value::Opaque(vec![0xfb, 0xff])),
            Record::new(p(2), Value::ObjectLink(3, 0)),
            Record::new(p(3), Value::Boolean(false)),
            Record::new(p(4), Value::Float(1.5)),
        ];
        let payload = encode(&LwM2mPath::ROOT, &records).unwrap();
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            r#"[{"n":"/3/0/1","vd":"-_8"},{"n":"/3/0/2","vlo":"3:0"},{"n":"/3/0/3","vb":false},{"n":"/3/0/4","v":1.5}]"#
        );
        // Padding is accepted, times are ignored, base names persist.
        let payload =
            r#"[{"bn":"/3/0/","bt":1.7e9,"n":"1","vd":"-_8=","t":-5},{"n":"7/0","v":3.5}]"#;
        let records = decode(&LwM2mPath::ROOT, payload.as_bytes()).unwrap();
        assert_eq!(records[0].value, Value::Opaque(vec![0xfb, 0xff]));
        assert_eq!(records[1].path, LwM2mPath::resource_instance(3, 0, 7, 0));
        assert_eq!(records[1].value, Value::Float(3.5));
    }

    #[test]
    fn every_value_round_trips() {
        test_support::round_trips(decode, encode);
        test_support::encode_errors(encode);
    }

    #[test]
    fn composite_request_paths_round_trip() {
        test_support::paths_round_trip(decode_paths, encode_paths, encode);
    }

    #[test]
    fn base_names_resolve_in_a_composite_request() {
        // LwM2M 1.1.1 Transport, Read-Composite: names under a base name, then a new one.
        let payload = r#"[{"bn":"/3/0/","n":"0"},{"n":"9"},{"bn":"/1/0/","n":"1"}]"#;
        let paths = decode_paths(payload.as_bytes()).unwrap();
        let expected = [
            LwM2mPath::resource(3, 0, 0),
            LwM2mPath::resource(3, 0, 9),
            LwM2mPath::resource(1, 0, 1),
        ];
        assert_eq!(paths, expected);
        assert!(decode_paths(br#"[{"v":1}]"#).is_err());
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let base = LwM2mPath::instance(3, 0);
        let cases = [
            (
                "[{\"n\":",
                "malformed application/senml+json payload at byte 5",
            ),
            ("{\"n\":\"/3/0/0\",\"v\":1}", "not a JSON array"),
            ("[1]", "record 0: not a JSON object"),
            (
                r#"[{"n":"/3/0/0"}]"#,
                "record 0: /3/0/0 has 0 values, expected one",
            ),
            (r#"[{"n":"/3/0/0","v":1,"vs":"x"}]"#, "has 2 values"),
            (r#"[{"v":1}]"#, "record 0: no name"),
            (r#"[{"n":"3/0/0","v":1}]"#, "must start with '/'"),
            (r#"[{"n":"/3/x/0","v":1}]"#, "invalid LwM2M path"),
            (
                r#"[{"n":"/3/0","v":1}]"#,
                "not a resource or resource instance",
            ),
            (r#"[{"n":"/4/0/0","v":1}]"#, "outside the request path /3/0"),
            (r#"[{"n":"/3/0/0","v":"1"}]"#, "\"v\" must be a number"),
            (r#"[{"n":"/3/0/0","vb":1}]"#, "\"vb\" must be true or false"),
            (r#"[{"n":"/3/0/0","vd":"*"}]"#, "not base64url"),
            (
                r#"[{"n":"/3/0/0","vlo":"3"}]"#,
                "vlo \"3\" is not object:instance",
            ),
            (
                r#"[{"n":"/3/0/0","v":1,"xx_":1}]"#,
                "label \"xx_\" must be understood",
            ),
            (
                r#"[{"n":"/3/0/0","v":1},{"n":5}]"#,
                "record 1: \"n\" must be a string",
            ),
        ];
        for (payload, expected) in cases {
            let message = decode(&base, payload.as_bytes()).unwrap_err().to_string();
            assert!(message.contains(expected), "{payload}: {message}");
        }
    }

    #[test]
    fn random_and_mutated_payloads_never_panic() {
        test_support::never_panics(decode, DEVICE.as_bytes(), 110);
    }
}
