//! `Idempotency-Key` on the creating POSTs: a client that does not know whether its request
//! was served (a timeout, a dropped connection, an engine restart) sends it again with the
//! same key and gets the first answer again (status, body, `Location`, `ETag`, and
//! `Idempotent-Replayed: true`) instead of a second resource.
//!
//! - A key is the caller's: it is kept under the digest of the request's token, so two
//!   integrators never share one (and no token is stored).
//! - The same key with another request (method, path and query, media type or body) is
//!   refused with 422, whatever the first answer was.
//! - Only successes are kept: a refused request changed nothing, so sending it again (the
//!   group it named created since, say) runs it again.
//! - Requests with one key run one after the other: a duplicate sent while the first is under
//!   way waits for it, then gets its answer.
//! - What is kept is in the store, written durably before the answer leaves, so a retry after
//!   a restart is answered from it; a key is kept for [`RETENTION`], then forgotten (swept at
//!   most every [`SWEEP_EVERY_MS`] as new keys come, and at start).
//!
//! The one window: the engine stopping between the creation and the store write of its answer
//! (the two are separate writes) leaves a resource made and no key kept; the retry creates a
//! second one. Owns the middleware and its records (`idem/`, `idem-at/`); not what the
//! requests do.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::auth::Caller;
use super::keyed_lock::KeyedLocks;
use super::problem::{ApiResult, Kind, Problem};
use crate::clock::{Clock, UnixMillis};
use crate::store::{Batch, Store, StoreError, StoreExt};

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The header of an answer given again.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 255;
/// How long a key is kept: 24 hours.
pub const RETENTION_MS: UnixMillis = 24 * 60 * 60 * 1000;
/// Least time between two sweeps of expired keys: a minute.
pub const SWEEP_EVERY_MS: UnixMillis = 60 * 1000;
/// Key prefix of the kept answers: `idem/{caller}/{sha256 of the key}`.
const PREFIX: &str = "idem/";
/// Key prefix of the index by age: `idem-at/{time, 16 hex digits}/{caller}/{key digest}`,
/// whose value is the kept answer's key.
const BY_AGE: &str = "idem-at/";
/// Index entries a sweep reads at a time.
const SWEEP_PAGE: usize = 512;

/// The kept answers and what serializes requests with one key.
pub struct Idempotency {
    /// Where answers are kept.
    store: Arc<dyn Store>,
    /// When an answer was kept, and whether it expired.
    clock: Clock,
    /// One request per key at a time.
    keys: KeyedLocks,
    /// When the last sweep ran, so a burst of new keys sweeps once.
    last_sweep: AtomicU64,
}

/// An answer kept for its key.
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    /// The digest of the request it answered.
    request: String,
    /// Its status.
    status: u16,
    /// Its headers a client uses (`Content-Type`, `Location`, `ETag`).
    headers: Vec<(String, String)>,
    /// Its body (JSON).
    body: String,
    /// When it was kept.
    at: UnixMillis,
}

/// The headers of an answer kept with it.
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

impl Idempotency {
    /// The kept answers of `store`, those expired swept away.
    pub fn open(store: Arc<dyn Store>, clock: Clock) -> Result<Self, StoreError> {
        let idempotency = Idempotency {
            store,
            clock,
            keys: KeyedLocks::default(),
            last_sweep: AtomicU64::new(clock.now()),
        };
        idempotency.sweep(clock.now())?;
        Ok(idempotency)
    }

    /// Runs `request`, or answers what it was answered before under its key.
    async fn serve(&self, limit: usize, request: Request, next: Next) -> ApiResult<Response> {
        let Some(key) = key_of(request.headers())?.map(<[u8]>::to_vec) else {
            return Ok(next.run(request).await);
        };
        let caller = request.extensions().get::<Caller>().cloned();
        let caller = caller.ok_or_else(|| Problem::internal(&"no caller on a guarded route"))?;
        let (parts, body) = request.into_parts();
        let body = to_bytes(body, limit).await.map_err(|_| too_large(limit))?;
        let request_digest = digest_of(&parts, &body);
        let record = format!("{PREFIX}{}/{}", caller.0, hex::encode(Sha256::digest(key)));
        let _one_at_a_time = self.keys.lock(&record).await;
        if let Some(kept) = self.kept(&record)? {
            if kept.request != request_digest {
                return Err(Problem::new(
                    Kind::KeyReused,
                    "this Idempotency-Key was used with another request; use a new key",
                ));
            }
            return Ok(kept.replay());
        }
        let answer = next.run(Request::from_parts(parts, Body::from(body))).await;
        if !answer.status().is_success() {
            return Ok(answer);
        }
        let (head, body) = answer.into_parts();
        let body = to_bytes(body, usize::MAX)
            .await
            .map_err(|e| Problem::internal(&e))?;
        let kept = Kept::new(
            request_digest,
            &head.headers,
            head.status,
            &body,
            self.clock.now(),
        );
        if let Err(error) = self.keep(&record, &kept) {
            tracing::error!(%error, "an answer was not kept for its Idempotency-Key");
        }
        Ok(Response::from_parts(head, Body::from(body)))
    }

    /// The answer kept at `record`, unless it expired.
    fn kept(&self, record: &str) -> Result<Option<Kept>, StoreError> {
        let kept: Option<Kept> = self.store.get(record)?;
        let now = self.clock.now();
        Ok(kept.filter(|kept| !expired(kept.at, now)))
    }

    /// Keeps `kept` at `record` durably, with its entry in the index by age; then sweeps if
    /// one is due.
    fn keep(&self, record: &str, kept: &Kept) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        let suffix = record.strip_prefix(PREFIX).unwrap_or(record);
        batch.put(
            format!("{BY_AGE}{:016x}/{suffix}", kept.at),
            &record.to_string(),
        );
        batch.put(record, kept);
        self.store.apply(batch)?;
        self.store.flush()?;
        let last = self.last_sweep.load(Ordering::Relaxed);
        let due = kept.at.saturating_sub(last) >= SWEEP_EVERY_MS;
        if due && self.swap_sweep(last, kept.at) {
            self.sweep(kept.at)?;
        }
        Ok(())
    }

    /// True for the one caller that moves the last sweep from `last` to `now`.
    fn swap_sweep(&self, last: UnixMillis, now: UnixMillis) -> bool {
        self.last_sweep
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Forgets every answer kept longer than [`RETENTION_MS`] before `now`, oldest first.
    fn sweep(&self, now: UnixMillis) -> Result<usize, StoreError> {
        let mut swept = 0;
        loop {
            let page: Vec<(String, String)> = self.store.scan_after(BY_AGE, None, SWEEP_PAGE)?;
            let mut batch = Batch::new();
            for (entry, record) in &page {
                if !expired(age_of(entry), now) {
                    break;
                }
                batch.remove(entry.as_str()).remove(record.as_str());
            }
            let removed = batch.removes.len() / 2;
            if removed > 0 {
                self.store.apply(batch)?;
            }
            swept += removed;
            if removed < SWEEP_PAGE {
                return Ok(swept);
            }
        }
    }
}

/// When the index entry `entry` was kept (0, swept at once, when it does not read).
fn age_of(entry: &str) -> UnixMillis {
    let digits = entry.strip_prefix(BY_AGE).and_then(|rest| rest.get(..16));
    digits
        .and_then(|digits| UnixMillis::from_str_radix(digits, 16).ok())
        .unwrap_or(0)
}

fn expired(at: UnixMillis, now: UnixMillis) -> bool {
    now.saturating_sub(at) >= RETENTION_MS
}

impl Kept {
    fn new(
        request: String,
        headers: &HeaderMap,
        status: StatusCode,
        body: &[u8],
        at: UnixMillis,
    ) -> Kept {
        let headers = KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = headers.get(name)?.to_str().ok()?;
                Some((name.to_string(), value.to_string()))
            })
            .collect();
        Kept {
            request,
            status: status.as_u16(),
            headers,
            body: String::from_utf8_lossy(body).into_owned(),
            at,
        }
    }

    /// The kept answer, given again.
    fn replay(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut response = (status, self.body).into_response();
        let headers = response.headers_mut();
        headers.remove(header::CONTENT_TYPE);
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes());
            if let (Ok(name), Ok(value)) = (name, HeaderValue::from_str(value)) {
                headers.insert(name, value);
            }
        }
        headers.insert(REPLAYED, HeaderValue::from_static("true"));
        response
    }
}

/// The request's key, if it has one: 1 to [`MAX_KEY_BYTES`] visible ASCII characters.
fn key_of(headers: &HeaderMap) -> ApiResult<Option<&[u8]>> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.as_bytes();
    let visible = key.iter().all(|byte| (0x21..=0x7e).contains(byte));
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !visible {
        return Err(Problem::new(
            Kind::BadRequest,
            format!("Idempotency-Key is 1 to {MAX_KEY_BYTES} visible ASCII characters"),
        ));
    }
    Ok(Some(key))
}

/// What makes two requests the same: method, path and query, media type and body.
fn digest_of(parts: &Parts, body: &[u8]) -> String {
    let media = parts.headers.get(header::CONTENT_TYPE);
    let mut digest = Sha256::new();
    for part in [
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        parts.uri.query().unwrap_or("").as_bytes(),
        media.map_or(&b""[..], HeaderValue::as_bytes),
    ] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    digest.update(body);
    hex::encode(digest.finalize())
}

fn too_large(limit: usize) -> Problem {
    Problem::new(
        Kind::TooLarge,
        format!("the body is larger than this route takes ({limit} bytes)"),
    )
}

/// Middleware of a creating route: honours its `Idempotency-Key`; `limit` is the route's
/// body limit.
pub async fn honour(
    State((idempotency, limit)): State<(Arc<Idempotency>, usize)>,
    request: Request,
    next: Next,
) -> Response {
    idempotency
        .serve(limit, request, next)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn kept(at: UnixMillis) -> Kept {
        Kept::new(
            "r".into(),
            &HeaderMap::new(),
            StatusCode::CREATED,
            b"{}",
            at,
        )
    }

    #[tokio::test]
    async fn answers_are_forgotten_after_the_retention_and_not_before() {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let clock = Clock::system();
        let idempotency = Idempotency::open(store.clone(), clock).unwrap();
        let now = clock.now();
        idempotency
            .keep("idem/c/old", &kept(now - RETENTION_MS))
            .unwrap();
        idempotency.keep("idem/c/new", &kept(now - 1000)).unwrap();
        assert!(idempotency.kept("idem/c/old").unwrap().is_none(), "expired");
        assert!(idempotency.kept("idem/c/new").unwrap().is_some());
        assert_eq!(idempotency.sweep(now).unwrap(), 1);
        assert!(store.get_raw("idem/c/old").unwrap().is_none());
        assert_eq!(store.scan_raw(BY_AGE).unwrap().len(), 1);
        assert_eq!(idempotency.sweep(now + RETENTION_MS).unwrap(), 1);
        assert!(store.scan_raw("idem").unwrap().is_empty());
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        let key = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(value).unwrap());
            key_of(&headers).map(|key| key.map(<[u8]>::to_vec))
        };
        assert_eq!(key("a-key_1").unwrap(), Some(b"a-key_1".to_vec()));
        assert!(key("").is_err());
        assert!(key("two words").is_err());
        assert!(key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(key_of(&HeaderMap::new()).unwrap().is_none());
    }
}
