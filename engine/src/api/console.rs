//! The web console's files: the HTML, CSS and JavaScript modules under `engine/console/`,
//! embedded in the binary and served at `/` (the page) and `/console/{file}` on the API's port,
//! without a token (they hold no data: everything the console shows it reads from `/v1` with
//! the token the person typed, sent as `Authorization: Bearer`, never in a URL).
//!
//! Every answer carries its content type, an `ETag` (a hash of the file, so a new build's
//! files are fetched again and an unchanged one is answered 304 to `If-None-Match`),
//! `Cache-Control: no-cache` (the browser keeps a file and asks whether it changed), and a
//! strict Content-Security-Policy: scripts and styles only from this origin (no inline
//! script, no `eval`), requests only to this origin, no frames, no forms posted elsewhere.
//! Owns the files and their headers; the console's data comes from the API routes.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// The policy every console answer carries: nothing but this origin's files and API.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// Its name under `/console/`.
    name: &'static str,
    /// Its bytes.
    bytes: &'static [u8],
}

/// Embeds `engine/console/<name>`.
macro_rules! asset {
    ($name:literal) => {
        Asset {
            name: $name,
            bytes: include_bytes!(concat!("../../console/", $name)),
        }
    };
}

/// Every file of the console.
static ASSETS: &[Asset] = &[
    asset!("index.html"),
    asset!("style.css"),
    asset!("app.js"),
    asset!("api.js"),
    asset!("ui.js"),
    asset!("charts.js"),
    asset!("devices.js"),
    asset!("groups.js"),
    asset!("firmware.js"),
    asset!("tasks.js"),
    asset!("stats.js"),
    asset!("plugins.js"),
    asset!("favicon.svg"),
];

/// The page every path of the console starts from.
const INDEX: &str = "index.html";

/// The content type of a file, from its extension.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The strong ETag of each asset, in [`ASSETS`] order, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| format!("\"{}\"", hex::encode(&Sha256::digest(asset.bytes)[..16])))
            .collect()
    })
}

/// The routes of the console: `/` and `/console/{file}`, for GET (and HEAD).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve(INDEX, &headers) }))
        .route(
            "/console/{file}",
            get(|Path(file): Path<String>, headers: HeaderMap| async move {
                serve(&file, &headers)
            }),
        )
}

/// The answer to a GET of the file `name`: the file, 304 when `If-None-Match` names its
/// ETag, 404 when the console has no such file.
fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|asset| asset.name == name) else {
        let mut response = (StatusCode::NOT_FOUND, "the console has no such file").into_response();
        secure(response.headers_mut());
        return response;
    };
    let etag = &etags()[index];
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let asset = &ASSETS[index];
        let mut response = asset.bytes.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(asset.name)),
        );
        response
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(headers);
    response
}

/// The headers that keep the console to its own origin's files and API.
fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// True when `html` has an attribute such as ` onclick=`.
    fn has_inline_handler(html: &str) -> bool {
        html.match_indices(" on").any(|(at, _)| {
            let rest = &html[at + 3..];
            let name_end = rest
                .find(|c: char| !c.is_ascii_lowercase())
                .unwrap_or(rest.len());
            name_end > 0 && rest[name_end..].starts_with('=')
        })
    }

    #[test]
    fn every_file_of_the_console_directory_is_served_and_nothing_else() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        let mut served: Vec<String> = ASSETS.iter().map(|a| a.name.to_string()).collect();
        on_disk.sort();
        served.sort();
        assert_eq!(on_disk, served, "engine/console/ and ASSETS differ");
    }

    #[test]
    fn types_tags_and_the_not_modified_answer() {
        let page = serve("index.html", &HeaderMap::new());
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let etag = page.headers()[header::ETAG].clone();
        assert_eq!(etag.len(), 34, "a quoted 128-bit hash");
        let mut asked = HeaderMap::new();
        asked.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(
            serve("index.html", &asked).status(),
            StatusCode::NOT_MODIFIED
        );
        let script = serve("app.js", &HeaderMap::new());
        assert_eq!(
            script.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_ne!(script.headers()[header::ETAG], page.headers()[header::ETAG]);
        let missing = serve("../Cargo.toml", &HeaderMap::new());
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert!(
            missing
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY)
        );
    }

    #[test]
    fn no_console_file_runs_inline_script() {
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".html")) {
            let html = std::str::from_utf8(asset.bytes).unwrap();
            for tag in html.split("<script").skip(1) {
                let head = &tag[..tag.find('>').unwrap()];
                assert!(head.contains("src="), "inline script in {}", asset.name);
            }
            assert!(
                !has_inline_handler(html),
                "an inline handler in {}",
                asset.name
            );
        }
    }
}
