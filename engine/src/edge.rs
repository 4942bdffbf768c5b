//! The edge: what any peer on the network may make the engine do before it has proven
//! anything, bounded. Owns the limits (a registration's lifetime, object links and endpoint
//! name; Registers per source; surveys per source and how soon an unanswered one gives up; to
//! whom package blocks are served; the duplicate cache's bytes) and the counters that show in
//! `/metrics` when a defence acts. The layers that apply a limit (`lwm2m`, `transfer`,
//! `coap`, `platform`) read it here and count here; this module calls nothing of theirs.
//!
//! What plain CoAP cannot protect without DTLS: a peer on the path between a device and the
//! engine sees the registration's location and the Package URI, so it can send Updates that
//! move the registration (NAT rebinding makes an Update from a new address legitimate) or
//! fetch the package; and a source address can be forged, so a Register may come from anyone.
//! Location ids and Package URI tokens are 128 random bits, so an attacker off the path
//! cannot guess them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::lock;

/// The bounds, each with a safe default for an LwM2M server on the open Internet.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeLimits {
    /// Longest lifetime a registration keeps: a longer `lt` is cut to it (the device's next
    /// Update after that finds no registration and it registers again).
    pub max_lifetime: Duration,
    /// Most object links a Register or Update may carry (real clients carry tens).
    pub max_object_links: usize,
    /// Longest endpoint name, in bytes. Names are printable: no control characters, no
    /// whitespace, so a name never forges a log line.
    pub max_endpoint_len: usize,
    /// Registers one source address may send at once, then [`EdgeLimits::registers_per_second`]:
    /// devices behind one carrier NAT share an address, so the burst is generous.
    pub register_burst: u32,
    /// Registers per second a source address is given back after its burst.
    pub registers_per_second: f64,
    /// Surveys of one source address under way or waiting at once; more are left to the
    /// device's next Update.
    pub surveys_per_source: usize,
    /// How long a registration lives until the device proves its address (it answers a
    /// survey, or sends an Update to its unguessable location), whatever lifetime it asked
    /// for: a forged Register is gone after this.
    pub unproven_ttl: Duration,
    /// Surveys of one source address that get RFC 7252's whole retransmission budget when
    /// the device never answered the engine; beyond them (a source registering many devices
    /// at once) a first survey gets only [`EdgeLimits::first_contact_retransmit`].
    pub patient_surveys_per_source: usize,
    /// Retransmissions of a first survey beyond the patient ones: a flood of forged Registers
    /// costs a few datagrams and seconds each, not RFC 7252's seven and 93 s.
    pub first_contact_retransmit: u32,
    /// Whether package blocks are served to any source that knows a Package URI, or only to
    /// registered devices (and, to anyone else, nothing larger than the request).
    pub packages_to_anyone: bool,
    /// Bytes the duplicate cache may hold (answers and bookkeeping); past it the oldest
    /// entries go before their EXCHANGE_LIFETIME.
    pub dedup_cache_bytes: usize,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            max_lifetime: Duration::from_secs(7 * 86_400),
            max_object_links: 128,
            max_endpoint_len: 128,
            register_burst: 200,
            registers_per_second: 20.0,
            surveys_per_source: 128,
            unproven_ttl: Duration::from_secs(300),
            patient_surveys_per_source: 8,
            first_contact_retransmit: 1,
            packages_to_anyone: false,
            dedup_cache_bytes: 16 << 20,
        }
    }
}

impl EdgeLimits {
    /// The defaults, but with no limit per source address on Registers and surveys and no
    /// end to unproven registrations: for simulated fleets on loopback, where every device
    /// shares 127.0.0.1 and benchmarks hold registrations without surveying them.
    pub fn loopback() -> Self {
        EdgeLimits {
            register_burst: u32::MAX,
            registers_per_second: f64::MAX,
            surveys_per_source: usize::MAX,
            patient_surveys_per_source: usize::MAX,
            unproven_ttl: Duration::MAX,
            ..EdgeLimits::default()
        }
    }
}

/// What the defences did, for `/metrics`.
#[derive(Debug, Default)]
pub struct EdgeCounters {
    /// Registers refused for their content (name, lifetime, links).
    pub registers_refused: AtomicU64,
    /// Registers answered 5.03 because their source sent too many.
    pub registers_rate_limited: AtomicU64,
    /// Lifetimes cut to the maximum.
    pub lifetimes_cut: AtomicU64,
    /// Surveys not started because their source had too many under way.
    pub surveys_skipped: AtomicU64,
    /// Package requests refused to a source that is not a registered device.
    pub packages_refused: AtomicU64,
    /// Devices that never answered a survey, forgotten when their registration ended.
    pub unsurveyed_forgotten: AtomicU64,
}

impl EdgeCounters {
    /// Every counter with its metric name, for the exposition.
    pub fn snapshot(&self) -> [(&'static str, u64); 6] {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("registers_refused", read(&self.registers_refused)),
            ("registers_rate_limited", read(&self.registers_rate_limited)),
            ("lifetimes_cut", read(&self.lifetimes_cut)),
            ("surveys_skipped", read(&self.surveys_skipped)),
            ("packages_refused", read(&self.packages_refused)),
            ("unsurveyed_forgotten", read(&self.unsurveyed_forgotten)),
        ]
    }
}

/// Sources kept by [`RateLimit`] before the full ones are forgotten (a flood from many forged
/// addresses must not grow it without end).
const MAX_TRACKED_SOURCES: usize = 100_000;

/// A token bucket per source address.
#[derive(Debug)]
pub struct RateLimit {
    /// Tokens a source starts with, and holds at most.
    burst: f64,
    /// Tokens given back per second.
    per_second: f64,
    /// Tokens left and when they were counted, per source.
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimit {
    /// `burst` at once, then `per_second`.
    pub fn new(burst: u32, per_second: f64) -> Self {
        RateLimit {
            burst: f64::from(burst.max(1)),
            per_second: per_second.max(0.001),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token of `source` at `now`: `Ok` when there was one, otherwise how long until
    /// there is.
    pub fn take(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= MAX_TRACKED_SOURCES {
            let full =
                |(tokens, at): &(f64, Instant)| self.refilled(*tokens, *at, now) >= self.burst;
            buckets.retain(|_, bucket| !full(bucket));
        }
        let (tokens, at) = buckets.entry(source).or_insert((self.burst, now));
        let available = self.refilled(*tokens, *at, now);
        *at = now;
        if available >= 1.0 {
            *tokens = available - 1.0;
            Ok(())
        } else {
            *tokens = available;
            Err(Duration::from_secs_f64((1.0 - available) / self.per_second))
        }
    }

    fn refilled(&self, tokens: f64, at: Instant, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(at).as_secs_f64();
        (tokens + elapsed * self.per_second).min(self.burst)
    }
}

/// Whether `name` is an endpoint name the engine keeps: 1 to `max_len` bytes, no control
/// characters and no whitespace.
pub fn endpoint_name_ok(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && !name.chars().any(|c| c.is_control() || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_its_rate_and_others_are_not_affected() {
        let limit = RateLimit::new(3, 2.0);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limit.take(a, t0).is_ok());
        }
        let wait = limit.take(a, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(
            limit.take(b, t0).is_ok(),
            "another source has its own bucket"
        );
        assert!(limit.take(a, t0 + Duration::from_millis(500)).is_ok());
        assert!(limit.take(a, t0 + Duration::from_millis(600)).is_err());
        assert!(
            limit.take(a, t0 + Duration::from_secs(60)).is_ok(),
            "refilled"
        );
    }

    #[test]
    fn endpoint_names_are_printable_and_bounded() {
        assert!(endpoint_name_ok("urn:imei:860000000000001", 128));
        assert!(endpoint_name_ok("ünïcode-é", 128));
        for bad in ["", "a\nERROR forged", "a\u{1b}[31m", "two words", "tab\t"] {
            assert!(!endpoint_name_ok(bad, 128), "{bad:?}");
        }
        assert!(!endpoint_name_ok(&"x".repeat(129), 128));
    }
}
