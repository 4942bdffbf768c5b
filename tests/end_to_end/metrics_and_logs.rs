//! What a platform host's monitoring sees of `fota serve`: given an engine started with a
//! scrape address (`metrics_addr`) and `--log-format json`, a scraper without a token reads
//! `/metrics` there, while the API's `/metrics` still asks for a token; every line the engine
//! logs is a JSON object; and it stops cleanly, both addresses with it.

use serde_json::Value;

use crate::support::served::{BOUND, VIEWER, scratch, serve_with_args};

/// Status and body of GET `url`, with `token` as bearer when given.
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = ureq::get(url);
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let response = match request.call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("{url} did not answer: {error}"),
    };
    (
        response.status(),
        response.into_string().unwrap_or_default(),
    )
}

/// A log line as a JSON object; panics on anything else.
fn json_line(line: &str) -> Value {
    let value: Value = serde_json::from_str(line)
        .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
    assert!(
        value["level"].is_string() && value["timestamp"].is_string(),
        "{line}"
    );
    value
}

#[test]
fn a_scraper_reads_metrics_without_a_token_on_its_own_address_and_logs_are_json_lines() {
    let dir = scratch("metrics-and-logs");
    let settings = "metrics_addr = \"127.0.0.1:0\"";
    let mut engine = serve_with_args(
        &dir,
        &[("RUST_LOG", "info")],
        settings,
        &["--log-format", "json"],
    );
    let announced = engine
        .process
        .lines_until("metrics without a token on http://", BOUND);
    let line = json_line(announced.last().expect("the announcement"));
    let message = line["message"].as_str().expect("a message field");
    let scrape = message
        .split_once("on ")
        .map(|(_, url)| url.to_string())
        .expect("the scrape URL");
    for line in &announced {
        json_line(line);
    }

    let (status, text) = get(&scrape, None);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("# TYPE fota_build_info gauge"), "{text}");
    assert!(
        text.contains("# TYPE fota_http_request_seconds histogram"),
        "{text}"
    );
    let api = format!("{}/metrics", engine.http);
    assert_eq!(get(&api, None).0, 401, "the API's /metrics needs a token");
    assert_eq!(get(&api, Some(VIEWER)).0, 200);
    let other = scrape.replace("/metrics", "/v1/groups");
    assert_eq!(
        get(&other, None).0,
        404,
        "the scrape address serves nothing else"
    );

    // The scrape of the API's /metrics is in the next one, under its route.
    let (_, text) = get(&scrape, None);
    assert!(
        text.contains(
            r#"fota_http_request_seconds_count{route="/metrics",method="GET",status="2xx"} 1"#
        ),
        "{text}"
    );

    engine.process.ask_to_stop();
    let stopping = engine.process.lines_until(r#""message":"stopped""#, BOUND);
    for line in &stopping {
        json_line(line);
    }
    assert!(engine.process.child.wait().expect("fota exits").success());
}
