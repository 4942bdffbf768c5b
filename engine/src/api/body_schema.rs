//! The JSON bodies clients send, checked against the schemas the OpenAPI document gives them.
//! Owns the compiled validator of each route's body and the problem a body that breaks it is
//! answered with.
//!
//! The document promises that a request it forbids is refused. Serde alone does not keep that
//! promise everywhere: a struct is also read from a JSON array (`[null]` is a body whose every
//! field is absent), and a field may take what its schema does not say. So every JSON body is
//! checked against its schema (JSON Schema 2020-12, OpenAPI 3.1's dialect) before its handler
//! reads it, and the handler's own rules (those no schema can state) come after.

use jsonschema::{Draft, Validator};
use serde_json::Value;

use super::openapi;
use super::problem::{Kind, Problem};

/// Errors of a body quoted in its problem's detail, at most.
const ERRORS_QUOTED: usize = 3;

/// The schema of one route's JSON body, compiled.
pub struct BodySchema {
    /// Its name among the document's component schemas.
    name: &'static str,
    /// Its validator, which resolves the references to the document's other schemas.
    validator: Validator,
}

impl BodySchema {
    /// The schema `name` of the OpenAPI `document`'s components, compiled. Panics when the
    /// document has no such schema or it is not valid JSON Schema: the document is the
    /// engine's own, built at start, so either is a defect the route table's tests catch.
    pub fn of(document: &Value, name: &'static str) -> BodySchema {
        let components = &document["components"];
        assert!(
            components["schemas"].get(name).is_some(),
            "the document has no schema {name}"
        );
        let mut schema = openapi::reference(name);
        schema["components"] = components.clone();
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .build(&schema)
            .unwrap_or_else(|error| panic!("the document's schema {name} compiles: {error}"));
        BodySchema { name, validator }
    }

    /// Whether `body` is what the schema allows; else the problem (422) that says where it is
    /// not.
    pub fn check(&self, body: &Value) -> Result<(), Problem> {
        let errors: Vec<String> = self
            .validator
            .iter_errors(body)
            .take(ERRORS_QUOTED)
            .map(|error| match error.instance_path().to_string() {
                path if path.is_empty() => error.to_string(),
                path => format!("at {path}: {error}"),
            })
            .collect();
        if errors.is_empty() {
            return Ok(());
        }
        let name = self.name;
        Err(Problem::new(
            Kind::Invalid,
            format!("the body is not a {name}: {}", errors.join("; ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(name: &'static str) -> BodySchema {
        BodySchema::of(&openapi::document(), name)
    }

    #[test]
    fn an_array_is_not_an_object_whose_fields_are_all_absent() {
        let reported = schema("ReportedVersion");
        assert!(reported.check(&json!({})).is_ok());
        assert!(reported.check(&json!({ "reported_version": null })).is_ok());
        let problem = reported.check(&json!([null])).unwrap_err();
        assert_eq!(problem.kind, Kind::Invalid);
        assert!(problem.detail.contains("ReportedVersion"), "{problem:?}");
    }

    #[test]
    fn a_nested_body_is_checked_through_its_references_and_says_where_it_breaks() {
        let operation = schema("NewOperation");
        let read = json!({ "kind": "read", "path": "/3/0/1", "content": null });
        assert!(operation.check(&read).is_ok());
        let write = json!({ "kind": "write", "path": "/3/0/15", "content": { "value": "UTC" } });
        assert!(operation.check(&write).is_ok());
        let nested_array = json!({ "kind": "write", "path": "/3/0/15", "content": [{}] });
        let problem = operation.check(&nested_array).unwrap_err();
        assert!(problem.detail.contains("at /content"), "{problem:?}");
        let unknown = json!({ "kind": "read", "path": "/3/0/1", "priority": 1 });
        assert!(operation.check(&unknown).is_err());
    }
}
