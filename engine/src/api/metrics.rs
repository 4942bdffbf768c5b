//! `GET /metrics`: the engine's gauges and counters in the Prometheus text format (0.0.4):
//! devices registered, attempts (transfers) under way, the CoAP endpoint's datagrams, bytes,
//! retransmissions, timeouts, malformed and duplicate messages, duplicate-cache evictions, what
//! the edge's defences did, DTLS sessions and what coaps did, package blocks sent, plugin calls and failures, tasks per status,
//! and the HTTP API's own defences at work (connections open, requests and connections
//! refused, idle connections closed). Owns the exposition only; the numbers are read from the
//! registry, the endpoint, the campaigns and the connections.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::ApiState;
use crate::campaign::TaskStatus;

/// Media type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every status a task can have, so each one is reported, at zero too.
const STATUSES: [TaskStatus; 5] = [
    TaskStatus::NotStarted,
    TaskStatus::Upgrading,
    TaskStatus::Paused,
    TaskStatus::Stopped,
    TaskStatus::Completed,
];

/// `GET /metrics`.
pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let platform = &state.platform;
    let coap = platform.server.endpoint.stats();
    let mut out = Exposition::default();
    out.gauge(
        "fota_devices_registered",
        "Devices with a live LwM2M registration.",
        [(None, platform.server.registry.len() as u64)],
    );
    out.gauge(
        "fota_transfers_active",
        "Upgrade attempts (package transfers and installs) under way.",
        [(None, platform.campaigns.attempts_under_way() as u64)],
    );
    out.counter(
        "fota_coap_datagrams_total",
        "CoAP datagrams, retransmissions included.",
        directions(coap.datagrams_received, coap.datagrams_sent),
    );
    out.counter(
        "fota_coap_bytes_total",
        "CoAP message bytes, without UDP/IP headers.",
        directions(coap.bytes_received, coap.bytes_sent),
    );
    out.counter(
        "fota_coap_requests_sent_total",
        "Requests the engine sent to devices, each once (retransmissions not counted).",
        [(None, coap.requests_sent)],
    );
    out.counter(
        "fota_coap_retransmissions_total",
        "Confirmable messages sent again because no ACK came in time.",
        [(None, coap.retransmissions)],
    );
    out.counter(
        "fota_coap_timeouts_total",
        "Exchanges given up after MAX_RETRANSMIT.",
        [(None, coap.timeouts)],
    );
    out.counter(
        "fota_coap_malformed_total",
        "Datagrams that were not valid CoAP.",
        [(None, coap.malformed)],
    );
    out.counter(
        "fota_coap_duplicates_total",
        "Confirmable messages received again and answered from the duplicate cache.",
        [(None, coap.duplicates)],
    );
    out.counter(
        "fota_coap_dedup_evicted_total",
        "Duplicate-cache entries dropped before their lifetime to keep within its bytes.",
        [(None, coap.dedup_evicted)],
    );
    out.counter(
        "fota_edge_defences_total",
        "What the edge's defences did to unauthenticated peers, per defence.",
        platform
            .server
            .edge
            .snapshot()
            .map(|(defence, count)| (Some(("defence", defence)), count)),
    );
    if let Some(dtls) = &platform.server.dtls {
        out.gauge(
            "fota_dtls_sessions",
            "DTLS sessions held on coaps, established or handshaking.",
            [(None, dtls.sessions() as u64)],
        );
        out.counter(
            "fota_dtls_events_total",
            "What coaps did: cookies sent, handshakes (full, resumed, failed, evicted), \
             identities refused, datagrams dropped, sessions freed, plain CoAP refused.",
            dtls.counters()
                .snapshot()
                .map(|(event, count)| (Some(("event", event)), count)),
        );
    }
    let blocks = platform.server.shelf.block_counts();
    out.counter(
        "fota_package_blocks_total",
        "Package blocks sent: Block1 writes (push) and Block2 answers at Package URIs (pull).",
        [
            (Some(("method", "push")), blocks.pushed),
            (Some(("method", "pull")), blocks.served),
        ],
    );
    out.counter(
        "fota_package_block_bytes_total",
        "Payload bytes of those blocks.",
        [
            (Some(("method", "push")), blocks.pushed_bytes),
            (Some(("method", "pull")), blocks.served_bytes),
        ],
    );
    let plugin_calls = platform.plugins.host().counters().snapshot();
    out.counter(
        "fota_plugin_calls_total",
        "Plugin calls, per plugin kind.",
        plugin_calls
            .iter()
            .map(|c| (Some(("kind", c.kind.world())), c.calls)),
    );
    out.counter(
        "fota_plugin_call_failures_total",
        "Plugin calls that failed (trap, time or memory limit, invalid answer), per kind.",
        plugin_calls
            .iter()
            .map(|c| (Some(("kind", c.kind.world())), c.failures)),
    );
    let tasks = tasks_by_status(&state);
    out.gauge(
        "fota_tasks",
        "Upgrade tasks per status.",
        tasks
            .iter()
            .map(|(status, count)| (Some(("status", status.as_str())), *count)),
    );
    let http = &state.counters;
    let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    out.gauge(
        "fota_http_connections_open",
        "HTTP connections being served (at most max_connections).",
        [(None, read(&http.open))],
    );
    out.counter(
        "fota_http_rejected_total",
        "HTTP requests refused from their head, their bodies not read (unauthenticated: 401, \
         forbidden: 403), and connections closed by the API's limits (connection_limit: over \
         max_connections, header_timeout: no request head within header_timeout).",
        [
            (
                Some(("reason", "unauthenticated")),
                read(&http.unauthenticated),
            ),
            (Some(("reason", "forbidden")), read(&http.forbidden)),
            (
                Some(("reason", "connection_limit")),
                read(&http.connection_limit),
            ),
            (
                Some(("reason", "header_timeout")),
                read(&http.header_timeout),
            ),
        ],
    );
    out.counter(
        "fota_http_idle_closed_total",
        "Kept-alive HTTP connections closed after idle_timeout without a request.",
        [(None, read(&http.idle_closed))],
    );
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], out.text)
}

/// The samples of a counter per direction.
fn directions(received: u64, sent: u64) -> [Sample<'static>; 2] {
    [
        (Some(("direction", "received")), received),
        (Some(("direction", "sent")), sent),
    ]
}

/// Number of tasks per status, named as in the API's JSON; every status present.
fn tasks_by_status(state: &ApiState) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<_, _> = STATUSES.iter().map(|s| (label(*s), 0)).collect();
    for task in state.platform.campaigns.tasks() {
        *counts.entry(label(task.status)).or_default() += 1;
    }
    counts
}

/// A status as the API's JSON names it (`not_started`, `upgrading`, ...).
fn label(status: TaskStatus) -> String {
    match serde_json::to_value(status) {
        Ok(serde_json::Value::String(name)) => name,
        _ => unreachable!("a task status serializes as a string"),
    }
}

/// One sample: its label, if any, and its value.
type Sample<'a> = (Option<(&'static str, &'a str)>, u64);

/// The text being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn gauge<'a>(&mut self, name: &str, help: &str, samples: impl IntoIterator<Item = Sample<'a>>) {
        self.family(name, "gauge", help, samples);
    }

    fn counter<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = Sample<'a>>,
    ) {
        self.family(name, "counter", help, samples);
    }

    fn family<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = Sample<'a>>,
    ) {
        let text = &mut self.text;
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (label, value) in samples {
            let _ = match label {
                Some((key, label)) => writeln!(text, "{name}{{{key}=\"{label}\"}} {value}"),
                None => writeln!(text, "{name} {value}"),
            };
        }
    }
}
