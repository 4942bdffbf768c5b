//! A validator for the subset of JSON Schema (2020-12) the API's OpenAPI document uses: `$ref`
//! into the document, `type` (one or a list), `enum`, `const`, `properties`, `required`,
//! `additionalProperties`, `items`, `allOf`, `oneOf`, `minimum`, `maximum`,
//! `exclusiveMinimum`, `minItems`, `maxItems`, `minLength`, `maxLength` (in characters) and `pattern` (only the document's one pattern of answers: a
//! character that is not white space); `description`, `format` and `contentMediaType` are
//! annotations. A keyword outside the subset is an error, never ignored, so the document
//! cannot grow a rule this validator would not check.
//!
//! Stricter than JSON Schema in one way, on purpose: an object may only carry the properties its
//! schema declares (with those of its `allOf` parts), unless `additionalProperties` says what
//! else it may carry. A field renamed in the code but not in the document is then caught from
//! both sides: the new name is undeclared, the old one (when required) is missing.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Annotations: they say what a value means, not what it must be.
const ANNOTATIONS: [&str; 3] = ["description", "contentMediaType", "format"];

/// The one pattern the document's answers use: a character that is not white space (as
/// `char::is_whitespace` has it).
const NOT_BLANK: &str = "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// Validates values against schemas of one document (where `$ref`s point).
pub struct Validator<'a> {
    /// The document `#/...` references are resolved in.
    pub root: &'a Value,
}

impl Validator<'_> {
    /// Checks `value` against `schema`; the error names where, as a JSON pointer, and why.
    pub fn validate(&self, schema: &Value, value: &Value) -> Result<(), String> {
        self.check(schema, value, "#", Closed::Yes)
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, closed: Closed) -> Result<(), String> {
        let schema = self.resolve(schema)?;
        let rules = schema
            .as_object()
            .ok_or_else(|| format!("{at}: schema {schema} is not an object"))?;
        for (keyword, rule) in rules {
            match keyword.as_str() {
                "type" => check_type(rule, value, at)?,
                "enum" => {
                    let allowed = rule.as_array().ok_or("`enum` is not a list")?;
                    if !allowed.contains(value) {
                        return Err(format!("{at}: {value} is not one of {rule}"));
                    }
                }
                "const" if value != rule => {
                    return Err(format!("{at}: {value} is not {rule}"));
                }
                "minimum" | "maximum" | "exclusiveMinimum" => {
                    let (Some(number), Some(bound)) = (value.as_f64(), rule.as_f64()) else {
                        continue; // `type` decides what a non-number may be.
                    };
                    if keyword == "minimum" && number < bound {
                        return Err(format!("{at}: {value} is under the minimum {rule}"));
                    }
                    if keyword == "maximum" && number > bound {
                        return Err(format!("{at}: {value} is over the maximum {rule}"));
                    }
                    if keyword == "exclusiveMinimum" && number <= bound {
                        return Err(format!("{at}: {value} is not over {rule}"));
                    }
                }
                "minItems" | "maxItems" => {
                    let (Some(items), Some(bound)) = (value.as_array(), rule.as_u64()) else {
                        continue; // `type` decides what a non-array may be.
                    };
                    let count = items.len() as u64;
                    if (keyword == "minItems" && count < bound)
                        || (keyword == "maxItems" && count > bound)
                    {
                        return Err(format!("{at}: {count} items, against {keyword} {rule}"));
                    }
                }
                "minLength" | "maxLength" => {
                    let (Some(text), Some(bound)) = (value.as_str(), rule.as_u64()) else {
                        continue; // `type` decides what a non-string may be.
                    };
                    let length = text.chars().count() as u64;
                    if keyword == "minLength" && length < bound {
                        return Err(format!("{at}: {value} is shorter than {rule}"));
                    }
                    if keyword == "maxLength" && length > bound {
                        return Err(format!("{at}: {value} is longer than {rule}"));
                    }
                }
                "pattern" => {
                    if rule != NOT_BLANK {
                        return Err(format!("{at}: the validator does not know pattern {rule}"));
                    }
                    if let Some(text) = value.as_str()
                        && text.chars().all(char::is_whitespace)
                    {
                        return Err(format!("{at}: {value} is blank"));
                    }
                }
                "required" => check_required(rule, value, at)?,
                "properties" => self.check_properties(rule, value, at)?,
                "additionalProperties" => self.check_additional(rules, rule, value, at)?,
                "items" => {
                    for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                        self.check(rule, item, &format!("{at}/{i}"), Closed::Yes)?;
                    }
                }
                "allOf" => {
                    for part in rule.as_array().ok_or("`allOf` is not a list")? {
                        self.check(part, value, at, Closed::No)?;
                    }
                }
                "oneOf" => self.check_one_of(rule, value, at)?,
                "const" => {}
                other if ANNOTATIONS.contains(&other) => {}
                other => return Err(format!("{at}: the validator does not know `{other}`")),
            }
        }
        if closed == Closed::Yes && !rules.contains_key("additionalProperties") {
            self.check_closed(schema, value, at)?;
        }
        Ok(())
    }

    /// `schema`, or what its `$ref` points at (`#/a/b` in the root).
    fn resolve<'s>(&'s self, schema: &'s Value) -> Result<&'s Value, String> {
        let Some(target) = schema.get("$ref") else {
            return Ok(schema);
        };
        if schema.as_object().is_some_and(|rules| rules.len() > 1) {
            return Err(format!("{schema}: `$ref` with other keywords"));
        }
        let pointer = target
            .as_str()
            .and_then(|t| t.strip_prefix('#'))
            .ok_or_else(|| format!("`$ref` {target} is not into this document"))?;
        let found = self
            .root
            .pointer(pointer)
            .ok_or_else(|| format!("`$ref` {target} points at nothing"))?;
        self.resolve(found)
    }

    fn check_properties(&self, rule: &Value, value: &Value, at: &str) -> Result<(), String> {
        let (Some(properties), Some(object)) = (rule.as_object(), value.as_object()) else {
            return Ok(());
        };
        for (name, schema) in properties {
            if let Some(field) = object.get(name) {
                self.check(schema, field, &format!("{at}/{name}"), Closed::Yes)?;
            }
        }
        Ok(())
    }

    /// Properties not in `properties` must match `additionalProperties` (a schema or false).
    fn check_additional(
        &self,
        rules: &Map<String, Value>,
        rule: &Value,
        value: &Value,
        at: &str,
    ) -> Result<(), String> {
        let Some(object) = value.as_object() else {
            return Ok(());
        };
        let declared = rules.get("properties").and_then(Value::as_object);
        for (name, field) in object {
            if declared.is_some_and(|d| d.contains_key(name)) {
                continue;
            }
            match rule {
                Value::Bool(true) => {}
                Value::Bool(false) => return Err(format!("{at}: `{name}` is not allowed")),
                schema => self.check(schema, field, &format!("{at}/{name}"), Closed::Yes)?,
            }
        }
        Ok(())
    }

    fn check_one_of(&self, rule: &Value, value: &Value, at: &str) -> Result<(), String> {
        let parts = rule.as_array().ok_or("`oneOf` is not a list")?;
        let errors: Vec<String> = parts
            .iter()
            .filter_map(|part| self.check(part, value, at, Closed::Yes).err())
            .collect();
        match parts.len() - errors.len() {
            1 => Ok(()),
            0 => Err(format!(
                "{at}: matches none of `oneOf`: {}",
                errors.join("; ")
            )),
            n => Err(format!("{at}: matches {n} parts of `oneOf`")),
        }
    }

    /// Every property of an object `value` is one `schema` declares.
    fn check_closed(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let Some(object) = value.as_object() else {
            return Ok(());
        };
        let mut declared = BTreeSet::new();
        if !self.declared(schema, &mut declared)? {
            return Ok(()); // not an object schema: nothing to close
        }
        match object.keys().find(|name| !declared.contains(name.as_str())) {
            Some(name) => Err(format!(
                "{at}: `{name}` is not a property the document declares ({declared:?})"
            )),
            None => Ok(()),
        }
    }

    /// Adds the property names `schema` and its `allOf` parts declare; false when none of them
    /// declares properties.
    fn declared<'s>(
        &'s self,
        schema: &'s Value,
        names: &mut BTreeSet<&'s str>,
    ) -> Result<bool, String> {
        let schema = self.resolve(schema)?;
        let mut any = false;
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            names.extend(properties.keys().map(String::as_str));
            any = true;
        }
        for part in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            any |= self.declared(part, names)?;
        }
        Ok(any)
    }
}

/// Whether an object may carry only the properties its schema declares. Off for the parts of
/// an `allOf`, each of which declares some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    Yes,
    No,
}

fn check_type(rule: &Value, value: &Value, at: &str) -> Result<(), String> {
    let types: Vec<&str> = match rule {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => return Err(format!("`type` {rule} is neither a name nor a list")),
    };
    if types.iter().any(|t| is_of_type(t, value)) {
        Ok(())
    } else {
        Err(format!("{at}: {value} is not of type {rule}"))
    }
}

fn is_of_type(type_: &str, value: &Value) -> bool {
    match type_ {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

fn check_required(rule: &Value, value: &Value, at: &str) -> Result<(), String> {
    let Some(object) = value.as_object() else {
        return Ok(());
    };
    let required = rule.as_array().ok_or("`required` is not a list")?;
    match required
        .iter()
        .filter_map(Value::as_str)
        .find(|name| !object.contains_key(*name))
    {
        Some(name) => Err(format!("{at}: `{name}` is required")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn document() -> Value {
        json!({ "components": { "schemas": {
            "Base": {
                "type": "object",
                "required": ["id"],
                "properties": {
                    "id": { "type": "string" },
                    "n": { "type": "integer", "minimum": 0, "maximum": 10 },
                    "name": { "type": "string", "minLength": 1, "maxLength": 3, "pattern": NOT_BLANK },
                },
            },
            "More": { "allOf": [
                { "$ref": "#/components/schemas/Base" },
                { "type": "object", "properties": { "state": { "enum": ["a", "b", null] } } },
            ] },
            "Either": { "oneOf": [
                { "type": "object", "properties": { "kind": { "const": "x" } }, "required": ["kind"] },
                { "type": "null" },
            ] },
            "Map": { "type": "object", "additionalProperties": { "type": "boolean" } },
        } } })
    }

    fn check(name: &str, value: Value) -> Result<(), String> {
        let root = document();
        let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
        Validator { root: &root }.validate(&schema, &value)
    }

    #[test]
    fn values_the_schemas_describe_pass() {
        check("Base", json!({ "id": "a", "n": 3 })).unwrap();
        check("Base", json!({ "id": "a", "name": " é " })).unwrap();
        check("More", json!({ "id": "a", "state": null })).unwrap();
        check("Either", json!({ "kind": "x" })).unwrap();
        check("Either", json!(null)).unwrap();
        check("Map", json!({ "p": true, "q": false })).unwrap();
    }

    #[test]
    fn values_that_break_a_rule_fail_and_say_where() {
        let failures = [
            ("Base", json!({ "n": 3 }), "`id` is required"),
            ("Base", json!({ "id": 1 }), "/id"),
            ("Base", json!({ "id": "a", "n": -1 }), "minimum"),
            ("Base", json!({ "id": "a", "n": 11 }), "maximum"),
            ("Base", json!({ "id": "a", "n": 1.5 }), "/n"),
            ("Base", json!({ "id": "a", "name": "" }), "shorter"),
            ("Base", json!({ "id": "a", "name": "abcd" }), "longer"),
            ("Base", json!({ "id": "a", "name": " \u{3000}" }), "blank"),
            ("Base", json!({ "id": "a", "renamed": 1 }), "`renamed`"),
            ("More", json!({ "id": "a", "state": "c" }), "/state"),
            ("More", json!({ "id": "a", "other": 1 }), "`other`"),
            ("Either", json!({ "kind": "y" }), "none of `oneOf`"),
            ("Map", json!({ "p": 1 }), "/p"),
        ];
        for (name, value, named) in failures {
            let error = check(name, value.clone()).expect_err(&value.to_string());
            assert!(error.contains(named), "{value}: {error}");
        }
    }

    #[test]
    fn a_keyword_outside_the_subset_is_an_error() {
        let root = json!({});
        let schema = json!({ "type": "string", "pattern": "^a", "minLength": 1 });
        let error = Validator { root: &root }
            .validate(&schema, &json!("a"))
            .unwrap_err();
        assert!(error.contains("pattern"), "{error}");
    }
}
