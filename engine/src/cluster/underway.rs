//! The attempts under way on this node's devices, whichever coordinator asked for them (this
//! node, or another over the internal link). One per device: a newer one ends the older. Each
//! is fenced by its coordinator's epoch: refused once this node has seen a newer coordinator,
//! and ended as soon as it sees one, so a coordinator that lost the database and has not
//! stopped yet writes no device beside its successor. And each ends when its device moves to
//! another node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use super::members::Membership;
use crate::campaign::{AttemptOutcome, AttemptRequest, Attempts};
use crate::sync::lock;

/// How often an attempt under way checks that its device is still this node's.
const OWNERSHIP_CHECK: Duration = Duration::from_secs(2);

/// The attempts under way here.
pub struct Underway {
    /// This node's records, and the newest coordinator's epoch it has seen.
    membership: Membership,
    /// Runs attempts on this node's devices.
    attempts: Arc<dyn Attempts>,
    /// The attempt under way per device.
    running: Mutex<HashMap<String, AbortHandle>>,
}

/// One attempt under way, ended when dropped (if it has not).
pub struct Running {
    handle: JoinHandle<AttemptOutcome>,
    underway: Arc<Underway>,
    endpoint: String,
}

impl Underway {
    /// Attempts run by `attempts`, on the devices `membership`'s node owns.
    pub fn new(membership: Membership, attempts: Arc<dyn Attempts>) -> Arc<Underway> {
        Arc::new(Underway {
            membership,
            attempts,
            running: Mutex::default(),
        })
    }

    /// Starts `request` for the coordinator of `epoch`; `None` when this node has seen a
    /// newer coordinator. An older attempt on the device ends.
    pub fn start(self: &Arc<Self>, request: AttemptRequest, epoch: u64) -> Option<Running> {
        let membership = &self.membership;
        membership.saw_epoch(epoch);
        let newest = membership.epoch();
        let endpoint = request.endpoint.clone();
        if epoch < newest {
            tracing::info!(%endpoint, epoch, newest, "an attempt of a deposed coordinator refused");
            return None;
        }
        let attempt = until_moved(
            membership.clone(),
            endpoint.clone(),
            self.attempts.attempt(request),
        );
        let deposed = deposed(membership.epochs(), epoch);
        let handle = tokio::spawn(async move {
            tokio::select! {
                outcome = attempt => outcome,
                () = deposed => AttemptOutcome::Offline,
            }
        });
        let older = lock(&self.running).insert(endpoint.clone(), handle.abort_handle());
        if let Some(older) = older {
            tracing::info!(%endpoint, "an older attempt on the device ends for a newer one");
            older.abort();
        }
        Some(Running {
            handle,
            underway: self.clone(),
            endpoint,
        })
    }

    /// The number of attempts under way.
    #[cfg(test)]
    fn count(&self) -> usize {
        lock(&self.running).len()
    }
}

impl Running {
    /// How the attempt ended: `Offline` when a newer attempt, a newer coordinator or the
    /// device's move ended it. Cancel-safe.
    pub async fn outcome(&mut self) -> AttemptOutcome {
        (&mut self.handle).await.unwrap_or(AttemptOutcome::Offline)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.abort();
        let mut running = lock(&self.underway.running);
        if running
            .get(&self.endpoint)
            .is_some_and(|handle| handle.id() == self.handle.id())
        {
            running.remove(&self.endpoint);
        }
    }
}

/// Returns once this node has seen a coordinator newer than `epoch`.
pub async fn deposed(mut epochs: watch::Receiver<u64>, epoch: u64) {
    if epochs.wait_for(|newest| *newest > epoch).await.is_err() {
        // This node's records are gone: nothing newer will be seen.
        std::future::pending::<()>().await;
    }
}

/// `attempt`, ended (`Offline`) once another node claims `endpoint`: its Register or Update
/// went there, so the requests this node sends it no longer reach it, and the coordinator
/// sends its next attempt to that node.
async fn until_moved(
    membership: Membership,
    endpoint: String,
    attempt: impl Future<Output = AttemptOutcome>,
) -> AttemptOutcome {
    let moved = async {
        let mut check = tokio::time::interval(OWNERSHIP_CHECK);
        check.tick().await;
        loop {
            check.tick().await;
            let checking = membership.clone();
            let device = endpoint.clone();
            let owns = tokio::task::spawn_blocking(move || checking.owns(&device)).await;
            if matches!(owns, Ok(Ok(false))) {
                tracing::info!(%endpoint, "the device moved to another node: its attempt here ends");
                return;
            }
        }
    };
    tokio::select! {
        outcome = attempt => outcome,
        () = moved => AttemptOutcome::Offline,
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;

    use tokio::sync::mpsc;

    use super::*;
    use crate::campaign::task::{Task, TaskSpec, TaskStatus};
    use crate::clock::Clock;
    use crate::store::{SledStore, Store};
    use crate::transfer::Gate;

    /// Attempts that run until ended, each telling when it starts.
    struct Endless(mpsc::UnboundedSender<String>);

    impl Attempts for Endless {
        fn attempt(
            &self,
            request: AttemptRequest,
        ) -> Pin<Box<dyn Future<Output = AttemptOutcome> + Send>> {
            let _ = self.0.send(request.endpoint);
            Box::pin(std::future::pending())
        }
    }

    fn request(endpoint: &str) -> AttemptRequest {
        let (_, gate) = watch::channel(Gate::Open);
        let (stages, _) = mpsc::unbounded_channel();
        AttemptRequest {
            task: Task::new(
                "t".into(),
                TaskSpec::new("t", "g", "p"),
                0,
                TaskStatus::Upgrading,
            ),
            endpoint: endpoint.into(),
            attempt: 0,
            gate,
            stages,
        }
    }

    fn underway() -> (Arc<Underway>, Membership, mpsc::UnboundedReceiver<String>) {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let membership = Membership::new(store, Clock::system(), "n2", ("x:1", "x:2"));
        let (started, starts) = mpsc::unbounded_channel();
        let underway = Underway::new(membership.clone(), Arc::new(Endless(started)));
        (underway, membership, starts)
    }

    #[tokio::test]
    async fn a_newer_coordinator_ends_the_older_ones_attempts_and_refuses_its_new_ones() {
        let (underway, membership, mut starts) = underway();
        let mut first = underway.start(request("dev-1"), 1).expect("epoch 1 runs");
        assert_eq!(starts.recv().await.unwrap(), "dev-1");
        // The node learns of coordinator 2 (its heartbeat read it, or it sent an attempt).
        membership.saw_epoch(2);
        assert_eq!(first.outcome().await, AttemptOutcome::Offline);
        assert!(
            underway.start(request("dev-2"), 1).is_none(),
            "the deposed coordinator's next attempt is refused"
        );
        let _second = underway.start(request("dev-2"), 2).expect("epoch 2 runs");
        assert_eq!(starts.recv().await.unwrap(), "dev-2");
        assert!(
            starts.try_recv().is_err(),
            "nothing started for the refused one"
        );
    }

    #[tokio::test]
    async fn a_newer_attempt_on_a_device_ends_the_older_and_a_dropped_one_is_forgotten() {
        let (underway, _, mut starts) = underway();
        let mut older = underway.start(request("dev-1"), 1).unwrap();
        starts.recv().await.unwrap();
        let newer = underway.start(request("dev-1"), 1).unwrap();
        assert_eq!(older.outcome().await, AttemptOutcome::Offline);
        drop(older);
        assert_eq!(underway.count(), 1, "the newer one is still under way");
        drop(newer);
        assert_eq!(underway.count(), 0);
    }
}
