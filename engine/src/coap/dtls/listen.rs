//! The stateless front of the DTLS server (RFC 6347 section 4.2.1): a ClientHello from a source
//! without a session is answered with a HelloVerifyRequest carrying a cookie bound to the
//! source address, and nothing is kept; only a ClientHello that returns a valid cookie (the
//! source can receive at its address) becomes a handshake. OpenSSL's `DTLSv1_listen` does the
//! parsing and the answer; the cookie is ours: HMAC-SHA256 of the source address under a key
//! drawn when the engine starts.

use std::net::SocketAddr;
use std::sync::LazyLock;

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::ssl::{Ssl, SslRef, SslStream};

use super::pipe::Pipe;

/// Bytes of a cookie: 128 bits of an HMAC are beyond guessing within a handshake's lifetime.
pub(super) const COOKIE_LEN: usize = 16;

/// Where a handshake's peer address is kept on its `Ssl`, for the cookie callbacks.
pub(super) static PEER: LazyLock<Index<Ssl, SocketAddr>> =
    LazyLock::new(|| Ssl::new_ex_index().expect("an OpenSSL ex-data index"));

unsafe extern "C" {
    /// OpenSSL's stateless listener (libssl since 1.1.0; `openssl-sys` does not bind it).
    fn DTLSv1_listen(ssl: *mut openssl_sys::SSL, peer: *mut libc::c_void) -> libc::c_int;
    /// An empty `BIO_ADDR` (libcrypto).
    fn BIO_ADDR_new() -> *mut libc::c_void;
    /// Frees a `BIO_ADDR`.
    fn BIO_ADDR_free(addr: *mut libc::c_void);
}

/// What the listener made of a datagram from a source without a session.
pub(super) enum Listened {
    /// A ClientHello with a valid cookie: the handshake goes on with this stream.
    Verified(Box<SslStream<Pipe>>),
    /// A ClientHello without one (or with a stale one): this HelloVerifyRequest goes back.
    Challenge(Vec<u8>),
    /// Not a ClientHello, or malformed: dropped.
    Dropped,
}

/// The cookie key.
pub(super) struct CookieKey(PKey<openssl::pkey::Private>);

impl CookieKey {
    /// A key drawn from OpenSSL's generator: cookies from before a restart do not verify (the
    /// client then gets a new one).
    pub fn random() -> Result<CookieKey, ErrorStack> {
        let mut secret = [0u8; 32];
        openssl::rand::rand_bytes(&mut secret)?;
        Ok(CookieKey(PKey::hmac(&secret)?))
    }

    /// The cookie of `peer`.
    fn cookie(&self, peer: SocketAddr) -> Result<[u8; COOKIE_LEN], ErrorStack> {
        let mut signer = Signer::new(openssl::hash::MessageDigest::sha256(), &self.0)?;
        match peer {
            SocketAddr::V4(v4) => signer.update(&v4.ip().octets())?,
            SocketAddr::V6(v6) => signer.update(&v6.ip().octets())?,
        }
        signer.update(&peer.port().to_be_bytes())?;
        let mac = signer.sign_to_vec()?;
        let mut cookie = [0u8; COOKIE_LEN];
        cookie.copy_from_slice(&mac[..COOKIE_LEN]);
        Ok(cookie)
    }

    /// The callback that writes the cookie of the handshake's peer.
    pub fn generate(&self, ssl: &mut SslRef, out: &mut [u8]) -> Result<usize, ErrorStack> {
        let peer = *ssl.ex_data(*PEER).ok_or_else(ErrorStack::get)?;
        let cookie = self.cookie(peer)?;
        out[..COOKIE_LEN].copy_from_slice(&cookie);
        Ok(COOKIE_LEN)
    }

    /// The callback that checks a returned cookie against the handshake's peer.
    pub fn verify(&self, ssl: &mut SslRef, cookie: &[u8]) -> bool {
        let Some(peer) = ssl.ex_data(*PEER).copied() else {
            return false;
        };
        cookie.len() == COOKIE_LEN
            && self
                .cookie(peer)
                .is_ok_and(|expected| openssl::memcmp::eq(&expected, cookie))
    }
}

/// Runs the listener on `datagram` from `peer` with a fresh `ssl`.
pub(super) fn listen(mut ssl: Ssl, peer: SocketAddr, datagram: &[u8]) -> Listened {
    ssl.set_ex_data(*PEER, peer);
    let Ok(mut stream) = SslStream::new(ssl, Pipe::with(datagram)) else {
        return Listened::Dropped;
    };
    let verdict = unsafe {
        // SAFETY: the SSL is valid and owned by `stream` for the call; the address is
        // allocated, passed and freed here.
        let addr = BIO_ADDR_new();
        if addr.is_null() {
            return Listened::Dropped;
        }
        let verdict = DTLSv1_listen(stream.ssl().as_ptr(), addr);
        BIO_ADDR_free(addr);
        verdict
    };
    match verdict {
        1 => Listened::Verified(Box::new(stream)),
        0 => match stream.get_mut().take_sent().into_iter().next() {
            Some(challenge) => Listened::Challenge(challenge),
            None => Listened::Dropped,
        },
        _ => Listened::Dropped,
    }
}
