//! Webhooks routes: subscribe a URL to kinds of events (its secret given once, never
//! answered), list and read subscriptions with how their deliveries stand (events pending,
//! dead letters, the last attempts), change the URL or kinds, unsubscribe, list the dead
//! letters and redeliver them.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;

use super::ApiState;
use super::extract::{Checked, JsonBody};
use super::paging::{Paging, SortBy, SortKey};
use super::problem::{ApiResult, Kind, Problem};
use super::representation::{self, Conditions, created, tagged};
use crate::webhooks::delivery::DeadLetter;
use crate::webhooks::{
    NewSubscription, SubscriptionChange, SubscriptionStatus, WebhookError, Webhooks,
};

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

/// The URL of subscription `id`.
fn location(id: &str) -> String {
    representation::location("/v1/webhooks", &[id])
}

/// `POST /v1/webhooks`.
pub async fn create(
    State(state): State<ApiState>,
    JsonBody(new): JsonBody<NewSubscription>,
) -> ApiResult<Response> {
    let subscription = state.platform.webhooks.create(new)?;
    Ok(created(
        &location(&subscription.subscription.id),
        &subscription,
    ))
}

/// `GET /v1/webhooks`.
pub async fn list(State(state): State<ApiState>) -> ApiResult<Json<Vec<SubscriptionStatus>>> {
    Ok(Json(state.platform.webhooks.list()?))
}

/// `GET /v1/webhooks/{id}`.
pub async fn one(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<Response> {
    Ok(conditions.read(&state.platform.webhooks.status(&id)?))
}

/// Runs `change` on subscription `id` when the request's conditions hold.
async fn revise<R>(
    state: &ApiState,
    id: &str,
    conditions: &Conditions,
    change: impl FnOnce(&Webhooks) -> Result<R, WebhookError>,
) -> ApiResult<R> {
    let webhooks = &state.platform.webhooks;
    let current = || Ok(webhooks.status(id)?);
    let change = || Ok(change(webhooks)?);
    state
        .change(&location(id), conditions, current, change)
        .await
}

/// `PATCH /v1/webhooks/{id}`.
pub async fn change(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
    JsonBody(change): JsonBody<SubscriptionChange>,
) -> ApiResult<Response> {
    let changed = revise(&state, &id, &conditions, |webhooks| {
        webhooks.change(&id, change)
    })
    .await?;
    Ok(tagged(&changed))
}

/// `DELETE /v1/webhooks/{id}`.
pub async fn delete(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<StatusCode> {
    revise(&state, &id, &conditions, |webhooks| webhooks.delete(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The orders dead letters sort in: by event id.
const DEAD_LETTER_ORDERS: [SortBy<DeadLetter>; 1] = [SortBy {
    name: "id",
    key: |letter| SortKey(letter.event.id, String::new()),
}];

/// `GET /v1/webhooks/{id}/dead-letters`.
pub async fn dead_letters(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    Checked(Query(paging)): Checked<Query<Paging>>,
    uri: Uri,
) -> ApiResult<Response> {
    let letters = state.platform.webhooks.dead_letters(&id)?;
    Ok(paging.page(letters, &DEAD_LETTER_ORDERS)?.linked(&uri))
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
    conditions: Conditions,
) -> ApiResult<Json<Redelivered>> {
    let requeued = revise(&state, &id, &conditions, |webhooks| webhooks.redeliver(&id)).await?;
    Ok(Json(Redelivered { requeued }))
}
