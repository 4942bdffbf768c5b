//! Formats routes: the package format bound to a vendor and model (`raw` unless bound,
//! `signed` for devices that verify the platform's container, `packager` for a vendor's own
//! container made by the packager plugin bound to the model), set, listed and unbound.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::ApiState;
use super::extract::{Checked, JsonBody};
use super::problem::{ApiResult, Kind, Problem};
use crate::catalog::{ModelFormat, PackageFormat};

/// Body of `PUT /v1/formats/{vendor}/{model}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFormat {
    /// `raw`, `signed` or `packager`.
    format: PackageFormat,
}

/// `GET /v1/formats`: every bound format.
pub async fn list(State(state): State<ApiState>) -> ApiResult<Json<Vec<ModelFormat>>> {
    Ok(Json(state.platform.catalog.package_formats()?))
}

/// `PUT /v1/formats/{vendor}/{model}`: the model's packages are made in this format from now
/// on.
pub async fn set(
    State(state): State<ApiState>,
    Checked(Path((vendor, model))): Checked<Path<(String, String)>>,
    JsonBody(new): JsonBody<NewFormat>,
) -> ApiResult<Json<ModelFormat>> {
    let catalog = &state.platform.catalog;
    Ok(Json(
        catalog.set_package_format(&vendor, &model, new.format)?,
    ))
}

/// `DELETE /v1/formats/{vendor}/{model}`: the model gets `raw` again.
pub async fn unbind(
    State(state): State<ApiState>,
    Checked(Path((vendor, model))): Checked<Path<(String, String)>>,
) -> ApiResult<StatusCode> {
    if !state
        .platform
        .catalog
        .unbind_package_format(&vendor, &model)?
    {
        return Err(Problem::new(
            Kind::NotFound,
            format!("no format is bound to {vendor} {model}"),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}
