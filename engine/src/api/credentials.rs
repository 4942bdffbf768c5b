//! Credentials routes: a device's DTLS pre-shared key credential (the PSK identity it sends in
//! its handshake, and the key) set, read, removed and listed, and a factory batch imported
//! whole or not at all, as JSON or as CSV. A credential may be set before its device ever
//! registers. Keys are write-only: sent as hex, never answered, never logged.
//!
//! A batch that breaks a rule is refused at its first bad row, named: `line N` of a CSV file
//! (its header is line 1), `[N]` of a JSON array (counted from 0). Malformed CSV (a header
//! other than `endpoint,identity,key_hex`, a row of another width, bytes that are not UTF-8)
//! is answered 400 as malformed JSON is; a row whose values break a rule 422, and an identity
//! bound to a device outside the batch 409, as for one credential.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::error::Category;
use zeroize::Zeroizing;

use super::ApiState;
use super::extract::{Checked, JsonBody};
use super::paging::{Paging, SortBy, SortKey};
use super::problem::{ApiResult, Kind, Problem};
use super::representation::{self, Conditions, made_if_absent, tagged};
use crate::catalog::credentials::in_row;
use crate::catalog::{CredentialSummary, NewCredential};

/// The header of a CSV batch.
const CSV_HEADER: [&str; 3] = ["endpoint", "identity", "key_hex"];

/// Body of `PUT /v1/devices/{endpoint}/credentials`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPsk {
    /// The PSK identity the device sends.
    identity: String,
    /// The key, as hex.
    key_hex: Zeroizing<String>,
}

/// One row of a batch, from JSON or CSV.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    /// Where the row is, for a refusal: `line N` or `[N]`.
    #[serde(skip)]
    name: String,
    /// The device's endpoint name.
    endpoint: String,
    /// The PSK identity the device sends.
    identity: String,
    /// The key, as hex.
    key_hex: Zeroizing<String>,
}

/// Answer of `POST /v1/credentials/import`.
#[derive(Debug, Serialize)]
pub struct Imported {
    /// Credentials set (each replacing its device's previous one, if any).
    imported: usize,
}

/// The URL of `endpoint`'s credential.
fn location(endpoint: &str) -> String {
    representation::location("/v1/devices", &[endpoint]) + "/credentials"
}

/// `PUT /v1/devices/{endpoint}/credentials`: sets or replaces the device's credential; with
/// an `If-Match`, only the credential it names is replaced (none is set where there is none).
pub async fn set(
    State(state): State<ApiState>,
    Checked(Path(endpoint)): Checked<Path<String>>,
    conditions: Conditions,
    JsonBody(psk): JsonBody<NewPsk>,
) -> ApiResult<Response> {
    let credential = NewCredential::with_hex_key(&endpoint, psk.identity, &psk.key_hex)?;
    let credentials = state.platform.catalog.credentials();
    let current = || made_if_absent(Ok(credentials.summary(&endpoint)?));
    let set = || Ok(credentials.set(credential)?);
    let summary = state
        .change(&location(&endpoint), &conditions, current, set)
        .await?;
    Ok(tagged(&summary))
}

/// `GET /v1/devices/{endpoint}/credentials`: the device's credential, without its key.
pub async fn one(
    State(state): State<ApiState>,
    Checked(Path(endpoint)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<Response> {
    let credentials = state.platform.catalog.credentials();
    Ok(conditions.read(&credentials.summary(&endpoint)?))
}

/// `DELETE /v1/devices/{endpoint}/credentials`: the device can no longer complete a handshake.
pub async fn remove(
    State(state): State<ApiState>,
    Checked(Path(endpoint)): Checked<Path<String>>,
    conditions: Conditions,
) -> ApiResult<StatusCode> {
    let credentials = state.platform.catalog.credentials();
    let current = || Ok(credentials.summary(&endpoint)?);
    let remove = || Ok(credentials.remove(&endpoint)?);
    state
        .change(&location(&endpoint), &conditions, current, remove)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The orders `GET /v1/credentials` sorts in: by endpoint name.
const ORDERS: [SortBy<CredentialSummary>; 1] = [SortBy {
    name: "endpoint",
    key: |credential| SortKey(0, credential.endpoint.clone()),
}];

/// `GET /v1/credentials`: every credential without its key, in endpoint order, paged.
pub async fn list(
    State(state): State<ApiState>,
    Checked(Query(paging)): Checked<Query<Paging>>,
    uri: Uri,
) -> ApiResult<Response> {
    let summaries = state.platform.catalog.credentials().summaries();
    Ok(paging.page(summaries, &ORDERS)?.linked(&uri))
}

/// `POST /v1/credentials/import`: a batch as a JSON array of rows or as CSV, set whole or not
/// at all.
pub async fn import(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Checked(body): Checked<Bytes>,
) -> ApiResult<Json<Imported>> {
    let rows = match media_type(&headers).as_str() {
        "application/json" => json_rows(&body)?,
        "text/csv" => csv_rows(&body)?,
        other => {
            let detail = format!("a batch is application/json or text/csv, not `{other}`");
            return Err(Problem::new(Kind::UnsupportedMediaType, detail));
        }
    };
    let batch = rows
        .iter()
        .map(|row| {
            NewCredential::with_hex_key(&row.endpoint, &row.identity, &row.key_hex)
                .map_err(|error| in_row(&row.name, error))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let credentials = state.platform.catalog.credentials();
    let imported = credentials.import(batch, |row| rows[row].name.clone())?;
    Ok(Json(Imported { imported }))
}

/// The request's media type, lower case, without parameters (`charset`...).
fn media_type(headers: &HeaderMap) -> String {
    let value = headers.get(header::CONTENT_TYPE);
    let value = value.and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = value.split(';').next().unwrap_or("");
    essence.trim().to_ascii_lowercase()
}

/// The rows of a JSON array; its syntax broken is a 400, a row of the wrong shape a 422
/// naming it.
fn json_rows(body: &[u8]) -> Result<Vec<Row>, Problem> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let parsed: Result<Vec<Row>, _> = serde_path_to_error::deserialize(&mut json);
    let mut rows = parsed.map_err(|error| match error.inner().classify() {
        Category::Data => {
            let detail = format!("{}: {}", error.path(), error.inner());
            Problem::new(Kind::Invalid, detail)
        }
        _ => Problem::new(Kind::BadRequest, error.inner().to_string()),
    })?;
    json.end()
        .map_err(|error| Problem::new(Kind::BadRequest, error.to_string()))?;
    for (index, row) in rows.iter_mut().enumerate() {
        row.name = format!("[{index}]");
    }
    Ok(rows)
}

/// The rows of a CSV file whose header is [`CSV_HEADER`] (empty lines skipped, fields may be
/// quoted, a UTF-8 byte order mark ignored); malformed CSV is a 400 naming the line.
fn csv_rows(body: &[u8]) -> Result<Vec<Row>, Problem> {
    let mut reader = csv::ReaderBuilder::new().from_reader(body);
    let header = reader.headers().map_err(malformed)?;
    if header.iter().ne(CSV_HEADER) {
        let detail = format!("line 1: the header must be {}", CSV_HEADER.join(","));
        return Err(Problem::new(Kind::BadRequest, detail));
    }
    reader
        .records()
        .map(|record| {
            let record = record.map_err(malformed)?;
            let line = record.position().map_or(0, csv::Position::line);
            Ok(Row {
                name: format!("line {line}"),
                endpoint: record[0].to_string(),
                identity: record[1].to_string(),
                key_hex: Zeroizing::new(record[2].to_string()),
            })
        })
        .collect()
}

/// A 400 for CSV the reader could not read, naming the line where it can.
fn malformed(error: csv::Error) -> Problem {
    let detail = match error.kind() {
        csv::ErrorKind::UnequalLengths { pos, len, .. } => format!(
            "line {}: {len} fields, where a row has 3 ({})",
            pos.as_ref().map_or(0, csv::Position::line),
            CSV_HEADER.join(",")
        ),
        csv::ErrorKind::Utf8 { pos, .. } => format!(
            "line {}: not UTF-8",
            pos.as_ref().map_or(0, csv::Position::line)
        ),
        _ => format!("not CSV: {error}"),
    };
    Problem::new(Kind::BadRequest, detail)
}
