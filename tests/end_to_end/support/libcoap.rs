//! libcoap's command-line client (Debian's libcoap3-bin) for interop tests: plain
//! (`coap-client-notls`) and over DTLS (`coap-client-openssl`, `coap-client-gnutls`), run from
//! a chosen local port, with a bound on its run. `.ci/run` installs it and sets
//! FOTA_REQUIRE_LIBCOAP=1, so CI fails rather than skips when it is missing.

use std::process::{Command, Output};
use std::time::Duration;

/// Whether `client` is installed; without it a test skips, unless CI requires it.
pub fn present(client: &str) -> bool {
    let present = Command::new(client).arg("-h").output().is_ok();
    if !present {
        assert!(
            std::env::var_os("FOTA_REQUIRE_LIBCOAP").is_none(),
            "{client} is not installed (apt-get install libcoap3-bin)"
        );
        eprintln!("skipped: {client} is not installed (apt-get install libcoap3-bin)");
    }
    present
}

/// Runs `client ARGS` from local port `port`; its output.
pub async fn run(client: &str, port: u16, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(client);
    command
        .args(["-p", &port.to_string()])
        .args(args)
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("coap-client finishes in time")
        .expect("coap-client runs")
}

/// A local UDP port free a moment ago, for coap-client to send from.
pub fn free_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// What coap-client printed, both streams.
pub fn shown(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}
