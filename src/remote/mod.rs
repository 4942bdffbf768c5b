//! The `fota` commands that drive a running engine over its HTTP API: firmware, packages,
//! groups, tasks (with `task watch`'s live progress), statistics and plugins. Each prints the
//! API's JSON answer, so scripts can read it.

mod client;
mod watch;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

pub use client::Api;

/// Where the API is.
#[derive(Args, Clone)]
pub struct ApiArgs {
    /// The engine's HTTP API.
    #[arg(
        long,
        global = true,
        env = "FOTA_API",
        default_value = "http://127.0.0.1:8080"
    )]
    api: String,
    /// Bearer token (operator to change things, viewer to read).
    #[arg(long, global = true, env = "FOTA_TOKEN")]
    token: Option<String>,
}

/// `fota firmware ...`
#[derive(Subcommand)]
pub enum FirmwareCommand {
    /// Uploads a firmware image.
    Add {
        #[arg(long)]
        vendor: String,
        #[arg(long)]
        model: String,
        #[arg(long)]
        version: String,
        /// The image.
        file: PathBuf,
    },
    /// Lists firmware versions.
    List,
}

/// `fota package ...`
#[derive(Subcommand)]
pub enum PackageCommand {
    /// Makes a package: full to firmware `--to`, or a delta from `--from`.
    Create {
        /// Firmware id devices end with.
        #[arg(long)]
        to: String,
        /// Firmware id a delta starts from (none: a full package).
        #[arg(long)]
        from: Option<String>,
        /// How the package is framed: raw, signed or packager (default: the model's format,
        /// raw unless bound with PUT /v1/formats/{vendor}/{model}).
        #[arg(long)]
        format: Option<String>,
    },
    /// Lists packages.
    List,
}

/// `fota group ...`
#[derive(Subcommand)]
pub enum GroupCommand {
    /// Creates a group of one vendor and module model.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        vendor: String,
        #[arg(long)]
        model: String,
    },
    /// Adds devices to a group: the endpoints given, or with `--all` every known device of the
    /// group's vendor and model.
    Add {
        group: String,
        endpoints: Vec<String>,
        #[arg(long)]
        all: bool,
    },
    /// Marks devices of a group as test devices (a task's test stage runs on them), or with
    /// `--unmark` as ordinary devices again.
    TestDevices {
        group: String,
        endpoints: Vec<String>,
        #[arg(long)]
        unmark: bool,
    },
    /// Lists groups.
    List,
}

/// `fota task ...`
#[derive(Subcommand)]
pub enum TaskCommand {
    /// Creates an upgrade task.
    Create(TaskArgs),
    /// Starts a not-started task whose execution time is unset or past.
    Start { id: String },
    /// Pauses: downloads finish, nothing is installed.
    Pause { id: String },
    /// Resumes a paused task.
    Resume { id: String },
    /// Opens the next stage of a task waiting for approval.
    Approve { id: String },
    /// Cancels for good.
    Cancel { id: String },
    /// Shows a task's progress live until it ends.
    Watch { id: String },
    /// Lists tasks.
    List,
}

/// What a task does.
#[derive(Args)]
pub struct TaskArgs {
    #[arg(long)]
    name: String,
    #[arg(long)]
    group: String,
    #[arg(long)]
    package: String,
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Seconds before a failed device is tried again.
    #[arg(long, default_value_t = 60)]
    retry_interval: u64,
    /// Start this many seconds from now (default: now).
    #[arg(long)]
    start_in: Option<u64>,
    /// End this many seconds from now: devices not upgraded by then end as "task expired".
    #[arg(long)]
    deadline_in: Option<u64>,
    #[arg(long, default_value_t = 1000)]
    max_concurrent: usize,
    #[arg(long, default_value_t = 50)]
    max_per_cell: usize,
    /// Pause a cell whose devices report a weaker signal (dBm).
    #[arg(long, allow_hyphen_values = true)]
    min_signal: Option<i32>,
    /// Pause the task when this share of finished devices failed.
    #[arg(long)]
    max_failure_rate: Option<f64>,
    /// The rollout's stages, as the API's JSON array, e.g. '[{"name": "test", "devices":
    /// "test_devices"}, {"name": "rest", "devices": {"up_to_percent": 100}}]'.
    #[arg(long, value_parser = parse_json)]
    stages: Option<Value>,
}

/// A JSON argument.
fn parse_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))
}

/// `fota plugin add`
#[derive(Args)]
pub struct PluginAdd {
    /// policy, capability, differ or packager.
    #[arg(long)]
    kind: String,
    #[arg(long)]
    name: String,
    /// Vendor and model it serves (neither: the default of its kind).
    #[arg(long, requires = "model")]
    vendor: Option<String>,
    #[arg(long, requires = "vendor")]
    model: Option<String>,
    /// A setting, key=value; repeat for more.
    #[arg(long = "setting")]
    settings: Vec<String>,
    /// The component (.wasm).
    file: PathBuf,
}

impl ApiArgs {
    /// The client.
    pub fn api(&self) -> Api {
        Api::new(&self.api, self.token.clone())
    }
}

/// Runs a firmware command.
pub fn firmware(api: &Api, command: FirmwareCommand) -> anyhow::Result<()> {
    match command {
        FirmwareCommand::Add {
            vendor,
            model,
            version,
            file,
        } => {
            let image = std::fs::read(&file)?;
            let query = [
                ("vendor", vendor.as_str()),
                ("model", &model),
                ("version", &version),
            ];
            print(api.upload("/v1/firmware", &query, &image)?)
        }
        FirmwareCommand::List => print(api.get("/v1/firmware")?),
    }
}

/// Runs a package command.
pub fn package(api: &Api, command: PackageCommand) -> anyhow::Result<()> {
    match command {
        PackageCommand::Create { to, from, format } => {
            let mut body = json!({"kind": "full", "to_firmware": to});
            if let Some(from) = from {
                body["kind"] = json!("delta");
                body["from_firmware"] = json!(from);
            }
            if let Some(format) = format {
                body["format"] = json!(format);
            }
            print(api.post("/v1/packages", &body)?)
        }
        PackageCommand::List => print(api.get("/v1/packages")?),
    }
}

/// Runs a group command.
pub fn group(api: &Api, command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::Create {
            name,
            vendor,
            model,
        } => print(api.post(
            "/v1/groups",
            &json!({"name": name, "vendor": vendor, "model": model}),
        )?),
        GroupCommand::Add {
            group,
            mut endpoints,
            all,
        } => {
            if all {
                endpoints.extend(devices_of_group_model(api, &group)?);
            }
            let body = json!({ "endpoints": endpoints });
            print(api.post(&format!("/v1/groups/{group}/devices"), &body)?)
        }
        GroupCommand::TestDevices {
            group,
            endpoints,
            unmark,
        } => {
            let (path, body) = (
                format!("/v1/groups/{group}/test-devices"),
                json!({ "endpoints": endpoints }),
            );
            let group = if unmark {
                api.delete_with(&path, &body)?
            } else {
                api.post(&path, &body)?
            };
            print(group)
        }
        GroupCommand::List => print(api.get("/v1/groups")?),
    }
}

/// Every known device of the group's vendor and model.
fn devices_of_group_model(api: &Api, group: &str) -> anyhow::Result<Vec<String>> {
    let group = api.get(&format!("/v1/groups/{group}"))?;
    let (vendor, model) = (text(&group["vendor"]), text(&group["model"]));
    let devices = api.get_all("/v1/devices", &[("vendor", &vendor), ("model", &model)])?;
    Ok(devices.iter().map(|d| text(&d["endpoint"])).collect())
}

/// Runs a task command.
pub fn task(api: &Api, command: TaskCommand) -> anyhow::Result<()> {
    let act = |id: &str, action: &str| api.post(&format!("/v1/tasks/{id}/{action}"), &json!({}));
    match command {
        TaskCommand::Create(args) => print(api.post("/v1/tasks", &task_spec(&args))?),
        TaskCommand::Start { id } => print(act(&id, "start")?),
        TaskCommand::Pause { id } => print(act(&id, "pause")?),
        TaskCommand::Resume { id } => print(act(&id, "resume")?),
        TaskCommand::Approve { id } => print(act(&id, "approve")?),
        TaskCommand::Cancel { id } => print(act(&id, "cancel")?),
        TaskCommand::Watch { id } => watch::watch(api, &id),
        TaskCommand::List => print(Value::Array(api.get_all("/v1/tasks", &[])?)),
    }
}

fn task_spec(args: &TaskArgs) -> Value {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({
        "name": args.name,
        "group_id": args.group,
        "package_id": args.package,
        "retries": args.retries,
        "retry_interval_secs": args.retry_interval,
        "execution_time": args.start_in.map(|s| now_ms + s * 1000),
        "deadline": args.deadline_in.map(|s| now_ms + s * 1000),
        "pacing": {"max_concurrent": args.max_concurrent, "max_per_cell": args.max_per_cell},
        "min_signal_dbm": args.min_signal,
        "max_failure_rate": args.max_failure_rate,
        "failure_sample": 20,
        "stages": args.stages.clone().unwrap_or_else(|| json!([])),
    })
}

/// `fota stats`: per vendor and model, then per package.
pub fn stats(api: &Api) -> anyhow::Result<()> {
    let stats = api.get("/v1/stats")?;
    println!(
        "{:<24} {:>8} {:>9} {:>7} {:>12} {:>9} {:>13}",
        "vendor / model or package",
        "devices",
        "upgraded",
        "failed",
        "bytes sent",
        "re-sent",
        "not installed"
    );
    let rows = stats["models"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| (format!("{} {}", text(&m["vendor"]), text(&m["model"])), m))
        .chain(
            stats["packages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| (format!("package {}", text(&p["package_id"])), p)),
        );
    for (label, c) in rows {
        println!(
            "{label:<24} {:>8} {:>9} {:>7} {:>12} {:>9} {:>13}",
            c["devices"],
            c["successes"],
            c["failures"],
            c["bytes_first"],
            c["bytes_resent"],
            c["downloads_not_installed"]
        );
    }
    Ok(())
}

/// `fota plugin add`.
pub fn plugin_add(api: &Api, args: PluginAdd) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.file)?;
    let mut query = vec![("kind", args.kind.as_str()), ("name", &args.name)];
    if let (Some(vendor), Some(model)) = (&args.vendor, &args.model) {
        query.extend([("vendor", vendor.as_str()), ("model", model)]);
    }
    query.extend(args.settings.iter().map(|s| ("setting", s.as_str())));
    print(api.upload("/v1/plugins", &query, &wasm)?)
}

fn print(value: Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// A JSON string's text ("" when it is not one).
pub(crate) fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}
