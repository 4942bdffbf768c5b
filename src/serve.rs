//! `fota serve`: the platform (CoAP engine, store, plugins, catalog, tasks) and its HTTP API
//! (and, with `metrics_addr`, `/metrics` without a token on an address of its own) until
//! SIGINT or SIGTERM. Tasks and deliveries under way when it stops (or is killed) resume
//! at the next start on the same data directory. Settings come from flags, environment
//! variables and `fota.toml` (see [`crate::config`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use fota_engine::api;
use fota_engine::campaign::CampaignEvent;
use fota_engine::campaign::task::status_name;
use fota_engine::cluster::ClusterConfig;
use fota_engine::cluster::member::{Member, coordinator_gone};
use fota_engine::lwm2m::RegistrationEvent;
use fota_engine::platform::{Platform, PlatformConfig};
use fota_engine::plugin::HostConfig;
use fota_engine::server::ServerConfig;
use fota_engine::store::{DatabaseHeld, HoldLost, StoreLocation};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::{ConfigFile, Overrides, Settings};
use crate::logging::CONSOLE;
use crate::stop_signals::StopSignals;

/// How long requests under way may take to finish once the engine is asked to stop.
const API_DRAIN: Duration = Duration::from_secs(5);

/// Options of `fota serve`; each overrides the configuration file.
#[derive(Args)]
pub struct ServeArgs {
    /// Configuration file [default: ./fota.toml when it exists].
    #[arg(long, env = "FOTA_CONFIG")]
    config: Option<PathBuf>,
    /// UDP address for CoAP [default: 0.0.0.0:5683].
    #[arg(long, env = "FOTA_COAP_ADDR")]
    coap_addr: Option<SocketAddr>,
    /// TCP address of the HTTP API [default: 0.0.0.0:8080].
    #[arg(long, env = "FOTA_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// TCP address serving GET /metrics without a token, for a Prometheus scraper (keep it on
    /// a loopback or management network); the API's /metrics still takes a token [default:
    /// none].
    #[arg(long, env = "FOTA_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Where the store lives, with sled [default: ./fota-data].
    #[arg(long, env = "FOTA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A PostgreSQL database for the store instead of the data directory
    /// (postgres://user:password@host:port/database); several nodes may share one.
    #[arg(long, env = "FOTA_STORE")]
    store: Option<String>,
    /// Largest firmware image, plugin or credential batch the API accepts [default: 33554432].
    #[arg(long, env = "FOTA_MAX_UPLOAD_BYTES")]
    max_upload_bytes: Option<usize>,
    /// The host:port devices reach the engine at, given in Package URIs to pulling devices
    /// [default: the CoAP address bound].
    #[arg(long, env = "FOTA_PACKAGE_AUTHORITY")]
    package_authority: Option<String>,
    /// CoAP timers for a loopback test bed (ACK timeout 60 ms) instead of NB-IoT's (3 s).
    #[arg(long)]
    loopback_timers: bool,
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            coap_addr: self.coap_addr,
            http_addr: self.http_addr,
            metrics_addr: self.metrics_addr,
            data_dir: self.data_dir.clone(),
            store: self.store.clone(),
            max_upload_bytes: self.max_upload_bytes,
            package_authority: self.package_authority.clone(),
        }
    }
}

/// Serves until interrupted, logging registrations and task status changes.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (file, read) = ConfigFile::load(args.config.as_deref())?;
    let settings = Settings::resolve(args.overrides(), file);
    let mut server = if args.loopback_timers {
        ServerConfig::loopback()
    } else {
        ServerConfig::default()
    };
    server.coap.params = settings.coap.params(server.coap.params);
    server.coap_addr = settings.coap_addr;
    server.edge = settings.edge.clone();
    server.coaps = settings.coaps.clone();
    server.delivery.blocks = settings.blocks.clone();
    server.delivery.cell_airtime = settings.cell_airtime_bytes_per_sec;
    if let Some(window) = settings.queue_window {
        server.queue_window = window;
    }
    if let Some(authority) = &settings.package_authority {
        server.delivery.package_authority = authority.clone();
    }
    let config = PlatformConfig {
        server,
        store: settings.store.clone(),
        plugins: HostConfig::default(),
        webhooks: settings.webhooks.clone(),
    };
    let mut api_listener = TcpListener::bind(settings.http_addr).await?;
    // A member that took the coordinator's place holds the database until it stops.
    let mut _held = None;
    // A cluster's coordinator stops if its hold on the database is lost: another node takes
    // its place, and two would schedule the same tasks.
    let mut hold = None;
    let platform = match &settings.cluster {
        None => Platform::start(config).await?,
        Some(file) => {
            let internal = TcpListener::bind(file.addr()).await?;
            let cluster = file.config(api_listener.local_addr()?, internal.local_addr()?)?;
            match start_node(config, &settings, &cluster, internal).await? {
                Node::Coordinator(platform, lost) => {
                    hold = Some(lost);
                    *platform
                }
                Node::Member(member) => {
                    let serving = serve_member(*member, &cluster, &settings, api_listener);
                    let Some(promoted) = serving.await? else {
                        return Ok(());
                    };
                    hold = Some(promoted.held.lost());
                    _held = Some(promoted.held);
                    api_listener = promoted.api;
                    promoted.platform
                }
            }
        }
    };
    let platform = Arc::new(platform);
    let listeners = api::Listeners {
        api: api_listener,
        metrics: match settings.metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        },
    };
    // Listening before announcing: a signal sent on reading the announcement is not lost.
    let mut stop = StopSignals::listen()?;
    announce(&platform, &listeners, &settings, read)?;
    let (stop_api, api_stopped) = oneshot::channel::<()>();
    let mut api = tokio::spawn(api::serve(
        listeners,
        platform.clone(),
        settings.api,
        async move {
            let _ = api_stopped.await;
        },
    ));
    let mut events = platform.server.registry.subscribe();
    let mut tasks = platform.campaigns.subscribe();
    loop {
        tokio::select! {
            () = stop.stopped() => break,
            () = hold_lost(&mut hold) => {
                anyhow::bail!(
                    "this node lost its hold on the database, so another node may coordinate \
                     now: it stops (started again, it joins as a member)"
                );
            }
            () = platform.deposed() => {
                anyhow::bail!(
                    "another node coordinates the cluster now (its epoch is newer): this node \
                     stops (started again, it joins as a member)"
                );
            }
            served = &mut api => {
                served??;
                anyhow::bail!("the HTTP API stopped");
            }
            event = events.recv() => {
                if let Ok(event) = event {
                    log_event(&event);
                }
            }
            event = tasks.recv() => {
                if let Ok(CampaignEvent::Task(task)) = event {
                    let status = status_name(task.status);
                    tracing::info!(target: CONSOLE, task = %task.id, "task {} is {status}", task.id);
                }
            }
        }
    }
    let _ = stop_api.send(());
    if tokio::time::timeout(API_DRAIN, api).await.is_err() {
        tracing::warn!("HTTP requests still under way after {API_DRAIN:?}; stopping anyway");
    }
    platform.store.flush()?;
    tracing::info!(target: CONSOLE, "stopped");
    Ok(())
}

/// What a node of a cluster started as.
enum Node {
    /// It holds the database: it runs the scheduler and the API.
    Coordinator(Box<Platform>, HoldLost),
    /// Another node does.
    Member(Box<Member>),
}

/// Completes once `hold` says the database's hold is lost; never without one (one node, or
/// a hold let go as the engine stops).
async fn hold_lost(hold: &mut Option<HoldLost>) {
    if let Some(hold) = hold
        && hold.wait_for(|lost| *lost).await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// Starts this engine as a node of `cluster`: the coordinator if no other engine holds the
/// database, a member otherwise.
async fn start_node(
    config: PlatformConfig,
    settings: &Settings,
    cluster: &ClusterConfig,
    listener: TcpListener,
) -> anyhow::Result<Node> {
    let (store, hold) = settings.store.open_for_cluster()?;
    if let Some(lost) = hold {
        let platform = Platform::start_coordinator(config, store, cluster, listener).await?;
        return Ok(Node::Coordinator(Box::new(platform), lost));
    }
    let member = Member::start(config, store, cluster, listener).await?;
    Ok(Node::Member(Box::new(member)))
}

/// A member that took the coordinator's place.
struct Promoted {
    /// What it runs from now on.
    platform: Platform,
    /// Its hold on the database.
    held: DatabaseHeld,
    /// Its HTTP address, for the API now.
    api: TcpListener,
}

/// How long a member taking over lets the requests it passed on finish.
const FORWARDING_DRAIN: Duration = Duration::from_secs(5);

/// Serves as a member (the HTTP API passed on to the coordinator, on `api`) until asked to
/// stop (`None`), or until the coordinator dies and this node takes its place.
async fn serve_member(
    member: Member,
    cluster: &ClusterConfig,
    settings: &Settings,
    api: TcpListener,
) -> anyhow::Result<Option<Promoted>> {
    let mut stop = StopSignals::listen()?;
    let api_addr = api.local_addr()?;
    let (stop_forwarding, forwarding_stopped) = oneshot::channel::<()>();
    let forwarding = tokio::spawn(api::serve_app(
        api,
        member.forwarding(),
        &settings.api,
        async move {
            let _ = forwarding_stopped.await;
        },
    ));
    tracing::info!(
        target: CONSOLE,
        "CoAP on udp://{}, store: {}",
        member.server().coap_addr(),
        settings.store.describe()
    );
    tracing::info!(
        target: CONSOLE,
        "node {} is a member of the cluster (internal link on {}); HTTP API on http://{api_addr} \
         passed on to the coordinator's",
        cluster.node,
        cluster.advertise
    );
    let StoreLocation::Postgres(url) = &settings.store else {
        anyhow::bail!("a cluster's nodes share a PostgreSQL store");
    };
    tokio::select! {
        () = stop.stopped() => {
            member.store.flush()?;
            tracing::info!(target: CONSOLE, "stopped");
            Ok(None)
        }
        held = coordinator_gone(url.clone()) => {
            let held = held?;
            tracing::info!(target: CONSOLE, "the coordinator is gone: node {} takes over", cluster.node);
            let _ = stop_forwarding.send(());
            if tokio::time::timeout(FORWARDING_DRAIN, forwarding).await.is_err() {
                tracing::warn!("requests passed on still under way; the API starts anyway");
            }
            let platform = member.promote(cluster, settings.webhooks.clone()).await?;
            let api = TcpListener::bind(api_addr).await?;
            Ok(Some(Promoted { platform, held, api }))
        }
    }
}

/// Says where the engine listens and what it read.
fn announce(
    platform: &Platform,
    listeners: &api::Listeners,
    settings: &Settings,
    config: Option<PathBuf>,
) -> std::io::Result<()> {
    if let Some(config) = config {
        tracing::info!(target: CONSOLE, "configuration from {}", config.display());
    }
    tracing::info!(
        target: CONSOLE,
        "CoAP on udp://{}, store: {}",
        platform.server.coap_addr(),
        settings.store.describe()
    );
    if let Some(coaps) = platform.server.coaps_addr() {
        tracing::info!(target: CONSOLE, "coaps (DTLS 1.2, pre-shared keys) on udp://{coaps}");
    }
    tracing::info!(
        target: CONSOLE,
        "HTTP API on http://{}/v1 (OpenAPI document at /v1/openapi.json)",
        listeners.api.local_addr()?
    );
    tracing::info!(
        target: CONSOLE,
        "console on http://{}/ (log in with a token of the configuration)",
        listeners.api.local_addr()?
    );
    if let Some(metrics) = &listeners.metrics {
        tracing::info!(
            target: CONSOLE,
            "metrics without a token on http://{}/metrics",
            metrics.local_addr()?
        );
    }
    if settings.api.tokens.is_empty() {
        tracing::warn!(
            target: CONSOLE,
            "no API tokens configured: every route but /healthz answers 401 (add [[tokens]] \
             to fota.toml)"
        );
    }
    Ok(())
}

fn log_event(event: &RegistrationEvent) {
    let registration = event.registration();
    let what = match event {
        RegistrationEvent::Registered(_) => "registered",
        RegistrationEvent::Updated(_) => "updated",
        RegistrationEvent::Deregistered(_) => "de-registered",
        RegistrationEvent::Expired(_) => "expired",
    };
    tracing::info!(endpoint = %registration.endpoint, address = %registration.address, "{what}");
}
