//! Interoperability with a CoAP implementation nobody here wrote: libcoap's `coap-client`
//! registers (POST /rd) from a fixed local port and then downloads a package from the engine's
//! Package URI with Block2 from there, and the file it writes has the package's sha256; before
//! it registered, that source got no package byte. Needs Debian's libcoap3-bin (see `support::libcoap`).

use bytes::Bytes;
use fota_engine::package;
use fota_engine::server::{Server, ServerConfig};
use sha2::{Digest, Sha256};

use crate::support::libcoap::{self, free_port, shown};

const CLIENT: &str = "coap-client-notls";

/// Runs the plain client from `port`.
async fn coap_client(port: u16, args: &[&str]) -> std::process::Output {
    libcoap::run(CLIENT, port, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_registers_then_downloads_a_package_from_its_uri_with_block2() {
    if !libcoap::present(CLIENT) {
        return;
    }
    let server = Server::start(ServerConfig::loopback()).await.unwrap();
    let image: Vec<u8> = (0..80 * 1024u32)
        .map(|i| (i * 7 + (i >> 9)) as u8)
        .collect();
    let shelved = server
        .shelf
        .put(Bytes::from(package::full(&image, "2.0").unwrap()));
    let uri = shelved.uri("coap", &server.coap_addr().to_string());

    // Unregistered, the source gets no package byte: a forged one must not be amplified.
    let port = free_port();
    let refused = coap_client(port, &["-m", "get", &uri]).await;
    assert!(shown(&refused).contains("4.01"), "{}", shown(&refused));

    // A pulling device is registered from the port it fetches from.
    let rd = format!(
        "coap://{}/rd?ep=libcoap-client&lt=120&b=U",
        server.coap_addr()
    );
    let registered = coap_client(port, &["-m", "post", "-t", "40", "-e", "</5/0>", &rd]).await;
    assert!(registered.status.success(), "{}", shown(&registered));
    assert!(server.registry.get("libcoap-client").is_some());

    let dir = std::env::temp_dir().join(format!("fota-libcoap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut downloads = Vec::new();
    for block_size in [64, 512, 1024] {
        let file = dir.join(format!("package-{block_size}.bin"));
        let size = block_size.to_string();
        let file_arg = file.to_str().unwrap();
        let output = coap_client(port, &["-m", "get", "-b", &size, "-o", file_arg, &uri]).await;
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

    // A registered device asking for a package that is not there gets 4.04.
    let unknown = format!("coap://{}/fw/{}", server.coap_addr(), "0".repeat(32));
    let output = coap_client(port, &["-m", "get", &unknown]).await;
    assert!(shown(&output).contains("4.04"), "{}", shown(&output));
}
