//! The HTTP API against its own OpenAPI document, fuzzed by schemathesis (PyPI): given a real
//! `fota serve` with an operator token, a store of its own and two `fota sim` devices,
//! schemathesis reads the document the engine serves (`/v1/openapi.json`), makes requests from
//! every operation's schemas, valid and not, and checks every answer: never a 5xx; the status,
//! media type and body each as the document says; and a request the document forbids refused.
//! Every operation is fuzzed, the destructive ones too (the engine is a throwaway), but the two
//! event streams (`/v1/events`, `/v1/devices/{endpoint}/observe`): an answer that does not end
//! is nothing schemathesis can check, only wait on (the engine's contract tests check them).
//! Device operations target the first simulated device, so they reach a device rather than
//! answering 404, and never wait for one (`timeout=0`): a device the fuzzing deleted, or
//! whose credentials it set, does not come back. The seed is fixed, so a run makes the same
//! requests as far as it gets; FOTA_SCHEMATHESIS_SEED picks another. The run is bounded in
//! time, and its stateful phase gets what fuzzing left of it, so a faster or slower machine
//! gets further or less far along the same sequence (CI once reached a request its runs here
//! had not: a body the document forbade, taken; the engine now checks every JSON body against
//! the document, so that class of request is refused whichever reaches it).
//!
//! Needs `schemathesis` on the PATH (`python3 -m pip install schemathesis`, as `.ci/run`
//! does). Without it the test is skipped, unless FOTA_REQUIRE_SCHEMATHESIS is set (CI), where
//! it fails.

use std::fs::File;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::process::FotaProcess;
use crate::support::served::{OPERATOR, scratch, serve};

/// The program.
const SCHEMATHESIS: &str = "schemathesis";
/// The checks: a 5xx, a status the document does not list for the operation, a media type or
/// a body that is not the one it documents, and a request the document forbids taken, each
/// fail the run. (Not `positive_data_acceptance`: a request the schemas allow may still break
/// a rule no schema says, such as a group id that does not exist, and is answered 4xx.)
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,negative_data_rejection";
/// The operations not fuzzed: the event streams.
const STREAMS: &str = "^/v1/events$|/observe$";
/// Devices of the fleet.
const DEVICES: u64 = 2;
/// What schemathesis reads from its working directory: the device operations' parameters,
/// and 412 among the refusals of a request the document forbids: a stale `If-Match` is
/// answered before the body's rules are (RFC 9110 section 13.2.1 evaluates preconditions
/// before the content is processed).
const SETTINGS: &str = "[parameters]\n\
                        \"path.endpoint\" = \"urn:imei:860000000000000\"\n\
                        \"query.timeout\" = 0\n\
                        [checks.negative_data_rejection]\n\
                        expected-statuses = [\"400\", \"401\", \"403\", \"404\", \"405\", \"406\", \
                        \"409\", \"412\", \"415\", \"422\", \"428\", \"429\", \"5XX\"]\n";
/// Examples per operation and phase: the whole run stays within a few minutes on two cores.
const EXAMPLES: &str = "25";
/// The seed when FOTA_SCHEMATHESIS_SEED does not give one.
const SEED: &str = "21";
/// Longest schemathesis may spend on its phases; it is killed a minute after that.
const MAX_TIME_SECS: u64 = 150;

/// Whether schemathesis is there; without it: panics if FOTA_REQUIRE_SCHEMATHESIS is set
/// (CI), otherwise says the test is skipped.
fn schemathesis_present() -> bool {
    let present = Command::new(SCHEMATHESIS)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !present {
        assert!(
            std::env::var_os("FOTA_REQUIRE_SCHEMATHESIS").is_none(),
            "schemathesis is not installed (python3 -m pip install schemathesis)"
        );
        eprintln!("skipped: schemathesis is not installed (python3 -m pip install schemathesis)");
    }
    present
}

#[test]
fn every_operation_answers_as_the_served_document_says_and_never_with_a_server_error() {
    if !schemathesis_present() {
        return;
    }
    let dir = scratch("api-fuzz");
    let engine = serve(&dir, &[]);
    let coap = engine.coap.to_string();
    let devices = DEVICES.to_string();
    let _fleet = FotaProcess::spawn(["sim", "--server", &coap, "--devices", &devices], &[]);
    engine.wait_for(
        "/v1/devices?online=true&limit=1",
        "the fleet registered",
        |page| page["total"] == DEVICES,
    );
    std::fs::write(dir.join("schemathesis.toml"), SETTINGS).expect("the settings");
    let seed = std::env::var("FOTA_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.into());
    let log = dir.join("schemathesis.log");
    let out = File::create(&log).expect("the log file");
    let run = Command::new(SCHEMATHESIS)
        .args(["run", &format!("{}/v1/openapi.json", engine.http)])
        .args(["--header", &format!("Authorization: Bearer {OPERATOR}")])
        .args(["--checks", CHECKS])
        .args(["--exclude-path-regex", STREAMS])
        .args(["--max-examples", EXAMPLES, "--seed", &seed])
        .args(["--max-time", &MAX_TIME_SECS.to_string()])
        // One worker: CPython 3.11's AST validator keeps its recursion depth where every
        // thread shares it, so hypothesis describing strategies (ast.parse) in two workers at
        // once fails now and then with "AST constructor recursion depth mismatch", an error
        // of the fuzzer's, not an answer of the engine's (seen in CI on 3.11.7).
        .args(["--workers", "1", "--request-timeout", "30", "--no-color"])
        .current_dir(&dir)
        .stdout(out.try_clone().expect("the log file"))
        .stderr(out)
        .spawn()
        .expect("schemathesis starts");
    let bound = Duration::from_secs(MAX_TIME_SECS + 60);
    let status = wait(run, bound);
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "schemathesis found answers the document does not allow (seed {seed}):\n{said}\n\
         the engine's last lines:\n{}",
        engine.process.recent_lines(200).join("\n")
    );
    eprintln!("{said}");
}

/// Waits up to `bound` for `child` to exit; kills it and panics after that.
fn wait(mut child: Child, bound: Duration) -> ExitStatus {
    let id = child.id();
    let (exited, exit) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(child.wait());
    });
    match exit.recv_timeout(bound) {
        Ok(status) => status.expect("schemathesis runs"),
        Err(_) => {
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!("schemathesis did not finish within {bound:?}");
        }
    }
}
