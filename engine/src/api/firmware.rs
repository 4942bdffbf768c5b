//! Firmware routes: upload an image (the raw bytes as the body, vendor, model and version in
//! the query), list, read, set the /3/0/3 string devices report on it, and delete (refused
//! while a package is made from it).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::ApiState;
use super::extract::{Checked, JsonBody};
use super::problem::ApiResult;
use super::representation::{self, Conditions, created, tagged};
use crate::catalog::Firmware;
use crate::catalog::firmware::check_reported_version;

/// Query of `POST /v1/firmware`.
#[derive(Debug, Deserialize)]
pub struct Upload {
    /// Manufacturer (/3/0/0).
    vendor: String,
    /// Module model (/3/0/1).
    model: String,
    /// Version, unique per model.
    version: String,
    /// The /3/0/3 string devices report on it, when not `version`.
    reported_version: Option<String>,
}

/// Body of `PATCH /v1/firmware/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reported {
    /// The /3/0/3 string devices report on it; null: the version itself.
    reported_version: Option<String>,
}

/// The URL of firmware `id`.
fn location(id: &str) -> String {
    representation::location("/v1/firmware", &[id])
}

/// `POST /v1/firmware`.
pub async fn upload(
    State(state): State<ApiState>,
    Checked(Query(upload)): Checked<Query<Upload>>,
    Checked(image): Checked<Bytes>,
) -> ApiResult<Response> {
    let catalog = &state.platform.catalog;
    check_reported_version(upload.reported_version.as_deref())?;
    let mut firmware =
        catalog.add_firmware(&upload.vendor, &upload.model, &upload.version, &image)?;
    if upload.reported_version.is_some() {
        firmware = catalog.set_reported_version(&firmware.id, upload.reported_version)?;
    }
    Ok(created(&location(&firmware.id), &firmware))
}

/// `PATCH /v1/firmware/{id}`: the /3/0/3 string that confirms an upgrade to it.
pub async fn set_reported(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
    JsonBody(reported): JsonBody<Reported>,
) -> ApiResult<Response> {
    let catalog = &state.platform.catalog;
    let current = || Ok(catalog.firmware(&id)?);
    let set = || Ok(catalog.set_reported_version(&id, reported.reported_version)?);
    let firmware = state
        .change(&location(&id), &conditions, current, set)
        .await?;
    Ok(tagged(&firmware))
}

/// `GET /v1/firmware`.
pub async fn list(State(state): State<ApiState>) -> ApiResult<Json<Vec<Firmware>>> {
    Ok(Json(state.platform.catalog.firmwares()?))
}

/// `GET /v1/firmware/{id}`.
pub async fn one(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<Response> {
    Ok(conditions.read(&state.platform.catalog.firmware(&id)?))
}

/// `DELETE /v1/firmware/{id}`.
pub async fn delete(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<StatusCode> {
    let catalog = &state.platform.catalog;
    let current = || Ok(catalog.firmware(&id)?);
    let delete = || Ok(catalog.delete_firmware(&id)?);
    state
        .change(&location(&id), &conditions, current, delete)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
