//! Plugin costs, through the real host: one policy call and one capability call (budget 2 µs),
//! and making each corpus patch in Wasm (the embedded differ plugin) against the same code
//! native (fota-delta; budget 1.5x). Also prints each corpus patch's size.
//!
//! `cargo bench -p fota-engine --bench plugins`. Run by `cargo test` (without `--bench`), it is a
//! quick check that it still works: each call measured once, one corpus pair, one round.

use criterion::{Criterion, criterion_group, criterion_main};
use fota_engine::plugin::{
    CapabilityPlugin, DeliveryMethod, Device, DifferPlugin, FirmwarePackage, HostConfig,
    PackageKind, Plugin, PluginHost, PolicyPlugin, embedded,
};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn device() -> Device {
    Device {
        endpoint: "urn:imei:867530900000001".into(),
        manufacturer: "acme".into(),
        model: "nb-2".into(),
        firmware_version: "1.0.0".into(),
        battery_level: Some(80),
        power_sources: vec![1],
        memory_free_kb: Some(512),
        signal_dbm: Some(-90),
        cell_id: Some(4711),
        delivery_method: Some(DeliveryMethod::Both),
        attempt: 0,
    }
}

fn package() -> FirmwarePackage {
    FirmwarePackage {
        kind: PackageKind::Delta,
        size: 100 << 10,
        from_version: Some("1.0.0".into()),
        to_version: "1.1.0".into(),
    }
}

fn calls(c: &mut Criterion) {
    let host = PluginHost::new(HostConfig::default()).unwrap();
    let policy: Arc<PolicyPlugin> =
        Arc::new(Plugin::load(&host, "policy", embedded::THRESHOLD_POLICY, Vec::new()).unwrap());
    let capability: CapabilityPlugin = Plugin::load(
        &host,
        "capability",
        embedded::GENERIC_CAPABILITY,
        Vec::new(),
    )
    .unwrap();
    let (d, p) = (device(), package());
    c.bench_function("policy call", |b| {
        b.iter(|| {
            policy
                .decide_blocking(black_box(&d), black_box(&p))
                .unwrap()
        })
    });
    c.bench_function("capability call", |b| {
        b.iter(|| {
            capability
                .check_blocking(black_box(&d), black_box(&p))
                .unwrap()
        })
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    c.bench_function("policy call, async (spawn_blocking)", |b| {
        b.iter(|| {
            runtime
                .block_on(policy.decide(d.clone(), p.clone()))
                .unwrap()
        })
    });
    let batch: Vec<_> = (0..100).map(|_| (d.clone(), p.clone())).collect();
    c.bench_function("policy calls, async batch of 100", |b| {
        b.iter(|| runtime.block_on(policy.decide_all(batch.clone())).unwrap())
    });
}

fn corpus_pair(name: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/firmware");
    let read = |ext: &str| std::fs::read(dir.join(format!("{name}.{ext}"))).expect("corpus file");
    (read("old"), read("new"))
}

/// Whether this is a real benchmark run (`cargo bench`) rather than `cargo test`'s check.
fn benchmarking() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

fn patches(c: &mut Criterion) {
    let host = PluginHost::new(HostConfig::default()).unwrap();
    let differ: DifferPlugin = Plugin::load(&host, "bsdiff", embedded::BSDIFF, Vec::new()).unwrap();
    let pairs: &[&str] = if benchmarking() {
        &["programmer", "pybv11", "esp8266"]
    } else {
        &["programmer"]
    };
    for &name in pairs {
        let (old, new) = corpus_pair(name);
        let patch = differ.make_patch_blocking(&old, &new).unwrap().unwrap();
        assert_eq!(
            patch,
            fota_delta::make_patch(&old, &new),
            "Wasm and native patches differ"
        );
        let ram = fota_delta::applier_ram(&patch).unwrap();
        println!(
            "patch size {name}: {} bytes = {:.2} % of {} bytes; device RAM to apply: {} bytes",
            patch.len(),
            100.0 * patch.len() as f64 / new.len() as f64,
            new.len(),
            ram
        );
        let rounds = match (benchmarking(), new.len() > 100_000) {
            (false, _) => 1,
            (true, true) => 9,
            (true, false) => 41,
        };
        let (wasm, native, ratio) = interleaved(&differ, &old, &new, rounds);
        println!(
            "make patch {name}, {rounds} alternating rounds: median wasm {wasm:.2?}, native {native:.2?}, median ratio {ratio:.2}"
        );
        let mut group = c.benchmark_group(format!("make patch {name}"));
        if new.len() > 100_000 {
            group
                .sample_size(10)
                .measurement_time(Duration::from_secs(20));
        }
        group.bench_function("wasm", |b| {
            b.iter(|| differ.make_patch_blocking(&old, &new).unwrap().unwrap())
        });
        group.bench_function("native", |b| b.iter(|| fota_delta::make_patch(&old, &new)));
        group.finish();
    }
}

/// Times `rounds` Wasm and native patches of one pair, alternating so that both see the same
/// machine load; returns the medians and the median of the per-round ratios.
fn interleaved(
    differ: &DifferPlugin,
    old: &[u8],
    new: &[u8],
    rounds: usize,
) -> (Duration, Duration, f64) {
    let (mut wasm, mut native, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = std::time::Instant::now();
        black_box(differ.make_patch_blocking(old, new).unwrap().unwrap());
        let w = started.elapsed();
        let started = std::time::Instant::now();
        black_box(fota_delta::make_patch(old, new));
        let n = started.elapsed();
        wasm.push(w);
        native.push(n);
        ratios.push(w.as_secs_f64() / n.as_secs_f64());
    }
    wasm.sort();
    native.sort();
    ratios.sort_by(f64::total_cmp);
    (wasm[rounds / 2], native[rounds / 2], ratios[rounds / 2])
}

criterion_group!(benches, calls, patches);
criterion_main!(benches);
