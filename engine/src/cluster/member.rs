//! A member node: CoAP for the devices the balancer sends it, the attempts the coordinator
//! sends for them, its writes of device records told to the coordinator; no scheduler,
//! journal or webhooks (those are the coordinator's). When the coordinator dies the database's
//! lock comes free ([`coordinator_gone`]): the member that takes it becomes the coordinator
//! in place ([`Member::promote`]), keeping its devices' registrations.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{ClusterConfig, ClusterNeighbours, Membership, Node};
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
        let node = Node::start(cluster, &store, listener, foundation.attempts.clone(), None);
        let server = &foundation.server;
        let neighbours: Arc<dyn Neighbours> = ClusterNeighbours::member(
            node.membership.clone(),
            cluster.secret.clone(),
            &server.registry,
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
        handles.extend([onboarding, tokio::spawn(follow_plugins(plugins))]);
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

/// How often a member looks whether the kept plugins changed.
const PLUGINS_LOOK: Duration = Duration::from_secs(1);

/// Binds the plugins the coordinator's API installed, configured or unbound (kept in the
/// store), within [`PLUGINS_LOOK`] of the change, until aborted.
async fn follow_plugins((kept, registry): (KeptPlugins, Arc<PluginRegistry>)) {
    let mut bound = None;
    let mut look = tokio::time::interval(PLUGINS_LOOK);
    loop {
        look.tick().await;
        let (kept, registry, last) = (kept.clone(), registry.clone(), bound);
        let synced = tokio::task::spawn_blocking(move || {
            let now = kept.digest()?;
            if last == Some(now) {
                return Ok::<_, RestoreError>(now);
            }
            // At the first look, what the start bound; later, another node's change.
            if last.is_some() {
                let count = kept.sync(&registry)?;
                tracing::info!(count, "plugins changed on another node: bound again");
            }
            Ok(now)
        })
        .await;
        match synced {
            Ok(Ok(now)) => bound = Some(now),
            Ok(Err(error)) => tracing::error!(%error, "plugins changed on another node not bound"),
            Err(error) => tracing::error!(%error, "the plugins' follower failed"),
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
