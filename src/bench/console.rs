//! `fota bench console`: what the web console's screens ask of the HTTP API at fleet scale
//! (issue 24: "fast at 1,000,000 devices"). The real engine, on a sled store in a scratch
//! directory, knows N surveyed devices (in 2,000 cells, a tenth on another version), all in
//! one group with ten test devices, and upgrades them in a task started over the group (no
//! device is registered, so every one waits: a campaign under way). The real HTTP API serves
//! it on loopback, and each request a console screen makes is sent `--reads` times, one after
//! the other on one kept-alive connection: its median answer time and the size of its body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use fota_engine::api::{self, ApiConfig, Role, Token};
use fota_engine::campaign::{TaskSpec, TaskStatus};
use fota_engine::clock::Clock;
use fota_engine::platform::{Platform, PlatformConfig};
use fota_engine::plugin::{HostConfig, PluginHost};
use fota_engine::server::ServerConfig;
use fota_engine::store::{SledStore, Store, StoreLocation};
use fota_engine::webhooks::WebhookConfig;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::fleet_catalog::fill;
use super::scratch::ScratchDir;
use super::stats::figure;
use crate::remote::Api;

/// Options of `fota bench console`.
#[derive(Args)]
pub struct ConsoleArgs {
    /// Devices in the fleet, one run per figure.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    devices: Vec<usize>,
    /// Times each request is sent.
    #[arg(long, default_value_t = 21)]
    reads: usize,
    /// Seconds: 2,000 devices, 5 reads.
    #[arg(long)]
    quick: bool,
}

/// The operator's token of the bench's API.
const TOKEN: &str = "bench-console";

/// Runs the bench for each fleet size.
pub async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    let (sizes, reads) = if args.quick {
        (vec![2_000], 5)
    } else {
        (args.devices.clone(), args.reads.max(1))
    };
    for devices in sizes {
        one_size(devices, reads).await?;
    }
    Ok(())
}

/// What the requests name: the fleet's group, its task and one device of it.
struct Fleet {
    devices: usize,
    group: String,
    task: String,
    device: String,
}

async fn one_size(devices: usize, reads: usize) -> anyhow::Result<()> {
    let scratch = ScratchDir::new(&format!("console-{devices}"));
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&scratch.path)?);
    let config = PlatformConfig {
        server: ServerConfig::loopback(),
        store: StoreLocation::Temporary,
        plugins: HostConfig::default(),
        webhooks: WebhookConfig::default(),
    };
    let host = PluginHost::new(HostConfig::default())?;
    let platform = Arc::new(Platform::start_on(host, Clock::system(), store, config).await?);
    let started = Instant::now();
    let fleet = populate(&platform, devices).await?;
    figure(
        &format!("console.{devices}.setup"),
        started.elapsed().as_secs_f64(),
        "s",
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let config = ApiConfig {
        tokens: vec![Token {
            token: TOKEN.into(),
            role: Role::Operator,
        }],
        ..ApiConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let served = tokio::spawn(api::serve(listener, platform.clone(), config, shutdown));
    let measured = tokio::task::spawn_blocking(move || screens(&base, &fleet, reads)).await?;
    let _ = stop.send(());
    served.await??;
    measured
}

/// The engine's catalog and a task under way over `devices` devices.
async fn populate(platform: &Platform, devices: usize) -> anyhow::Result<Fleet> {
    let catalog = &platform.catalog;
    let fleet = fill(catalog, devices).await?;
    let endpoints = &fleet.endpoints;
    catalog.mark_test_devices(&fleet.group, &endpoints[..10.min(devices)], true)?;
    let task = platform
        .campaigns
        .create(TaskSpec::new("bench", &fleet.group, &fleet.package))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while platform.campaigns.task(&task.id)?.status != TaskStatus::Upgrading {
        anyhow::ensure!(Instant::now() < deadline, "the task did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Fleet {
        devices,
        group: fleet.group.clone(),
        task: task.id,
        device: endpoints[devices / 2].clone(),
    })
}

/// Each screen's requests, measured and printed.
fn screens(base: &str, fleet: &Fleet, reads: usize) -> anyhow::Result<()> {
    let api = Api::new(base, Some(TOKEN.into()));
    let (group, task, middle) = (&fleet.group, &fleet.task, fleet.devices / 2);
    let first = api.get("/v1/devices?limit=50")?;
    let cursor = first["next_cursor"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let reads_of: Vec<(&str, String)> = vec![
        ("devices_page", "/v1/devices?limit=50".into()),
        (
            "devices_next_page",
            format!("/v1/devices?limit=50&cursor={cursor}"),
        ),
        (
            "devices_middle_page",
            format!("/v1/devices?limit=50&offset={middle}"),
        ),
        ("devices_of_a_cell", "/v1/devices?cell=17&limit=50".into()),
        (
            "devices_of_a_version",
            "/v1/devices?version=1.1&limit=50".into(),
        ),
        (
            "devices_of_the_group",
            format!("/v1/devices?group={group}&limit=50"),
        ),
        (
            "test_devices_of_the_group",
            format!("/v1/devices?group={group}&test=true"),
        ),
        ("device", format!("/v1/devices/{}", fleet.device)),
        ("groups", "/v1/groups".into()),
        ("group", format!("/v1/groups/{group}")),
        ("models", "/v1/models".into()),
        ("tasks", "/v1/tasks?sort=-created_at&limit=50".into()),
        ("task", format!("/v1/tasks/{task}")),
        ("task_summary", format!("/v1/tasks/{task}/summary")),
        (
            "task_devices_page",
            format!("/v1/tasks/{task}/devices?limit=50"),
        ),
        (
            "task_devices_middle_page",
            format!("/v1/tasks/{task}/devices?limit=50&offset={middle}"),
        ),
        ("statistics", "/v1/stats".into()),
        ("packages", "/v1/packages".into()),
    ];
    for (name, path) in &reads_of {
        let (time, bytes) = measure(reads, || api.get(path))?;
        print(fleet.devices, name, time, bytes);
    }
    // A change to the group: a device marked as a test device, then unmarked (each a durable
    // write of its member record and of the group).
    let one = json!({ "endpoints": [fleet.device] });
    let test_devices = format!("/v1/groups/{group}/test-devices");
    let (time, bytes) = measure(reads, || {
        api.post(&test_devices, &one)?;
        api.delete_with(&test_devices, &one)
    })?;
    print(
        fleet.devices,
        "group_mark_and_unmark_a_test_device",
        time,
        bytes,
    );
    Ok(())
}

/// The median time of `reads` calls of `request`, and the size of its last answer's JSON.
fn measure(
    reads: usize,
    mut request: impl FnMut() -> anyhow::Result<Value>,
) -> anyhow::Result<(Duration, usize)> {
    let mut times = Vec::with_capacity(reads);
    let mut bytes = 0;
    for _ in 0..reads {
        let start = Instant::now();
        let answer = request()?;
        times.push(start.elapsed());
        bytes = serde_json::to_vec(&answer)?.len();
    }
    times.sort();
    Ok((times[times.len() / 2], bytes))
}

fn print(devices: usize, name: &str, time: Duration, bytes: usize) {
    let name = format!("console.{devices}.{name}");
    figure(&format!("{name}.median"), time.as_secs_f64() * 1e3, "ms");
    figure(&format!("{name}.bytes"), bytes as f64, "bytes");
}
