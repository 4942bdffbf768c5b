//! The HTTP API for integrators (DESIGN.md, "Who uses it"): devices, groups, firmware,
//! packages, upgrade tasks, statistics, plugins, live progress as server-sent events, metrics
//! and the OpenAPI document, versioned under `/v1`, JSON in and out, on axum.
//!
//! Owns: the route table and router (`router`), one module of handlers per resource
//! (`devices`, `groups`, `firmware`, `formats`, `packages`, `tasks`, `plugins`, `statistics`),
//! authentication (`auth`), problem details (`problem`), the event feed (`events`), the
//! Prometheus exposition (`metrics`) and the OpenAPI document (`openapi`).
//!
//! Must not touch: the rules of tasks and records. Handlers call the platform's `catalog`,
//! `campaigns`, `plugins` and `server.registry` and map their errors; nothing below calls the
//! API. A refused request changes nothing: every check runs before the one call that writes.

mod auth;
mod devices;
mod events;
mod extract;
mod firmware;
mod formats;
mod groups;
mod health;
mod metrics;
mod openapi;
mod packages;
mod paging;
mod plugins;
mod problem;
mod router;
mod statistics;
mod tasks;

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use auth::{Role, Token};
pub use router::{Operation, operations};

use crate::platform::Platform;
use events::EventFeed;

/// Largest firmware image or plugin component accepted by default (32 MiB).
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 32 << 20;
/// Largest JSON body accepted (64 KiB): a task spec or a list of endpoints.
pub const DEFAULT_MAX_JSON_BYTES: usize = 64 << 10;

/// How the API runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// The bearer tokens it accepts; none means every route but `/healthz` answers 401.
    pub tokens: Vec<Token>,
    /// Largest firmware image or plugin component; larger uploads are answered 413.
    pub max_upload_bytes: usize,
    /// Largest JSON body; larger ones are answered 413.
    pub max_json_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            tokens: Vec::new(),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            max_json_bytes: DEFAULT_MAX_JSON_BYTES,
        }
    }
}

/// What every handler gets. Cheap to clone.
#[derive(Clone)]
struct ApiState {
    /// The engine the API drives.
    platform: Arc<Platform>,
    /// Numbered campaign events for `/v1/events`.
    feed: Arc<EventFeed>,
    /// The OpenAPI document, built once.
    openapi: Arc<Value>,
    /// Turns true when the API stops, so event streams end and connections close.
    shutdown: watch::Receiver<bool>,
}

/// Serves the API on `listener` until `shutdown` completes, then stops accepting, ends the
/// event streams and waits for requests under way.
pub async fn serve(
    listener: TcpListener,
    platform: Arc<Platform>,
    config: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let state = ApiState {
        feed: EventFeed::start(&platform.campaigns),
        platform,
        openapi: Arc::new(openapi::document()),
        shutdown: stopped,
    };
    let app = router::router(state, &config);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await
}
