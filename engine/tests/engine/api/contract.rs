//! The OpenAPI document as a contract every answer of the API tests is held to: the answer's
//! status is one its operation lists, it carries the headers listed as required for that
//! status (`Location`, `ETag`), its media type is the one listed for that status, and its
//! JSON body valid against the listed schema (see [`crate::api::schema`]). Paths and methods no
//! operation has must be answered with a problem. Events of `/v1/events` and of observations
//! are held to the schemas of what they carry (a task, a device's progress, an alarm, a
//! registration, a device's data). The console's files (`/`, `/console/...`) are not the
//! API's: the document does not hold them, and their answers are not checked here.

use hyper::header::CONTENT_TYPE;
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::api::schema::Validator;

/// The document an API serves.
pub struct Contract {
    /// `/v1/openapi.json`, as served.
    pub document: Value,
}

/// What the document says of a method and path.
enum Lookup<'a> {
    /// The operation.
    Operation(&'a Value),
    /// A path of the document, not with this method.
    NoSuchMethod,
    /// No path of the document.
    NoSuchPath,
}

/// True for a path of the console's files, which the API serves beside itself.
fn is_console(path: &str) -> bool {
    path == "/" || path.starts_with("/console/")
}

impl Contract {
    /// Checks the head of an answer (status and media type) to `method` `target` (a path,
    /// with or without a query); returns the schema its body must match, if it is JSON.
    pub fn check_head(
        &self,
        method: &Method,
        target: &str,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<Value> {
        let path = target.split('?').next().unwrap_or(target);
        if is_console(path) {
            return None;
        }
        let media = headers
            .get(CONTENT_TYPE)
            .map_or("", |v| v.to_str().expect("an ASCII media type"))
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let response = match self.lookup(method, path) {
            Lookup::Operation(operation) => {
                let response = &operation["responses"][status.as_str()];
                assert!(
                    response.is_object(),
                    "{method} {path} answered {status}, which its operation does not list"
                );
                check_headers(method, path, status, response, headers);
                response.clone()
            }
            Lookup::NoSuchMethod | Lookup::NoSuchPath => {
                // 401 without a token, 404 or 405 with one: a problem in every case.
                let expected = [
                    StatusCode::UNAUTHORIZED,
                    StatusCode::NOT_FOUND,
                    StatusCode::METHOD_NOT_ALLOWED,
                ];
                assert!(
                    expected.contains(&status),
                    "{method} {path}, outside the document, answered {status}"
                );
                json!({ "content": { "application/problem+json": {
                    "schema": { "$ref": "#/components/schemas/Problem" }
                } } })
            }
        };
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            assert_eq!(media, "", "{method} {path} {status} lists no body");
            return None;
        };
        let listed = content.get(&media).unwrap_or_else(|| {
            panic!(
                "{method} {path} {status} answered `{media}`; listed: {:?}",
                content.keys().collect::<Vec<_>>()
            )
        });
        media.ends_with("json").then(|| listed["schema"].clone())
    }

    /// Checks a whole answer: its head, then its body against the schema listed for it.
    pub fn check(
        &self,
        method: &Method,
        target: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) {
        let Some(schema) = self.check_head(method, target, status, headers) else {
            if headers.get(CONTENT_TYPE).is_none() && !is_console(target) {
                assert!(
                    body.is_empty(),
                    "{method} {target} {status} has an unlisted body"
                );
            }
            return;
        };
        let value: Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{method} {target} {status}: not JSON ({e})"));
        self.validate(&schema, &value)
            .unwrap_or_else(|e| panic!("{method} {target} {status} breaks the document: {e}"));
    }

    /// Checks the data of an event named `name` (of `/v1/events`, or of an observation).
    pub fn check_event(&self, name: &str, data: &Value) {
        let schema = match name {
            "task" => json!({ "$ref": "#/components/schemas/Task" }),
            "device" | "device_failed" => json!({ "$ref": "#/components/schemas/DeviceProgress" }),
            "failure_rate_alarm" => json!({ "$ref": "#/components/schemas/FailureRateAlarm" }),
            "cell_paused" => json!({ "$ref": "#/components/schemas/CellPaused" }),
            "registration" => json!({ "$ref": "#/components/schemas/RegistrationEvent" }),
            "notification" => json!({ "$ref": "#/components/schemas/DeviceData" }),
            "error" => json!({
                "type": "object",
                "required": ["detail"],
                "properties": { "detail": { "type": "string" } },
            }),
            "lagged" => json!({
                "type": "object",
                "required": ["missed"],
                "properties": { "missed": { "type": "integer", "minimum": 1 } },
            }),
            other => panic!("an event stream sent an event named `{other}`"),
        };
        self.validate(&schema, data)
            .unwrap_or_else(|e| panic!("a `{name}` event breaks the document: {e}"));
    }

    fn validate(&self, schema: &Value, value: &Value) -> Result<(), String> {
        Validator {
            root: &self.document,
        }
        .validate(schema, value)
    }

    /// The operation of `method` on `path`, the document's path templates matched segment by
    /// segment (`{name}` takes any one segment; a literal segment wins over a parameter).
    fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let paths = self.document["paths"].as_object().expect("paths");
        let best = paths
            .iter()
            .filter_map(|(template, item)| Some((literal_matches(template, path)?, item)))
            .max_by_key(|(literals, _)| *literals);
        let Some((_, item)) = best else {
            return Lookup::NoSuchPath;
        };
        match item.get(method.as_str().to_ascii_lowercase()) {
            Some(operation) => Lookup::Operation(operation),
            None => Lookup::NoSuchMethod,
        }
    }
}

/// Checks that an answer carries every header its response requires (`Location` of a 201,
/// `ETag` of a tagged representation).
fn check_headers(
    method: &Method,
    path: &str,
    status: StatusCode,
    response: &Value,
    headers: &HeaderMap,
) {
    let Some(listed) = response.get("headers").and_then(Value::as_object) else {
        return;
    };
    for (name, header) in listed {
        if header["required"] == true {
            assert!(
                headers.contains_key(name.as_str()),
                "{method} {path} {status} lacks its {name} header"
            );
        }
    }
}

/// How many literal segments of `template` match `path`, when it matches at all.
fn literal_matches(template: &str, path: &str) -> Option<usize> {
    let (template, path): (Vec<_>, Vec<_>) =
        (template.split('/').collect(), path.split('/').collect());
    if template.len() != path.len() {
        return None;
    }
    let mut literals = 0;
    for (expected, found) in template.iter().zip(&path) {
        if expected.starts_with('{') {
            if found.is_empty() {
                return None;
            }
        } else if expected == found {
            literals += 1;
        } else {
            return None;
        }
    }
    Some(literals)
}
