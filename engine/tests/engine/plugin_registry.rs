//! Plugins are bound to a vendor + model, with a default per kind; installing is validated and
//! replacing is atomic: calls in flight finish on the plugin they started on.

use crate::common::{device, host_with_policy_time, hostile, package};
use fota_engine::plugin::{Binding, Decision, PluginError, PluginKind, PluginRegistry, embedded};
use std::sync::Arc;
use std::time::Duration;

fn model(vendor: &str, model: &str) -> Binding {
    Binding::Model {
        vendor: vendor.into(),
        model: model.into(),
    }
}

fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn defaults_serve_every_model_until_one_is_bound() {
    let registry = PluginRegistry::new(host_with_policy_time(Duration::from_millis(100))).unwrap();
    let mut weak = device("d1", "nb-2");
    weak.battery_level = Some(25);
    assert_eq!(
        registry.decide(weak.clone(), package()).await.unwrap(),
        Decision::Go
    );

    let strict = settings(&[("min-battery", "50")]);
    registry
        .install(
            PluginKind::Policy,
            model("acme", "nb-2"),
            "strict",
            embedded::THRESHOLD_POLICY,
            strict,
        )
        .unwrap();
    assert!(matches!(
        registry.decide(weak.clone(), package()).await.unwrap(),
        Decision::Wait(_)
    ));
    let other_model = device("d2", "nb-1");
    assert_eq!(
        registry.policy("acme", "nb-1").name(),
        embedded::THRESHOLD_POLICY_NAME
    );
    assert_eq!(
        registry.decide(other_model, package()).await.unwrap(),
        Decision::Go
    );

    assert!(registry.unbind(PluginKind::Policy, "acme", "nb-2"));
    assert_eq!(
        registry.decide(weak, package()).await.unwrap(),
        Decision::Go
    );
}

#[test]
fn defaults_of_every_kind_are_the_embedded_plugins() {
    let registry = PluginRegistry::new(host_with_policy_time(Duration::from_millis(100))).unwrap();
    let mut names: Vec<_> = registry
        .bindings()
        .into_iter()
        .map(|(kind, binding, name, _)| (kind.world(), binding, name))
        .collect();
    names.sort_by_key(|(world, ..)| *world);
    assert_eq!(
        names,
        vec![
            (
                "capability",
                Binding::Default,
                embedded::GENERIC_CAPABILITY_NAME.to_string()
            ),
            (
                "differ",
                Binding::Default,
                embedded::BSDIFF_NAME.to_string()
            ),
            (
                "packager",
                Binding::Default,
                embedded::CRC_CONTAINER_NAME.to_string()
            ),
            (
                "policy",
                Binding::Default,
                embedded::THRESHOLD_POLICY_NAME.to_string()
            ),
        ]
    );
}

#[test]
fn installing_the_wrong_world_is_refused_and_changes_nothing() {
    let registry = PluginRegistry::new(host_with_policy_time(Duration::from_millis(100))).unwrap();
    let err = registry
        .install(
            PluginKind::Differ,
            model("acme", "nb-2"),
            "policy-as-differ",
            embedded::THRESHOLD_POLICY,
            Vec::new(),
        )
        .unwrap_err();
    assert!(matches!(err, PluginError::WrongWorld { .. }), "{err}");
    assert_eq!(
        registry.differ("acme", "nb-2").name(),
        embedded::BSDIFF_NAME
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_finishes_on_the_plugin_it_started_on() {
    let registry =
        Arc::new(PluginRegistry::new(host_with_policy_time(Duration::from_secs(2))).unwrap());
    registry
        .install(
            PluginKind::Policy,
            model("acme", "nb-2"),
            "spin",
            &hostile("spin"),
            Vec::new(),
        )
        .unwrap();
    // A call looks its plugin up once, then runs on it.
    let looked_up = registry.policy("acme", "nb-2");
    assert_eq!(looked_up.name(), "spin");
    let in_flight =
        tokio::spawn(async move { looked_up.decide(device("d1", "nb-2"), package()).await });
    // Replace the binding while the old plugin's call runs: new calls get the new plugin at once.
    registry
        .install(
            PluginKind::Policy,
            model("acme", "nb-2"),
            "fixed",
            embedded::THRESHOLD_POLICY,
            Vec::new(),
        )
        .unwrap();
    assert_eq!(
        registry
            .decide(device("d2", "nb-2"), package())
            .await
            .unwrap(),
        Decision::Go
    );
    let old = in_flight.await.unwrap().unwrap_err();
    assert!(
        matches!(&old, PluginError::Timeout { plugin, .. } if plugin == "spin"),
        "{old}"
    );
}
