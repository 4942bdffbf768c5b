//! The integrator's path, end to end over real processes and real HTTP: `fota serve` reading its
//! tokens from a fota.toml, two `fota sim` fleets, then one campaign driven by the `fota` CLI
//! (firmware add, package create, group create and add, task create, pause, resume and watch,
//! stats) and one by `examples/integrator/campaign.py` (Python standard library, the HTTP API
//! only, following its task through signed webhooks). Each campaign ends with every device of its model upgraded. The CLI's lists show what
//! its campaign made, `fota task start` starts a due task (and is refused one not due yet), and
//! `fota task cancel` stops an upgrading one. A plugin added with `fota plugin add` is still
//! bound after the engine is stopped and started again.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::image;
use crate::support::process::FotaProcess;
use crate::support::served::{OPERATOR, Served, VIEWER, scratch, serve};
use serde_json::Value;

const DEVICES: usize = 20;

/// The running engine, as an integrator reaches it.
struct Engine {
    served: Served,
}

impl Engine {
    /// Runs a `fota` client command with `token`.
    fn fota(&self, token: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fota"))
            .args(args)
            .env("FOTA_API", &self.served.http)
            .env("FOTA_TOKEN", token)
            .output()
            .expect("fota runs")
    }

    /// Runs a `fota` client command as the operator; it must succeed. Returns its stdout.
    fn operate(&self, args: &[&str]) -> String {
        let output = self.fota(OPERATOR, args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "fota {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Runs a command that prints JSON; returns it.
    fn printed(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.operate(args)).expect("JSON")
    }

    /// Runs a command that prints a JSON object; returns its `id`.
    fn created(&self, args: &[&str]) -> String {
        self.printed(args)["id"]
            .as_str()
            .expect("an id")
            .to_string()
    }

    /// Runs a command as the operator that must be refused with `status`; returns its stderr.
    fn refused(&self, args: &[&str], status: &str) -> String {
        let output = self.fota(OPERATOR, args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "fota {args:?} was not refused");
        assert!(stderr.contains(status), "fota {args:?}: {stderr}");
        stderr
    }

    /// POST `path` with a JSON body as the operator.
    fn post(&self, path: &str, body: &Value) -> Value {
        self.served.ok("POST", path, Some(body))
    }

    /// GET `path` as the viewer.
    fn get(&self, path: &str) -> Value {
        self.served.get(path)
    }

    /// Waits until `check` holds for the answer to GET `path`.
    fn wait_for(&self, path: &str, what: &str, check: impl Fn(&Value) -> bool) {
        self.served.wait_for(path, what, check);
    }
}

/// Writes the old and new images of a model; returns their paths.
fn images(dir: &Path, model: &str, seed: u8) -> (PathBuf, PathBuf) {
    let old = image(24_000, seed);
    let mut new = old.clone();
    new[1_000..1_400].fill(0xA5);
    new.extend_from_slice(&image(2_000, seed.wrapping_add(1)));
    let (old_path, new_path) = (
        dir.join(format!("{model}-old")),
        dir.join(format!("{model}-new")),
    );
    std::fs::write(&old_path, old).unwrap();
    std::fs::write(&new_path, new).unwrap();
    (old_path, new_path)
}

/// Starts `fota serve` from a fota.toml in `dir`.
fn start_engine(dir: &Path) -> Engine {
    Engine {
        served: serve(dir, &[]),
    }
}

/// Starts a fleet of `DEVICES` devices of `model` on version 0.8.0 of `old`.
fn sim(engine: &Engine, model: &str, old: &Path, first_index: usize) -> FotaProcess {
    let (devices, first) = (DEVICES.to_string(), first_index.to_string());
    let args = [
        "sim",
        "--server",
        &engine.served.coap.to_string(),
        "--devices",
        &devices,
        "--first-index",
        &first,
        "--model",
        model,
        "--loss",
        "0.05",
        "--image",
    ];
    FotaProcess::spawn(
        args.iter().map(|a| a.as_ref()).chain([old.as_os_str()]),
        &[],
    )
}

/// Waits until the engine knows all `DEVICES` devices of `model`.
fn wait_for_fleet(engine: &Engine, model: &str) {
    let path = format!("/v1/devices?vendor=Acme&model={model}&limit=1");
    engine.wait_for(&path, "the fleet registered", |page| {
        page["total"] == DEVICES
    });
}

/// What the CLI campaign made.
struct Made {
    firmware: [String; 2],
    package: String,
    group: String,
    task: String,
}

/// The campaign a platform host runs with the `fota` CLI.
fn cli_campaign(engine: &Engine, old: &Path, new: &Path) -> Made {
    let (old, new) = (old.to_str().unwrap(), new.to_str().unwrap());
    let add = [
        "firmware",
        "add",
        "--vendor",
        "Acme",
        "--model",
        "NB-IoT-A",
        "--version",
    ];
    let refused = engine.fota(VIEWER, &[&add[..], &["0.8.0", old]].concat());
    assert!(!refused.status.success(), "a viewer cannot upload");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403"));

    let from = engine.created(&[&add[..], &["0.8.0", old]].concat());
    let to = engine.created(&[&add[..], &["0.9.0", new]].concat());
    // `fota sim`'s devices are reference devices: they verify the platform's signed container.
    let package = engine.created(&[
        "package", "create", "--from", &from, "--to", &to, "--format", "signed",
    ]);
    let group = engine.created(&[
        "group", "create", "--name", "A fleet", "--vendor", "Acme", "--model", "NB-IoT-A",
    ]);
    engine.operate(&["group", "add", &group, "--all"]);
    let task = engine.created(&[
        "task",
        "create",
        "--name",
        "A to 0.9.0",
        "--group",
        &group,
        "--package",
        &package,
        "--retry-interval",
        "2",
        "--max-concurrent",
        "4",
    ]);
    let task_path = format!("/v1/tasks/{task}");
    engine.wait_for(&task_path, "the task started", |t| {
        t["status"] == "upgrading"
    });
    assert!(
        engine
            .operate(&["task", "pause", &task])
            .contains("\"paused\"")
    );
    assert!(
        engine
            .operate(&["task", "resume", &task])
            .contains("\"upgrading\"")
    );

    let watched = engine.operate(&["task", "watch", &task]);
    let done = format!("task {task} is completed: {DEVICES} of {DEVICES} devices upgraded");
    assert!(watched.contains(&done), "{watched}");
    let stats = engine.operate(&["stats"]);
    let row = stats
        .lines()
        .find(|l| l.starts_with("Acme NB-IoT-A"))
        .expect("a row");
    let counts: Vec<&str> = row.split_whitespace().skip(2).take(2).collect();
    assert_eq!(
        counts,
        [DEVICES.to_string(), DEVICES.to_string()],
        "{stats}"
    );
    Made {
        firmware: [from, to],
        package,
        group,
        task,
    }
}

/// The ids of the items `fota LIST...` prints.
fn listed(engine: &Engine, list: &[&str]) -> Vec<String> {
    let items = engine.printed(list);
    let items = items.as_array().expect("a list");
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// The CLI's lists show what its campaign made; `fota task start` is refused a task not due
/// yet and starts a due one; `fota task cancel` is refused a task that has not started and
/// stops an upgrading one.
fn cli_lists_and_task_actions(engine: &Engine, made: &Made, image: &Path) {
    let firmware = listed(engine, &["firmware", "list"]);
    assert!(
        made.firmware.iter().all(|f| firmware.contains(f)),
        "{firmware:?}"
    );
    assert!(listed(engine, &["package", "list"]).contains(&made.package));
    assert!(listed(engine, &["group", "list"]).contains(&made.group));
    let tasks = engine.printed(&["task", "list"]);
    let task = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == *made.task);
    assert_eq!(
        task.expect("the task listed")["status"],
        "completed",
        "{tasks}"
    );

    // A full package to 1.0.0, for tasks the weak signal holds: every device reports less
    // than 0 dBm, so its cell is paused and it waits, and the task stays upgrading.
    let image = image.to_str().unwrap();
    let add = ["firmware", "add", "--vendor", "Acme", "--model", "NB-IoT-A"];
    let firmware = engine.created(&[&add[..], &["--version", "1.0.0", image]].concat());
    let package = engine.created(&["package", "create", "--to", &firmware]);
    let later = engine.created(&[
        "task",
        "create",
        "--name",
        "later",
        "--group",
        &made.group,
        "--package",
        &package,
        "--start-in",
        "3600",
        "--min-signal",
        "0",
    ]);
    let detail = engine.refused(&["task", "start", &later], "409");
    assert!(detail.contains("execution time"), "{detail}");
    let detail = engine.refused(&["task", "cancel", &later], "409");
    assert!(detail.contains("not started"), "{detail}");

    let started = start_by_hand(engine, &made.group, &package);
    assert_eq!(started["status"], "upgrading", "{started}");
    let id = started["id"].as_str().unwrap();
    let cancelled = engine.printed(&["task", "cancel", id]);
    assert_eq!(cancelled["status"], "stopped", "{cancelled}");
    engine.refused(&["task", "cancel", id], "409");
}

/// Creates a task due in a moment and, once it is due, starts it with `fota task start`;
/// returns what that prints. The system starts a due task itself at its next look (at once
/// after a change, then every 500 ms), so the start by hand comes just after the due time;
/// should the system win all the same, the task is cancelled and the start tried again with a
/// new task, a few times.
fn start_by_hand(engine: &Engine, group: &str, package: &str) -> Value {
    for _ in 0..4 {
        let due = now_millis() + 200;
        let task = engine.post(
            "/v1/tasks",
            &serde_json::json!({
                "name": "started by hand",
                "group_id": group,
                "package_id": package,
                "retries": 1,
                "retry_interval_secs": 1,
                "execution_time": due,
                "min_signal_dbm": 0,
            }),
        );
        let id = task["id"].as_str().unwrap();
        std::thread::sleep(Duration::from_millis(due.saturating_sub(now_millis()) + 20));
        let output = engine.fota(OPERATOR, &["task", "start", id]);
        if output.status.success() {
            return serde_json::from_slice(&output.stdout).expect("JSON");
        }
        let task = engine.get(&format!("/v1/tasks/{id}"));
        assert_ne!(task["status"], "not_started", "a due task refused: {task}");
        engine.operate(&["task", "cancel", id]);
    }
    panic!("the system started the task before `fota task start` every time");
}

/// The system time, in milliseconds since the Unix epoch.
fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The campaign an integrator's back office runs with the Python example.
fn python_campaign(engine: &Engine, old: &Path, new: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/integrator/campaign.py");
    let output = Command::new("python3")
        .arg(script)
        .args([
            "--vendor",
            "Acme",
            "--model",
            "NB-IoT-B",
            "--old-version",
            "0.8.0",
        ])
        .args([
            "--new-version",
            "0.9.0",
            "--timeout",
            "300",
            "--format",
            "signed",
            "--webhook-listen",
            "127.0.0.1:0",
        ])
        .arg("--old")
        .arg(old)
        .arg("--new")
        .arg(new)
        .env("FOTA_API", &engine.served.http)
        .env("FOTA_TOKEN", OPERATOR)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "campaign.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("completed: every device upgraded"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!(": {DEVICES} devices")), "{stdout}");
    assert!(
        stdout.contains(": task completed\n"),
        "followed through webhooks: {stdout}"
    );
    assert_eq!(
        engine.get("/v1/webhooks"),
        serde_json::json!([]),
        "unsubscribed"
    );
}

/// Binds the reference policy to model A with `fota plugin add`, restarts the engine on the same
/// data, and finds the binding listed by the new process.
fn plugin_outlives_a_restart(dir: &Path, engine: Engine) {
    let wasm = dir.join("policy.wasm");
    std::fs::write(&wasm, fota_engine::plugin::embedded::THRESHOLD_POLICY).unwrap();
    let add = [
        "plugin", "add", "--kind", "policy", "--name", "strict", "--vendor", "Acme",
    ];
    let more = [
        "--model",
        "NB-IoT-A",
        "--setting",
        "min-battery=50",
        wasm.to_str().unwrap(),
    ];
    engine.operate(&[&add[..], &more[..]].concat());
    assert!(engine.served.process.terminate().success());

    let engine = start_engine(dir);
    let listed = engine.get("/v1/plugins");
    let strict = serde_json::json!({
        "kind": "policy", "vendor": "Acme", "model": "NB-IoT-A", "name": "strict",
        "settings": { "min-battery": "50" },
    });
    assert!(listed.as_array().unwrap().contains(&strict), "{listed}");
    assert!(engine.served.process.terminate().success());
}

#[test]
fn the_cli_and_the_python_example_each_run_a_whole_campaign_and_plugins_are_kept() {
    let dir = scratch("integrator");
    let engine = start_engine(&dir);
    let (old_a, new_a) = images(&dir, "NB-IoT-A", 3);
    let (old_b, new_b) = images(&dir, "NB-IoT-B", 7);
    let fleets = [
        sim(&engine, "NB-IoT-A", &old_a, 0),
        sim(&engine, "NB-IoT-B", &old_b, 1_000),
    ];
    wait_for_fleet(&engine, "NB-IoT-A");
    wait_for_fleet(&engine, "NB-IoT-B");

    let made = cli_campaign(&engine, &old_a, &new_a);
    cli_lists_and_task_actions(&engine, &made, &old_b);
    python_campaign(&engine, &old_b, &new_b);

    for fleet in fleets {
        assert!(fleet.terminate().success());
    }
    plugin_outlives_a_restart(&dir, engine);
}
