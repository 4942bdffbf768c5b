//! SenML CBOR (`application/senml+cbor`, content format 112; RFC 8428 section 6 as LwM2M 1.1
//! uses it, with integer labels and `vlo` as a text label): translates between CBOR and the
//! shared SenML record model in `senml`.

use ciborium::Value as Cbor;

use super::senml::{self, SenmlRecord, SenmlValue};
use super::{ContentError, ContentFormat, LwM2mPath, Record};

const FORMAT: ContentFormat = ContentFormat::SenmlCbor;

const BASE_NAME: i64 = -2;
const NAME: i64 = 0;
const VALUE: i64 = 2;
const STRING_VALUE: i64 = 3;
const BOOL_VALUE: i64 = 4;
const DATA_VALUE: i64 = 8;
const OBJECT_LINK: &str = "vlo";

fn malformed(offset: usize, reason: String) -> ContentError {
    ContentError::Malformed {
        format: FORMAT,
        offset,
        reason,
    }
}

/// Decodes a SenML CBOR array into records (see the `senml` rules: names resolve to
/// resource paths under `base`, one value per record; `bt` (-3), `t` (6) and unknown labels
/// are ignored, text labels ending in `_` are errors). The payload must be exactly one item.
pub fn decode(base: &LwM2mPath, payload: &[u8]) -> Result<Vec<Record>, ContentError> {
    senml::to_records(FORMAT, base, parse(payload)?)
}

/// Decodes the paths a composite request names (records with names and no values).
pub fn decode_paths(payload: &[u8]) -> Result<Vec<LwM2mPath>, ContentError> {
    senml::to_paths(FORMAT, parse(payload)?)
}

/// The records of a SenML CBOR array, as on the wire.
fn parse(payload: &[u8]) -> Result<Vec<SenmlRecord>, ContentError> {
    let mut rest = payload;
    let cbor: Cbor = ciborium::from_reader(&mut rest).map_err(|e| read_error(payload, e))?;
    if !rest.is_empty() {
        let offset = payload.len() - rest.len();
        return Err(malformed(
            offset,
            format!("{} bytes after the CBOR item", rest.len()),
        ));
    }
    let Cbor::Array(items) = cbor else {
        return Err(ContentError::Invalid {
            format: FORMAT,
            reason: "the payload is not a CBOR array of records".into(),
        });
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_record(item).map_err(|r| senml::invalid(FORMAT, index, r)))
        .collect()
}

fn read_error(payload: &[u8], error: ciborium::de::Error<std::io::Error>) -> ContentError {
    use ciborium::de::Error;
    match error {
        Error::Io(e) => malformed(payload.len(), format!("truncated: {e}")),
        Error::Syntax(offset) => malformed(offset, "invalid CBOR".into()),
        Error::Semantic(offset, reason) => malformed(offset.unwrap_or_default(), reason),
        Error::RecursionLimitExceeded => malformed(0, "nested too deeply".into()),
    }
}

fn parse_record(item: &Cbor) -> Result<SenmlRecord, String> {
    let Cbor::Map(fields) = item else {
        return Err("not a CBOR map".into());
    };
    let mut record = SenmlRecord::default();
    for (label, field) in fields {
        match label {
            Cbor::Integer(label) => match i64::try_from(*label) {
                Ok(BASE_NAME) => record.base_name = Some(text("bn", field)?),
                Ok(NAME) => record.name = Some(text("n", field)?),
                Ok(VALUE) => record.values.push(number(field)?),
                Ok(STRING_VALUE) => record.values.push(SenmlValue::String(text("vs", field)?)),
                Ok(BOOL_VALUE) => match field {
                    Cbor::Bool(b) => record.values.push(SenmlValue::Bool(*b)),
                    _ => return Err("\"vb\" (4) must be true or false".into()),
                },
                Ok(DATA_VALUE) => match field {
                    Cbor::Bytes(bytes) => record.values.push(SenmlValue::Data(bytes.clone())),
                    _ => return Err("\"vd\" (8) must be a byte string".into()),
                },
                _ => {}
            },
            Cbor::Text(label) if label == OBJECT_LINK => {
                record
                    .values
                    .push(SenmlValue::ObjectLink(text("vlo", field)?));
            }
            Cbor::Text(label) if label.ends_with('_') => return Err(senml::must_understand(label)),
            _ => {}
        }
    }
    Ok(record)
}

fn text(label: &str, field: &Cbor) -> Result<String, String> {
    match field {
        Cbor::Text(text) => Ok(text.clone()),
        _ => Err(format!("{label:?} must be a text string")),
    }
}

fn number(field: &Cbor) -> Result<SenmlValue, String> {
    match field {
        Cbor::Integer(i) => {
            let wide = i128::from(*i);
            if let Ok(i) = i64::try_from(wide) {
                Ok(SenmlValue::Integer(i))
            } else {
                u64::try_from(wide)
                    .map(SenmlValue::Unsigned)
                    .map_err(|_| format!("\"v\" (2) {wide} is out of range"))
            }
        }
        Cbor::Float(f) => Ok(SenmlValue::Float(*f)),
        _ => Err("\"v\" (2) must be a number".into()),
    }
}

/// Encodes records, all at or below `base`, as a SenML CBOR array.
pub fn encode(base: &LwM2mPath, records: &[Record]) -> Result<Vec<u8>, ContentError> {
    write(&senml::from_records(FORMAT, base, records)?)
}

/// Encodes the paths a composite request names, as records with names and no values.
pub fn encode_paths(paths: &[LwM2mPath]) -> Result<Vec<u8>, ContentError> {
    write(&senml::from_paths(paths))
}

/// A SenML CBOR array of `senml`.
fn write(senml: &[SenmlRecord]) -> Result<Vec<u8>, ContentError> {
    let items = Cbor::Array(senml.iter().map(to_cbor).collect());
    let mut out = Vec::new();
    ciborium::into_writer(&items, &mut out).map_err(|e| ContentError::Encode {
        format: FORMAT,
        reason: e.to_string(),
    })?;
    Ok(out)
}

fn to_cbor(record: &SenmlRecord) -> Cbor {
    let mut fields = Vec::new();
    if let Some(bn) = &record.base_name {
        fields.push((Cbor::from(BASE_NAME), Cbor::Text(bn.clone())));
    }
    if let Some(n) = &record.name {
        fields.push((Cbor::from(NAME), Cbor::Text(n.clone())));
    }
    for value in &record.values {
        let (label, cbor) = match value {
            SenmlValue::Integer(i) => (Cbor::from(VALUE), Cbor::from(*i)),
            SenmlValue::Unsigned(u) => (Cbor::from(VALUE), Cbor::from(*u)),
            SenmlValue::Float(f) => (Cbor::from(VALUE), Cbor::Float(*f)),
            SenmlValue::String(s) => (Cbor::from(STRING_VALUE), Cbor::Text(s.clone())),
            SenmlValue::Bool(b) => (Cbor::from(BOOL_VALUE), Cbor::Bool(*b)),
            SenmlValue::Data(bytes) => (Cbor::from(DATA_VALUE), Cbor::Bytes(bytes.clone())),
            SenmlValue::ObjectLink(link) => (Cbor::from(OBJECT_LINK), Cbor::Text(link.clone())),
        };
        fields.push((label, cbor));
    }
    Cbor::Map(fields)
}

#[cfg(test)]
mod tests {
    use super::super::Value;
    use super::super::senml::test_support;
    use super::*;

    /// `[{-2: "/3/0/", 0: "0", 3: "Open Mobile Alliance"}, {0: "9", 2: 95}]`, written by hand.
    fn device() -> Vec<u8> {
        let mut bytes = vec![0x82, 0xA3, 0x21, 0x65];
        bytes.extend_from_slice(b"/3/0/");
        bytes.extend_from_slice(&[0x00, 0x61, b'0', 0x03, 0x74]);
        bytes.extend_from_slice(b"Open Mobile Alliance");
        bytes.extend_from_slice(&[0xA2, 0x00, 0x61, b'9', 0x02, 0x18, 0x5F]);
        bytes
    }

    #[test]
    fn decodes_and_encodes_the_lwm2m_example() {
        let base = LwM2mPath::instance(3, 0);
        let records = decode(&base, &device()).unwrap();
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
        assert_eq!(encode(&base, &records).unwrap(), device());
    }

    #[test]
    fn known_encodings() {
        let link = LwM2mPath::resource(3, 0, 2);
        let records = [Record::new(link, Value::ObjectLink(3, 0))];
        let mut expected = vec![0x81, 0xA2, 0x21, 0x66];
        expected.extend_from_slice(b"/3/0/2");
        expected.extend_from_slice(&[0x63, b'v', b'l', b'o', 0x63, b'3', b':', b'0']);
        assert_eq!(encode(&link, &records).unwrap(), expected);
        assert_eq!(decode(&link, &expected).unwrap(), records);

        let data = [Record::new(link, Value::Opaque(vec![1, 2]))];
        let mut expected = vec![0x81, 0xA2, 0x21, 0x66];
        expected.extend_from_slice(b"/3/0/2");
        expected.extend_from_slice(&[0x08, 0x42, 1, 2]);
        assert_eq!(encode(&link, &data).unwrap(), expected);
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
    fn malformed_payloads_are_errors() {
        let base = LwM2mPath::instance(3, 0);
        let with_device = |tail: &[u8]| [device().as_slice(), tail].concat();
        let map = |fields: &[u8]| [&[0x81][..], fields].concat();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                device()[..10].to_vec(),
                "malformed application/senml+cbor payload at byte",
            ),
            (
                with_device(&[0x00]),
                "at byte 41: 1 bytes after the CBOR item",
            ),
            (vec![0xA0], "not a CBOR array"),
            (vec![0x81, 0x01], "record 0: not a CBOR map"),
            (
                map(&[0xA1, 0x00, 0x66, b'/', b'3', b'/', b'0', b'/', b'0']),
                "has 0 values",
            ),
            (map(&[0xA1, 0x02, 0x01]), "record 0: no name"),
            (
                map(&[0xA2, 0x00, 0x62, b'/', b'x', 0x02, 0x01]),
                "invalid LwM2M path",
            ),
            (
                map(&[
                    0xA2, 0x00, 0x66, b'/', b'4', b'/', b'0', b'/', b'0', 0x02, 0x01,
                ]),
                "outside",
            ),
            (
                map(&[0xA2, 0x00, 0x01, 0x02, 0x01]),
                "\"n\" must be a text string",
            ),
            (map(&[0xA1, 0x02, 0x61, b'1']), "\"v\" (2) must be a number"),
            (map(&[0xA1, 0x08, 0x61, b'1']), "must be a byte string"),
            (map(&[0xA1, 0x04, 0x01]), "must be true or false"),
            (
                map(&[0xA1, 0x62, b'x', b'_', 0x01]),
                "label \"x_\" must be understood",
            ),
            (
                vec![
                    0x81, 0xA1, 0x02, 0x3B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                ],
                "out of range",
            ),
            (vec![0x1C], "at byte 0: invalid CBOR"),
            (vec![0xFF], "at byte 0: invalid type: break"),
        ];
        for (payload, expected) in cases {
            let message = decode(&base, &payload).unwrap_err().to_string();
            assert!(message.contains(expected), "{payload:02X?}: {message}");
        }
    }

    #[test]
    fn deep_nesting_and_huge_lengths_are_errors() {
        let deep = vec![0x81; 100_000];
        assert!(decode(&LwM2mPath::ROOT, &deep).is_err());
        let huge = [0x81, 0x5B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(decode(&LwM2mPath::ROOT, &huge).is_err());
        let huge_array = [0x9B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(decode(&LwM2mPath::ROOT, &huge_array).is_err());
    }

    #[test]
    fn random_and_mutated_payloads_never_panic() {
        test_support::never_panics(decode, &device(), 112);
    }
}
