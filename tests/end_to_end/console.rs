//! The web console in a headless Chromium over WebDriver, against a real `fota serve` and a
//! `fota sim` fleet over loopback UDP. An operator logs in, sees the fleet and a device's
//! objects, makes a group of it, uploads two firmware versions (and is told clearly why a
//! third upload is refused), makes a delta package, creates a task and watches it complete
//! live (the page is never reloaded: the figures move with `/v1/events`), reads the
//! statistics, is refused the start of a task not due yet (and told why), edits it and deletes
//! it, and changes a plugin's settings. `fota demo` prints the console's address, and its
//! campaign shows there live. A viewer sees the same screens with every change disabled, and
//! the engine refuses the one the test forces through, with the reason shown. With
//! `FOTA_CONSOLE_SCREENSHOTS=docs/console` the tests save the screenshots the README shows.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::support::browser::Browser;
use crate::support::image;
use crate::support::process::FotaProcess;
use crate::support::served::{BOUND, OPERATOR, Served, VIEWER, scratch, serve};

/// Devices of the fleet.
const DEVICES: usize = 12;

/// The fleet's image (version 0.8.0) and the next one (0.9.0): a quarter rewritten, so the
/// delta is small.
fn images(dir: &Path) -> (PathBuf, PathBuf) {
    let old = image(48_000, 21);
    let mut new = old.clone();
    for (i, byte) in new.iter_mut().enumerate().skip(20_000).take(12_000) {
        *byte = byte.wrapping_add(i as u8 | 1);
    }
    let (old_path, new_path) = (dir.join("fw-0.8.0.bin"), dir.join("fw-0.9.0.bin"));
    std::fs::write(&old_path, old).unwrap();
    std::fs::write(&new_path, new).unwrap();
    (old_path, new_path)
}

/// Logs in with `token` and waits for the console to show its role.
async fn log_in(browser: &Browser, http: &str, token: &str, role: &str) {
    browser.open(&format!("{http}/")).await;
    browser.type_into("#token", token).await;
    browser.click("#login button[type=submit]").await;
    browser.wait_for_text("#role", role).await;
    let url = browser.client.current_url().await.unwrap();
    assert!(
        !url.as_str().contains(token),
        "the token is in the URL {url}"
    );
}

/// Opens the console's view `hash` (`#/groups`) and waits for its heading.
async fn go(browser: &Browser, http: &str, hash: &str, heading: &str) {
    browser.open(&format!("{http}/{hash}")).await;
    browser.wait_for_text("main h1", heading).await;
}

/// Uploads `file` as Acme NB-IoT-A `version` in the firmware form.
async fn upload_firmware(browser: &Browser, version: &str, file: &Path) {
    browser
        .type_into("#upload-firmware input[name=vendor]", "Acme")
        .await;
    browser
        .type_into("#upload-firmware input[name=model]", "NB-IoT-A")
        .await;
    browser
        .type_into("#upload-firmware input[name=version]", version)
        .await;
    let chooser = browser.find("#upload-firmware input[name=image]").await;
    chooser.send_keys(file.to_str().unwrap()).await.unwrap();
    browser.click("#upload-firmware button[type=submit]").await;
}

/// Asserts that the task page shown took events of its task from `/v1/events`.
async fn assert_live(browser: &Browser) {
    let taken = browser
        .run("return Number(document.querySelector('#task-head').dataset.liveEvents || 0)")
        .await;
    assert!(
        taken.as_u64().unwrap() > 0,
        "no live event reached the page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_a_delta_campaign_from_the_console_and_watches_it_live() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = scratch("console-operator");
    let (old, new) = images(&dir);
    let served = serve(&dir, &[]);
    let devices = DEVICES.to_string();
    let coap = served.coap.to_string();
    let args = ["sim", "--server", &coap, "--devices", &devices, "--image"];
    let _fleet = FotaProcess::spawn(
        args.iter().map(|a| a.as_ref()).chain([old.as_os_str()]),
        &[],
    );
    served.wait_for(
        "/v1/devices?model=NB-IoT-A&limit=1",
        "the fleet surveyed",
        |p| p["total"] == DEVICES,
    );

    log_in(&browser, &served.http, OPERATOR, "operator").await;
    browser.wait_for_text("main table", "NB-IoT-A").await;
    browser.screenshot("devices").await;
    let endpoint = served.get("/v1/devices?limit=1")["items"][0]["endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    go(
        &browser,
        &served.http,
        &format!("#/devices/{endpoint}"),
        "Device",
    )
    .await;
    browser.wait_for_text("main", "Object 4").await;
    browser.wait_for_text("main", "0.8.0").await;
    browser.screenshot("device").await;

    // A group of the model the fleet reported, with every device.
    go(&browser, &served.http, "#/groups", "Groups").await;
    browser
        .type_into("#new-group input[name=name]", "fleet")
        .await;
    browser
        .choose("#new-group select[name=model]", "NB-IoT-A")
        .await;
    browser.click("#new-group button[type=submit]").await;
    browser.wait_for_text("main h1", "Group fleet").await;
    let page = served.get(&format!("/v1/devices?limit={DEVICES}"));
    let endpoints: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["endpoint"].as_str().unwrap())
        .collect();
    browser
        .type_into("#add-devices textarea", &endpoints.join("\n"))
        .await;
    browser.click("#add-devices button[type=submit]").await;
    browser
        .wait_for_text(".pager", &format!("of {DEVICES}"))
        .await;
    // The first device made a test device: its row says so (each listed device names its
    // groups), and the group counts it.
    browser
        .click("#group-members .actions button.secondary")
        .await;
    browser.wait_for_text("#group-members", "Unmark test").await;
    let group = &served.get("/v1/groups")[0];
    assert_eq!(group["test_device_count"], 1, "{group}");
    browser.screenshot("group").await;

    // Two firmware versions, a refused third upload, a delta package.
    go(
        &browser,
        &served.http,
        "#/firmware",
        "Firmware and packages",
    )
    .await;
    upload_firmware(&browser, "0.8.0", &old).await;
    browser.wait_for_notice("0.8.0 uploaded").await;
    browser
        .wait_for_text("#make-package select[name=to_firmware]", "0.8.0")
        .await;
    upload_firmware(&browser, "0.9.0", &new).await;
    browser.wait_for_notice("0.9.0 uploaded").await;
    browser
        .wait_for_text("#make-package select[name=to_firmware]", "0.9.0")
        .await;
    upload_firmware(&browser, "0.9.0", &new).await;
    let refused = browser.wait_for_text("#notice.error", "409").await;
    assert!(
        refused.contains("0.9.0"),
        "the error names the version: {refused}"
    );
    browser
        .choose("#make-package select[name=kind]", "delta")
        .await;
    browser
        .choose("#make-package select[name=from_firmware]", "0.8.0")
        .await;
    browser
        .choose("#make-package select[name=to_firmware]", "0.9.0")
        .await;
    browser
        .choose("#make-package select[name=format]", "signed")
        .await;
    browser.click("#make-package button[type=submit]").await;
    browser.wait_for_notice("made").await;
    browser.wait_for_text("#packages table", "delta").await;
    browser.screenshot("firmware").await;

    // A task, created and started (its execution time left empty: now), followed live.
    go(&browser, &served.http, "#/tasks/new", "New upgrade task").await;
    fill_new_task(&browser).await;
    browser.screenshot("new-task").await;
    browser.click("#new-task button[type=submit]").await;
    browser.wait_for_text("main h1", "Task to 0.9.0").await;
    browser
        .wait_text("#task-status", "the task completes live", |s| {
            s == "completed"
        })
        .await;
    browser
        .wait_for_text("#fig-upgraded", &DEVICES.to_string())
        .await;
    browser.wait_for_text("#task-devices", "1/3").await;
    assert_live(&browser).await;
    browser.screenshot("task").await;
    let tasks = served.get("/v1/tasks");
    let task = &tasks["items"][0];
    assert_eq!(task["status"], "completed", "{tasks}");
    let spec = &task["spec"];
    assert_eq!(
        (
            &spec["retries"],
            &spec["retry_interval_secs"],
            &spec["min_signal_dbm"]
        ),
        (&json!(2), &json!(1), &json!(-140)),
        "{spec}"
    );
    assert_eq!(spec["pacing"]["max_per_cell"], 8, "{spec}");
    assert_eq!(spec["max_failure_rate"], 0.5, "{spec}");
    assert_eq!(
        spec["windows"]["download"],
        json!([{ "start": "00:00", "end": "12:00" }, { "start": "12:00", "end": "00:00" }]),
        "{spec}"
    );
    assert_eq!(
        spec["stages"],
        json!([{ "name": "all", "devices": { "up_to_percent": 100.0 }, "success_threshold": 1.0,
                 "max_failure_rate": null, "failure_sample": null, "manual_approval": false }]),
        "{spec}"
    );

    // The statistics count the fleet.
    go(&browser, &served.http, "#/stats", "Statistics").await;
    let row = browser.wait_for_text("#stats-models", "NB-IoT-A").await;
    assert!(row.contains(&DEVICES.to_string()), "{row}");
    assert!(row.contains("100.0 %"), "every device upgraded: {row}");
    browser.screenshot("stats").await;
    refuse_and_delete_a_task_not_due(&browser, &served).await;

    // A plugin's settings, changed in place.
    go(&browser, &served.http, "#/plugins", "Plugins").await;
    browser.wait_for_text("main table", "builtin/").await;
    let policy = r#"tr[data-key="/v1/plugins/policy"]"#;
    browser
        .type_into(&format!("{policy} textarea"), "min-battery=30")
        .await;
    browser
        .click(&format!("{policy} button[type=submit]"))
        .await;
    browser.wait_for_notice("Settings saved").await;
    let binding = served.get("/v1/plugins/policy");
    assert_eq!(
        binding["settings"],
        json!({ "min-battery": "30" }),
        "{binding}"
    );
    browser.screenshot("plugins").await;
    browser.close().await;
}

/// Fills the new task form: retries, pacing, the weak-signal and failure-rate pauses, download
/// windows covering the whole day, and one stage of every device with no approval asked.
async fn fill_new_task(browser: &Browser) {
    let fields = [
        ("name", "to 0.9.0"),
        ("retries", "2"),
        ("retry_interval_secs", "1"),
        ("max_per_cell", "8"),
        ("min_signal_dbm", "-140"),
        ("max_failure_rate", "0.5"),
        ("download_windows", "00:00-12:00, 12:00-00:00"),
    ];
    for (name, value) in fields {
        let css = format!("#new-task input[name={name}]");
        browser.type_into(&css, value).await;
    }
    browser.click("#add-stage").await;
    browser
        .type_into("#new-task input[name=stage_name]", "all")
        .await;
    browser
        .choose("#new-task select[name=stage_approval]", "no")
        .await;
}

/// A task due tomorrow: started by hand, the engine refuses (the status rules) and the console
/// says why; it is edited, then deleted from its page.
async fn refuse_and_delete_a_task_not_due(browser: &Browser, served: &Served) {
    let tomorrow = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 86_400_000;
    let spec = json!({
        "name": "later",
        "group_id": served.get("/v1/groups")[0]["id"],
        "package_id": served.get("/v1/packages")[0]["id"],
        "retries": 1, "retry_interval_secs": 1, "execution_time": tomorrow,
    });
    let later = served.ok("POST", "/v1/tasks", Some(&spec));
    let path = format!("/v1/tasks/{}", later["id"].as_str().unwrap());
    go(
        browser,
        &served.http,
        &format!("#{}", &path[3..]),
        "Task later",
    )
    .await;
    browser.wait_for_text("#task-status", "not_started").await;
    browser.click("#task-start").await;
    browser.wait_for_text("#notice.error", "(409)").await;

    // Not started yet, it may be edited: its form holds its spec, and keeps what is not changed.
    browser.click("#task-edit").await;
    browser.wait_for_text("main h1", "Edit task later").await;
    browser
        .type_into("#new-task input[name=name]", "later, edited")
        .await;
    browser.click("#new-task button[type=submit]").await;
    browser.wait_for_text("main h1", "Task later, edited").await;
    let edited = served.get(&path);
    assert_eq!(edited["spec"]["name"], "later, edited", "{edited}");
    let kept = edited["spec"]["execution_time"].as_u64().unwrap();
    assert!(kept.abs_diff(tomorrow) < 1_000, "{kept} for {tomorrow}");
    assert_eq!(edited["spec"]["retries"], 1, "{edited}");

    browser.click("#task-delete").await;
    browser
        .client
        .accept_alert()
        .await
        .expect("the confirmation");
    browser.wait_for_text("main h1", "Upgrade tasks").await;
    assert_eq!(
        served.call("GET", &path, None).0,
        404,
        "the task is deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_everything_and_can_change_nothing() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = scratch("console-viewer");
    let served = serve(&dir, &[]);
    let query = [
        ("vendor", "Acme"),
        ("model", "NB-IoT-A"),
        ("version", "1.0"),
    ];
    served.upload("/v1/firmware", &query, &image(4_000, 3));
    let body = json!({ "name": "kept", "vendor": "Acme", "model": "NB-IoT-A" });
    let group = served.ok("POST", "/v1/groups", Some(&body));

    // A token the engine does not hold is refused at the door.
    browser.open(&format!("{}/", served.http)).await;
    browser.type_into("#token", "not-a-token").await;
    browser.click("#login button[type=submit]").await;
    browser
        .wait_for_text("#login-error", "not one the engine accepts")
        .await;

    log_in(&browser, &served.http, VIEWER, "viewer").await;
    go(
        &browser,
        &served.http,
        "#/firmware",
        "Firmware and packages",
    )
    .await;
    browser.wait_for_text("main table", "1.0").await;
    let enabled = browser
        .run(
            "return [...document.querySelectorAll('main button, main input, main select')]\
             .filter(e => !e.disabled).map(e => e.outerHTML)",
        )
        .await;
    assert_eq!(enabled, json!([]), "a viewer can use no control");
    let group_page = format!("#/groups/{}", group["id"].as_str().unwrap());
    go(&browser, &served.http, &group_page, "Group kept").await;
    let rename = browser.find("#rename-group button[type=submit]").await;
    assert!(!rename.is_enabled().await.unwrap(), "rename is disabled");

    // Forced through, the engine refuses, and the console says why.
    browser
        .run(
            "for (const e of document.querySelectorAll('#rename-group *')) e.disabled = false; \
             return true",
        )
        .await;
    browser
        .type_into("#rename-group input[name=name]", "changed")
        .await;
    browser.click("#rename-group button[type=submit]").await;
    browser
        .wait_for_text("#notice.error", "viewer token may only read")
        .await;
    let kept = served.get(&format!("/v1/groups/{}", group["id"].as_str().unwrap()));
    assert_eq!(kept["name"], "kept");
    browser.screenshot("viewer").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_campaign_shows_live_in_the_console_it_prints() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let token = "console-demo-token";
    let args = [
        "demo",
        "--devices",
        "200",
        "--http-addr",
        "127.0.0.1:0",
        "--token",
        token,
        "--keep-serving",
    ];
    let mut demo = FotaProcess::spawn(args, &[]);
    let line = demo.logged("console on http://", BOUND);
    let console = line["console on ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    log_in(&browser, &console, token, "operator").await;
    // The list follows the tasks as the demo makes and starts them.
    go(&browser, &console, "#/tasks", "Upgrade tasks").await;
    browser.wait_for_text("main table", "upgrading").await;
    browser
        .run(
            "const row = [...document.querySelectorAll('main tbody tr')]\
             .find(r => r.textContent.includes('upgrading')); \
             row.querySelector('a').click(); return true",
        )
        .await;
    browser.wait_for_text("main h1", "Task").await;
    browser
        .wait_text("#task-status", "the demo's task completes", |s| {
            s == "completed"
        })
        .await;
    // The figures follow: every device finished.
    for figure in ["#fig-waiting", "#fig-active"] {
        browser
            .wait_text(figure, "every device finished", |n| n == "0")
            .await;
    }
    assert_live(&browser).await;
    browser.screenshot("demo-task").await;
    demo.ask_to_stop();
    browser.close().await;
}
