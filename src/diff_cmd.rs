//! `fota diff OLD NEW OUT [--plugin FILE]`: makes a delta package with a differ plugin (the
//! engine's built-in one, or a vendor's component), through the plugin host exactly as the
//! engine does, checks it, and writes it.

use anyhow::{Context, anyhow};
use fota_engine::plugin::{DifferPlugin, HostConfig, Plugin, PluginHost, embedded};
use std::path::Path;
use std::time::Instant;

/// Makes the delta package from `old` to `new` with the differ in `plugin` (the built-in one when
/// `None`), checks that it rebuilds `new`, writes it to `out`.
pub fn diff(old: &Path, new: &Path, out: &Path, plugin: Option<&Path>) -> anyhow::Result<()> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let (old_image, new_image) = (read(old)?, read(new)?);
    let host = PluginHost::new(HostConfig::default()).map_err(|e| anyhow!("plugin host: {e:#}"))?;
    let differ: DifferPlugin = match plugin {
        None => Plugin::load(&host, embedded::BSDIFF_NAME, embedded::BSDIFF, Vec::new())?,
        Some(file) => {
            let name = file.display().to_string();
            Plugin::load(&host, &name, &read(file)?, Vec::new())?
        }
    };
    let started = Instant::now();
    let patch = differ
        .make_patch_blocking(&old_image, &new_image)?
        .map_err(|e| anyhow!("differ refused: {e}"))?;
    let took = started.elapsed();
    let rebuilt = differ
        .apply_patch_blocking(&old_image, &patch)?
        .map_err(|e| anyhow!("patch does not apply: {e}"))?;
    anyhow::ensure!(
        rebuilt == new_image,
        "the patch does not rebuild {}",
        new.display()
    );
    std::fs::write(out, &patch).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{}: {} bytes, {:.2} % of {} ({} bytes), made in {took:.2?}",
        out.display(),
        patch.len(),
        100.0 * patch.len() as f64 / new_image.len() as f64,
        new.display(),
        new_image.len()
    );
    Ok(())
}
