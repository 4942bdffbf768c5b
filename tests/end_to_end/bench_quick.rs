//! `fota bench` kept working: the real binary runs every figure in quick mode (seconds, a small
//! fleet), exits 0, and prints `name = value unit` lines whose values are numbers, including the
//! figures BENCHMARKS.md quotes (`wire` prints its table of numbers); and the `fota sim`
//! processes a bench runs its fleet in end with it, however it ends.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::stock_device::{aiocoap_present, script};

/// Runs `fota bench ARGS` and returns its figures by name.
fn bench(args: &[&str]) -> HashMap<String, f64> {
    let output = Command::new(env!("CARGO_BIN_EXE_fota"))
        .arg("bench")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("fota runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "fota bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter_map(|line| line.split_once(" = "))
        .map(|(name, rest)| {
            let value = rest.split_whitespace().next().unwrap_or_default();
            let number = value
                .parse()
                .unwrap_or_else(|_| panic!("{name} = {value:?} is not a number:\n{stdout}"));
            (name.to_string(), number)
        })
        .collect()
}

/// Asserts every one of `names` was printed.
fn assert_figures(figures: &HashMap<String, f64>, names: &[&str]) {
    for name in names {
        assert!(figures.contains_key(*name), "no {name} in {figures:?}");
    }
}

#[test]
fn throughput_quick_prints_rate_cpu_and_latency() {
    let figures = bench(&["throughput", "--quick"]);
    assert_figures(
        &figures,
        &[
            "blocks_per_second",
            "engine_cpu_per_block",
            "engine_turnaround.median",
            "engine_turnaround.p99",
        ],
    );
    assert_eq!(figures["devices_upgraded"], figures["devices"]);
    assert!(figures["blocks_per_second"] > 0.0);
}

#[test]
fn peer_quick_compares_the_engine_with_libcoap() {
    if Command::new("coap-server-notls")
        .arg("-?")
        .output()
        .is_err()
    {
        eprintln!("coap-server-notls is not installed (Debian: libcoap3-bin): skipped");
        return;
    }
    let figures = bench(&["peer", "--quick"]);
    assert_figures(&figures, &["completion_ratio.median", "cpu_ratio.median"]);
    assert!(figures["completion_ratio.median"] > 0.0);
}

#[test]
fn scale_quick_counts_memory_and_loses_no_registration() {
    let figures = bench(&["scale", "--quick"]);
    assert_figures(
        &figures,
        &[
            "registrations_per_second",
            "bytes_per_idle_device",
            "active_transfer_growth_per_package_byte",
        ],
    );
    assert_eq!(figures["registrations_lost"], 0.0);
    assert!(figures["bytes_per_idle_device"] > 0.0);
}

#[test]
fn nbiot_quick_upgrades_every_sleeping_device_and_compares_with_the_bound() {
    let figures = bench(&["nbiot", "--quick"]);
    assert_figures(
        &figures,
        &[
            "lower_bound",
            "lower_bound_at_loss",
            "mean_round_trip",
            "time_to_finish",
            "time_to_finish_over_bound_at_loss",
            "time_to_finish_over_bound_at_loss_without_jitter",
        ],
    );
    assert_eq!(figures["devices_upgraded"], figures["devices"]);
    assert!(
        figures["lower_bound_at_loss"] > figures["lower_bound"],
        "{figures:?}"
    );
    assert!(
        figures["time_to_finish_over_bound_at_loss"] >= 1.0,
        "{figures:?}"
    );
}

#[test]
fn a_fleet_run_until_its_input_closes_ends_when_the_process_holding_it_goes() {
    // What `fota bench nbiot` starts its fleet with; no engine: the devices keep trying.
    let mut sim = Command::new(env!("CARGO_BIN_EXE_fota"))
        .args(["sim", "--devices", "2", "--server", "127.0.0.1:9"])
        .arg("--until-stdin-closes")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fota sim starts");
    let stderr = BufReader::new(sim.stderr.take().expect("piped"));
    let (said, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = said.send(line);
        }
    });
    let bound = Duration::from_secs(30);
    let deadline = Instant::now() + bound;
    let up = std::iter::from_fn(|| {
        lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    })
    .any(|line| line.contains("devices on"));
    assert!(up, "fota sim said its devices are up within {bound:?}");
    assert!(
        sim.try_wait().expect("waits").is_none(),
        "it runs while its input is open"
    );
    drop(sim.stdin.take());
    let deadline = Instant::now() + bound;
    let status = loop {
        if let Some(status) = sim.try_wait().expect("waits") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "fota sim runs {bound:?} after its input closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// The figures `fota bench stock` must print, for BENCHMARKS.md.
const STOCK_FIGURES: &[&str] = &[
    "oracle_bound",
    "time_to_finish",
    "time_to_finish_over_oracle_bound",
    "device_finished_after.median",
    "device_finished_after.p99",
    "device_finished_after.p99_over_median",
    "package_bytes_sent_again",
    "whole_package_resends",
    "engine_retransmissions",
    "cell.downlink.lost",
    "cell.uplink.max_queue_delay",
];

#[test]
fn stock_quick_upgrades_a_stock_profile_device_and_compares_with_the_oracle() {
    let figures = bench(&["stock", "--quick"]);
    assert_figures(&figures, STOCK_FIGURES);
    assert_eq!(figures["clients"], 1.0);
    let blocks = (figures["package_bytes"] / 1024.0).ceil();
    assert_eq!(figures["blocks"], blocks, "{figures:?}");
    assert!(figures["oracle_bound"] > 0.0, "{figures:?}");
}

/// The same bench with the client an external program: the aiocoap device, reassembling the
/// push in RAM with aiocoap's own Block1 code.
#[test]
fn stock_quick_upgrades_an_external_client() {
    if !aiocoap_present() {
        return;
    }
    let command = format!(
        "python3 {} --server {{host}}:{{port}} --endpoint {{endpoint}} --dir {{dir}} \
         --profile ram --max-block 1024",
        script().display()
    );
    let figures = bench(&["stock", "--quick", "--client-cmd", &command]);
    assert_figures(&figures, STOCK_FIGURES);
    assert_eq!(figures["clients"], 1.0);
}

#[test]
fn nbiot_quick_with_q_block1_pushes_in_bursts_and_compares_with_their_bound() {
    let figures = bench(&["nbiot", "--quick", "--qblock1"]);
    assert_figures(
        &figures,
        &[
            "burst_bound",
            "burst_bound_downlink",
            "burst_bound_round_trips",
            "time_to_finish_over_burst_bound",
            "burst_bound_at_loss",
            "time_to_finish_over_burst_bound_at_loss",
        ],
    );
    assert_eq!(figures["devices_upgraded"], figures["devices"]);
    assert_eq!(figures["burst_payloads_per_set"], 10.0);
    assert!(
        figures["burst_bound"] < figures["lower_bound"],
        "bursts need fewer round trips than blocks: {figures:?}"
    );
    assert!(
        figures["time_to_finish_over_burst_bound"] >= 1.0,
        "{figures:?}"
    );
    assert!(
        figures["burst_bound_at_loss"] > figures["burst_bound"],
        "lost payloads take rounds again: {figures:?}"
    );
}

#[test]
fn wire_quick_prints_a_row_of_numbers() {
    let output = Command::new(env!("CARGO_BIN_EXE_fota"))
        .args(["bench", "wire", "--quick"])
        .output()
        .expect("fota runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The table: a title, a header, one row per block size and loss rate.
    let row = stdout.lines().nth(2).expect("a row");
    let numbers: Vec<f64> = row
        .split_whitespace()
        .map(|cell| cell.parse().expect("a number"))
        .collect();
    assert_eq!(numbers.len(), 9, "{stdout}");
    assert_eq!(numbers[0], 256.0);
}

#[test]
fn campaign_quick_measures_the_scheduler_at_two_sizes() {
    let figures = bench(&["campaign", "--quick"]);
    for size in [2_000, 6_000] {
        let name = |what: &str| format!("campaign.{size}.{what}");
        let names = [
            "scheduler_cpu_per_attempt",
            "process_cpu_per_attempt",
            "heap_per_device",
            "read_task",
            "read_page_of_100",
        ]
        .map(name);
        assert_figures(&figures, &names.each_ref().map(String::as_str));
        assert!(figures[&name("heap_per_device")] > 0.0, "{figures:?}");
        assert!(
            figures[&name("scheduler_cpu_per_attempt")] > 0.0,
            "{figures:?}"
        );
    }
}

#[test]
fn console_quick_measures_every_screens_request() {
    let figures = bench(&["console", "--quick"]);
    let name = |what: &str| format!("console.2000.{what}");
    let names = [
        "devices_page.median",
        "test_devices_of_the_group.median",
        "group.bytes",
        "task_summary.median",
        "task_devices_middle_page.median",
        "group_mark_and_unmark_a_test_device.median",
    ]
    .map(name);
    assert_figures(&figures, &names.each_ref().map(String::as_str));
    // A group is answered with its counts, never its 2,000 devices; a page with 50 devices.
    assert!(figures[&name("group.bytes")] < 1_000.0, "{figures:?}");
    assert!(
        figures[&name("devices_page.bytes")] < 40_000.0,
        "{figures:?}"
    );
}
