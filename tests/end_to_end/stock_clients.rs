//! Stock LwM2M clients, upgraded end to end as a platform host would: `fota serve` as a child
//! process driven over its HTTP API, and devices whose CoAP nobody here wrote (aiocoap, PyPI:
//! `tests/lwm2m_device/aiocoap_device.py`) that follow the OMA Firmware Update object as stock
//! stacks do, each profile reproducing something real clients do (DESIGN.md, interoperability
//! notes): the whole package in RAM and no /5/0/26500, or block by block with 26500/26501;
//! push, pull or both; a '\0' or an empty-URI reset only; LwM2M 1.0 to 1.2; a version string
//! that is not the firmware's name; battery 0 on mains power; Memory Free that is RAM.
//!
//! Given a fleet on 1.0, when a task of a `raw` full package runs, then every device stores and
//! installs the uploaded image byte for byte. Given devices killed mid-push, then those with
//! 26500 resume with at most one block sent again and those without start over once. Given a
//! model whose format is a vendor container, then the device stores exactly the bytes the
//! engine made. And the defects stock stacks found are gone: a version string with a suffix,
//! the reset, observations piling up, settings that needed a new upload, a start right after
//! creating a task, pulled bytes missing from the statistics. Over coaps, a device with its
//! pre-shared key (aiocoap's tinydtls transport) registers and takes a push upgrade. And given
//! a device reassembling the push in RAM with aiocoap's own Block1 code, out of reach long
//! enough for an exchange to give up (the engine in-process, on short timers), then the write
//! goes on in a new exchange and only the block in flight is sent again. And given a model
//! whose plan says it takes Q-Block1 bursts when its stack knows option 19 but not Q-Block1
//! (aiocoap), then the payload the device took as its whole package is reset and the package
//! written with Block1 in the same attempt, the opening set the only bytes sent twice.

use std::time::Duration;

use bytes::Bytes;
use fota_engine::coap::TransmissionParams;
use fota_engine::server::{Server, ServerConfig};
use fota_engine::transfer::{DeliveryJob, Method, Stage, TransferOutcome};

use crate::support::served::{Served, scratch, serve, serve_with};
use crate::support::stock_device::{StockDevice, aiocoap_dtls_present, aiocoap_present, raw_image};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The vendor and the model the stock devices report (/3/0/0, /3/0/1).
const VENDOR: &str = "acme";
const MODEL: &str = "NB-S";
/// Longest a device may take to register, and a task to end.
const BOUND: Duration = Duration::from_secs(120);

/// Starts `fota serve` at `RUST_LOG=info` in a scratch directory named `name`.
fn engine(name: &str) -> Served {
    serve(&scratch(name), &[("RUST_LOG", "info")])
}

/// Starts one stock device per entry of `profiles` (its extra command-line options), named
/// `{prefix}-{index}`, and waits until every one is registered.
fn fleet(engine: &Served, prefix: &str, profiles: &[&[&str]]) -> Vec<StockDevice> {
    let mut devices: Vec<StockDevice> = profiles
        .iter()
        .enumerate()
        .map(|(i, args)| StockDevice::start(engine.coap, &format!("{prefix}-{i}"), args))
        .collect();
    for device in &mut devices {
        device.wait_registered(BOUND);
    }
    devices
}

/// Uploads `image` as firmware `version` of `model`; returns its id.
fn firmware(engine: &Served, model: &str, version: &str, image: &[u8]) -> String {
    let query = [("vendor", VENDOR), ("model", model), ("version", version)];
    id(&engine.upload("/v1/firmware", &query, image))
}

/// A full package of firmware `to`, in `format` (the model's when `None`).
fn full_package(engine: &Served, to: &str, format: Option<&str>) -> Value {
    let mut body = json!({ "kind": "full", "to_firmware": to });
    if let Some(format) = format {
        body["format"] = json!(format);
    }
    engine.ok("POST", "/v1/packages", Some(&body))
}

fn id(record: &Value) -> String {
    record["id"].as_str().expect("an id").to_string()
}

/// Waits until the engine has surveyed every device of `devices` (model and version known).
fn surveyed(engine: &Served, devices: &[StockDevice]) {
    for device in devices {
        let path = format!("/v1/devices/{}", device.endpoint());
        engine.wait_for(&path, "the device surveyed", |d| {
            d["model"].is_string() && d["firmware_version"].is_string()
        });
    }
}

/// A group of `devices` (all of `model`) and a task of `package` over it, with `retries`; the
/// task starts at once (and a start by hand right after is answered 200). Returns the task id.
fn task(
    engine: &Served,
    model: &str,
    devices: &[StockDevice],
    package: &str,
    retries: u32,
) -> String {
    surveyed(engine, devices);
    let group = engine.ok(
        "POST",
        "/v1/groups",
        Some(&json!({ "name": format!("{model} fleet"), "vendor": VENDOR, "model": model })),
    );
    let endpoints: Vec<&str> = devices.iter().map(StockDevice::endpoint).collect();
    let members = json!({ "endpoints": endpoints });
    engine.ok(
        "POST",
        &format!("/v1/groups/{}/devices", id(&group)),
        Some(&members),
    );
    let spec = json!({
        "name": format!("{model} to {package}"),
        "group_id": id(&group),
        "package_id": package,
        "retries": retries,
        "retry_interval_secs": 1,
    });
    let task = id(&engine.ok("POST", "/v1/tasks", Some(&spec)));
    // Whoever starts it first, the engine or the operator, the start is answered 200.
    let started = engine.ok("POST", &format!("/v1/tasks/{task}/start"), None);
    assert_eq!(started["status"], "upgrading", "{started}");
    task
}

/// Waits until task `task` is completed; returns its devices' progress by endpoint.
fn completed(engine: &Served, task: &str) -> Vec<Value> {
    engine.wait_for(&format!("/v1/tasks/{task}"), "the task completed", |t| {
        t["status"] == "completed"
    });
    let page = engine.get(&format!("/v1/tasks/{task}/devices?limit=1000"));
    page["items"].as_array().expect("items").clone()
}

/// The progress of `endpoint` among `devices`.
fn progress<'a>(devices: &'a [Value], endpoint: &str) -> &'a Value {
    devices
        .iter()
        .find(|d| d["endpoint"] == endpoint)
        .unwrap_or_else(|| panic!("{endpoint} is not in the task"))
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn a_stock_fleet_installs_the_uploaded_image_byte_for_byte() {
    if !aiocoap_present() {
        return;
    }
    let mut engine = engine("stock-fleet");
    let profiles: [&[&str]; 10] = [
        &["--profile", "ram", "--delivery", "push"],
        &["--profile", "blocks", "--delivery", "push"],
        &[
            "--profile",
            "ram",
            "--delivery",
            "pull",
            "--reset",
            "empty-uri",
        ],
        &["--profile", "blocks", "--delivery", "both"],
        &["--profile", "ram", "--lwm2m", "1.2"],
        &["--battery", "0", "--power-source", "6"],
        &["--profile", "blocks", "--memory-free", "15"],
        &["--delivery", "pull", "--lwm2m", "1.0"],
        &[
            "--profile",
            "blocks",
            "--battery",
            "0",
            "--power-source",
            "0",
        ],
        &["--memory-free", "0", "--max-block", "256"],
    ];
    let devices = fleet(&engine, "stock", &profiles);
    let image = raw_image("2.0", 100_000, 3);
    let to = firmware(&engine, MODEL, "2.0", &image);
    let package = full_package(&engine, &to, None);
    assert_eq!(
        package["format"], "raw",
        "a model nobody configured: {package}"
    );
    assert_eq!(package["sha256"], sha256(&image), "raw: the image itself");
    let task = task(&engine, MODEL, &devices, &id(&package), 2);
    let results = completed(&engine, &task);

    for device in &devices {
        let done = progress(&results, device.endpoint());
        assert_eq!(done["result"], "successful", "{done}");
        assert_eq!(
            done["bytes_first"],
            image.len(),
            "every package byte counted once, pushed or pulled: {done}"
        );
        assert_eq!(device.stored_package().as_deref(), Some(&image[..]));
        assert_eq!(device.firmware().as_deref(), Some(&image[..]));
        let status = device.status();
        assert_eq!(status["version"], "2.0", "{status}");
        for path in ["/5/0/3", "/5/0/5"] {
            assert!(device.observations(path) <= 1, "{path}: {status}");
        }
    }
    let stats = engine.get("/v1/stats");
    let counted = &stats["packages"].as_array().unwrap()[0];
    assert_eq!(counted["successes"], devices.len(), "{stats}");
    assert_eq!(
        counted["bytes_first"],
        devices.len() * image.len(),
        "{stats}"
    );

    // What happened is in the log at info, with the task and the device.
    let ended = engine.process.logged("delivery ended: upgraded", BOUND);
    assert!(ended.contains(&task) && ended.contains("stock-"), "{ended}");
}

#[test]
fn devices_killed_mid_push_resume_at_26500_or_start_over_once() {
    if !aiocoap_present() {
        return;
    }
    let engine = engine("stock-killed");
    let mut devices = fleet(
        &engine,
        "killed",
        &[
            &["--profile", "blocks", "--delivery", "push"],
            &["--profile", "blocks", "--delivery", "push"],
            &["--profile", "ram", "--delivery", "push"],
        ],
    );
    let image = raw_image("2.0", 300_000, 5);
    let to = firmware(&engine, MODEL, "2.0", &image);
    let package = id(&full_package(&engine, &to, None));
    let task = task(&engine, MODEL, &devices, &package, 2);
    // The default capability plugin's block: the largest (the devices take it).
    let block = 1024;
    // The three downloads run side by side: once all three are a sixth of the way, the power
    // is cut on all of them at once, so none finishes while another one boots.
    for device in &mut devices {
        let blocks = |s: &Value| s["blocks_received"].as_u64().unwrap_or(0) >= 50;
        device.wait_for("a sixth of the package", blocks, BOUND);
    }
    devices.iter_mut().for_each(StockDevice::kill);
    for (index, device) in devices.iter_mut().enumerate() {
        // Back on the port it had, on a new one (a new NAT binding), on a new one.
        device.restart(index == 0);
    }
    let results = completed(&engine, &task);
    for (index, device) in devices.iter().enumerate() {
        let done = progress(&results, device.endpoint());
        assert_eq!(done["result"], "successful", "{done}");
        assert_eq!(device.firmware().as_deref(), Some(&image[..]));
        let resent = done["bytes_resent"].as_u64().unwrap();
        if index < 2 {
            assert!(resent <= block, "26500: at most one block again: {done}");
        } else {
            assert!(
                resent > 0 && resent < image.len() as u64,
                "no 26500: started over once, from 0: {done}"
            );
        }
    }
}

#[test]
fn a_vendor_container_reaches_the_device_exactly_as_the_engine_made_it() {
    if !aiocoap_present() {
        return;
    }
    let engine = engine("stock-vendor-format");
    let model = "NB-V";
    let packager = crate::support::vendor_packager();
    let query = [
        ("kind", "packager"),
        ("vendor", VENDOR),
        ("model", model),
        ("name", "acme-ota"),
    ];
    engine.upload("/v1/plugins", &query, &packager);
    let path = format!("/v1/formats/{VENDOR}/{model}");
    engine.ok("PUT", &path, Some(&json!({ "format": "packager" })));

    let devices = fleet(
        &engine,
        "vendor",
        &[&["--model", model, "--updater", "acme", "--profile", "blocks"]],
    );
    let old = raw_image("1.0", 60_000, 7);
    let mut new = old.clone();
    new[20_000..21_000].fill(0x5A);
    let from = firmware(&engine, model, "1.0", &old);
    let to = firmware(&engine, model, "2.0", &new);
    let package = engine.ok(
        "POST",
        "/v1/packages",
        Some(&json!({ "kind": "delta", "from_firmware": from, "to_firmware": to })),
    );
    assert_eq!(
        (&package["format"], &package["packager"]),
        (&json!("packager"), &json!("acme-ota")),
        "{package}"
    );
    let made = ureq_bytes(&engine, &format!("/v1/packages/{}/download", id(&package)));
    assert_eq!(&made[..4], b"ACME");
    let task = task(&engine, model, &devices, &id(&package), 0);
    let results = completed(&engine, &task);
    let done = progress(&results, devices[0].endpoint());
    assert_eq!(done["result"], "successful", "{done}");
    assert_eq!(devices[0].stored_package(), Some(made));
    assert_eq!(devices[0].status()["version"], "2.0");
}

/// GET `path` as bytes.
fn ureq_bytes(engine: &Served, path: &str) -> Vec<u8> {
    let response = ureq::get(&format!("{}{path}", engine.http))
        .set(
            "Authorization",
            &format!("Bearer {}", crate::support::served::VIEWER),
        )
        .call()
        .expect("GET answers");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).unwrap();
    bytes
}

#[test]
fn a_version_string_with_a_suffix_is_confirmed_only_as_the_firmware_says() {
    if !aiocoap_present() {
        return;
    }
    let engine = engine("stock-version");
    let suffixed: &[&str] = &["--version-suffix=-build7"];
    let mut devices = fleet(&engine, "build7", &[suffixed, suffixed]);
    let image = raw_image("2.2", 40_000, 9);
    let firmware_id = firmware(&engine, MODEL, "2.2", &image);
    let package = id(&full_package(&engine, &firmware_id, None));

    // Reported "2.2-build7" with Update Result 1, expected "2.2": shown as such, final.
    let first = devices.remove(0);
    let task_id = task(&engine, MODEL, std::slice::from_ref(&first), &package, 2);
    let results = completed(&engine, &task_id);
    let done = progress(&results, first.endpoint());
    assert_eq!(done["result"], "unexpected_version", "{done}");
    assert!(
        done["note"].as_str().unwrap().contains("2.2-build7"),
        "{done}"
    );
    assert_eq!(
        first.status()["updates_executed"],
        1,
        "the same package is not pushed and executed again"
    );

    // Once the firmware says what its devices report, the upgrade is confirmed.
    let path = format!("/v1/firmware/{firmware_id}");
    let body = json!({ "reported_version": "2.2-build7" });
    engine.ok("PATCH", &path, Some(&body));
    let task_id = task(&engine, MODEL, &devices, &package, 0);
    let done = completed(&engine, &task_id);
    assert_eq!(
        progress(&done, devices[0].endpoint())["result"],
        "successful"
    );
}

#[test]
fn a_failed_device_is_reset_with_a_null_byte_and_holds_no_stale_observations() {
    if !aiocoap_present() {
        return;
    }
    let engine = engine("stock-reset");
    // A bootloader that reads the version at a fixed place: the signed container moves it.
    let strict: &[&str] = &["--reset", "null-byte", "--raw-version-at", "64"];
    let devices = fleet(&engine, "strict", &[strict]);
    let device = &devices[0];
    let image = raw_image("2.0", 30_000, 11);
    let to = firmware(&engine, MODEL, "2.0", &image);
    let signed = full_package(&engine, &to, Some("signed"));
    let task_id = task(&engine, MODEL, &devices, &id(&signed), 1);
    let results = completed(&engine, &task_id);
    let done = progress(&results, device.endpoint());
    assert_eq!(done["result"], "not_supported", "Update Result 6: {done}");
    assert_eq!(device.status()["result"], 6);
    for path in ["/5/0/3", "/5/0/5"] {
        assert_eq!(
            device.observations(path),
            0,
            "two attempts over, their observations cancelled: {path}"
        );
    }

    let raw = full_package(&engine, &to, Some("raw"));
    let task_id = task(&engine, MODEL, &devices, &id(&raw), 0);
    let results = completed(&engine, &task_id);
    assert_eq!(
        progress(&results, device.endpoint())["result"],
        "successful"
    );
    let status = device.status();
    assert!(
        status["resets"]
            .as_array()
            .unwrap()
            .contains(&json!("null-byte")),
        "{status}"
    );
    assert_eq!(device.firmware().as_deref(), Some(&image[..]));
}

#[test]
fn policy_settings_change_through_the_api_without_a_new_upload() {
    if !aiocoap_present() {
        return;
    }
    let engine = engine("stock-settings");
    let devices = fleet(&engine, "battery", &[&["--battery", "30"]]);
    let path = format!("/v1/plugins/policy/{VENDOR}/{MODEL}");
    let strict = json!({ "settings": { "min-battery": "50", "retry-seconds": "1" } });
    let bound = engine.ok("PATCH", &path, Some(&strict));
    assert_eq!(bound["name"], "builtin/threshold-policy", "{bound}");
    let image = raw_image("2.0", 20_000, 13);
    let to = firmware(&engine, MODEL, "2.0", &image);
    let package = id(&full_package(&engine, &to, None));
    let task_id = task(&engine, MODEL, &devices, &package, 0);
    let endpoint = devices[0].endpoint();
    engine.wait_for(
        &format!("/v1/tasks/{task_id}/devices"),
        "the device waits",
        |page| {
            page["items"][0]["note"]
                .as_str()
                .is_some_and(|note| note.contains("battery 30 %"))
        },
    );
    let lenient = json!({ "settings": { "min-battery": "20", "retry-seconds": "1" } });
    engine.ok("PATCH", &path, Some(&lenient));
    let results = completed(&engine, &task_id);
    assert_eq!(progress(&results, endpoint)["result"], "successful");
}

#[test]
fn the_stock_test_device_passes_its_own_checks_against_a_plain_aiocoap_server() {
    if !aiocoap_present() {
        return;
    }
    let script = crate::support::stock_device::script().with_file_name("selftest.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .output()
        .expect("python3 runs the self test");
    assert!(
        output.status.success(),
        "the device's self test failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_stock_device_over_dtls_registers_with_its_key_and_takes_a_push_upgrade() {
    if !aiocoap_dtls_present() {
        return;
    }
    // Sessions go compact as their handshake completes: the push is sealed and opened by the
    // engine's own record layer against tinydtls.
    let settings = "[coaps]\naddr = \"127.0.0.1:0\"\ncompact_after_secs = 0\n";
    let mut engine = serve_with(&scratch("stock-dtls"), &[("RUST_LOG", "info")], settings);
    let coaps = engine.coaps.expect("coaps is on");
    let (identity, key) = ("stock-dtls-id", "stock-dtls-key-1");
    let credential = json!({ "identity": identity, "key_hex": hex::encode(key) });
    engine.ok("PUT", "/v1/devices/dtls-0/credentials", Some(&credential));
    let args = [
        "--psk-identity",
        identity,
        "--psk-key",
        key,
        "--profile",
        "blocks",
        "--delivery",
        "push",
    ];
    let mut device = StockDevice::start(coaps, "dtls-0", &args);
    device.wait_registered(BOUND);
    let registered = engine.process.logged("DTLS session established", BOUND);
    assert!(registered.contains(identity), "{registered}");

    let image = raw_image("2.0", 40_000, 5);
    let to = firmware(&engine, MODEL, "2.0", &image);
    let package = full_package(&engine, &to, None);
    let task = task(
        &engine,
        MODEL,
        std::slice::from_ref(&device),
        &id(&package),
        2,
    );
    let results = completed(&engine, &task);
    let done = progress(&results, device.endpoint());
    assert_eq!(done["result"], "successful", "{done}");
    assert_eq!(device.firmware().as_deref(), Some(&image[..]));
    assert_eq!(device.status()["version"], "2.0");
    let handshakes = engine.metric("fota_dtls_events_total{event=\"handshakes\"}");
    assert!(handshakes.expect("coaps counted in /metrics") >= 1);
    let compacted = engine.metric("fota_dtls_events_total{event=\"sessions_compacted\"}");
    assert_eq!(compacted, handshakes, "every session went compact");
    let plain = engine.metric("fota_dtls_events_total{event=\"sends_refused\"}");
    assert_eq!(
        plain,
        Some(0),
        "every request went over the device's session"
    );
}

/// A stock device keeping the pushed package in RAM with aiocoap's Block1 reassembly (profile
/// `ram`: no /5/0/26500) is frozen mid-push until the engine's exchange gives up: it then
/// answers the block in flight late, holding it. aiocoap ties a Block1 body to the peer and the
/// request's options, not the token: the block in flight again, in a new exchange, is refused
/// (its overlap check; the script answers 4.08), and the block after it, in another, is taken.
/// One block sent again, and the device stores the image byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ram_device_out_of_reach_mid_push_takes_the_rest_in_new_exchanges() {
    if !aiocoap_present() {
        return;
    }
    let mut config = ServerConfig::loopback();
    // An exchange gives up within 3 s; a read after it waits 1.9 s or more for the device.
    config.coap.params = TransmissionParams {
        max_retransmit: 4,
        ..TransmissionParams::fast()
    };
    let server = Server::start(config).await.unwrap();
    let mut device = StockDevice::start(
        server.coap_addr(),
        "frozen-0",
        &["--profile", "ram", "--delivery", "push"],
    );
    tokio::task::block_in_place(|| device.wait_registered(BOUND));
    let image = raw_image("2.0", 60_000, 11);
    let package = server.shelf.put(Bytes::from(image.clone()));
    let block = 512;
    let mut job = DeliveryJob::new(device.endpoint(), package, "2.0", block, Method::Push);
    job.resume = false;
    let (stages, mut reached) = tokio::sync::mpsc::unbounded_channel();
    job.stages = Some(stages);
    let delivery = server.delivery.clone();
    let run = tokio::spawn(async move { delivery.run(&job).await });

    let a_third = |s: &Value| s["blocks_received"].as_u64().unwrap_or(0) >= 40;
    tokio::task::block_in_place(|| device.wait_for("a third of the package", a_third, BOUND));
    device.freeze();
    let gave_up =
        async { while !matches!(reached.recv().await, Some((_, Stage::Suspended { .. }))) {} };
    let waited = tokio::time::timeout(BOUND, gave_up).await;
    device.thaw();
    waited.expect("the exchange in flight gives up");

    let report = tokio::time::timeout(BOUND, run).await.unwrap().unwrap();
    assert_eq!(
        report.outcome,
        TransferOutcome::Upgraded {
            version: "2.0".into()
        },
        "{report:?}"
    );
    assert_eq!(report.wire.package_resent, block as u64, "{report:?}");
    assert_eq!(device.stored_package().as_deref(), Some(&image[..]));
    assert_eq!(device.firmware().as_deref(), Some(&image[..]));
    let refused = device
        .log()
        .iter()
        .any(|line| line.contains("does not continue the package"));
    assert!(refused, "the block in flight, held already, was refused");
}

/// Given a model whose capability plan says it takes Q-Block1 bursts when its stack does not
/// (aiocoap knows option 19's number, so it refuses nothing, but not Q-Block1: it hands each
/// payload to the resource as a whole PUT, and the device takes the first one as its package),
/// when a task pushes to it, then the engine, answered 2.04 before its last block went out,
/// resets the device and writes the package with Block1 for the rest of the delivery, in the
/// same attempt, and the device installs the image byte for byte, the opening set the only
/// bytes sent twice. (Before, the device installed one 512-byte block and was reported
/// upgraded.)
#[test]
fn a_stock_client_taking_a_q_block1_payload_as_its_package_is_reset_and_given_block1() {
    if !aiocoap_present() {
        return;
    }
    let mut engine = engine("stock-burst-refused");
    let profiles: [&[&str]; 2] = [
        &["--profile", "blocks", "--delivery", "push"],
        &["--profile", "ram", "--delivery", "push"],
    ];
    let devices = fleet(&engine, "noburst", &profiles);
    let path = format!("/v1/plugins/capability/{VENDOR}/{MODEL}");
    let bursts = json!({ "settings": { "burst": "10", "block-size": "512" } });
    engine.ok("PATCH", &path, Some(&bursts));
    let image = raw_image("2.0", 60_000, 21);
    let to = firmware(&engine, MODEL, "2.0", &image);
    let package = id(&full_package(&engine, &to, None));
    let task = task(&engine, MODEL, &devices, &package, 1);
    let results = completed(&engine, &task);
    for device in &devices {
        let done = progress(&results, device.endpoint());
        assert_eq!(done["result"], "successful", "{done}");
        assert_eq!(done["attempts"], 1, "{done}");
        assert_eq!(done["bytes_first"], image.len(), "{done}");
        assert!(
            done["bytes_resent"].as_u64().unwrap() <= 10 * 512,
            "no more sent twice than the opening set: {done}"
        );
        assert_eq!(device.stored_package().as_deref(), Some(&image[..]));
        assert_eq!(device.firmware().as_deref(), Some(&image[..]));
    }
    let fallback = engine
        .process
        .logged("took a Q-Block1 payload as the whole package", BOUND);
    assert!(fallback.contains("noburst-"), "{fallback}");
}
