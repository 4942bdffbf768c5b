//! Tasks routes: create, list, read, edit (only before it starts), the operator's actions
//! (start, pause, resume, approve the next stage, cancel) under the status rules, delete, and a task's devices with
//! device name, IMEI, retry X/XX, online, download and upgrade status and result.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;

use super::ApiState;
use super::extract::{Checked, JsonBody};
use super::paging::{PageStart, Paging, SortBy, SortKey};
use super::problem::{ApiResult, Problem};
use super::representation::{self, Conditions, created, tagged};
use crate::campaign::{Action, CampaignError, Campaigns, DeviceProgress, Task, TaskSpec};

/// The URL of task `id`.
fn location(id: &str) -> String {
    representation::location("/v1/tasks", &[id])
}

/// `POST /v1/tasks`.
pub async fn create(
    State(state): State<ApiState>,
    JsonBody(spec): JsonBody<TaskSpec>,
) -> ApiResult<Response> {
    let task = state
        .platform
        .campaigns
        .create(spec)
        .map_err(Problem::of_spec)?;
    Ok(created(&location(&task.id), &task))
}

/// The orders `GET /v1/tasks` sorts in: by creation time, ties by id.
const TASK_ORDERS: [SortBy<Task>; 1] = [SortBy {
    name: "created_at",
    key: |task| SortKey(task.created_at, task.id.clone()),
}];

/// `GET /v1/tasks`.
pub async fn list(
    State(state): State<ApiState>,
    Checked(Query(paging)): Checked<Query<Paging>>,
    uri: Uri,
) -> ApiResult<Response> {
    let tasks = state.platform.campaigns.tasks();
    Ok(paging.page(tasks, &TASK_ORDERS)?.linked(&uri))
}

/// `GET /v1/tasks/{id}`.
pub async fn one(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<Response> {
    Ok(conditions.read(&state.platform.campaigns.task(&id)?))
}

/// Runs `change` on task `id` when the request's conditions hold; answers the task after.
async fn act(
    state: &ApiState,
    id: &str,
    conditions: &Conditions,
    change: impl FnOnce(&Campaigns) -> ApiResult<Task>,
) -> ApiResult<Response> {
    let campaigns = &state.platform.campaigns;
    let current = || Ok(campaigns.task(id)?);
    let task = state
        .change(&location(id), conditions, current, || change(campaigns))
        .await?;
    Ok(tagged(&task))
}

/// `PATCH /v1/tasks/{id}`: replaces the spec of a task that has not started. The status rule
/// is checked before the spec, so a started task is a 409 whatever the body.
pub async fn edit(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
    JsonBody(spec): JsonBody<TaskSpec>,
) -> ApiResult<Response> {
    let now = state.platform.catalog.clock.now();
    act(&state, &id, &conditions, |campaigns| {
        let task = campaigns.task(&id)?;
        task.check(Action::Edit, now).map_err(CampaignError::from)?;
        campaigns.edit(&id, spec).map_err(Problem::of_spec)
    })
    .await
}

/// One of the operator's actions on a task.
type TaskAction = fn(&Campaigns, &str) -> Result<Task, CampaignError>;

/// Runs `action` on task `id` when the request's conditions hold.
async fn operate(
    state: ApiState,
    id: String,
    conditions: Conditions,
    action: TaskAction,
) -> ApiResult<Response> {
    act(&state, &id, &conditions, |campaigns| {
        Ok(action(campaigns, &id)?)
    })
    .await
}

/// `POST /v1/tasks/{id}/start`.
pub async fn start(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<Response> {
    operate(state, id, conditions, Campaigns::start_now).await
}

/// `POST /v1/tasks/{id}/pause`.
pub async fn pause(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<Response> {
    operate(state, id, conditions, Campaigns::pause).await
}

/// `POST /v1/tasks/{id}/resume`.
pub async fn resume(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<Response> {
    operate(state, id, conditions, Campaigns::resume).await
}

/// `POST /v1/tasks/{id}/approve`.
pub async fn approve(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<Response> {
    operate(state, id, conditions, Campaigns::approve).await
}

/// `POST /v1/tasks/{id}/cancel`.
pub async fn cancel(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<Response> {
    operate(state, id, conditions, Campaigns::cancel).await
}

/// `DELETE /v1/tasks/{id}`.
pub async fn delete(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<StatusCode> {
    let campaigns = &state.platform.campaigns;
    let current = || Ok(campaigns.task(&id)?);
    let delete = || Ok(campaigns.delete(&id)?);
    state
        .change(&location(&id), &conditions, current, delete)
        .await?;
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
    /// The device's name (List 9-4's device name), as the catalog has it; the endpoint when
    /// the catalog no longer has the device.
    name: String,
    /// The device's IMEI, from a `urn:imei:` endpoint name.
    imei: Option<String>,
}

/// The orders a task's devices sort in: by endpoint name.
const DEVICE_ORDERS: [SortBy<DeviceProgress>; 1] = [SortBy {
    name: "endpoint",
    key: |device| SortKey(0, device.endpoint.clone()),
}];

/// `GET /v1/tasks/{id}/devices`.
pub async fn devices(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    Checked(Query(paging)): Checked<Query<Paging>>,
    uri: Uri,
) -> ApiResult<Response> {
    let platform = &state.platform;
    let task = platform.campaigns.task(&id)?;
    let plan = paging.plan(&DEVICE_ORDERS)?;
    let (after, skip) = match &plan.start {
        PageStart::After(SortKey(_, endpoint)) => (Some(endpoint.as_str()), 0),
        PageStart::Offset(skip) => (None, *skip),
    };
    let window =
        (platform.campaigns).devices_window(&id, after, skip, plan.descending(), plan.limit + 1)?;
    let allowed = u64::from(task.spec.retries) + 1;
    let page = plan
        .page(window.devices, window.before, window.total)
        .map(|progress| {
            let device = platform.catalog.device(&progress.endpoint).ok();
            TaskDevice {
                retry: format!("{}/{allowed}", progress.attempts),
                online: platform.server.registry.get(&progress.endpoint).is_some(),
                name: device
                    .as_ref()
                    .map_or(progress.endpoint.clone(), |d| d.name.clone()),
                imei: device.and_then(|d| d.imei),
                progress,
            }
        });
    Ok(page.linked(&uri))
}
