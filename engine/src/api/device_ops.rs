//! Device operations for integrators, as Leshan's REST API opens them: a device's objects and
//! instances (from its registration), Read, Write and Execute of any path, observations as
//! server-sent events, and operations queued for the device's next wake-up (listed, read,
//! cancelled). A synchronous operation waits for a device that is asleep (queue mode) or not
//! registered now, up to the caller's `timeout`; a device being upgraded takes no write or
//! execute on object 5 (409). Owns the routes' handlers; the operations, the queue and the
//! observations are `lwm2m`'s (where they run, this node or in a cluster the device's,
//! `Platform::devices`'), the JSON of the data is `device_data`'s.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ApiState;
use super::device_data::{from_json, to_json};
use super::extract::{Checked, JsonBody};
use super::problem::{ApiResult, Kind, Problem};
use super::representation::{Conditions, accepted, location};
use crate::clock::UnixMillis;
use crate::lwm2m::{
    DeviceOperation, FailureClass, LwM2mPath, Observed, OperationStatus, QueuedOperation, Record,
};
use crate::platform::Platform;

/// How long a synchronous operation waits for its device by default, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// The longest a synchronous operation may wait for its device, in seconds.
pub const MAX_TIMEOUT_SECS: u64 = 600;

/// The target of an operation and how long to wait for the device.
#[derive(Debug, Deserialize)]
pub struct Target {
    /// The LwM2M path, e.g. `/3/0/9`.
    path: String,
    /// Seconds to wait for the device to wake up (or register).
    timeout: Option<u64>,
    /// Execute's arguments.
    arguments: Option<String>,
}

impl Target {
    /// The path, which must name an object or below.
    fn path(&self) -> ApiResult<LwM2mPath> {
        parse_path(&self.path)
    }

    /// The wait, within its bounds.
    fn wait(&self) -> ApiResult<Duration> {
        let seconds = self.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if seconds > MAX_TIMEOUT_SECS {
            return Err(Problem::new(
                Kind::BadRequest,
                format!("timeout is at most {MAX_TIMEOUT_SECS} seconds"),
            ));
        }
        Ok(Duration::from_secs(seconds))
    }
}

fn parse_path(text: &str) -> ApiResult<LwM2mPath> {
    let path: LwM2mPath = text
        .parse()
        .map_err(|error| Problem::new(Kind::BadRequest, format!("path: {error}")))?;
    if path.depth() == 0 {
        return Err(Problem::new(
            Kind::BadRequest,
            "path: name an object, an instance or a resource, not the root",
        ));
    }
    Ok(path)
}

/// `path`, if it names a resource: Execute targets nothing else (422).
fn executable(path: LwM2mPath) -> ApiResult<LwM2mPath> {
    if path.depth() != 3 {
        return Err(Problem::new(
            Kind::Invalid,
            format!("{path} is not a resource: Execute targets a resource"),
        ));
    }
    Ok(path)
}

/// A device's objects, as `GET /v1/devices/{endpoint}/objects` shows them.
#[derive(Debug, Serialize)]
pub struct DeviceObjects {
    /// The device.
    endpoint: String,
    /// LwM2M version of its registration.
    lwm2m_version: String,
    /// `U`, or `UQ` for queue mode.
    binding: &'static str,
    /// Whether it can be reached now (a queue-mode device only after a Register or Update).
    awake: bool,
    /// The format several values are written to it in.
    multi_value_format: String,
    /// Its objects, each with its instances.
    objects: Vec<ObjectView>,
}

/// One object and its instances.
#[derive(Debug, Serialize)]
struct ObjectView {
    /// The object id (3 for Device, 5 for Firmware Update, ...).
    id: u16,
    /// Instance ids; empty when the device announced the object without instances.
    instances: Vec<u16>,
}

/// `GET /v1/devices/{endpoint}/objects`.
pub async fn objects(
    State(state): State<ApiState>,
    Checked(Path(endpoint)): Checked<Path<String>>,
) -> ApiResult<Json<DeviceObjects>> {
    let outline = state.platform.devices.outline(&endpoint).await;
    let outline = outline.map_err(|failure| Problem::from(&failure))?;
    let outline = outline.ok_or_else(|| {
        Problem::new(
            Kind::NotFound,
            format!("{endpoint} is not registered now: its objects are those it registers"),
        )
    })?;
    let mut instances: BTreeMap<u16, Vec<u16>> = BTreeMap::new();
    for path in &outline.objects {
        if let Some(id) = path.object_id() {
            instances.entry(id).or_default().extend(path.instance_id());
        }
    }
    let objects = instances
        .into_iter()
        .map(|(id, instances)| ObjectView { id, instances })
        .collect();
    Ok(Json(DeviceObjects {
        lwm2m_version: outline.lwm2m_version,
        binding: if outline.queue_mode { "UQ" } else { "U" },
        awake: outline.awake,
        multi_value_format: outline.multi_value_format,
        objects,
        endpoint,
    }))
}

/// `GET /v1/devices/{endpoint}/data`: Read.
pub async fn read(
    State(state): State<ApiState>,
    Checked(Path(endpoint)): Checked<Path<String>>,
    Checked(Query(target)): Checked<Query<Target>>,
) -> ApiResult<Json<Value>> {
    let path = target.path()?;
    let operation = DeviceOperation::Read { path };
    let records = run(&state.platform, &endpoint, operation, target.wait()?).await?;
    Ok(Json(to_json(path, &records)))
}

/// `PUT /v1/devices/{endpoint}/data`: Write.
pub async fn write(
    State(state): State<ApiState>,
    Checked(Path(endpoint)): Checked<Path<String>>,
    Checked(Query(target)): Checked<Query<Target>>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<StatusCode> {
    let path = target.path()?;
    let records = from_json(path, &body).map_err(|reason| Problem::new(Kind::Invalid, reason))?;
    let operation = DeviceOperation::Write { path, records };
    run(&state.platform, &endpoint, operation, target.wait()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/devices/{endpoint}/execute`: Execute.
pub async fn execute(
    State(state): State<ApiState>,
    Checked(Path(endpoint)): Checked<Path<String>>,
    Checked(Query(target)): Checked<Query<Target>>,
) -> ApiResult<StatusCode> {
    let operation = DeviceOperation::Execute {
        path: executable(target.path()?)?,
        arguments: target.arguments.clone(),
    };
    run(&state.platform, &endpoint, operation, target.wait()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs `operation` on `endpoint` once it is reachable, within `wait` (on the node it is
/// registered to, in a cluster).
async fn run(
    platform: &Platform,
    endpoint: &str,
    operation: DeviceOperation,
    wait: Duration,
) -> ApiResult<Vec<Record>> {
    admit(platform, endpoint, &operation)?;
    let done = platform.devices.operate(endpoint, operation, wait).await;
    done.map_err(|failure| match failure.class {
        FailureClass::Asleep => asleep(endpoint, wait),
        _ => Problem::from(&failure),
    })
}

/// Refuses an operation for a device nobody knows, and a write or execute on object 5 of a
/// device being upgraded.
fn admit(platform: &Platform, endpoint: &str, operation: &DeviceOperation) -> ApiResult<()> {
    known(platform, endpoint)?;
    operation
        .check_upgrade(endpoint, &platform.campaigns)
        .map_err(|upgrading| Problem::new(Kind::Conflict, upgrading.to_string()))
}

/// Refuses a device that is neither registered nor in the catalog (404).
fn known(platform: &Platform, endpoint: &str) -> ApiResult<()> {
    if platform.server.registry.get(endpoint).is_none() {
        platform.catalog.device(endpoint)?;
    }
    Ok(())
}

/// The 504 of a device that did not wake up (or register) within `wait`.
fn asleep(endpoint: &str, wait: Duration) -> Problem {
    Problem::new(
        Kind::DeviceUnreachable,
        format!(
            "{endpoint} did not wake up within {} s; queue the operation (POST \
             /v1/devices/{{endpoint}}/operations) to run it at its next wake-up",
            wait.as_secs()
        ),
    )
}

/// `GET /v1/devices/{endpoint}/observe`: the value now, then each notification, as
/// server-sent events (`notification`; `error` before the stream ends when the device ends
/// the observation).
pub async fn observe(
    State(state): State<ApiState>,
    Checked(Path(endpoint)): Checked<Path<String>>,
    Checked(Query(target)): Checked<Query<Target>>,
) -> ApiResult<Response> {
    let path = target.path()?;
    let wait = target.wait()?;
    admit(&state.platform, &endpoint, &DeviceOperation::Read { path })?;
    let mut watcher = state.platform.devices.observe(&endpoint, path);
    let first = tokio::time::timeout(wait, watcher.next()).await;
    let first = match first.ok().flatten() {
        Some(first) => first,
        None => return Err(asleep(&endpoint, wait)),
    };
    match &*first {
        Observed::Value(_) => {}
        Observed::NotObservable(_) => {
            return Err(Problem::new(
                Kind::DeviceRefused,
                format!("{endpoint} answers {path} but does not notify its changes: read it"),
            ));
        }
        Observed::Failed(error) => return Err(Problem::from(error)),
    }
    let follower = ObservationStream {
        path,
        first: Some(first),
        watcher,
        shutdown: state.shutdown.clone(),
        over: false,
    };
    let events = futures_util::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        Some((Ok::<_, Infallible>(event), follower))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One client's stream of an observation.
struct ObservationStream {
    /// The path observed.
    path: LwM2mPath,
    /// The value the stream starts with.
    first: Option<Arc<Observed>>,
    /// The observation.
    watcher: BoxStream<'static, Arc<Observed>>,
    /// Turns true when the API stops.
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// True once the `error` event was sent.
    over: bool,
}

impl ObservationStream {
    async fn next(&mut self) -> Option<Event> {
        if self.over {
            return None;
        }
        let observed = match self.first.take() {
            Some(first) => first,
            None => tokio::select! {
                _ = self.shutdown.wait_for(|stop| *stop) => return None,
                observed = self.watcher.next() => observed?,
            },
        };
        let (name, data) = match &*observed {
            Observed::Value(records) => ("notification", to_json(self.path, records)),
            Observed::NotObservable(_) => {
                self.over = true;
                let detail = "the device no longer notifies changes";
                ("error", serde_json::json!({ "detail": detail }))
            }
            Observed::Failed(error) => {
                self.over = true;
                ("error", serde_json::json!({ "detail": error.to_string() }))
            }
        };
        Some(Event::default().event(name).data(data.to_string()))
    }
}

/// An operation to queue, as `POST /v1/devices/{endpoint}/operations` takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOperation {
    /// `read`, `write` or `execute`.
    kind: OperationKind,
    /// The LwM2M path.
    path: String,
    /// What a write writes.
    content: Option<Value>,
    /// Execute's arguments.
    arguments: Option<String>,
}

/// What a queued operation does.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OperationKind {
    Read,
    Write,
    Execute,
}

impl NewOperation {
    fn operation(self) -> ApiResult<DeviceOperation> {
        let path = parse_path(&self.path)?;
        let invalid = |reason: &str| Problem::new(Kind::Invalid, reason.to_string());
        match (self.kind, self.content, self.arguments) {
            (OperationKind::Read, None, None) => Ok(DeviceOperation::Read { path }),
            (OperationKind::Write, Some(content), None) => {
                let records = from_json(path, &content).map_err(|r| invalid(&r))?;
                Ok(DeviceOperation::Write { path, records })
            }
            (OperationKind::Execute, None, arguments) => Ok(DeviceOperation::Execute {
                path: executable(path)?,
                arguments,
            }),
            (OperationKind::Write, None, _) => Err(invalid("a write needs its content")),
            _ => Err(invalid(
                "only a write has content, and only an execute has arguments",
            )),
        }
    }
}

/// A queued operation, as the API shows it.
#[derive(Debug, Serialize)]
pub struct OperationView {
    /// Its id in the device's queue (`Location` ends with it).
    id: String,
    /// The device.
    endpoint: String,
    /// `read`, `write` or `execute`.
    kind: &'static str,
    /// Its target.
    path: String,
    /// Pending, succeeded or failed.
    status: OperationStatus,
    /// When it was queued.
    created_at: UnixMillis,
    /// When it succeeded or failed.
    finished_at: Option<UnixMillis>,
    /// Times it was sent to the device.
    attempts: u32,
    /// What a read found.
    result: Option<Value>,
    /// Why it failed.
    error: Option<String>,
}

impl From<QueuedOperation> for OperationView {
    fn from(queued: QueuedOperation) -> Self {
        let path = queued.operation.path();
        let read = matches!(queued.operation, DeviceOperation::Read { .. });
        OperationView {
            kind: queued.operation.kind(),
            path: path.to_string(),
            result: (read && queued.status == OperationStatus::Succeeded)
                .then(|| to_json(path, &queued.result)),
            id: queued.id,
            endpoint: queued.endpoint,
            status: queued.status,
            created_at: queued.created_at,
            finished_at: queued.finished_at,
            attempts: queued.attempts,
            error: queued.error,
        }
    }
}

/// `POST /v1/devices/{endpoint}/operations`: queues an operation; 202 with its `Location`.
pub async fn enqueue(
    State(state): State<ApiState>,
    Checked(Path(endpoint)): Checked<Path<String>>,
    JsonBody(new): JsonBody<NewOperation>,
) -> ApiResult<Response> {
    let operation = new.operation()?;
    let platform = &state.platform;
    admit(platform, &endpoint, &operation)?;
    let queued = platform.operations.enqueue(&endpoint, operation)?;
    let location = location("/v1/devices", &[&endpoint, "operations", &queued.id]);
    Ok(accepted(&location, &OperationView::from(queued)))
}

/// `GET /v1/devices/{endpoint}/operations`: oldest first.
pub async fn list(
    State(state): State<ApiState>,
    Checked(Path(endpoint)): Checked<Path<String>>,
) -> ApiResult<Json<Vec<OperationView>>> {
    let platform = &state.platform;
    let operations = platform.operations.list(&endpoint)?;
    if operations.is_empty() {
        known(platform, &endpoint)?;
    }
    Ok(Json(operations.into_iter().map(Into::into).collect()))
}

/// `GET /v1/devices/{endpoint}/operations/{id}`: with `If-None-Match`, 304 while it is as the
/// client last saw it (a cheap poll for its end).
pub async fn one(
    State(state): State<ApiState>,
    Checked(Path((endpoint, id))): Checked<Path<(String, String)>>,
    conditions: Conditions,
) -> ApiResult<Response> {
    let found = state.platform.operations.get(&endpoint, &id)?;
    let queued = found.ok_or_else(|| no_operation(&endpoint, &id))?;
    Ok(conditions.read(&OperationView::from(queued)))
}

/// `DELETE /v1/devices/{endpoint}/operations/{id}`: cancels it, or forgets it once finished.
pub async fn remove(
    State(state): State<ApiState>,
    Checked(Path((endpoint, id))): Checked<Path<(String, String)>>,
) -> ApiResult<StatusCode> {
    match state.platform.operations.remove(&endpoint, &id)? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(no_operation(&endpoint, &id)),
    }
}

fn no_operation(endpoint: &str, id: &str) -> Problem {
    Problem::new(Kind::NotFound, format!("{endpoint} has no operation {id}"))
}
