//! The HTTP client deliveries are posted with: http and https (rustls, the web's roots), a
//! timeout to connect and one for the whole request, no redirect followed (a receiver that
//! answers 3xx has not taken the delivery, and a redirect could point anywhere), the answer's
//! body never read. Optionally it refuses to connect to private addresses: a URL is checked
//! where its name resolves, at every attempt, so a name that later resolves to a private
//! address is refused too. Requests run on the blocking pool, never on the engine's async
//! threads.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// How the client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest to connect (TCP and TLS).
    pub connect_timeout: Duration,
    /// Longest for a whole request, from connecting to the answer's head.
    pub request_timeout: Duration,
    /// Refuse addresses that are not public (loopback, private, link-local, unique local,
    /// shared, unspecified): a receiver URL cannot make the engine reach into its own network.
    pub forbid_private: bool,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The receiver answered with this status.
    Status(u16),
    /// No answer: why (refused, timed out, TLS, a private address refused).
    Failed(String),
}

/// Posts deliveries. Cheap to clone (its connections are shared).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

impl Client {
    /// A client within `limits`.
    pub fn new(limits: HttpLimits) -> Client {
        let forbid_private = limits.forbid_private;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(limits.connect_timeout)
            .timeout(limits.request_timeout)
            .redirects(0)
            .user_agent(concat!(
                "fota-engine/",
                env!("CARGO_PKG_VERSION"),
                " webhooks"
            ))
            .resolver(move |netloc: &str| resolve(netloc, forbid_private))
            .build();
        Client { agent }
    }

    /// POSTs `body` as JSON to `url` with `headers`.
    pub async fn post(
        &self,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> Answer {
        let agent = self.agent.clone();
        let url = url.to_string();
        let posted = tokio::task::spawn_blocking(move || {
            let mut request = agent.post(&url).set("Content-Type", "application/json");
            for (name, value) in &headers {
                request = request.set(name, value);
            }
            match request.send_bytes(&body) {
                Ok(response) => Answer::Status(response.status()),
                Err(ureq::Error::Status(status, _)) => Answer::Status(status),
                Err(ureq::Error::Transport(error)) => Answer::Failed(error.to_string()),
            }
        });
        posted
            .await
            .unwrap_or_else(|error| Answer::Failed(format!("the request did not run: {error}")))
    }
}

/// The addresses of `netloc` (`host:port`), without the private ones when they are forbidden.
fn resolve(netloc: &str, forbid_private: bool) -> io::Result<Vec<SocketAddr>> {
    let addresses: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
    if !forbid_private {
        return Ok(addresses);
    }
    let public: Vec<SocketAddr> = addresses
        .into_iter()
        .filter(|address| is_public(address.ip()))
        .collect();
    if public.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{netloc} resolves only to private addresses, which this engine refuses"),
        ));
    }
    Ok(public)
}

/// True for an address on the public Internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            let shared = a == 100 && (64..128).contains(&b); // RFC 6598, carrier NAT
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || shared
                || a == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            let unique_local = first & 0xfe00 == 0xfc00;
            let link_local = first & 0xffc0 == 0xfe80;
            !(v6.is_loopback() || v6.is_unspecified() || unique_local || link_local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_private_and_link_local_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "2606:2800:220:1::1", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_name_that_resolves_only_to_private_addresses_is_refused_when_they_are_forbidden() {
        assert!(resolve("127.0.0.1:80", false).is_ok());
        let refused = resolve("127.0.0.1:80", true).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
    }
}
