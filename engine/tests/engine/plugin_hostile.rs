//! Hostile plugins, each a real component built from tests/hostile/: whatever one does, its call
//! fails with a clear error naming it and the reason, and calls of other plugins made at the
//! same time complete meanwhile.
//! The last test plays it end to end: a fleet upgrades over CoAP while every hostile plugin
//! fails again and again beside it.

use crate::common::{device, host_with_policy_time, hostile, package};
use fota_engine::plugin::{
    Decision, HostConfig, PluginError, PluginHost, PluginKind, PolicyPlugin, check_component,
    embedded,
};
use std::sync::Arc;
use std::time::Duration;

/// Runs the hostile policy `name` while 200 decisions of the reference policy are made for
/// other devices; checks those all complete (with Go) while the hostile call is still running
/// or already failed, and returns the hostile call's error.
async fn hostile_call_beside_healthy_ones(host: PluginHost, name: &str) -> PluginError {
    let bad = Arc::new(PolicyPlugin::load(&host, name, &hostile(name), Vec::new()).unwrap());
    let good = Arc::new(
        PolicyPlugin::load(&host, "reference", embedded::THRESHOLD_POLICY, Vec::new()).unwrap(),
    );
    let hostile_call = tokio::spawn({
        let bad = bad.clone();
        async move { bad.decide(device("victim", "m"), package()).await }
    });
    for i in 0..200 {
        let decision = good
            .decide(device(&format!("other-{i}"), "m"), package())
            .await;
        assert_eq!(
            decision.unwrap(),
            Decision::Go,
            "healthy call {i} failed beside {name}"
        );
    }
    let err = hostile_call
        .await
        .unwrap()
        .expect_err("hostile call succeeded");
    assert_eq!(err.plugin(), name, "error does not name the plugin: {err}");
    eprintln!("{name}: {err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_sleeping_on_a_wasi_clock_is_stopped_within_ten_times_its_limit() {
    let limit = Duration::from_millis(200);
    // Bounded: a sleep the engine does not cut would hold the call for an hour.
    let stopped = tokio::time::timeout(
        Duration::from_secs(60),
        hostile_call_beside_healthy_ones(host_with_policy_time(limit), "sleep"),
    )
    .await
    .expect("the sleeping call was not stopped");
    assert!(
        matches!(stopped, PluginError::Timeout { limit: l, .. } if l == limit),
        "{stopped}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_stopped_by_the_time_limit() {
    let limit = Duration::from_secs(3);
    let err = hostile_call_beside_healthy_ones(host_with_policy_time(limit), "spin").await;
    assert!(
        matches!(err, PluginError::Timeout { limit: l, .. } if l == limit),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "plugin spin: timed out after 3s and was stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_calls_are_not_held_up_by_an_endless_loop() {
    // The healthy calls must finish while the hostile one is still running: nothing waits on it.
    let host = host_with_policy_time(Duration::from_secs(4));
    let bad = Arc::new(PolicyPlugin::load(&host, "spin", &hostile("spin"), Vec::new()).unwrap());
    let good = Arc::new(
        PolicyPlugin::load(&host, "reference", embedded::THRESHOLD_POLICY, Vec::new()).unwrap(),
    );
    let hostile_call =
        tokio::spawn(async move { bad.decide(device("victim", "m"), package()).await });
    for i in 0..200 {
        assert_eq!(
            good.decide(device(&format!("other-{i}"), "m"), package())
                .await
                .unwrap(),
            Decision::Go
        );
    }
    assert!(
        !hostile_call.is_finished(),
        "the endless loop ended before the healthy calls did"
    );
    hostile_call.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_is_stopped_by_the_memory_limit() {
    let host = PluginHost::new(HostConfig::default()).unwrap();
    let limit = host.config().policy.memory_bytes;
    let err = hostile_call_beside_healthy_ones(host, "memory-bomb").await;
    assert!(
        matches!(err, PluginError::MemoryLimit { requested, limit: l, .. } if l == limit && requested > limit),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("plugin memory-bomb: memory limit hit"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_a_trap_carrying_the_panic_message() {
    let err =
        hostile_call_beside_healthy_ones(PluginHost::new(HostConfig::default()).unwrap(), "panic")
            .await;
    let PluginError::Trap { reason, .. } = &err else {
        panic!("not a trap: {err}")
    };
    assert!(
        reason.contains("hostile plugin gave up on victim"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_answer_is_refused() {
    let err = hostile_call_beside_healthy_ones(
        PluginHost::new(HostConfig::default()).unwrap(),
        "huge-answer",
    )
    .await;
    assert!(
        matches!(err, PluginError::OversizedResult { what: "skip reason", size, limit: 1024, .. } if size == 8 << 20),
        "{err}"
    );
}

#[test]
fn a_plugin_is_usable_again_after_a_failed_call() {
    let host = host_with_policy_time(Duration::from_millis(200));
    let bad = PolicyPlugin::load(&host, "spin", &hostile("spin"), Vec::new()).unwrap();
    for _ in 0..2 {
        assert!(matches!(
            bad.decide_blocking(&device("d", "m"), &package()),
            Err(PluginError::Timeout { .. })
        ));
    }
}

#[test]
fn a_component_of_another_world_is_refused_with_what_it_is() {
    let host = PluginHost::new(HostConfig::default()).unwrap();
    let greeter = hostile("wrong-world");
    let Err(err) = PolicyPlugin::load(&host, "greeter", &greeter, Vec::new()) else {
        panic!("loaded")
    };
    assert!(
        matches!(&err, PluginError::WrongWorld { expected, .. } if expected == "policy"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("it implements none of the fota:plugin worlds"),
        "{err}"
    );

    let err = check_component(&greeter).unwrap_err();
    assert!(
        err.to_string().contains("greet"),
        "the error does not show its exports: {err}"
    );
}

#[test]
fn a_plugin_of_another_kind_is_refused_naming_the_kind_it_is() {
    let host = PluginHost::new(HostConfig::default()).unwrap();
    let Err(err) = PolicyPlugin::load(
        &host,
        "capability-as-policy",
        embedded::GENERIC_CAPABILITY,
        Vec::new(),
    ) else {
        panic!("loaded")
    };
    assert!(
        err.to_string()
            .contains("does not implement world `policy` (it implements capability)"),
        "{err}"
    );
}

#[test]
fn bytes_that_are_no_component_are_refused() {
    let host = PluginHost::new(HostConfig::default()).unwrap();
    let Err(err) = PolicyPlugin::load(&host, "junk", b"\0asm not really", Vec::new()) else {
        panic!("loaded")
    };
    assert!(matches!(err, PluginError::Invalid { .. }), "{err}");
    assert_eq!(
        check_component(embedded::BSDIFF).unwrap().worlds,
        vec![PluginKind::Differ]
    );
}

/// Calls the hostile policy `name` again and again until `done`, each call on its own: every
/// one must fail as `expected` says. Returns how many calls were made.
fn keep_failing(
    host: &PluginHost,
    name: &'static str,
    done: Arc<std::sync::atomic::AtomicBool>,
    expected: fn(&PluginError) -> bool,
) -> tokio::task::JoinHandle<usize> {
    let plugin = Arc::new(PolicyPlugin::load(host, name, &hostile(name), Vec::new()).unwrap());
    tokio::spawn(async move {
        let mut calls = 0;
        while calls == 0 || !done.load(std::sync::atomic::Ordering::SeqCst) {
            let err = plugin
                .decide(device("victim", "m"), package())
                .await
                .expect_err("a hostile call answered");
            assert!(expected(&err), "{name}: unexpected error {err}");
            calls += 1;
        }
        calls
    })
}

/// End to end: devices upgrade over CoAP while, in the same process, one plugin loops forever,
/// one bombs its memory, one traps and one answers too much, each called again as soon as its
/// call failed, and a component of the wrong world is offered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_upgrade_over_coap_while_hostile_plugins_fail_beside_them() {
    use fota_device::fleet::{Fleet, FleetSpec, ModelSpec, wait_registered};
    use fota_engine::server::{Server, ServerConfig};
    use fota_engine::transfer::{Method, TransferOutcome};
    use std::sync::atomic::{AtomicBool, Ordering};

    let server = Server::start(ServerConfig::loopback()).await.unwrap();
    let registrations = server.registry.subscribe();
    let model = ModelSpec {
        manufacturer: "Acme".into(),
        model: "NB-1".into(),
        image: vec![0; 1000],
        version: "1.0".into(),
    };
    let fleet = Fleet::start(&FleetSpec::uniform(20, server.coap_addr(), model))
        .await
        .unwrap();
    let registered = wait_registered(registrations, fleet.len(), Duration::from_secs(60)).await;
    assert!(registered, "the fleet registers");

    let host = host_with_policy_time(Duration::from_secs(1));
    let done = Arc::new(AtomicBool::new(false));
    let hostile_calls = [
        keep_failing(&host, "spin", done.clone(), |e| {
            matches!(e, PluginError::Timeout { .. })
        }),
        keep_failing(&host, "memory-bomb", done.clone(), |e| {
            matches!(e, PluginError::MemoryLimit { .. })
        }),
        keep_failing(&host, "panic", done.clone(), |e| {
            matches!(e, PluginError::Trap { .. })
        }),
        keep_failing(&host, "huge-answer", done.clone(), |e| {
            matches!(e, PluginError::OversizedResult { .. })
        }),
    ];
    let image: Vec<u8> = (0..30_000u32).map(|i| (i % 253) as u8).collect();
    let pkg = bytes::Bytes::from(fota_engine::package::full(&image, "2.0").unwrap());
    let package = server.shelf.put(pkg);
    let jobs = fleet.jobs(&package, "2.0", 256, Method::Push);
    let upgrade = tokio::spawn(async move {
        tokio::time::timeout(
            Duration::from_secs(120),
            server.delivery.run_all(jobs, |_| {}),
        )
        .await
    });
    let wrong_world = PolicyPlugin::load(&host, "greeter", &hostile("wrong-world"), Vec::new());
    assert!(matches!(wrong_world, Err(PluginError::WrongWorld { .. })));
    let reports = upgrade.await.unwrap().expect("every delivery ends in time");
    done.store(true, Ordering::SeqCst);
    for report in reports {
        assert_eq!(
            report.outcome,
            TransferOutcome::Upgraded {
                version: "2.0".into()
            }
        );
    }
    for calls in hostile_calls {
        let calls = tokio::time::timeout(Duration::from_secs(30), calls)
            .await
            .expect("every hostile call is stopped")
            .unwrap();
        assert!(calls >= 1);
    }
}
