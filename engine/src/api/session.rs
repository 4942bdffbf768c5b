//! `GET /v1/session`: what the request's token may do (`operator` or `viewer`), so a client
//! such as the console shows a viewer no action it would be refused. Owns that answer only;
//! the checks are `auth`'s.

use axum::{Extension, Json};
use serde::Serialize;

use super::auth::Role;

/// What `GET /v1/session` answers.
#[derive(Debug, Serialize)]
pub struct Session {
    /// The token's role.
    role: Role,
}

/// `GET /v1/session`.
pub async fn session(Extension(role): Extension<Role>) -> Json<Session> {
    Json(Session { role })
}
