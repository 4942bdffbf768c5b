//! `application/octet-stream` (content format 42): one opaque resource or resource instance,
//! the payload being its bytes unchanged.

use super::{
    ContentError, ContentFormat, LwM2mPath, Record, Value, check_single_resource, single_value,
};

const FORMAT: ContentFormat = ContentFormat::Opaque;

/// Decodes an opaque payload: one `Value::Opaque` record at `base` holding the bytes.
pub fn decode(base: &LwM2mPath, payload: &[u8]) -> Result<Vec<Record>, ContentError> {
    check_single_resource(FORMAT, base).map_err(|reason| ContentError::Invalid {
        format: FORMAT,
        reason,
    })?;
    Ok(vec![Record::new(*base, Value::Opaque(payload.to_vec()))])
}

/// Encodes the one record at `base`, which must hold opaque, untyped or string bytes.
pub fn encode(base: &LwM2mPath, records: &[Record]) -> Result<Vec<u8>, ContentError> {
    let value = single_value(FORMAT, base, records)?;
    match value {
        Value::Opaque(bytes) | Value::Untyped(bytes) => Ok(bytes.clone()),
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        _ => Err(ContentError::Encode {
            format: FORMAT,
            reason: format!("{} value is not bytes: use text or TLV", value.kind()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: LwM2mPath = LwM2mPath::resource(5, 0, 0);

    #[test]
    fn bytes_round_trip_unchanged() {
        for bytes in [vec![], vec![0], (0..=255).collect::<Vec<u8>>()] {
            let records = [Record::new(BASE, Value::Opaque(bytes.clone()))];
            let payload = encode(&BASE, &records).unwrap();
            assert_eq!(payload, bytes);
            assert_eq!(decode(&BASE, &payload).unwrap(), records);
        }
        let untyped = [Record::new(BASE, Value::Untyped(vec![7, 8]))];
        assert_eq!(encode(&BASE, &untyped).unwrap(), vec![7, 8]);
        let text = [Record::new(BASE, Value::String("ab".into()))];
        assert_eq!(encode(&BASE, &text).unwrap(), b"ab");
    }

    #[test]
    fn errors() {
        let err = decode(&LwM2mPath::object(5), b"x").unwrap_err();
        assert!(err.to_string().contains("not a resource path"), "{err}");
        let err = encode(&BASE, &[Record::new(BASE, Value::Integer(1))]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot encode application/octet-stream: integer value is not bytes: use text or TLV"
        );
        assert!(encode(&BASE, &[]).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng, rngs::SmallRng};
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..2000 {
            let len = rng.random_range(0..64);
            let payload: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
            let records = decode(&BASE, &payload).unwrap();
            assert_eq!(records[0].value.as_bytes().unwrap(), payload.as_slice());
        }
    }
}
