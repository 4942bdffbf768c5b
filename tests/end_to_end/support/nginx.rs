//! nginx (Debian's `nginx` and `libnginx-mod-stream`) as the UDP load balancer before an
//! engine: the shipped `examples/nginx/fota-stream.conf`, its addresses, ports and paths
//! replaced, run in the foreground from a scratch directory and stopped on drop. A test
//! without nginx skips, unless FOTA_REQUIRE_NGINX is set (`.ci/run` sets it and installs it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The shipped configuration.
const EXAMPLE: &str = include_str!("../../../examples/nginx/fota-stream.conf");

/// Longest nginx may take to start.
const BOUND: Duration = Duration::from_secs(30);

/// A running nginx.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    /// Where devices send CoAP.
    pub coap: SocketAddr,
}

/// Whether nginx and its stream module are installed; without them a test skips, unless CI
/// requires them.
pub fn present() -> bool {
    let present = Command::new("nginx").arg("-v").output().is_ok()
        && Path::new("/usr/lib/nginx/modules/ngx_stream_module.so").exists();
    if !present {
        let why = "nginx with its stream module is not installed \
                   (apt-get install nginx libnginx-mod-stream)";
        assert!(std::env::var_os("FOTA_REQUIRE_NGINX").is_none(), "{why}");
        eprintln!("skipped: {why}");
    }
    present
}

impl Nginx {
    /// Starts nginx in `dir` balancing CoAP over `nodes` (the example's three nodes replaced
    /// by them), sessions ending `session_timeout` after their last datagram.
    pub fn start(dir: &Path, nodes: &[SocketAddr], session_timeout: Duration) -> Nginx {
        Nginx::start_hashing(dir, nodes, session_timeout, "$remote_addr")
    }

    /// [`Nginx::start`], choosing each session's node by a consistent hash of `key` instead
    /// of the device's address (a fleet on one host spreads over the nodes by its ports).
    pub fn start_hashing(
        dir: &Path,
        nodes: &[SocketAddr],
        session_timeout: Duration,
        key: &str,
    ) -> Nginx {
        let coap = free_udp_port();
        let coaps = free_udp_port();
        let servers: String = nodes
            .iter()
            .map(|node| format!("        server {node};\n"))
            .collect();
        let mut config = EXAMPLE.to_string();
        for (old, new) in [
            (
                "/run/nginx-fota.pid",
                format!("{}/nginx.pid", dir.display()),
            ),
            ("/var/log/nginx/", format!("{}/", dir.display())),
            (
                "listen 5683 udp reuseport;",
                format!("listen 127.0.0.1:{coap} udp reuseport;"),
            ),
            (
                "listen 5684 udp reuseport;",
                format!("listen 127.0.0.1:{coaps} udp reuseport;"),
            ),
            (
                "        server 10.0.0.11:5683;\n        server 10.0.0.12:5683;\n        \
                 server 10.0.0.13:5683;\n",
                servers,
            ),
            (
                "proxy_timeout 300s;",
                format!("proxy_timeout {}ms;", session_timeout.as_millis()),
            ),
            (
                "hash $remote_addr consistent;",
                format!("hash {key} consistent;"),
            ),
        ] {
            assert!(config.contains(old), "the example has {old:?}");
            config = config.replace(old, &new);
        }
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .args(["-e", "stderr", "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let mut nginx = Nginx {
            child,
            dir: dir.to_path_buf(),
            coap: SocketAddr::from(([127, 0, 0, 1], coap)),
        };
        nginx.wait_started();
        nginx
    }

    /// Waits for nginx's log to say its workers started.
    fn wait_started(&mut self) {
        let deadline = Instant::now() + BOUND;
        loop {
            let log = std::fs::read_to_string(self.dir.join("fota-error.log")).unwrap_or_default();
            if log.contains("start worker process") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited ({status}): {log}");
            }
            assert!(Instant::now() < deadline, "nginx did not start: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The sessions nginx logged as they ended: `(device's address, node, bytes in, bytes
    /// out)`.
    pub fn ended_sessions(&self) -> Vec<(String, String, u64, u64)> {
        std::fs::read_to_string(self.dir.join("fota-stream.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                Some((
                    fields.first()?.to_string(),
                    fields.get(1)?.to_string(),
                    fields.get(3)?.parse().ok()?,
                    fields.get(4)?.parse().ok()?,
                ))
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: nginx's graceful stop, which writes the log lines of open sessions.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGQUIT);
        }
        let deadline = Instant::now() + BOUND;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}
