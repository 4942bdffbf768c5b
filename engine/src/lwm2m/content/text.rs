//! `text/plain` (content format 0): one resource or resource instance as text. Decodes to
//! `Value::String` (the `Value` accessors parse numbers, booleans and links from it); encodes
//! every value that has a text form (not opaque or untyped bytes).

use super::{
    ContentError, ContentFormat, LwM2mPath, Record, Value, check_single_resource, single_value,
};

const FORMAT: ContentFormat = ContentFormat::TextPlain;

/// Decodes a text/plain payload: one `Value::String` record at `base`.
pub fn decode(base: &LwM2mPath, payload: &[u8]) -> Result<Vec<Record>, ContentError> {
    check_single_resource(FORMAT, base).map_err(|reason| ContentError::Invalid {
        format: FORMAT,
        reason,
    })?;
    let text = std::str::from_utf8(payload).map_err(|e| ContentError::Malformed {
        format: FORMAT,
        offset: e.valid_up_to(),
        reason: "not UTF-8".into(),
    })?;
    Ok(vec![Record::new(*base, Value::String(text.to_owned()))])
}

/// Encodes the one record at `base` as text: decimal numbers, `0`/`1` booleans,
/// `object:instance` links.
pub fn encode(base: &LwM2mPath, records: &[Record]) -> Result<Vec<u8>, ContentError> {
    let value = single_value(FORMAT, base, records)?;
    to_text(value)
        .map(String::into_bytes)
        .map_err(|reason| ContentError::Encode {
            format: FORMAT,
            reason: reason.into(),
        })
}

fn to_text(value: &Value) -> Result<String, &'static str> {
    Ok(match value {
        Value::Integer(i) | Value::Time(i) => i.to_string(),
        Value::UnsignedInteger(u) => u.to_string(),
        Value::Float(f) if f.is_finite() => f.to_string(),
        Value::Float(_) => return Err("NaN and infinite floats have no text form"),
        Value::Boolean(b) => u8::from(*b).to_string(),
        Value::String(s) => s.clone(),
        Value::ObjectLink(object, instance) => format!("{object}:{instance}"),
        Value::Opaque(_) => return Err("opaque values have no text form: use opaque or TLV"),
        Value::Untyped(_) => return Err("untyped bytes have no text form: give the value a type"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: LwM2mPath = LwM2mPath::resource(3, 0, 9);

    fn round_trip(value: Value) -> Value {
        let payload = encode(&BASE, &[Record::new(BASE, value)]).unwrap();
        let mut records = decode(&BASE, &payload).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].path, BASE);
        records.remove(0).value
    }

    #[test]
    fn every_text_value_round_trips() {
        assert_eq!(round_trip(Value::Integer(-95)).as_i64().unwrap(), -95);
        assert_eq!(
            round_trip(Value::UnsignedInteger(u64::MAX))
                .as_u64()
                .unwrap(),
            u64::MAX
        );
        assert_eq!(round_trip(Value::Float(-2.25)).as_f64().unwrap(), -2.25);
        assert_eq!(round_trip(Value::Float(1e300)).as_f64().unwrap(), 1e300);
        assert!(round_trip(Value::Boolean(true)).as_bool().unwrap());
        assert!(!round_trip(Value::Boolean(false)).as_bool().unwrap());
        assert_eq!(
            round_trip(Value::Time(1_700_000_000)).as_i64().unwrap(),
            1_700_000_000
        );
        assert_eq!(
            round_trip(Value::ObjectLink(3, 1))
                .as_object_link()
                .unwrap(),
            (3, 1)
        );
        let s = "Open Mobile Alliance, ünïcode";
        assert_eq!(round_trip(Value::String(s.into())).as_str().unwrap(), s);
        assert_eq!(
            round_trip(Value::String(String::new())).as_str().unwrap(),
            ""
        );
    }

    #[test]
    fn known_bytes() {
        let encode_one = |v| encode(&BASE, &[Record::new(BASE, v)]).unwrap();
        assert_eq!(encode_one(Value::Integer(95)), b"95");
        assert_eq!(encode_one(Value::Boolean(true)), b"1");
        assert_eq!(encode_one(Value::ObjectLink(3, 0)), b"3:0");
        assert_eq!(encode_one(Value::Float(1.5)), b"1.5");
        let decoded = decode(&BASE, b"95").unwrap();
        assert_eq!(decoded, vec![Record::new(BASE, Value::String("95".into()))]);
    }

    #[test]
    fn errors() {
        let err = decode(&BASE, b"ab\xffcd").unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed text/plain payload at byte 2: not UTF-8"
        );
        let err = decode(&LwM2mPath::instance(3, 0), b"1").unwrap_err();
        assert!(err.to_string().contains("not a resource path"), "{err}");
        for value in [
            Value::Opaque(vec![1]),
            Value::Untyped(vec![1]),
            Value::Float(f64::NAN),
        ] {
            let err = encode(&BASE, &[Record::new(BASE, value)]).unwrap_err();
            assert!(matches!(err, ContentError::Encode { .. }), "{err}");
        }
        let two = [
            Record::new(BASE, Value::Integer(1)),
            Record::new(BASE, Value::Integer(2)),
        ];
        assert!(
            encode(&BASE, &two)
                .unwrap_err()
                .to_string()
                .contains("exactly one")
        );
        assert!(encode(&BASE, &[]).is_err());
        let elsewhere = [Record::new(
            LwM2mPath::resource(3, 0, 10),
            Value::Integer(1),
        )];
        assert!(
            encode(&BASE, &elsewhere)
                .unwrap_err()
                .to_string()
                .contains("/3/0/10")
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng, rngs::SmallRng};
        let mut rng = SmallRng::seed_from_u64(0);
        for _ in 0..3000 {
            let len = rng.random_range(0..64);
            let payload: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
            if let Ok(records) = decode(&BASE, &payload) {
                let value = &records[0].value;
                let _ = (
                    value.as_i64(),
                    value.as_u64(),
                    value.as_f64(),
                    value.as_bool(),
                );
                let _ = value.as_object_link();
            }
        }
    }
}
