//! `fota.toml`: the configuration file of `fota serve`, and how it combines with environment
//! variables and flags (flag > environment > file > default). Owns reading and merging only.
//!
//! ```toml
//! coap_addr = "0.0.0.0:5683"         # UDP address devices register to
//! http_addr = "0.0.0.0:8080"         # TCP address of the HTTP API
//! data_dir = "./fota-data"           # where the store lives
//! max_upload_bytes = 33554432        # largest firmware image or plugin upload (413 above)
//! package_authority = "fota.example.net:5683"  # host:port in Package URIs (pulling devices)
//! http_max_connections = 256         # HTTP connections served at once (503 and closed above)
//! http_header_timeout_secs = 10      # time to send a request head, then the connection closes
//! http_idle_timeout_secs = 60        # time a kept-alive connection may wait for a request
//!
//! [[tokens]]                         # bearer tokens of the HTTP API, one table each
//! token = "a long random secret"
//! role = "operator"                  # operator: everything; viewer: GET only
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use fota_engine::api::{
    ApiConfig, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_UPLOAD_BYTES, Token,
};
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
    /// Where the store lives.
    pub data_dir: Option<PathBuf>,
    /// Largest firmware image or plugin component the API accepts.
    pub max_upload_bytes: Option<usize>,
    /// The `host:port` devices reach the engine at, put in Package URIs.
    pub package_authority: Option<String>,
    /// HTTP connections served at once.
    pub http_max_connections: Option<usize>,
    /// Seconds a client has to send a request head.
    pub http_header_timeout_secs: Option<u64>,
    /// Seconds a kept-alive HTTP connection may wait for its next request.
    pub http_idle_timeout_secs: Option<u64>,
    /// Bearer tokens of the HTTP API (only here: a secret on a command line shows in `ps`).
    #[serde(default)]
    pub tokens: Vec<Token>,
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
        ];
        if let Some((key, _)) = zero.iter().find(|(_, zero)| *zero) {
            anyhow::bail!("{key} must be at least 1");
        }
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
    /// `--data-dir` or `FOTA_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
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
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// The `host:port` in Package URIs; `None`: the CoAP address bound.
    pub package_authority: Option<String>,
    /// Tokens and limits of the HTTP API.
    pub api: ApiConfig,
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
            data_dir: overrides
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            package_authority: overrides.package_authority.or(file.package_authority),
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
        data_dir = "/var/lib/fota"
        max_upload_bytes = 1024
        package_authority = "fota.example.net:5683"
        http_max_connections = 32
        http_header_timeout_secs = 5
        http_idle_timeout_secs = 30

        [[tokens]]
        token = "op"
        role = "operator"

        [[tokens]]
        token = "view"
        role = "viewer"
    "#;

    #[test]
    fn the_file_sets_every_key() {
        let settings = Settings::resolve(Overrides::default(), ConfigFile::parse(FILE).unwrap());
        assert_eq!(settings.coap_addr, "127.0.0.1:5700".parse().unwrap());
        assert_eq!(settings.http_addr, "127.0.0.1:8700".parse().unwrap());
        assert_eq!(settings.data_dir, PathBuf::from("/var/lib/fota"));
        assert_eq!(settings.api.max_upload_bytes, 1024);
        assert_eq!(
            settings.package_authority.as_deref(),
            Some("fota.example.net:5683")
        );
        let roles: Vec<_> = settings.api.tokens.iter().map(|t| t.role).collect();
        assert_eq!(roles, [Role::Operator, Role::Viewer]);
        assert_eq!(settings.api.max_connections, 32);
        assert_eq!(settings.api.header_timeout, Duration::from_secs(5));
        assert_eq!(settings.api.idle_timeout, Duration::from_secs(30));
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
        assert_eq!(settings.data_dir, PathBuf::from("/srv/fota"));
        assert_eq!(settings.coap_addr, DEFAULT_COAP_ADDR.parse().unwrap());
        assert!(settings.api.tokens.is_empty());
        assert_eq!(settings.package_authority, None);
        assert_eq!(settings.api.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(settings.api.header_timeout, DEFAULT_HEADER_TIMEOUT);
        assert_eq!(settings.api.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    }

    #[test]
    fn unknown_keys_bad_roles_and_empty_tokens_are_refused() {
        assert!(ConfigFile::parse("http_adr = \"0.0.0.0:1\"").is_err());
        assert!(ConfigFile::parse("[[tokens]]\ntoken = \"x\"\nrole = \"admin\"").is_err());
        assert!(ConfigFile::parse("[[tokens]]\ntoken = \" \"\nrole = \"viewer\"").is_err());
        for key in [
            "http_max_connections",
            "http_header_timeout_secs",
            "http_idle_timeout_secs",
        ] {
            let error = ConfigFile::parse(&format!("{key} = 0")).unwrap_err();
            assert!(error.to_string().contains(key), "{error}");
        }
    }

    #[test]
    fn a_named_file_must_exist() {
        assert!(ConfigFile::load(Some(Path::new("/nonexistent/fota.toml"))).is_err());
    }
}
