//! The test bed: a real platform on loopback with a temporary store, its API on a real TCP
//! listener on 127.0.0.1:0, and optionally a simulated fleet registered to it.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use fota_device::fleet::{Fleet, FleetSpec, ModelSpec, wait_registered};
use fota_engine::api::{self, ApiConfig, Role, Token};
use fota_engine::clock::Clock;
use fota_engine::platform::{Platform, PlatformConfig, PlatformError};
use fota_engine::plugin::{HostConfig, PluginHost};
use fota_engine::server::ServerConfig;
use fota_engine::store::{Store, StoreLocation};
use fota_engine::webhooks::WebhookConfig;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use fota_sim::support::{image, within};

use crate::api::client::Client;
use crate::api::contract::Contract;

/// The operator's token.
pub const OPERATOR: &str = "operator-token-0123456789";
/// The viewer's token.
pub const VIEWER: &str = "viewer-token-0123456789";
/// Largest upload the test API takes (the reference plugins are under 200 KB).
pub const MAX_UPLOAD: usize = 256 * 1024;
/// Longest a fleet may take to register and be surveyed, or a task to complete.
pub const BOUND: Duration = Duration::from_secs(120);

/// The system time, in milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A platform with its API.
pub struct Bed {
    /// The engine.
    pub platform: Arc<Platform>,
    /// The API, with the operator's token.
    pub api: Client,
    /// Devices registered to the engine, when asked for.
    pub fleet: Option<Fleet>,
    /// Stops the API (its graceful shutdown) when sent to or dropped.
    pub stop_api: Option<oneshot::Sender<()>>,
    /// The API's `serve`, which returns once it has stopped.
    pub served: Option<JoinHandle<std::io::Result<()>>>,
}

/// A platform on loopback, its store temporary.
fn platform_config() -> PlatformConfig {
    PlatformConfig {
        server: ServerConfig::loopback(),
        store: StoreLocation::Temporary,
        plugins: HostConfig::default(),
        webhooks: WebhookConfig::default(),
    }
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

impl Bed {
    /// A platform and its API, no devices.
    pub async fn start() -> Bed {
        Bed::start_with(|_| {}).await
    }

    /// A platform whose CoAP side's configuration `adjust` changed, and its API, no devices.
    pub async fn start_platform(adjust: impl FnOnce(&mut ServerConfig)) -> Bed {
        let mut config = platform_config();
        adjust(&mut config.server);
        let platform = Platform::start(config).await;
        Bed::serve(platform.expect("the platform starts"), |_| {}).await
    }

    /// As [`Bed::start`], the API's configuration changed by `adjust` first.
    pub async fn start_with(adjust: impl FnOnce(&mut ApiConfig)) -> Bed {
        let platform = Platform::start(platform_config()).await;
        Bed::serve(platform.expect("the platform starts"), adjust).await
    }

    /// A platform whose webhooks are delivered as `webhooks` says, and its API.
    pub async fn with_webhooks(webhooks: WebhookConfig) -> Bed {
        let config = PlatformConfig {
            webhooks,
            ..platform_config()
        };
        let platform = Platform::start(config).await;
        Bed::serve(platform.expect("the platform starts"), |_| {}).await
    }

    /// A platform on `store`, which outlasts it as a data directory does (engines are started
    /// on it one after another), and its API.
    pub async fn on_store(store: Arc<dyn Store>) -> Bed {
        Bed::on_store_with(store, |_| {}).await
    }

    /// As [`Bed::on_store`], the CoAP side's configuration changed by `adjust` first. A CoAP
    /// address an engine just left is bound again as soon as it is free.
    pub async fn on_store_with(
        store: Arc<dyn Store>,
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> Bed {
        let mut config = platform_config();
        adjust(&mut config.server);
        let platform = within(BOUND, "the platform starts", async {
            loop {
                let host = PluginHost::new(HostConfig::default()).expect("a plugin host");
                let started =
                    Platform::start_on(host, Clock::system(), store.clone(), config.clone()).await;
                match started {
                    Err(PlatformError::Io(error)) if error.kind() == ErrorKind::AddrInUse => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    started => return started.expect("the platform starts"),
                }
            }
        })
        .await;
        Bed::serve(platform, |_| {}).await
    }

    /// Serves `platform`'s API, its configuration changed by `adjust` first.
    async fn serve(platform: Platform, adjust: impl FnOnce(&mut ApiConfig)) -> Bed {
        let platform = Arc::new(platform);
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
        let mut config = config;
        adjust(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_api, stop) = oneshot::channel::<()>();
        let stopping = async move {
            let _ = stop.await;
        };
        let served = tokio::spawn(api::serve(listener, platform.clone(), config, stopping));
        let mut api = Client {
            addr,
            token: Some(OPERATOR.into()),
            contract: None,
        };
        let document = api.get("/v1/openapi.json").await.json();
        api.contract = Some(Arc::new(Contract { document }));
        Bed {
            platform,
            api,
            fleet: None,
            stop_api: Some(stop_api),
            served: Some(served),
        }
    }

    /// A platform with `devices` devices of `models` (round-robin), registered and surveyed.
    pub async fn with_fleet(devices: usize, models: Vec<ModelSpec>) -> Bed {
        Bed::with_fleet_spec(devices, models, |_| {}).await
    }

    /// As [`Bed::with_fleet`], the fleet's spec changed by `adjust` first.
    pub async fn with_fleet_spec(
        devices: usize,
        models: Vec<ModelSpec>,
        adjust: impl FnOnce(&mut FleetSpec),
    ) -> Bed {
        let mut bed = Bed::start().await;
        bed.add_fleet(devices, models, adjust).await;
        bed
    }

    /// Registers `devices` devices of `models` (round-robin) to this platform, their spec
    /// changed by `adjust` first, and waits until each is surveyed.
    pub async fn add_fleet(
        &mut self,
        devices: usize,
        models: Vec<ModelSpec>,
        adjust: impl FnOnce(&mut FleetSpec),
    ) {
        let mut spec =
            FleetSpec::uniform(devices, self.platform.server.coap_addr(), models[0].clone());
        spec.models = models;
        adjust(&mut spec);
        let registered = self.platform.server.registry.subscribe();
        let fleet = Fleet::start(&spec).await.expect("the fleet starts");
        assert!(wait_registered(registered, devices, BOUND).await);
        within(BOUND, "every device surveyed", async {
            while self.surveyed(&spec.models).await < devices {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        self.fleet = Some(fleet);
    }

    /// Devices of `models` the API lists by their model: the catalog's index knows it (it
    /// learns it a moment after the device's record, which a list without a filter shows).
    async fn surveyed(&self, models: &[ModelSpec]) -> usize {
        let mut surveyed = 0;
        for model in models {
            surveyed += self.endpoints(&model.model).await.len();
        }
        surveyed
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

    /// The value of the Prometheus sample `name` (with its labels, if any) at `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.api.get("/metrics").await.expect(StatusCode::OK).body;
        let text = String::from_utf8(text.to_vec()).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    /// Creates a group of Acme `model` holding `endpoints`; returns its id.
    pub async fn group(&self, model: &str, endpoints: &[String]) -> String {
        let group = self
            .api
            .post(
                "/v1/groups",
                &json!({ "name": model, "vendor": "Acme", "model": model }),
            )
            .await
            .expect(StatusCode::CREATED)
            .json();
        let id = group["id"].as_str().unwrap().to_string();
        self.api
            .post(
                &format!("/v1/groups/{id}/devices"),
                &json!({ "endpoints": endpoints }),
            )
            .await
            .expect(StatusCode::OK);
        id
    }

    /// Uploads `version` of `model` and makes a full package of it; returns the package id.
    pub async fn full_package(&self, model: &str, version: &str, seed: u8) -> String {
        let firmware = self.firmware(model, version, &image(24_000, seed)).await;
        let package = self
            .api
            // The fleet's reference devices verify the platform's signed container.
            .post(
                "/v1/packages",
                &json!({ "kind": "full", "to_firmware": firmware["id"], "format": "signed" }),
            )
            .await
            .expect(StatusCode::CREATED)
            .json();
        package["id"].as_str().unwrap().to_string()
    }

    /// Creates a task of `spec` with no execution time and starts it by hand at once; returns
    /// the answer to `POST /v1/tasks/{id}/start` (the task, upgrading). The engine starts such
    /// a task itself too, at once: whoever comes first, the start is answered 200.
    pub async fn start_by_hand(&self, mut spec: Value) -> Value {
        spec["execution_time"] = Value::Null;
        let task = self
            .api
            .post("/v1/tasks", &spec)
            .await
            .expect(StatusCode::CREATED)
            .json();
        let path = format!("/v1/tasks/{}/start", task["id"].as_str().unwrap());
        let started = self
            .api
            .send(Method::POST, &path, None)
            .await
            .expect(StatusCode::OK)
            .json();
        assert_eq!(started["status"], "upgrading", "{started}");
        started
    }

    /// Uploads `image` as Acme `model` `version`; returns the firmware record.
    pub async fn firmware(&self, model: &str, version: &str, image: &[u8]) -> Value {
        let path = format!("/v1/firmware?vendor=Acme&model={model}&version={version}");
        self.api
            .upload(path, image.to_vec())
            .await
            .expect(StatusCode::CREATED)
            .json()
    }
}
