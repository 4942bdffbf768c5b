//! `fota task watch`: a task's progress as live bars (indicatif) until the task ends, read from
//! the API once a second.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;

use super::{Api, text};

/// Follows task `id` until it is stopped or completed.
pub fn watch(api: &Api, id: &str) -> anyhow::Result<()> {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} {msg}")?
        .progress_chars("=> ");
    let bar = |name: &str| {
        let bar = bars.add(ProgressBar::new(0).with_style(style.clone()));
        bar.set_prefix(name.to_string());
        bar
    };
    let (downloaded, finished) = (bar("downloaded"), bar("finished"));
    loop {
        let task = api.get(&format!("/v1/tasks/{id}"))?;
        let items = api.get_all(&format!("/v1/tasks/{id}/devices"), &[])?;
        let count = |f: &dyn Fn(&Value) -> bool| items.iter().filter(|d| f(d)).count() as u64;
        for bar in [&downloaded, &finished] {
            bar.set_length(items.len() as u64);
        }
        downloaded.set_position(count(&|d| text(&d["download"]) == "downloaded"));
        finished.set_position(count(&|d| {
            matches!(text(&d["phase"]).as_str(), "finished" | "removed")
        }));
        let upgraded = count(&|d| text(&d["result"]) == "successful");
        let status = text(&task["status"]);
        finished.set_message(format!("{status}, {upgraded} upgraded"));
        if status == "completed" || status == "stopped" {
            downloaded.finish();
            finished.finish();
            println!(
                "task {id} is {status}: {upgraded} of {} devices upgraded",
                items.len()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
