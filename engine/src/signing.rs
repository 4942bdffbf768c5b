//! The platform's ed25519 key pair: [`PlatformKey`] signs packages on the platform,
//! [`PlatformPublicKey`] is what a device trusts to check them. Owns key generation, the keys'
//! byte forms and the signature primitive; nothing about package layout (that is `package`) and
//! nothing about where keys are kept (that is the store's).

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = ed25519_dalek::SIGNATURE_LENGTH;

/// The platform's secret signing key. Its `Debug` shows only the public half.
#[derive(Clone)]
pub struct PlatformKey(SigningKey);

impl PlatformKey {
    /// A new key from 32 random bytes of the thread-local CSPRNG (seeded by the OS).
    pub fn generate() -> Self {
        PlatformKey::from_bytes(&crate::entropy::random())
    }

    /// The key whose secret bytes are `secret`, as [`PlatformKey::to_bytes`] gave them.
    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        PlatformKey(SigningKey::from_bytes(secret))
    }

    /// The secret bytes, for persisting the key. Keep them secret.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key devices trust.
    pub fn public(&self) -> PlatformPublicKey {
        PlatformPublicKey(self.0.verifying_key())
    }

    /// The signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(message).to_bytes()
    }
}

/// The platform's public key: what a device holds to check that a package comes from the
/// platform. Displays as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PlatformPublicKey(VerifyingKey);

/// Why 32 bytes are not a public key a device may trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The bytes do not encode a point of the curve.
    #[error("not an ed25519 public key: the bytes are not a curve point")]
    NotACurvePoint,
    /// A small-order point: signatures under it prove nothing.
    #[error("weak ed25519 public key: a small-order point")]
    Weak,
}

impl PlatformPublicKey {
    /// The public key encoded as `bytes` (as [`PlatformPublicKey::to_bytes`] gave them).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::NotACurvePoint)?;
        if key.is_weak() {
            return Err(KeyError::Weak);
        }
        Ok(PlatformPublicKey(key))
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// True when `signature` is this key's signature of `message`. Strict: a non-canonical
    /// signature is refused, so no second valid signature can be made from a first.
    pub fn verifies(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        self.0
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

impl fmt::Debug for PlatformKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformKey")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for PlatformPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PlatformPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlatformPublicKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bytes_round_trip() {
        let key = PlatformKey::generate();
        let again = PlatformKey::from_bytes(&key.to_bytes());
        assert_eq!(again.public(), key.public());
        let public = PlatformPublicKey::from_bytes(&key.public().to_bytes()).unwrap();
        assert_eq!(public, key.public());
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(
            PlatformKey::generate().public(),
            PlatformKey::generate().public()
        );
    }

    #[test]
    fn a_signature_verifies_only_for_its_message_and_key() {
        let key = PlatformKey::generate();
        let signature = key.sign(b"firmware");
        assert!(key.public().verifies(b"firmware", &signature));
        assert!(!key.public().verifies(b"firmwarE", &signature));
        assert!(
            !PlatformKey::generate()
                .public()
                .verifies(b"firmware", &signature)
        );
    }

    #[test]
    fn bytes_that_are_no_usable_public_key_are_refused() {
        // y = 2 has no x on the curve; y = 1 is the identity, of order 1.
        let mut not_a_point = [0; 32];
        not_a_point[0] = 2;
        let mut identity = [0; 32];
        identity[0] = 1;
        assert_eq!(
            PlatformPublicKey::from_bytes(&not_a_point),
            Err(KeyError::NotACurvePoint)
        );
        assert_eq!(
            PlatformPublicKey::from_bytes(&identity),
            Err(KeyError::Weak)
        );
    }

    #[test]
    fn a_public_key_displays_as_hex_and_the_secret_never_shows() {
        let key = PlatformKey::from_bytes(&[7; 32]);
        let hex = key.public().to_string();
        assert_eq!(hex, hex::encode(key.public().to_bytes()));
        assert_eq!(hex.len(), 64);
        let debug = format!("{key:?}");
        assert!(debug.contains(&hex), "{debug}");
        assert!(!debug.contains(&hex::encode([7u8; 32])), "{debug}");
        assert!(
            !debug.contains(&format!("{:?}", [7u8; 32])[1..20]),
            "{debug}"
        );
    }
}
