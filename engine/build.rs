//! Builds the reference plugins in `plugins/` for wasm32-wasip2 and puts them in OUT_DIR, where
//! `src/plugin/embedded.rs` embeds them as the engine's default plugins.

#[path = "build/wasm_plugins.rs"]
mod wasm_plugins;

use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("engine/ is inside the workspace");
    for input in inputs(root) {
        println!("cargo::rerun-if-changed={}", input.display());
    }
    println!("cargo::rerun-if-changed=build");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let built = wasm_plugins::build_wasm_workspace(
        &root.join("plugins/Cargo.toml"),
        &wasm_plugins::plugins_target_dir(cargo_target_dir(&out_dir)),
    )
    .unwrap_or_else(|e| panic!("reference plugins: {e}"));
    for wasm in built {
        let dest = out_dir.join(wasm.file_name().expect("a file"));
        std::fs::copy(&wasm, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", wasm.display()));
    }
}

/// What the plugins are built from: `plugins/` (but a `target/` a developer may have built
/// there), the WIT contract, the delta codec the differ plugin compiles in, and the patched
/// LZMA crate under it.
fn inputs(root: &Path) -> Vec<PathBuf> {
    let plugins = std::fs::read_dir(root.join("plugins")).expect("plugins/ exists");
    let mut inputs: Vec<PathBuf> = plugins
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| !path.ends_with("target"))
        .collect();
    inputs.extend([
        root.join("wit"),
        root.join("delta/src"),
        root.join("delta/Cargo.toml"),
        root.join("vendor/lzma-rust2/src"),
        root.join("vendor/lzma-rust2/Cargo.toml"),
    ]);
    inputs
}

/// The outer build's target directory: OUT_DIR is `<target>/<profile>/build/<crate>/out`, so
/// every profile shares one plugin build.
fn cargo_target_dir(out_dir: &Path) -> &Path {
    out_dir
        .ancestors()
        .nth(4)
        .expect("OUT_DIR is four levels under the target dir")
}
