//! Tasks routes: create, list, read, edit (only before it starts), the operator's actions
//! (start, pause, resume, cancel) under the status rules, delete, and a task's devices with
//! retry X/XX, online, download and upgrade status and result.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::ApiState;
use super::extract::{Checked, JsonBody};
use super::paging::{Page, Paging};
use super::problem::{ApiResult, Problem};
use crate::campaign::{Action, CampaignError, Campaigns, DeviceProgress, Task, TaskSpec};

/// `POST /v1/tasks`.
pub async fn create(
    State(state): State<ApiState>,
    JsonBody(spec): JsonBody<TaskSpec>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let task = state
        .platform
        .campaigns
        .create(spec)
        .map_err(Problem::of_spec)?;
    Ok((StatusCode::CREATED, Json(task)))
}

/// `GET /v1/tasks`.
pub async fn list(State(state): State<ApiState>) -> Json<Vec<Task>> {
    Json(state.platform.campaigns.tasks())
}

/// `GET /v1/tasks/{id}`.
pub async fn one(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
) -> ApiResult<Json<Task>> {
    Ok(Json(state.platform.campaigns.task(&id)?))
}

/// `PATCH /v1/tasks/{id}`: replaces the spec of a task that has not started. The status rule
/// is checked before the spec, so a started task is a 409 whatever the body.
pub async fn edit(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    JsonBody(spec): JsonBody<TaskSpec>,
) -> ApiResult<Json<Task>> {
    let platform = &state.platform;
    let task = platform.campaigns.task(&id)?;
    task.check(Action::Edit, platform.catalog.clock.now())
        .map_err(CampaignError::from)?;
    let edited = platform
        .campaigns
        .edit(&id, spec)
        .map_err(Problem::of_spec)?;
    Ok(Json(edited))
}

/// One of the operator's actions on a task.
type TaskAction = fn(&Campaigns, &str) -> Result<Task, CampaignError>;

fn act(state: &ApiState, id: &str, action: TaskAction) -> ApiResult<Json<Task>> {
    Ok(Json(action(&state.platform.campaigns, id)?))
}

/// `POST /v1/tasks/{id}/start`.
pub async fn start(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
) -> ApiResult<Json<Task>> {
    act(&state, &id, Campaigns::start_now)
}

/// `POST /v1/tasks/{id}/pause`.
pub async fn pause(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
) -> ApiResult<Json<Task>> {
    act(&state, &id, Campaigns::pause)
}

/// `POST /v1/tasks/{id}/resume`.
pub async fn resume(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
) -> ApiResult<Json<Task>> {
    act(&state, &id, Campaigns::resume)
}

/// `POST /v1/tasks/{id}/cancel`.
pub async fn cancel(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
) -> ApiResult<Json<Task>> {
    act(&state, &id, Campaigns::cancel)
}

/// `DELETE /v1/tasks/{id}`.
pub async fn delete(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
) -> ApiResult<StatusCode> {
    state.platform.campaigns.delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// One device of a task, as `GET /v1/tasks/{id}/devices` shows it.
#[derive(Debug, Serialize)]
pub struct TaskDevice {
    /// Its progress: attempts, phase, download and upgrade status, result, bytes.
    #[serde(flatten)]
    progress: DeviceProgress,
    /// "retry X/XX": attempts made of the attempts the task allows (retries + 1).
    retry: String,
    /// True while the device has a live registration.
    online: bool,
}

/// `GET /v1/tasks/{id}/devices`.
pub async fn devices(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    Checked(Query(paging)): Checked<Query<Paging>>,
) -> ApiResult<Json<Page<TaskDevice>>> {
    let platform = &state.platform;
    let task = platform.campaigns.task(&id)?;
    let devices = platform.campaigns.devices(&id)?;
    let allowed = task.spec.retries + 1;
    let page = paging
        .page(devices.into_iter())?
        .map(|progress| TaskDevice {
            retry: format!("{}/{allowed}", progress.attempts),
            online: platform.server.registry.get(&progress.endpoint).is_some(),
            progress,
        });
    Ok(Json(page))
}
