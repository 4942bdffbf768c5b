//! Behind an existing UDP load balancer: nginx's stream module, run from the shipped
//! `examples/nginx/fota-stream.conf`, before a real `fota serve`. A `fota sim` fleet in queue
//! mode (awake 2 s, then asleep 4 s in PSM, 200 ms round trips, so a push spans several
//! wake-ups) registers through nginx and takes a push upgrade through it. nginx's sessions
//! end 1.5 s after their last datagram, so every wake-up comes
//! through a new session on a new port of nginx's, as after a carrier NAT rebinding during
//! PSM: the engine learns the new port from the device's Update, and the requests it starts
//! (the survey, the resume, the blocks, the install) reach the device back through nginx.

use std::time::{Duration, Instant};

use crate::support::image;
use crate::support::nginx::{self, Nginx};
use crate::support::process::FotaProcess;
use crate::support::served::{Served, scratch, serve};

const DEVICES: usize = 20;

#[test]
fn a_sleeping_fleet_behind_nginx_upgrades_through_a_new_session_at_each_wake_up() {
    if !nginx::present() {
        return;
    }
    let dir = scratch("balancer");
    let served = serve(&dir, &[]);
    let balancer = Nginx::start(&dir, &[served.coap], Duration::from_millis(1_500));
    let server = balancer.coap.to_string();
    let devices = DEVICES.to_string();
    let args = [
        "sim",
        "--server",
        &server,
        "--devices",
        &devices,
        "--awake-secs",
        "2",
        "--asleep-secs",
        "4",
        "--rtt-ms",
        "200",
    ];
    let fleet = FotaProcess::spawn(args, &[]);
    let surveyed = "/v1/devices?vendor=Acme&model=NB-IoT-A&limit=1";
    served.wait_for(surveyed, "the fleet surveyed through nginx", |page| {
        page["total"] == DEVICES
    });

    let task = served.upgrade_all("through nginx", &image(24_000, 9));
    let done = served.wait_for(&task, "the task completed", |t| t["status"] == "completed");
    assert_eq!(done["success_rate"], 1.0, "{done}");
    // The catalog learns each version from the survey of the device's new registration.
    let upgraded = "/v1/devices?version=0.9.0&limit=1";
    served.wait_for(upgraded, "every device on the new version", |page| {
        page["total"] == DEVICES
    });

    // The devices came back through new sessions: nginx logs each as it ends, every one to
    // the engine. A device has one session for its registration, one at least for each
    // wake-up its push spans, and one after its reboot (a new socket, as a rebooted module's):
    // at least three each, and the engine followed every device to each (it upgraded them).
    drop(fleet);
    let sessions = wait_for_sessions(&balancer, &served, 3 * DEVICES);
    assert!(sessions.len() >= 3 * DEVICES, "{sessions:?}");
}

/// Waits (bounded) for nginx to have logged at least `least` ended sessions, each to the
/// engine; the sessions per source port.
fn wait_for_sessions(balancer: &Nginx, served: &Served, least: usize) -> Vec<(String, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sessions = balancer.ended_sessions();
        for (_, node, _, _) in &sessions {
            assert_eq!(node, &served.coap.to_string(), "one node behind nginx");
        }
        if sessions.len() >= least {
            return (sessions.into_iter())
                .map(|(device, _, received, _)| (device, received))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} sessions ended, fewer than {least}",
            sessions.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
