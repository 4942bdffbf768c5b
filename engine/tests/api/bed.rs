//! The test bed: a real platform on loopback with a temporary store, its API on a real TCP
//! listener on 127.0.0.1:0, and optionally a simulated fleet registered to it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fota_device::fleet::{Fleet, FleetSpec, ModelSpec, wait_registered};
use fota_engine::api::{self, ApiConfig, Role, Token};
use fota_engine::platform::{Platform, PlatformConfig};
use fota_engine::plugin::HostConfig;
use fota_engine::server::ServerConfig;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::client::Client;

/// The operator's token.
pub const OPERATOR: &str = "operator-token-0123456789";
/// The viewer's token.
pub const VIEWER: &str = "viewer-token-0123456789";
/// Largest upload the test API takes (the reference plugins are under 200 KB).
pub const MAX_UPLOAD: usize = 256 * 1024;
/// Longest a fleet may take to register and be surveyed, or a task to complete.
pub const BOUND: Duration = Duration::from_secs(120);

/// A platform with its API.
pub struct Bed {
    /// The engine.
    pub platform: Arc<Platform>,
    /// The API, with the operator's token.
    pub api: Client,
    /// Devices registered to the engine, when asked for.
    pub fleet: Option<Fleet>,
}

/// Deterministic image bytes.
pub fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// A model of vendor Acme on version 1.0.
pub fn model(name: &str, seed: u8) -> ModelSpec {
    ModelSpec {
        manufacturer: "Acme".into(),
        model: name.into(),
        image: image(20_000, seed),
        version: "1.0".into(),
    }
}

/// Runs `future`, failing the test if it takes longer than `bound`.
pub async fn within<T>(bound: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(bound, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {bound:?}"))
}

impl Bed {
    /// A platform and its API, no devices.
    pub async fn start() -> Bed {
        let platform = Arc::new(
            Platform::start(PlatformConfig {
                server: ServerConfig::loopback(),
                data_dir: None,
                plugins: HostConfig::default(),
            })
            .await
            .expect("the platform starts"),
        );
        let config = ApiConfig {
            tokens: vec![
                Token {
                    token: OPERATOR.into(),
                    role: Role::Operator,
                },
                Token {
                    token: VIEWER.into(),
                    role: Role::Viewer,
                },
            ],
            max_upload_bytes: MAX_UPLOAD,
            ..ApiConfig::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = platform.clone();
        tokio::spawn(
            async move { api::serve(listener, served, config, std::future::pending()).await },
        );
        Bed {
            platform,
            api: Client {
                addr,
                token: Some(OPERATOR.into()),
            },
            fleet: None,
        }
    }

    /// A platform with `devices` devices of `models` (round-robin), registered and surveyed.
    pub async fn with_fleet(devices: usize, models: Vec<ModelSpec>) -> Bed {
        let mut bed = Bed::start().await;
        let mut spec =
            FleetSpec::uniform(devices, bed.platform.server.coap_addr(), models[0].clone());
        spec.models = models;
        let registered = bed.platform.server.registry.subscribe();
        let fleet = Fleet::start(&spec).await.expect("the fleet starts");
        assert!(wait_registered(registered, devices, BOUND).await);
        within(BOUND, "every device surveyed", async {
            while bed.surveyed().await < devices {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        bed.fleet = Some(fleet);
        bed
    }

    /// Devices whose model the catalog knows, as the API shows them.
    async fn surveyed(&self) -> usize {
        let devices = self.api.get("/v1/devices?limit=1000").await.json();
        devices["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| !d["model"].is_null())
            .count()
    }

    /// Endpoints of the fleet's devices of `model`, in endpoint order.
    pub async fn endpoints(&self, model: &str) -> Vec<String> {
        let devices = self
            .api
            .get(&format!("/v1/devices?model={model}&limit=1000"))
            .await
            .json();
        devices["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["endpoint"].as_str().unwrap().to_string())
            .collect()
    }

    /// Uploads `image` as Acme `model` `version`; returns the firmware record.
    pub async fn firmware(&self, model: &str, version: &str, image: &[u8]) -> Value {
        let path = format!("/v1/firmware?vendor=Acme&model={model}&version={version}");
        self.api
            .upload(path, image.to_vec())
            .await
            .expect(hyper::StatusCode::CREATED)
            .json()
    }
}
