//! Firmware routes: upload an image (the raw bytes as the body, vendor, model and version in
//! the query), list, read, and delete (refused while a package is made from it).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::ApiState;
use super::extract::Checked;
use super::problem::ApiResult;
use crate::catalog::Firmware;

/// Query of `POST /v1/firmware`.
#[derive(Debug, Deserialize)]
pub struct Upload {
    /// Manufacturer (/3/0/0).
    vendor: String,
    /// Module model (/3/0/1).
    model: String,
    /// Version, as devices report it in /3/0/3.
    version: String,
}

/// `POST /v1/firmware`.
pub async fn upload(
    State(state): State<ApiState>,
    Checked(Query(upload)): Checked<Query<Upload>>,
    Checked(image): Checked<Bytes>,
) -> ApiResult<(StatusCode, Json<Firmware>)> {
    let catalog = &state.platform.catalog;
    let firmware = catalog.add_firmware(&upload.vendor, &upload.model, &upload.version, &image)?;
    Ok((StatusCode::CREATED, Json(firmware)))
}

/// `GET /v1/firmware`.
pub async fn list(State(state): State<ApiState>) -> ApiResult<Json<Vec<Firmware>>> {
    Ok(Json(state.platform.catalog.firmwares()?))
}

/// `GET /v1/firmware/{id}`.
pub async fn one(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
) -> ApiResult<Json<Firmware>> {
    Ok(Json(state.platform.catalog.firmware(&id)?))
}

/// `DELETE /v1/firmware/{id}`.
pub async fn delete(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
) -> ApiResult<StatusCode> {
    state.platform.catalog.delete_firmware(&id)?;
    Ok(StatusCode::NO_CONTENT)
}
