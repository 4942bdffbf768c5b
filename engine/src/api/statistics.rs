//! `GET /v1/stats`: the statistics per package and per vendor and module model, as
//! [`crate::stats`] computes them from the tasks' device progress.

use axum::Json;
use axum::extract::State;

use super::ApiState;
use super::problem::ApiResult;
use crate::stats::{self, Statistics};

/// `GET /v1/stats`.
pub async fn statistics(State(state): State<ApiState>) -> ApiResult<Json<Statistics>> {
    let platform = &state.platform;
    Ok(Json(stats::compute(
        &platform.campaigns,
        &platform.catalog,
    )?))
}
