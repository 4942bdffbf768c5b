//! The HTTP API for integrators (DESIGN.md, "Who uses it"): devices, their data (LwM2M
//! operations) and their DTLS credentials, groups, firmware, packages, upgrade tasks,
//! statistics, plugins, webhook subscriptions, live progress as server-sent events, metrics and
//! the OpenAPI document, versioned under `/v1`, JSON in and out, on axum; and the web console
//! that drives it (`console`: its files, served at `/` without a token).
//!
//! Owns: the connections and their limits (`connections`), the route table and router
//! (`router`), one module of handlers per resource (`devices`, `device_ops` (a device's data:
//! read, write, execute, observe, queued operations) with `device_data` (their JSON),
//! `credentials`, `groups`, `firmware`, `formats`, `models` (the vendors and models known),
//! `packages`, `tasks` with `task_summary` (a task's devices counted), `plugins`,
//! `statistics`, `webhooks`), authentication (`auth`) and the token's role (`session`),
//! problem details (`problem`), the event stream (`events`), the Prometheus exposition
//! (`metrics`, also served without a token on a scrape address of its own when one is given),
//! the time each request took (`request_times`) and the OpenAPI document (`openapi`).
//!
//! The conventions every resource follows: a `Location` on every 201, ETags with `If-Match`
//! and `If-None-Match` (`representation`, over `keyed_lock`), `Idempotency-Key` on creating
//! POSTs (`idempotency`), and cursor paging in a sort order on long lists (`paging`).
//!
//! Defences against clients that hold resources without a token: a request's token is checked
//! from its head before any of its body is read; at most `max_connections` connections are
//! served at once; a request head must come within `header_timeout`, and a kept-alive
//! connection is closed after `idle_timeout` without a request. `/metrics` counts each of them
//! at work (`fota_http_rejected_total`, `fota_http_idle_closed_total`).
//!
//! Must not touch: the rules of tasks and records. Handlers call the platform's `catalog`,
//! `campaigns`, `plugins`, `journal`, `webhooks` and `server.registry` and map their errors; nothing below calls the
//! API. A refused request changes nothing: every check runs before the one call that writes.

mod auth;
mod body_schema;
pub(crate) mod connections;
mod console;
mod credentials;
mod device_data;
mod device_ops;
mod devices;
mod events;
mod extract;
mod firmware;
mod formats;
mod groups;
mod health;
mod idempotency;
mod keyed_lock;
mod metrics;
mod models;
mod openapi;
mod packages;
mod paging;
mod plugins;
mod problem;
mod representation;
mod request_times;
mod router;
mod session;
mod statistics;
mod task_summary;
mod tasks;
mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use auth::{Role, Token};
pub use problem::{Kind as ProblemKind, Problem};
pub use router::{Operation, operations};

use crate::platform::Platform;
use connections::{HttpCounters, Limits};
use idempotency::Idempotency;
use keyed_lock::KeyedLocks;
use request_times::RequestTimes;

/// Largest firmware image, plugin component or credential batch accepted by default (32 MiB).
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 32 << 20;
/// Largest JSON body accepted (64 KiB): a task spec or a list of endpoints.
pub const DEFAULT_MAX_JSON_BYTES: usize = 64 << 10;
/// Connections served at once by default; more are answered 503 and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Time a client has by default to send a request head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a kept-alive connection may wait for its next request by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once on the scrape address: a scraper or two, and a person's curl.
const SCRAPE_CONNECTIONS: usize = 16;

/// How the API runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// The bearer tokens it accepts; none means every route but `/healthz` answers 401.
    pub tokens: Vec<Token>,
    /// Largest firmware image, plugin component or credential batch; larger uploads are
    /// answered 413.
    pub max_upload_bytes: usize,
    /// Largest JSON body; larger ones are answered 413.
    pub max_json_bytes: usize,
    /// Connections served at once (each holds a socket, buffers and a task); more are answered
    /// 503 and closed at once.
    pub max_connections: usize,
    /// Longest a client may take to send a request head, from its connection (or from the
    /// first byte of a later head on a kept-alive connection); then the connection is closed.
    /// Without it a client could hold a connection by sending a head a byte at a time.
    pub header_timeout: Duration,
    /// Longest a kept-alive connection may wait for its next request; then it is closed.
    pub idle_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            tokens: Vec::new(),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            max_json_bytes: DEFAULT_MAX_JSON_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// What every handler gets. Cheap to clone.
#[derive(Clone)]
struct ApiState {
    /// The engine the API drives.
    platform: Arc<Platform>,
    /// The OpenAPI document, built once.
    openapi: Arc<Value>,
    /// Turns true when the API stops, so event streams end and connections close.
    shutdown: watch::Receiver<bool>,
    /// What the connection limits and the token checks refused, for `/metrics`.
    counters: Arc<HttpCounters>,
    /// One write of the API at a time per resource (keyed by its URL), so a conditional
    /// write's check and change are not split by another's.
    writes: Arc<KeyedLocks>,
    /// Answers of creating POSTs kept under their `Idempotency-Key`.
    idempotency: Arc<Idempotency>,
    /// How long requests took, per route, for `/metrics`.
    request_times: Arc<RequestTimes>,
}

/// Where the API answers.
pub struct Listeners {
    /// The API itself: every route, `/metrics` among them, behind the tokens.
    pub api: TcpListener,
    /// `GET /metrics` alone, without a token: for a Prometheus scraper on an address only it
    /// reaches (a loopback or management network), so the scraper holds no API token.
    pub metrics: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    /// The API alone.
    fn from(api: TcpListener) -> Listeners {
        Listeners { api, metrics: None }
    }
}

/// Serves the API on `listeners` until `shutdown` completes, then stops accepting (on both
/// addresses), ends the event streams and waits for requests under way.
pub async fn serve(
    listeners: impl Into<Listeners>,
    platform: Arc<Platform>,
    config: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listeners = listeners.into();
    let (stop, stopped) = watch::channel(false);
    let counters = Arc::new(HttpCounters::default());
    let idempotency = Idempotency::open(platform.store.clone(), platform.catalog.clock)
        .map_err(std::io::Error::other)?;
    let state = ApiState {
        platform,
        openapi: Arc::new(openapi::document()),
        shutdown: stopped.clone(),
        counters: counters.clone(),
        writes: Arc::default(),
        idempotency: Arc::new(idempotency),
        request_times: Arc::new(RequestTimes::new(&operations())),
    };
    let limits = Limits::of(&config);
    let scrape = listeners.metrics.map(|listener| {
        let limits = Limits {
            max_connections: limits.max_connections.min(SCRAPE_CONNECTIONS),
            ..limits
        };
        let mut watching = stopped.clone();
        let stopping = async move {
            let _ = watching.wait_for(|stopped| *stopped).await;
        };
        // Its connections are not the API's: counted apart, and not exported.
        let counters = Arc::new(HttpCounters::default());
        let app = metrics::scrape_router(state.clone());
        connections::serve(listener, app, limits, counters, stopped.clone(), stopping)
    });
    let app = router::router(state, &config, counters.clone());
    let stopping = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let api = connections::serve(listeners.api, app, limits, counters, stopped, stopping);
    match scrape {
        Some(scrape) => tokio::try_join!(api, scrape).map(|_| ()),
        None => api.await,
    }
}

impl Limits {
    /// The connection limits `config` sets.
    fn of(config: &ApiConfig) -> Limits {
        Limits {
            max_connections: config.max_connections,
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
        }
    }
}

/// Serves `app` (what a cluster's member answers in the API's place) on `listener` under
/// `config`'s connection limits until `shutdown` completes.
pub fn serve_app(
    listener: TcpListener,
    app: axum::Router,
    config: &ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
    let (stop, stopped) = watch::channel(false);
    let limits = Limits::of(config);
    let stopping = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let counters = Arc::new(HttpCounters::default());
    connections::serve(listener, app, limits, counters, stopped, stopping)
}
