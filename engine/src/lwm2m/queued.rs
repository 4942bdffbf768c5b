//! `OperationQueue`: device operations an integrator queued (for a queue-mode device asleep, or
//! one not registered now), kept in the store and run in order in the window after the
//! device's next Register or Update, also after an engine restart; each keeps its status and
//! its result or error until the integrator deletes it. A device that does not answer keeps
//! its operation for its next wake-up, [`MAX_ATTEMPTS`] times. Owns the queue, its records and
//! when they run; what an operation does is [`DeviceOperation`]'s, and where it runs (this
//! node, or the node the device is registered to) [`DeviceAccess`]'s.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::access::{DeviceAccess, FailureClass, WakeUps, WokeUp};
use super::content::Record;
use super::operation::{DeviceOperation, Upgrades};
use crate::clock::{Clock, UnixMillis};
use crate::store::{Batch, Store, StoreError, StoreExt, key_segment};
use crate::sync::lock;

/// Key prefix of queued operations: `operation/{endpoint}/{id}`.
const PREFIX: &str = "operation/";
/// Operations a device may have pending at once.
pub const MAX_PENDING: usize = 64;
/// Finished operations kept per device (the oldest go first).
pub const KEEP_FINISHED: usize = 32;
/// Wake-ups a device may stay silent to an operation before it fails.
pub const MAX_ATTEMPTS: u32 = 3;
/// Hex digits of an id: ids sort as the numbers they are.
const ID_DIGITS: usize = 16;

/// Where a queued operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    /// Waiting for the device's next wake-up (or running now).
    Pending,
    /// The device did it; a read's records are in `result`.
    Succeeded,
    /// The device refused it, or never answered; `error` says why.
    Failed,
}

/// One queued operation, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedOperation {
    /// Unique, increasing in the order operations were queued.
    pub id: String,
    /// The device.
    pub endpoint: String,
    /// What to do.
    pub operation: DeviceOperation,
    /// Where it stands.
    pub status: OperationStatus,
    /// When it was queued.
    pub created_at: UnixMillis,
    /// When it succeeded or failed.
    pub finished_at: Option<UnixMillis>,
    /// Times it was sent to the device.
    pub attempts: u32,
    /// What a read found.
    pub result: Vec<Record>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Why the queue refused.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The device has [`MAX_PENDING`] operations pending.
    #[error("{0} has {MAX_PENDING} operations pending: wait for them or delete some")]
    Full(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The queue. Cheap to clone.
#[derive(Clone)]
pub struct OperationQueue {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where operations are kept.
    store: Arc<dyn Store>,
    /// Sends them, to devices awake now.
    devices: Arc<dyn DeviceAccess>,
    /// Which devices are being upgraded (object 5 is the delivery's then).
    upgrades: Arc<dyn Upgrades>,
    /// Creation and finishing times.
    clock: Clock,
    /// Ids and who is being served, under one lock with every change of a record.
    state: Mutex<QueueState>,
    /// Stops the follower of registrations with the queue.
    follower: Mutex<Option<tokio::task::AbortHandle>>,
}

#[derive(Default)]
struct QueueState {
    /// The next id given.
    next_id: u64,
    /// Pending operations per device.
    pending: HashMap<String, usize>,
    /// Devices whose operations are being run now.
    draining: HashSet<String>,
    /// Devices among those that woke up again meanwhile: looked at again before their
    /// draining ends.
    woke_again: HashSet<String>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(follower) = lock(&self.follower).take() {
            follower.abort();
        }
    }
}

/// What to do after an operation ran.
enum Next {
    /// Run the device's next one.
    Continue,
    /// The device went silent: wait for its next wake-up.
    WaitForWakeUp,
}

impl OperationQueue {
    /// The queue kept in `store`, running operations through `devices` when they wake up;
    /// starts following their wake-ups.
    pub fn open(
        store: Arc<dyn Store>,
        devices: Arc<dyn DeviceAccess>,
        upgrades: Arc<dyn Upgrades>,
        clock: Clock,
    ) -> Result<OperationQueue, StoreError> {
        let mut state = QueueState::default();
        for operation in store.scan::<QueuedOperation>(PREFIX)? {
            let number = u64::from_str_radix(&operation.id, 16).unwrap_or_default();
            state.next_id = state.next_id.max(number + 1);
            if operation.status == OperationStatus::Pending {
                *state.pending.entry(operation.endpoint).or_default() += 1;
            }
        }
        let wake_ups = devices.wake_ups();
        let inner = Arc::new(Inner {
            store,
            devices,
            upgrades,
            clock,
            state: Mutex::new(state),
            follower: Mutex::new(None),
        });
        let follower = tokio::spawn(follow(Arc::downgrade(&inner), wake_ups));
        *lock(&inner.follower) = Some(follower.abort_handle());
        Ok(OperationQueue { inner })
    }

    /// Queues `operation` for `endpoint`; it runs now if the device is awake.
    pub fn enqueue(
        &self,
        endpoint: &str,
        operation: DeviceOperation,
    ) -> Result<QueuedOperation, QueueError> {
        let queued = {
            let mut state = lock(&self.inner.state);
            let pending = state.pending.get(endpoint).copied().unwrap_or_default();
            if pending >= MAX_PENDING {
                return Err(QueueError::Full(endpoint.to_string()));
            }
            let queued = QueuedOperation {
                id: format!("{:0width$x}", state.next_id, width = ID_DIGITS),
                endpoint: endpoint.to_string(),
                operation,
                status: OperationStatus::Pending,
                created_at: self.inner.clock.now(),
                finished_at: None,
                attempts: 0,
                result: Vec::new(),
                error: None,
            };
            self.inner.store.put_durable(&key(&queued), &queued)?;
            state.next_id += 1;
            *state.pending.entry(endpoint.to_string()).or_default() += 1;
            queued
        };
        self.inner.serve(endpoint);
        Ok(queued)
    }

    /// The operations of `endpoint`, oldest first.
    pub fn list(&self, endpoint: &str) -> Result<Vec<QueuedOperation>, StoreError> {
        self.inner.store.scan(&device_prefix(endpoint))
    }

    /// Operation `id` of `endpoint` (none for an id in any other form than the one given).
    pub fn get(&self, endpoint: &str, id: &str) -> Result<Option<QueuedOperation>, StoreError> {
        let given = id.len() == ID_DIGITS && id.bytes().all(|b| b.is_ascii_hexdigit());
        if !given {
            return Ok(None);
        }
        self.inner
            .store
            .get(&format!("{}{id}", device_prefix(endpoint)))
    }

    /// Cancels operation `id` of `endpoint` if it is pending (one being sent right now may
    /// still reach the device), or forgets it if it finished; false when there is none.
    pub fn remove(&self, endpoint: &str, id: &str) -> Result<bool, StoreError> {
        let removed = {
            let _changing = lock(&self.inner.state);
            let Some(operation) = self.get(endpoint, id)? else {
                return Ok(false);
            };
            let mut batch = Batch::new();
            batch.remove(key(&operation));
            self.inner.store.apply(batch)?;
            self.inner.store.flush()?;
            operation
        };
        if removed.status == OperationStatus::Pending {
            self.inner.count_finished(endpoint);
        }
        Ok(true)
    }
}

impl Inner {
    /// Starts running `endpoint`'s pending operations, unless it has none; if they are being
    /// run, they are looked at again before that ends (the device woke up again).
    fn serve(self: &Arc<Self>, endpoint: &str) {
        {
            let mut state = lock(&self.state);
            if !state.pending.contains_key(endpoint) {
                return;
            }
            if !state.draining.insert(endpoint.to_string()) {
                state.woke_again.insert(endpoint.to_string());
                return;
            }
        }
        tokio::spawn(self.clone().drain(endpoint.to_string()));
    }

    /// Runs `endpoint`'s pending operations in order while it is awake.
    async fn drain(self: Arc<Self>, endpoint: String) {
        loop {
            let operation = {
                let mut state = lock(&self.state);
                let first = self.first_pending(&endpoint);
                if let Err(error) = &first {
                    tracing::error!(%endpoint, %error, "queued operations unreadable");
                }
                match first {
                    Ok(Some(operation)) => operation,
                    Ok(None) | Err(_) => {
                        state.draining.remove(&endpoint);
                        state.woke_again.remove(&endpoint);
                        return;
                    }
                }
            };
            if let Next::WaitForWakeUp = self.run(operation).await {
                let mut state = lock(&self.state);
                if !state.woke_again.remove(&endpoint) {
                    state.draining.remove(&endpoint);
                    return;
                }
            }
        }
    }

    /// The oldest pending operation of `endpoint`.
    fn first_pending(&self, endpoint: &str) -> Result<Option<QueuedOperation>, StoreError> {
        let operations: Vec<QueuedOperation> = self.store.scan(&device_prefix(endpoint))?;
        Ok(operations
            .into_iter()
            .find(|operation| operation.status == OperationStatus::Pending))
    }

    /// Sends `queued` to its device if it is awake now, and keeps what came of it.
    async fn run(&self, mut queued: QueuedOperation) -> Next {
        let endpoint = queued.endpoint.clone();
        let outcome = match queued
            .operation
            .check_upgrade(&endpoint, self.upgrades.as_ref())
        {
            Err(refused) => Err(refused.to_string()),
            Ok(()) => {
                let operation = queued.operation.clone();
                let now = self.devices.operate(&endpoint, operation, Duration::ZERO);
                match now.await {
                    Ok(records) => Ok(records),
                    Err(failure) if failure.class == FailureClass::Asleep => {
                        return Next::WaitForWakeUp;
                    }
                    Err(failure) if failure.may_pass() && queued.attempts + 1 < MAX_ATTEMPTS => {
                        tracing::debug!(%endpoint, %failure, "queued operation unanswered");
                        queued.attempts += 1;
                        if let Err(error) = self.keep(&queued) {
                            tracing::error!(%endpoint, %error, "queued operation not kept");
                        }
                        return Next::WaitForWakeUp;
                    }
                    Err(failure) => Err(failure.detail),
                }
            }
        };
        queued.attempts += 1;
        match outcome {
            Ok(records) => {
                queued.status = OperationStatus::Succeeded;
                queued.result = records;
            }
            Err(error) => {
                queued.status = OperationStatus::Failed;
                queued.error = Some(error);
            }
        }
        queued.finished_at = Some(self.clock.now());
        match self.keep(&queued) {
            Ok(true) => {
                self.count_finished(&endpoint);
                Next::Continue
            }
            // Deleted while it ran: the deletion counted it.
            Ok(false) => Next::Continue,
            Err(error) => {
                tracing::error!(%endpoint, %error, "queued operation not kept");
                Next::WaitForWakeUp
            }
        }
    }

    /// Writes `queued` back, unless it was deleted meanwhile (false); finished operations
    /// beyond [`KEEP_FINISHED`] go, oldest first.
    fn keep(&self, queued: &QueuedOperation) -> Result<bool, StoreError> {
        let _changing = lock(&self.state);
        if self.store.get::<QueuedOperation>(&key(queued))?.is_none() {
            return Ok(false);
        }
        let mut batch = Batch::new();
        batch.put(key(queued), queued);
        for old in self.finished_beyond_kept(&queued.endpoint)? {
            batch.remove(key(&old));
        }
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(true)
    }

    /// The finished operations of `endpoint` past the newest [`KEEP_FINISHED`].
    fn finished_beyond_kept(&self, endpoint: &str) -> Result<Vec<QueuedOperation>, StoreError> {
        let finished: Vec<QueuedOperation> = self
            .store
            .scan::<QueuedOperation>(&device_prefix(endpoint))?
            .into_iter()
            .filter(|operation| operation.status != OperationStatus::Pending)
            .collect();
        let beyond = finished.len().saturating_sub(KEEP_FINISHED);
        Ok(finished.into_iter().take(beyond).collect())
    }

    /// One pending operation of `endpoint` fewer.
    fn count_finished(&self, endpoint: &str) {
        let mut state = lock(&self.state);
        if let Some(count) = state.pending.get_mut(endpoint) {
            *count -= 1;
            if *count == 0 {
                state.pending.remove(endpoint);
            }
        }
    }

    /// Every device with pending operations is served (those awake now run them).
    fn serve_everyone(self: &Arc<Self>) {
        let endpoints: Vec<String> = lock(&self.state).pending.keys().cloned().collect();
        for endpoint in endpoints {
            self.serve(&endpoint);
        }
    }
}

/// Serves each device with pending operations when it registers or sends an Update, until
/// the queue goes.
async fn follow(queue: Weak<Inner>, mut wake_ups: WakeUps) {
    while let Some(woke) = wake_ups.next().await {
        let Some(queue) = queue.upgrade() else { return };
        match woke {
            WokeUp::Device(endpoint) => queue.serve(&endpoint),
            WokeUp::Missed => queue.serve_everyone(),
        }
    }
}

/// The key prefix of `endpoint`'s operations.
fn device_prefix(endpoint: &str) -> String {
    format!("{PREFIX}{}/", key_segment(endpoint))
}

/// The key of `operation`.
fn key(operation: &QueuedOperation) -> String {
    format!("{}{}", device_prefix(&operation.endpoint), operation.id)
}
