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
    for input in ["plugins", "wit", "delta"] {
        println!("cargo::rerun-if-changed={}", root.join(input).display());
    }
    println!("cargo::rerun-if-changed=build");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let built = wasm_plugins::build_wasm_workspace(
        &root.join("plugins/Cargo.toml"),
        &plugins_target_dir(&out_dir),
    )
    .unwrap_or_else(|e| panic!("reference plugins: {e}"));
    for wasm in built {
        let dest = out_dir.join(wasm.file_name().expect("a file"));
        std::fs::copy(&wasm, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", wasm.display()));
    }
}

/// `<target>/plugins-wasm`: beside the outer build's profile directories (OUT_DIR is
/// `<target>/<profile>/build/<crate>/out`), so every profile shares one plugin build, and
/// outside the directory whose lock the outer cargo holds.
fn plugins_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .nth(4)
        .expect("OUT_DIR is four levels under the target dir")
        .join("plugins-wasm")
}
