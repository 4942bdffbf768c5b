//! `GET /metrics`: the engine's gauges, counters and histograms in the Prometheus text format
//! (0.0.4): the build, devices registered, attempts (transfers) under way, the CoAP endpoint's
//! datagrams, bytes, retransmissions, timeouts, malformed and duplicate messages,
//! duplicate-cache evictions and round trips, what the edge's defences did, DTLS sessions and
//! what coaps did, package blocks sent, what the cells' airtime budgets paced, plugin calls,
//! failures and call times, tasks per status, the HTTP API's request times and its own
//! defences at work (connections open, requests and connections refused, idle connections
//! closed). Owns the exposition only (and
//! the scrape address's one-route router); the numbers are read from the registry, the
//! endpoint, the plugin host, the campaigns, the connections and the request times.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::ApiState;
use crate::campaign::TaskStatus;
use crate::histogram::HistogramSnapshot;

/// The engine's version, in `fota_build_info`.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit built, in `fota_build_info`, when the build was given `FOTA_GIT_COMMIT`.
const GIT_COMMIT: &str = match option_env!("FOTA_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

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

/// The router of the scrape address: `GET /metrics` and nothing else, without a token.
pub(super) fn scrape_router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let platform = &state.platform;
    let coap = platform.server.endpoint.stats();
    let mut out = Exposition::default();
    out.gauge(
        "fota_build_info",
        "The engine's build: its version and the commit built (unknown unless the build \
         was given FOTA_GIT_COMMIT). Always 1.",
        [(&[("version", VERSION), ("git_commit", GIT_COMMIT)][..], 1)],
    );
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
    let round_trips = platform.server.endpoint.round_trips();
    out.histogram(
        "fota_coap_exchange_round_trip_seconds",
        "Confirmable messages sent to devices, from their first transmission to the ACK \
         (empty or with the response) that matched them. retransmitted=\"false\": answered at \
         the first try, unambiguous (Karn's rule); \"true\": answered after retransmissions, \
         the waits before them included.",
        [
            (
                &[("retransmitted", "false")][..],
                round_trips.first_try.snapshot(),
            ),
            (
                &[("retransmitted", "true")][..],
                round_trips.retransmitted.snapshot(),
            ),
        ],
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
    let airtime = platform.server.delivery.airtime().taken();
    out.counter(
        "fota_airtime_paced_bytes_total",
        "Package payload bytes pushes took from the cells' airtime budgets (cell_airtime_bytes_per_sec).",
        [(None, airtime.bytes)],
    );
    let waited = "fota_airtime_wait_seconds_total";
    out.header(
        waited,
        "counter",
        "Time pushes waited for their cells' airtime budgets, summed.",
    );
    out.sample(waited, &[], None, airtime.waited.as_secs_f64());
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
    out.histogram(
        "fota_plugin_call_seconds",
        "Plugin calls, per plugin kind: from taking an instance (a new one made and \
         configured if none was idle) to the answer or the failure.",
        platform
            .plugins
            .host()
            .counters()
            .times()
            .map(|(kind, times)| (vec![("kind", kind.world())], times)),
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
    out.histogram(
        "fota_http_request_seconds",
        "HTTP API requests, per route template, method and status class, from routing to the \
         answer's head (a body streamed after it not counted); requests no route takes under \
         route=\"unmatched\". Series appear with their first request.",
        state.request_times.snapshot().map(|series| {
            let labels = vec![
                ("route", series.route),
                ("method", series.method),
                ("status", series.class),
            ];
            (labels, series.times)
        }),
    );
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], out.text)
}

/// The samples of a counter per direction.
fn directions(received: u64, sent: u64) -> [Sample<Option<(&'static str, &'static str)>>; 2] {
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

/// One sample: its labels and its value.
type Sample<L> = (L, u64);

/// The labels of a sample: none, one, or several.
trait Labels {
    fn pairs(&self) -> &[(&'static str, &str)];
}

impl Labels for Option<(&'static str, &str)> {
    fn pairs(&self) -> &[(&'static str, &str)] {
        self.as_slice()
    }
}

impl Labels for &[(&'static str, &str)] {
    fn pairs(&self) -> &[(&'static str, &str)] {
        self
    }
}

impl Labels for Vec<(&'static str, &str)> {
    fn pairs(&self) -> &[(&'static str, &str)] {
        self
    }
}

/// The text being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn gauge<L: Labels>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = Sample<L>>,
    ) {
        self.family(name, "gauge", help, samples);
    }

    fn counter<L: Labels>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = Sample<L>>,
    ) {
        self.family(name, "counter", help, samples);
    }

    fn family<L: Labels>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = Sample<L>>,
    ) {
        self.header(name, kind, help);
        for (labels, value) in samples {
            self.sample(name, labels.pairs(), None, value);
        }
    }

    /// A histogram per label set: its cumulative buckets (`le` in seconds, `+Inf` last), sum
    /// and count.
    fn histogram<L: Labels>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, HistogramSnapshot)>,
    ) {
        self.header(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (labels, times) in series {
            let labels = labels.pairs();
            for (bound, count) in &times.buckets {
                let le = bound.as_secs_f64().to_string();
                self.sample(&bucket, labels, Some(&le), *count);
            }
            self.sample(&bucket, labels, Some("+Inf"), times.count);
            let sum = times.sum.as_secs_f64();
            self.sample(&format!("{name}_sum"), labels, None, sum);
            self.sample(&format!("{name}_count"), labels, None, times.count);
        }
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One line: `name{labels,le="..."} value`, the braces left out when there is no label.
    fn sample(
        &mut self,
        name: &str,
        labels: &[(&'static str, &str)],
        le: Option<&str>,
        value: impl std::fmt::Display,
    ) {
        let text = &mut self.text;
        text.push_str(name);
        let le = le.map(|le| ("le", le));
        for (at, (key, label)) in labels.iter().copied().chain(le).enumerate() {
            text.push(if at == 0 { '{' } else { ',' });
            let _ = write!(text, "{key}=\"{}\"", escape(label));
        }
        if !labels.is_empty() || le.is_some() {
            text.push('}');
        }
        let _ = writeln!(text, " {value}");
    }
}

/// A label value as the text format quotes it: backslash, double quote and line feed escaped.
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_histogram_is_written_with_cumulative_buckets_sum_count_and_escaped_labels() {
        let mut out = Exposition::default();
        let times = HistogramSnapshot {
            buckets: vec![
                (Duration::from_micros(2500), 1),
                (Duration::from_secs(1), 3),
            ],
            count: 4,
            sum: Duration::from_millis(2250),
        };
        out.histogram(
            "t_seconds",
            "Times.",
            [(&[("route", "/a/{id}\"")][..], times)],
        );
        assert_eq!(
            out.text,
            "# HELP t_seconds Times.\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{route=\"/a/{id}\\\"\",le=\"0.0025\"} 1\n\
             t_seconds_bucket{route=\"/a/{id}\\\"\",le=\"1\"} 3\n\
             t_seconds_bucket{route=\"/a/{id}\\\"\",le=\"+Inf\"} 4\n\
             t_seconds_sum{route=\"/a/{id}\\\"\"} 2.25\n\
             t_seconds_count{route=\"/a/{id}\\\"\"} 4\n"
        );
    }
}
