//! The vendor template in examples/vendor-plugin builds as its README says, passes
//! `fota plugin check`, and answers through the host with the settings it is given.

use crate::common::{device, package, vendor_template};
use fota_engine::plugin::{
    Decision, HostConfig, PluginHost, PluginKind, PolicyPlugin, Skip, SkipReason, check_component,
};

#[test]
fn vendor_template_is_a_working_policy_plugin() {
    let wasm = vendor_template();
    assert_eq!(
        check_component(&wasm).unwrap().worlds,
        vec![PluginKind::Policy]
    );

    let host = PluginHost::new(HostConfig::default()).unwrap();
    let settings = vec![
        ("min-battery".to_string(), "90".to_string()),
        ("max-attempts".to_string(), "3".to_string()),
    ];
    let policy = PolicyPlugin::load(&host, "acme-policy", &wasm, settings).unwrap();
    let Decision::Wait(wait) = policy
        .decide_blocking(&device("d1", "m"), &package())
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(wait.reason, "battery 80 % < 90 %");
    let mut tired = device("d2", "m");
    tired.attempt = 3;
    assert_eq!(
        policy.decide_blocking(&tired, &package()).unwrap(),
        Decision::Skip(Skip {
            why: SkipReason::NotSupported,
            reason: "3 failed tries".into()
        })
    );
}
