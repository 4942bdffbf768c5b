//! Three `fota serve` nodes on one throwaway PostgreSQL, behind nginx's stream module (the
//! shipped `examples/nginx/fota-stream.conf`). A fleet of reference devices in queue mode
//! registers through nginx; the first node holds the database and coordinates (scheduler,
//! API), the others are members. nginx hashes each session's source address and port (the
//! fleet shares one host, so its ports spread it over the nodes; a wake-up on a new port, as
//! after a NAT rebinding, may land on another node, whose Update then takes the device over).
//! A task upgrades the fleet, and one node is killed with SIGKILL mid-campaign: a member
//! (its devices come back through the other nodes and resume from /5/0/26500), or the
//! coordinator (a member takes the database and starts again in its place, resuming the
//! task). Every device ends on the new version, no write starting more than one block before
//! what the device had stored, and the task's summary counts what its devices say.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fota_device::client::SleepCycle;
use fota_device::fleet::{Fleet, FleetSpec, ModelSpec};
use fota_engine::clock::Clock;
use fota_engine::cluster::{Membership, Owner};
use fota_engine::store::throwaway_postgres::ThrowawayPostgres;
use fota_engine::store::{PostgresStore, Store};
use fota_impair::Impairment;
use serde_json::{Value, json};

use crate::support::image;
use crate::support::nginx::{self, Nginx};
use crate::support::served::{BOUND, Served, scratch, serve_with, spawn_serve};

const DEVICES: usize = 24;
const SECRET: &str = "a cluster secret for the test";
/// The largest block the engine pushes.
const BLOCK: usize = 1024;

/// The settings of node `name` on the database at `url`, after the top-level keys `extra`.
fn node(url: &str, name: &str, extra: &str) -> String {
    format!(
        "store = {url:?}\n{extra}[cluster]\nnode = \"{name}\"\naddr = \"127.0.0.1:0\"\n\
         secret = \"{SECRET}\"\n"
    )
}

/// Starts member `name` of `cluster` with the top-level keys `extra`; its HTTP address
/// passes the API on to the coordinator's.
fn member(cluster: &str, url: &str, name: &str, extra: &str) -> Served {
    let dir = scratch(&format!("{cluster}-{name}"));
    let (mut process, coap) = spawn_serve(&dir, &[], &node(url, name, extra), &[]);
    let line = process.logged("is a member of the cluster", BOUND);
    let http = line[line.find("http://").unwrap()..line.find(" passed on").unwrap()].to_string();
    Served {
        process,
        http,
        coap,
        coaps: None,
    }
}

fn model() -> ModelSpec {
    ModelSpec {
        manufacturer: "Acme".into(),
        model: "NB-IoT-A".into(),
        image: image(20_000, 3),
        version: "0.8.0".into(),
    }
}

/// Three nodes on a throwaway database behind nginx, and a fleet registered through it.
struct Cluster {
    url: String,
    coordinator: Served,
    /// The members: n2, n3.
    members: Vec<Served>,
    balancer: Nginx,
    fleet: Fleet,
    /// Runs the fleet; dropped after it.
    _runtime: tokio::runtime::Runtime,
    _postgres: ThrowawayPostgres,
}

impl Cluster {
    /// `None` where nginx or PostgreSQL is missing (and CI does not require them).
    fn start(name: &str) -> Option<Cluster> {
        Cluster::start_with(name, "")
    }

    /// [`Cluster::start`], every node with the top-level keys `extra`.
    fn start_with(name: &str, extra: &str) -> Option<Cluster> {
        if !nginx::present() {
            return None;
        }
        let postgres = ThrowawayPostgres::for_test()?;
        let url = postgres.create_database(name).unwrap();
        let settings = node(&url, "n1", extra);
        let coordinator = serve_with(&scratch(&format!("{name}-n1")), &[], &settings);
        // Registrations are journaled while a subscription asks for them.
        let hook = json!({ "url": "http://127.0.0.1:9/hook", "secret": SECRET, "kinds": ["registration"] });
        coordinator.ok("POST", "/v1/webhooks", Some(&hook));
        let members = vec![
            member(name, &url, "n2", extra),
            member(name, &url, "n3", extra),
        ];
        let nodes: Vec<SocketAddr> = std::iter::once(coordinator.coap)
            .chain(members.iter().map(|member| member.coap))
            .collect();
        let balancer = Nginx::start_hashing(
            &scratch(&format!("{name}-nginx")),
            &nodes,
            Duration::from_millis(1_500),
            "$remote_addr$remote_port",
        );
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut spec = FleetSpec::uniform(DEVICES, balancer.coap, model());
        spec.sleep = Some(SleepCycle {
            awake: Duration::from_secs(3),
            asleep: Duration::from_secs(2),
        });
        spec.lifetime = Duration::from_secs(30);
        // Round trips of 40 ms or so, so a transfer spans the kill.
        spec.link = Some(
            Impairment::none().with_delay(Duration::from_millis(20), Duration::from_millis(5)),
        );
        let fleet = runtime.block_on(Fleet::start(&spec)).unwrap();
        let surveyed = "/v1/devices?vendor=Acme&model=NB-IoT-A&limit=1";
        coordinator.wait_for(surveyed, "the fleet surveyed through every node", |page| {
            page["total"] == DEVICES
        });
        Some(Cluster {
            url,
            coordinator,
            members,
            balancer,
            fleet,
            _runtime: runtime,
            _postgres: postgres,
        })
    }

    /// Starts a task upgrading every device, and waits for a third of them to download; the
    /// task's path, and the page of its devices then.
    fn upgrade_until_a_third_downloads(&self) -> (String, Value) {
        let task = self
            .coordinator
            .upgrade_all("across nodes", &image(60_000, 9));
        let devices = format!("{task}/devices?limit=100");
        let page =
            self.coordinator
                .wait_for(&devices, "a third of the fleet downloading", |page| {
                    downloading(page) >= DEVICES / 3
                });
        (task, page)
    }

    /// `task` completes on `coordinator`, every device upgraded, and its summary adds up.
    fn check_finished(&self, coordinator: &Served, task: &str) {
        let done = coordinator.wait_for(task, "the task completed", |t| t["status"] == "completed");
        assert_eq!(done["success_rate"], 1.0, "{done}");
        let upgraded = "/v1/devices?version=0.9.0&limit=1";
        coordinator.wait_for(upgraded, "every device on the new version", |page| {
            page["total"] == DEVICES
        });
        self.check_devices();
        let devices = coordinator.get(&format!("{task}/devices?limit=100"));
        let summary = coordinator.get(&format!("{task}/summary"));
        statistics_add_up(&devices, &summary);
    }

    /// Every device runs the new version, and no write started more than a block before
    /// what the device had stored: two nodes writing one device at once would interleave
    /// their writes, each starting where its own transfer stood.
    fn check_devices(&self) {
        for device in &self.fleet.devices {
            let (version, rewind, erased) = device
                .with_system(|s| (s.version.clone(), s.largest_rewind, s.whole_packages_erased));
            assert_eq!(version, "0.9.0");
            assert!(rewind <= BLOCK, "a resume sent {rewind} bytes again");
            assert_eq!(erased, 0, "no package sent again from its start");
        }
    }
}

#[test]
fn a_fleet_upgrades_through_three_nodes_while_a_member_is_killed() {
    let Some(mut cluster) = Cluster::start("cluster-member") else {
        return;
    };
    let (task, page) = cluster.upgrade_until_a_third_downloads();
    let owners = Owners::of(&cluster.url);
    let cut: Vec<String> = unfinished(&page)
        .filter(|endpoint| owners.node_of(endpoint).as_deref() == Some("n2"))
        .collect();
    let doomed = &mut cluster.members[0];
    let doomed_coap = doomed.coap;
    doomed.process.child.kill().unwrap();
    let _ = doomed.process.child.wait();
    assert!(
        !cut.is_empty(),
        "the killed node was upgrading none of the devices"
    );

    cluster.check_finished(&cluster.coordinator, &task);
    // The devices the killed node was upgrading went on through the others.
    for endpoint in &cut {
        let owner = owners.node_of(endpoint);
        assert!(
            matches!(owner.as_deref(), Some("n1" | "n3")),
            "{endpoint}: {owner:?}"
        );
    }

    // The killed node carried devices: nginx logged their sessions to it.
    let to_doomed = (cluster.balancer.ended_sessions().into_iter())
        .filter(|(_, node, _, sent)| node == &doomed_coap.to_string() && *sent > 0)
        .count();
    assert!(to_doomed > 0, "no session went to the killed node");

    // The API on the surviving member is the coordinator's, events included: they carry the
    // registrations the members received.
    let survivor = &cluster.members[1];
    assert_eq!(survivor.get(&task)["status"], "completed");
    let at_survivor: BTreeSet<String> = (cluster.fleet.devices.iter())
        .map(|device| device.config().endpoint.clone())
        .filter(|endpoint| owners.node_of(endpoint).as_deref() == Some("n3"))
        .collect();
    assert!(
        !at_survivor.is_empty(),
        "no device ended at the surviving member"
    );
    let mut events = survivor.events(Some(0));
    let mut registered = BTreeSet::new();
    while !at_survivor.is_subset(&registered) {
        let event = events.next();
        if event.name == "registration" && event.data["event"] == "registered" {
            registered.insert(event.data["endpoint"].as_str().unwrap().to_string());
        }
    }
}

#[test]
fn a_member_takes_the_place_of_the_coordinator_killed_mid_campaign() {
    let Some(mut cluster) = Cluster::start("cluster-coordinator") else {
        return;
    };
    let (task, _) = cluster.upgrade_until_a_third_downloads();
    cluster.coordinator.process.child.kill().unwrap();
    let _ = cluster.coordinator.process.child.wait();

    // One member takes the database and starts again as the coordinator; it serves the API.
    let deadline = std::time::Instant::now() + BOUND;
    let mut coordinator = loop {
        assert!(std::time::Instant::now() < deadline, "no member took over");
        let heir = (cluster.members.iter_mut().enumerate()).find_map(|(i, member)| {
            (member.process)
                .printed("takes over", Duration::from_millis(100))
                .map(|_| i)
        });
        if let Some(heir) = heir {
            break cluster.members.swap_remove(heir);
        }
    };
    // It serves the API on the address it passed the API on from.
    let api = coordinator.process.logged("HTTP API on http://", BOUND);
    assert!(api.contains(&coordinator.http), "{api}");
    cluster.check_finished(&coordinator, &task);
}

/// An integrator's operations on devices registered to members, asked of any node's HTTP
/// address (a member passes the API on to the coordinator, which sends each operation to the
/// device's node): a device's objects, a read, a write read back, an observation's value, and
/// queued operations that run at the device's next wake-up, wherever it wakes up. The devices
/// sleep and wake up on new ports, so they move between nodes while this runs; the engine
/// takes them for reachable 2 s after each Update, within their 3 s awake.
#[test]
fn operations_on_devices_of_members_run_on_the_node_they_are_registered_to() {
    let Some(cluster) = Cluster::start_with("cluster-operations", "queue_window_secs = 2\n") else {
        return;
    };
    let owners = Owners::of(&cluster.url);
    let endpoints = cluster
        .fleet
        .devices
        .iter()
        .map(|d| d.config().endpoint.clone());
    let on_members: Vec<String> = endpoints
        .filter(|endpoint| owners.node_of(endpoint).is_some_and(|node| node != "n1"))
        .collect();
    assert!(on_members.len() >= 2, "devices registered to members");
    let (first, second) = (&on_members[0], &on_members[1]);
    let (member, coordinator) = (&cluster.members[0], &cluster.coordinator);

    let objects = member.ok("GET", &format!("/v1/devices/{first}/objects"), None);
    assert_eq!(objects["binding"], "UQ", "{objects}");
    let ids: Vec<&Value> = (objects["objects"].as_array().unwrap().iter())
        .map(|object| &object["id"])
        .collect();
    assert!(ids.contains(&&json!(5)), "{objects}");

    let data =
        |endpoint: &str, path: &str| format!("/v1/devices/{endpoint}/data?path={path}&timeout=60");
    // Asked while the device sleeps: answered at its next wake-up, wherever it wakes.
    until_asleep(member, first);
    let manufacturer = member.ok("GET", &data(first, "/3/0/0"), None);
    assert_eq!(manufacturer["value"], "Acme", "{manufacturer}");
    let berlin = json!({ "value": "Europe/Berlin" });
    let (status, _) = coordinator.call("PUT", &data(first, "/3/0/15"), Some(&berlin));
    assert_eq!(status, 204);
    let timezone = cluster.members[1].ok("GET", &data(first, "/3/0/15"), None);
    assert_eq!(timezone["value"], "Europe/Berlin");

    let observe = format!("/v1/devices/{first}/observe?path=/3/0/15&timeout=60");
    let mut observed = member.stream(&observe, None);
    let now = observed.next();
    assert_eq!(now.name, "notification");
    assert_eq!(now.data["value"], "Europe/Berlin");
    drop(observed);

    // Queued while the device sleeps: run at its next wake-up, on whichever node it wakes at.
    until_asleep(coordinator, second);
    let operations = format!("/v1/devices/{second}/operations");
    let lima =
        json!({ "kind": "write", "path": "/3/0/15", "content": { "value": "America/Lima" } });
    let written = member.ok("POST", &operations, Some(&lima));
    let read = json!({ "kind": "read", "path": "/3/0/15" });
    let read = coordinator.ok("POST", &operations, Some(&read));
    for queued in [&written, &read] {
        let one = format!("{operations}/{}", queued["id"].as_str().unwrap());
        let done = coordinator.wait_for(&one, "the queued operation ran", |op| {
            op["status"] != "pending"
        });
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    let read = coordinator.get(&format!("{operations}/{}", read["id"].as_str().unwrap()));
    assert_eq!(read["result"]["value"], "America/Lima", "{read}");
}

/// Waits until the API (asked of `node`) says `endpoint` sleeps.
fn until_asleep(node: &Served, endpoint: &str) {
    let objects = format!("/v1/devices/{endpoint}/objects");
    node.wait_for(&objects, "the device asleep", |objects| {
        objects["awake"] == false
    });
}

/// Which node owns each device, read from the cluster's records in the database.
struct Owners(Membership);

impl Owners {
    fn of(url: &str) -> Owners {
        let store: Arc<dyn Store> = Arc::new(PostgresStore::open(url, 1).unwrap());
        Owners(Membership::new(
            store,
            Clock::system(),
            "test-observer",
            ("", ""),
        ))
    }

    /// The node owning `endpoint`, while that node is alive.
    fn node_of(&self, endpoint: &str) -> Option<String> {
        match self.0.owner(endpoint).unwrap() {
            Owner::Node { node, .. } => Some(node),
            Owner::Here | Owner::Lost => None,
        }
    }
}

/// The devices of a task's page without a result yet.
fn unfinished(page: &Value) -> impl Iterator<Item = String> + '_ {
    (page["items"].as_array().unwrap().iter())
        .filter(|d| d["result"].is_null())
        .map(|d| d["endpoint"].as_str().unwrap().to_string())
}

/// Devices of a task's page that began their download.
fn downloading(page: &Value) -> usize {
    let items = page["items"].as_array().cloned().unwrap_or_default();
    let began = |d: &&Value| d["download"] == "downloading" || d["download"] == "downloaded";
    items.iter().filter(began).count()
}

/// The task's summary counts what its devices say.
fn statistics_add_up(page: &Value, summary: &Value) {
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), DEVICES, "{page}");
    let successes = items.iter().filter(|d| d["result"] == "successful").count();
    assert_eq!(successes, DEVICES, "{page}");
    assert_eq!(summary["devices"], DEVICES, "{summary}");
    assert_eq!(summary["results"]["successful"], DEVICES, "{summary}");
    assert_eq!(summary["phases"]["finished"], DEVICES, "{summary}");
    let in_cells: u64 = (summary["cells"].as_array().unwrap().iter())
        .map(|cell| cell["upgraded"].as_u64().unwrap())
        .sum();
    assert_eq!(in_cells, DEVICES as u64, "{summary}");
    // Each device's transfer is counted once it held the package, whichever node ran it.
    for device in items {
        assert!(device["bytes_first"].as_u64().unwrap() > 0, "{device}");
    }
}

/// A lone coordinator on a database of its own, named `name`; `None` without PostgreSQL
/// (and CI does not require it).
fn lone_coordinator(name: &str) -> Option<(ThrowawayPostgres, String, Served)> {
    let postgres = ThrowawayPostgres::for_test()?;
    let url = postgres.create_database(name).unwrap();
    let coordinator = serve_with(&scratch(&format!("{name}-n1")), &[], &node(&url, "n1", ""));
    Some((postgres, url, coordinator))
}

/// `coordinator` stops, saying `why`, and not successfully.
fn stops(mut coordinator: Served, why: &str) {
    coordinator.process.logged(why, BOUND);
    let status = coordinator.process.child.wait().unwrap();
    assert!(!status.success(), "{status}");
}

#[test]
fn a_coordinator_that_loses_its_hold_on_the_database_stops() {
    let Some((_postgres, url, coordinator)) = lone_coordinator("cluster-hold") else {
        return;
    };
    // The database ends the session holding the lock (a network cut, a restart would too).
    let ended = ThrowawayPostgres::end_lock_holders(&url).unwrap();
    assert_eq!(ended, 1, "one session holds the lock");
    // Another node may coordinate now: this one stops rather than schedule beside it.
    stops(coordinator, "lost its hold on the database");
}

#[test]
fn a_coordinator_that_sees_a_newer_coordinator_stops() {
    let Some((_postgres, url, coordinator)) = lone_coordinator("cluster-deposed") else {
        return;
    };
    // A successor crowned (as a node that took the database would be): the cluster's epoch
    // moves on, and n1 reads it with its next heartbeat.
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&url, 1).unwrap());
    let successor = Membership::new(store, Clock::system(), "n2", ("127.0.0.1:9", "127.0.0.1:9"));
    assert_eq!(
        successor.crown().unwrap(),
        2,
        "n1 was the first coordinator"
    );
    stops(coordinator, "another node coordinates the cluster now");
}
