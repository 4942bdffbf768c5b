//! What one resource is answered as, and the conditions a client may put on reading or
//! changing it (RFC 9110 §8.8.3, §13):
//!
//! - its JSON with a strong `ETag`, the sha256 of exactly those bytes: any change of what a GET
//!   would answer (the engine's own too: a task progressing, a webhook delivering) changes it;
//! - a `201 Created` (or `202 Accepted`) with the new resource's `Location`;
//! - `If-None-Match` on a GET: `304 Not Modified` when the client's copy is current (weak
//!   comparison);
//! - `If-Match` on a write: `412 Precondition Failed` unless the resource is as the client last
//!   saw it (strong comparison; `*`: it exists). Without the header a write is unconditional.
//!
//! The API's writes to one resource run one at a time ([`ApiState::change`]): the check of
//! `If-Match` and the change it guards are not split by another client's write through the
//! API. A change the engine makes itself (a task's scheduler, a device's registration, a
//! webhook's delivery) takes its own locks, not this one: it may land between the check and
//! the change. The change then still obeys every rule of the resource (a task's status rules
//! are checked under the campaign's lock), only the client's view may be a few microseconds
//! old. Owns these headers and answers; not the resources.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::ApiState;
use super::keyed_lock::KeyedLocks;
use super::problem::{ApiResult, Kind, Problem};

/// A resource's JSON as answered, and its entity tag.
pub struct Representation {
    /// The JSON bytes.
    body: Vec<u8>,
    /// `"<hex of the first 16 bytes of their sha256>"`.
    etag: String,
}

impl Representation {
    /// The representation of `value`.
    pub fn of<T: Serialize>(value: &T) -> Representation {
        let body = serde_json::to_vec(value).expect("a representation serializes");
        let digest = Sha256::digest(&body);
        let etag = format!("\"{}\"", hex::encode(&digest[..16]));
        Representation { body, etag }
    }

    /// Answered with `status`, its ETag and, for a new resource, its `Location`.
    fn answer(self, status: StatusCode, location: Option<&str>) -> Response {
        let mut response = (status, self.body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ETAG, tag_value(&self.etag));
        if let Some(location) = location {
            headers.insert(header::LOCATION, location_value(location));
        }
        response
    }
}

/// `value` answered 200 with its ETag.
pub fn tagged<T: Serialize>(value: &T) -> Response {
    Representation::of(value).answer(StatusCode::OK, None)
}

/// A new resource answered 201 with its `Location` (the URL a GET reads it at) and its ETag.
pub fn created<T: Serialize>(location: &str, value: &T) -> Response {
    Representation::of(value).answer(StatusCode::CREATED, Some(location))
}

/// A request taken to be done later answered 202 with the `Location` of its status.
pub fn accepted<T: Serialize>(location: &str, value: &T) -> Response {
    Representation::of(value).answer(StatusCode::ACCEPTED, Some(location))
}

/// The URL of a resource: `base` and each id as one percent-encoded path segment.
pub fn location(base: &str, ids: &[&str]) -> String {
    ids.iter().fold(base.to_string(), |mut url, id| {
        url.push('/');
        url.push_str(&path_segment(id));
        url
    })
}

/// `text` as one path segment: unreserved characters (and `:`, common in endpoint names) as
/// they are, every other byte percent-encoded.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn location_value(location: &str) -> HeaderValue {
    HeaderValue::from_str(location).expect("a location is percent-encoded ASCII")
}

fn tag_value(etag: &str) -> HeaderValue {
    HeaderValue::from_str(etag).expect("an entity tag is ASCII")
}

/// The entity tags of an `If-Match` or `If-None-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tags {
    /// `*`: any current representation.
    Any,
    /// The tags listed, each with whether it is weak (`W/`).
    Listed(Vec<(bool, String)>),
}

impl Tags {
    /// The tags of every `name` header of `headers`; `None` without one, a 400 when one does
    /// not read as RFC 9110 writes them.
    fn of(headers: &HeaderMap, name: &header::HeaderName) -> ApiResult<Option<Tags>> {
        let mut listed = Vec::new();
        let mut found = false;
        for value in headers.get_all(name) {
            found = true;
            let text = value.to_str().map_err(|_| malformed(name))?.trim();
            if text == "*" {
                return Ok(Some(Tags::Any));
            }
            for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                listed.push(entity_tag(tag).ok_or_else(|| malformed(name))?);
            }
        }
        if found && listed.is_empty() {
            return Err(malformed(name));
        }
        Ok(found.then_some(Tags::Listed(listed)))
    }

    /// True when `etag` is among them: strongly (`If-Match`: a weak tag never matches) or
    /// weakly (`If-None-Match`).
    fn contain(&self, etag: &str, strong: bool) -> bool {
        match self {
            Tags::Any => true,
            Tags::Listed(tags) => tags
                .iter()
                .any(|(weak, tag)| tag == etag && !(strong && *weak)),
        }
    }
}

/// `"opaque"` or `W/"opaque"`: whether it is weak, and the quoted tag.
fn entity_tag(text: &str) -> Option<(bool, String)> {
    let (weak, quoted) = match text.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let opaque = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let valid = |c: char| c == '!' || ('#'..='~').contains(&c) || !c.is_ascii();
    opaque
        .chars()
        .all(valid)
        .then(|| (weak, quoted.to_string()))
}

fn malformed(name: &header::HeaderName) -> Problem {
    Problem::new(
        Kind::BadRequest,
        format!("{name} must be `*` or a list of entity tags (\"...\" or W/\"...\")"),
    )
}

/// The conditions of a request: its `If-Match` and `If-None-Match`.
#[derive(Debug, Default)]
pub struct Conditions {
    /// A write happens only when the resource's ETag is one of these.
    if_match: Option<Tags>,
    /// A GET answers 304 when the resource's ETag is one of these.
    if_none_match: Option<Tags>,
}

impl<S: Send + Sync> FromRequestParts<S> for Conditions {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        Ok(Conditions {
            if_match: Tags::of(&parts.headers, &header::IF_MATCH)?,
            if_none_match: Tags::of(&parts.headers, &header::IF_NONE_MATCH)?,
        })
    }
}

impl Conditions {
    /// The answer to a GET of `value`: 304 with its ETag when the client holds it, else 200.
    pub fn read<T: Serialize>(&self, value: &T) -> Response {
        let representation = Representation::of(value);
        let current = self
            .if_none_match
            .as_ref()
            .is_some_and(|tags| tags.contain(&representation.etag, false));
        if !current {
            return representation.answer(StatusCode::OK, None);
        }
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response
            .headers_mut()
            .insert(header::ETAG, tag_value(&representation.etag));
        response
    }

    /// True when the request has an `If-Match`.
    pub fn has_if_match(&self) -> bool {
        self.if_match.is_some()
    }

    /// A 412 unless `If-Match` is absent or names the ETag of `current`.
    pub fn check(&self, current: &impl Serialize) -> ApiResult<()> {
        let Some(tags) = &self.if_match else {
            return Ok(());
        };
        let etag = Representation::of(current).etag;
        if tags.contain(&etag, true) {
            return Ok(());
        }
        Err(Problem::new(
            Kind::PreconditionFailed,
            format!(
                "the resource changed: its ETag is now {etag}; read it again and retry with \
                 that If-Match"
            ),
        ))
    }
}

/// What `current` reads of a resource a write makes when it is absent (a credential set, a
/// model's plugin configured): absent, an `If-Match` cannot hold (412, not 404).
pub fn made_if_absent<T>(current: ApiResult<T>) -> ApiResult<T> {
    current.map_err(|problem| match problem.kind {
        Kind::NotFound => Problem::new(
            Kind::PreconditionFailed,
            format!("If-Match names a representation, but: {}", problem.detail),
        ),
        _ => problem,
    })
}

impl ApiState {
    /// Runs `change` on the resource at `location` when `conditions` hold for what
    /// `current` reads of it (only asked when the request has an `If-Match`), with no other
    /// write of the API to that resource in between.
    pub async fn change<T: Serialize, R>(
        &self,
        location: &str,
        conditions: &Conditions,
        current: impl FnOnce() -> ApiResult<T>,
        change: impl FnOnce() -> ApiResult<R>,
    ) -> ApiResult<R> {
        change_under(&self.writes, location, conditions, current, change).await
    }
}

/// [`ApiState::change`] under the locks `writes`.
async fn change_under<T: Serialize, R>(
    writes: &KeyedLocks,
    location: &str,
    conditions: &Conditions,
    current: impl FnOnce() -> ApiResult<T>,
    change: impl FnOnce() -> ApiResult<R>,
) -> ApiResult<R> {
    let _writing = writes.lock(location).await;
    if conditions.has_if_match() {
        conditions.check(&current()?)?;
    }
    change()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(if_match: &str, if_none_match: &str) -> ApiResult<Conditions> {
        let mut headers = HeaderMap::new();
        if !if_match.is_empty() {
            headers.insert(header::IF_MATCH, HeaderValue::from_str(if_match).unwrap());
        }
        if !if_none_match.is_empty() {
            let value = HeaderValue::from_str(if_none_match).unwrap();
            headers.insert(header::IF_NONE_MATCH, value);
        }
        Ok(Conditions {
            if_match: Tags::of(&headers, &header::IF_MATCH)?,
            if_none_match: Tags::of(&headers, &header::IF_NONE_MATCH)?,
        })
    }

    #[test]
    fn if_match_compares_strongly_and_if_none_match_weakly() {
        let value = serde_json::json!({ "id": "grp-1" });
        let etag = Representation::of(&value).etag;
        assert!(conditions(&etag, "").unwrap().check(&value).is_ok());
        assert!(conditions("*", "").unwrap().check(&value).is_ok());
        let listed = format!("\"other\", {etag}");
        assert!(conditions(&listed, "").unwrap().check(&value).is_ok());
        let weak = format!("W/{etag}");
        let refused = conditions(&weak, "").unwrap().check(&value).unwrap_err();
        assert_eq!(refused.kind, Kind::PreconditionFailed);
        assert!(conditions("\"other\"", "").unwrap().check(&value).is_err());
        assert!(conditions("", "").unwrap().check(&value).is_ok());

        let read = conditions("", &weak).unwrap().read(&value);
        assert_eq!(read.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(read.headers()[header::ETAG], etag.as_str());
        let read = conditions("", "\"other\"").unwrap().read(&value);
        assert_eq!(read.status(), StatusCode::OK);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_two_writers_with_one_etag_only_the_first_changes() {
        use std::sync::{Arc, Mutex};
        let value = Arc::new(Mutex::new(String::from("v0")));
        let writes = Arc::new(KeyedLocks::default());
        let seen = Representation::of(&"v0").etag;
        let writers: Vec<_> = ["v1", "v2"]
            .into_iter()
            .map(|new| {
                let (value, writes, seen) = (value.clone(), writes.clone(), seen.clone());
                tokio::spawn(async move {
                    let conditions = conditions(&seen, "").unwrap();
                    let current = || {
                        let read = value.lock().unwrap().clone();
                        // Both writers read before either writes, unless they take turns.
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok(read)
                    };
                    let change = || {
                        *value.lock().unwrap() = new.into();
                        Ok(())
                    };
                    change_under(&writes, "/v1/x", &conditions, current, change).await
                })
            })
            .collect();
        let mut refused = 0;
        for writer in writers {
            if let Err(problem) = writer.await.unwrap() {
                assert_eq!(problem.kind, Kind::PreconditionFailed);
                refused += 1;
            }
        }
        assert_eq!(refused, 1, "one writer wins, the other sees its change");
    }

    #[test]
    fn malformed_tags_are_refused() {
        for bad in ["abc", "\"unterminated", "W/abc", ",", "\"a\"b\""] {
            let refused = conditions(bad, "").expect_err(bad);
            assert_eq!(refused.kind, Kind::BadRequest, "{bad}");
        }
    }

    #[test]
    fn ids_are_one_percent_encoded_segment() {
        assert_eq!(
            location("/v1/plugins", &["policy", "Acme Co", "NB/1"]),
            "/v1/plugins/policy/Acme%20Co/NB%2F1"
        );
        assert_eq!(
            location("/v1/devices", &["urn:imei:1"]),
            "/v1/devices/urn:imei:1"
        );
    }
}
