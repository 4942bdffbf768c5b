//! A data directory the engine cannot use stops it at start with a clear message: a store
//! written by a release of another format version, a directory another engine holds, and a
//! path that is a file. Nothing is changed in what was there.

use std::path::PathBuf;
use std::process::Command;

use fota_engine::platform::{Platform, PlatformConfig, PlatformError};
use fota_engine::plugin::HostConfig;
use fota_engine::server::ServerConfig;
use fota_engine::store::{Batch, FORMAT_VERSION, SledStore, Store, StoreLocation};
use fota_engine::webhooks::WebhookConfig;

/// A fresh path under the temporary directory.
fn scratch(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("fota-refusal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    let _ = std::fs::remove_file(&path);
    path
}

/// Why the platform did not start on `dir`.
async fn refusal(dir: &std::path::Path) -> String {
    let config = PlatformConfig {
        server: ServerConfig::loopback(),
        store: StoreLocation::Directory(dir.to_path_buf()),
        plugins: HostConfig::default(),
        webhooks: WebhookConfig::default(),
    };
    match Platform::start(config).await {
        Ok(_) => panic!("the platform started on {}", dir.display()),
        Err(error @ PlatformError::Store(_)) => error.to_string(),
        Err(other) => panic!("refused for another reason: {other}"),
    }
}

/// A store whose schema is one version newer than this release reads.
fn newer_store(dir: &std::path::Path) {
    let store = SledStore::open(dir).unwrap();
    let mut batch = Batch::new();
    batch.put_bytes("meta/schema", vec![FORMAT_VERSION + 1]);
    store.apply(batch).unwrap();
    store.flush().unwrap();
    drop(store);
    wait_released(dir);
}

/// Waits (up to 10 s) until no store holds `dir`: sled's background flusher lets go of the
/// database's file lock shortly after the store is dropped, not at once.
fn wait_released(dir: &std::path::Path) {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let db = std::fs::File::open(dir.join("db")).expect("the store's db file");
    while db.try_lock().is_err() {
        assert!(
            std::time::Instant::now() < give_up,
            "{} stays locked",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    db.unlock().unwrap();
}

#[tokio::test]
async fn a_store_of_an_unknown_format_version_stops_the_engine() {
    let dir = scratch("version");
    newer_store(&dir);
    let message = refusal(&dir).await;
    assert!(
        message.contains(&format!("format version {}", FORMAT_VERSION + 1))
            && message.contains("migrate"),
        "{message}"
    );
    // Refused, not rewritten: it still carries the newer version.
    wait_released(&dir);
    let again = SledStore::open(&dir).err().expect("still refused");
    assert!(again.to_string().contains("format version"), "{again}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_data_directory_held_by_another_store_stops_the_engine() {
    let dir = scratch("locked");
    let holder = SledStore::open(&dir).unwrap();
    let message = refusal(&dir).await;
    assert!(
        message.contains("cannot open the data directory")
            && message.contains(&*dir.to_string_lossy()),
        "{message}"
    );
    drop(holder);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_data_directory_that_is_a_file_stops_the_engine() {
    let file = scratch("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let message = refusal(&file).await;
    assert!(
        message.contains("cannot open the data directory"),
        "{message}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
    std::fs::remove_file(file).unwrap();
}

#[test]
fn fota_serve_exits_with_the_reason_on_a_store_it_cannot_read() {
    let dir = scratch("serve");
    newer_store(&dir);
    let output = Command::new(env!("CARGO_BIN_EXE_fota"))
        .args([
            "serve",
            "--coap-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("format version"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}
