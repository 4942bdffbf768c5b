//! The reference plugins, embedded in the engine, answer through the real host as their
//! settings say.

use crate::common::{device, package};
use fota_engine::plugin::{
    Decision, DeliveryMethod, DeliveryPlan, HostConfig, PackageKind, Plugin, PluginError,
    PluginHost, PolicyPlugin, ResetMethod, Skip, SkipReason, TransferMethod, embedded,
};

fn host() -> PluginHost {
    PluginHost::new(HostConfig::default()).unwrap()
}

fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn threshold_policy(pairs: &[(&str, &str)]) -> PolicyPlugin {
    Plugin::load(
        &host(),
        "threshold",
        embedded::THRESHOLD_POLICY,
        settings(pairs),
    )
    .unwrap()
}

#[test]
fn threshold_policy_lets_a_healthy_device_go() {
    let policy = threshold_policy(&[]);
    assert_eq!(
        policy
            .decide_blocking(&device("d1", "m"), &package())
            .unwrap(),
        Decision::Go
    );
}

#[test]
fn threshold_policy_makes_a_weak_device_wait_with_the_reason() {
    let policy = threshold_policy(&[
        ("min-battery", "30"),
        ("min-signal-dbm", "-100"),
        ("retry-seconds", "600"),
    ]);
    let mut low_battery = device("d1", "m");
    low_battery.battery_level = Some(12);
    let Decision::Wait(wait) = policy.decide_blocking(&low_battery, &package()).unwrap() else {
        panic!("not wait")
    };
    assert_eq!(
        (wait.seconds, wait.reason.as_str()),
        (600, "battery 12 % < 30 %")
    );

    let mut weak_signal = device("d2", "m");
    weak_signal.signal_dbm = Some(-105);
    let Decision::Wait(wait) = policy.decide_blocking(&weak_signal, &package()).unwrap() else {
        panic!("not wait")
    };
    assert_eq!(wait.reason, "signal -105 dBm < -100 dBm");
}

#[test]
fn threshold_policy_checks_memory_free_only_where_the_model_says_it_is_storage() {
    let mut full = device("d1", "m");
    full.memory_free_kb = Some(64);
    let stock = threshold_policy(&[]);
    assert_eq!(
        stock.decide_blocking(&full, &package()).unwrap(),
        Decision::Go,
        "/3/0/10 is RAM on most stacks"
    );
    let storage = threshold_policy(&[("memory-free-is-storage", "true")]);
    assert_eq!(
        storage.decide_blocking(&full, &package()).unwrap(),
        Decision::Skip(Skip {
            why: SkipReason::InsufficientSpace,
            reason: "free memory 64 KiB < package 100 KiB".into()
        })
    );
}

#[test]
fn threshold_policy_checks_the_battery_only_of_a_device_that_runs_on_one() {
    let policy = threshold_policy(&[]);
    let mut mains = device("d1", "m");
    mains.battery_level = Some(0);
    mains.power_sources = vec![6];
    assert_eq!(
        policy.decide_blocking(&mains, &package()).unwrap(),
        Decision::Go
    );
    let mut silent = device("d2", "m");
    silent.battery_level = Some(0);
    silent.power_sources = vec![];
    assert_eq!(
        policy.decide_blocking(&silent, &package()).unwrap(),
        Decision::Go,
        "a device that answers is not at 0 %"
    );
    let mut low = device("d3", "m");
    low.battery_level = Some(10);
    low.power_sources = vec![1];
    assert!(matches!(
        policy.decide_blocking(&low, &package()).unwrap(),
        Decision::Wait(_)
    ));
}

#[test]
fn threshold_policy_refuses_bad_settings_at_load() {
    let refused = |pairs: &[(&str, &str)]| match PolicyPlugin::load(
        &host(),
        "threshold",
        embedded::THRESHOLD_POLICY,
        settings(pairs),
    ) {
        Ok(_) => panic!("settings {pairs:?} accepted"),
        Err(e) => e,
    };
    let err = refused(&[("min-battery", "lots")]);
    assert!(
        matches!(&err, PluginError::Settings { message, .. } if message.contains("min-battery")),
        "{err}"
    );
    let err = refused(&[("colour", "blue")]);
    assert!(
        err.to_string().contains("unknown setting \"colour\""),
        "{err}"
    );
}

#[test]
fn generic_capability_follows_delivery_method_and_model_settings() {
    let pairs = [
        ("block-size", "256"),
        ("block-size@nb-2", "128"),
        ("resume@nb-2", "false"),
        ("prefer", "pull"),
        ("burst@nb-2", "10"),
    ];
    let capability = Plugin::load(
        &host(),
        "generic",
        embedded::GENERIC_CAPABILITY,
        settings(&pairs),
    )
    .unwrap();
    let plan = |d| capability.check_blocking(&d, &package()).unwrap();

    let both = device("d1", "nb-1");
    assert_eq!(
        plan(both),
        Ok(DeliveryPlan {
            method: TransferMethod::Pull,
            block_size: 256,
            resume: true,
            reset: ResetMethod::EmptyUri,
            burst: 0,
        })
    );
    let mut push_only = device("d2", "nb-2");
    push_only.delivery_method = Some(DeliveryMethod::Push);
    assert_eq!(
        plan(push_only),
        Ok(DeliveryPlan {
            method: TransferMethod::Push,
            block_size: 128,
            resume: false,
            reset: ResetMethod::NullByte,
            burst: 10,
        })
    );
}

#[test]
fn generic_capability_refuses_a_delta_to_a_model_without_delta_support() {
    let capability = Plugin::load(
        &host(),
        "generic",
        embedded::GENERIC_CAPABILITY,
        settings(&[("delta@old", "false")]),
    )
    .unwrap();
    let answer = capability
        .check_blocking(&device("d1", "old"), &package())
        .unwrap();
    assert_eq!(
        answer,
        Err("model old does not install delta packages".into())
    );
    let mut full = package();
    full.kind = PackageKind::Full;
    assert!(
        capability
            .check_blocking(&device("d1", "old"), &full)
            .unwrap()
            .is_ok()
    );
}

#[test]
fn bsdiff_differ_round_trips_and_refuses_the_wrong_base() {
    let differ = Plugin::load(&host(), "bsdiff", embedded::BSDIFF, Vec::new()).unwrap();
    assert_eq!(differ.algorithm().unwrap(), "bsdiff-lzma");
    let old: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut new = old.clone();
    new[1000..1010].copy_from_slice(b"0123456789");
    let patch = differ.make_patch_blocking(&old, &new).unwrap().unwrap();
    assert_eq!(
        differ.apply_patch_blocking(&old, &patch).unwrap(),
        Ok(new.clone())
    );
    let refused = differ
        .apply_patch_blocking(&new, &patch)
        .unwrap()
        .unwrap_err();
    assert!(refused.contains("wrong base"), "{refused}");
}

#[tokio::test]
async fn async_calls_answer_like_blocking_ones() {
    let policy = std::sync::Arc::new(threshold_policy(&[]));
    assert_eq!(
        policy.decide(device("d1", "m"), package()).await.unwrap(),
        Decision::Go
    );
}

#[tokio::test]
async fn a_batch_of_decisions_comes_back_in_order() {
    let policy = std::sync::Arc::new(threshold_policy(&[]));
    let mut weak = device("d2", "m");
    weak.battery_level = Some(5);
    let batch = vec![
        (device("d1", "m"), package()),
        (weak, package()),
        (device("d3", "m"), package()),
    ];
    let decisions = policy.decide_all(batch).await.unwrap();
    assert!(
        matches!(
            decisions.as_slice(),
            [Decision::Go, Decision::Wait(_), Decision::Go]
        ),
        "{decisions:?}"
    );
}
