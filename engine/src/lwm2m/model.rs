//! `ResourceType`: the data types of LwM2M resources, and the types of the resources of the
//! objects this engine knows from OMA's registry (1 LwM2M Server, 3 Device, 4 Connectivity
//! Monitoring, 5 Firmware Update, with the engine's 26500 and 26501). Text and TLV carry no
//! types: a value read in them is typed from here. Owns the table and the typing rule only.

use serde::{Deserialize, Serialize};

use super::content::{ContentError, Value};
use super::path::LwM2mPath;

/// An LwM2M resource data type, named as the integrator API writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    String,
    Integer,
    UnsignedInteger,
    Float,
    Boolean,
    Opaque,
    Time,
    Objlnk,
}

impl ResourceType {
    /// Every type, in the order the API documents them.
    pub const ALL: [ResourceType; 8] = [
        ResourceType::String,
        ResourceType::Integer,
        ResourceType::UnsignedInteger,
        ResourceType::Float,
        ResourceType::Boolean,
        ResourceType::Opaque,
        ResourceType::Time,
        ResourceType::Objlnk,
    ];

    /// `value` read as this type (untyped bytes and text as the LwM2M rules say).
    pub fn read(self, value: &Value) -> Result<Value, ContentError> {
        Ok(match self {
            ResourceType::String => Value::String(value.as_string()?),
            ResourceType::Integer => Value::Integer(value.as_i64()?),
            ResourceType::UnsignedInteger => Value::UnsignedInteger(value.as_u64()?),
            ResourceType::Float => Value::Float(value.as_f64()?),
            ResourceType::Boolean => Value::Boolean(value.as_bool()?),
            ResourceType::Opaque => Value::Opaque(value.as_bytes()?.to_vec()),
            ResourceType::Time => Value::Time(value.as_i64()?),
            ResourceType::Objlnk => {
                let (object, instance) = value.as_object_link()?;
                Value::ObjectLink(object, instance)
            }
        })
    }
}

use ResourceType::{Boolean, Integer, Objlnk, Opaque, String as Text, Time, UnsignedInteger};

/// `(object, resource, type)` of every readable or writable resource known; executable
/// resources have no type and are not listed.
const KNOWN: &[(u16, u16, ResourceType)] = &[
    // 1: LwM2M Server.
    (1, 0, Integer),
    (1, 1, Integer),
    (1, 2, Integer),
    (1, 3, Integer),
    (1, 5, Integer),
    (1, 6, Boolean),
    (1, 7, Text),
    (1, 10, Objlnk),
    (1, 11, UnsignedInteger),
    (1, 12, Time),
    (1, 13, UnsignedInteger),
    (1, 14, UnsignedInteger),
    (1, 15, Boolean),
    (1, 16, Boolean),
    (1, 17, UnsignedInteger),
    (1, 18, UnsignedInteger),
    (1, 19, UnsignedInteger),
    (1, 20, UnsignedInteger),
    (1, 21, Boolean),
    (1, 22, Text),
    (1, 23, Boolean),
    // 3: Device.
    (3, 0, Text),
    (3, 1, Text),
    (3, 2, Text),
    (3, 3, Text),
    (3, 6, Integer),
    (3, 7, Integer),
    (3, 8, Integer),
    (3, 9, Integer),
    (3, 10, Integer),
    (3, 11, Integer),
    (3, 13, Time),
    (3, 14, Text),
    (3, 15, Text),
    (3, 16, Text),
    (3, 17, Text),
    (3, 18, Text),
    (3, 19, Text),
    (3, 20, Integer),
    (3, 21, Integer),
    (3, 22, Objlnk),
    // 4: Connectivity Monitoring.
    (4, 0, Integer),
    (4, 1, Integer),
    (4, 2, Integer),
    (4, 3, Integer),
    (4, 4, Text),
    (4, 5, Text),
    (4, 6, Integer),
    (4, 7, Text),
    (4, 8, Integer),
    (4, 9, Integer),
    (4, 10, Integer),
    (4, 11, Integer),
    (4, 12, Integer),
    // 5: Firmware Update, with the engine's Transferred Bytes.
    (5, 0, Opaque),
    (5, 1, Text),
    (5, 3, Integer),
    (5, 5, Integer),
    (5, 6, Text),
    (5, 7, Text),
    (5, 8, Integer),
    (5, 9, Integer),
    (5, 26500, Integer),
];

/// The type of the resource at `path` (or of its instances), when the engine knows it.
pub fn resource_type(path: &LwM2mPath) -> Option<ResourceType> {
    let (object, resource) = (path.object_id()?, path.resource_id()?);
    KNOWN
        .iter()
        .find(|(o, r, _)| *o == object && *r == resource)
        .map(|(_, _, kind)| *kind)
}

/// `value`, read at `path`, with its type: a typed value as it is; text or untyped TLV bytes
/// as the known type of the resource; when that is unknown (or the value does not read as
/// it), text as a string and untyped bytes as opaque.
pub fn typed(path: &LwM2mPath, value: Value) -> Value {
    if !matches!(value, Value::String(_) | Value::Untyped(_)) {
        return value;
    }
    if let Some(Ok(typed)) = resource_type(path).map(|kind| kind.read(&value)) {
        return typed;
    }
    match value {
        Value::Untyped(bytes) => Value::Opaque(bytes),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_tlv_values_take_the_known_type_and_unknown_ones_stay_raw() {
        let battery = LwM2mPath::resource(3, 0, 9);
        assert_eq!(
            typed(&battery, Value::String("95".into())),
            Value::Integer(95)
        );
        assert_eq!(
            typed(&battery, Value::Untyped(vec![95])),
            Value::Integer(95)
        );
        let unknown = LwM2mPath::resource(3303, 0, 5700);
        assert_eq!(
            typed(&unknown, Value::Untyped(vec![1, 2])),
            Value::Opaque(vec![1, 2])
        );
        assert_eq!(
            typed(&unknown, Value::String("x".into())),
            Value::String("x".into())
        );
        assert_eq!(
            typed(&battery, Value::String("lots".into())),
            Value::String("lots".into()),
            "a value that does not read as its type is kept as sent"
        );
        assert_eq!(typed(&battery, Value::Float(1.5)), Value::Float(1.5));
        let power = LwM2mPath::resource_instance(3, 0, 6, 0);
        assert_eq!(resource_type(&power), Some(ResourceType::Integer));
        assert_eq!(resource_type(&LwM2mPath::instance(3, 0)), None);
    }
}
