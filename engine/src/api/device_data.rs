//! The integrator's JSON of LwM2M data, shaped by the path it is at: a resource (or resource
//! instance) `{"type", "value"}`, a multiple-instance resource `{"values": {id: ...}}`, an
//! object instance `{"resources": {id: ...}}`, an object `{"instances": {id: ...}}`. Values
//! carry their type (`string`, `integer`, `unsigned_integer`, `float`, `boolean`, `opaque` as
//! base64, `time` in Unix seconds, `objlnk` as `"3:0"`). Owns the shape both ways: records read
//! from a device into JSON, and a write's JSON into records, typed by the body, else by the
//! resource's known type, else by the JSON value.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value as Json, json};

use crate::lwm2m::model::resource_type;
use crate::lwm2m::{LwM2mPath, Record, ResourceType, Value};

/// Names of the shapes' fields.
const TYPE: &str = "type";
const VALUE: &str = "value";
const VALUES: &str = "values";
const RESOURCES: &str = "resources";
const INSTANCES: &str = "instances";

/// `records`, read at `path`, as one JSON object with the path.
pub fn to_json(path: LwM2mPath, records: &[Record]) -> Json {
    let under: Vec<&Record> = records
        .iter()
        .filter(|r| r.path.starts_with(&path))
        .collect();
    let mut node = node(path, &under);
    node.insert("path".into(), json!(path.to_string()));
    Json::Object(node)
}

/// The JSON of the records at or below `path`, shaped by its depth.
fn node(path: LwM2mPath, records: &[&Record]) -> Map<String, Json> {
    match (path.depth(), records) {
        (1, _) => children(path, records, INSTANCES),
        (2, _) => children(path, records, RESOURCES),
        (_, [record]) if record.path == path => typed_value(&record.value),
        _ => children(path, records, VALUES),
    }
}

/// `{key: {id: node}}` of the children of `path` the records are at or below.
fn children(path: LwM2mPath, records: &[&Record], key: &str) -> Map<String, Json> {
    let depth = path.depth();
    let mut grouped: BTreeMap<u16, Vec<&Record>> = BTreeMap::new();
    for record in records {
        if let Some(id) = record.path.ids().nth(depth) {
            grouped.entry(id).or_default().push(record);
        }
    }
    let nodes: Map<String, Json> = grouped
        .into_iter()
        .filter_map(|(id, records)| {
            let child = path.child(id)?;
            Some((id.to_string(), Json::Object(node(child, &records))))
        })
        .collect();
    Map::from_iter([(key.to_string(), Json::Object(nodes))])
}

/// `{"type", "value"}` of one value.
fn typed_value(value: &Value) -> Map<String, Json> {
    let (kind, json) = match value {
        Value::String(text) => (ResourceType::String, json!(text)),
        Value::Integer(number) => (ResourceType::Integer, json!(number)),
        Value::UnsignedInteger(number) => (ResourceType::UnsignedInteger, json!(number)),
        Value::Float(number) => (ResourceType::Float, float(*number)),
        Value::Boolean(flag) => (ResourceType::Boolean, json!(flag)),
        Value::Opaque(bytes) | Value::Untyped(bytes) => {
            (ResourceType::Opaque, json!(BASE64.encode(bytes)))
        }
        Value::Time(seconds) => (ResourceType::Time, json!(seconds)),
        Value::ObjectLink(object, instance) => {
            (ResourceType::Objlnk, json!(format!("{object}:{instance}")))
        }
    };
    Map::from_iter([(TYPE.into(), json!(kind)), (VALUE.into(), json)])
}

/// A float as a JSON number; one JSON cannot hold (infinite, NaN) as its text.
fn float(number: f64) -> Json {
    serde_json::Number::from_f64(number).map_or_else(|| json!(number.to_string()), Json::Number)
}

/// The records a write of `body` to `path` carries: a resource's value or values at a resource
/// path, one value at a resource instance path, resources at an instance path.
pub fn from_json(path: LwM2mPath, body: &Json) -> Result<Vec<Record>, String> {
    match path.depth() {
        2 => {
            let resources = only_field(body, RESOURCES, "an instance")?;
            let mut records = Vec::new();
            for (resource, body) in id_map(resources, RESOURCES)? {
                records.extend(resource_records(child(path, resource)?, body)?);
            }
            Ok(records)
        }
        3 => resource_records(path, body),
        4 => Ok(vec![value_record(path, body)?]),
        _ => Err(format!(
            "{path} is not writable: write an object instance, a resource or a resource instance"
        )),
    }
}

/// The records of one resource: `{"values": {...}}` or one `{"type", "value"}`.
fn resource_records(path: LwM2mPath, body: &Json) -> Result<Vec<Record>, String> {
    if body.get(VALUES).is_none() {
        return Ok(vec![value_record(path, body)?]);
    }
    let values = only_field(body, VALUES, "a multiple-instance resource")?;
    id_map(values, VALUES)?
        .into_iter()
        .map(|(instance, body)| value_record(child(path, instance)?, body))
        .collect()
}

/// The one value of `{"type"?, "value"}` at `path`.
fn value_record(path: LwM2mPath, body: &Json) -> Result<Record, String> {
    let fields = body
        .as_object()
        .ok_or_else(|| format!("{path}: expected {{\"type\", \"value\"}}, found {body}"))?;
    if let Some(unknown) = fields.keys().find(|k| *k != TYPE && *k != VALUE) {
        return Err(format!(
            "{path}: unknown field {unknown:?} (a value has \"type\" and \"value\")"
        ));
    }
    let value = fields
        .get(VALUE)
        .ok_or_else(|| format!("{path}: no \"value\""))?;
    let kind = match fields.get(TYPE) {
        Some(kind) => serde_json::from_value(kind.clone())
            .map_err(|_| format!("{path}: {kind} is not a type ({})", type_names()))?,
        None => resource_type(&path)
            .or_else(|| inferred(value))
            .ok_or_else(|| format!("{path}: {value} is not a value"))?,
    };
    let value = read_as(kind, value).map_err(|reason| format!("{path}: {reason}"))?;
    Ok(Record::new(path, value))
}

/// The type a JSON value has when the body and the model say nothing.
fn inferred(value: &Json) -> Option<ResourceType> {
    match value {
        Json::String(_) => Some(ResourceType::String),
        Json::Bool(_) => Some(ResourceType::Boolean),
        Json::Number(number) if number.is_i64() => Some(ResourceType::Integer),
        Json::Number(number) if number.is_u64() => Some(ResourceType::UnsignedInteger),
        Json::Number(_) => Some(ResourceType::Float),
        _ => None,
    }
}

/// `json` as a value of `kind`.
fn read_as(kind: ResourceType, json: &Json) -> Result<Value, String> {
    let wrong = || format!("{json} is not of type {}", type_name(kind));
    Ok(match kind {
        ResourceType::String => Value::String(json.as_str().ok_or_else(wrong)?.to_string()),
        ResourceType::Integer => Value::Integer(json.as_i64().ok_or_else(wrong)?),
        ResourceType::UnsignedInteger => Value::UnsignedInteger(json.as_u64().ok_or_else(wrong)?),
        ResourceType::Float => Value::Float(json.as_f64().ok_or_else(wrong)?),
        ResourceType::Boolean => Value::Boolean(json.as_bool().ok_or_else(wrong)?),
        ResourceType::Time => Value::Time(json.as_i64().ok_or_else(wrong)?),
        ResourceType::Opaque => {
            let text = json.as_str().ok_or_else(wrong)?;
            Value::Opaque(
                BASE64
                    .decode(text)
                    .map_err(|e| format!("not base64: {e}"))?,
            )
        }
        ResourceType::Objlnk => {
            let text = json.as_str().ok_or_else(wrong)?;
            let link = Value::String(text.to_string()).as_object_link();
            let (object, instance) = link.map_err(|e| e.to_string())?;
            Value::ObjectLink(object, instance)
        }
    })
}

/// The one field `name` of an object body.
fn only_field<'a>(body: &'a Json, name: &str, what: &str) -> Result<&'a Json, String> {
    match body.as_object() {
        Some(fields) if fields.len() == 1 && fields.contains_key(name) => Ok(&fields[name]),
        _ => Err(format!("{what} is written as {{\"{name}\": {{id: ...}}}}")),
    }
}

/// The entries of an object keyed by ids.
fn id_map<'a>(map: &'a Json, name: &str) -> Result<Vec<(u16, &'a Json)>, String> {
    let entries = map
        .as_object()
        .ok_or_else(|| format!("\"{name}\" must map ids to what they hold"))?;
    if entries.is_empty() {
        return Err(format!("\"{name}\" holds nothing"));
    }
    entries
        .iter()
        .map(|(id, body)| {
            let id = id
                .parse::<u16>()
                .ok()
                .filter(|id| *id != u16::MAX)
                .ok_or_else(|| format!("\"{name}\": {id:?} is not an id from 0 to 65534"))?;
            Ok((id, body))
        })
        .collect()
}

/// `path`'s child `id`.
fn child(path: LwM2mPath, id: u16) -> Result<LwM2mPath, String> {
    path.child(id)
        .ok_or_else(|| format!("{path} has no level below"))
}

fn type_name(kind: ResourceType) -> String {
    json!(kind).as_str().unwrap_or_default().to_string()
}

fn type_names() -> String {
    let names: Vec<String> = ResourceType::ALL.into_iter().map(type_name).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: LwM2mPath, value: Value) -> Record {
        Record::new(path, value)
    }

    #[test]
    fn reads_are_shaped_by_their_path() {
        let battery = LwM2mPath::resource(3, 0, 9);
        let power = LwM2mPath::resource_instance(3, 0, 6, 0);
        let records = [
            record(battery, Value::Integer(95)),
            record(power, Value::Integer(1)),
            record(LwM2mPath::resource(3, 0, 0), Value::String("Acme".into())),
        ];
        assert_eq!(
            to_json(battery, &records[..1]),
            json!({ "path": "/3/0/9", "type": "integer", "value": 95 })
        );
        assert_eq!(
            to_json(LwM2mPath::resource(3, 0, 6), &records[1..2]),
            json!({ "path": "/3/0/6", "values": { "0": { "type": "integer", "value": 1 } } })
        );
        let object = to_json(LwM2mPath::object(3), &records);
        assert_eq!(
            object["instances"]["0"]["resources"]["6"]["values"]["0"]["value"],
            1
        );
        assert_eq!(
            object["instances"]["0"]["resources"]["0"],
            json!({ "type": "string", "value": "Acme" })
        );
        let opaque = to_json(battery, &[record(battery, Value::Opaque(vec![0, 255]))]);
        assert_eq!(opaque["value"], "AP8=");
    }

    #[test]
    fn writes_are_typed_by_the_body_the_model_or_the_json() {
        let timezone = LwM2mPath::resource(3, 0, 15);
        assert_eq!(
            from_json(timezone, &json!({ "value": "Europe/Berlin" })).unwrap(),
            [record(timezone, Value::String("Europe/Berlin".into()))]
        );
        let instance = from_json(
            LwM2mPath::instance(3, 0),
            &json!({ "resources": {
                "13": { "value": 1700000000 },
                "6": { "values": { "0": { "value": 1 } } },
                "30000": { "type": "opaque", "value": "AP8=" },
            } }),
        )
        .unwrap();
        assert!(instance.contains(&record(
            LwM2mPath::resource(3, 0, 13),
            Value::Time(1_700_000_000)
        )));
        assert!(instance.contains(&record(
            LwM2mPath::resource_instance(3, 0, 6, 0),
            Value::Integer(1)
        )));
        assert!(instance.contains(&record(
            LwM2mPath::resource(3, 0, 30000),
            Value::Opaque(vec![0, 255])
        )));
        let unknown = LwM2mPath::resource(3303, 0, 5700);
        assert_eq!(
            from_json(unknown, &json!({ "value": 21.5 })).unwrap(),
            [record(unknown, Value::Float(21.5))]
        );
    }

    /// A JSON value of the shapes' words and scalars, nested up to `depth`.
    fn random_json(rng: &mut rand::rngs::SmallRng, depth: u32) -> Json {
        use rand::Rng;
        const KEYS: [&str; 9] = [
            "type",
            "value",
            "values",
            "resources",
            "instances",
            "0",
            "9",
            "65535",
            "x",
        ];
        match rng.random_range(0..if depth == 0 { 6 } else { 8 }) {
            0 => Json::Null,
            1 => json!(rng.random::<bool>()),
            2 => json!(rng.random::<i64>()),
            3 => json!(rng.random::<f64>() * 1e6),
            4 => json!(
                ["integer", "opaque", "objlnk", "time", "3:0", "AP8=", "?"][rng.random_range(0..7)]
            ),
            5 => json!(rng.random::<u64>()),
            6 => Json::Array(
                (0..rng.random_range(0..3))
                    .map(|_| random_json(rng, depth - 1))
                    .collect(),
            ),
            _ => Json::Object(
                (0..rng.random_range(0..4))
                    .map(|_| {
                        (
                            KEYS[rng.random_range(0..KEYS.len())].to_string(),
                            random_json(rng, depth - 1),
                        )
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn no_body_makes_a_write_panic() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(21);
        let paths = [
            LwM2mPath::object(3),
            LwM2mPath::instance(3, 0),
            LwM2mPath::resource(3, 0, 9),
            LwM2mPath::resource(3, 0, 22),
            LwM2mPath::resource_instance(3, 0, 6, 0),
        ];
        for round in 0..20_000 {
            let body = random_json(&mut rng, 4);
            let _ = from_json(paths[round % paths.len()], &body);
        }
    }

    #[test]
    fn bodies_that_do_not_fit_their_path_are_refused_with_a_reason() {
        let battery = LwM2mPath::resource(3, 0, 9);
        for (path, body, reason) in [
            (battery, json!({ "value": "full" }), "not of type integer"),
            (
                battery,
                json!({ "type": "number", "value": 1 }),
                "is not a type",
            ),
            (battery, json!({ "value": 1, "unit": "%" }), "unknown field"),
            (battery, json!({}), "no \"value\""),
            (battery, json!([1]), "expected"),
            (LwM2mPath::object(3), json!({ "value": 1 }), "not writable"),
            (
                LwM2mPath::instance(3, 0),
                json!({ "value": 1 }),
                "an instance",
            ),
            (
                LwM2mPath::instance(3, 0),
                json!({ "resources": { "x": { "value": 1 } } }),
                "not an id",
            ),
            (
                LwM2mPath::instance(3, 0),
                json!({ "resources": {} }),
                "holds nothing",
            ),
            (
                LwM2mPath::resource(5, 0, 0),
                json!({ "value": "not base64!" }),
                "not base64",
            ),
        ] {
            let error = from_json(path, &body).unwrap_err();
            assert!(error.contains(reason), "{body}: {error}");
        }
    }
}
