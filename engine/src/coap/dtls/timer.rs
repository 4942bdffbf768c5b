//! The retransmission timer of a DTLS handshake's flights. OpenSSL's own starts at 1 s and
//! doubles up to 60 s, and, with a memory pipe instead of a socket, fires only when the
//! connection is driven: when a datagram comes in (or the client sends). Here the timer is
//! fixed instead of doubling, since what paces the flights is the peer's retransmissions (for
//! a client, CoAP's own of the request waiting for the handshake): a server sends its last
//! flight again when a datagram of the peer finds it waiting longer than
//! [`FlightTimer::Server`]'s half second (a duplicate arriving sooner does not), and a client
//! sends its own at each CoAP retransmission at least a second after it.

use openssl::ssl::SslRef;
use openssl_sys::SSL;

/// Whose timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlightTimer {
    /// 500 ms: the server answers a peer's retransmitted flight with its own.
    Server,
    /// 1 s: the client sends its flight again with CoAP's retransmissions.
    Client,
}

unsafe extern "C" {
    /// Sets the callback that gives a DTLS connection's next timeout (libssl since 1.1.1;
    /// `openssl-sys` does not bind it).
    fn DTLS_set_timer_cb(
        ssl: *mut SSL,
        cb: Option<unsafe extern "C" fn(*mut SSL, libc::c_uint) -> libc::c_uint>,
    );
}

unsafe extern "C" fn server_timeout(_: *mut SSL, _previous_us: libc::c_uint) -> libc::c_uint {
    500_000
}

unsafe extern "C" fn client_timeout(_: *mut SSL, _previous_us: libc::c_uint) -> libc::c_uint {
    1_000_000
}

/// Gives `ssl`'s handshake `timer`.
pub fn set_flight_timer(ssl: &SslRef, timer: FlightTimer) {
    use foreign_types::ForeignTypeRef;
    let cb = match timer {
        FlightTimer::Server => server_timeout,
        FlightTimer::Client => client_timeout,
    };
    // SAFETY: `ssl` is a live connection; the callback reads nothing through its pointer.
    unsafe { DTLS_set_timer_cb(ssl.as_ptr(), Some(cb)) };
}
