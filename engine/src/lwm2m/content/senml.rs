//! The SenML record model shared by the JSON and CBOR codecs (RFC 8428 as LwM2M 1.1 uses it):
//! base-name resolution, path and value validation on decode, name and value choice on encode.
//! The codecs only translate between their wire syntax and [`SenmlRecord`].

use super::value::parse_object_link;
use super::{ContentError, ContentFormat, LwM2mPath, Record, Value};

/// One SenML value field, as found on the wire.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum SenmlValue {
    /// `v` holding an integer that fits `i64`.
    Integer(i64),
    /// `v` holding an integer above `i64::MAX`.
    Unsigned(u64),
    /// `v` holding a float.
    Float(f64),
    /// `vs`.
    String(String),
    /// `vb`.
    Bool(bool),
    /// `vd` (base64url text in JSON, a byte string in CBOR).
    Data(Vec<u8>),
    /// `vlo`: `object:instance`.
    ObjectLink(String),
}

/// One SenML record in wire terms: base name, name and the value fields present.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct SenmlRecord {
    /// `bn`, if present.
    pub base_name: Option<String>,
    /// `n`, if present.
    pub name: Option<String>,
    /// Every value field present (a valid record has exactly one).
    pub values: Vec<SenmlValue>,
}

/// Resolves wire records into records: names are the base name in force concatenated with the
/// record's name, must be resource (instance) paths under `base`, and each record must hold
/// exactly one value.
pub(super) fn to_records(
    format: ContentFormat,
    base: &LwM2mPath,
    senml: Vec<SenmlRecord>,
) -> Result<Vec<Record>, ContentError> {
    let mut base_name = String::new();
    let mut records = Vec::with_capacity(senml.len());
    for (index, record) in senml.into_iter().enumerate() {
        let invalid = |reason| invalid(format, index, reason);
        if let Some(bn) = record.base_name {
            base_name = bn;
        }
        let name = format!("{base_name}{}", record.name.unwrap_or_default());
        let path = resolve_path(&name, base).map_err(invalid)?;
        let value = match <[SenmlValue; 1]>::try_from(record.values) {
            Ok([value]) => to_value(value).map_err(invalid)?,
            Err(values) => {
                let reason = format!("{name} has {} values, expected one", values.len());
                return Err(invalid(reason));
            }
        };
        records.push(Record::new(path, value));
    }
    Ok(records)
}

/// Resolves the records of a composite request into the paths they name: each is the base
/// name in force concatenated with the record's name, an object, instance, resource or
/// resource instance path; a record holding a value is refused (a request names, it does not
/// write).
pub(super) fn to_paths(
    format: ContentFormat,
    senml: Vec<SenmlRecord>,
) -> Result<Vec<LwM2mPath>, ContentError> {
    let mut base_name = String::new();
    let mut paths = Vec::with_capacity(senml.len());
    for (index, record) in senml.into_iter().enumerate() {
        let invalid = |reason| invalid(format, index, reason);
        if let Some(bn) = record.base_name {
            base_name = bn;
        }
        if !record.values.is_empty() {
            return Err(invalid(
                "a composite request names paths and holds no value".into(),
            ));
        }
        let name = format!("{base_name}{}", record.name.unwrap_or_default());
        let path: LwM2mPath = name.parse().map_err(|e| invalid(format!("{e}")))?;
        if path.depth() == 0 {
            return Err(invalid("no name".into()));
        }
        paths.push(path);
    }
    Ok(paths)
}

/// The wire records of a composite request naming `paths`: a full path each, no value.
pub(super) fn from_paths(paths: &[LwM2mPath]) -> Vec<SenmlRecord> {
    paths
        .iter()
        .map(|path| SenmlRecord {
            name: Some(path.to_string()),
            ..SenmlRecord::default()
        })
        .collect()
}

/// The error for record `index` of a SenML payload.
pub(super) fn invalid(format: ContentFormat, index: usize, reason: String) -> ContentError {
    ContentError::Invalid {
        format,
        reason: format!("record {index}: {reason}"),
    }
}

/// The error for a field label ending in `_`, which RFC 8428 says a reader must understand.
pub(super) fn must_understand(label: &str) -> String {
    format!("label {label:?} must be understood, and is not supported")
}

fn resolve_path(name: &str, base: &LwM2mPath) -> Result<LwM2mPath, String> {
    if name.is_empty() {
        return Err("no name".into());
    }
    let path: LwM2mPath = name.parse().map_err(|e| format!("{e}"))?;
    if path.depth() < 3 {
        return Err(format!(
            "{path} is not a resource or resource instance path"
        ));
    }
    if !path.starts_with(base) {
        return Err(format!("{path} is outside the request path {base}"));
    }
    Ok(path)
}

fn to_value(value: SenmlValue) -> Result<Value, String> {
    Ok(match value {
        SenmlValue::Integer(i) => Value::Integer(i),
        SenmlValue::Unsigned(u) => Value::UnsignedInteger(u),
        SenmlValue::Float(f) => Value::Float(f),
        SenmlValue::String(s) => Value::String(s),
        SenmlValue::Bool(b) => Value::Boolean(b),
        SenmlValue::Data(bytes) => Value::Opaque(bytes),
        SenmlValue::ObjectLink(text) => {
            let (object, instance) = parse_object_link(&text)
                .ok_or_else(|| format!("vlo {text:?} is not object:instance"))?;
            Value::ObjectLink(object, instance)
        }
    })
}

/// Turns records, all at or below `base`, into wire records: the first carries `bn` (the
/// request path, with a trailing `/` when names follow) and each one names its path relative
/// to it. With the root as `base`, names are full paths and no `bn` is written.
pub(super) fn from_records(
    format: ContentFormat,
    base: &LwM2mPath,
    records: &[Record],
) -> Result<Vec<SenmlRecord>, ContentError> {
    let encode_error = |reason: String| ContentError::Encode { format, reason };
    let all_at_base = records.iter().all(|record| record.path == *base);
    let base_name = match (base.depth(), all_at_base) {
        (0, _) => None,
        (_, true) => Some(base.to_string()),
        (_, false) => Some(format!("{base}/")),
    };
    let mut senml = Vec::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        let path = record.path;
        if !path.starts_with(base) || path.depth() < 3 {
            let reason = format!("{path} is not a resource path under the request path {base}");
            return Err(encode_error(reason));
        }
        let relative: Vec<String> = path
            .ids()
            .skip(base.depth())
            .map(|id| id.to_string())
            .collect();
        let value = from_value(&record.value).map_err(encode_error)?;
        senml.push(SenmlRecord {
            base_name: if index == 0 { base_name.clone() } else { None },
            name: match base.depth() {
                0 => Some(path.to_string()),
                _ => (!relative.is_empty()).then(|| relative.join("/")),
            },
            values: vec![value],
        });
    }
    Ok(senml)
}

fn from_value(value: &Value) -> Result<SenmlValue, String> {
    Ok(match value {
        Value::Integer(i) | Value::Time(i) => SenmlValue::Integer(*i),
        Value::UnsignedInteger(u) => SenmlValue::Unsigned(*u),
        Value::Float(f) if f.is_finite() => SenmlValue::Float(*f),
        Value::Float(_) => return Err("NaN and infinite floats cannot be written".into()),
        Value::Boolean(b) => SenmlValue::Bool(*b),
        Value::String(s) => SenmlValue::String(s.clone()),
        Value::Opaque(bytes) => SenmlValue::Data(bytes.clone()),
        Value::ObjectLink(object, instance) => {
            SenmlValue::ObjectLink(format!("{object}:{instance}"))
        }
        Value::Untyped(_) => {
            return Err("untyped TLV bytes have no SenML form: give the value a type".into());
        }
    })
}

/// Shared tests for both SenML codecs: each passes its own `decode` and `encode`.
#[cfg(test)]
pub(super) mod test_support {
    use super::super::{ContentError, LwM2mPath, Record, Value};

    type Decode = fn(&LwM2mPath, &[u8]) -> Result<Vec<Record>, ContentError>;
    type Encode = fn(&LwM2mPath, &[Record]) -> Result<Vec<u8>, ContentError>;

    /// One record of every value type SenML carries.
    pub fn every_value() -> Vec<Record> {
        let p = |res| LwM2mPath::resource(1024, 0, res);
        vec![
            Record::new(p(0), Value::Integer(-95)),
            Record::new(p(1), Value::UnsignedInteger(u64::MAX)),
            Record::new(p(2), Value::Float(-2.5)),
            Record::new(p(3), Value::Boolean(true)),
            Record::new(p(4), Value::String("Open Mobile Alliance".into())),
            Record::new(p(5), Value::Opaque(vec![0, 1, 254, 255])),
            Record::new(p(6), Value::ObjectLink(3, 0)),
            Record::new(
                LwM2mPath::resource_instance(1024, 0, 7, 1),
                Value::Integer(0),
            ),
        ]
    }

    /// Every value round trips at every base depth (time comes back as an integer).
    pub fn round_trips(decode: Decode, encode: Encode) {
        let records = every_value();
        for base in [
            LwM2mPath::ROOT,
            LwM2mPath::object(1024),
            LwM2mPath::instance(1024, 0),
        ] {
            let payload = encode(&base, &records).unwrap();
            assert_eq!(decode(&base, &payload).unwrap(), records, "base {base}");
        }
        let single = [Record::new(
            LwM2mPath::resource(3, 0, 13),
            Value::Time(1_700_000_000),
        )];
        let payload = encode(&single[0].path, &single).unwrap();
        let decoded = decode(&single[0].path, &payload).unwrap();
        assert_eq!(decoded[0].path, single[0].path);
        assert_eq!(decoded[0].value, Value::Integer(1_700_000_000));
    }

    /// The paths of a composite request round trip; a record holding a value is refused.
    pub fn paths_round_trip(
        decode_paths: fn(&[u8]) -> Result<Vec<LwM2mPath>, ContentError>,
        encode_paths: fn(&[LwM2mPath]) -> Result<Vec<u8>, ContentError>,
        encode: Encode,
    ) {
        let paths = [
            LwM2mPath::object(5),
            LwM2mPath::instance(3, 0),
            LwM2mPath::resource(4, 0, 8),
            LwM2mPath::resource_instance(3, 0, 6, 1),
        ];
        assert_eq!(decode_paths(&encode_paths(&paths).unwrap()).unwrap(), paths);
        let valued = [Record::new(
            LwM2mPath::resource(3, 0, 9),
            Value::Integer(80),
        )];
        let error = decode_paths(&encode(&LwM2mPath::ROOT, &valued).unwrap()).unwrap_err();
        assert!(error.to_string().contains("holds no value"), "{error}");
    }

    /// Records that cannot be encoded are errors.
    pub fn encode_errors(encode: Encode) {
        let base = LwM2mPath::instance(3, 0);
        let cases = [
            (
                Record::new(LwM2mPath::resource(4, 0, 0), Value::Integer(1)),
                "not a resource path under",
            ),
            (
                Record::new(base, Value::Integer(1)),
                "not a resource path under",
            ),
            (
                Record::new(LwM2mPath::resource(3, 0, 0), Value::Untyped(vec![1])),
                "untyped",
            ),
            (
                Record::new(LwM2mPath::resource(3, 0, 0), Value::Float(f64::NAN)),
                "NaN",
            ),
        ];
        for (record, expected) in cases {
            let message = encode(&base, &[record]).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
        }
    }

    /// Random bytes and random mutations of `valid` never make `decode` panic.
    pub fn never_panics(decode: Decode, valid: &[u8], seed: u64) {
        use rand::{Rng, SeedableRng, rngs::SmallRng};
        let mut rng = SmallRng::seed_from_u64(seed);
        let base = LwM2mPath::ROOT;
        for round in 0..6000 {
            let payload: Vec<u8> = if round % 2 == 0 {
                let len = rng.random_range(0..48);
                (0..len).map(|_| rng.random::<u8>()).collect()
            } else {
                let mut payload = valid.to_vec();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..payload.len());
                    payload[at] = rng.random::<u8>();
                }
                payload.truncate(rng.random_range(0..=payload.len()));
                payload
            };
            let _ = decode(&base, &payload);
        }
    }
}
