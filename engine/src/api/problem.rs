//! Errors of the HTTP API as RFC 9457 problem details (`application/problem+json` with type,
//! title, status and detail), and how the engine's errors map to them: unknown ids are 404,
//! a rule of the status or of the catalog is 409 or 422, a malformed request is 400, a store
//! failure is 500 (logged, with a generic detail). A device's own answer to an operation: 4.04
//! is 404, another 4.xx 409 (the device refused), 5.xx or an unreadable answer 502, silence
//! 504. Owns the mapping only, never the rules.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::campaign::CampaignError;
use crate::catalog::CatalogError;
use crate::lwm2m::{DeviceFailure, FailureClass, QueueError};
use crate::plugin::PluginError;
use crate::store::StoreError;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What kind of problem: decides the status, the `type` URI and the title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Malformed request: bad JSON, a missing query parameter.
    BadRequest,
    /// No token, or a token the configuration does not hold.
    Unauthorized,
    /// The token's role may not do this.
    Forbidden,
    /// No record with that id.
    NotFound,
    /// No route has this path.
    NoSuchRoute,
    /// The path exists, not with this method.
    MethodNotAllowed,
    /// The record's state forbids it (a running task uses it, the task has started, the
    /// version exists...).
    Conflict,
    /// The body is larger than this route takes.
    TooLarge,
    /// The body is not of the media type this route takes.
    UnsupportedMediaType,
    /// Well-formed, but breaks a rule (another model's device, an unknown group in a task...).
    Invalid,
    /// The engine failed.
    Internal,
    /// The device answered the operation with an error other than 4.04 (4.05 Method Not
    /// Allowed, 4.00 Bad Request, ...).
    DeviceRefused,
    /// The device answered with a server error (5.xx), or an answer that does not read.
    DeviceFailed,
    /// The device did not answer, or did not wake up, in time.
    DeviceUnreachable,
    /// The resource is not as the request's `If-Match` saw it.
    PreconditionFailed,
    /// The request's `Idempotency-Key` was used before with another request.
    KeyReused,
    /// A cluster's member passes the API on to the coordinator, and none answers now (one
    /// dead, another taking its place).
    NoCoordinator,
}

impl Kind {
    /// Every kind, for the OpenAPI document.
    pub const ALL: [Kind; 17] = [
        Kind::BadRequest,
        Kind::Unauthorized,
        Kind::Forbidden,
        Kind::NotFound,
        Kind::NoSuchRoute,
        Kind::MethodNotAllowed,
        Kind::Conflict,
        Kind::TooLarge,
        Kind::UnsupportedMediaType,
        Kind::Invalid,
        Kind::Internal,
        Kind::DeviceRefused,
        Kind::DeviceFailed,
        Kind::DeviceUnreachable,
        Kind::PreconditionFailed,
        Kind::KeyReused,
        Kind::NoCoordinator,
    ];

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound | Kind::NoSuchRoute => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::Conflict | Kind::DeviceRefused => StatusCode::CONFLICT,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::Invalid | Kind::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::DeviceFailed => StatusCode::BAD_GATEWAY,
            Kind::DeviceUnreachable => StatusCode::GATEWAY_TIMEOUT,
            Kind::NoCoordinator => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The last part of the `type` URI.
    pub fn slug(self) -> &'static str {
        match self {
            Kind::BadRequest => "bad-request",
            Kind::Unauthorized => "unauthorized",
            Kind::Forbidden => "forbidden",
            Kind::NotFound => "not-found",
            Kind::NoSuchRoute => "no-such-route",
            Kind::MethodNotAllowed => "method-not-allowed",
            Kind::Conflict => "conflict",
            Kind::TooLarge => "too-large",
            Kind::UnsupportedMediaType => "unsupported-media-type",
            Kind::Invalid => "invalid",
            Kind::Internal => "internal",
            Kind::DeviceRefused => "device-refused",
            Kind::DeviceFailed => "device-failed",
            Kind::DeviceUnreachable => "device-unreachable",
            Kind::PreconditionFailed => "precondition-failed",
            Kind::KeyReused => "idempotency-key-reused",
            Kind::NoCoordinator => "no-coordinator",
        }
    }

    /// The `type` URI: names the kind; not meant to be dereferenced.
    pub fn type_uri(self) -> String {
        format!("urn:fota:problem:{}", self.slug())
    }

    pub fn title(self) -> &'static str {
        match self {
            Kind::BadRequest => "The request is malformed",
            Kind::Unauthorized => "A valid bearer token is required",
            Kind::Forbidden => "This token's role may not do that",
            Kind::NotFound => "No such record",
            Kind::NoSuchRoute => "No such route",
            Kind::MethodNotAllowed => "This route does not take that method",
            Kind::Conflict => "The record's state does not allow that",
            Kind::TooLarge => "The body is too large",
            Kind::UnsupportedMediaType => "The body has the wrong media type",
            Kind::Invalid => "The request breaks a rule",
            Kind::Internal => "The engine failed",
            Kind::DeviceRefused => "The device refused the operation",
            Kind::DeviceFailed => "The device failed the operation",
            Kind::DeviceUnreachable => "The device did not answer in time",
            Kind::PreconditionFailed => "The resource changed since the client read it",
            Kind::KeyReused => "The Idempotency-Key was used with another request",
            Kind::NoCoordinator => "No node coordinates the cluster now",
        }
    }

    /// The kind an HTTP status stands for (for rejections of axum's extractors).
    fn of_status(status: StatusCode) -> Kind {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Kind::TooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Kind::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => Kind::Invalid,
            status if status.is_server_error() => Kind::Internal,
            _ => Kind::BadRequest,
        }
    }
}

/// A problem, answered as `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Status, type and title.
    pub kind: Kind,
    /// What happened to this request, in words.
    pub detail: String,
    /// The `WWW-Authenticate` challenge of a 401.
    challenge: Option<&'static str>,
}

/// The JSON body of a problem.
#[derive(Serialize)]
struct Body<'a> {
    r#type: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
}

impl Problem {
    /// A problem of `kind`.
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            detail: detail.into(),
            challenge: None,
        }
    }

    /// A 401 with its `WWW-Authenticate` challenge.
    pub fn unauthorized(detail: &str, challenge: &'static str) -> Self {
        Problem {
            challenge: Some(challenge),
            ..Problem::new(Kind::Unauthorized, detail)
        }
    }

    /// A request axum's extractors refused: `status` and their explanation.
    pub fn rejected(status: StatusCode, explanation: String) -> Self {
        Problem::new(Kind::of_status(status), explanation)
    }

    /// An engine failure: logged here, answered without internals.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "API request failed");
        Problem::new(Kind::Internal, "the engine failed; see its log")
    }

    /// A 409 for deleting a group, package or device that a task that is not finished uses.
    pub fn used_by_task(what: &str, id: &str) -> Self {
        Problem::new(
            Kind::Conflict,
            format!(
                "{what} {id} is used by a task that is not finished; cancel or delete it first"
            ),
        )
    }

    /// A catalog error about a record the request refers to in its body or query (a group in
    /// a task, a firmware in a package): an unknown one makes the request invalid (422), not
    /// the route unknown (404).
    pub fn referenced(error: CatalogError) -> Self {
        match error {
            CatalogError::NotFound { .. } => Problem::new(Kind::Invalid, error.to_string()),
            error => error.into(),
        }
    }

    /// A campaign error of creating or editing a task: unknown records it refers to are 422.
    pub fn of_spec(error: CampaignError) -> Self {
        match error {
            CampaignError::Catalog(error) => Problem::referenced(error),
            error => error.into(),
        }
    }
}

impl From<CatalogError> for Problem {
    fn from(error: CatalogError) -> Self {
        let kind = match &error {
            CatalogError::NotFound { .. } => Kind::NotFound,
            CatalogError::Invalid(_) | CatalogError::Plugin(_) => Kind::Invalid,
            CatalogError::InUse(_) | CatalogError::Duplicate(_) => Kind::Conflict,
            CatalogError::Store(store) => return Problem::internal(store),
        };
        Problem::new(kind, error.to_string())
    }
}

impl From<CampaignError> for Problem {
    fn from(error: CampaignError) -> Self {
        let kind = match error {
            CampaignError::NotFound(_) => Kind::NotFound,
            CampaignError::Refused(_) => Kind::Conflict,
            CampaignError::Invalid(_) => Kind::Invalid,
            CampaignError::Catalog(error) => return error.into(),
            CampaignError::Store(store) => return Problem::internal(&store),
        };
        Problem::new(kind, error.to_string())
    }
}

impl From<&DeviceFailure> for Problem {
    fn from(failure: &DeviceFailure) -> Self {
        let kind = match failure.class {
            FailureClass::NotFound => Kind::NotFound,
            FailureClass::Refused => Kind::DeviceRefused,
            FailureClass::Asleep | FailureClass::Silent => Kind::DeviceUnreachable,
            FailureClass::Engine => return Problem::internal(failure),
            FailureClass::Unwritable => Kind::Invalid,
            FailureClass::Failed => Kind::DeviceFailed,
        };
        Problem::new(kind, failure.detail.clone())
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        Problem::internal(&error)
    }
}

impl From<QueueError> for Problem {
    fn from(error: QueueError) -> Self {
        match error {
            QueueError::Full(_) => Problem::new(Kind::Conflict, error.to_string()),
            QueueError::Store(store) => store.into(),
        }
    }
}

impl From<PluginError> for Problem {
    fn from(error: PluginError) -> Self {
        match error {
            PluginError::Aborted { .. } => Problem::internal(&error),
            error => Problem::new(Kind::Invalid, error.to_string()),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            r#type: self.kind.type_uri(),
            title: self.kind.title(),
            status: self.kind.status().as_u16(),
            detail: &self.detail,
        };
        let json = serde_json::to_vec(&body).expect("a problem serializes");
        let mut response = (self.kind.status(), json).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(challenge) = self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// What a handler returns: its answer or a problem.
pub type ApiResult<T> = Result<T, Problem>;

/// The fallback of paths no route has.
pub async fn no_such_route() -> Problem {
    Problem::new(
        Kind::NoSuchRoute,
        "no route has this path; see /v1/openapi.json",
    )
}

/// The fallback of known paths asked with another method.
pub async fn method_not_allowed() -> Problem {
    Problem::new(
        Kind::MethodNotAllowed,
        "this route does not take that method; see /v1/openapi.json",
    )
}
