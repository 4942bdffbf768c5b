//! `RegistrationInterface`: the CoAP request handler for /rd (Register, Update, De-register),
//! delegating every other path to the next handler (the package server), within the edge's
//! limits: names, lifetimes and object lists bounded, Registers per source rate-limited (5.03
//! with Max-Age, smaller than the request). A device that registers or updates from a new
//! address takes its RTO estimate along. Also the lifetime expiry task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use coap_lite::{RequestType, ResponseType};

use super::admission::{Admission, Refusal};
use super::registration::{RegisterRequest, UpdateRequest};
use super::registry::Registry;
use crate::coap::stats::bump;
use crate::coap::{
    HandlerFuture, IncomingRequest, PacketExt, RequestHandler, Response, WeakEndpoint,
};
use crate::edge::{EdgeCounters, EdgeLimits, RateLimit};

/// The path of the registration interface (LwM2M's default, which this server uses).
const RD: &str = "rd";

/// Answers the registration interface and passes other requests on.
pub struct RegistrationInterface {
    /// Where registrations live.
    registry: Arc<Registry>,
    /// Who answers requests outside /rd (package downloads); 4.04 when absent.
    next: Option<Arc<dyn RequestHandler>>,
    /// What a registration may hold.
    limits: EdgeLimits,
    /// Registers per source address.
    registers: RateLimit,
    /// Where refusals are counted.
    counters: Arc<EdgeCounters>,
    /// Which identity registers as which endpoint.
    admission: Admission,
    /// The endpoint whose RTO estimates follow a device to its new address; none in tests of
    /// the interface alone.
    estimates: Option<WeakEndpoint>,
}

impl RegistrationInterface {
    /// A handler for /rd on `registry` within `limits` and `admission`'s rules, counting in
    /// `counters`, with `next` for every other path.
    pub fn new(
        registry: Arc<Registry>,
        next: Option<Arc<dyn RequestHandler>>,
        limits: EdgeLimits,
        counters: Arc<EdgeCounters>,
        admission: Admission,
    ) -> Self {
        let registers = RateLimit::new(limits.register_burst, limits.registers_per_second);
        RegistrationInterface {
            registry,
            next,
            limits,
            registers,
            counters,
            admission,
            estimates: None,
        }
    }

    /// This interface, carrying a device's RTO estimate on `endpoint` from its old address to
    /// the one it registers or updates from.
    pub fn carrying_estimates(mut self, endpoint: WeakEndpoint) -> Self {
        self.estimates = Some(endpoint);
        self
    }

    /// Carries the RTO estimate of a device that was at `before` to `now_at`.
    fn carry_estimate(&self, before: Option<SocketAddr>, now_at: SocketAddr) {
        let Some(before) = before.filter(|before| *before != now_at) else {
            return;
        };
        if let Some(endpoint) = self.estimates.as_ref().and_then(WeakEndpoint::upgrade) {
            endpoint.carry_estimate(before, now_at);
        }
    }

    /// A Register from `request`'s source, unless that source sent too many or its identity
    /// may not register as the endpoint it names.
    fn register(&self, request: &IncomingRequest, now: Instant) -> Response {
        if let Err(wait) = self.registers.take(request.peer.ip(), now) {
            bump(&self.counters.registers_rate_limited);
            let mut response = Response::new(ResponseType::ServiceUnavailable);
            response.max_age = Some(wait.as_secs().max(1) as u32);
            return response;
        }
        let mut register = match RegisterRequest::parse(&request.packet, &self.limits) {
            Ok(register) => register,
            Err(error) => {
                bump(&self.counters.registers_refused);
                tracing::debug!(peer = %request.peer, reason = %error.0, "Register refused");
                return Response::error(ResponseType::BadRequest, error.0);
            }
        };
        let identity = request.identity.as_deref();
        if let Err(refusal) = self.admission.register(&register.endpoint, identity) {
            return self.refused(request, "Register", refusal);
        }
        register.lifetime = self.cut(register.lifetime);
        register.identity = request.identity.clone();
        // Carried before the registration exists: whoever waits for it asks at once.
        let before = self.registry.get(&register.endpoint).map(|r| r.address);
        self.carry_estimate(before, request.peer);
        let registration = self.registry.register(register, request.peer, now);
        let mut response = Response::new(ResponseType::Created);
        response.location_path = vec![RD.into(), registration.id];
        response
    }

    /// Counts and logs a refused registration request, and answers it (no reason in the
    /// answer: the log has it, the sender may be anyone).
    fn refused(&self, request: &IncomingRequest, what: &str, refusal: Refusal) -> Response {
        bump(&self.counters.registers_refused);
        let (code, reason) = match refusal {
            Refusal::Unauthenticated(reason) => (ResponseType::Unauthorized, reason),
            Refusal::Forbidden(reason) => (ResponseType::Forbidden, reason),
        };
        tracing::warn!(
            peer = %request.peer, identity = ?request.identity, %reason, "{what} refused"
        );
        Response::new(code)
    }

    /// An Update or De-register of registration `id`, when `request` comes with the identity
    /// it was made with.
    fn owned(&self, request: &IncomingRequest, id: &str, what: &str) -> Option<Response> {
        let registration = self.registry.by_id(id)?;
        let refusal = Admission::owns(&registration, request.identity.as_deref()).err()?;
        Some(self.refused(request, what, refusal))
    }

    /// `lifetime`, or the longest a registration keeps when it is longer.
    fn cut(&self, lifetime: Duration) -> Duration {
        if lifetime > self.limits.max_lifetime {
            bump(&self.counters.lifetimes_cut);
            return self.limits.max_lifetime;
        }
        lifetime
    }

    /// An Update of registration `id`.
    fn update(&self, request: &IncomingRequest, id: &str, now: Instant) -> Response {
        match UpdateRequest::parse(&request.packet, &self.limits) {
            Ok(mut update) => {
                update.lifetime = update.lifetime.map(|lifetime| self.cut(lifetime));
                let before = self.registry.by_id(id).map(|r| r.address);
                self.carry_estimate(before, request.peer);
                match self.registry.update(id, update, request.peer, now) {
                    Some(updated) => {
                        let endpoint = &updated.endpoint;
                        tracing::debug!(%endpoint, cycle = ?updated.cycle.estimate(), "Update");
                        Response::new(ResponseType::Changed)
                    }
                    None => Response::error(ResponseType::NotFound, "unknown registration"),
                }
            }
            Err(error) => Response::error(ResponseType::BadRequest, error.0),
        }
    }

    /// A De-register of registration `id`.
    fn deregister(&self, id: &str) -> Response {
        match self.registry.deregister(id) {
            Some(_) => Response::new(ResponseType::Deleted),
            None => Response::error(ResponseType::NotFound, "unknown registration"),
        }
    }

    fn registration(&self, request: &IncomingRequest) -> Response {
        let path = request.packet.uri_path();
        let method = request.packet.request_method();
        let now = Instant::now();
        match (method, path.as_slice()) {
            (Some(RequestType::Post), [rd]) if rd == RD => self.register(request, now),
            (Some(RequestType::Post), [rd, id]) if rd == RD => self
                .owned(request, id, "Update")
                .unwrap_or_else(|| self.update(request, id, now)),
            (Some(RequestType::Delete), [rd, id]) if rd == RD => self
                .owned(request, id, "De-register")
                .unwrap_or_else(|| self.deregister(id)),
            _ => Response::error(
                ResponseType::MethodNotAllowed,
                "registration interface: POST /rd, POST or DELETE /rd/{id}",
            ),
        }
    }
}

impl RequestHandler for RegistrationInterface {
    fn handle(&self, request: IncomingRequest) -> HandlerFuture {
        let is_rd = request.packet.uri_path().first().is_some_and(|s| s == RD);
        if is_rd {
            let response = self.registration(&request);
            return Box::pin(async move { response });
        }
        match &self.next {
            Some(next) => next.handle(request),
            None => Box::pin(async { Response::error(ResponseType::NotFound, "no such resource") }),
        }
    }
}

/// Expires registrations whose lifetime ran out, checking every `period`, until the registry
/// is dropped.
pub fn spawn_expiry(registry: &Arc<Registry>, period: Duration) -> tokio::task::JoinHandle<()> {
    let registry = Arc::downgrade(registry);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            for expired in registry.expire(Instant::now()) {
                tracing::info!(endpoint = %expired.endpoint, "registration expired");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use coap_lite::Packet;

    use super::*;
    use crate::coap::OutgoingRequest;

    fn post(path: &[&str]) -> IncomingRequest {
        let mut request = OutgoingRequest::new(RequestType::Post, path)
            .with_payload(40, Bytes::from_static(b"</5/0>"));
        request.query = vec!["ep=dev".into(), "lt=60".into()];
        IncomingRequest {
            peer: "127.0.0.1:9".parse().unwrap(),
            identity: None,
            packet: Packet::from_bytes(&request.to_packet(1, &[1]).to_bytes().unwrap()).unwrap(),
        }
    }

    #[tokio::test]
    async fn only_a_post_to_rd_registers() {
        let registry = Arc::new(Registry::new());
        let interface = RegistrationInterface::new(
            registry.clone(),
            None,
            EdgeLimits::default(),
            Arc::default(),
            Admission::default(),
        );
        for elsewhere in [&["rdx"][..], &["fw"], &["rd", "a", "b"]] {
            let response = interface.handle(post(elsewhere)).await;
            assert!(
                response.code.is_error(),
                "{elsewhere:?}: {:?}",
                response.code
            );
        }
        assert!(registry.is_empty());
        let response = interface.handle(post(&["rd"])).await;
        assert_eq!(response.code, ResponseType::Created);
        assert_eq!(registry.len(), 1);
    }
}
