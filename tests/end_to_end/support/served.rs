//! `fota serve` as a platform host runs it: a child process reading its tokens from a fota.toml
//! in a scratch directory, on free loopback ports, and its HTTP API as an integrator calls it
//! (ureq, a bearer token, JSON), with bounded waits on what the API answers.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Lines, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::FotaProcess;

/// The operator token every served engine accepts.
pub const OPERATOR: &str = "served-test-operator";
/// The viewer token every served engine accepts.
pub const VIEWER: &str = "served-test-viewer";
/// Longest the engine may take to start, and a wait on the API to come true.
pub const BOUND: Duration = Duration::from_secs(120);

/// A running `fota serve` and where it answers.
pub struct Served {
    /// The process; its lines (stdout and stderr) are there to wait on.
    pub process: FotaProcess,
    /// `http://127.0.0.1:PORT`.
    pub http: String,
    /// The UDP address devices register to.
    pub coap: SocketAddr,
    /// The coaps address, when `settings` had a `[coaps]` table.
    pub coaps: Option<SocketAddr>,
}

/// A scratch directory named `name` under the test target's temporary directory, emptied.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `fota serve --loopback-timers` on a fota.toml in `dir` (its data directory inside),
/// with `envs` added to its environment (`RUST_LOG`, say).
pub fn serve(dir: &Path, envs: &[(&str, &str)]) -> Served {
    serve_with(dir, envs, "")
}

/// [`serve`], with `settings` (keys, then tables such as `[edge]`) added to its fota.toml.
pub fn serve_with(dir: &Path, envs: &[(&str, &str)], settings: &str) -> Served {
    serve_with_args(dir, envs, settings, &[])
}

/// [`serve_with`], with `args` added to `fota serve`'s command line (before `serve`, so global
/// flags such as `--log-format` go there too).
pub fn serve_with_args(dir: &Path, envs: &[(&str, &str)], settings: &str, args: &[&str]) -> Served {
    let (mut process, coap) = spawn_serve(dir, envs, settings, args);
    let coaps = settings.contains("[coaps]").then(|| {
        let line = process.logged("coaps (DTLS 1.2, pre-shared keys) on udp://", BOUND);
        let rest = &line[line.find("udp://").expect("the marker") + "udp://".len()..];
        rest.trim().parse().expect("a socket address")
    });
    let http = between(&process.logged("HTTP API on http://", BOUND), "on ", "/v1");
    Served {
        process,
        http,
        coap,
        coaps,
    }
}

/// Starts `fota serve --loopback-timers` as [`serve_with_args`] does, without waiting for its
/// HTTP API (a cluster's member serves none); the process and its CoAP address, once bound.
pub fn spawn_serve(
    dir: &Path,
    envs: &[(&str, &str)],
    settings: &str,
    args: &[&str],
) -> (FotaProcess, SocketAddr) {
    let config = dir.join("fota.toml");
    let data = dir.join("data");
    std::fs::write(
        &config,
        format!(
            "coap_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\ndata_dir = {data:?}\n\
             {settings}\n\
             [[tokens]]\ntoken = \"{OPERATOR}\"\nrole = \"operator\"\n\
             [[tokens]]\ntoken = \"{VIEWER}\"\nrole = \"viewer\"\n"
        ),
    )
    .unwrap();
    let serve = [
        OsStr::new("serve"),
        OsStr::new("--loopback-timers"),
        OsStr::new("--config"),
        config.as_os_str(),
    ];
    let args = args.iter().map(OsStr::new).chain(serve);
    let mut process = FotaProcess::spawn(args, envs);
    let coap = between(&process.logged("CoAP on udp://", BOUND), "udp://", ",");
    (process, coap.parse().expect("a socket address"))
}

/// The text of `line` between `start` and the next `end`.
fn between(line: &str, start: &str, end: &str) -> String {
    let rest = &line[line.find(start).expect("the marker") + start.len()..];
    rest[..rest.find(end).expect("the end")].to_string()
}

impl Served {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    /// `method path` with a JSON body (or none) as the operator; the answer's status and JSON
    /// (null when it has none), whatever the status.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let request = ureq::request(method, &self.url(path))
            .set("Authorization", &format!("Bearer {OPERATOR}"));
        let answer = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        read(answer)
    }

    /// `method path` as the operator, which must succeed; its JSON.
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, json) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {json}"
        );
        json
    }

    /// POST `bytes` to `path` with `query` as the operator, which must succeed; its JSON.
    pub fn upload(&self, path: &str, query: &[(&str, &str)], bytes: &[u8]) -> Value {
        let mut request = ureq::post(&self.url(path))
            .set("Authorization", &format!("Bearer {OPERATOR}"))
            .set("Content-Type", "application/octet-stream");
        for (key, value) in query {
            request = request.query(key, value);
        }
        let (status, json) = read(request.send_bytes(bytes));
        assert!((200..300).contains(&status), "POST {path}: {status} {json}");
        json
    }

    /// Uploads `image` as firmware `version` of the simulator's model (Acme NB-IoT-A) and makes
    /// a signed full package of it; the package's id.
    pub fn signed_full_package(&self, version: &str, image: &[u8]) -> String {
        let query = [
            ("vendor", "Acme"),
            ("model", "NB-IoT-A"),
            ("version", version),
        ];
        let firmware = self.upload("/v1/firmware", &query, image);
        let body = serde_json::json!({
            "kind": "full", "to_firmware": firmware["id"], "format": "signed"
        });
        let package = self.ok("POST", "/v1/packages", Some(&body));
        package["id"].as_str().unwrap().to_string()
    }

    /// A task named `name` upgrading every device (at most 100, all of the simulator's model)
    /// to a signed full package of `image` as firmware 0.9.0, in a group of their own; its
    /// path.
    pub fn upgrade_all(&self, name: &str, image: &[u8]) -> String {
        let package = self.signed_full_package("0.9.0", image);
        let body = serde_json::json!({ "name": name, "vendor": "Acme", "model": "NB-IoT-A" });
        let group = self.ok("POST", "/v1/groups", Some(&body));
        let devices = self.get("/v1/devices?vendor=Acme&model=NB-IoT-A&limit=100");
        let endpoints: Vec<_> = (devices["items"].as_array().unwrap().iter())
            .map(|device| device["endpoint"].clone())
            .collect();
        let members = format!("/v1/groups/{}/devices", group["id"].as_str().unwrap());
        self.ok(
            "POST",
            &members,
            Some(&serde_json::json!({ "endpoints": endpoints })),
        );
        let spec = serde_json::json!({
            "name": name, "group_id": group["id"], "package_id": package,
            "retries": 10, "retry_interval_secs": 1,
        });
        let task = self.ok("POST", "/v1/tasks", Some(&spec));
        format!("/v1/tasks/{}", task["id"].as_str().unwrap())
    }

    /// GET `path` as the viewer; its JSON.
    pub fn get(&self, path: &str) -> Value {
        let answer = ureq::get(&self.url(path))
            .set("Authorization", &format!("Bearer {VIEWER}"))
            .call();
        let (status, json) = read(answer);
        assert_eq!(status, 200, "GET {path}: {json}");
        json
    }

    /// The value of the metric sample `sample` (name and labels as exposed) in `/metrics`, read
    /// as the viewer; `None` when it is not there.
    pub fn metric(&self, sample: &str) -> Option<u64> {
        let metrics = ureq::get(&format!("{}/metrics", self.http))
            .set("Authorization", &format!("Bearer {VIEWER}"))
            .call()
            .expect("metrics")
            .into_string()
            .unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    /// Waits up to [`BOUND`] until `check` holds for the answer to GET `path`; returns it.
    pub fn wait_for(&self, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + BOUND;
        loop {
            let answer = self.get(path);
            if check(&answer) {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {BOUND:?}; last answer {answer}\nthe engine's last lines:\n{}",
                self.process.recent_lines(200).join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Status and JSON body of an answer, error statuses included.
fn read(answer: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let response = match answer {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("the API did not answer: {error}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// Its id (`lagged` has none).
    pub id: Option<u64>,
    /// Its name.
    pub name: String,
    /// Its data, as JSON.
    pub data: Value,
}

/// An open stream of server-sent events (`/v1/events`, an observation), read with a bound on
/// every wait.
pub struct EventStream {
    lines: Lines<BufReader<Box<dyn Read + Send + Sync>>>,
}

impl Served {
    /// Follows `/v1/events` as the viewer, after `last_event_id` when given.
    pub fn events(&self, last_event_id: Option<u64>) -> EventStream {
        self.stream("/v1/events", last_event_id)
    }

    /// Follows the server-sent events of GET `path` as the viewer, after `last_event_id` when
    /// given.
    pub fn stream(&self, path: &str, last_event_id: Option<u64>) -> EventStream {
        let agent = ureq::AgentBuilder::new().timeout_read(BOUND).build();
        let mut request = agent
            .get(&self.url(path))
            .set("Authorization", &format!("Bearer {VIEWER}"));
        if let Some(id) = last_event_id {
            request = request.set("Last-Event-ID", &id.to_string());
        }
        let response = request.call().expect("the event stream opens");
        EventStream {
            lines: BufReader::new(response.into_reader()).lines(),
        }
    }
}

impl EventStream {
    /// The next event; panics when none comes within [`BOUND`].
    pub fn next(&mut self) -> SseEvent {
        let (mut id, mut name, mut data) = (None, String::new(), String::new());
        loop {
            let line = self
                .lines
                .next()
                .expect("the stream goes on")
                .expect("an event within the bound");
            if line.is_empty() {
                if !name.is_empty() {
                    let data = serde_json::from_str(&data).expect("JSON data");
                    return SseEvent { id, name, data };
                }
                continue;
            }
            if let Some((field, value)) = line.split_once(':') {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => id = value.parse().ok(),
                    "event" => name = value.to_string(),
                    "data" => data.push_str(value),
                    _ => {} // a comment: keep-alive
                }
            }
        }
    }

    /// The next `count` events.
    pub fn take(&mut self, count: usize) -> Vec<SseEvent> {
        (0..count).map(|_| self.next()).collect()
    }
}
