//! `fota plugin check FILE.wasm`: tells a vendor whether the engine would load a component, and
//! as which kind of plugin.

use anyhow::Context;
use std::path::Path;

/// Validates the component at `path` against the `fota:plugin` worlds and prints what it
/// implements, exports and imports. Fails (with the reason) if the engine would refuse it.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let wasm = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let report = fota_engine::plugin::check_component(&wasm)
        .with_context(|| format!("checking {}", path.display()))?;
    println!("{}: ok ({} bytes)", path.display(), wasm.len());
    print!("{report}");
    Ok(())
}
