//! `Checked<X>`: any of axum's extractors (`Json`, `Query`, `Path`, `Bytes`) whose rejection
//! is answered as a problem (400, 413, 415 or 422 with axum's explanation) instead of axum's
//! plain text. Body size limits are set per route by the router; this only reports them.

use axum::body::to_bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::problem::Problem;

/// Longest explanation of a rejection kept in a problem's detail.
const EXPLANATION_BYTES: usize = 4096;

/// The extractor `X`, with its rejections as problems.
pub struct Checked<X>(pub X);

impl<S, X> FromRequest<S> for Checked<X>
where
    S: Send + Sync,
    X: FromRequest<S>,
    X::Rejection: IntoResponse,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let rejected = match X::from_request(request, state).await {
            Ok(value) => return Ok(Checked(value)),
            Err(rejection) => rejection.into_response(),
        };
        Err(as_problem(rejected).await)
    }
}

impl<S, X> FromRequestParts<S> for Checked<X>
where
    S: Send + Sync,
    X: FromRequestParts<S>,
    X::Rejection: IntoResponse,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let rejected = match X::from_request_parts(parts, state).await {
            Ok(value) => return Ok(Checked(value)),
            Err(rejection) => rejection.into_response(),
        };
        Err(as_problem(rejected).await)
    }
}

/// The problem a rejection's response stands for: its status, and its text as the detail.
async fn as_problem(response: Response) -> Problem {
    let status = response.status();
    let text = to_bytes(response.into_body(), EXPLANATION_BYTES)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    Problem::rejected(status, text)
}
