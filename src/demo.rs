//! `fota demo`: the whole platform on loopback with a simulated fleet: two module models, some
//! devices with a low battery or a weak signal (they wait, and recover as the simulation goes
//! on), some behind lossy links; two firmware versions per model, delta packages made by the
//! bsdiff plugin, one upgrade task per model with live progress, and the statistics at the end.
//! The HTTP API and the web console are served the whole time (and after the end with
//! `--keep-serving`), so the demo can be followed in a browser, or explored with curl or the
//! `fota` client commands, while it runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use fota_device::fleet::{Fleet, FleetSpec, ModelSpec, wait_registered, wait_surveyed};
use fota_engine::api::{self, ApiConfig, Role, Token};
use fota_engine::campaign::{Pacing, Task, TaskSpec, TaskStatus};
use fota_engine::catalog::PackageFormat;
use fota_engine::platform::{Platform, PlatformConfig};
use fota_engine::plugin::{Binding, HostConfig, PluginKind, embedded};
use fota_engine::server::ServerConfig;
use fota_engine::store::StoreLocation;
use fota_engine::webhooks::WebhookConfig;
use fota_impair::Impairment;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::stop_signals::StopSignals;
use tokio::net::TcpListener;

/// Options of `fota demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Directory with the `programmer` and `pybv11` firmware pairs (`NAME.old`, `NAME.new`).
    #[arg(long, default_value = "../shared/corpus/firmware")]
    corpus: PathBuf,
    /// Share of devices behind a link losing 10 % of datagrams.
    #[arg(long, default_value_t = 0.1)]
    lossy_share: f64,
    /// TCP address of the HTTP API (any free port when this one is taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Bearer token of the HTTP API (operator role).
    #[arg(long, default_value = "demo")]
    token: String,
    /// After the statistics, keep the engine and its HTTP API up until SIGINT or SIGTERM.
    #[arg(long)]
    keep_serving: bool,
}

/// One module model of the demo and its two firmware images.
struct Model {
    name: &'static str,
    old: Vec<u8>,
    new: Vec<u8>,
}

/// Runs the demo; fails unless both tasks complete.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let models = [
        model("NB-IoT-A", &args.corpus, "programmer", 3),
        model("NB-IoT-B", &args.corpus, "pybv11", 5),
    ];
    let platform = Arc::new(start_platform().await?);
    let http = serve_api(&platform, &args).await?;
    println!("engine: CoAP on udp://{}", platform.server.coap_addr());
    println!(
        "HTTP API on http://{http}/v1, token {:?}; try: curl -H 'Authorization: Bearer {}' \
         http://{http}/v1/tasks",
        args.token, args.token
    );
    println!(
        "console on http://{http}/ (log in with the token {:?}): the campaign shows live \
         under Upgrade tasks",
        args.token
    );
    let fleet = start_fleet(&platform, &models, &args).await?;
    println!("fleet: {} devices registered and surveyed", fleet.len());
    let tasks = create_tasks(&platform, &models).await?;
    let recovery = tokio::spawn(recover_over_time(fleet.clone()));
    let started = Instant::now();
    follow(&platform, &tasks).await;
    recovery.abort();
    print_statistics(&platform, started.elapsed())?;
    if args.keep_serving {
        // Listening before saying so: a signal sent on reading the line is not lost.
        let mut stop = StopSignals::listen()?;
        println!("the HTTP API stays up on http://{http}/v1 until SIGINT or SIGTERM");
        stop.stopped().await;
    }
    for task in &tasks {
        let task = platform.campaigns.task(&task.id)?;
        anyhow::ensure!(
            task.status == TaskStatus::Completed,
            "task {} ended {:?}",
            task.spec.name,
            task.status
        );
    }
    Ok(())
}

/// Serves the HTTP API for the rest of the process; returns its address.
async fn serve_api(platform: &Arc<Platform>, args: &DemoArgs) -> anyhow::Result<SocketAddr> {
    let listener = match TcpListener::bind(args.http_addr).await {
        Ok(listener) => listener,
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            TcpListener::bind(SocketAddr::new(args.http_addr.ip(), 0)).await?
        }
        Err(error) => return Err(error.into()),
    };
    let addr = listener.local_addr()?;
    let config = ApiConfig {
        tokens: vec![Token {
            token: args.token.clone(),
            role: Role::Operator,
        }],
        ..ApiConfig::default()
    };
    let forever = std::future::pending::<()>();
    tokio::spawn(api::serve(listener, platform.clone(), config, forever));
    Ok(addr)
}

/// The corpus pair `name` if present, otherwise two generated images.
fn model(name: &'static str, corpus: &Path, pair: &str, seed: u8) -> Model {
    let read = |suffix: &str| std::fs::read(corpus.join(format!("{pair}.{suffix}"))).ok();
    let (old, new) = match (read("old"), read("new")) {
        (Some(old), Some(new)) => (old, new),
        _ => {
            // The new image differs from the old in one byte of every 97.
            let make = |salt: u8| -> Vec<u8> {
                (0..24_000u32)
                    .map(|i| {
                        let changed = if i % 97 == 0 { salt } else { 0 };
                        (i as u8).wrapping_mul(seed) ^ (i >> 7) as u8 ^ changed
                    })
                    .collect()
            };
            (make(0), make(1))
        }
    };
    Model { name, old, new }
}

/// A platform on loopback; the policy asks a waiting device again after 2 s.
async fn start_platform() -> anyhow::Result<Platform> {
    let platform = Platform::start(PlatformConfig {
        server: ServerConfig::loopback(),
        store: StoreLocation::Temporary,
        plugins: HostConfig::default(),
        webhooks: WebhookConfig::default(),
    })
    .await?;
    let settings = vec![("retry-seconds".to_string(), "2".to_string())];
    platform.plugins.install(
        PluginKind::Policy,
        Binding::Default,
        embedded::THRESHOLD_POLICY_NAME,
        embedded::THRESHOLD_POLICY,
        settings,
    )?;
    let settings = vec![
        ("block-size".to_string(), "128".to_string()),
        ("resume".to_string(), "true".to_string()),
    ];
    platform.plugins.install(
        PluginKind::Capability,
        Binding::Default,
        embedded::GENERIC_CAPABILITY_NAME,
        embedded::GENERIC_CAPABILITY,
        settings,
    )?;
    Ok(platform)
}

/// Starts the fleet, every device behind its own link (a share of them lossy), and waits until
/// the catalog knows every device's model.
async fn start_fleet(
    platform: &Platform,
    models: &[Model],
    args: &DemoArgs,
) -> anyhow::Result<Arc<Fleet>> {
    let specs: Vec<ModelSpec> = models
        .iter()
        .map(|m| ModelSpec {
            manufacturer: "Acme".into(),
            model: m.name.into(),
            image: m.old.clone(),
            version: "0.8.0".into(),
        })
        .collect();
    let mut spec = FleetSpec::uniform(args.devices, platform.server.coap_addr(), specs[0].clone());
    spec.models = specs;
    spec.low_battery_share = 0.05;
    spec.weak_signal_share = 0.05;
    spec.link = Some(Impairment::none());
    spec.trusted_key = Some(platform.catalog.public_key());
    let registrations = platform.server.registry.subscribe();
    let fleet = Fleet::start(&spec).await?;
    for (i, link) in fleet.links.iter().enumerate() {
        if (i as f64 / fleet.len() as f64) < args.lossy_share {
            link.set_impairment(Impairment::lossy(0.1));
        }
    }
    let registered = wait_registered(registrations, fleet.len(), Duration::from_secs(120)).await;
    anyhow::ensure!(registered, "devices did not register within two minutes");
    let surveyed = wait_surveyed(&platform.catalog, fleet.len(), Duration::from_secs(120)).await;
    anyhow::ensure!(surveyed, "devices were not surveyed within two minutes");
    Ok(Arc::new(fleet))
}

/// Per model: both firmware versions, a delta package, a group and a task.
async fn create_tasks(platform: &Platform, models: &[Model]) -> anyhow::Result<Vec<Task>> {
    let catalog = &platform.catalog;
    let mut tasks = Vec::new();
    for model in models {
        let old = catalog.add_firmware("Acme", model.name, "0.8.0", &model.old)?;
        let new = catalog.add_firmware("Acme", model.name, "0.9.0", &model.new)?;
        // The simulated modules verify the platform's signed container.
        catalog.set_package_format("Acme", model.name, PackageFormat::Signed)?;
        let delta = catalog.create_delta_package(&old.id, &new.id, None).await?;
        println!(
            "{}: firmware {} bytes, delta package {} bytes ({:.1} %)",
            model.name,
            model.new.len(),
            delta.size,
            100.0 * delta.size as f64 / model.new.len() as f64
        );
        let group = catalog.create_group(&format!("{} fleet", model.name), "Acme", model.name)?;
        let members: Vec<String> = catalog
            .devices()?
            .into_iter()
            .filter(|d| d.model.as_deref() == Some(model.name))
            .map(|d| d.endpoint)
            .collect();
        catalog.add_to_group(&group.id, &members)?;
        let name = format!("{} 0.8.0 → 0.9.0", model.name);
        tasks.push(platform.campaigns.create(TaskSpec {
            retries: 5,
            retry_interval_secs: 2,
            pacing: Pacing {
                max_concurrent: 300,
                max_per_cell: 40,
            },
            max_failure_rate: Some(0.5),
            failure_sample: 50,
            ..TaskSpec::new(&name, &group.id, &delta.id)
        })?);
    }
    Ok(tasks)
}

/// The simulation goes on: batteries charge and weak signals improve a little every second,
/// so devices the policy held back are upgraded later.
async fn recover_over_time(fleet: Arc<Fleet>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticks.tick().await;
        for device in &fleet.devices {
            device.with_system(|s| {
                s.battery = s.battery.saturating_add(3).min(100);
                s.signal_dbm = (s.signal_dbm + 3).min(-70);
            });
        }
    }
}

/// One progress bar per task until every task is final.
async fn follow(platform: &Platform, tasks: &[Task]) {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>22} [{bar:32}] {pos}/{len} {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    let progress: Vec<ProgressBar> = tasks
        .iter()
        .map(|task| {
            let bar = bars.add(ProgressBar::new(0).with_style(style.clone()));
            bar.set_prefix(task.spec.name.clone());
            bar
        })
        .collect();
    loop {
        let mut all_final = true;
        for (task, bar) in tasks.iter().zip(&progress) {
            let Ok(task) = platform.campaigns.task(&task.id) else {
                continue;
            };
            let devices = platform.campaigns.devices(&task.id).unwrap_or_default();
            let done = devices.iter().filter(|d| d.is_done()).count();
            let active = devices
                .iter()
                .filter(|d| !d.is_done() && d.attempts > 0)
                .count();
            bar.set_length(devices.len() as u64);
            bar.set_position(done as u64);
            bar.set_message(format!("{:?}, {active} in progress", task.status));
            all_final &= task.status.is_final();
        }
        if all_final {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for bar in progress {
        bar.finish();
    }
}

fn print_statistics(platform: &Platform, elapsed: Duration) -> anyhow::Result<()> {
    let statistics = platform.campaigns.statistics();
    println!();
    println!(
        "{:<12} {:>8} {:>9} {:>8} {:>12} {:>10} {:>10} {:>13}",
        "model",
        "devices",
        "upgraded",
        "failed",
        "bytes sent",
        "re-sent",
        "wire/B",
        "not installed"
    );
    for model in &statistics.models {
        let c = &model.counters;
        println!(
            "{:<12} {:>8} {:>9} {:>8} {:>12} {:>10} {:>10.3} {:>13}",
            model.model,
            c.devices,
            c.successes,
            c.failures,
            c.bytes_first,
            c.bytes_resent,
            c.wire_bytes as f64 / c.bytes_first.max(1) as f64,
            c.downloads_not_installed
        );
    }
    let coap = platform.server.endpoint.stats();
    println!();
    println!("elapsed: {:.1} s", elapsed.as_secs_f64());
    println!(
        "engine CoAP: {} datagrams sent, {} retransmissions, {} timeouts",
        coap.datagrams_sent, coap.retransmissions, coap.timeouts
    );
    Ok(())
}
