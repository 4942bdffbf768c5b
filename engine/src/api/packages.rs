//! Packages routes: make a full package of a firmware or a delta between two firmware
//! versions of one model (by the differ plugin bound to it), list, read, download the bytes
//! devices receive, and delete (refused while a task that is not final uses the package).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ApiState;
use super::extract::Checked;
use super::problem::{ApiResult, Problem};
use crate::catalog::PackageRecord;

/// Body of `POST /v1/packages`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum NewPackage {
    /// The whole image of `to_firmware`: fits any device of the model.
    Full {
        /// Firmware id.
        to_firmware: String,
    },
    /// From `from_firmware` to `to_firmware`: fits devices running the first.
    Delta {
        /// Firmware id of the base version.
        from_firmware: String,
        /// Firmware id of the target version.
        to_firmware: String,
    },
}

/// `POST /v1/packages`.
pub async fn create(
    State(state): State<ApiState>,
    Checked(Json(new)): Checked<Json<NewPackage>>,
) -> ApiResult<(StatusCode, Json<PackageRecord>)> {
    let catalog = &state.platform.catalog;
    let made = match new {
        NewPackage::Full { to_firmware } => catalog.create_full_package(&to_firmware),
        NewPackage::Delta {
            from_firmware,
            to_firmware,
        } => {
            catalog
                .create_delta_package(&from_firmware, &to_firmware)
                .await
        }
    };
    let package = made.map_err(Problem::referenced)?;
    Ok((StatusCode::CREATED, Json(package)))
}

/// `GET /v1/packages`.
pub async fn list(State(state): State<ApiState>) -> ApiResult<Json<Vec<PackageRecord>>> {
    Ok(Json(state.platform.catalog.packages()?))
}

/// `GET /v1/packages/{id}`.
pub async fn one(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
) -> ApiResult<Json<PackageRecord>> {
    Ok(Json(state.platform.catalog.package(&id)?))
}

/// `GET /v1/packages/{id}/download`: the bytes, with their sha256 as the ETag.
pub async fn download(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
) -> ApiResult<Response> {
    let catalog = &state.platform.catalog;
    let record = catalog.package(&id)?;
    let shelved = catalog.package_bytes(&id)?;
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::ETAG, format!("\"{}\"", record.sha256)),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{id}.pkg\""),
        ),
    ];
    Ok((headers, Body::from(shelved.bytes.clone())).into_response())
}

/// `DELETE /v1/packages/{id}`.
pub async fn delete(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
) -> ApiResult<StatusCode> {
    let platform = &state.platform;
    platform.catalog.package(&id)?;
    if platform.campaigns.in_use(None, Some(&id)) {
        return Err(Problem::used_by_task("package", &id));
    }
    platform.catalog.delete_package(&id)?;
    Ok(StatusCode::NO_CONTENT)
}
