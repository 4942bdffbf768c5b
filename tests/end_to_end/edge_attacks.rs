//! The hardened edge, attacked as a stranger would attack it (issue 17): `fota serve` with its
//! default limits (and a small duplicate-cache budget, so the flood shows it), a `fota sim`
//! fleet upgrading through a task beside it, and `fota attack --quick` replaying the attack set
//! from other loopback addresses. Each attack must fail: a new device is still surveyed during
//! each, guessed registration locations are refused, floods are refused or cut, package
//! requests amplify nothing, forged log lines are refused, the duplicate cache stays in its
//! budget, unauthenticated uploads are answered before their body, half-sent request heads
//! are closed, and on coaps (issue 27) ClientHello floods, handshakes left past the cookie and
//! garbage keep no more than the handshake limit and a new handshake is still served; and the
//! fleet registers, is surveyed and upgrades as before.

use std::collections::BTreeMap;
use std::process::Command;

use crate::support::image;
use crate::support::process::FotaProcess;
use crate::support::served::{Served, scratch, serve_with};
use serde_json::json;

/// Devices of the fleet beside the attacks.
const DEVICES: usize = 20;

/// The figures `fota attack` printed, by `attack.NAME.FIGURE`.
fn figures(stdout: &str) -> BTreeMap<String, f64> {
    stdout
        .lines()
        .filter_map(|line| line.split_once(" = "))
        .filter(|(name, _)| name.starts_with("attack."))
        .filter_map(|(name, value)| Some((name.to_string(), value.trim().parse().ok()?)))
        .collect()
}

/// Starts the fleet on version 1.0 of `old` and a task taking it to 2.0; returns the fleet
/// and the task id once every device is surveyed.
fn fleet_and_task(engine: &Served, dir: &std::path::Path) -> (FotaProcess, String) {
    let old = image(20_000, 3);
    let mut new = old.clone();
    new[5_000..5_400].fill(0xA5);
    let old_path = dir.join("old.bin");
    std::fs::write(&old_path, &old).unwrap();
    let fleet = FotaProcess::spawn(
        [
            "sim".as_ref(),
            "--server".as_ref(),
            engine.coap.to_string().as_ref(),
            "--devices".as_ref(),
            DEVICES.to_string().as_ref(),
            "--model".as_ref(),
            "NB-A".as_ref(),
            "--image".as_ref(),
            old_path.as_os_str(),
        ],
        &[],
    );
    let path = "/v1/devices?vendor=Acme&model=NB-A&limit=1";
    engine.wait_for(path, "the fleet surveyed", |page| page["total"] == DEVICES);
    let query = [("vendor", "Acme"), ("model", "NB-A")];
    let up = |version: &str, bytes: &[u8]| {
        let query = [query[0], query[1], ("version", version)];
        engine.upload("/v1/firmware", &query, bytes)["id"].clone()
    };
    let (from, to) = (up("0.8.0", &old), up("0.9.0", &new));
    let package = engine.ok(
        "POST",
        "/v1/packages",
        Some(&json!({ "kind": "delta", "from_firmware": from, "to_firmware": to, "format": "signed" })),
    );
    let group = engine.ok(
        "POST",
        "/v1/groups",
        Some(&json!({ "name": "fleet", "vendor": "Acme", "model": "NB-A" })),
    );
    let devices = engine.get("/v1/devices?vendor=Acme&model=NB-A&limit=1000");
    let endpoints: Vec<&serde_json::Value> = devices["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["endpoint"])
        .collect();
    let members = json!({ "endpoints": endpoints });
    engine.ok(
        "POST",
        &format!("/v1/groups/{}/devices", group["id"].as_str().unwrap()),
        Some(&members),
    );
    let task = engine.ok(
        "POST",
        "/v1/tasks",
        Some(&json!({
            "name": "beside the attacks",
            "group_id": group["id"],
            "package_id": package["id"],
            "retries": 3,
            "retry_interval_secs": 1,
        })),
    );
    (fleet, task["id"].as_str().unwrap().to_string())
}

#[test]
fn every_attack_fails_while_a_fleet_beside_it_upgrades() {
    let dir = scratch("edge-attacks");
    // Half-sent heads are closed after 2 s instead of the default 10: the same cut, sooner.
    let config = "http_header_timeout_secs = 2\n[edge]\ndedup_cache_bytes = 65536\n\
                  [coaps]\naddr = \"127.0.0.1:0\"\nmax_handshakes = 64\n";
    let engine = serve_with(&dir, &[], config);
    let (fleet, task) = fleet_and_task(&engine, &dir);

    let output = Command::new(env!("CARGO_BIN_EXE_fota"))
        .args(["attack", "--quick", "--coap", &engine.coap.to_string()])
        .args(["--http", engine.http.trim_start_matches("http://")])
        .args(["--pid", &engine.process.child.id().to_string()])
        .args(["--coaps", &engine.coaps.expect("coaps is on").to_string()])
        .output()
        .expect("fota attack runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "fota attack failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{stdout}");
    let figure = |name: &str| {
        *figures(&stdout)
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in:\n{stdout}"))
    };

    // 1: onboarding is not starved; a new device is surveyed during every attack.
    for attack in [
        "baseline",
        "starve_surveys",
        "take_over",
        "registration_flood",
        "amplification",
    ] {
        let took = figure(&format!("attack.{attack}.probe_survey_ms"));
        assert!(
            took < 30_000.0,
            "{attack}: a new device surveyed after {took} ms"
        );
    }
    // 2: locations cannot be guessed.
    assert_eq!(figure("attack.take_over.accepted"), 0.0);
    // 4: 430 object links are refused; the rest stop at the source's burst.
    assert!(figure("attack.registration_flood.created") <= 200.0);
    // 5: a package request from a stranger amplifies nothing; a Register little.
    assert!(figure("attack.amplification.package_ratio") <= 1.0);
    assert!(figure("attack.amplification.register_ratio") < 8.0);
    // 6: endpoint names that would forge a log line are refused.
    assert_eq!(
        figure("attack.log_injection.refused"),
        figure("attack.log_injection.sent")
    );
    // 3: unauthenticated uploads are answered before their body; half-sent heads are closed.
    assert_eq!(figure("attack.http_unauthenticated.early_401"), 16.0);
    assert_eq!(figure("attack.http_slow_heads.open"), 0.0);

    // 7: the duplicate cache stayed in its budget: it dropped entries, and says so.
    let evicted = engine.metric("fota_coap_dedup_evicted_total");
    assert!(evicted.expect("the eviction counter") > 0);
    let refused = engine.metric("fota_edge_defences_total{defence=\"registers_refused\"}");
    assert!(refused.is_some());

    // 8: on coaps, a new handshake is served after each attack; handshakes left past the
    // cookie beyond the limit gave way to newer ones, and no stranger got a session.
    for attack in ["dtls_hello_flood", "dtls_half_open", "dtls_garbage"] {
        let took = figure(&format!("attack.{attack}.probe_handshake_ms"));
        assert!(took.is_finite(), "{attack}: no handshake served");
    }
    let dtls = |event: &str| {
        let name = format!("fota_dtls_events_total{{event=\"{event}\"}}");
        engine.metric(&name).unwrap_or_else(|| panic!("no {name}"))
    };
    assert!(dtls("handshakes_evicted") > 0);
    assert_eq!(dtls("handshakes"), 0);
    let held = engine
        .metric("fota_dtls_sessions")
        .expect("the sessions gauge");
    assert!(held <= 64, "{held} handshakes held, the limit is 64");

    // And the fleet beside it upgraded as before.
    let done = engine.wait_for(&format!("/v1/tasks/{task}"), "the task completed", |t| {
        t["status"] == "completed"
    });
    assert_eq!(done["success_rate"], 1.0, "{done}");
    assert!(fleet.terminate().success());
}
