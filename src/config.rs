//! `fota.toml`: the configuration file of `fota serve`, and how it combines with environment
//! variables and flags (flag > environment > file > default). Owns reading and merging only.
//!
//! ```toml
//! coap_addr = "0.0.0.0:5683"         # UDP address devices register to
//! http_addr = "0.0.0.0:8080"         # TCP address of the HTTP API
//! metrics_addr = "127.0.0.1:9464"    # GET /metrics without a token, for a scraper (unset:
//!                                    # none; the API's /metrics, with a token, stays)
//! data_dir = "./fota-data"           # where the store lives (sled, one node) ...
//! store = "postgres://fota@db.example.net/fota"  # ... or a PostgreSQL database (one node or
//!                                    # several sharing a fleet); set, it is used, not data_dir
//! max_upload_bytes = 33554432        # largest image, plugin or credential batch (413 above)
//! package_authority = "fota.example.net:5683"  # host:port in Package URIs (pulling devices)
//! http_max_connections = 256         # HTTP connections served at once (503 and closed above)
//! http_header_timeout_secs = 10      # time to send a request head, then the connection closes
//! http_idle_timeout_secs = 60        # time a kept-alive connection may wait for a request
//! cell_airtime_bytes_per_sec = 6250  # package bytes a second each cell's downlink carries,
//!                                    # over every task (unset: no cap; 6250 is a quarter of
//!                                    # 200 kbit/s); a task may set a lower one for itself
//! queue_window_secs = 93             # how long a device in queue mode (PSM, eDRX) is taken
//!                                    # for reachable after its Register or Update: its
//!                                    # active time (T3324) on the network
//!
//! [[tokens]]                         # bearer tokens of the HTTP API, one table each
//! token = "a long random secret"
//! role = "operator"                  # operator: everything; viewer: GET only
//!
//! [edge]                             # what unauthenticated peers may make the engine do
//! max_lifetime_secs = 604800         # a longer registration lifetime is cut to this
//! max_object_links = 128             # more object links in a Register: 4.00
//! max_endpoint_len = 128             # bytes of an endpoint name (printable, no whitespace)
//! register_burst = 200               # Registers per source address at once ...
//! registers_per_second = 20.0        # ... then this many a second (5.03 with Max-Age)
//! surveys_per_source = 128           # surveys per source address under way at once
//! unproven_ttl_secs = 300            # a registration whose device never answered ends then
//! patient_surveys_per_source = 8     # first surveys per source with every retransmission ...
//! first_contact_retransmit = 1       # ... beyond them, this many retransmissions
//! packages_to_anyone = false         # package blocks to any source with the URI
//! dedup_cache_bytes = 16777216       # the duplicate cache's budget
//!
//! [coap]                             # the engine's CoAP retransmission (RFC 7252 section 4.8)
//! ack_timeout_ms = 3000              # first wait for an ACK, for a peer with no measurement
//! max_retransmit = 4                 # retransmissions before an exchange fails
//! congestion = "round-trip"          # each device's RTO from its round trips (RFC 6298's
//!                                    # estimate, Karn's sampling: for radio loss); "cocoa"
//!                                    # (CoCoA's), or "rfc7252" (fixed: ACK_TIMEOUT, doubled)
//! min_rto_ms = 250                   # a floor under every measured RTO (fit for the cell;
//!                                    # 250 for round-trip, 0 for cocoa)
//!
//! [blocks]                           # package blocks pushed to devices
//! max = 1024                         # the largest, a power of two from 16 to 1024: the engine
//!                                    # starts there (or at the capability plugin's size, if
//!                                    # smaller) and takes a device's smaller size when it asks
//! cells = { 4711 = 256 }             # the largest in the cells named (/4/0/8), instead of max
//!
//! [coaps]                            # CoAP over DTLS 1.2 with pre-shared keys (devices'
//! addr = "0.0.0.0:5684"              # keys: PUT /v1/devices/{endpoint}/credentials)
//! require = false                    # true: every plain CoAP Register is refused (4.01)
//! package_authority = "fota.example.net:5684"  # host:port in coaps Package URIs
//! idle_timeout_secs = 86400          # a compact session idle this long is freed (resumed
//!                                    # by ticket; one holding OpenSSL's: after 600 s)
//! compact_after_secs = 30            # an idle session keeps its keys alone (a few hundred
//!                                    # bytes, not OpenSSL's 44 KB), on AEAD suites
//! handshake_timeout_secs = 60        # a handshake not done by then is dropped
//! max_handshakes = 1024              # handshakes past the cookie at once
//! max_sessions = 100000              # sessions kept; the least recently active goes first
//! ciphers = "PSK-AES128-CCM8:PSK-AES128-CCM:PSK-AES128-GCM-SHA256:PSK-AES128-CBC-SHA256"
//!
//! [webhooks]                         # deliveries to integrators' URLs (POST /v1/webhooks)
//! max_attempts = 12                  # attempts per event, then it is dead-lettered
//! backoff_first_ms = 1000            # wait after the first failure, doubled each time ...
//! backoff_max_ms = 600000            # ... up to this; each wait is jittered (half to all)
//! connect_timeout_ms = 5000          # to connect to a receiver (TCP and TLS)
//! request_timeout_ms = 10000         # for a whole delivery
//! forbid_private = false             # true: never connect to loopback, private, link-local
//!                                    # or unique-local addresses (wherever a name resolves)
//! max_pending = 100000               # events waiting per subscription; more: dead-lettered
//!
//! [cluster]                          # one of several nodes on the PostgreSQL `store`
//! node = "fota-1"                    # this node's name, unique in the cluster
//! addr = "10.0.0.11:5690"            # TCP address of the nodes' internal link (keep it on
//!                                    # their private network)
//! advertise = "10.0.0.11:5690"       # host:port the others reach it at (default: addr)
//! api = "10.0.0.11:8080"             # host:port the others reach its HTTP API at, where
//!                                    # they pass the API on to while it coordinates (default:
//!                                    # http_addr)
//! secret = "a long random secret"    # the same on every node; proven on the internal link
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use fota_engine::api::{
    ApiConfig, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_UPLOAD_BYTES, Token,
};
use fota_engine::cluster::ClusterConfig;
use fota_engine::coap::dtls::DtlsConfig;
use fota_engine::coap::{Congestion, DEFAULT_MIN_RTO, TransmissionParams};
use fota_engine::edge::EdgeLimits;
use fota_engine::server::CoapsConfig;
use fota_engine::store::StoreLocation;
use fota_engine::transfer::BlockLimits;
use fota_engine::webhooks::WebhookConfig;
use fota_engine::webhooks::backoff::Backoff;
use fota_engine::webhooks::http::HttpLimits;
use serde::Deserialize;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "fota.toml";
/// CoAP address when nothing sets one.
pub const DEFAULT_COAP_ADDR: &str = "0.0.0.0:5683";
/// HTTP address when nothing sets one.
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8080";
/// Data directory when nothing sets one.
pub const DEFAULT_DATA_DIR: &str = "./fota-data";

/// What `fota.toml` may hold; every key is optional.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// UDP address for CoAP.
    pub coap_addr: Option<SocketAddr>,
    /// TCP address of the HTTP API.
    pub http_addr: Option<SocketAddr>,
    /// TCP address serving `/metrics` without a token.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the store lives, with sled.
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL database's URL, for the store instead of `data_dir`.
    pub store: Option<String>,
    /// Largest firmware image, plugin component or credential batch the API accepts.
    pub max_upload_bytes: Option<usize>,
    /// The `host:port` devices reach the engine at, put in Package URIs.
    pub package_authority: Option<String>,
    /// HTTP connections served at once.
    pub http_max_connections: Option<usize>,
    /// Seconds a client has to send a request head.
    pub http_header_timeout_secs: Option<u64>,
    /// Seconds a kept-alive HTTP connection may wait for its next request.
    pub http_idle_timeout_secs: Option<u64>,
    /// Package bytes per second each cell's downlink carries, over every task.
    pub cell_airtime_bytes_per_sec: Option<u32>,
    /// Seconds a device in queue mode is reachable after its Register or Update.
    pub queue_window_secs: Option<u64>,
    /// Bearer tokens of the HTTP API (only here: a secret on a command line shows in `ps`).
    #[serde(default)]
    pub tokens: Vec<Token>,
    /// The limits unauthenticated peers meet; unset ones keep their default.
    #[serde(default)]
    pub edge: EdgeFile,
    /// The engine's CoAP timers; unset ones keep their default.
    #[serde(default)]
    pub coap: CoapFile,
    /// coaps beside plain CoAP, when the table is there.
    pub coaps: Option<CoapsFile>,
    /// The largest blocks pushed; unset ones keep their default.
    #[serde(default)]
    pub blocks: BlocksFile,
    /// Webhook deliveries; unset keys keep their default.
    #[serde(default)]
    pub webhooks: WebhooksFile,
    /// The `[cluster]` table: this engine is a node of several.
    #[serde(default)]
    pub cluster: Option<ClusterFile>,
}

/// The `[webhooks]` table: [`WebhookConfig`] as keys, each optional.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksFile {
    max_attempts: Option<u32>,
    backoff_first_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    forbid_private: Option<bool>,
    max_pending: Option<usize>,
}

impl WebhooksFile {
    /// The delivery settings: the defaults with what the table sets.
    pub fn config(&self) -> WebhookConfig {
        let d = WebhookConfig::default();
        let millis = |ms: Option<u64>, default| ms.map_or(default, Duration::from_millis);
        WebhookConfig {
            max_attempts: self.max_attempts.unwrap_or(d.max_attempts).max(1),
            backoff: Backoff {
                first: millis(self.backoff_first_ms, d.backoff.first),
                max: millis(self.backoff_max_ms, d.backoff.max),
            },
            http: HttpLimits {
                connect_timeout: millis(self.connect_timeout_ms, d.http.connect_timeout),
                request_timeout: millis(self.request_timeout_ms, d.http.request_timeout),
                forbid_private: self.forbid_private.unwrap_or(d.http.forbid_private),
            },
            max_pending: self.max_pending.unwrap_or(d.max_pending),
        }
    }
}

/// The `[blocks]` table: [`BlockLimits`] as keys, each optional.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlocksFile {
    max: Option<usize>,
    /// Cell id (as TOML keys are: text) to the largest block there.
    #[serde(default)]
    cells: BTreeMap<String, usize>,
}

impl BlocksFile {
    /// The limits: the defaults with what the table sets; an error names a cell that is not
    /// a number, or a size CoAP has no block of.
    pub fn limits(&self) -> anyhow::Result<BlockLimits> {
        let cells = self
            .cells
            .iter()
            .map(|(cell, size)| {
                let id = cell
                    .parse::<u32>()
                    .map_err(|_| anyhow::anyhow!("[blocks] cells: {cell:?} is not a cell id"))?;
                Ok((id, *size))
            })
            .collect::<anyhow::Result<_>>()?;
        let limits = BlockLimits {
            max: self.max.unwrap_or(BlockLimits::default().max),
            cells,
        };
        limits
            .validate()
            .map_err(|reason| anyhow::anyhow!("[blocks] {reason}"))?;
        Ok(limits)
    }
}

/// The `[coap]` table: the engine's [`TransmissionParams`] as keys, each optional.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoapFile {
    ack_timeout_ms: Option<u64>,
    max_retransmit: Option<u32>,
    congestion: Option<CongestionName>,
    min_rto_ms: Option<u64>,
}

/// How retransmission timeouts are set, by name.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CongestionName {
    /// RFC 7252's fixed timers.
    Rfc7252,
    /// CoCoA's per-peer RTO.
    Cocoa,
    /// RFC 6298's per-peer RTO estimate with Karn's sampling rule.
    #[serde(rename = "round-trip")]
    RoundTrip,
}

impl CoapFile {
    /// `base` with what the table sets.
    pub fn params(&self, base: TransmissionParams) -> TransmissionParams {
        let min_rto = self.min_rto_ms.map(Duration::from_millis);
        let congestion = match self.congestion {
            None => base.congestion.with_min_rto(min_rto),
            Some(CongestionName::Rfc7252) => Congestion::Rfc7252,
            Some(CongestionName::Cocoa) => Congestion::Cocoa {
                min_rto: min_rto.unwrap_or(Duration::ZERO),
            },
            Some(CongestionName::RoundTrip) => Congestion::RoundTrip {
                min_rto: min_rto.unwrap_or(DEFAULT_MIN_RTO),
            },
        };
        TransmissionParams {
            ack_timeout: self
                .ack_timeout_ms
                .map_or(base.ack_timeout, Duration::from_millis),
            max_retransmit: self.max_retransmit.unwrap_or(base.max_retransmit),
            congestion,
            ..base
        }
    }
}

/// The `[cluster]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    node: String,
    addr: SocketAddr,
    advertise: Option<String>,
    api: Option<String>,
    secret: String,
}

/// Shortest cluster secret taken.
const MIN_SECRET_BYTES: usize = 16;

impl ClusterFile {
    /// The TCP address the internal link is to be bound on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's settings (its HTTP API bound on `http`, its internal link on `internal`),
    /// or why they cannot be used.
    pub fn config(&self, http: SocketAddr, internal: SocketAddr) -> anyhow::Result<ClusterConfig> {
        anyhow::ensure!(
            fota_engine::catalog::firmware::name_ok(&self.node),
            "[cluster] node: a name of 1 to 255 bytes"
        );
        anyhow::ensure!(
            self.secret.len() >= MIN_SECRET_BYTES,
            "[cluster] secret: at least {MIN_SECRET_BYTES} bytes"
        );
        Ok(ClusterConfig {
            node: self.node.clone(),
            internal_addr: internal,
            advertise: reached_at(self.advertise.as_ref(), internal, "advertise", "addr")?,
            api: reached_at(self.api.as_ref(), http, "api", "http_addr")?,
            secret: self.secret.as_bytes().into(),
        })
    }
}

/// Where the other nodes reach what is bound on `bound`: `given`, else `bound` itself unless
/// it is a wildcard address.
fn reached_at(
    given: Option<&String>,
    bound: SocketAddr,
    key: &str,
    bound_key: &str,
) -> anyhow::Result<String> {
    match given {
        Some(given) => Ok(given.clone()),
        None if bound.ip().is_unspecified() => {
            anyhow::bail!("[cluster] {key}: needed when {bound_key} is {bound}")
        }
        None => Ok(bound.to_string()),
    }
}

/// The `[coaps]` table: [`CoapsConfig`] as keys, each optional.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoapsFile {
    addr: Option<SocketAddr>,
    require: Option<bool>,
    package_authority: Option<String>,
    idle_timeout_secs: Option<u64>,
    compact_after_secs: Option<u64>,
    handshake_timeout_secs: Option<u64>,
    max_handshakes: Option<usize>,
    max_sessions: Option<usize>,
    ciphers: Option<String>,
}

impl CoapsFile {
    /// The coaps settings: the defaults with what the table sets.
    pub fn config(&self) -> CoapsConfig {
        let d = CoapsConfig::default();
        let dtls = DtlsConfig::default();
        let seconds = |secs: Option<u64>, default| secs.map_or(default, Duration::from_secs);
        CoapsConfig {
            addr: self.addr.unwrap_or(d.addr),
            require: self.require.unwrap_or(d.require),
            package_authority: self
                .package_authority
                .clone()
                .unwrap_or(d.package_authority),
            dtls: DtlsConfig {
                idle_timeout: seconds(self.idle_timeout_secs, dtls.idle_timeout),
                compact_after: seconds(self.compact_after_secs, dtls.compact_after),
                handshake_timeout: seconds(self.handshake_timeout_secs, dtls.handshake_timeout),
                max_handshakes: self.max_handshakes.unwrap_or(dtls.max_handshakes),
                max_sessions: self.max_sessions.unwrap_or(dtls.max_sessions),
                ciphers: self.ciphers.clone().unwrap_or(dtls.ciphers),
                ..dtls
            },
        }
    }
}

/// The `[edge]` table: [`EdgeLimits`] as keys, each optional.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeFile {
    max_lifetime_secs: Option<u64>,
    max_object_links: Option<usize>,
    max_endpoint_len: Option<usize>,
    register_burst: Option<u32>,
    registers_per_second: Option<f64>,
    surveys_per_source: Option<usize>,
    unproven_ttl_secs: Option<u64>,
    patient_surveys_per_source: Option<usize>,
    first_contact_retransmit: Option<u32>,
    packages_to_anyone: Option<bool>,
    dedup_cache_bytes: Option<usize>,
}

impl EdgeFile {
    /// The limits: the defaults with what the table sets.
    pub fn limits(&self) -> EdgeLimits {
        let d = EdgeLimits::default();
        EdgeLimits {
            max_lifetime: self
                .max_lifetime_secs
                .map_or(d.max_lifetime, Duration::from_secs),
            max_object_links: self.max_object_links.unwrap_or(d.max_object_links),
            max_endpoint_len: self.max_endpoint_len.unwrap_or(d.max_endpoint_len),
            register_burst: self.register_burst.unwrap_or(d.register_burst),
            registers_per_second: self.registers_per_second.unwrap_or(d.registers_per_second),
            surveys_per_source: self.surveys_per_source.unwrap_or(d.surveys_per_source),
            unproven_ttl: self
                .unproven_ttl_secs
                .map_or(d.unproven_ttl, Duration::from_secs),
            patient_surveys_per_source: self
                .patient_surveys_per_source
                .unwrap_or(d.patient_surveys_per_source),
            first_contact_retransmit: self
                .first_contact_retransmit
                .unwrap_or(d.first_contact_retransmit),
            packages_to_anyone: self.packages_to_anyone.unwrap_or(d.packages_to_anyone),
            dedup_cache_bytes: self.dedup_cache_bytes.unwrap_or(d.dedup_cache_bytes),
        }
    }
}

impl ConfigFile {
    /// Reads `path`; without one, `./fota.toml` if it exists, else nothing. Returns the file
    /// read, if any.
    pub fn load(path: Option<&Path>) -> anyhow::Result<(ConfigFile, Option<PathBuf>)> {
        let path = match path {
            Some(path) => path.to_path_buf(),
            None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
            None => return Ok((ConfigFile::default(), None)),
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let file = ConfigFile::parse(&text).with_context(|| format!("in {}", path.display()))?;
        Ok((file, Some(path)))
    }

    /// Parses the text of a configuration file.
    pub fn parse(text: &str) -> anyhow::Result<ConfigFile> {
        let file: ConfigFile = toml::from_str(text)?;
        if let Some(empty) = file.tokens.iter().position(|t| t.token.trim().is_empty()) {
            anyhow::bail!("tokens[{empty}] has an empty token");
        }
        let zero = [
            ("http_max_connections", file.http_max_connections == Some(0)),
            (
                "http_header_timeout_secs",
                file.http_header_timeout_secs == Some(0),
            ),
            (
                "http_idle_timeout_secs",
                file.http_idle_timeout_secs == Some(0),
            ),
            (
                "cell_airtime_bytes_per_sec",
                file.cell_airtime_bytes_per_sec == Some(0),
            ),
            ("queue_window_secs", file.queue_window_secs == Some(0)),
        ];
        if let Some((key, _)) = zero.iter().find(|(_, zero)| *zero) {
            anyhow::bail!("{key} must be at least 1");
        }
        file.blocks.limits()?;
        Ok(file)
    }
}

/// What flags and environment variables set (clap reads both; unset is `None`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Overrides {
    /// `--coap-addr` or `FOTA_COAP_ADDR`.
    pub coap_addr: Option<SocketAddr>,
    /// `--http-addr` or `FOTA_HTTP_ADDR`.
    pub http_addr: Option<SocketAddr>,
    /// `--metrics-addr` or `FOTA_METRICS_ADDR`.
    pub metrics_addr: Option<SocketAddr>,
    /// `--data-dir` or `FOTA_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--store` or `FOTA_STORE`.
    pub store: Option<String>,
    /// `--max-upload-bytes` or `FOTA_MAX_UPLOAD_BYTES`.
    pub max_upload_bytes: Option<usize>,
    /// `--package-authority` or `FOTA_PACKAGE_AUTHORITY`.
    pub package_authority: Option<String>,
}

/// Everything `fota serve` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// UDP address for CoAP.
    pub coap_addr: SocketAddr,
    /// TCP address of the HTTP API.
    pub http_addr: SocketAddr,
    /// TCP address serving `/metrics` without a token; `None`: only the API's, with one.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the store lives.
    pub store: StoreLocation,
    /// The `host:port` in Package URIs; `None`: the CoAP address bound.
    pub package_authority: Option<String>,
    /// Tokens and limits of the HTTP API.
    pub api: ApiConfig,
    /// The limits unauthenticated CoAP peers meet.
    pub edge: EdgeLimits,
    /// The engine's CoAP timers, over the defaults (or the loopback ones).
    pub coap: CoapFile,
    /// coaps, when configured.
    pub coaps: Option<CoapsConfig>,
    /// The largest blocks pushed.
    pub blocks: BlockLimits,
    /// Package bytes per second each cell carries over every task; `None`: no cap.
    pub cell_airtime_bytes_per_sec: Option<u32>,
    /// How long a device in queue mode is reachable after its Register or Update; `None`: the
    /// engine's default.
    pub queue_window: Option<Duration>,
    /// Webhook deliveries.
    pub webhooks: WebhookConfig,
    /// This engine's place in a cluster, as the file says it.
    pub cluster: Option<ClusterFile>,
}

impl Settings {
    /// Each value from the flag or environment, else the file, else the default.
    pub fn resolve(overrides: Overrides, file: ConfigFile) -> Settings {
        let address = |text: &str| text.parse().expect("a default address");
        Settings {
            coap_addr: overrides
                .coap_addr
                .or(file.coap_addr)
                .unwrap_or_else(|| address(DEFAULT_COAP_ADDR)),
            http_addr: overrides
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| address(DEFAULT_HTTP_ADDR)),
            metrics_addr: overrides.metrics_addr.or(file.metrics_addr),
            store: match overrides.store.or(file.store) {
                Some(url) => StoreLocation::Postgres(url),
                None => StoreLocation::Directory(
                    overrides
                        .data_dir
                        .or(file.data_dir)
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
                ),
            },
            package_authority: overrides.package_authority.or(file.package_authority),
            edge: file.edge.limits(),
            coap: file.coap.clone(),
            coaps: file.coaps.as_ref().map(CoapsFile::config),
            blocks: file.blocks.limits().unwrap_or_default(),
            cell_airtime_bytes_per_sec: file.cell_airtime_bytes_per_sec,
            queue_window: file.queue_window_secs.map(Duration::from_secs),
            webhooks: file.webhooks.config(),
            cluster: file.cluster,
            api: ApiConfig {
                tokens: file.tokens,
                max_upload_bytes: overrides
                    .max_upload_bytes
                    .or(file.max_upload_bytes)
                    .unwrap_or(DEFAULT_MAX_UPLOAD_BYTES),
                max_connections: file.http_max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
                header_timeout: file
                    .http_header_timeout_secs
                    .map_or(DEFAULT_HEADER_TIMEOUT, Duration::from_secs),
                idle_timeout: file
                    .http_idle_timeout_secs
                    .map_or(DEFAULT_IDLE_TIMEOUT, Duration::from_secs),
                ..ApiConfig::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use fota_engine::api::Role;

    use super::*;

    const FILE: &str = r#"
        coap_addr = "127.0.0.1:5700"
        http_addr = "127.0.0.1:8700"
        metrics_addr = "127.0.0.1:9464"
        data_dir = "/var/lib/fota"
        max_upload_bytes = 1024
        package_authority = "fota.example.net:5683"
        http_max_connections = 32
        http_header_timeout_secs = 5
        http_idle_timeout_secs = 30
        cell_airtime_bytes_per_sec = 6250
        queue_window_secs = 20

        [[tokens]]
        token = "op"
        role = "operator"

        [[tokens]]
        token = "view"
        role = "viewer"

        [edge]
        max_lifetime_secs = 3600
        packages_to_anyone = true

        [coap]
        ack_timeout_ms = 2500
        congestion = "cocoa"
        min_rto_ms = 400

        [coaps]
        addr = "127.0.0.1:5701"
        require = true
        idle_timeout_secs = 120

        [blocks]
        max = 512
        cells = { 4711 = 128 }

        [webhooks]
        max_attempts = 3
        backoff_first_ms = 50
        forbid_private = true
    "#;

    #[test]
    fn the_file_sets_every_key() {
        let settings = Settings::resolve(Overrides::default(), ConfigFile::parse(FILE).unwrap());
        assert_eq!(settings.coap_addr, "127.0.0.1:5700".parse().unwrap());
        assert_eq!(settings.http_addr, "127.0.0.1:8700".parse().unwrap());
        assert_eq!(
            settings.metrics_addr,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(
            settings.store,
            StoreLocation::Directory(PathBuf::from("/var/lib/fota"))
        );
        assert_eq!(settings.api.max_upload_bytes, 1024);
        assert_eq!(
            settings.package_authority.as_deref(),
            Some("fota.example.net:5683")
        );
        let roles: Vec<_> = settings.api.tokens.iter().map(|t| t.role).collect();
        assert_eq!(roles, [Role::Operator, Role::Viewer]);
        assert_eq!(settings.edge.max_lifetime, Duration::from_secs(3600));
        assert!(settings.edge.packages_to_anyone);
        assert_eq!(
            settings.edge.max_object_links,
            EdgeLimits::default().max_object_links,
            "unset: the default"
        );
        assert_eq!(settings.api.max_connections, 32);
        assert_eq!(settings.cell_airtime_bytes_per_sec, Some(6250));
        assert_eq!(settings.queue_window, Some(Duration::from_secs(20)));
        assert_eq!(settings.api.header_timeout, Duration::from_secs(5));
        assert_eq!(settings.api.idle_timeout, Duration::from_secs(30));
        let coap = settings.coap.params(TransmissionParams::default());
        assert_eq!(coap.ack_timeout, Duration::from_millis(2500));
        assert_eq!(coap.max_retransmit, 4, "unset: the default");
        let min_rto = Duration::from_millis(400);
        assert_eq!(coap.congestion, Congestion::Cocoa { min_rto });
        let coaps = settings.coaps.expect("the [coaps] table turns coaps on");
        assert_eq!(coaps.addr, "127.0.0.1:5701".parse().unwrap());
        assert!(coaps.require);
        assert_eq!(coaps.dtls.idle_timeout, Duration::from_secs(120));
        assert_eq!(coaps.dtls.max_sessions, DtlsConfig::default().max_sessions);
        let blocks = &settings.blocks;
        assert_eq!(blocks.for_cell(Some(4711)), 128);
        assert_eq!(
            (blocks.for_cell(Some(1)), blocks.for_cell(None)),
            (512, 512)
        );
        let webhooks = &settings.webhooks;
        assert_eq!(webhooks.max_attempts, 3);
        assert_eq!(webhooks.backoff.first, Duration::from_millis(50));
        assert!(webhooks.http.forbid_private);
        let defaults = WebhookConfig::default();
        assert_eq!(
            webhooks.backoff.max, defaults.backoff.max,
            "unset: the default"
        );
        assert_eq!(webhooks.max_pending, defaults.max_pending);
    }

    #[test]
    fn a_database_url_takes_the_store_from_the_data_directory_and_the_flag_wins() {
        let file = ConfigFile::parse(
            "data_dir = \"/srv/fota\"\nstore = \"postgres://fota@db.example.net/fota\"",
        )
        .unwrap();
        let settings = Settings::resolve(Overrides::default(), file);
        assert_eq!(
            settings.store,
            StoreLocation::Postgres("postgres://fota@db.example.net/fota".into())
        );
        let overrides = Overrides {
            store: Some("postgresql://fota@other/fota".into()),
            ..Overrides::default()
        };
        let settings = Settings::resolve(overrides, ConfigFile::default());
        assert_eq!(
            settings.store,
            StoreLocation::Postgres("postgresql://fota@other/fota".into())
        );
    }

    #[test]
    fn flags_and_environment_override_the_file_and_defaults_fill_the_rest() {
        let overrides = Overrides {
            http_addr: Some("127.0.0.1:9000".parse().unwrap()),
            max_upload_bytes: Some(10),
            ..Overrides::default()
        };
        let file = ConfigFile::parse("data_dir = \"/srv/fota\"").unwrap();
        let settings = Settings::resolve(overrides, file);
        assert_eq!(settings.http_addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(settings.api.max_upload_bytes, 10);
        assert_eq!(
            settings.store,
            StoreLocation::Directory(PathBuf::from("/srv/fota"))
        );
        assert_eq!(settings.coap_addr, DEFAULT_COAP_ADDR.parse().unwrap());
        assert!(settings.api.tokens.is_empty());
        assert_eq!(settings.package_authority, None);
        assert_eq!(
            settings.metrics_addr, None,
            "no scrape address unless asked"
        );
        assert_eq!(settings.coaps, None, "no [coaps] table: plain CoAP only");
        assert_eq!(settings.api.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(settings.api.header_timeout, DEFAULT_HEADER_TIMEOUT);
        assert_eq!(settings.api.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    }

    #[test]
    fn unknown_keys_bad_roles_and_empty_tokens_are_refused() {
        assert!(ConfigFile::parse("http_adr = \"0.0.0.0:1\"").is_err());
        assert!(ConfigFile::parse("[edge]\nmax_links = 3").is_err());
        for (blocks, named) in [
            ("max = 1000", "max: 1000"),
            ("max = 2048", "max: 2048"),
            ("cells = { 7 = 8 }", "cell 7: 8"),
            ("cells = { north = 64 }", "\"north\""),
        ] {
            let error = ConfigFile::parse(&format!("[blocks]\n{blocks}")).unwrap_err();
            assert!(error.to_string().contains(named), "{blocks}: {error}");
        }
        assert!(ConfigFile::parse("[[tokens]]\ntoken = \"x\"\nrole = \"admin\"").is_err());
        assert!(ConfigFile::parse("[[tokens]]\ntoken = \" \"\nrole = \"viewer\"").is_err());
        for key in [
            "http_max_connections",
            "http_header_timeout_secs",
            "http_idle_timeout_secs",
            "cell_airtime_bytes_per_sec",
            "queue_window_secs",
        ] {
            let error = ConfigFile::parse(&format!("{key} = 0")).unwrap_err();
            assert!(error.to_string().contains(key), "{error}");
        }
    }

    #[test]
    fn round_trip_timers_are_named_with_their_floor() {
        let floor = |text: &str| {
            let file = ConfigFile::parse(text).unwrap();
            file.coap.params(TransmissionParams::default()).congestion
        };
        let min_rto = Duration::from_millis(400);
        let named = floor("[coap]\ncongestion = \"round-trip\"\nmin_rto_ms = 400");
        assert_eq!(named, Congestion::RoundTrip { min_rto });
        let unnamed = floor("[coap]\nmin_rto_ms = 400");
        assert_eq!(
            unnamed,
            Congestion::RoundTrip { min_rto },
            "the default's floor"
        );
        let default = floor("[coap]\ncongestion = \"round-trip\"");
        let min_rto = DEFAULT_MIN_RTO;
        assert_eq!(default, Congestion::RoundTrip { min_rto });
        assert_eq!(default, TransmissionParams::default().congestion);
    }

    #[test]
    fn a_named_file_must_exist() {
        assert!(ConfigFile::load(Some(Path::new("/nonexistent/fota.toml"))).is_err());
    }
}
