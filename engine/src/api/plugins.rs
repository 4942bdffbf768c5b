//! Plugins routes: upload a WebAssembly component and bind it to a vendor and model (or as the
//! default of its kind), list the bindings with their settings, change the settings of the
//! plugin serving a model (or of a kind's default) without uploading it again, unbind a model
//! so its devices get the default again, and make the embedded reference plugin a kind's
//! default again. The component is the body of an upload; kind, vendor, model, name and
//! settings are in its query, each setting as a `setting=key=value` pair (repeated; encode the
//! inner `=` as `%3D` or not).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::ApiState;
use super::extract::{Checked, JsonBody};
use super::problem::{ApiResult, Kind, Problem};
use super::representation::{self, Conditions, created, made_if_absent, tagged};
use crate::catalog::firmware::name_ok;
use crate::plugin::{Binding, InstallError, PluginKind, Settings};

/// A plugin bound to devices, as the API shows it.
#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct PluginBinding {
    /// `differ`, `capability` or `policy`.
    kind: &'static str,
    /// Manufacturer of the devices it serves; absent for the default of its kind.
    vendor: Option<String>,
    /// Module model of the devices it serves; absent for the default of its kind.
    model: Option<String>,
    /// Name given at upload.
    name: String,
    /// The settings its `configure` got.
    settings: BTreeMap<String, String>,
}

impl PluginBinding {
    fn new(kind: PluginKind, binding: Binding, name: String, settings: Settings) -> Self {
        let (vendor, model) = match binding {
            Binding::Default => (None, None),
            Binding::Model { vendor, model } => (Some(vendor), Some(model)),
        };
        PluginBinding {
            kind: kind.world(),
            vendor,
            model,
            name,
            settings: settings.into_iter().collect(),
        }
    }
}

/// Body of `PATCH /v1/plugins/{kind}` and `PATCH /v1/plugins/{kind}/{vendor}/{model}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSettings {
    /// Every setting, replacing the ones given before.
    settings: BTreeMap<String, String>,
}

/// What `POST /v1/plugins` asks, read from its query.
struct Installation {
    kind: PluginKind,
    binding: Binding,
    name: String,
    settings: Settings,
}

impl Installation {
    /// Reads `kind`, `name`, `vendor` and `model` (both or neither) and `setting=key=value`
    /// pairs; any other parameter is refused.
    fn from_query(pairs: Vec<(String, String)>) -> Result<Self, Problem> {
        let (mut kind, mut name, mut vendor, mut model) = (None, None, None, None);
        let mut settings = Settings::new();
        for (key, value) in pairs {
            match key.as_str() {
                "kind" => kind = Some(kind_named(&value, Kind::BadRequest)?),
                "name" => name = Some(value),
                "vendor" => vendor = Some(value),
                "model" => model = Some(value),
                "setting" => settings.push(setting(&value)?),
                other => return Err(bad(format!("unknown query parameter `{other}`"))),
            }
        }
        let binding = match (vendor, model) {
            (Some(vendor), Some(model)) if name_ok(&vendor) && name_ok(&model) => {
                Binding::Model { vendor, model }
            }
            (Some(_), Some(_)) => {
                return Err(bad("a vendor and a model have 1 to 255 bytes each".into()));
            }
            (None, None) => Binding::Default,
            _ => {
                return Err(bad(
                    "give both vendor and model, or neither for the default".into(),
                ));
            }
        };
        Ok(Installation {
            kind: kind.ok_or_else(|| {
                bad("the query needs kind=policy|capability|differ|packager".into())
            })?,
            binding,
            name: name
                .filter(|n| name_ok(n))
                .ok_or_else(|| bad("the query needs a name of 1 to 255 bytes".into()))?,
            settings,
        })
    }
}

fn bad(detail: String) -> Problem {
    Problem::new(Kind::BadRequest, detail)
}

/// The kind named `name`; `otherwise` is the problem's kind when there is none.
fn kind_named(name: &str, otherwise: Kind) -> Result<PluginKind, Problem> {
    PluginKind::ALL
        .into_iter()
        .find(|kind| kind.world() == name)
        .ok_or_else(|| {
            Problem::new(
                otherwise,
                format!("no plugin kind `{name}`: policy, capability, differ or packager"),
            )
        })
}

/// A `key=value` setting.
fn setting(pair: &str) -> Result<(String, String), Problem> {
    match pair.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.into(), value.into())),
        _ => Err(bad(format!("setting `{pair}` is not key=value"))),
    }
}

/// `POST /v1/plugins`: compiles and checks the component off the async threads, keeps it in
/// the store, then binds it (so a store failure leaves the bindings as they were).
pub async fn install(
    State(state): State<ApiState>,
    Checked(Query(pairs)): Checked<Query<Vec<(String, String)>>>,
    Checked(wasm): Checked<Bytes>,
) -> ApiResult<Response> {
    let wanted = Installation::from_query(pairs)?;
    if wanted.name.starts_with("builtin/") {
        return Err(bad(
            "names starting with builtin/ are the embedded plugins'".into(),
        ));
    }
    let (kind, binding, name) = (wanted.kind, wanted.binding.clone(), wanted.name.clone());
    let settings = wanted.settings.clone();
    let location = location(kind, &binding);
    off_the_runtime(&state, move |platform| {
        let registry = &platform.plugins;
        platform
            .kept_plugins
            .install(registry, kind, binding, &name, &wasm, wanted.settings)
    })
    .await?;
    let installed = PluginBinding::new(wanted.kind, wanted.binding, wanted.name, settings);
    Ok(created(&location, &installed))
}

/// The URL of the plugin of `kind` bound as `binding`.
fn location(kind: PluginKind, binding: &Binding) -> String {
    match binding {
        Binding::Default => representation::location("/v1/plugins", &[kind.world()]),
        Binding::Model { vendor, model } => {
            representation::location("/v1/plugins", &[kind.world(), vendor, model])
        }
    }
}

/// The plugin of `kind` bound as `binding`; 404 when there is none.
fn bound(state: &ApiState, kind: PluginKind, binding: &Binding) -> ApiResult<PluginBinding> {
    let found = state.platform.plugins.bindings().into_iter().find(|bound| {
        let (bound_kind, bound_as, ..) = bound;
        *bound_kind == kind && bound_as == binding
    });
    let (kind, binding, name, settings) = found.ok_or_else(|| {
        Problem::new(
            Kind::NotFound,
            format!("no {kind} plugin is bound at {}", location(kind, binding)),
        )
    })?;
    Ok(PluginBinding::new(kind, binding, name, settings))
}

/// The kind named in a path, and the binding of the vendor and model after it (if any).
fn addressed(kind: &str, model: Option<(String, String)>) -> ApiResult<(PluginKind, Binding)> {
    let kind = kind_named(kind, Kind::NotFound)?;
    let binding = match model {
        Some((vendor, model)) => Binding::Model { vendor, model },
        None => Binding::Default,
    };
    Ok((kind, binding))
}

/// `GET /v1/plugins/{kind}`: the kind's default.
pub async fn one_default(
    State(state): State<ApiState>,
    Checked(Path(kind)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<Response> {
    let (kind, binding) = addressed(&kind, None)?;
    Ok(conditions.read(&bound(&state, kind, &binding)?))
}

/// `GET /v1/plugins/{kind}/{vendor}/{model}`: the plugin bound to a model.
pub async fn one_of_model(
    State(state): State<ApiState>,
    Checked(Path((kind, vendor, model))): Checked<Path<(String, String, String)>>,
    conditions: Conditions,
) -> ApiResult<Response> {
    let (kind, binding) = addressed(&kind, Some((vendor, model)))?;
    Ok(conditions.read(&bound(&state, kind, &binding)?))
}

/// `PATCH /v1/plugins/{kind}`: new settings for the kind's default.
pub async fn configure_default(
    State(state): State<ApiState>,
    Checked(Path(kind)): Checked<Path<String>>,
    conditions: Conditions,
    JsonBody(new): JsonBody<NewSettings>,
) -> ApiResult<Response> {
    let (kind, binding) = addressed(&kind, None)?;
    configure(state, kind, binding, conditions, new).await
}

/// `PATCH /v1/plugins/{kind}/{vendor}/{model}`: new settings for the plugin serving a model
/// (the default's component, bound to the model with these settings, when it has none).
pub async fn configure_model(
    State(state): State<ApiState>,
    Checked(Path((kind, vendor, model))): Checked<Path<(String, String, String)>>,
    conditions: Conditions,
    JsonBody(new): JsonBody<NewSettings>,
) -> ApiResult<Response> {
    let (kind, binding) = addressed(&kind, Some((vendor, model)))?;
    configure(state, kind, binding, conditions, new).await
}

/// Configures the plugin of `kind` serving `binding` off the async threads (instantiating
/// it checks the settings), keeps the change, then binds it; when the request's conditions
/// hold for the binding as it was (a model without its own binding has none to match).
async fn configure(
    state: ApiState,
    kind: PluginKind,
    binding: Binding,
    conditions: Conditions,
    new: NewSettings,
) -> ApiResult<Response> {
    let settings: Settings = new.settings.into_iter().collect();
    let url = location(kind, &binding);
    let _writing = state.writes.lock(&url).await;
    if conditions.has_if_match() {
        let current = made_if_absent(bound(&state, kind, &binding));
        conditions.check(&current?)?;
    }
    let (bound, kept) = (binding.clone(), settings.clone());
    let name = off_the_runtime(&state, move |platform| {
        platform
            .kept_plugins
            .configure(&platform.plugins, kind, bound, kept)
    })
    .await?;
    Ok(tagged(&PluginBinding::new(kind, binding, name, settings)))
}

/// Runs a change of the kept plugins (it compiles or instantiates: blocks) on the blocking
/// pool; a refused component or setting is the client's problem, a store failure the engine's.
async fn off_the_runtime<T: Send + 'static>(
    state: &ApiState,
    change: impl FnOnce(&crate::platform::Platform) -> Result<T, InstallError> + Send + 'static,
) -> ApiResult<T> {
    let platform = state.platform.clone();
    tokio::task::spawn_blocking(move || change(&platform))
        .await
        .map_err(|e| Problem::internal(&e))?
        .map_err(|error| match error {
            InstallError::Plugin(error) => error.into(),
            InstallError::Store(error) => Problem::internal(&error),
        })
}

/// `GET /v1/plugins`: every binding, defaults included, in kind, vendor and model order.
pub async fn list(State(state): State<ApiState>) -> Json<Vec<PluginBinding>> {
    let mut all: Vec<_> = state
        .platform
        .plugins
        .bindings()
        .into_iter()
        .map(|(kind, binding, name, settings)| PluginBinding::new(kind, binding, name, settings))
        .collect();
    all.sort();
    Json(all)
}

/// `DELETE /v1/plugins/{kind}/{vendor}/{model}`.
pub async fn unbind(
    State(state): State<ApiState>,
    Checked(Path((kind, vendor, model))): Checked<Path<(String, String, String)>>,
    conditions: Conditions,
) -> ApiResult<StatusCode> {
    let (kind, binding) = addressed(&kind, Some((vendor.clone(), model.clone())))?;
    let platform = &state.platform;
    let current = || bound(&state, kind, &binding);
    let unbind = || {
        let kept = &platform.kept_plugins;
        let unbound = kept.unbind(&platform.plugins, kind, &vendor, &model);
        match unbound.map_err(|e| Problem::internal(&e))? {
            true => Ok(()),
            false => Err(Problem::new(
                Kind::NotFound,
                format!("no {kind} plugin is bound to {vendor} {model}"),
            )),
        }
    };
    let url = location(kind, &binding);
    state.change(&url, &conditions, current, unbind).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/plugins/{kind}`: the embedded reference plugin is the kind's default again.
pub async fn reset_default(
    State(state): State<ApiState>,
    Checked(Path(kind)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<StatusCode> {
    let (kind, binding) = addressed(&kind, None)?;
    let platform = &state.platform;
    let current = || bound(&state, kind, &binding);
    let reset = || {
        let kept = &platform.kept_plugins;
        kept.reset_default(&platform.plugins, kind)
            .map_err(|e| Problem::internal(&e))
    };
    let url = location(kind, &binding);
    state.change(&url, &conditions, current, reset).await?;
    Ok(StatusCode::NO_CONTENT)
}
