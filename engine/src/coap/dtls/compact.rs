//! `Compact`: an established DTLS 1.2 session kept as what its records need, a few hundred bytes
//! in place of OpenSSL's connection object (about 44 KB): the suite's AEAD keys and implicit
//! nonces, the epoch, the next sequence number to send and the window of those received (RFC
//! 6347 section 4.1.2.6). The engine then seals and opens the session's records itself, as RFC
//! 5288 and RFC 6655 define AEAD records (AES through OpenSSL's EVP). The keys come from the
//! handshake's master secret and randoms (RFC 5246 section 6.3, its PRF with SHA-256). Only
//! the AEAD suites (AES-CCM_8, AES-CCM, AES-GCM) are kept so; a session on another suite keeps
//! its OpenSSL connection.

use std::io;

use hmac::{Hmac, Mac};
use openssl::cipher::{Cipher, CipherRef};
use openssl::cipher_ctx::CipherCtx;
use openssl::error::ErrorStack;
use openssl::ssl::SslRef;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::record;

/// DTLS 1.2 on the wire.
const VERSION: [u8; 2] = [0xfe, 0xfd];
/// The explicit part of a record's nonce, sent before its ciphertext.
const EXPLICIT_NONCE: usize = 8;
/// Sequence numbers are 48 bits: past this a session must not send (RFC 6347 section 4.1).
const LAST_SEQUENCE: u64 = (1 << 48) - 1;
/// Content types.
const ALERT: u8 = 21;
const APPLICATION_DATA: u8 = 23;

/// An AEAD suite: its cipher, key length and tag length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Suite {
    key_len: usize,
    tag_len: usize,
    gcm: bool,
}

impl Suite {
    /// The suite OpenSSL names so, if it is one kept compact.
    fn named(name: &str) -> Option<Suite> {
        let (key_len, tag_len, gcm) = match name {
            "PSK-AES128-CCM8" => (16, 8, false),
            "PSK-AES256-CCM8" => (32, 8, false),
            "PSK-AES128-CCM" => (16, 16, false),
            "PSK-AES256-CCM" => (32, 16, false),
            "PSK-AES128-GCM-SHA256" => (16, 16, true),
            _ => return None,
        };
        Some(Suite {
            key_len,
            tag_len,
            gcm,
        })
    }

    fn cipher(&self) -> &'static CipherRef {
        match (self.gcm, self.key_len) {
            (true, _) => Cipher::aes_128_gcm(),
            (false, 16) => Cipher::aes_128_ccm(),
            (false, _) => Cipher::aes_256_ccm(),
        }
    }

    /// `plaintext` sealed with `key` and `nonce`, `aad` authenticated, and its tag after it.
    /// CCM takes the tag's length before the key and the data's length before the data.
    fn encrypt(
        &self,
        key: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, ErrorStack> {
        let mut ctx = CipherCtx::new()?;
        ctx.encrypt_init(Some(self.cipher()), None, None)?;
        ctx.set_iv_length(nonce.len())?;
        if !self.gcm {
            ctx.set_tag_length(self.tag_len)?;
        }
        ctx.encrypt_init(None, Some(key), Some(nonce))?;
        if !self.gcm {
            ctx.set_data_len(plaintext.len())?;
        }
        ctx.cipher_update(aad, None)?;
        let mut sealed = vec![0u8; plaintext.len() + self.tag_len];
        let len = ctx.cipher_update(plaintext, Some(&mut sealed))?;
        let len = len + ctx.cipher_final(&mut sealed[len..])?;
        sealed.truncate(len);
        let mut tag = [0u8; 16];
        ctx.tag(&mut tag[..self.tag_len])?;
        sealed.extend_from_slice(&tag[..self.tag_len]);
        Ok(sealed)
    }

    /// The plaintext of `sealed` (its tag after it) with `key` and `nonce`, `aad`
    /// authenticated; an error when it does not authenticate.
    fn decrypt(
        &self,
        key: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, ErrorStack> {
        let (ciphertext, tag) = sealed.split_at(sealed.len() - self.tag_len);
        let mut ctx = CipherCtx::new()?;
        ctx.decrypt_init(Some(self.cipher()), None, None)?;
        ctx.set_iv_length(nonce.len())?;
        if !self.gcm {
            ctx.set_tag(tag)?;
        }
        ctx.decrypt_init(None, Some(key), Some(nonce))?;
        if !self.gcm {
            ctx.set_data_len(ciphertext.len())?;
        }
        ctx.cipher_update(aad, None)?;
        let mut plaintext = vec![0u8; ciphertext.len() + 16];
        let len = ctx.cipher_update(ciphertext, Some(&mut plaintext))?;
        let len = if self.gcm {
            ctx.set_tag(tag)?;
            len + ctx.cipher_final(&mut plaintext[len..])?
        } else {
            len
        };
        plaintext.truncate(len);
        Ok(plaintext)
    }
}

/// One direction's key and implicit nonce (the "IV" of RFC 5246's key block).
struct DirectionKeys {
    key: Zeroizing<[u8; 32]>,
    salt: [u8; 4],
}

/// Which sequence numbers of the peer's epoch came already: the highest, and a bit for each
/// of the 64 below it (RFC 6347 section 4.1.2.6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ReplayWindow {
    top: Option<u64>,
    below: u64,
}

impl ReplayWindow {
    /// A window whose highest number seen is `top`: nothing at or below it is taken (the
    /// records OpenSSL opened before may be replayed).
    pub fn after(top: Option<u64>) -> ReplayWindow {
        ReplayWindow {
            top,
            below: u64::MAX,
        }
    }

    /// Whether `sequence` has not come yet and is not too old to tell.
    pub fn fresh(&self, sequence: u64) -> bool {
        let Some(top) = self.top else {
            return true;
        };
        if sequence > top {
            return true;
        }
        let back = top - sequence;
        (1..=64).contains(&back) && self.below & (1 << (back - 1)) == 0
    }

    /// Notes that `sequence` came (after its record authenticated).
    pub fn mark(&mut self, sequence: u64) {
        let Some(top) = self.top else {
            self.top = Some(sequence);
            self.below = 0;
            return;
        };
        if sequence > top {
            let shift = sequence - top;
            let moved = u32::try_from(shift)
                .ok()
                .and_then(|shift| self.below.checked_shl(shift))
                .unwrap_or(0);
            let old_top = if shift <= 64 { 1 << (shift - 1) } else { 0 };
            self.below = moved | old_top;
            self.top = Some(sequence);
        } else if (1..=64).contains(&(top - sequence)) {
            self.below |= 1 << (top - sequence - 1);
        }
    }
}

/// What a datagram held for a compact session.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Opened {
    /// CoAP datagrams, one per application data record that authenticated and was new.
    Data(Vec<Vec<u8>>),
    /// An alert that authenticated: the peer ended the session (close_notify) or failed it.
    Ended,
}

/// An established session's record layer.
pub(super) struct Compact {
    suite: Suite,
    client: DirectionKeys,
    server: DirectionKeys,
    epoch: u16,
    /// The next sequence number the server sends in `epoch`.
    next_sequence: u64,
    received: ReplayWindow,
}

impl Compact {
    /// The record layer of `ssl`'s established session, if its suite is an AEAD one: the
    /// server's next record is number `next_sequence` of `epoch`, and no record of the client
    /// at or below `received_top` is taken.
    pub fn of(
        ssl: &SslRef,
        epoch: u16,
        next_sequence: u64,
        received_top: Option<u64>,
    ) -> Option<Compact> {
        let suite = Suite::named(ssl.current_cipher()?.name())?;
        let session = ssl.session()?;
        let mut master = Zeroizing::new([0u8; 48]);
        if session.master_key(&mut master[..]) != 48 {
            return None;
        }
        let mut seed = [0u8; 64];
        ssl.server_random(&mut seed[..32]);
        ssl.client_random(&mut seed[32..]);
        let mut block = Zeroizing::new([0u8; 72]);
        let len = 2 * suite.key_len + 8;
        prf_sha256(&master[..], b"key expansion", &seed, &mut block[..len]);
        let keys = |at: usize, salt_at: usize| {
            let mut key = Zeroizing::new([0u8; 32]);
            key[..suite.key_len].copy_from_slice(&block[at..at + suite.key_len]);
            let mut salt = [0u8; 4];
            salt.copy_from_slice(&block[salt_at..salt_at + 4]);
            DirectionKeys { key, salt }
        };
        let keys_len = 2 * suite.key_len;
        Some(Compact {
            suite,
            client: keys(0, keys_len),
            server: keys(suite.key_len, keys_len + 4),
            epoch,
            next_sequence,
            received: ReplayWindow::after(received_top),
        })
    }

    /// `plaintext` sealed in one application data record.
    pub fn seal(&mut self, plaintext: &[u8]) -> io::Result<Vec<u8>> {
        let sequence = self.next_sequence;
        if sequence > LAST_SEQUENCE {
            return Err(io::Error::other("DTLS sequence numbers exhausted"));
        }
        self.next_sequence += 1;
        let number = sequence_number(self.epoch, sequence);
        let aad = additional_data(number, APPLICATION_DATA, plaintext.len());
        let nonce = nonce(&self.server.salt, &number);
        let key = &self.server.key[..self.suite.key_len];
        let sealed = (self.suite.encrypt(key, &nonce, &aad, plaintext))
            .map_err(|error| io::Error::other(error.to_string()))?;
        let body_len = EXPLICIT_NONCE + sealed.len();
        let mut record = Vec::with_capacity(13 + body_len);
        record.push(APPLICATION_DATA);
        record.extend_from_slice(&VERSION);
        record.extend_from_slice(&number);
        record.extend_from_slice(&(body_len as u16).to_be_bytes());
        record.extend_from_slice(&number);
        record.extend_from_slice(&sealed);
        Ok(record)
    }

    /// Opens the records of `datagram`: those of another epoch, replayed, or that do not
    /// authenticate are dropped without a word (RFC 6347 section 4.1.2.7).
    pub fn open(&mut self, datagram: &[u8]) -> Opened {
        let mut data = Vec::new();
        for record in record::records(datagram) {
            if record.epoch != self.epoch || !self.received.fresh(record.sequence) {
                continue;
            }
            let Some(plaintext) = self.decrypt(&record) else {
                continue;
            };
            self.received.mark(record.sequence);
            match record.content_type {
                APPLICATION_DATA => data.push(plaintext),
                ALERT => return Opened::Ended,
                _ => {}
            }
        }
        Opened::Data(data)
    }

    /// The plaintext of `record`, if it authenticates.
    fn decrypt(&self, record: &record::Record<'_>) -> Option<Vec<u8>> {
        let tag_len = self.suite.tag_len;
        let body = record.body;
        if body.len() < EXPLICIT_NONCE + tag_len {
            return None;
        }
        let (explicit, sealed) = body.split_at(EXPLICIT_NONCE);
        let number = sequence_number(record.epoch, record.sequence);
        let aad = additional_data(number, record.content_type, sealed.len() - tag_len);
        let explicit: &[u8; 8] = explicit.try_into().ok()?;
        let nonce = nonce(&self.client.salt, explicit);
        let key = &self.client.key[..self.suite.key_len];
        self.suite.decrypt(key, &nonce, &aad, sealed).ok()
    }
}

/// A record's 64-bit sequence number: its epoch and its 48-bit number within it.
fn sequence_number(epoch: u16, sequence: u64) -> [u8; 8] {
    let mut number = sequence.to_be_bytes();
    number[..2].copy_from_slice(&epoch.to_be_bytes());
    number
}

/// An AEAD record's additional data (RFC 5246 section 6.2.3.3, DTLS's sequence number).
fn additional_data(number: [u8; 8], content_type: u8, plaintext_len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&number);
    aad[8] = content_type;
    aad[9..11].copy_from_slice(&VERSION);
    aad[11..].copy_from_slice(&(plaintext_len as u16).to_be_bytes());
    aad
}

/// The nonce of a record sealed with `salt` whose explicit part is `explicit`.
fn nonce(salt: &[u8; 4], explicit: &[u8; 8]) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(salt);
    nonce[4..].copy_from_slice(explicit);
    nonce
}

/// TLS 1.2's PRF with SHA-256 (RFC 5246 section 5): `out` filled from `secret`, `label` and
/// `seed`.
fn prf_sha256(secret: &[u8], label: &[u8], seed: &[u8], out: &mut [u8]) {
    let hmac = || Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    let mut a = {
        let mut mac = hmac();
        mac.update(label);
        mac.update(seed);
        mac.finalize().into_bytes()
    };
    for chunk in out.chunks_mut(32) {
        let mut mac = hmac();
        mac.update(&a);
        mac.update(label);
        mac.update(seed);
        let block = mac.finalize().into_bytes();
        chunk.copy_from_slice(&block[..chunk.len()]);
        let mut next = hmac();
        next.update(&a);
        a = next.finalize().into_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session whose two directions share keys, so what it seals it can open.
    fn looped(suite: &str) -> Compact {
        let keys = || DirectionKeys {
            key: Zeroizing::new([7u8; 32]),
            salt: [1, 2, 3, 4],
        };
        Compact {
            suite: Suite::named(suite).unwrap(),
            client: keys(),
            server: keys(),
            epoch: 1,
            next_sequence: 5,
            received: ReplayWindow::after(Some(4)),
        }
    }

    #[test]
    fn a_sealed_record_opens_once_and_not_when_altered() {
        for suite in [
            "PSK-AES128-CCM8",
            "PSK-AES128-CCM",
            "PSK-AES256-CCM8",
            "PSK-AES128-GCM-SHA256",
        ] {
            let mut session = looped(suite);
            let record = session.seal(b"coap datagram").unwrap();
            let tag_len = session.suite.tag_len;
            assert_eq!(record.len(), 13 + 8 + 13 + tag_len, "{suite}");
            assert_eq!(
                &record[3..11],
                &[0, 1, 0, 0, 0, 0, 0, 5],
                "epoch 1, number 5"
            );
            let mut altered = record.clone();
            *altered.last_mut().unwrap() ^= 1;
            assert_eq!(session.open(&altered), Opened::Data(vec![]), "{suite}");
            let opened = Opened::Data(vec![b"coap datagram".to_vec()]);
            assert_eq!(session.open(&record), opened, "{suite}");
            assert_eq!(
                session.open(&record),
                Opened::Data(vec![]),
                "a replay: {suite}"
            );
        }
    }

    #[test]
    fn an_authenticated_alert_ends_the_session() {
        let mut session = looped("PSK-AES128-CCM8");
        let mut alert = session.seal(&[1, 0]).unwrap();
        // The same record as an alert: sealed again with its content type in the AAD.
        alert[0] = ALERT;
        assert_eq!(
            session.open(&alert),
            Opened::Data(vec![]),
            "its tag covers the type"
        );
        let mut session = looped("PSK-AES128-CCM8");
        let number = sequence_number(1, 9);
        let aad = additional_data(number, ALERT, 2);
        let sealed = session
            .suite
            .encrypt(&[7; 16], &nonce(&[1, 2, 3, 4], &number), &aad, &[1, 0]);
        let mut record = vec![ALERT, 0xfe, 0xfd];
        record.extend_from_slice(&number);
        record.extend_from_slice(&((8 + 2 + 8) as u16).to_be_bytes());
        record.extend_from_slice(&number);
        record.extend_from_slice(&sealed.unwrap());
        assert_eq!(session.open(&record), Opened::Ended);
    }

    #[test]
    fn the_replay_window_takes_each_number_once_and_none_too_old() {
        let mut window = ReplayWindow::after(Some(100));
        assert!(
            !window.fresh(100) && !window.fresh(60),
            "what OpenSSL may have opened"
        );
        assert!(window.fresh(101));
        window.mark(103);
        assert!(window.fresh(101) && window.fresh(102) && !window.fresh(103));
        window.mark(101);
        assert!(!window.fresh(101) && window.fresh(102));
        window.mark(103 + 64);
        assert!(window.fresh(102 + 64) && !window.fresh(103) && !window.fresh(102));
        window.mark(1_000);
        assert!(window.fresh(999) && !window.fresh(1_000) && !window.fresh(935));
        let mut empty = ReplayWindow::after(None);
        assert!(empty.fresh(0));
        empty.mark(0);
        assert!(!empty.fresh(0) && empty.fresh(1));
    }
}
