//! `fota bench cluster`: one, two and three `fota serve` nodes (separate processes) on one
//! throwaway PostgreSQL, all on this machine, so the nodes, the database and the load share
//! its cores. For each node count: blocks per second of a task upgrading a fleet of reference
//! devices spread evenly over the nodes (as a balancer spreads them; the devices run in this
//! process), the database's row writes per device attempt over that task, then a registration
//! storm spread the same way: registrations per second across the nodes, and how long until
//! the database holds every device's record and ownership (what each node's followers of its
//! registrations write).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Args;
use fota_device::fleet::{Fleet, FleetSpec};
use fota_engine::store::throwaway_postgres::ThrowawayPostgres;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

use super::harness::{image, model};
use super::procfs;
use super::registrar::Registrar;
use super::scratch::ScratchDir;
use super::stats::figure;

/// Options of `fota bench cluster`.
#[derive(Args)]
pub struct ClusterArgs {
    /// Node counts to measure, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    nodes: Vec<usize>,
    /// Devices the task upgrades.
    #[arg(long, default_value_t = 600)]
    devices: usize,
    /// Package size in KiB.
    #[arg(long, default_value_t = 32)]
    package_kib: usize,
    /// Registrations of the storm.
    #[arg(long, default_value_t = 30_000)]
    registrations: usize,
}

/// The operator token of the bench's nodes.
const TOKEN: &str = "bench-cluster-operator";
/// The cluster's secret.
const SECRET: &str = "bench-cluster-secret-0123456789";
/// Every load comes from one loopback address: no per-source limits (as
/// `EdgeLimits::loopback`), and registrations that never answer a survey are kept.
const LOOPBACK_EDGE: &str = "[edge]\nregister_burst = 4294967295\n\
    registers_per_second = 1e300\nsurveys_per_source = 1000000000\n\
    patient_surveys_per_source = 1000000000\nunproven_ttl_secs = 1000000000\n";

/// How long a database backend may keep its row counts before it reports them
/// (PostgreSQL's PGSTAT_IDLE_INTERVAL, 10 s): waited out before each reading.
const STATS_SETTLE: Duration = Duration::from_secs(11);

/// Longest a node may take to start, and a task to finish.
const BOUND: Duration = Duration::from_secs(600);

/// Runs each node count in turn.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let postgres = ThrowawayPostgres::start().map_err(anyhow::Error::msg)?;
    println!(
        "cluster: {} devices take a {} KiB package, then {} registrations; nodes {:?}; \
         PostgreSQL, the nodes and the load on this machine's {} cores",
        args.devices,
        args.package_kib,
        args.registrations,
        args.nodes,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    for &nodes in &args.nodes {
        let url = postgres
            .create_database(&format!("bench{nodes}"))
            .map_err(anyhow::Error::msg)?;
        measure(&args, nodes, &url).await?;
    }
    Ok(())
}

/// One node count: the task, the writes, the storm.
async fn measure(args: &ClusterArgs, count: usize, url: &str) -> anyhow::Result<()> {
    let scratch = ScratchDir::new(&format!("cluster{count}"));
    let mut nodes = Vec::new();
    for index in 1..=count {
        nodes.push(Node::start(&scratch, url, index).await?);
    }
    let api = nodes[0].http.clone();
    // Devices join it as they are surveyed, on whichever node.
    let body = json!({ "name": "bench", "vendor": "Acme", "model": "NB-1", "auto_join": true });
    let group = call(&api, "POST", "/v1/groups", Some(body)).await?;
    let group_path = format!("/v1/groups/{}", group["id"].as_str().unwrap_or_default());
    let fleet = spread_fleet(&nodes, args.devices).await?;
    wait_until(&api, &group_path, |group| {
        group["device_count"] == args.devices
    })
    .await?;
    let writes_before = row_writes(url).await?;
    let cpu_before = nodes_cpu(&nodes)?;
    let started = Instant::now();
    let task = upgrade_all(&api, &group["id"], args).await?;
    wait_until(&api, &task, |task| task["status"] == "completed").await?;
    let elapsed = started.elapsed().as_secs_f64();
    let writes = row_writes(url).await? - writes_before;
    let cpu = nodes_cpu(&nodes)? - cpu_before;
    let attempts = attempts_of(&api, &task).await?;
    drop(fleet);
    // The engine's default block (1 KiB) and the devices' largest.
    let blocks = args.devices * (args.package_kib * 1024).div_ceil(1024);
    let name = |figure: &str| format!("nodes_{count}_{figure}");
    figure(&name("blocks_per_second"), blocks as f64 / elapsed, "/s");
    figure(&name("task_seconds"), elapsed, "s");
    figure(&name("device_attempts"), attempts as f64, "");
    figure(
        &name("row_writes_per_attempt"),
        writes as f64 / attempts.max(1) as f64,
        "",
    );
    figure(&name("node_cpu_seconds_in_task"), cpu, "s");

    let registrar = Registrar::bind(64, 16).await?;
    let started = Instant::now();
    let storms = nodes.iter().enumerate().map(|(index, node)| {
        let share = share(args.registrations, count, index);
        registrar.register_all(node.coap, share)
    });
    let reports = futures_util::future::join_all(storms).await;
    let elapsed = started.elapsed().as_secs_f64();
    let created: usize = reports.iter().map(|report| report.created).sum();
    let lost: usize = reports
        .iter()
        .map(|report| report.refused + report.unanswered)
        .sum();
    figure(
        &name("registrations_per_second"),
        created as f64 / elapsed,
        "/s",
    );
    figure(&name("registrations_lost"), lost as f64, "");
    // The storm's endpoints start where the fleet's do: each device once.
    let devices = created.max(args.devices) as i64;
    for (what, prefix) in [("devices", "dev/"), ("owners", "owner/")] {
        let after = recorded(url, prefix, devices, started).await?;
        figure(
            &name(&format!("registrations_{what}_recorded_after")),
            after,
            "s",
        );
    }
    Ok(())
}

/// Seconds from `started` until the database at `url` holds `devices` records under `prefix`
/// (what the nodes' followers of their registrations write), within [`BOUND`].
async fn recorded(url: &str, prefix: &str, devices: i64, started: Instant) -> anyhow::Result<f64> {
    let deadline = Instant::now() + BOUND;
    loop {
        let held = records_under(url, prefix).await?;
        if held >= devices {
            return Ok(started.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{held} of {devices} records under {prefix} after {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records under `prefix` in the database at `url`.
async fn records_under(url: &str, prefix: &str) -> anyhow::Result<i64> {
    let (url, prefix) = (url.to_string(), prefix.as_bytes().to_vec());
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        // Keys are UTF-8: none holds 0xFF, so every key under the prefix sorts before this.
        let end = [prefix.as_slice(), &[0xFF]].concat();
        let row = client.query_one(
            "SELECT count(*) FROM records WHERE key >= $1 AND key < $2",
            &[&prefix, &end],
        )?;
        Ok(row.get::<_, i64>(0))
    })
    .await?
}

/// The devices `index` of `count` nodes takes of `total`: an even split, from `first`.
fn share(total: usize, count: usize, index: usize) -> std::ops::Range<usize> {
    let each = total.div_ceil(count);
    let first = (index * each).min(total);
    first..(first + each).min(total)
}

/// A fleet of `devices` reference devices, an even share registered to each node.
async fn spread_fleet(nodes: &[Node], devices: usize) -> anyhow::Result<Vec<Fleet>> {
    let mut fleets = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let devices = share(devices, nodes.len(), index);
        let mut spec = FleetSpec::uniform(devices.len(), node.coap, model());
        spec.first_index = devices.start;
        fleets.push(Fleet::start(&spec).await?);
    }
    Ok(fleets)
}

/// A task upgrading every device of `group` to a signed full package; its path.
async fn upgrade_all(api: &str, group: &Value, args: &ClusterArgs) -> anyhow::Result<String> {
    let query = "vendor=Acme&model=NB-1&version=2.0";
    let firmware = upload(
        api,
        &format!("/v1/firmware?{query}"),
        image(args.package_kib),
    )
    .await?;
    let body = json!({ "kind": "full", "to_firmware": firmware["id"], "format": "signed" });
    let package = call(api, "POST", "/v1/packages", Some(body)).await?;
    let spec = json!({
        "name": "across nodes", "group_id": group, "package_id": package["id"],
        "retries": 5, "retry_interval_secs": 1,
    });
    let task = call(api, "POST", "/v1/tasks", Some(spec)).await?;
    Ok(format!(
        "/v1/tasks/{}",
        task["id"].as_str().unwrap_or_default()
    ))
}

/// Attempts the task made over its devices (each device's, failed ones included), page by
/// page.
async fn attempts_of(api: &str, task: &str) -> anyhow::Result<u64> {
    let (mut attempts, mut offset) = (0, 0);
    loop {
        let path = format!("{task}/devices?limit=1000&offset={offset}");
        let page = call(api, "GET", &path, None).await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return Ok(attempts);
        }
        attempts += items
            .iter()
            .filter_map(|d| d["attempts"].as_u64())
            .sum::<u64>();
        offset += items.len();
    }
}

/// Rows inserted, updated and deleted in the database at `url` so far (once every
/// connection reported them).
async fn row_writes(url: &str) -> anyhow::Result<i64> {
    tokio::time::sleep(STATS_SETTLE).await;
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        // The statistics are a snapshot per transaction; a fresh one each time.
        client.execute("SELECT pg_stat_clear_snapshot()", &[])?;
        let row = client.query_one(
            "SELECT (tup_inserted + tup_updated + tup_deleted)::bigint \
             FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )?;
        Ok(row.get::<_, i64>(0))
    })
    .await?
}

/// CPU seconds every node used so far.
fn nodes_cpu(nodes: &[Node]) -> anyhow::Result<f64> {
    let mut seconds = 0.0;
    for node in nodes {
        let pid = node.child.id().unwrap_or_default().to_string();
        seconds += procfs::process_times(&pid)?.cpu.as_secs_f64();
    }
    Ok(seconds)
}

/// Polls `path` on the API until `check` holds, within [`BOUND`].
async fn wait_until(api: &str, path: &str, check: impl Fn(&Value) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + BOUND;
    loop {
        let answer = call(api, "GET", path, None).await?;
        if check(&answer) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{path}: not within {BOUND:?}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `method path` on the API with a JSON body (or none); its JSON.
async fn call(api: &str, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let (url, method) = (format!("{api}{path}"), method.to_string());
    tokio::task::spawn_blocking(move || {
        let request = ureq::request(&method, &url).set("Authorization", &format!("Bearer {TOKEN}"));
        let answer = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        Ok(answer?.into_json()?)
    })
    .await?
}

/// POSTs `bytes` to `path`; the JSON answer.
async fn upload(api: &str, path: &str, bytes: Vec<u8>) -> anyhow::Result<Value> {
    let url = format!("{api}{path}");
    tokio::task::spawn_blocking(move || {
        let answer = ureq::post(&url)
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .set("Content-Type", "application/octet-stream")
            .send_bytes(&bytes)?;
        Ok(answer.into_json()?)
    })
    .await?
}

/// A `fota serve` node of the bench's cluster.
struct Node {
    child: Child,
    coap: SocketAddr,
    /// `http://host:port` of its API (a member passes it on to the coordinator's).
    http: String,
}

impl Node {
    /// Starts node `index` (the first coordinates) on the database at `url`.
    async fn start(scratch: &ScratchDir, url: &str, index: usize) -> anyhow::Result<Node> {
        let dir = scratch.path.join(format!("n{index}"));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("fota.toml");
        std::fs::write(
            &config,
            format!(
                "coap_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\nstore = {url:?}\n\
                 [cluster]\nnode = \"n{index}\"\naddr = \"127.0.0.1:0\"\nsecret = \"{SECRET}\"\n\
                 {LOOPBACK_EDGE}[[tokens]]\ntoken = \"{TOKEN}\"\nrole = \"operator\"\n"
            ),
        )?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--loopback-timers", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let coap = after(&mut lines, "CoAP on udp://", ",").await?.parse()?;
        let http = match index {
            1 => after(&mut lines, "HTTP API on ", "/v1").await?,
            _ => after(&mut lines, "HTTP API on ", " passed on").await?,
        };
        // The rest of its log is not read: it goes nowhere rather than fill a pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Node { child, coap, http })
    }
}

/// The text after `start` and before `end` in the first line holding `start`.
async fn after(
    lines: &mut Lines<BufReader<ChildStderr>>,
    start: &str,
    end: &str,
) -> anyhow::Result<String> {
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(at) = line.find(start) {
                let rest = &line[at + start.len()..];
                let stop = rest.find(end).unwrap_or(rest.len());
                return Ok(rest[..stop].to_string());
            }
        }
        anyhow::bail!("the node exited before printing {start:?}")
    };
    tokio::time::timeout(BOUND, read).await?
}
