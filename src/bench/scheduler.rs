//! `fota bench campaign`: the task scheduler alone at fleet scale (issue 20). One task over a
//! group of N devices, on a sled store in a scratch directory on disk (or `--store postgres`:
//! a throwaway PostgreSQL cluster on this machine), with attempts scripted to succeed at once
//! (no UDP, no plugin): the CPU per device attempt of the scheduler (on the thread it runs on,
//! outside the store's calls), of the store's calls (the campaign service's batched writes and
//! its reads), and of the whole process (sled's threads, or the PostgreSQL client's, included;
//! not the PostgreSQL server's), the store's writes per attempt (batches and records), the
//! heap one device takes in a task (what the service, loaded again from the store, frees when
//! dropped), the time to read the task and one page of its devices, for each N given.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use fota_engine::campaign::{
    AttemptOutcome, AttemptRequest, Attempts, Campaigns, DeviceResult, TaskSpec, TaskStatus,
};
use fota_engine::catalog::Catalog;
use fota_engine::clock::Clock;
use fota_engine::cpu_time::thread_cpu;
use fota_engine::journal::Journal;
use fota_engine::plugin::{HostConfig, PluginHost, PluginRegistry};
use fota_engine::store::throwaway_postgres::ThrowawayPostgres;
use fota_engine::store::{Batch, DEFAULT_CONNECTIONS, PostgresStore, SledStore, Store, StoreError};
use fota_engine::transfer::{PackageShelf, WireCount};

use super::fleet_catalog::{endpoint, fill};
use super::scratch::ScratchDir;
use super::stats::figure;
use super::{alloc, procfs};

/// Options of `fota bench campaign`.
#[derive(Args)]
pub struct CampaignArgs {
    /// Devices in the task, one run per figure.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100000,300000,1000000,3000000"
    )]
    devices: Vec<usize>,
    /// Devices of the task attempting at once (`pacing.max_concurrent`).
    #[arg(long, default_value_t = 1000)]
    concurrent: usize,
    /// Seconds: 2,000 and 6,000 devices.
    #[arg(long)]
    quick: bool,
    /// The store the task runs on.
    #[arg(long, value_enum, default_value_t = StoreKind::Sled)]
    store: StoreKind,
}

/// Which store a run is on.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum StoreKind {
    /// sled in a scratch directory on disk.
    Sled,
    /// A throwaway PostgreSQL cluster on this machine (its programs must be installed).
    Postgres,
}

/// The name of the thread the scheduler runs on, to read its CPU time.
const THREAD: &str = "fota-scheduler";

/// Runs the bench for each fleet size.
pub async fn run(args: CampaignArgs) -> anyhow::Result<()> {
    let sizes = if args.quick {
        vec![2_000, 6_000]
    } else {
        args.devices.clone()
    };
    alloc::enable();
    for devices in sizes {
        let concurrent = args.concurrent;
        let kind = args.store;
        let run = std::thread::Builder::new()
            .name(THREAD.into())
            .spawn(move || one_size(devices, concurrent, kind))?;
        let figures = run.join().expect("the bench thread")?;
        figures.print(devices);
    }
    Ok(())
}

/// What one run measured.
struct Figures {
    /// On the scheduler's thread, outside the store's calls.
    scheduler_cpu_per_attempt: Duration,
    /// Inside the store's calls (reads and writes, by any thread but sled's own).
    store_cpu_per_attempt: Duration,
    process_cpu_per_attempt: Duration,
    /// Batches the store applied, per attempt.
    batches_per_attempt: f64,
    /// Records the store set or removed, per attempt.
    records_per_attempt: f64,
    heap_per_device: f64,
    read_task: Duration,
    read_page: Duration,
    wall: Duration,
}

impl Figures {
    fn print(&self, devices: usize) {
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        let name = |what: &str| format!("campaign.{devices}.{what}");
        figure(
            &name("scheduler_cpu_per_attempt"),
            micros(self.scheduler_cpu_per_attempt),
            "us",
        );
        figure(
            &name("store_cpu_per_attempt"),
            micros(self.store_cpu_per_attempt),
            "us",
        );
        figure(
            &name("process_cpu_per_attempt"),
            micros(self.process_cpu_per_attempt),
            "us",
        );
        figure(
            &name("store_batches_per_attempt"),
            self.batches_per_attempt,
            "batches",
        );
        figure(
            &name("store_records_written_per_attempt"),
            self.records_per_attempt,
            "records",
        );
        figure(&name("heap_per_device"), self.heap_per_device, "bytes");
        figure(&name("read_task"), micros(self.read_task), "us");
        figure(&name("read_page_of_100"), micros(self.read_page), "us");
        figure(&name("wall"), self.wall.as_secs_f64(), "s");
    }
}

/// One task over `devices` devices, on a current-thread runtime on this (marked) thread.
fn one_size(devices: usize, concurrent: usize, kind: StoreKind) -> anyhow::Result<Figures> {
    alloc::mark_engine_thread();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let scratch = ScratchDir::new(&format!("campaign-{devices}"));
    let (store, _server): (Box<dyn Store>, _) = match kind {
        StoreKind::Sled => (Box::new(SledStore::open(&scratch.path)?), None),
        StoreKind::Postgres => {
            let server = ThrowawayPostgres::start().map_err(anyhow::Error::msg)?;
            let url = server
                .create_database("bench")
                .map_err(anyhow::Error::msg)?;
            let store = PostgresStore::open(&url, DEFAULT_CONNECTIONS)?;
            (Box::new(store), Some(server))
        }
    };
    runtime.block_on(campaign(store, devices, concurrent))
}

/// Attempts that succeed at once, after one yield (as an attempt's first await would).
struct Succeeding;

impl Attempts for Succeeding {
    fn forget_deliveries(&self, _package_id: &str, _endpoints: &[String]) {}

    fn attempt(
        &self,
        _request: AttemptRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = AttemptOutcome> + Send>> {
        Box::pin(async {
            tokio::task::yield_now().await;
            AttemptOutcome::Ran {
                result: DeviceResult::Successful,
                note: None,
                wire: WireCount::default(),
                cell: None,
            }
        })
    }
}

/// The store, with the CPU time its callers spend inside it counted (sled's own threads are
/// not callers): what the scheduler's thread spends writing and reading the store, told from
/// what it spends scheduling.
struct Metered {
    store: Box<dyn Store>,
    cpu_nanos: AtomicU64,
    batches: AtomicU64,
    records: AtomicU64,
}

impl Metered {
    /// Batches applied and records they set or removed, so far.
    fn writes(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
        )
    }

    /// CPU time spent in the store's calls so far.
    fn cpu(&self) -> Duration {
        Duration::from_nanos(self.cpu_nanos.load(Ordering::Relaxed))
    }

    fn timed<T>(&self, call: impl FnOnce(&dyn Store) -> T) -> T {
        let start = thread_cpu();
        let result = call(self.store.as_ref());
        let spent = thread_cpu().saturating_sub(start).as_nanos();
        (self.cpu_nanos).fetch_add(spent as u64, Ordering::Relaxed);
        result
    }
}

impl Store for Metered {
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.timed(|store| store.get_raw(key))
    }

    fn scan_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.timed(|store| store.scan_raw(prefix))
    }

    fn scan_after_raw(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.timed(|store| store.scan_after_raw(prefix, after, limit))
    }

    fn last_raw(&self, prefix: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        self.timed(|store| store.last_raw(prefix))
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        let records = batch.puts.len() + batch.removes.len();
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.timed(|store| store.apply(batch))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.timed(|store| store.flush())
    }
}

async fn campaign(
    store: Box<dyn Store>,
    devices: usize,
    concurrent: usize,
) -> anyhow::Result<Figures> {
    let clock = Clock::system();
    let metered = Arc::new(Metered {
        store,
        cpu_nanos: AtomicU64::new(0),
        batches: AtomicU64::new(0),
        records: AtomicU64::new(0),
    });
    let store: Arc<dyn Store> = metered.clone();
    let plugins = Arc::new(PluginRegistry::new(
        PluginHost::new(HostConfig::default())?,
    )?);
    let catalog = Catalog::open(store.clone(), PackageShelf::new(), plugins, clock)?;
    let setting_up = Instant::now();
    let fleet = fill(&catalog, devices).await?;
    drop(fleet.endpoints);
    // Before the task: a profiler attached now sees the scheduler alone.
    figure(
        &format!("campaign.{devices}.setup"),
        setting_up.elapsed().as_secs_f64(),
        "s",
    );
    let start = || {
        let journal = Journal::open(store.clone(), clock)?;
        let attempts = Arc::new(Succeeding);
        anyhow::Ok(Campaigns::start(
            store.clone(),
            catalog.clone(),
            attempts,
            clock,
            journal,
        )?)
    };
    let campaigns = start()?;
    let mut spec = TaskSpec::new("bench", &fleet.group, &fleet.package);
    spec.pacing.max_concurrent = concurrent;
    spec.pacing.max_per_cell = concurrent;

    let (scheduler_before, process_before) = cpu()?;
    let store_before = metered.cpu();
    let writes_before = metered.writes();
    let started = Instant::now();
    let task = campaigns.create(spec)?;
    loop {
        let now = campaigns.task(&task.id)?;
        if now.status == TaskStatus::Completed {
            break;
        }
        anyhow::ensure!(!now.status.is_final(), "the task ended {:?}", now.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = started.elapsed();
    let (scheduler_after, process_after) = cpu()?;
    let store_cpu = metered.cpu() - store_before;
    let writes = metered.writes();
    let per_attempt = |cpu: Duration| cpu / devices as u32;
    let count_per_attempt = |count: u64| count as f64 / devices as f64;

    // The heap a device takes in a task: what the service loaded again from the store holds,
    // as its drop frees it (all on this thread; the store's cache is not the service's).
    drop(campaigns);
    let campaigns = start()?;
    let (read_task, read_page) = reads(&campaigns, &task.id, devices)?;
    let held = alloc::engine_net_bytes();
    drop(campaigns);
    // The service's own tasks (scheduler, writer, joins) notice it went and end.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let heap_per_device = (held - alloc::engine_net_bytes()) as f64 / devices as f64;
    Ok(Figures {
        scheduler_cpu_per_attempt: per_attempt(
            (scheduler_after - scheduler_before).saturating_sub(store_cpu),
        ),
        store_cpu_per_attempt: per_attempt(store_cpu),
        process_cpu_per_attempt: per_attempt(process_after - process_before),
        batches_per_attempt: count_per_attempt(writes.0 - writes_before.0),
        records_per_attempt: count_per_attempt(writes.1 - writes_before.1),
        heap_per_device,
        read_task,
        read_page,
        wall,
    })
}

/// CPU time so far of the scheduler's thread and of the whole process.
fn cpu() -> anyhow::Result<(Duration, Duration)> {
    let scheduler = procfs::threads_times("self", |name| name == THREAD)?.cpu;
    Ok((scheduler, procfs::process_times("self")?.cpu))
}

/// The median time to read task `id`, and the page of 100 of its `devices` after the middle
/// one (a cursor's), over 21 reads.
fn reads(campaigns: &Campaigns, id: &str, devices: usize) -> anyhow::Result<(Duration, Duration)> {
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let middle = endpoint(devices / 2);
    let mut task = Vec::new();
    let mut page = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        campaigns.task(id)?;
        task.push(start.elapsed());
        let start = Instant::now();
        let window = campaigns.devices_window(id, Some(&middle), 0, false, 100)?;
        page.push(start.elapsed());
        anyhow::ensure!(window.devices.len() == 100.min(devices / 2), "a page");
    }
    Ok((median(task), median(page)))
}
