//! Packages routes: make a full package of a firmware or a delta between two firmware
//! versions of one model (by the differ plugin bound to it, in the model's format or the one
//! asked), upload one a module maker made (sent as is, checked where the bound differ can read
//! it), list, read, download the bytes devices receive, and delete (refused while a task that
//! is not final uses the package).

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ApiState;
use super::extract::{Checked, JsonBody};
use super::problem::{ApiResult, Kind, Problem};
use super::representation::{self, Conditions, created};
use crate::catalog::{PackageFormat, PackageKind, PackageRecord, UploadedPackage};

/// Body of `POST /v1/packages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPackage {
    /// `full` or `delta`.
    kind: PackageKind,
    /// Firmware id of a delta's base version.
    #[serde(default)]
    from_firmware: Option<String>,
    /// Firmware id of the target version.
    to_firmware: String,
    /// The format, when not the model's.
    #[serde(default)]
    format: Option<PackageFormat>,
}

/// The URL of package `id`.
fn location(id: &str) -> String {
    representation::location("/v1/packages", &[id])
}

/// `POST /v1/packages`.
pub async fn create(
    State(state): State<ApiState>,
    JsonBody(new): JsonBody<NewPackage>,
) -> ApiResult<Response> {
    let catalog = &state.platform.catalog;
    let made = match (new.kind, new.from_firmware) {
        (PackageKind::Full, None) => {
            catalog
                .create_full_package(&new.to_firmware, new.format)
                .await
        }
        (PackageKind::Delta, Some(from)) => {
            catalog
                .create_delta_package(&from, &new.to_firmware, new.format)
                .await
        }
        (PackageKind::Full, Some(_)) => {
            return Err(Problem::new(
                Kind::Invalid,
                String::from("a full package has no from_firmware"),
            ));
        }
        (PackageKind::Delta, None) => {
            return Err(Problem::new(
                Kind::Invalid,
                String::from("a delta package needs from_firmware"),
            ));
        }
    };
    let package = made.map_err(Problem::referenced)?;
    Ok(created(&location(&package.id), &package))
}

/// Query of `POST /v1/packages/upload`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// Manufacturer (/3/0/0).
    vendor: String,
    /// Module model (/3/0/1).
    model: String,
    /// `full` or `delta`.
    kind: PackageKind,
    /// A delta's base version.
    from_version: Option<String>,
    /// The version devices run afterwards.
    to_version: String,
    /// The /3/0/3 string devices report on it, when not `to_version` and the firmware is not
    /// in the catalog.
    reported_version: Option<String>,
}

/// `POST /v1/packages/upload`: a package a module maker made, kept and sent as is.
pub async fn upload(
    State(state): State<ApiState>,
    Checked(Query(upload)): Checked<Query<Upload>>,
    Checked(bytes): Checked<Bytes>,
) -> ApiResult<Response> {
    let uploaded = UploadedPackage {
        vendor: upload.vendor,
        model: upload.model,
        kind: upload.kind,
        from_version: upload.from_version,
        to_version: upload.to_version,
        reported_version: upload.reported_version,
    };
    let package = state
        .platform
        .catalog
        .upload_package(uploaded, bytes.to_vec())
        .await?;
    Ok(created(&location(&package.id), &package))
}

/// `GET /v1/packages`.
pub async fn list(State(state): State<ApiState>) -> ApiResult<Json<Vec<PackageRecord>>> {
    Ok(Json(state.platform.catalog.packages()?))
}

/// `GET /v1/packages/{id}`.
pub async fn one(
    State(state): State<ApiState>,
    Checked(Path(id)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<Response> {
    Ok(conditions.read(&state.platform.catalog.package(&id)?))
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
    conditions: Conditions,
) -> ApiResult<StatusCode> {
    let platform = &state.platform;
    let current = || Ok(platform.catalog.package(&id)?);
    let delete = || {
        platform.catalog.package(&id)?;
        if platform.campaigns.in_use(None, Some(&id)) {
            return Err(Problem::used_by_task("package", &id));
        }
        Ok(platform.catalog.delete_package(&id)?)
    };
    state
        .change(&location(&id), &conditions, current, delete)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
