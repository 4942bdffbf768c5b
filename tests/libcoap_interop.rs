//! Interoperability with a CoAP implementation nobody here wrote: libcoap's `coap-client`
//! downloads a package from the engine's Package URI with Block2, and the file it writes has
//! the package's sha256. Needs Debian's libcoap3-bin (`.ci/run` installs it and sets
//! FOTA_REQUIRE_LIBCOAP=1, so CI fails rather than skips when it is missing).

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use fota_engine::package;
use fota_engine::server::{Server, ServerConfig};
use sha2::{Digest, Sha256};

const CLIENT: &str = "coap-client-notls";

fn libcoap_present() -> bool {
    let present = Command::new(CLIENT).arg("-h").output().is_ok();
    if !present {
        assert!(
            std::env::var_os("FOTA_REQUIRE_LIBCOAP").is_none(),
            "{CLIENT} is not installed (apt-get install libcoap3-bin)"
        );
        eprintln!("skipped: {CLIENT} is not installed (apt-get install libcoap3-bin)");
    }
    present
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_downloads_a_package_from_its_uri_with_block2() {
    if !libcoap_present() {
        return;
    }
    let server = Server::start(ServerConfig::loopback()).await.unwrap();
    let image: Vec<u8> = (0..80 * 1024u32)
        .map(|i| (i * 7 + (i >> 9)) as u8)
        .collect();
    let shelved = server
        .shelf
        .put(Bytes::from(package::full(&image, "2.0").unwrap()));
    let uri = shelved.uri(&server.coap_addr().to_string());
    let dir = std::env::temp_dir().join(format!("fota-libcoap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut downloads = Vec::new();
    for block_size in [64, 512, 1024] {
        let file = dir.join(format!("package-{block_size}.bin"));
        let args = ["-m", "get", "-b", &block_size.to_string(), "-o"];
        let mut command = tokio::process::Command::new(CLIENT);
        command.args(args).arg(&file).arg(&uri).kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .expect("coap-client finishes in time")
            .expect("coap-client runs");
        assert!(output.status.success(), "coap-client failed: {output:?}");
        downloads.push((block_size, std::fs::read(&file).unwrap()));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    for (block_size, bytes) in downloads {
        assert_eq!(bytes.len(), shelved.len(), "{block_size}-byte blocks");
        assert_eq!(
            <[u8; 32]>::from(Sha256::digest(&bytes)),
            shelved.sha256,
            "{block_size}-byte blocks"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_gets_not_found_for_an_unknown_package() {
    if !libcoap_present() {
        return;
    }
    let server = Server::start(ServerConfig::loopback()).await.unwrap();
    let uri = format!("coap://{}/fw/0000000000000000", server.coap_addr());
    let output = tokio::process::Command::new(CLIENT)
        .args(["-m", "get", &uri])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("coap-client finishes in time")
        .expect("coap-client runs");
    let shown = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(shown.contains("4.04"), "coap-client shows 4.04: {shown}");
}
