//! The route table: every route of the API once, with what the router needs (method, path,
//! handler, body limit, whether it needs a token) and what the OpenAPI document says of it
//! (summary, query, body, answer, problems). Both are built from this table, so the document
//! cannot list a route the router does not serve, nor miss one it does.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Extension, Router};

use super::auth::{Guard, authenticate, authorize};
use super::body_schema::BodySchema;
use super::connections::HttpCounters;
use super::device_ops::MAX_TIMEOUT_SECS;
use super::openapi::{PACKAGE_KINDS, PLUGIN_KINDS};
use super::paging::MAX_LIMIT;
use super::problem::{Kind, method_not_allowed, no_such_route};
use super::{
    ApiConfig, ApiState, console, credentials, device_ops, devices, events, firmware, formats,
    groups, health, idempotency, metrics, models, openapi, packages, plugins, request_times,
    session, statistics, task_summary, tasks, webhooks,
};
use crate::catalog::firmware::{MAX_NAME_BYTES, MAX_VERSION_BYTES};

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    /// The method's name in an OpenAPI path item.
    pub fn openapi_name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Put => "put",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    /// The method's name, as HTTP spells it.
    pub fn label(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Patch => "PATCH",
            Verb::Delete => "DELETE",
        }
    }

    /// The HTTP method.
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Put => Method::PUT,
            Verb::Patch => Method::PATCH,
            Verb::Delete => Method::DELETE,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Patch => MethodFilter::PATCH,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// A query parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Its name.
    pub name: &'static str,
    /// The values the server takes (its schema in the document).
    pub accepts: Accepts,
    /// True when the request must carry it.
    pub required: bool,
    /// What it means.
    pub description: &'static str,
}

/// The values a query parameter takes: exactly what the server accepts, so the document's
/// schema and the server agree on every request (a value the schema allows is not refused as
/// malformed, one it forbids is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// Any string (a filter: one no record has matches nothing).
    Text,
    /// A string with a character that is not white space, of at most `max_bytes` bytes of
    /// UTF-8 when bounded (the document says `maxLength`, in characters, and the description
    /// says bytes).
    Name { max_bytes: Option<u64> },
    /// An integer from `min` to `max`.
    Integer { min: u64, max: u64 },
    /// `true` or `false`.
    Boolean,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// `key=value` settings with a key, the parameter repeated for more.
    Settings,
    /// An LwM2M path below the root: `/object`, `/object/instance`, ... (ids 0 to 65534).
    LwM2mPath,
}

/// What a request carries as its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Nothing.
    None,
    /// JSON of the named schema (`components.schemas`), at most `max_json_bytes`.
    Json(&'static str),
    /// Raw bytes (`application/octet-stream`), at most `max_upload_bytes`.
    Binary,
    /// A batch of rows, at most `max_upload_bytes`: a JSON array of the named schema
    /// (`application/json`), or CSV with a header line (`text/csv`).
    Batch(&'static str),
}

/// What a successful answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Nothing (204).
    None,
    /// JSON of the named schema.
    Json(&'static str),
    /// A JSON array of the named schema.
    JsonList(&'static str),
    /// Raw bytes.
    Binary,
    /// Server-sent events.
    EventStream,
    /// The Prometheus text format.
    Prometheus,
}

/// One route.
pub struct Route {
    /// Its method.
    pub verb: Verb,
    /// Its path, with `{name}` parameters (the same syntax for axum and OpenAPI).
    pub path: &'static str,
    /// What it does, in one line.
    pub summary: &'static str,
    /// True for the one route anybody may call (`/healthz`).
    pub public: bool,
    /// Its query parameters.
    pub query: &'static [Param],
    /// Its request body.
    pub payload: Payload,
    /// Status of a successful answer.
    pub status: u16,
    /// Body of a successful answer.
    pub content: Content,
    /// Problems of this route beyond those every route of its shape has (see [`Route::problems`]).
    pub refusals: &'static [Kind],
    /// A single resource's GET that answers its ETag (and 304 to `If-None-Match`), or a write
    /// of one that takes `If-Match` (412 when it does not hold).
    pub conditional: bool,
    /// A creating POST that honours `Idempotency-Key`.
    pub idempotent: bool,
    /// Makes its handler for a method.
    handler: fn(MethodFilter) -> MethodRouter<ApiState>,
}

impl Route {
    /// A route needing a token, without query or body, answering 200.
    const fn new(
        verb: Verb,
        path: &'static str,
        summary: &'static str,
        content: Content,
        handler: fn(MethodFilter) -> MethodRouter<ApiState>,
    ) -> Route {
        Route {
            verb,
            path,
            summary,
            public: false,
            query: &[],
            payload: Payload::None,
            status: 200,
            content,
            refusals: &[],
            conditional: false,
            idempotent: false,
            handler,
        }
    }

    const fn query(mut self, query: &'static [Param]) -> Route {
        self.query = query;
        self
    }

    const fn payload(mut self, payload: Payload) -> Route {
        self.payload = payload;
        self
    }

    const fn status(mut self, status: u16) -> Route {
        self.status = status;
        self
    }

    const fn refusals(mut self, refusals: &'static [Kind]) -> Route {
        self.refusals = refusals;
        self
    }

    const fn public(mut self) -> Route {
        self.public = true;
        self
    }

    const fn conditional(mut self) -> Route {
        self.conditional = true;
        self
    }

    /// A creating POST: answers 201 (with the new resource's `Location`) and honours
    /// `Idempotency-Key`.
    const fn creates(mut self) -> Route {
        self.status = 201;
        self.idempotent = true;
        self
    }

    /// True when the route makes a resource (its answer carries the `Location`).
    pub fn makes(&self) -> bool {
        matches!(self.status, 201 | 202)
    }

    /// True when the route's answer is a representation of a resource with ETags (the schema a
    /// conditional GET answers), made or changed by it or read, and carries its `ETag`.
    pub fn tagged(&self) -> bool {
        let Content::Json(schema) = self.content else {
            return false;
        };
        let read_with_etag = |route: &Route| {
            route.conditional && route.verb == Verb::Get && route.content == Content::Json(schema)
        };
        (self.conditional || self.makes()) && ROUTES.iter().any(read_with_etag)
    }

    /// True when the route pages its list with cursors (its answer may carry a `Link`).
    pub fn pages(&self) -> bool {
        self.query.iter().any(|param| param.name == "cursor")
    }

    /// Every problem this route may answer: the auth problems of a guarded route, 404 for an
    /// unknown id in the path, 400 for a bad query, body or condition header, the body
    /// problems, 412 for a write's `If-Match` that does not hold, 422 for an `Idempotency-Key`
    /// used with another request, its refusals.
    pub fn problems(&self) -> Vec<Kind> {
        let mut kinds = Vec::new();
        if !self.public {
            kinds.push(Kind::Unauthorized);
            if self.verb != Verb::Get {
                kinds.push(Kind::Forbidden);
            }
        }
        if self.path.contains('{') {
            kinds.push(Kind::NotFound);
        }
        let headers = self.conditional || self.idempotent;
        if headers || !self.query.is_empty() || self.payload != Payload::None {
            kinds.push(Kind::BadRequest);
        }
        if self.conditional && self.verb != Verb::Get {
            kinds.push(Kind::PreconditionFailed);
        }
        match self.payload {
            Payload::Json(_) | Payload::Batch(_) => {
                kinds.extend([Kind::TooLarge, Kind::UnsupportedMediaType, Kind::Invalid])
            }
            Payload::Binary => kinds.push(Kind::TooLarge),
            Payload::None => {}
        }
        kinds.extend(self.refusals);
        if self.idempotent {
            kinds.push(Kind::KeyReused);
        }
        if !self.public {
            kinds.push(Kind::Internal);
        }
        kinds.sort_by_key(|kind| kind.status());
        kinds.dedup_by_key(|kind| kind.status());
        kinds
    }

    /// The handler, with the body limit of its payload, the schema its JSON body is checked
    /// against ([`JsonBody`](super::extract::JsonBody) checks it), and the keeping of its
    /// answers per `Idempotency-Key` when it creates.
    fn method_router(&self, config: &ApiConfig, state: &ApiState) -> MethodRouter<ApiState> {
        let limit = match self.payload {
            Payload::Binary | Payload::Batch(_) => config.max_upload_bytes,
            Payload::Json(_) | Payload::None => config.max_json_bytes,
        };
        let mut handler = (self.handler)(self.verb.filter()).layer(DefaultBodyLimit::max(limit));
        if let Payload::Json(name) = self.payload {
            let schema = BodySchema::of(&state.openapi, name);
            handler = handler.layer(Extension(Arc::new(schema)));
        }
        if !self.idempotent {
            return handler;
        }
        let kept = (state.idempotency.clone(), limit);
        handler.layer(from_fn_with_state(kept, idempotency::honour))
    }
}

/// Longest version string, in bytes (a version is one length byte in the signed container).
const VERSION: Accepts = Accepts::Name {
    max_bytes: Some(MAX_VERSION_BYTES as u64),
};
/// A vendor, model or name.
const NAME: Accepts = Accepts::Name {
    max_bytes: Some(MAX_NAME_BYTES as u64),
};

/// `limit`, `offset`, `cursor` and `sort` of a list sorted in one of `sorts` (each also
/// descending, `-` before it; the first ascending is the default).
const fn paging(sorts: &'static [&'static str]) -> [Param; 4] {
    [
        param(
            "limit",
            Accepts::Integer {
                min: 1,
                max: MAX_LIMIT as u64,
            },
            "Items on the page, 1 to 1000 (default 100).",
        ),
        param(
            "offset",
            Accepts::Integer {
                min: 0,
                max: usize::MAX as u64,
            },
            "Items skipped before the page (default 0); not with a cursor. Prefer cursors: an \
             offset shifts when items come and go.",
        ),
        param(
            "cursor",
            Accepts::Text,
            "Start after the item this names: the next_cursor of the page before (opaque; it \
             keeps the sort order). Following cursors walks the list with no item twice and \
             none missed while items are added.",
        ),
        param(
            "sort",
            Accepts::OneOf(sorts),
            "The order: a field ascending, or descending with - before it (the first listed \
             is the default).",
        ),
    ]
}

const BY_ENDPOINT: [&str; 2] = ["endpoint", "-endpoint"];
/// Paging of a list of devices or credentials, by endpoint name.
const ENDPOINT_PAGING: [Param; 4] = paging(&BY_ENDPOINT);
/// Paging of tasks, by creation time (ties by id).
const TASK_PAGING: [Param; 4] = paging(&["created_at", "-created_at"]);
/// Paging of dead letters, by event id.
const EVENT_PAGING: [Param; 4] = paging(&["id", "-id"]);

const fn param(name: &'static str, accepts: Accepts, description: &'static str) -> Param {
    Param {
        name,
        accepts,
        required: false,
        description,
    }
}

const fn required(name: &'static str, accepts: Accepts, description: &'static str) -> Param {
    Param {
        name,
        accepts,
        required: true,
        description,
    }
}

const DEVICE_QUERY: [Param; 11] = [
    param(
        "vendor",
        Accepts::Text,
        "Only devices of this manufacturer (/3/0/0).",
    ),
    param(
        "model",
        Accepts::Text,
        "Only devices of this module model (/3/0/1).",
    ),
    param(
        "online",
        Accepts::Boolean,
        "Only devices registered now (true) or not (false).",
    ),
    param(
        "version",
        Accepts::Text,
        "Only devices on this firmware version (/3/0/3).",
    ),
    param(
        "cell",
        Accepts::Integer {
            min: 0,
            max: u32::MAX as u64,
        },
        "Only devices last surveyed in this radio cell (/4/0/8).",
    ),
    param(
        "group",
        Accepts::Text,
        "Only devices of this group (its id).",
    ),
    param(
        "test",
        Accepts::Boolean,
        "With group: only its test devices (true) or only its other devices (false).",
    ),
    ENDPOINT_PAGING[0],
    ENDPOINT_PAGING[1],
    ENDPOINT_PAGING[2],
    ENDPOINT_PAGING[3],
];

const FIRMWARE_QUERY: [Param; 4] = [
    required("vendor", NAME, "Manufacturer (/3/0/0)."),
    required("model", NAME, "Module model (/3/0/1)."),
    required(
        "version",
        VERSION,
        "Version, unique per model (1 to 255 bytes).",
    ),
    param(
        "reported_version",
        VERSION,
        "The /3/0/3 string devices report on it, when not the version (1 to 255 bytes).",
    ),
];

const UPLOAD_QUERY: [Param; 6] = [
    required("vendor", NAME, "Manufacturer (/3/0/0)."),
    required("model", NAME, "Module model (/3/0/1)."),
    required(
        "kind",
        Accepts::OneOf(PACKAGE_KINDS),
        "full, or delta (which needs from_version).",
    ),
    param(
        "from_version",
        VERSION,
        "A delta's base version (1 to 255 bytes); a full package has none.",
    ),
    required(
        "to_version",
        VERSION,
        "The version devices run afterwards (1 to 255 bytes).",
    ),
    param(
        "reported_version",
        VERSION,
        "The /3/0/3 string devices report on it, when not to_version and no firmware of that \
         version is in the catalog (1 to 255 bytes).",
    ),
];

const PLUGIN_QUERY: [Param; 5] = [
    required(
        "kind",
        Accepts::OneOf(PLUGIN_KINDS),
        "policy, capability, differ or packager.",
    ),
    required(
        "name",
        NAME,
        "A name for logs and errors (not starting with builtin/, the embedded plugins').",
    ),
    param(
        "vendor",
        Accepts::Text,
        "Manufacturer of the devices it serves (with model; neither = the default of its kind).",
    ),
    param(
        "model",
        Accepts::Text,
        "Module model of the devices it serves (with vendor).",
    ),
    param(
        "setting",
        Accepts::Settings,
        "A setting given to the plugin, as key=value; repeat for more.",
    ),
];

/// The waiting of a synchronous device operation.
const TIMEOUT: Param = param(
    "timeout",
    Accepts::Integer {
        min: 0,
        max: MAX_TIMEOUT_SECS,
    },
    "Seconds to wait for the device to wake up (queue mode) or register, 0 to 600 (default \
     30); 504 after.",
);

const DATA_QUERY: [Param; 2] = [
    required(
        "path",
        Accepts::LwM2mPath,
        "The LwM2M path: /object, /object/instance, /object/instance/resource or \
         /object/instance/resource/instance.",
    ),
    TIMEOUT,
];

const EXECUTE_QUERY: [Param; 3] = [
    DATA_QUERY[0],
    TIMEOUT,
    param(
        "arguments",
        Accepts::Text,
        "Execute's arguments, as LwM2M writes them (0='a',1).",
    ),
];

/// What the device may answer to an operation beyond success.
const DEVICE_ANSWERS: [Kind; 3] = [DeviceRefused, DeviceFailed, DeviceUnreachable];
const DEVICE_CHANGES: [Kind; 5] = [
    Conflict,
    Invalid,
    DeviceRefused,
    DeviceFailed,
    DeviceUnreachable,
];

use Content::{Binary, EventStream, Json, JsonList, Prometheus};
use Kind::{Conflict, DeviceFailed, DeviceRefused, DeviceUnreachable, Invalid};
use Verb::{Delete, Get, Patch, Post, Put};

/// Every route of the API.
pub static ROUTES: &[Route] = &[
    Route::new(
        Get,
        "/healthz",
        "Answers while the API serves; needs no token.",
        Json("Health"),
        |m| on(m, health::healthz),
    )
    .public(),
    Route::new(
        Get,
        "/metrics",
        "Gauges and counters in the Prometheus text format.",
        Prometheus,
        |m| on(m, metrics::metrics),
    ),
    Route::new(
        Get,
        "/v1/openapi.json",
        "This document.",
        Json("OpenApi"),
        |m| on(m, openapi::serve),
    ),
    Route::new(
        Get,
        "/v1/session",
        "The role of the request's token: operator (everything) or viewer (reads only).",
        Json("Session"),
        |m| on(m, session::session),
    ),
    Route::new(
        Get,
        "/v1/events",
        "The engine's events as server-sent events (`task`, `device`, `device_failed`, \
         `failure_rate_alarm`, `cell_paused`, `registration`, `lagged`), numbered; resumes \
         after a Last-Event-ID, also across a restart of the engine.",
        EventStream,
        |m| on(m, events::stream),
    ),
    Route::new(
        Get,
        "/v1/devices",
        "Devices, filtered and paged.",
        Json("DevicePage"),
        |m| on(m, devices::list),
    )
    .query(&DEVICE_QUERY),
    Route::new(
        Get,
        "/v1/devices/{endpoint}",
        "A device, its live registration and its progress in every task it is in.",
        Json("DeviceDetail"),
        |m| on(m, devices::one),
    ),
    Route::new(
        Delete,
        "/v1/devices/{endpoint}",
        "Forgets a device no unfinished task holds and takes it out of its groups; a live \
         registration is ended (a device still running registers again, as new).",
        Content::None,
        |m| on(m, devices::delete),
    )
    .status(204)
    .refusals(&[Conflict]),
    Route::new(
        Get,
        "/v1/devices/{endpoint}/objects",
        "A registered device's objects and their instances, from its registration.",
        Json("DeviceObjects"),
        |m| on(m, device_ops::objects),
    ),
    Route::new(
        Get,
        "/v1/devices/{endpoint}/data",
        "Reads an object, instance or resource of a device (waiting for a sleeping device \
         up to the timeout); typed values, opaque as base64.",
        Json("DeviceData"),
        |m| on(m, device_ops::read),
    )
    .query(&DATA_QUERY)
    .refusals(&DEVICE_ANSWERS),
    Route::new(
        Put,
        "/v1/devices/{endpoint}/data",
        "Writes a resource (replaced) or an instance (the resources given replaced); 409 for \
         object 5 of a device being upgraded.",
        Content::None,
        |m| on(m, device_ops::write),
    )
    .query(&DATA_QUERY)
    .payload(Payload::Json("NewDeviceData"))
    .status(204)
    .refusals(&DEVICE_CHANGES),
    Route::new(
        Post,
        "/v1/devices/{endpoint}/execute",
        "Executes a resource; 409 for object 5 of a device being upgraded.",
        Content::None,
        |m| on(m, device_ops::execute),
    )
    .query(&EXECUTE_QUERY)
    .status(204)
    .refusals(&DEVICE_CHANGES),
    Route::new(
        Get,
        "/v1/devices/{endpoint}/observe",
        "Observes a path: its value now (within the timeout), then every change, as \
         server-sent events (`notification`, and `error` before the end); cancelled when the \
         last client goes.",
        EventStream,
        |m| on(m, device_ops::observe),
    )
    .query(&DATA_QUERY)
    .refusals(&DEVICE_ANSWERS),
    Route::new(
        Post,
        "/v1/devices/{endpoint}/operations",
        "Queues a read, write or execute for the device's next wake-up (kept across \
         restarts); 202 with the operation's Location.",
        Json("QueuedOperation"),
        |m| on(m, device_ops::enqueue),
    )
    .payload(Payload::Json("NewOperation"))
    .creates()
    .status(202)
    .refusals(&[Conflict, Invalid]),
    Route::new(
        Get,
        "/v1/devices/{endpoint}/operations",
        "A device's queued operations, oldest first: pending, and the last finished.",
        JsonList("QueuedOperation"),
        |m| on(m, device_ops::list),
    ),
    Route::new(
        Get,
        "/v1/devices/{endpoint}/operations/{id}",
        "A queued operation: its status, and its result or error.",
        Json("QueuedOperation"),
        |m| on(m, device_ops::one),
    )
    .conditional(),
    Route::new(
        Delete,
        "/v1/devices/{endpoint}/operations/{id}",
        "Cancels a pending operation, or forgets a finished one.",
        Content::None,
        |m| on(m, device_ops::remove),
    )
    .status(204),
    Route::new(
        Put,
        "/v1/devices/{endpoint}/credentials",
        "Sets or replaces a device's DTLS pre-shared key credential (it need not have \
         registered yet); 409 when another device has the identity. The key is never answered.",
        Json("Credential"),
        |m| on(m, credentials::set),
    )
    .payload(Payload::Json("NewCredential"))
    .refusals(&[Conflict])
    .conditional(),
    Route::new(
        Get,
        "/v1/devices/{endpoint}/credentials",
        "A device's credential: its PSK identity, without the key.",
        Json("Credential"),
        |m| on(m, credentials::one),
    )
    .conditional(),
    Route::new(
        Delete,
        "/v1/devices/{endpoint}/credentials",
        "Removes a device's credential: its identity no longer completes a handshake.",
        Content::None,
        |m| on(m, credentials::remove),
    )
    .status(204)
    .conditional(),
    Route::new(
        Get,
        "/v1/credentials",
        "Every device's credential without its key, in endpoint order, paged.",
        Json("CredentialPage"),
        |m| on(m, credentials::list),
    )
    .query(&ENDPOINT_PAGING),
    Route::new(
        Post,
        "/v1/credentials/import",
        "Sets a batch of credentials (a factory batch), all or none, as a JSON array or as \
         CSV with the header endpoint,identity,key_hex; a refusal names the first bad row \
         (`line N` of the CSV, `[N]` of the array).",
        Json("Imported"),
        |m| on(m, credentials::import),
    )
    .payload(Payload::Batch("CredentialRow"))
    .refusals(&[Conflict]),
    Route::new(
        Get,
        "/v1/models",
        "The vendors and module models known (from devices and firmware): what a group is \
         made for.",
        JsonList("KnownModel"),
        |m| on(m, models::list),
    ),
    Route::new(
        Post,
        "/v1/groups",
        "Creates a group; its vendor and model are locked.",
        Json("Group"),
        |m| on(m, groups::create),
    )
    .payload(Payload::Json("NewGroup"))
    .creates(),
    Route::new(
        Get,
        "/v1/groups",
        "Every group, with its number of devices (GET /v1/devices?group= pages them).",
        JsonList("Group"),
        |m| on(m, groups::list),
    ),
    Route::new(Get, "/v1/groups/{id}", "A group.", Json("Group"), |m| {
        on(m, groups::one)
    })
    .conditional(),
    Route::new(
        Patch,
        "/v1/groups/{id}",
        "Renames a group, or sets whether devices join it by themselves.",
        Json("Group"),
        |m| on(m, groups::change),
    )
    .payload(Payload::Json("GroupChange"))
    .conditional(),
    Route::new(
        Delete,
        "/v1/groups/{id}",
        "Deletes a group no unfinished task uses.",
        Content::None,
        |m| on(m, groups::delete),
    )
    .status(204)
    .refusals(&[Conflict])
    .conditional(),
    Route::new(
        Post,
        "/v1/groups/{id}/devices",
        "Adds devices of the group's vendor and model.",
        Json("Group"),
        |m| on(m, groups::add_devices),
    )
    .payload(Payload::Json("Members"))
    .conditional(),
    Route::new(
        Delete,
        "/v1/groups/{id}/devices",
        "Removes devices from a group.",
        Json("Group"),
        |m| on(m, groups::remove_devices),
    )
    .payload(Payload::Json("Members"))
    .conditional(),
    Route::new(
        Post,
        "/v1/groups/{id}/test-devices",
        "Marks devices of the group as test devices; 422 naming one that is not in the group.",
        Json("Group"),
        |m| on(m, groups::mark_test_devices),
    )
    .payload(Payload::Json("Members"))
    .conditional(),
    Route::new(
        Delete,
        "/v1/groups/{id}/test-devices",
        "Unmarks test devices of the group (they stay in it).",
        Json("Group"),
        |m| on(m, groups::unmark_test_devices),
    )
    .payload(Payload::Json("Members"))
    .conditional(),
    Route::new(
        Post,
        "/v1/firmware",
        "Uploads a firmware image (the body); 409 when the model has that version.",
        Json("Firmware"),
        |m| on(m, firmware::upload),
    )
    .query(&FIRMWARE_QUERY)
    .payload(Payload::Binary)
    .creates()
    .refusals(&[Invalid, Conflict]),
    Route::new(
        Get,
        "/v1/firmware",
        "Every firmware version.",
        JsonList("Firmware"),
        |m| on(m, firmware::list),
    ),
    Route::new(
        Get,
        "/v1/firmware/{id}",
        "A firmware version.",
        Json("Firmware"),
        |m| on(m, firmware::one),
    )
    .conditional(),
    Route::new(
        Patch,
        "/v1/firmware/{id}",
        "Sets the /3/0/3 string that confirms an upgrade to this firmware.",
        Json("Firmware"),
        |m| on(m, firmware::set_reported),
    )
    .payload(Payload::Json("ReportedVersion"))
    .refusals(&[Invalid])
    .conditional(),
    Route::new(
        Delete,
        "/v1/firmware/{id}",
        "Deletes a firmware version no package is made from.",
        Content::None,
        |m| on(m, firmware::delete),
    )
    .status(204)
    .refusals(&[Conflict])
    .conditional(),
    Route::new(
        Post,
        "/v1/packages",
        "Makes a full or a delta package.",
        Json("Package"),
        |m| on(m, packages::create),
    )
    .payload(Payload::Json("NewPackage"))
    .creates(),
    Route::new(
        Post,
        "/v1/packages/upload",
        "Keeps a package a module maker made (the body), sent to devices as is; a delta is \
         checked with the model's differ where it can read it.",
        Json("Package"),
        |m| on(m, packages::upload),
    )
    .query(&UPLOAD_QUERY)
    .payload(Payload::Binary)
    .creates()
    .refusals(&[Invalid]),
    Route::new(
        Get,
        "/v1/formats",
        "The package format bound to each model (a model not listed gets raw).",
        JsonList("ModelFormat"),
        |m| on(m, formats::list),
    ),
    Route::new(
        Put,
        "/v1/formats/{vendor}/{model}",
        "Binds the format the model's packages are made in: raw, signed or packager.",
        Json("ModelFormat"),
        |m| on(m, formats::set),
    )
    .payload(Payload::Json("NewFormat")),
    Route::new(
        Delete,
        "/v1/formats/{vendor}/{model}",
        "Unbinds a model's format: its packages are made raw again.",
        Content::None,
        |m| on(m, formats::unbind),
    )
    .status(204),
    Route::new(
        Get,
        "/v1/packages",
        "Every package.",
        JsonList("Package"),
        |m| on(m, packages::list),
    ),
    Route::new(
        Get,
        "/v1/packages/{id}",
        "A package.",
        Json("Package"),
        |m| on(m, packages::one),
    )
    .conditional(),
    Route::new(
        Get,
        "/v1/packages/{id}/download",
        "The bytes devices receive; the ETag is their sha256.",
        Binary,
        |m| on(m, packages::download),
    ),
    Route::new(
        Delete,
        "/v1/packages/{id}",
        "Deletes a package no unfinished task uses.",
        Content::None,
        |m| on(m, packages::delete),
    )
    .status(204)
    .refusals(&[Conflict])
    .conditional(),
    Route::new(
        Post,
        "/v1/tasks",
        "Creates an upgrade task; it starts at its execution time (now when unset).",
        Json("Task"),
        |m| on(m, tasks::create),
    )
    .payload(Payload::Json("TaskSpec"))
    .creates(),
    Route::new(
        Get,
        "/v1/tasks",
        "Every task, sorted and paged.",
        Json("TaskPage"),
        |m| on(m, tasks::list),
    )
    .query(&TASK_PAGING),
    Route::new(Get, "/v1/tasks/{id}", "A task.", Json("Task"), |m| {
        on(m, tasks::one)
    })
    .conditional(),
    Route::new(
        Patch,
        "/v1/tasks/{id}",
        "Replaces the spec of a task that has not started.",
        Json("Task"),
        |m| on(m, tasks::edit),
    )
    .payload(Payload::Json("TaskSpec"))
    .refusals(&[Conflict])
    .conditional(),
    Route::new(
        Post,
        "/v1/tasks/{id}/start",
        "Starts a not-started task whose execution time is unset or past.",
        Json("Task"),
        |m| on(m, tasks::start),
    )
    .refusals(&[Conflict])
    .conditional(),
    Route::new(
        Post,
        "/v1/tasks/{id}/pause",
        "Pauses an upgrading task: downloads finish, nothing is installed.",
        Json("Task"),
        |m| on(m, tasks::pause),
    )
    .refusals(&[Conflict])
    .conditional(),
    Route::new(
        Post,
        "/v1/tasks/{id}/resume",
        "Resumes a paused task.",
        Json("Task"),
        |m| on(m, tasks::resume),
    )
    .refusals(&[Conflict])
    .conditional(),
    Route::new(
        Post,
        "/v1/tasks/{id}/approve",
        "Opens the next stage of a task that waits for an operator's approval \
         (awaiting_approval says why); 409 when none waits.",
        Json("Task"),
        |m| on(m, tasks::approve),
    )
    .refusals(&[Conflict])
    .conditional(),
    Route::new(
        Post,
        "/v1/tasks/{id}/cancel",
        "Cancels an upgrading or paused task, for good.",
        Json("Task"),
        |m| on(m, tasks::cancel),
    )
    .refusals(&[Conflict])
    .conditional(),
    Route::new(
        Delete,
        "/v1/tasks/{id}",
        "Deletes a task that is not upgrading or paused.",
        Content::None,
        |m| on(m, tasks::delete),
    )
    .status(204)
    .refusals(&[Conflict])
    .conditional(),
    Route::new(
        Get,
        "/v1/tasks/{id}/summary",
        "A task's devices counted: per phase, download and upgrade status, result, the \
         busiest cells, and upgrades and failures over time.",
        Json("TaskSummary"),
        |m| on(m, task_summary::summary),
    ),
    Route::new(
        Get,
        "/v1/tasks/{id}/devices",
        "A task's devices: name, IMEI, retry X/XX, online, download and upgrade status, result.",
        Json("TaskDevicePage"),
        |m| on(m, tasks::devices),
    )
    .query(&ENDPOINT_PAGING),
    Route::new(
        Post,
        "/v1/webhooks",
        "Subscribes a URL to kinds of events: each is POSTed to it, signed with the secret \
         (never answered again), retried until the receiver answers 2xx.",
        Json("Webhook"),
        |m| on(m, webhooks::create),
    )
    .payload(Payload::Json("NewWebhook"))
    .creates(),
    Route::new(
        Get,
        "/v1/webhooks",
        "Every webhook subscription, with how its deliveries stand.",
        JsonList("Webhook"),
        |m| on(m, webhooks::list),
    ),
    Route::new(
        Get,
        "/v1/webhooks/{id}",
        "A webhook subscription: events pending, dead letters, the last attempts.",
        Json("Webhook"),
        |m| on(m, webhooks::one),
    )
    .conditional(),
    Route::new(
        Patch,
        "/v1/webhooks/{id}",
        "Changes a subscription's URL, kinds or description (its secret stays).",
        Json("Webhook"),
        |m| on(m, webhooks::change),
    )
    .payload(Payload::Json("WebhookChange"))
    .conditional(),
    Route::new(
        Delete,
        "/v1/webhooks/{id}",
        "Unsubscribes: its pending deliveries and dead letters go.",
        Content::None,
        |m| on(m, webhooks::delete),
    )
    .status(204)
    .conditional(),
    Route::new(
        Get,
        "/v1/webhooks/{id}/dead-letters",
        "Events the receiver did not take within the attempts allowed, oldest first, paged.",
        Json("DeadLetterPage"),
        |m| on(m, webhooks::dead_letters),
    )
    .query(&EVENT_PAGING),
    Route::new(
        Post,
        "/v1/webhooks/{id}/redeliver",
        "Puts every dead letter back to be delivered now, in id order, before later events.",
        Json("Redelivered"),
        |m| on(m, webhooks::redeliver),
    )
    .conditional(),
    Route::new(
        Get,
        "/v1/stats",
        "Statistics per package and per vendor and model.",
        Json("Statistics"),
        |m| on(m, statistics::statistics),
    ),
    Route::new(
        Post,
        "/v1/plugins",
        "Uploads a WebAssembly component (the body) and binds it.",
        Json("PluginBinding"),
        |m| on(m, plugins::install),
    )
    .query(&PLUGIN_QUERY)
    .payload(Payload::Binary)
    .creates()
    .refusals(&[Invalid]),
    Route::new(
        Get,
        "/v1/plugins",
        "Every plugin binding, defaults included.",
        JsonList("PluginBinding"),
        |m| on(m, plugins::list),
    ),
    Route::new(
        Get,
        "/v1/plugins/{kind}/{vendor}/{model}",
        "The plugin of a kind bound to a model (404 when the model has none of its own).",
        Json("PluginBinding"),
        |m| on(m, plugins::one_of_model),
    )
    .conditional(),
    Route::new(
        Get,
        "/v1/plugins/{kind}",
        "A kind's default plugin.",
        Json("PluginBinding"),
        |m| on(m, plugins::one_default),
    )
    .conditional(),
    Route::new(
        Patch,
        "/v1/plugins/{kind}/{vendor}/{model}",
        "Replaces the settings of the plugin serving a model (the default's, bound to the \
         model, when it has none of its own).",
        Json("PluginBinding"),
        |m| on(m, plugins::configure_model),
    )
    .payload(Payload::Json("PluginSettings"))
    .refusals(&[Invalid])
    .conditional(),
    Route::new(
        Patch,
        "/v1/plugins/{kind}",
        "Replaces the settings of a kind's default plugin.",
        Json("PluginBinding"),
        |m| on(m, plugins::configure_default),
    )
    .payload(Payload::Json("PluginSettings"))
    .refusals(&[Invalid])
    .conditional(),
    Route::new(
        Delete,
        "/v1/plugins/{kind}/{vendor}/{model}",
        "Unbinds a model's plugin of a kind; its devices get the default.",
        Content::None,
        |m| on(m, plugins::unbind),
    )
    .status(204)
    .conditional(),
    Route::new(
        Delete,
        "/v1/plugins/{kind}",
        "Makes the embedded reference plugin the default of a kind again.",
        Content::None,
        |m| on(m, plugins::reset_default),
    )
    .status(204)
    .conditional(),
];

/// One operation the API serves, as the route table holds it: for clients and tests that walk
/// the whole API.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Its method.
    pub method: Method,
    /// Its path, with `{name}` parameters as in the OpenAPI document.
    pub path: &'static str,
    /// False only for the one route anybody may call (`/healthz`).
    pub needs_token: bool,
}

/// Every operation of [`ROUTES`], in table order.
pub fn operations() -> Vec<Operation> {
    ROUTES
        .iter()
        .map(|route| Operation {
            method: route.verb.method(),
            path: route.path,
            needs_token: !route.public,
        })
        .collect()
}

/// The API's router over `state`: every route of [`ROUTES`], those needing a token behind
/// [`authorize`], the console's files (no token: they hold no data), and problem answers for unknown paths and methods, given only to a request
/// with a valid token (so without one, nothing says which paths exist).
///
/// The token checks run before anything reads the body: `authorize` is a route layer, outside
/// each route's `DefaultBodyLimit` (which only tells the handler's extractor how much it may
/// read), and neither it nor `authenticate` reads the body of a request they refuse.
///
/// Every answer, refusals included, is timed by [`request_times::time`], the outermost layer
/// of each route and fallback (after routing, so it sees the route template matched).
pub(super) fn router(state: ApiState, config: &ApiConfig, counters: Arc<HttpCounters>) -> Router {
    let guard = Arc::new(Guard::new(&config.tokens, counters));
    let add = |router: Router<ApiState>, route: &Route| {
        router.route(route.path, route.method_router(config, &state))
    };
    let open = ROUTES.iter().filter(|r| r.public).fold(Router::new(), add);
    let guarded = ROUTES
        .iter()
        .filter(|r| !r.public)
        .fold(Router::new(), add)
        .route_layer(from_fn_with_state(guard.clone(), authorize));
    let authenticated = || from_fn_with_state(guard.clone(), authenticate);
    open.merge(guarded)
        .merge(console::router())
        .method_not_allowed_fallback(method_not_allowed.layer(authenticated()))
        .fallback(no_such_route.layer(authenticated()))
        .layer(from_fn_with_state(
            state.request_times.clone(),
            request_times::time,
        ))
        .with_state(state)
}
