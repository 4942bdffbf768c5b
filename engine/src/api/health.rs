//! `GET /healthz`: answers while the API serves, without a token, for load balancers and
//! process supervisors.

use axum::Json;
use serde_json::{Value, json};

/// `GET /healthz`.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
