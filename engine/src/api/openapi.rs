//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of the API, built from the route table
//! ([`super::router::ROUTES`]) and the JSON Schemas of the bodies, written here by hand. Owns
//! the document only.
//!
//! The schemas of what a client sends say exactly what the server takes: bounds of integers,
//! names that must not be blank, the enums, `additionalProperties: false` on the bodies whose
//! structs deny unknown fields (and only on them), `null` where the server takes it. A request
//! the document allows is then never refused as malformed, and one it forbids always is (the
//! router checks every JSON body against its schema: [`super::body_schema`]). What
//! a schema cannot say (a record the request names must exist, a delta needs its base, a
//! deadline comes after the execution time, a plugin takes only its own settings) is a 409 or
//! 422 the operation lists.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use super::ApiState;
use super::idempotency::MAX_KEY_BYTES;
use super::problem::{Kind, PROBLEM_JSON};
use super::router::{Accepts, Content, Payload, ROUTES, Route, Verb};
use crate::campaign::task::MAX_WAIT_SECS;
use crate::catalog::credentials::{MAX_ENDPOINT_BYTES, MAX_IDENTITY_BYTES};
use crate::catalog::firmware::{MAX_NAME_BYTES, MAX_VERSION_BYTES};
use crate::webhooks::{MAX_SECRET_BYTES, MAX_URL_BYTES, MIN_SECRET_CHARS};

/// `GET /v1/openapi.json`.
pub async fn serve(State(state): State<ApiState>) -> Json<Value> {
    Json(state.openapi.as_ref().clone())
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths
            .entry(route.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("a path item is an object");
        item.insert(route.verb.openapi_name().into(), operation(route));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "fota engine",
            "version": "1",
            "description": "The integrator API of the fota engine: devices and their DTLS \
                credentials, groups, firmware, packages, upgrade tasks, statistics, plugins and \
                live progress. Every request but GET /healthz needs `Authorization: Bearer \
                <token>` (without one, even an unknown path is answered 401); a viewer token \
                may only GET. Errors are RFC 9457 problem details. A 201 carries the new \
                resource's Location; single resources carry an ETag (If-Match on writes: 412 \
                when stale; If-None-Match on reads: 304); creating POSTs honour an \
                Idempotency-Key; long lists page with a sort and a cursor (next_cursor, Link).",
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas(),
        },
    })
}

fn operation(route: &Route) -> Value {
    let mut operation = json!({
        "operationId": operation_id(route),
        "summary": route.summary,
        "responses": responses(route),
    });
    let parameters = parameters(route);
    if !parameters.is_empty() {
        operation["parameters"] = Value::Array(parameters);
    }
    match route.payload {
        Payload::None => {}
        Payload::Json(schema) => {
            operation["requestBody"] = body("application/json", reference(schema))
        }
        Payload::Binary => operation["requestBody"] = body("application/octet-stream", upload()),
        Payload::Batch(schema) => operation["requestBody"] = batch(schema),
    }
    if route.public {
        operation["security"] = json!([]);
    }
    operation
}

/// `get_v1_groups_id` for `GET /v1/groups/{id}`.
fn operation_id(route: &Route) -> String {
    let path = route
        .path
        .replace(['{', '}', '.'], "")
        .replace(['/', '-'], "_");
    format!("{}{path}", route.verb.openapi_name())
}

fn parameters(route: &Route) -> Vec<Value> {
    let in_path = route
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            // A path segment is never empty; `{kind}` is always a plugin kind.
            let schema = match name {
                "kind" => one_of(PLUGIN_KINDS),
                _ => json!({ "type": "string", "minLength": 1 }),
            };
            json!({ "name": name, "in": "path", "required": true, "schema": schema })
        });
    let in_query = route.query.iter().map(|param| {
        json!({
            "name": param.name,
            "in": "query",
            "required": param.required,
            "description": param.description,
            "schema": accepts(param.accepts),
        })
    });
    in_path.chain(in_query).chain(headers(route)).collect()
}

/// The request headers a route honours: `If-None-Match` on a conditional GET, `If-Match` on
/// a conditional write, `Idempotency-Key` on a creating POST.
fn headers(route: &Route) -> Vec<Value> {
    let mut headers = Vec::new();
    let header = |name: &str, schema: Value, description: &str| {
        json!({
            "name": name,
            "in": "header",
            "required": false,
            "description": description,
            "schema": schema,
        })
    };
    let tags = json!({ "type": "string", "pattern": ENTITY_TAGS });
    if route.conditional && route.verb == Verb::Get {
        let description = "Answer 304 without a body when the resource's ETag is one of these \
            (weak comparison).";
        headers.push(header("If-None-Match", tags.clone(), description));
    }
    if route.conditional && route.verb != Verb::Get {
        let description = "Act only when the resource's ETag is one of these (strong \
            comparison; * = it exists); 412 otherwise. Absent: unconditional.";
        headers.push(header("If-Match", tags, description));
    }
    if route.idempotent {
        let key = json!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_KEY_BYTES,
            "pattern": "^[!-~]+$",
        });
        let description = "A key the client makes (a UUID) for this request: sent again with \
            the same request within 24 hours (also after a restart of the engine), the first \
            success is answered again (with Idempotent-Replayed: true) and nothing is created \
            twice; with another request, 422. Scoped to the token.";
        headers.push(header("Idempotency-Key", key, description));
    }
    headers
}

/// The schema of a query parameter's values.
fn accepts(accepts: Accepts) -> Value {
    match accepts {
        Accepts::Text => string(),
        Accepts::Name { max_bytes } => {
            let mut name = not_blank();
            if let Some(max) = max_bytes {
                name["maxLength"] = json!(max);
            }
            name
        }
        Accepts::Integer { min, max } => bounded(min, max),
        Accepts::Boolean => json!({ "type": "boolean" }),
        Accepts::OneOf(values) => one_of(values),
        Accepts::Settings => array(json!({ "type": "string", "pattern": SETTING })),
        Accepts::LwM2mPath => lwm2m_path(),
    }
}

fn body(media: &str, schema: Value) -> Value {
    json!({ "required": true, "content": { media: { "schema": schema } } })
}

/// A batch of rows of the schema `row`: a JSON array, or CSV.
fn batch(row: &str) -> Value {
    let csv = json!({
        "type": "string",
        "contentMediaType": "text/csv",
        "description": format!(
            "RFC 4180 CSV: a header line naming the properties of {row} (all of them, in its \
             order), then a row a line."
        ),
    });
    json!({ "required": true, "content": {
        "application/json": { "schema": array(reference(row)) },
        "text/csv": { "schema": csv },
    } })
}

fn responses(route: &Route) -> Value {
    let mut responses = Map::new();
    let mut success = success(route.content);
    let answered = answered_headers(route);
    if !answered.is_empty() {
        success["headers"] = Value::Object(answered);
    }
    responses.insert(route.status.to_string(), success);
    if route.conditional && route.verb == Verb::Get {
        let not_modified = json!({
            "description": "The client's copy (If-None-Match) is current.",
            "headers": { "ETag": etag_header() },
        });
        responses.insert("304".into(), not_modified);
    }
    for kind in route.problems() {
        let problem = json!({
            "description": kind.title(),
            "content": { PROBLEM_JSON: { "schema": reference("Problem") } },
        });
        responses.insert(kind.status().as_u16().to_string(), problem);
    }
    Value::Object(responses)
}

/// The headers of a route's success: `Location` of what it made, `ETag` of the
/// representation it answers, `Link` to the next page.
fn answered_headers(route: &Route) -> Map<String, Value> {
    let mut headers = Map::new();
    if route.makes() {
        let location = json!({
            "required": true,
            "description": "The URL of the resource made (a GET reads it there).",
            "schema": { "type": "string" },
        });
        headers.insert("Location".into(), location);
    }
    if route.tagged() {
        headers.insert("ETag".into(), etag_header());
    }
    if route.pages() {
        let link = json!({
            "description": "<the next page's URL>; rel=\"next\" (absent on the last page).",
            "schema": { "type": "string" },
        });
        headers.insert("Link".into(), link);
    }
    headers
}

fn etag_header() -> Value {
    json!({
        "required": true,
        "description": "A strong entity tag of the representation: send it as If-Match to \
            change the resource only as seen, or If-None-Match to read it only when changed.",
        "schema": { "type": "string" },
    })
}

/// An entity tag: `"opaque"` or `W/"opaque"`, the opaque part visible ASCII but `"`, or
/// beyond ASCII.
macro_rules! entity_tag {
    () => {
        "(W/)?\"[^\"\\x00-\\x20\\x7f]*\""
    };
}

/// A list of entity tags, or `*`.
const ENTITY_TAGS: &str = concat!(
    "^(\\*|",
    entity_tag!(),
    "([ \\t]*,[ \\t]*",
    entity_tag!(),
    ")*)$"
);

fn success(content: Content) -> Value {
    let (media, schema) = match content {
        Content::None => return json!({ "description": "Done." }),
        Content::Json(name) => ("application/json", reference(name)),
        Content::JsonList(name) => ("application/json", array(reference(name))),
        Content::Binary => ("application/octet-stream", binary()),
        Content::EventStream => ("text/event-stream", string()),
        Content::Prometheus => ("text/plain", string()),
    };
    json!({ "description": "Done.", "content": { media: { "schema": schema } } })
}

/// The component schema `name`.
pub(super) fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The component schema `name`, or null.
fn nullable_reference(name: &str) -> Value {
    json!({ "oneOf": [reference(name), { "type": "null" }] })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn boolean() -> Value {
    json!({ "type": "boolean" })
}

fn integer() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

fn binary() -> Value {
    json!({ "type": "string", "contentMediaType": "application/octet-stream" })
}

/// An uploaded image, package or component: never empty.
fn upload() -> Value {
    let mut upload = binary();
    upload["format"] = json!("binary");
    upload["minLength"] = json!(1);
    upload
}

/// The white space characters of `char::is_whitespace` (and so `str::trim`), as the body of a
/// regular expression's character class.
macro_rules! white_space {
    () => {
        "\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
    };
}

/// The control characters of `char::is_control`, as the body of a character class.
macro_rules! control {
    () => {
        "\\u0000-\\u001f\\u007f-\\u009f"
    };
}

/// A character that is not white space, as `char::is_whitespace` (and so `str::trim`) has it:
/// a name, vendor, model or version holds one (the engine refuses blank ones).
pub const NOT_BLANK: &str = concat!("[^", white_space!(), "]");

/// A PSK identity: no control characters.
const IDENTITY: &str = concat!("^[^", control!(), "]+$");

/// An endpoint name, as a registration's: no control characters, no white space.
const ENDPOINT: &str = concat!("^[^", control!(), white_space!(), "]+$");

/// A key: hex digits, two a byte, 1 to 64 bytes.
const KEY_HEX: &str = "^([0-9a-fA-F]{2}){1,64}$";

/// A plugin setting: `key=value` with a key.
const SETTING: &str = "^[^=]+=";

/// An LwM2M id, 0 to 65534, with any leading zeros.
macro_rules! lwm2m_id {
    () => {
        "0*(6553[0-4]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
    };
}

/// An LwM2M path below the root: one to four ids, a trailing `/` allowed.
const LWM2M_PATH: &str = concat!("^(/", lwm2m_id!(), "){1,4}/?$");

/// An LwM2M path below the root.
fn lwm2m_path() -> Value {
    json!({ "type": "string", "pattern": LWM2M_PATH })
}

/// A string that is not blank.
fn not_blank() -> Value {
    json!({ "type": "string", "minLength": 1, "pattern": NOT_BLANK })
}

/// A version: not blank, at most 255 bytes (of UTF-8: the schema can only count characters).
fn version() -> Value {
    not_blank_of_at_most(MAX_VERSION_BYTES)
}

/// A vendor, model or name: not blank, at most 255 bytes.
fn name() -> Value {
    not_blank_of_at_most(MAX_NAME_BYTES)
}

/// Not blank, at most `max` bytes (of UTF-8: the schema can only count characters).
fn not_blank_of_at_most(max: usize) -> Value {
    let mut text = not_blank();
    text["maxLength"] = json!(max);
    text["description"] = json!(format!("1 to {max} bytes of UTF-8."));
    text
}

/// An integer from `min` to `max`.
fn bounded(min: u64, max: u64) -> Value {
    json!({ "type": "integer", "minimum": min, "maximum": max })
}

/// An object of a request body whose struct denies unknown fields.
fn closed(required: &[&str], properties: Value) -> Value {
    let mut object = object(required, properties);
    object["additionalProperties"] = json!(false);
    object
}

/// An object mapping strings to strings (plugin settings).
fn string_map() -> Value {
    json!({ "type": "object", "additionalProperties": string() })
}

fn array(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

/// `type` or null.
fn nullable(type_: &str) -> Value {
    json!({ "type": [type_, "null"] })
}

/// Milliseconds since the Unix epoch.
fn millis() -> Value {
    json!({
        "type": "integer",
        "minimum": 0,
        "maximum": u64::MAX,
        "description": "Milliseconds since the Unix epoch.",
    })
}

fn nullable_millis() -> Value {
    let mut millis = millis();
    millis["type"] = json!(["integer", "null"]);
    millis
}

fn one_of(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}

fn nullable_one_of(values: &[&str]) -> Value {
    let mut values: Vec<Value> = values.iter().map(|v| json!(v)).collect();
    values.push(Value::Null);
    json!({ "enum": values })
}

/// An object with `properties`, the `required` ones listed.
fn object(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": properties })
}

/// Values of the enums, as the engine's records serialize them.
const TASK_STATUSES: &[&str] = &["not_started", "upgrading", "paused", "stopped", "completed"];
const PHASES: &[&str] = &["waiting", "active", "finished", "removed"];
const DOWNLOAD_STATUSES: &[&str] = &["not_started", "downloading", "downloaded", "failed"];
const UPGRADE_STATUSES: &[&str] = &["not_started", "upgrading", "upgraded", "failed"];
const RESULTS: &[&str] = &[
    "successful",
    "insufficient_space",
    "out_of_memory",
    "link_broke",
    "integrity_failed",
    "not_supported",
    "upgrade_failed",
    "unexpected_version",
    "task_expired",
    "download_failed",
];
pub const PACKAGE_KINDS: &[&str] = &["full", "delta"];
const RESOURCE_TYPES: &[&str] = &[
    "string",
    "integer",
    "unsigned_integer",
    "float",
    "boolean",
    "opaque",
    "time",
    "objlnk",
];
const OPERATION_KINDS: &[&str] = &["read", "write", "execute"];
const OPERATION_STATUSES: &[&str] = &["pending", "succeeded", "failed"];
pub const PLUGIN_KINDS: &[&str] = &["differ", "capability", "policy", "packager"];
const PACKAGE_FORMATS: &[&str] = &["raw", "signed", "packager"];

fn counters() -> Value {
    json!({
        "devices": integer(),
        "successes": integer(),
        "failures": integer(),
        "bytes_first": integer(),
        "bytes_resent": integer(),
        "wire_bytes": integer(),
        "downloads_not_installed": integer(),
    })
}

/// Counters with more properties, all required.
fn with_counters(more: Value) -> Value {
    let mut properties = counters();
    properties
        .as_object_mut()
        .expect("an object")
        .extend(more.as_object().expect("an object").clone());
    let required: Vec<&String> = properties.as_object().expect("an object").keys().collect();
    json!({ "type": "object", "required": required, "properties": properties })
}

fn page(items: &str) -> Value {
    object(
        &["total", "offset", "limit", "next_cursor", "items"],
        json!({
            "total": integer(),
            "offset": integer(),
            "limit": integer(),
            "next_cursor": {
                "type": ["string", "null"],
                "description": "The cursor of the next page; null on the last page.",
            },
            "items": array(reference(items)),
        }),
    )
}

/// Every schema the routes refer to.
fn schemas() -> Value {
    let mut all = Map::new();
    for part in [
        general_schemas(),
        device_schemas(),
        device_data_schemas(),
        credential_schemas(),
        catalog_schemas(),
        task_schemas(),
        event_schemas(),
    ] {
        all.extend(part.as_object().expect("an object").clone());
    }
    Value::Object(all)
}

/// Health, the document itself, problems, statistics and plugin bindings.
fn general_schemas() -> Value {
    let problem_types: Vec<String> = Kind::ALL.iter().map(|k| k.type_uri()).collect();
    json!({
        "Health": object(&["status"], json!({ "status": one_of(&["ok"]) })),
        "OpenApi": { "type": "object", "description": "An OpenAPI 3.1 document." },
        "Session": object(&["role"], json!({ "role": one_of(&["operator", "viewer"]) })),
        "Problem": object(
            &["type", "title", "status", "detail"],
            json!({
                "type": { "type": "string", "enum": problem_types },
                "title": string(),
                "status": integer(),
                "detail": string(),
            }),
        ),
        "PackageStats": with_counters(json!({
            "package_id": string(),
            "vendor": string(),
            "model": string(),
            "to_version": string(),
        })),
        "ModelStats": with_counters(json!({ "vendor": string(), "model": string() })),
        "Statistics": object(
            &["packages", "models"],
            json!({
                "packages": array(reference("PackageStats")),
                "models": array(reference("ModelStats")),
            }),
        ),
        "PluginBinding": object(
            &["kind", "vendor", "model", "name", "settings"],
            json!({
                "kind": one_of(PLUGIN_KINDS),
                "vendor": nullable("string"),
                "model": nullable("string"),
                "name": string(),
                "settings": string_map(),
            }),
        ),
        "PluginSettings": closed(&["settings"], json!({ "settings": string_map() })),
    })
}

/// Devices, their registrations and their progress in tasks.
fn device_schemas() -> Value {
    json!({
        "Device": object(
            &["endpoint", "name", "last_seen", "online", "groups"],
            json!({
                "endpoint": string(),
                "name": string(),
                "imei": nullable("string"),
                "manufacturer": nullable("string"),
                "model": nullable("string"),
                "firmware_version": nullable("string"),
                "last_seen": millis(),
                "online": { "type": "boolean" },
                "battery": nullable("integer"),
                "power_sources": array(integer()),
                "signal_dbm": nullable("integer"),
                "memory_free_kb": nullable("integer"),
                "cell_id": nullable("integer"),
                "delivery": nullable_one_of(&["Pull", "Push", "Both"]),
                "last_surveyed": nullable("integer"),
                "surveyed_registration": nullable("string"),
                "surveyed_update_result": nullable_one_of(&[
                    "Initial", "Success", "NotEnoughFlash", "OutOfRam", "ConnectionLost",
                    "IntegrityFailure", "UnsupportedPackageType", "InvalidUri", "UpdateFailed",
                    "UnsupportedProtocol",
                ]),
                "groups": array(reference("GroupPlace")),
            }),
        ),
        "GroupPlace": object(
            &["id", "test"],
            json!({ "id": string(), "test": { "type": "boolean" } }),
        ),
        "DevicePage": page("Device"),
        "Registration": object(
            &[
                "id",
                "address",
                "binding",
                "lwm2m_version",
                "lifetime_secs",
                "registered_at",
                "last_update",
                "objects",
            ],
            json!({
                "id": string(),
                "address": string(),
                "binding": one_of(&["U", "UQ"]),
                "lwm2m_version": string(),
                "lifetime_secs": integer(),
                "registered_at": millis(),
                "last_update": millis(),
                "objects": array(string()),
            }),
        ),
        "DeviceDetail": { "allOf": [
            reference("Device"),
            object(
                &["registered", "registration", "tasks"],
                json!({
                    "registered": { "type": "boolean" },
                    "registration": nullable_reference("Registration"),
                    "tasks": array(reference("DeviceProgress")),
                }),
            ),
        ] },
        "DeviceProgress": object(
            &[
                "task_id",
                "endpoint",
                "attempts",
                "phase",
                "next_try_at",
                "download",
                "upgrade",
                "bytes_first",
                "bytes_resent",
                "interruptions",
                "wire_bytes",
            ],
            json!({
                "task_id": string(),
                "endpoint": string(),
                "attempts": integer(),
                "phase": one_of(PHASES),
                "next_try_at": millis(),
                "download": one_of(DOWNLOAD_STATUSES),
                "upgrade": one_of(UPGRADE_STATUSES),
                "result": nullable_one_of(RESULTS),
                "note": nullable("string"),
                "cell_id": nullable("integer"),
                "bytes_first": integer(),
                "bytes_resent": integer(),
                "interruptions": integer(),
                "wire_bytes": integer(),
                "finished_at": nullable_millis(),
                "stage": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "The index of the task's stage the device is in.",
                },
            }),
        ),
        "TaskDevice": { "allOf": [
            reference("DeviceProgress"),
            object(
                &["retry", "online", "name", "imei"],
                json!({
                    "retry": {
                        "type": "string",
                        "description": "Attempts made / attempts allowed (retries + 1).",
                    },
                    "online": { "type": "boolean" },
                    "name": string(),
                    "imei": nullable("string"),
                }),
            ),
        ] },
        "TaskDevicePage": page("TaskDevice"),
        "KnownModel": object(
            &["vendor", "model", "devices", "firmware"],
            json!({
                "vendor": string(),
                "model": string(),
                "devices": integer(),
                "firmware": integer(),
            }),
        ),
    })
}

/// A JSON scalar: what a resource value is written as.
fn scalar() -> Value {
    json!({ "type": ["string", "integer", "number", "boolean"] })
}

/// An object mapping ids (as strings) to `schema`.
fn id_map(schema: &str) -> Value {
    json!({
        "type": "object",
        "description": "Keyed by id, 0 to 65534.",
        "additionalProperties": reference(schema),
    })
}

/// A device's objects, its data as read and written, and queued operations.
fn device_data_schemas() -> Value {
    let typed = json!({ "type": one_of(RESOURCE_TYPES), "value": scalar() });
    let with_path = |required: &[&str], properties: Value| {
        let mut properties = properties;
        properties["path"] = string();
        let mut required = required.to_vec();
        required.push("path");
        object(&required, properties)
    };
    json!({
        "DeviceObjects": object(
            &["endpoint", "lwm2m_version", "binding", "awake", "multi_value_format", "objects"],
            json!({
                "endpoint": string(),
                "lwm2m_version": string(),
                "binding": one_of(&["U", "UQ"]),
                "awake": { "type": "boolean" },
                "multi_value_format": string(),
                "objects": array(object(
                    &["id", "instances"],
                    json!({ "id": integer(), "instances": array(integer()) }),
                )),
            }),
        ),
        "TypedValue": object(&["type", "value"], typed.clone()),
        "ResourceData": { "oneOf": [
            reference("TypedValue"),
            object(&["values"], json!({ "values": id_map("TypedValue") })),
        ] },
        "InstanceData": object(&["resources"], json!({ "resources": id_map("ResourceData") })),
        "DeviceData": { "oneOf": [
            with_path(&["type", "value"], typed),
            with_path(&["values"], json!({ "values": id_map("TypedValue") })),
            with_path(&["resources"], json!({ "resources": id_map("ResourceData") })),
            with_path(&["instances"], json!({ "instances": id_map("InstanceData") })),
        ] },
        "NewValue": closed(
            &["value"],
            json!({ "type": one_of(RESOURCE_TYPES), "value": scalar() }),
        ),
        "NewResource": { "oneOf": [
            reference("NewValue"),
            closed(&["values"], json!({ "values": id_map("NewValue") })),
        ] },
        "NewDeviceData": { "oneOf": [
            reference("NewResource"),
            closed(&["resources"], json!({ "resources": id_map("NewResource") })),
        ] },
        "NewOperation": closed(
            &["kind", "path"],
            json!({
                "kind": one_of(OPERATION_KINDS),
                "path": lwm2m_path(),
                // Null is the same as absent.
                "content": nullable_reference("NewDeviceData"),
                "arguments": nullable("string"),
            }),
        ),
        "QueuedOperation": object(
            &[
                "id",
                "endpoint",
                "kind",
                "path",
                "status",
                "created_at",
                "finished_at",
                "attempts",
                "result",
                "error",
            ],
            json!({
                "id": string(),
                "endpoint": string(),
                "kind": one_of(OPERATION_KINDS),
                "path": string(),
                "status": one_of(OPERATION_STATUSES),
                "created_at": millis(),
                "finished_at": nullable_millis(),
                "attempts": integer(),
                "result": nullable_reference("DeviceData"),
                "error": nullable("string"),
            }),
        ),
    })
}

/// Devices' PSK credentials (never with their keys) and the bodies that set them.
fn credential_schemas() -> Value {
    let endpoint = json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ENDPOINT_BYTES,
        "pattern": ENDPOINT,
        "description": "The device's endpoint name: 1 to 255 bytes of UTF-8, no control \
            characters or white space.",
    });
    let identity = json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDENTITY_BYTES,
        "pattern": IDENTITY,
        "description": "The PSK identity the device sends in its DTLS handshake: 1 to 128 \
            bytes of UTF-8, no control characters; bound to one device at most.",
    });
    let key_hex = json!({
        "type": "string",
        "pattern": KEY_HEX,
        "description": "The pre-shared key as hex digits, two a byte: 1 to 64 bytes (16 for \
            most LwM2M modules). Write-only: never answered.",
    });
    json!({
        "Credential": object(
            &["endpoint", "identity", "updated_at"],
            json!({ "endpoint": string(), "identity": string(), "updated_at": millis() }),
        ),
        "CredentialPage": page("Credential"),
        "NewCredential": closed(
            &["identity", "key_hex"],
            json!({ "identity": identity, "key_hex": key_hex }),
        ),
        "CredentialRow": closed(
            &["endpoint", "identity", "key_hex"],
            json!({ "endpoint": endpoint, "identity": identity, "key_hex": key_hex }),
        ),
        "Imported": object(&["imported"], json!({ "imported": integer() })),
    })
}

/// Groups, firmware and packages, and the bodies that make them.
fn catalog_schemas() -> Value {
    json!({
        "Group": object(
            &[
                "id",
                "name",
                "vendor",
                "model",
                "auto_join",
                "device_count",
                "test_device_count",
                "revision",
                "created_at",
            ],
            json!({
                "id": string(),
                "name": string(),
                "vendor": string(),
                "model": string(),
                "auto_join": boolean(),
                "device_count": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Its devices (GET /v1/devices?group= pages them).",
                },
                "test_device_count": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Those of its devices marked as test devices: a task's test stage runs on them (GET /v1/devices?group=&test=true pages them).",
                },
                "revision": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Moves with every change of the group or of its devices.",
                },
                "created_at": millis(),
            }),
        ),
        "NewGroup": closed(
            &["name", "vendor", "model"],
            json!({
                "name": name(),
                "vendor": name(),
                "model": name(),
                "auto_join": boolean(),
            }),
        ),
        // What is absent or null stays as it is.
        "GroupChange": closed(
            &[],
            json!({
                "name": { "anyOf": [name(), { "type": "null" }] },
                "auto_join": nullable("boolean"),
            }),
        ),
        "Members": closed(&["endpoints"], json!({ "endpoints": array(string()) })),
        "Firmware": object(
            &["id", "vendor", "model", "version", "sha256", "size", "created_at"],
            json!({
                "id": string(),
                "vendor": string(),
                "model": string(),
                "version": string(),
                "reported_version": nullable("string"),
                "sha256": string(),
                "size": integer(),
                "created_at": millis(),
            }),
        ),
        "Package": object(
            &[
                "id",
                "kind",
                "vendor",
                "model",
                "to_version",
                "to_firmware",
                "format",
                "size",
                "sha256",
                "created_at",
            ],
            json!({
                "id": string(),
                "kind": one_of(PACKAGE_KINDS),
                "vendor": string(),
                "model": string(),
                "from_version": nullable("string"),
                "to_version": string(),
                "from_firmware": nullable("string"),
                "to_firmware": nullable("string"),
                "reported_version": nullable("string"),
                "format": one_of(PACKAGE_FORMATS),
                "packager": nullable("string"),
                "uploaded": { "oneOf": [
                    object(
                        &["verified", "check"],
                        json!({ "verified": { "type": "boolean" }, "check": string() }),
                    ),
                    { "type": "null" },
                ] },
                "size": integer(),
                "sha256": string(),
                "created_at": millis(),
            }),
        ),
        "NewPackage": { "oneOf": [
            closed(
                &["kind", "to_firmware"],
                json!({
                    "kind": { "const": "full" },
                    "from_firmware": { "type": "null" },
                    "to_firmware": string(),
                    "format": nullable_one_of(PACKAGE_FORMATS),
                }),
            ),
            closed(
                &["kind", "from_firmware", "to_firmware"],
                json!({
                    "kind": { "const": "delta" },
                    "from_firmware": string(),
                    "to_firmware": string(),
                    "format": nullable_one_of(PACKAGE_FORMATS),
                }),
            ),
        ] },
        "ReportedVersion": closed(
            &[],
            json!({ "reported_version": {
                "oneOf": [version(), { "type": "null" }],
                "description": "The /3/0/3 string; null or absent: the version itself.",
            } }),
        ),
        "ModelFormat": object(
            &["vendor", "model", "format"],
            json!({ "vendor": string(), "model": string(), "format": one_of(PACKAGE_FORMATS) }),
        ),
        "NewFormat": closed(&["format"], json!({ "format": one_of(PACKAGE_FORMATS) })),
    })
}

/// Tasks and their specs.
fn task_schemas() -> Value {
    json!({
        "DailyWindow": closed(
            &["start", "end"],
            json!({
                "start": { "type": "string", "pattern": "^[0-9]{2}:[0-9]{2}$" },
                "end": { "type": "string", "pattern": "^[0-9]{2}:[0-9]{2}$" },
            }),
        ),
        "MaintenanceWindows": closed(
            &["time_zone"],
            json!({
                "time_zone": {
                    "type": "string",
                    "description": "An IANA time zone name, e.g. Asia/Shanghai.",
                },
                "download": array(reference("DailyWindow")),
                "update": array(reference("DailyWindow")),
            }),
        ),
        "Pacing": object(
            &["max_concurrent", "max_per_cell"],
            json!({
                "max_concurrent": bounded(1, usize::MAX as u64),
                "max_per_cell": bounded(1, usize::MAX as u64),
            }),
        ),
        // Not closed: a task spec with a field the engine does not know is taken (the field
        // ignored), as records kept in the store are read.
        "TaskSpec": object(
            &["name", "group_id", "package_id", "retries", "retry_interval_secs"],
            json!({
                "name": not_blank(),
                "group_id": string(),
                "package_id": string(),
                "retries": bounded(0, u32::MAX.into()),
                "retry_interval_secs": bounded(0, MAX_WAIT_SECS),
                "execution_time": nullable_millis(),
                "deadline": {
                    "type": ["integer", "null"],
                    "minimum": 0,
                    "maximum": u64::MAX,
                    "description": "Milliseconds since the Unix epoch, after the execution time.",
                },
                "pacing": reference("Pacing"),
                "min_signal_dbm": {
                    "type": ["integer", "null"],
                    "minimum": i32::MIN,
                    "maximum": i32::MAX,
                },
                "cell_pause_secs": bounded(1, MAX_WAIT_SECS),
                "max_failure_rate": nullable("number"),
                "failure_sample": bounded(0, u32::MAX.into()),
                "start_jitter_secs": bounded(0, MAX_WAIT_SECS),
                "cell_airtime_bytes_per_sec": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": u32::MAX,
                    "description": "Package bytes per second this task may put on each cell's downlink.",
                },
                "windows": nullable_reference("MaintenanceWindows"),
                "stages": {
                    "type": "array",
                    "maxItems": crate::campaign::stages::MAX_STAGES,
                    "items": reference("RolloutStage"),
                    "description": "The rollout's stages in order: the group's test devices \
                        (first only), then rising shares of the other devices up to 100 \
                        percent. None: one stage over the whole group.",
                },
            }),
        ),
        "RolloutStage": closed(
            &["name", "devices"],
            json!({
                "name": not_blank(),
                "devices": { "oneOf": [
                    { "type": "string", "enum": ["test_devices"] },
                    closed(&["up_to_percent"], json!({
                        "up_to_percent": {
                            "type": "number",
                            "exclusiveMinimum": 0,
                            "maximum": 100,
                            "description": "The other devices up to this share of them, \
                                counted over the stages so far.",
                        },
                    })),
                ] },
                "success_threshold": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "description": "Share of the stage's devices upgraded before the next \
                        stage opens (default 1).",
                },
                "max_failure_rate": {
                    "type": ["number", "null"],
                    "minimum": 0,
                    "maximum": 1,
                    "description": "The task pauses when this share of the stage's devices \
                        finished since the last resume failed (default: the task's).",
                },
                "failure_sample": {
                    "type": ["integer", "null"],
                    "minimum": 0,
                    "maximum": u32::MAX,
                    "description": "...once this many finished (default: the task's).",
                },
                "manual_approval": {
                    "type": ["boolean", "null"],
                    "description": "Whether the next stage waits for POST \
                        /v1/tasks/{id}/approve once this one succeeded (default: after the \
                        test devices only).",
                },
            }),
        ),
        "StageProgress": object(
            &["name", "open", "devices", "upgraded", "failed"],
            json!({
                "name": string(),
                "open": boolean(),
                "devices": integer(),
                "upgraded": integer(),
                "failed": integer(),
            }),
        ),
        "Finished": object(
            &["upgraded", "failed"],
            json!({ "upgraded": integer(), "failed": integer() }),
        ),
        "TaskPage": page("Task"),
        "TaskSummary": task_summary_schema(),
        "CellPause": object(&["reason", "until"], json!({ "reason": string(), "until": millis() })),
        "Task": object(
            &["id", "spec", "status", "paused_cells", "created_at"],
            json!({
                "id": string(),
                "spec": reference("TaskSpec"),
                "status": one_of(TASK_STATUSES),
                "pause_reason": nullable("string"),
                "paused_cells": {
                    "type": "object",
                    "additionalProperties": reference("CellPause"),
                },
                "failures_counted_since": millis(),
                "success_rate": {
                    "type": ["number", "null"],
                    "minimum": 0,
                    "maximum": 1,
                    "description": "Share of the task's devices (removed ones excluded) upgraded so far.",
                },
                "stage": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "The furthest stage open: its devices and those of the \
                        stages before it may start.",
                },
                "awaiting_approval": {
                    "type": ["string", "null"],
                    "description": "Why the next stage waits for POST /v1/tasks/{id}/approve.",
                },
                "failure_baseline": array(reference("Finished")),
                "stage_progress": array(reference("StageProgress")),
                "created_at": millis(),
                "started_at": nullable_millis(),
                "finished_at": nullable_millis(),
            }),
        ),
    })
}

/// What `GET /v1/tasks/{id}/summary` answers.
fn task_summary_schema() -> Value {
    let counts = json!({ "type": "object", "additionalProperties": integer() });
    let cell = object(
        &["cell_id", "devices", "upgraded", "failed", "active"],
        json!({
            "cell_id": nullable("integer"),
            "devices": integer(),
            "upgraded": integer(),
            "failed": integer(),
            "active": integer(),
        }),
    );
    let point = object(
        &["at", "upgraded", "failed"],
        json!({ "at": millis(), "upgraded": integer(), "failed": integer() }),
    );
    object(
        &[
            "task_id",
            "devices",
            "phases",
            "downloads",
            "upgrades",
            "results",
            "cells",
            "other_cells_devices",
            "timeline",
        ],
        json!({
            "task_id": string(),
            "devices": integer(),
            "phases": counts,
            "downloads": counts,
            "upgrades": counts,
            "results": counts,
            "cells": array(cell),
            "other_cells_devices": integer(),
            "timeline": array(point),
        }),
    )
}

/// The kinds of events, as the journal names them.
fn event_kinds() -> Value {
    let kinds: Vec<&str> = crate::webhooks::kinds().collect();
    one_of(&kinds)
}

/// The events of the journal (`/v1/events`, webhook deliveries), webhook subscriptions and
/// their deliveries.
fn event_schemas() -> Value {
    let url = json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_URL_BYTES,
        "pattern": "^https?://[^/?#]+",
        "description": "Where events are POSTed: an http or https URL with a host, at most \
            2048 bytes.",
    });
    let kinds = json!({
        "type": ["array", "null"],
        "minItems": 1,
        "items": event_kinds(),
        "description": "The kinds of events delivered; absent or null on creation: task, \
            device_failed, failure_rate_alarm and cell_paused.",
    });
    json!({
        "Event": object(
            &["id", "kind", "time", "data"],
            json!({
                "id": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "The event's number, in the order events happened; never \
                        given to another event, across restarts too. Receivers de-duplicate \
                        by it.",
                },
                "kind": event_kinds(),
                "time": millis(),
                "data": { "oneOf": [
                    reference("Task"),
                    reference("DeviceProgress"),
                    reference("FailureRateAlarm"),
                    reference("CellPaused"),
                    reference("RegistrationEvent"),
                ] },
            }),
        ),
        "FailureRateAlarm": object(
            &["task_id", "stage", "finished", "failed", "failure_rate", "threshold"],
            json!({
                "task_id": string(),
                "stage": string(),
                "finished": integer(),
                "failed": integer(),
                "failure_rate": { "type": "number", "minimum": 0, "maximum": 1 },
                "threshold": { "type": "number" },
            }),
        ),
        "CellPaused": object(
            &["task_id", "cell_id", "reason", "until"],
            json!({
                "task_id": string(),
                "cell_id": integer(),
                "reason": string(),
                "until": millis(),
            }),
        ),
        "RegistrationEvent": object(
            &["endpoint", "event", "address", "binding", "lifetime_secs"],
            json!({
                "endpoint": string(),
                "event": one_of(&["registered", "deregistered", "expired"]),
                "address": string(),
                "binding": one_of(&["U", "UQ"]),
                "lifetime_secs": integer(),
            }),
        ),
        "NewWebhook": closed(
            &["url", "secret"],
            json!({
                "url": url,
                "secret": {
                    "type": "string",
                    "minLength": MIN_SECRET_CHARS,
                    "maxLength": MAX_SECRET_BYTES,
                    "description": "The HMAC-SHA256 key deliveries are signed with: at least 16 \
                        characters, at most 256 bytes of UTF-8. Write-only: never answered.",
                },
                "kinds": kinds,
                "description": nullable("string"),
            }),
        ),
        "WebhookChange": closed(
            &[],
            json!({
                "url": { "oneOf": [url, { "type": "null" }] },
                "kinds": kinds,
                "description": nullable("string"),
            }),
        ),
        "WebhookAttempt": object(
            &["event_id", "kind", "at"],
            json!({
                "event_id": integer(),
                "kind": event_kinds(),
                "at": millis(),
                "status": nullable("integer"),
                "error": nullable("string"),
            }),
        ),
        "Webhook": object(
            &["id", "url", "kinds", "created_at", "pending", "dead_letters", "attempts"],
            json!({
                "id": string(),
                "url": string(),
                "kinds": array(event_kinds()),
                "description": nullable("string"),
                "created_at": millis(),
                "pending": integer(),
                "dead_letters": integer(),
                "attempts": array(reference("WebhookAttempt")),
            }),
        ),
        "DeadLetter": object(
            &["event", "attempts", "error", "dead_at"],
            json!({
                "event": reference("Event"),
                "attempts": integer(),
                "error": string(),
                "dead_at": millis(),
            }),
        ),
        "DeadLetterPage": page("DeadLetter"),
        "Redelivered": object(&["requeued"], json!({ "requeued": integer() })),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde::Serialize;

    use super::*;
    use crate::campaign::{DeviceResult, DownloadStatus, Phase, TaskStatus, UpgradeStatus};
    use crate::catalog::PackageKind;
    use crate::lwm2m::{OperationStatus, ResourceType};
    use crate::plugin::PluginKind;

    /// Every `$ref` in `value`.
    fn references(value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.insert(target.clone());
                }
                map.values().for_each(|v| references(v, found));
            }
            Value::Array(values) => values.iter().for_each(|v| references(v, found)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_names_a_schema_and_every_schema_is_referenced() {
        let document = document();
        let mut found = BTreeSet::new();
        references(&document, &mut found);
        let defined: BTreeSet<String> = document["components"]["schemas"]
            .as_object()
            .unwrap()
            .keys()
            .map(|name| format!("#/components/schemas/{name}"))
            .collect();
        assert_eq!(found, defined);
    }

    #[test]
    fn every_route_is_one_operation_of_the_document() {
        let document = document();
        let operations: usize = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        assert_eq!(
            operations,
            ROUTES.len(),
            "two routes share a method and path"
        );
        for route in ROUTES {
            let operation = &document["paths"][route.path][route.verb.openapi_name()];
            assert_eq!(operation["summary"], route.summary, "{}", route.path);
        }
    }

    #[test]
    fn the_key_pattern_takes_the_catalogs_key_lengths() {
        use crate::catalog::credentials::MAX_KEY_BYTES;
        assert!(
            KEY_HEX.ends_with(&format!("{{1,{MAX_KEY_BYTES}}}$")),
            "{KEY_HEX}"
        );
    }

    fn names<T: Serialize>(values: &[T]) -> Vec<String> {
        values
            .iter()
            .map(|v| {
                serde_json::to_value(v)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn schema_enums_are_what_the_records_serialize_to() {
        use TaskStatus::*;
        assert_eq!(
            names(&[NotStarted, Upgrading, Paused, Stopped, Completed]),
            TASK_STATUSES
        );
        assert_eq!(
            names(&[
                Phase::Waiting,
                Phase::Active,
                Phase::Finished,
                Phase::Removed
            ]),
            PHASES
        );
        use DownloadStatus as D;
        assert_eq!(
            names(&[D::NotStarted, D::Downloading, D::Downloaded, D::Failed]),
            DOWNLOAD_STATUSES
        );
        use UpgradeStatus as U;
        assert_eq!(
            names(&[U::NotStarted, U::Upgrading, U::Upgraded, U::Failed]),
            UPGRADE_STATUSES
        );
        use DeviceResult as R;
        let results = [
            R::Successful,
            R::InsufficientSpace,
            R::OutOfMemory,
            R::LinkBroke,
            R::IntegrityFailed,
            R::NotSupported,
            R::UpgradeFailed,
            R::UnexpectedVersion,
            R::TaskExpired,
            R::DownloadFailed,
        ];
        assert_eq!(names(&results), RESULTS);
        use crate::catalog::PackageFormat as F;
        assert_eq!(names(&[F::Raw, F::Signed, F::Packager]), PACKAGE_FORMATS);
        assert_eq!(
            names(&[PackageKind::Full, PackageKind::Delta]),
            PACKAGE_KINDS
        );
        let kinds: Vec<_> = PluginKind::ALL.iter().map(|k| k.world()).collect();
        assert_eq!(kinds, PLUGIN_KINDS);
        assert_eq!(names(&ResourceType::ALL), RESOURCE_TYPES);
        use OperationStatus as S;
        assert_eq!(
            names(&[S::Pending, S::Succeeded, S::Failed]),
            OPERATION_STATUSES
        );
    }
}
