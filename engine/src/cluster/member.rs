//! A member node: CoAP for the devices the balancer sends it, the attempts the coordinator
//! sends for them, its writes of device records told to the coordinator; no scheduler,
//! journal or webhooks (those are the coordinator's). When the coordinator dies the database's
//! lock comes free ([`coordinator_gone`]) and the member takes over by starting again as the
//! coordinator.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use super::{ClusterConfig, ClusterNeighbours, Node};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::onboarding::{Neighbours, follow_registrations};
use crate::platform::{Foundation, PlatformConfig, PlatformError};
use crate::plugin::PluginHost;
use crate::server::Server;
use crate::store::{PostgresStore, Store, StoreError};

/// A running member.
pub struct Member {
    /// CoAP: registrations, device management, delivery.
    pub server: Server,
    /// The shared store.
    pub store: Arc<dyn Store>,
    /// Devices, packages: this node's view of the store.
    pub catalog: Catalog,
    /// Stop with the member.
    handles: Vec<AbortHandle>,
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
        let foundation = Foundation::start(host, Clock::system(), &store, config.server).await?;
        let Foundation {
            server,
            catalog,
            mut attempts,
            ..
        } = foundation;
        let catalog = catalog.leaving_group_joins_to_the_coordinator();
        attempts.catalog = catalog.clone();
        let node = Node::start(cluster, &store, listener, attempts);
        let neighbours: Arc<dyn Neighbours> =
            ClusterNeighbours::member(node.membership.clone(), cluster.secret.clone());
        let onboarding = tokio::spawn(follow_registrations(
            server.registry.clone(),
            catalog.clone(),
            server.management.clone(),
            (server.edge_limits.clone(), server.edge.clone()),
            Some(neighbours),
        ));
        let mut handles = node.handles;
        handles.push(onboarding.abort_handle());
        tracing::info!(node = %cluster.node, "this node is a member of the cluster");
        Ok(Member {
            server,
            store,
            catalog,
            handles,
        })
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}

/// Returns once no engine holds the database at `url`: its coordinator died. The watch runs
/// on a thread of its own, left behind when the member stops.
pub async fn coordinator_gone(url: String) -> Result<(), StoreError> {
    let (gone, told) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("fota-coordinator-watch".into())
        .spawn(move || {
            let _ = gone.send(PostgresStore::wait_until_free(&url));
        })
        .map_err(|error| StoreError::Io(format!("no watcher thread: {error}")))?;
    told.await
        .map_err(|_| StoreError::Io("the coordinator's watcher ended".into()))?
}
