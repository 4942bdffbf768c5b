//! `Checked<X>`: any of axum's extractors (`Json`, `Query`, `Path`, `Bytes`) whose rejection
//! is answered as a problem (400, 413, 415 or 422 with axum's explanation) instead of axum's
//! plain text; `JsonBody<T>`: a JSON body checked against its route's schema and read as JSON
//! Schema reads numbers. Body size limits and schemas are set per route by the router; this
//! only applies them.

use std::sync::Arc;

use axum::Json;
use axum::body::to_bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::body_schema::BodySchema;
use super::problem::{Kind, Problem};

/// Longest explanation of a rejection kept in a problem's detail.
const EXPLANATION_BYTES: usize = 4096;

/// The extractor `X`, with its rejections as problems.
pub struct Checked<X>(pub X);

impl<S, X> FromRequest<S> for Checked<X>
where
    S: Send + Sync,
    X: FromRequest<S>,
    X::Rejection: IntoResponse,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let rejected = match X::from_request(request, state).await {
            Ok(value) => return Ok(Checked(value)),
            Err(rejection) => rejection.into_response(),
        };
        Err(as_problem(rejected).await)
    }
}

impl<S, X> FromRequestParts<S> for Checked<X>
where
    S: Send + Sync,
    X: FromRequestParts<S>,
    X::Rejection: IntoResponse,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let rejected = match X::from_request_parts(parts, state).await {
            Ok(value) => return Ok(Checked(value)),
            Err(rejection) => rejection.into_response(),
        };
        Err(as_problem(rejected).await)
    }
}

/// The problem a rejection's response stands for: its status, and its text as the detail.
async fn as_problem(response: Response) -> Problem {
    let status = response.status();
    let text = to_bytes(response.into_body(), EXPLANATION_BYTES)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    Problem::rejected(status, text)
}

/// A JSON body of type `T`, read as `Json` reads it (media type, size limit, syntax: 415, 413,
/// 400), checked against the schema the route gives it (a [`BodySchema`] among the request's
/// extensions; 422 when it breaks it), with every integral number written as a float (`11.0`)
/// taken as the integer it is before `T` is read from it (422 when it is not a `T`). JSON
/// Schema, and so the OpenAPI document, counts `11.0` as an integer; serde does not.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let schema = request.extensions().get::<Arc<BodySchema>>().cloned();
        let Checked(Json(mut value)) = Checked::<Json<Value>>::from_request(request, state).await?;
        if let Some(schema) = schema {
            schema.check(&value)?;
        }
        integral_floats_as_integers(&mut value);
        serde_path_to_error::deserialize(value)
            .map(JsonBody)
            .map_err(|error| {
                Problem::new(
                    Kind::Invalid,
                    format!("Failed to deserialize the JSON body into the target type: {error}"),
                )
            })
    }
}

/// Replaces every float in `value` that has no fractional part and fits an `i64` or a `u64`
/// with that integer.
fn integral_floats_as_integers(value: &mut Value) {
    match value {
        Value::Number(number) if number.is_f64() => {
            let Some(float) = number.as_f64().filter(|f| f.fract() == 0.0) else {
                return;
            };
            // 2^63 and 2^64: the first floats past i64 and u64.
            let integer = if (-9_223_372_036_854_775_808.0..0.0).contains(&float) {
                Some(Value::from(float as i64))
            } else if (0.0..18_446_744_073_709_551_616.0).contains(&float) {
                Some(Value::from(float as u64))
            } else {
                None
            };
            if let Some(integer) = integer {
                *value = integer;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn integral_floats_become_integers_and_nothing_else_changes() {
        let mut value = json!({
            "a": 11.0, "b": -3.0, "c": 0.5, "d": [2.0, 1e300, "4.0"], "e": 7, "f": -0.0,
            "g": 18446744073709551615.0, "h": 1.8e19,
        });
        integral_floats_as_integers(&mut value);
        assert_eq!(value["a"], json!(11));
        assert!(value["a"].is_u64());
        assert_eq!(value["b"], json!(-3));
        assert_eq!(value["c"], json!(0.5));
        assert_eq!(value["d"], json!([2, 1e300, "4.0"]));
        assert_eq!(value["e"], json!(7));
        assert!(value["f"].is_u64());
        // 18446744073709551615.0 is the float 2^64: past u64, left as it is.
        assert!(value["g"].is_f64());
        assert_eq!(value["h"], json!(18_000_000_000_000_000_000u64));
    }
}
