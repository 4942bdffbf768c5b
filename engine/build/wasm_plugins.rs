//! Builds a cargo workspace of plugin crates for wasm32-wasip2 (release), with an inner cargo
//! that runs in its own target directory and an environment cleaned of the outer build's
//! settings; adds the target to the toolchain first when it is missing. Shared by `build.rs`
//! (the reference plugins) and the tests (hostile plugins, the vendor template).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target every plugin is built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// Variables of the outer cargo that must not leak into the inner one: they would change its
/// flags (RUSTFLAGS meant for the host), its target directory (whose lock the outer build
/// holds), its profile, or run clippy over the plugins.
fn leaks(var: &str) -> bool {
    let keep = [
        "CARGO_HOME",
        "CARGO_MAKEFLAGS",
        "CARGO_NET_OFFLINE",
        "CARGO_REGISTRIES_CRATES_IO_PROTOCOL",
    ];
    (var.starts_with("CARGO_") && !keep.contains(&var))
        || var.starts_with("__CARGO")
        || [
            "RUSTFLAGS",
            "RUSTDOCFLAGS",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "TARGET",
            "HOST",
        ]
        .contains(&var)
        || [
            "OUT_DIR",
            "OPT_LEVEL",
            "PROFILE",
            "DEBUG",
            "NUM_JOBS",
            "RUSTC_LINKER",
        ]
        .contains(&var)
}

/// The target directory every plugin workspace builds in (the reference plugins, the vendor
/// templates, the test plugins), so their common dependencies are built once:
/// `<target>/plugins-wasm`, beside the outer build's profile directories and outside the
/// directory whose lock the outer cargo holds.
pub fn plugins_target_dir(cargo_target_dir: &Path) -> PathBuf {
    cargo_target_dir.join("plugins-wasm")
}

/// Builds every member of the workspace at `manifest` into `target_dir`; returns the `.wasm`
/// files of its members. Both paths must be absolute: the inner cargo runs in the manifest's
/// directory.
pub fn build_wasm_workspace(manifest: &Path, target_dir: &Path) -> Result<Vec<PathBuf>, String> {
    ensure_target_installed()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    for (var, _) in std::env::vars_os() {
        if var.to_str().is_some_and(leaks) {
            cmd.env_remove(var);
        }
    }
    cmd.args([
        "build",
        "--release",
        "--workspace",
        "--target",
        WASM_TARGET,
        "--manifest-path",
    ])
    .arg(manifest)
    .arg("--target-dir")
    .arg(target_dir);
    // From the workspace's own directory, so its `.cargo/config.toml` (build flags) applies.
    if let Some(dir) = manifest.parent() {
        cmd.current_dir(dir);
    }
    // Cargo names every artifact it built (or found fresh) on stdout; its diagnostics go to
    // stderr as usual. Several workspaces share one target directory (their common
    // dependencies are built once), so the output directory holds other workspaces' too.
    cmd.arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let output = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building {} for {WASM_TARGET} failed ({}); is the target installed? \
             (rustup target add {WASM_TARGET}, or see rust-toolchain.toml)",
            manifest.display(),
            output.status
        ));
    }
    Ok(wasm_artifacts(&String::from_utf8_lossy(&output.stdout)))
}

/// The `.wasm` files named in cargo's JSON messages (a path is a JSON string: the text
/// between two quotes, ending in `.wasm`).
fn wasm_artifacts(messages: &str) -> Vec<PathBuf> {
    let mut wasm: Vec<PathBuf> = messages
        .lines()
        .filter(|line| line.contains("\"reason\":\"compiler-artifact\""))
        .flat_map(|line| line.split('"'))
        .filter(|text| text.ends_with(".wasm"))
        .map(PathBuf::from)
        .collect();
    wasm.sort();
    wasm.dedup();
    wasm
}

/// Makes sure the toolchain that builds the plugins has the standard library for
/// [`WASM_TARGET`]. rustup adds a `rust-toolchain.toml`'s targets only when it installs the
/// toolchain, so a machine that already had 1.95.0 lacks it: add it through rustup then, for
/// the very toolchain this build runs on, or say what to do where rustup is not there.
fn ensure_target_installed() -> Result<(), String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = sysroot(&rustc)?;
    let target_lib = sysroot.join("lib/rustlib").join(WASM_TARGET);
    if target_lib.is_dir() {
        return Ok(());
    }
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok();
    println!(
        "cargo::warning=the {WASM_TARGET} target is not installed for the toolchain at {}: \
         adding it with rustup (once)",
        sysroot.display()
    );
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", WASM_TARGET]);
    if let Some(toolchain) = &toolchain {
        rustup.args(["--toolchain", toolchain]);
    }
    let how = format!(
        "the {WASM_TARGET} target, which the plugins are built for, is not installed for the \
         toolchain at {}: run `rustup target add {WASM_TARGET}{}` (or, without rustup, install \
         the {WASM_TARGET} standard library for this rustc)",
        sysroot.display(),
        toolchain
            .as_deref()
            .map(|t| format!(" --toolchain {t}"))
            .unwrap_or_default(),
    );
    match rustup.status() {
        Ok(status) if status.success() && target_lib.is_dir() => Ok(()),
        Ok(status) => Err(format!("{how}; `rustup target add` failed ({status})")),
        Err(e) => Err(format!("{how}; rustup could not be run ({e})")),
    }
}

/// The sysroot of `rustc`: where its standard libraries, one folder per target, are.
fn sysroot(rustc: &str) -> Result<PathBuf, String> {
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run {rustc}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{rustc} --print sysroot failed ({})", out.status));
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(PathBuf::from(path))
}
