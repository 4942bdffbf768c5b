//! The signature of a webhook delivery: `Fota-Signature: t=TIMESTAMP,v1=HEX`, where TIMESTAMP
//! is the Unix time of the attempt in seconds and HEX the HMAC-SHA256, keyed with the
//! subscription's secret, of `TIMESTAMP.BODY` (the timestamp's decimal digits, a full stop,
//! then the body's bytes exactly as received). The timestamp is signed so an old delivery
//! cannot be replayed as new: a receiver refuses one whose `t` is too far from its own clock.
//! Owns signing and checking; what is signed is the delivery's.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const HEADER: &str = "Fota-Signature";

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=...,v1=...`.
    #[error("the signature header is malformed")]
    Malformed,
    /// Its timestamp is further from now than the tolerance.
    #[error("the signature's timestamp is {0} s away from now")]
    Stale(u64),
    /// No `v1` matches the body under the secret.
    #[error("the signature does not match")]
    Mismatch,
}

/// The HMAC of `timestamp.body` under `secret`.
fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Fota-Signature` value of `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

/// Checks a `Fota-Signature` value against `body` and `secret`, and that its timestamp is
/// within `tolerance_secs` of `now_secs`. Several `v1` values may be given (a sender rotating
/// its secret); one matching is enough. The comparison takes the same time whatever differs.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_secs: u64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<u64>().ok(),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let skew = now_secs.abs_diff(timestamp);
    if skew > tolerance_secs {
        return Err(SignatureError::Stale(skew));
    }
    let matches = signatures
        .iter()
        .filter_map(|hex| hex::decode(hex).ok())
        .any(|given| mac(secret, timestamp, body).verify_slice(&given).is_ok());
    matches.then_some(()).ok_or(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":7,"kind":"task","time":1733380000000,"data":{}}"#;

    #[test]
    fn a_signature_is_hmac_sha256_of_the_timestamp_and_the_body() {
        // Computed apart from this code: Python's
        // hmac.new(b"whsec-test-0123456789", b"1733380000." + BODY, "sha256").hexdigest()
        assert_eq!(
            sign(b"whsec-test-0123456789", 1_733_380_000, BODY),
            "t=1733380000,v1=0e32450f8b40608d55852ae245eb1fa2dba16350a361f8b54681fe1c2230c14b"
        );
    }

    #[test]
    fn the_right_secret_verifies_and_a_wrong_one_or_a_changed_body_does_not() {
        let header = sign(b"right secret", 1_000, BODY);
        assert_eq!(verify(b"right secret", &header, BODY, 1_010, 300), Ok(()));
        assert_eq!(
            verify(b"wrong secret", &header, BODY, 1_010, 300),
            Err(SignatureError::Mismatch)
        );
        let changed = [BODY, b" "].concat();
        assert_eq!(
            verify(b"right secret", &header, &changed, 1_010, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn an_old_timestamp_or_a_malformed_header_is_refused() {
        let header = sign(b"secret", 1_000, BODY);
        assert_eq!(
            verify(b"secret", &header, BODY, 1_400, 300),
            Err(SignatureError::Stale(400))
        );
        for malformed in ["", "v1=00", "t=1000", "t=soon,v1=00"] {
            assert_eq!(
                verify(b"secret", malformed, BODY, 1_000, 300),
                Err(SignatureError::Malformed),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn one_matching_signature_of_several_is_enough() {
        let right = sign(b"new secret", 1_000, BODY);
        let v1 = right.split_once(",v1=").unwrap().1;
        let header = format!("t=1000,v1={},v1={v1}", "ab".repeat(32));
        assert_eq!(verify(b"new secret", &header, BODY, 1_000, 0), Ok(()));
    }
}
