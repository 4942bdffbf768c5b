//! A member node: CoAP for the devices the balancer sends it, the attempts the coordinator
//! sends for them, its writes of device records told to the coordinator; no scheduler,
//! journal or webhooks (those are the coordinator's). When the coordinator dies the database's
//! lock comes free ([`coordinator_gone`]): the member that takes it becomes the coordinator
//! in place ([`Member::promote`]), keeping its devices' registrations.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{ClusterConfig, ClusterNeighbours, Local, Membership, Node};
use crate::catalog::Credentials;
use crate::clock::Clock;
use crate::onboarding::{Neighbours, follow_registrations};
use crate::platform::{Foundation, Platform, PlatformConfig, PlatformError};
use crate::plugin::{KeptPlugins, PluginHost, PluginRegistry, RestoreError};
use crate::server::Server;
use crate::store::{DatabaseHeld, PostgresStore, Store, StoreError};
use crate::webhooks::WebhookConfig;

/// A running member.
pub struct Member {
    /// CoAP, plugins, this node's view of the catalog, attempts on its devices.
    foundation: Foundation,
    /// The shared store.
    pub store: Arc<dyn Store>,
    /// Its records in the cluster.
    membership: Membership,
    /// Its node's tasks and its onboarding: ended when it stops or takes over.
    handles: Running,
}

/// Tasks aborted when dropped.
struct Running(Vec<JoinHandle<()>>);

impl Drop for Running {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

impl Member {
    /// Starts a member of `cluster` on `store`, serving the internal link on `listener`.
    pub async fn start(
        config: PlatformConfig,
        store: Arc<dyn Store>,
        cluster: &ClusterConfig,
        listener: TcpListener,
    ) -> Result<Member, PlatformError> {
        let host = PluginHost::new(config.plugins.clone())
            .map_err(|e| PlatformError::Host(e.to_string()))?;
        let mut foundation =
            Foundation::start(host, Clock::system(), &store, config.server).await?;
        let catalog = foundation.catalog.clone();
        foundation.catalog = catalog.leaving_group_joins_to_the_coordinator();
        foundation.attempts.catalog = foundation.catalog.clone();
        let local = Local {
            attempts: foundation.attempts.clone(),
            devices: foundation.devices.clone(),
        };
        let node = Node::start(cluster, &store, listener, local, None);
        let server = &foundation.server;
        let neighbours: Arc<dyn Neighbours> = ClusterNeighbours::member(
            node.membership.clone(),
            cluster.secret.clone(),
            node.claimed.subscribe(),
        );
        let onboarding = tokio::spawn(follow_registrations(
            server.registry.clone(),
            foundation.catalog.clone(),
            server.management.clone(),
            (server.edge_limits.clone(), server.edge.clone()),
            Some(neighbours),
        ));
        let plugins = (foundation.kept_plugins.clone(), foundation.plugins.clone());
        let mut handles = node.handles;
        let credentials = foundation.catalog.credentials().clone();
        handles.extend([
            onboarding,
            tokio::spawn(follow_plugins(plugins)),
            tokio::spawn(follow_credentials(credentials)),
        ]);
        tracing::info!(node = %cluster.node, "this node is a member of the cluster");
        Ok(Member {
            foundation,
            store,
            membership: node.membership.clone(),
            handles: Running(handles),
        })
    }

    /// Its CoAP side.
    pub fn server(&self) -> &Server {
        &self.foundation.server
    }

    /// What it answers on its HTTP address: the API, passed on to the coordinator's.
    pub fn forwarding(&self) -> axum::Router {
        super::forward::router(self.membership.clone())
    }

    /// Takes the place of the coordinator, which died (this node holds the database now):
    /// its own tasks end, the catalog is read again from the store, and the platform starts
    /// on the same CoAP side (the devices registered here stay registered), serving the
    /// internal link on `cluster`'s address again and delivering webhooks as `webhooks` says.
    pub async fn promote(
        mut self,
        cluster: &ClusterConfig,
        webhooks: WebhookConfig,
    ) -> Result<Platform, PlatformError> {
        for handle in std::mem::take(&mut self.handles.0) {
            handle.abort();
            // Ended, its listener is closed: the coordinator binds the address again.
            let _ = handle.await;
        }
        let listener = TcpListener::bind(cluster.internal_addr).await?;
        let store = self.store.clone();
        let foundation = self.foundation.reopened(&store)?;
        Platform::assemble(foundation, store, webhooks, Some((cluster, listener)))
    }
}

/// How often a member looks whether the coordinator changed plugins or credentials.
const LOOK: Duration = Duration::from_secs(1);

/// Binds the plugins the coordinator's API installed, configured or unbound (kept in the
/// store), within [`LOOK`] of the change, until aborted.
async fn follow_plugins((kept, registry): (KeptPlugins, Arc<PluginRegistry>)) {
    let digest = kept.clone();
    let catch_up = move || {
        let count = kept.sync(&registry)?;
        tracing::info!(count, "plugins changed on another node: bound again");
        Ok(())
    };
    follow(
        "plugins",
        move || digest.digest().map_err(RestoreError::from),
        catch_up,
    )
    .await;
}

/// Reads the devices' credentials again once the coordinator's API changed them (imported,
/// set, removed: a device registering here over coaps is known at once), until aborted.
async fn follow_credentials(credentials: Credentials) {
    let revision = credentials.clone();
    let catch_up = move || {
        credentials.reload()?;
        tracing::info!("credentials changed on another node: read again");
        Ok(())
    };
    follow("credentials", move || revision.revision(), catch_up).await;
}

/// Every [`LOOK`], reads `state`; when it differs from the last reading, calls `catch_up`
/// (the first reading is what the member started with). Both block: run off the runtime.
async fn follow<S, E>(
    what: &'static str,
    state: impl Fn() -> Result<S, E> + Send + Sync + 'static,
    catch_up: impl Fn() -> Result<(), E> + Send + Sync + 'static,
) where
    S: PartialEq + Clone + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let (state, catch_up) = (Arc::new(state), Arc::new(catch_up));
    let mut last: Option<S> = None;
    let mut look = tokio::time::interval(LOOK);
    loop {
        look.tick().await;
        let (state, catch_up, seen) = (state.clone(), catch_up.clone(), last.clone());
        let looked = tokio::task::spawn_blocking(move || {
            let now = state()?;
            if seen.is_some_and(|seen| seen != now) {
                catch_up()?;
            }
            Ok::<_, E>(now)
        })
        .await;
        match looked {
            Ok(Ok(now)) => last = Some(now),
            Ok(Err(error)) => tracing::error!(what, %error, "a change on another node not taken"),
            Err(error) => tracing::error!(what, %error, "the follower of changes failed"),
        }
    }
}

/// Returns once no engine holds the database at `url` (its coordinator died) and this node
/// took it: holding it until the returned hold is dropped, this node is the one to take the
/// coordinator's place. The watch runs on a thread of its own, left behind when the member
/// stops.
pub async fn coordinator_gone(url: String) -> Result<DatabaseHeld, StoreError> {
    let (gone, told) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("fota-coordinator-watch".into())
        .spawn(move || {
            let _ = gone.send(PostgresStore::wait_to_hold(&url));
        })
        .map_err(|error| StoreError::Io(format!("no watcher thread: {error}")))?;
    told.await
        .map_err(|_| StoreError::Io("the coordinator's watcher ended".into()))?
}
