//! `GET /v1/stats`: the statistics per package and per vendor and module model, the cumulative
//! counters [`crate::stats`] keeps in the store.

use axum::Json;
use axum::extract::State;

use super::ApiState;
use crate::stats::Statistics;

/// `GET /v1/stats`.
pub async fn statistics(State(state): State<ApiState>) -> Json<Statistics> {
    Json(state.platform.campaigns.statistics())
}
