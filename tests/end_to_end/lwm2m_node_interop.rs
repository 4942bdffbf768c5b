//! Interoperability with an LwM2M client nobody here wrote: lwm2m-node-lib 1.4.0 (npm,
//! Telefonica; CoAP by node-coap 0.22), driven by `tests/lwm2m_node/client.js`. The engine runs
//! in process; the client is `node` as a child process and reports what it does as one JSON
//! line per event on stdout.
//!
//! Given the client registered with /3/0 and a pull-only /5/0, when the engine reads its Device
//! object resource by resource, then it gets what the client holds; and when it delivers a
//! package with `Method::Pull`, then the client fetches it from the Package URI with Block2, the
//! file it writes has the package's sha256, and after Execute Update it registers again with the
//! new version: the delivery ends `Upgraded`.
//!
//! What lwm2m-node-lib does (read in its source, seen here): plain text only, so a read of a
//! whole instance (/3/0) is answered 4.04 and of an object (/3) 4.00; a request in a content
//! format it never registered (TLV, SenML) is dropped without an answer, not even an ACK; a
//! resource whose value is 0 or '' reads as 4.04 (the client keeps numbers as strings); no
//! Block1 reassembly (node-coap's server hands every block to the handler as a whole request);
//! a Cancel Observation (GET with Observe 1) is never answered; every registration Update leaves
//! from a new port, where it then listens too; and the library has no download of its own, so a
//! program using it fetches packages with node-coap's global agent, from yet another port
//! (client.js can also fetch from the registration's socket, `--download-from registration`,
//! as a module with one socket does). The engine reads a device that reads no whole instance
//! resource by resource, and serves packages to any port of a host with a registered device.
//!
//! Needs node and `npm ci --prefix tests/lwm2m_node`. `.ci/run` sets FOTA_REQUIRE_NODE_LWM2M=1,
//! so CI fails rather than skips when either is missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use coap_lite::ResponseType;
use fota_engine::catalog::devices::survey;
use fota_engine::lwm2m::firmware::{self, FirmwareState, UpdateResult};
use fota_engine::lwm2m::{LwM2mPath, Registration, RegistrationEvent, Value};
use fota_engine::server::{Server, ServerConfig};
use fota_engine::transfer::{DeliveryJob, Method, ShelvedPackage, TransferOutcome};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// Longest the client may take to start and register, or the engine to deliver a package.
const BOUND: Duration = Duration::from_secs(60);

/// The client's directory: its script and its `node_modules`.
fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lwm2m_node")
}

/// Whether node and the installed lwm2m-node-lib are there. When they are not: panics if
/// FOTA_REQUIRE_NODE_LWM2M is set (CI), otherwise says the test is skipped and returns false.
fn node_client_present() -> bool {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    let library = client_dir().join("node_modules/lwm2m-node-lib/package.json");
    let missing = if !node {
        "node is not installed (apt-get install nodejs npm)"
    } else if !library.exists() {
        "lwm2m-node-lib is not installed (npm ci --prefix tests/lwm2m_node)"
    } else {
        return true;
    };
    assert!(
        std::env::var_os("FOTA_REQUIRE_NODE_LWM2M").is_none(),
        "{missing}"
    );
    eprintln!("skipped: {missing}");
    false
}

/// `client.js` as a child process, and the events it printed.
struct NodeClient {
    endpoint: String,
    /// Killed when the test ends, however it ends.
    _child: tokio::process::Child,
    events: mpsc::UnboundedReceiver<Json>,
    /// Every event so far, for the message of a failed wait.
    seen: Vec<Json>,
}

impl NodeClient {
    /// Starts a client registering to `server` as `endpoint`, writing what it downloads to
    /// `out`, with extra command-line `args` (see client.js).
    fn start(server: SocketAddr, endpoint: &str, out: &Path, args: &[&str]) -> NodeClient {
        let mut child = tokio::process::Command::new("node")
            .arg(client_dir().join("client.js"))
            .args(["--host", &server.ip().to_string()])
            .args(["--port", &server.port().to_string()])
            .args(["--endpoint", endpoint, "--lifetime", "600"])
            .arg("--out")
            .arg(out)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().expect("piped");
        let (sender, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Json>(&line) {
                    Ok(event) => {
                        if sender.send(event).is_err() {
                            return;
                        }
                    }
                    Err(_) => eprintln!("client.js: {line}"),
                }
            }
        });
        NodeClient {
            endpoint: endpoint.to_string(),
            _child: child,
            events,
            seen: Vec::new(),
        }
    }

    /// The next event named `name` (events before it are kept in `seen`), within `BOUND`.
    async fn next(&mut self, name: &str) -> Json {
        let wait = async {
            loop {
                let event = self.events.recv().await?;
                self.seen.push(event.clone());
                if event["event"] == name {
                    return Some(event);
                }
            }
        };
        match tokio::time::timeout(BOUND, wait).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!(
                "client.js exited before {name:?}; it printed {:#?}",
                self.seen
            ),
            Err(_) => panic!(
                "no {name:?} from client.js in {BOUND:?}; it printed {:#?}",
                self.seen
            ),
        }
    }

    /// Every event named `name` seen so far.
    fn seen(&self, name: &str) -> Vec<&Json> {
        self.seen.iter().filter(|e| e["event"] == name).collect()
    }
}

/// An engine on loopback, and a client registered to it (with `args`); returns the registration.
async fn registered(name: &str, args: &[&str]) -> (Server, NodeClient, Registration, PathBuf) {
    let server = Server::start(ServerConfig::loopback()).await.unwrap();
    let mut events = server.registry.subscribe();
    let endpoint = format!("urn:dev:node-{name}-{}", std::process::id());
    let out = std::env::temp_dir().join(format!("fota-node-{name}-{}.bin", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let mut client = NodeClient::start(server.coap_addr(), &endpoint, &out, args);
    let registration = tokio::time::timeout(BOUND, async {
        loop {
            match events.recv().await {
                Ok(RegistrationEvent::Registered(r)) if r.endpoint == endpoint => return r,
                Ok(_) => {}
                Err(error) => panic!("registry events: {error}"),
            }
        }
    })
    .await
    .expect("the client registers");
    let said = client.next("registered").await;
    assert_eq!(said["port"], registration.address.port(), "{said}");
    (server, client, registration, out)
}

/// A raw image of `len` bytes: what a stock client stores is exactly what it is sent.
fn image(len: usize) -> Bytes {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn text(value: Value) -> String {
    value.as_string().expect("a string")
}

fn number(value: Value) -> i64 {
    value.as_i64().expect("a number")
}

/// Delivers `package` to `endpoint` by pull in `block_size` blocks, to the end (within
/// `BOUND`).
async fn pull(
    server: &Server,
    endpoint: &str,
    package: std::sync::Arc<ShelvedPackage>,
    block_size: usize,
) -> fota_engine::transfer::TransferReport {
    let job = DeliveryJob::new(endpoint, package, "2.0", block_size, Method::Pull);
    tokio::time::timeout(BOUND, server.delivery.run(&job))
        .await
        .expect("the delivery ends in time")
}

/// The downloaded file has the package's sha256, and the client said so.
fn assert_downloaded(client: &NodeClient, out: &Path, package: &ShelvedPackage) {
    let bytes = std::fs::read(out).expect("the client wrote the package");
    assert_eq!(bytes.len(), package.len());
    assert_eq!(<[u8; 32]>::from(Sha256::digest(&bytes)), package.sha256);
    let said = client.seen("downloaded");
    let said = said.last().expect("a downloaded event");
    assert_eq!(said["size"], package.len(), "{said}");
    assert_eq!(said["sha256"], hex::encode(package.sha256), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lwm2m_node_lib_pulls_a_package_with_block2_and_upgrades() {
    if !node_client_present() {
        return;
    }
    let args = [
        "--next-version",
        "2.0",
        "--block-size",
        "256",
        "--download-from",
        "registration",
    ];
    let (server, mut client, registration, out) = registered("upgrade", &args).await;
    assert_eq!(registration.lwm2m_version, "1.0");
    assert!(registration.binding.udp && !registration.binding.queue_mode);
    assert!(registration.has_object(3) && registration.has_object(5));
    let device = registration.address;
    let m = &server.management;
    let read = |path: LwM2mPath| async move {
        m.read_value(device, path)
            .await
            .unwrap_or_else(|error| panic!("Read {path}: {error}"))
    };

    // The Device object, resource by resource (plain text).
    assert_eq!(text(read(firmware::MANUFACTURER).await), "Acme");
    assert_eq!(text(read(firmware::MODEL_NUMBER).await), "NB-N");
    assert_eq!(text(read(firmware::FIRMWARE_VERSION).await), "1.0");
    assert_eq!(number(read(firmware::BATTERY_LEVEL).await), 0);
    assert_eq!(number(read(firmware::POWER_SOURCES).await), 6, "AC");
    assert_eq!(number(read(firmware::DELIVERY_METHOD).await), 0, "pull");
    assert_eq!(number(read(firmware::STATE).await), 0);
    let reads = client.next("read").await;
    assert_eq!(
        reads["path"], "/3/0/0",
        "the client answered the reads itself: {reads}"
    );
    // What the library answers to a whole instance, an object, a resource it does not hold.
    for (path, code) in [
        (LwM2mPath::instance(3, 0), ResponseType::NotFound),
        (LwM2mPath::object(3), ResponseType::BadRequest),
        (LwM2mPath::resource(3, 0, 99), ResponseType::NotFound),
    ] {
        let refused = m.read(device, path).await.unwrap_err();
        assert_eq!(refused.code(), Some(code), "{path}: {refused}");
    }

    // A Package URI with nothing behind it: the client says Invalid URI (7) and stays Idle.
    let missing = format!("coap://{}/fw/0000000000000000", server.coap_addr());
    m.write_value(device, firmware::PACKAGE_URI, Value::String(missing))
        .await
        .unwrap();
    let fetching = client.next("state").await;
    assert_eq!(
        fetching["state"],
        FirmwareState::Downloading.number(),
        "{fetching}"
    );
    let error = client.next("error").await;
    assert_eq!(
        error["result"],
        UpdateResult::InvalidUri.number(),
        "{error}"
    );
    let idle = client.next("state").await;
    assert_eq!(idle["state"], FirmwareState::Idle.number(), "{idle}");
    let result = read(firmware::UPDATE_RESULT).await;
    assert_eq!(number(result), UpdateResult::InvalidUri.number());

    // The delivery: the engine resets the failure (an empty Package URI), writes the package's
    // URI, the client fetches it in 256-byte Block2 blocks, Update, a new registration on 2.0.
    let len = 80 * 1024 + 100;
    let package = server.shelf.put(image(len));
    let report = pull(&server, &client.endpoint, package.clone(), 256).await;
    eprintln!("delivery report: {report:?}");
    assert_eq!(
        report.outcome,
        TransferOutcome::Upgraded {
            version: "2.0".into()
        },
        "client events: {:#?}",
        client.seen
    );
    assert_eq!(report.interruptions, 0, "{report:?}");
    assert_eq!(report.wire.package_first, len as u64, "{report:?}");

    client.next("installed").await;
    let again = client.next("registered").await;
    assert_eq!(again["count"], 2, "{again}");
    assert_downloaded(&client, &out, &package);
    let writes = client.seen("write");
    let resets = writes
        .iter()
        .filter(|w| w["path"] == "/5/0/1" && w["value"] == "")
        .count();
    assert_eq!(resets, 1, "one reset, an empty Package URI: {writes:#?}");
    assert_eq!(
        client
            .seen("execute")
            .iter()
            .filter(|e| e["path"] == "/5/0/2")
            .count(),
        1,
        "Update executed once"
    );
    let blocks = server.shelf.block_counts();
    assert_eq!(blocks.served, len.div_ceil(256) as u64, "{blocks:?}");
    assert_eq!(blocks.served_bytes, len as u64, "{blocks:?}");

    // The new registration reports what the client installed.
    let now = server
        .registry
        .get(&client.endpoint)
        .expect("registered again");
    assert_ne!(now.id, registration.id);
    let version = m.read_value(now.address, firmware::FIRMWARE_VERSION).await;
    assert_eq!(text(version.unwrap()), "2.0");
    let result = m.read_value(now.address, firmware::UPDATE_RESULT).await;
    assert_eq!(number(result.unwrap()), UpdateResult::Success.number());
    let _ = std::fs::remove_file(&out);
}

/// A client that cannot hold the package says so in Update Result (2, not enough flash) and
/// goes back to Idle: the delivery ends as the device's failure, without Update. The engine
/// then cancels its observations of State and Update Result (GET with Observe 1), which
/// lwm2m-node-lib never answers (it takes the GET for a new observation on a response it never
/// sends; node-coap only ACKs it after 500 ms): the delivery's end waits for that 5 s at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lwm2m_node_lib_short_of_flash_fails_the_delivery() {
    if !node_client_present() {
        return;
    }
    let args = ["--max-size", "4096", "--download-from", "registration"];
    let (server, mut client, registration, out) = registered("flash", &args).await;
    let package = server.shelf.put(image(10_000));
    let report = pull(&server, &client.endpoint, package, 512).await;
    assert_eq!(
        report.outcome,
        TransferOutcome::DeviceFailure(UpdateResult::NotEnoughFlash),
        "client events: {:#?}",
        client.seen
    );
    let error = client.next("error").await;
    assert_eq!(
        error["result"],
        UpdateResult::NotEnoughFlash.number(),
        "{error}"
    );
    assert!(
        client.seen("execute").is_empty(),
        "no Update: {:#?}",
        client.seen
    );
    let m = &server.management;
    let result = m
        .read_value(registration.address, firmware::UPDATE_RESULT)
        .await;
    assert_eq!(
        number(result.unwrap()),
        UpdateResult::NotEnoughFlash.number()
    );
    assert!(!out.exists(), "nothing stored");
}

/// The survey reads /3/0 as a whole instance; this LwM2M 1.0 text-only client answers 4.04, so
/// the survey reads the single resources it needs (DESIGN.md, interoperability notes): the
/// device is known in the catalog and campaigns can take it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survey_of_a_text_only_client_reads_single_resources() {
    if !node_client_present() {
        return;
    }
    let (server, _client, registration, _) = registered("survey", &[]).await;
    let found = survey(&server.management, &registration)
        .await
        .expect("the survey of a text-only client");
    assert_eq!(found.manufacturer.as_deref(), Some("Acme"));
    assert_eq!(found.model.as_deref(), Some("NB-N"));
    assert_eq!(found.firmware_version.as_deref(), Some("1.0"));
    assert_eq!(found.battery, Some(0));
    assert_eq!(found.power_sources, vec![6]);
}

/// While a pulling device stays in Downloading longer than the watch's poll period (5 s) with
/// no notification, the watch reads State and Update Result again: from a text-only client that
/// answers 4.04 to a read of /5/0, one resource at a time. Here the client takes 7 s to verify
/// what it downloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_only_client_that_verifies_slowly_is_upgraded() {
    if !node_client_present() {
        return;
    }
    let args = [
        "--next-version",
        "2.0",
        "--hold-ms",
        "7000",
        "--download-from",
        "registration",
    ];
    let (server, client, _, out) = registered("slow", &args).await;
    let package = server.shelf.put(image(4096));
    let report = pull(&server, &client.endpoint, package.clone(), 512).await;
    assert_eq!(
        report.outcome,
        TransferOutcome::Upgraded {
            version: "2.0".into()
        }
    );
    let _ = std::fs::remove_file(&out);
}

/// lwm2m-node-lib gives no socket for downloads, so a program using it fetches with
/// node-coap's global agent, from another port (`--download-from own`), as stacks with a
/// separate download socket do. The package server serves any port of a host with a registered
/// device, so the download goes through. What such a device pulls is not on its delivery's
/// account: that is kept per address, since devices behind one carrier NAT share a host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_downloads_from_another_port_is_upgraded() {
    if !node_client_present() {
        return;
    }
    let args = ["--next-version", "2.0", "--download-from", "own"];
    let (server, mut client, _, out) = registered("own-socket", &args).await;
    let package = server.shelf.put(image(10_000));
    let report = pull(&server, &client.endpoint, package.clone(), 512).await;
    assert_eq!(
        report.outcome,
        TransferOutcome::Upgraded {
            version: "2.0".into()
        },
        "client events: {:#?}",
        client.seen
    );
    client.next("downloaded").await;
    assert_downloaded(&client, &out, &package);
    let _ = std::fs::remove_file(&out);
}
