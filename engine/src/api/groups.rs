//! Groups routes: create (vendor and model locked), list, read, rename or set whether devices
//! join by themselves, delete (refused while a task that is not final uses the group), add or
//! remove devices (refused, naming the device, when one is unknown or of another vendor or
//! model), and mark or unmark its test devices. A group is answered with how many devices it
//! has, never with the devices: `GET /v1/devices?group=` pages them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::ApiState;
use super::extract::{Checked, JsonBody};
use super::problem::{ApiResult, Problem};
use super::representation::{self, Conditions, created, tagged};
use crate::catalog::{Catalog, CatalogError, Group};

/// Body of `POST /v1/groups`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// Name, editable later.
    name: String,
    /// Manufacturer (/3/0/0) of every device of the group.
    vendor: String,
    /// Module model (/3/0/1) of every device of the group.
    model: String,
    /// Whether devices of that vendor and model join by themselves when first surveyed.
    #[serde(default)]
    auto_join: bool,
}

/// Body of `PATCH /v1/groups/{id}`: what is given changes (absent or null: unchanged).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupChange {
    /// A new name.
    name: Option<String>,
    /// Whether devices join by themselves from now on.
    auto_join: Option<bool>,
}

/// Body of `POST` and `DELETE /v1/groups/{id}/devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Members {
    /// Endpoint names of the devices.
    endpoints: Vec<String>,
}

/// The URL of group `id`.
fn location(id: &str) -> String {
    representation::location("/v1/groups", &[id])
}

/// `POST /v1/groups`.
pub async fn create(
    State(state): State<ApiState>,
    JsonBody(new): JsonBody<NewGroup>,
) -> ApiResult<Response> {
    let catalog = &state.platform.catalog;
    let mut group = catalog.create_group(&new.name, &new.vendor, &new.model)?;
    if new.auto_join {
        group = catalog.set_auto_join(&group.id, true)?;
    }
    Ok(created(&location(&group.id), &group))
}

/// `GET /v1/groups`: each group with its number of devices, not the devices themselves
/// (`GET /v1/devices?group=` pages them).
pub async fn list(State(state): State<ApiState>) -> ApiResult<Json<Vec<Group>>> {
    Ok(Json(state.platform.catalog.groups()?))
}

/// `GET /v1/groups/{id}`.
pub async fn one(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<Response> {
    Ok(conditions.read(&state.platform.catalog.group(&id)?))
}

/// Changes group `id` with `change` when the request's conditions hold; answers the group as
/// it is after.
async fn revise(
    state: &ApiState,
    id: &str,
    conditions: &Conditions,
    change: impl FnOnce(&Catalog) -> Result<Group, CatalogError>,
) -> ApiResult<Response> {
    let catalog = &state.platform.catalog;
    let current = || Ok(catalog.group(id)?);
    let group = state
        .change(&location(id), conditions, current, || Ok(change(catalog)?))
        .await?;
    Ok(tagged(&group))
}

/// `PATCH /v1/groups/{id}`.
pub async fn change(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
    JsonBody(change): JsonBody<GroupChange>,
) -> ApiResult<Response> {
    revise(&state, &id, &conditions, |catalog| {
        let mut group = catalog.group(&id)?;
        if let Some(name) = &change.name {
            group = catalog.rename_group(&id, name)?;
        }
        if let Some(auto_join) = change.auto_join {
            group = catalog.set_auto_join(&id, auto_join)?;
        }
        Ok(group)
    })
    .await
}

/// `DELETE /v1/groups/{id}`.
pub async fn delete(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<StatusCode> {
    let platform = &state.platform;
    let current = || Ok(platform.catalog.group(&id)?);
    let delete = || {
        platform.catalog.group(&id)?;
        if platform.campaigns.in_use(Some(&id), None) {
            return Err(Problem::used_by_task("group", &id));
        }
        Ok(platform.catalog.delete_group(&id)?)
    };
    state
        .change(&location(&id), &conditions, current, delete)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/groups/{id}/devices`.
pub async fn add_devices(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
    JsonBody(members): JsonBody<Members>,
) -> ApiResult<Response> {
    let catalog = &state.platform.catalog;
    catalog.group(&id)?;
    let add = || {
        catalog
            .add_to_group(&id, &members.endpoints)
            .map_err(Problem::referenced)
    };
    let current = || Ok(catalog.group(&id)?);
    let group = state
        .change(&location(&id), &conditions, current, add)
        .await?;
    Ok(tagged(&group))
}

/// `DELETE /v1/groups/{id}/devices`.
pub async fn remove_devices(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
    JsonBody(members): JsonBody<Members>,
) -> ApiResult<Response> {
    revise(&state, &id, &conditions, |catalog| {
        catalog.remove_from_group(&id, &members.endpoints)
    })
    .await
}

/// `POST /v1/groups/{id}/test-devices`.
pub async fn mark_test_devices(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
    JsonBody(members): JsonBody<Members>,
) -> ApiResult<Response> {
    set_test_devices(&state, &id, &conditions, &members, true).await
}

/// `DELETE /v1/groups/{id}/test-devices`.
pub async fn unmark_test_devices(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
    JsonBody(members): JsonBody<Members>,
) -> ApiResult<Response> {
    set_test_devices(&state, &id, &conditions, &members, false).await
}

/// Marks `members` of group `id` as test devices (`test`) or as ordinary ones.
async fn set_test_devices(
    state: &ApiState,
    id: &str,
    conditions: &Conditions,
    members: &Members,
    test: bool,
) -> ApiResult<Response> {
    revise(state, id, conditions, |catalog| {
        catalog.mark_test_devices(id, &members.endpoints, test)
    })
    .await
}
