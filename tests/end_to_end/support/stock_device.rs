//! A stock-like LwM2M device whose CoAP nobody here wrote: `tests/lwm2m_device/aiocoap_device.py`
//! (aiocoap from PyPI) as a child process. It follows the OMA texts, not the engine's habits:
//! objects 1, 3, 4 and 5, push with aiocoap's Block1 reassembly (profile `ram`) or block by block
//! to its flash with /5/0/26500 and /5/0/26501 (profile `blocks`), pull with aiocoap's Block2
//! client, raw or `acme` packages, and a reboot (new Register) after an install.
//!
//! The device keeps its flash in a directory (`stored.bin`, `firmware.bin`, `state.json`) and
//! rewrites `status.json` there atomically on every change; [`StockDevice::wait_for`] polls that
//! file with a bound. Its stderr (one line per event) is echoed to the test's stderr, so a failing
//! test shows what the device saw, and kept for [`StockDevice::log`].
//!
//! Needs python3 with aiocoap 0.4.17 (`pip install aiocoap==0.4.17`). Call [`aiocoap_present`]
//! first: it skips the test when missing, unless FOTA_REQUIRE_AIOCOAP is set (CI), where it fails.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What `pip install` must be given for the device to run.
pub const PIP_REQUIREMENT: &str = "aiocoap==0.4.17";

/// How long [`StockDevice::start`] and [`StockDevice::restart`] wait for the process to be up.
pub const START_BOUND: Duration = Duration::from_secs(30);

/// How often a wait reads `status.json`.
const POLL: Duration = Duration::from_millis(20);

/// Device log lines a failed wait shows.
const SHOWN_LINES: usize = 60;

/// The device script.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lwm2m_device/aiocoap_device.py")
}

/// Whether python3 with aiocoap is there. When it is not: panics if FOTA_REQUIRE_AIOCOAP is set
/// (so CI fails rather than skips), otherwise says the test is skipped and returns false.
pub fn aiocoap_present() -> bool {
    let version = Command::new("python3")
        .args(["-c", "import aiocoap.meta; print(aiocoap.meta.version)"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    let present = version.is_some();
    if let Some(version) = version.filter(|v| format!("aiocoap=={v}") != PIP_REQUIREMENT) {
        eprintln!(
            "note: aiocoap {version} found; the stock device was written for {PIP_REQUIREMENT}"
        );
    }
    if !present {
        assert!(
            std::env::var_os("FOTA_REQUIRE_AIOCOAP").is_none(),
            "python3 with aiocoap is not available (pip install {PIP_REQUIREMENT})"
        );
        eprintln!("skipped: python3 with aiocoap is not available (pip install {PIP_REQUIREMENT})");
    }
    present
}

/// What `pip install` must be given for the device to speak coaps (tinydtls; building it needs
/// autoconf, automake and libtool).
pub const DTLS_PIP_REQUIREMENT: &str = "DTLSSocket==0.2.3";

/// Whether aiocoap's DTLS transport (DTLSSocket) is there too; skips or fails as
/// [`aiocoap_present`] does.
pub fn aiocoap_dtls_present() -> bool {
    if !aiocoap_present() {
        return false;
    }
    let present = Command::new("python3")
        .args(["-c", "import DTLSSocket"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !present {
        assert!(
            std::env::var_os("FOTA_REQUIRE_AIOCOAP").is_none(),
            "python3 without DTLSSocket (pip install {DTLS_PIP_REQUIREMENT})"
        );
        eprintln!("skipped: python3 without DTLSSocket (pip install {DTLS_PIP_REQUIREMENT})");
    }
    present
}

/// One device process, restartable over the same flash directory.
pub struct StockDevice {
    endpoint: String,
    server: SocketAddr,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
    /// The pid of the current process: a status written by an earlier one never counts.
    pid: u32,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl StockDevice {
    /// Starts a device registering to `server` as `endpoint`, with extra command-line `args`
    /// (`--profile blocks`, `--reset any`, `--version-suffix=-build7`, ...: see the script), in
    /// a fresh directory of its own. Returns once the process is up (bound, not yet registered).
    pub fn start(server: SocketAddr, endpoint: &str, args: &[&str]) -> StockDevice {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name: String = endpoint
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let dir = std::env::temp_dir().join(format!(
            "fota-stock-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        StockDevice::start_in(&dir, server, endpoint, args)
    }

    /// [`StockDevice::start`] over the flash directory `dir` (created if missing, kept if there).
    pub fn start_in(dir: &Path, server: SocketAddr, endpoint: &str, args: &[&str]) -> StockDevice {
        std::fs::create_dir_all(dir).expect("the device directory is made");
        let mut device = StockDevice {
            endpoint: endpoint.to_string(),
            server,
            args: args.iter().map(|a| a.to_string()).collect(),
            dir: dir.to_path_buf(),
            child: None,
            pid: 0,
            port: 0,
            log: Arc::new(Mutex::new(Vec::new())),
        };
        device.spawn("127.0.0.1:0");
        device
    }

    fn spawn(&mut self, bind: &str) {
        let mut child = Command::new("python3")
            .arg(script())
            .args(["--server", &self.server.to_string()])
            .args(["--endpoint", &self.endpoint])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--bind", bind])
            .args(&self.args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 runs the stock device: {e}"));
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        self.pid = child.id();
        self.child = Some(child);
        let up = |s: &Value| s["port"].as_u64().is_some_and(|port| port > 0);
        let status = self.wait_for("the process up", up, START_BOUND);
        self.port = status["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("a port");
    }

    /// The endpoint name.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The flash directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The UDP port the device's only socket is bound to (it sends and answers from there).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The device's address as the engine sees it.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `status.json` as last written (by any process on this directory), or `Null` before the
    /// first one. Fields: pid, port, registered, location, registrations, state, result,
    /// version, stored_bytes, package_sha256, firmware_sha256, observations (path → active
    /// count), resets, writes_refused, updates_executed, blocks_received, boots, last_error, ...
    pub fn status(&self) -> Value {
        std::fs::read(self.dir.join("status.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Value::Null)
    }

    /// The status of the current process if it satisfies `pred`.
    fn current(&self, pred: &impl Fn(&Value) -> bool) -> Option<Value> {
        let status = self.status();
        (status["pid"].as_u64() == Some(u64::from(self.pid)) && pred(&status)).then_some(status)
    }

    /// Panics, showing the last status and the device's last lines, if the process died.
    fn check_alive(&mut self, what: &str) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(exit)) = child.try_wait()
        {
            panic!(
                "{}: the device process exited ({exit}) while waiting for {what}\n{}",
                self.endpoint,
                self.shown()
            );
        }
    }

    fn shown(&self) -> String {
        let log = self.log();
        let from = log.len().saturating_sub(SHOWN_LINES);
        format!(
            "status: {}\nlast device lines:\n{}",
            self.status(),
            log[from..].join("\n")
        )
    }

    /// Polls `status.json` until the current process wrote a status satisfying `pred`; returns
    /// it. Panics after `bound` with the last status and the device's last lines.
    pub fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&Value) -> bool,
        bound: Duration,
    ) -> Value {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.current(&pred) {
                return status;
            }
            self.check_alive(what);
            if Instant::now() >= deadline {
                panic!(
                    "{}: no {what} within {bound:?}\n{}",
                    self.endpoint,
                    self.shown()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until the current process is registered.
    pub fn wait_registered(&mut self, bound: Duration) -> Value {
        self.wait_for("registration", |s| s["registered"] == true, bound)
    }

    /// Active observations of `path` (e.g. "/5/0/3"), as aiocoap holds them.
    pub fn observations(&self, path: &str) -> u64 {
        self.status()["observations"][path].as_u64().unwrap_or(0)
    }

    /// The package bytes the device holds (`stored.bin`), if any.
    pub fn stored_package(&self) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join("stored.bin")).ok()
    }

    /// The installed image (`firmware.bin`), if an install happened.
    pub fn firmware(&self) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join("firmware.bin")).ok()
    }

    /// Every line the device wrote to stderr, over all its processes.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a process is running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the process with SIGKILL (a power cut: no De-register) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process (SIGSTOP) until [`StockDevice::thaw`]: the device is out of reach, what
    /// is sent to it meanwhile waits in its socket's buffer, and it answers it late.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .is_ok_and(|status| status.success());
        assert!(sent, "{}: kill {signal} {}", self.endpoint, self.pid);
    }

    /// Kills the process if it runs and starts it again over the same flash, as a rebooted
    /// device: on the port it had (`same_port`) or on a new one (a new NAT binding). Returns
    /// once the new process is up; it registers anew by itself.
    pub fn restart(&mut self, same_port: bool) {
        self.kill();
        let bind = if same_port {
            format!("127.0.0.1:{}", self.port)
        } else {
            "127.0.0.1:0".to_string()
        };
        self.spawn(&bind);
    }
}

impl Drop for StockDevice {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "{}: device directory kept: {}",
                self.endpoint,
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// An image the `raw` updater takes: `len` deterministic bytes from `seed` carrying
/// `FWVER:<version>\0` at byte 64 (`--raw-version-at 64` makes the device insist on that place).
pub fn raw_image(version: &str, len: usize, seed: u8) -> Vec<u8> {
    let marker = format!("FWVER:{version}\0");
    assert!(
        len >= 64 + marker.len(),
        "an image of {len} bytes cannot hold its version"
    );
    let mut image: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed) ^ (i >> 7) as u8)
        .collect();
    image[64..64 + marker.len()].copy_from_slice(marker.as_bytes());
    image
}

/// A package the `acme` updater takes: `ACME`, version length, version, payload length (u32
/// BE), payload, CRC32 (IEEE, as zlib.crc32) of everything before, big-endian.
pub fn acme_package(version: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = b"ACME".to_vec();
    out.push(u8::try_from(version.len()).expect("a version under 256 bytes"));
    out.extend_from_slice(version.as_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// CRC-32/IEEE (zlib's).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}
