//! Webhooks routes: subscribe a URL to kinds of events (its secret given once, never
//! answered), list and read subscriptions with how their deliveries stand (events pending,
//! dead letters, the last attempts), change the URL or kinds, unsubscribe, list the dead
//! letters and redeliver them.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::ApiState;
use super::extract::{Checked, JsonBody};
use super::paging::{Page, Paging};
use super::problem::{ApiResult, Kind, Problem};
use crate::webhooks::delivery::DeadLetter;
use crate::webhooks::{NewSubscription, SubscriptionChange, SubscriptionStatus, WebhookError};

impl From<WebhookError> for Problem {
    fn from(error: WebhookError) -> Self {
        let kind = match &error {
            WebhookError::NotFound(_) => Kind::NotFound,
            WebhookError::Invalid(_) => Kind::Invalid,
            WebhookError::Store(store) => return Problem::internal(store),
        };
        Problem::new(kind, error.to_string())
    }
}

/// `POST /v1/webhooks`.
pub async fn create(
    State(state): State<ApiState>,
    JsonBody(new): JsonBody<NewSubscription>,
) -> ApiResult<(StatusCode, Json<SubscriptionStatus>)> {
    let created = state.platform.webhooks.create(new)?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /v1/webhooks`.
pub async fn list(State(state): State<ApiState>) -> ApiResult<Json<Vec<SubscriptionStatus>>> {
    Ok(Json(state.platform.webhooks.list()?))
}

/// `GET /v1/webhooks/{id}`.
pub async fn one(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
) -> ApiResult<Json<SubscriptionStatus>> {
    Ok(Json(state.platform.webhooks.status(&id)?))
}

/// `PATCH /v1/webhooks/{id}`.
pub async fn change(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    JsonBody(change): JsonBody<SubscriptionChange>,
) -> ApiResult<Json<SubscriptionStatus>> {
    Ok(Json(state.platform.webhooks.change(&id, change)?))
}

/// `DELETE /v1/webhooks/{id}`.
pub async fn delete(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
) -> ApiResult<StatusCode> {
    state.platform.webhooks.delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/webhooks/{id}/dead-letters`.
pub async fn dead_letters(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    Checked(Query(paging)): Checked<Query<Paging>>,
) -> ApiResult<Json<Page<DeadLetter>>> {
    let letters = state.platform.webhooks.dead_letters(&id)?;
    Ok(Json(paging.page(letters.into_iter())?))
}

/// What `POST /v1/webhooks/{id}/redeliver` answers.
#[derive(Debug, Serialize)]
pub struct Redelivered {
    /// Dead letters put back in the outbox.
    requeued: usize,
}

/// `POST /v1/webhooks/{id}/redeliver`.
pub async fn redeliver(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
) -> ApiResult<Json<Redelivered>> {
    let requeued = state.platform.webhooks.redeliver(&id)?;
    Ok(Json(Redelivered { requeued }))
}
