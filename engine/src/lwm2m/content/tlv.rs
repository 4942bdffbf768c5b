//! OMA TLV (`application/vnd.oma.lwm2m+tlv`, content format 11542; LwM2M 1.0 TS section
//! 6.4.3): decoding nested object instance / multiple resource / resource (instance) entries
//! relative to the request path into one `Value::Untyped` record per value, and encoding
//! records back with the smallest identifier, length and integer encodings.

use std::ops::Range;

use super::{ContentError, ContentFormat, LwM2mPath, Record, Value};

const FORMAT: ContentFormat = ContentFormat::Tlv;

/// The largest value a TLV length field (24 bits) can describe.
const MAX_LENGTH: usize = 0xff_ffff;

/// The identifier type in bits 7-6 of a TLV type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ObjectInstance,
    ResourceInstance,
    MultipleResource,
    Resource,
}

impl Kind {
    fn from_type_byte(type_byte: u8) -> Kind {
        match type_byte >> 6 {
            0 => Kind::ObjectInstance,
            1 => Kind::ResourceInstance,
            2 => Kind::MultipleResource,
            _ => Kind::Resource,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Kind::ObjectInstance => 0,
            Kind::ResourceInstance => 1,
            Kind::MultipleResource => 2,
            Kind::Resource => 3,
        }
    }

    /// Which path level the entry's identifier fills (instance 1, resource 2, instance 3).
    fn level(self) -> usize {
        match self {
            Kind::ObjectInstance => 1,
            Kind::Resource | Kind::MultipleResource => 2,
            Kind::ResourceInstance => 3,
        }
    }

    fn is_leaf(self) -> bool {
        matches!(self, Kind::Resource | Kind::ResourceInstance)
    }

    /// Whether an entry of kind `child` may appear inside this one.
    fn holds(self, child: Kind) -> bool {
        match self {
            Kind::ObjectInstance => matches!(child, Kind::Resource | Kind::MultipleResource),
            Kind::MultipleResource => child == Kind::ResourceInstance,
            Kind::Resource | Kind::ResourceInstance => false,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::ObjectInstance => "object instance",
            Kind::ResourceInstance => "resource instance",
            Kind::MultipleResource => "multiple resource",
            Kind::Resource => "resource",
        }
    }
}

/// One TLV entry as read from the payload; ranges are absolute offsets into the payload.
struct Entry {
    kind: Kind,
    id: u16,
    offset: usize,
    value: Range<usize>,
}

fn malformed(offset: usize, reason: String) -> ContentError {
    ContentError::Malformed {
        format: FORMAT,
        offset,
        reason,
    }
}

fn encode_error(reason: String) -> ContentError {
    ContentError::Encode {
        format: FORMAT,
        reason,
    }
}

/// Decodes a TLV payload answering a request on `base` into one record per value.
///
/// Entries may repeat the levels of `base` (a read of `/3/0` may wrap its resources in object
/// instance 0; a read of `/3/0/7` may answer a multiple resource 7 or bare resource instances),
/// but must not name anything outside it. Empty object instances and multiple resources yield
/// no records.
pub fn decode(base: &LwM2mPath, payload: &[u8]) -> Result<Vec<Record>, ContentError> {
    if base.depth() == 0 {
        return Err(ContentError::Invalid {
            format: FORMAT,
            reason: "TLV needs at least an object id in the request path, got /".into(),
        });
    }
    let mut records = Vec::new();
    for entry in read_entries(payload, 0..payload.len())? {
        let level = entry.kind.level();
        let parent = prefix(base, level).ok_or_else(|| {
            malformed(
                entry.offset,
                format!(
                    "{} {} cannot appear directly under the request path {base}",
                    entry.kind.name(),
                    entry.id
                ),
            )
        })?;
        decode_entry(payload, base, parent, &entry, &mut records)?;
    }
    Ok(records)
}

/// The first `depth` levels of `path`, if it has that many.
fn prefix(path: &LwM2mPath, depth: usize) -> Option<LwM2mPath> {
    let ids: Vec<u16> = path.ids().take(depth).collect();
    (ids.len() == depth)
        .then(|| LwM2mPath::from_ids(&ids))
        .flatten()
}

/// Decodes `entry`, whose identifier sits below `parent`, appending its values to `out`.
fn decode_entry(
    payload: &[u8],
    base: &LwM2mPath,
    parent: LwM2mPath,
    entry: &Entry,
    out: &mut Vec<Record>,
) -> Result<(), ContentError> {
    let describe = || format!("{} {}", entry.kind.name(), entry.id);
    let path = parent
        .child(entry.id)
        .ok_or_else(|| malformed(entry.offset, format!("{} is too deep", describe())))?;
    let outside = if path.depth() <= base.depth() {
        !base.starts_with(&path)
    } else {
        !path.starts_with(base)
    };
    if outside || (entry.kind.is_leaf() && !path.starts_with(base)) {
        let reason = format!("{} ({path}) is outside the request path {base}", describe());
        return Err(malformed(entry.offset, reason));
    }
    if entry.kind.is_leaf() {
        let value = payload.get(entry.value.clone()).unwrap_or_default();
        out.push(Record::new(path, Value::Untyped(value.to_vec())));
        return Ok(());
    }
    for child in read_entries(payload, entry.value.clone())? {
        if !entry.kind.holds(child.kind) {
            let reason = format!("{} {} inside {}", child.kind.name(), child.id, describe());
            return Err(malformed(child.offset, reason));
        }
        decode_entry(payload, base, path, &child, out)?;
    }
    Ok(())
}

/// Reads the consecutive entries filling `range` of `payload`.
fn read_entries(payload: &[u8], range: Range<usize>) -> Result<Vec<Entry>, ContentError> {
    let mut entries = Vec::new();
    let mut pos = range.start;
    while pos < range.end {
        let entry = read_entry(payload, pos, range.end)?;
        pos = entry.value.end;
        entries.push(entry);
    }
    Ok(entries)
}

/// Reads the entry starting at `start`, which must end by `end`.
fn read_entry(payload: &[u8], start: usize, end: usize) -> Result<Entry, ContentError> {
    let mut cursor = start;
    let mut take = |n: usize, what: &str| -> Result<usize, ContentError> {
        let bytes = payload
            .get(cursor..cursor + n)
            .filter(|_| cursor + n <= end);
        let bytes = bytes.ok_or_else(|| {
            let left = end.saturating_sub(cursor);
            malformed(
                start,
                format!("truncated header: the {what} needs {n} bytes, {left} left"),
            )
        })?;
        cursor += n;
        Ok(bytes.iter().fold(0, |acc, b| acc << 8 | usize::from(*b)))
    };
    let type_byte = take(1, "type byte")? as u8;
    let kind = Kind::from_type_byte(type_byte);
    let id_len = if type_byte & 0x20 != 0 { 2 } else { 1 };
    let id = take(id_len, "identifier")?;
    let length = match (type_byte >> 3) & 0b11 {
        0 => usize::from(type_byte & 0b111),
        n => take(usize::from(n), "length")?,
    };
    let id = u16::try_from(id)
        .ok()
        .filter(|id| *id != u16::MAX)
        .ok_or_else(|| malformed(start, "identifier 65535 is reserved".into()))?;
    let left = end - cursor;
    if length > left {
        let reason = format!(
            "{} {id}: value of {length} bytes runs past the end of its container ({left} bytes left)",
            kind.name()
        );
        return Err(malformed(start, reason));
    }
    Ok(Entry {
        kind,
        id,
        offset: start,
        value: cursor..cursor + length,
    })
}

/// Encodes `records`, all at or below `base`, as TLV for a request on `base`.
///
/// Resources of one object instance are grouped under an object instance entry when `base`
/// names an object, and resource instances under a multiple resource entry when `base` names
/// an instance, an object or the multiple resource itself. Entries come out sorted by path.
pub fn encode(base: &LwM2mPath, records: &[Record]) -> Result<Vec<u8>, ContentError> {
    if base.depth() == 0 {
        return Err(encode_error(
            "TLV needs at least an object id in the request path, got /".into(),
        ));
    }
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|record| record.path);
    check_encodable(base, &sorted)?;
    let level = match base.depth() {
        depth @ (1 | 2) => depth,
        depth => depth - 1,
    };
    let mut out = Vec::new();
    write_level(&sorted, level, &mut out)?;
    Ok(out)
}

/// Checks that sorted `records` lie below `base`, at resources or resource instances, once each.
fn check_encodable(base: &LwM2mPath, records: &[&Record]) -> Result<(), ContentError> {
    for record in records {
        let path = record.path;
        if !path.starts_with(base) {
            let reason = format!("the record at {path} is outside the request path {base}");
            return Err(encode_error(reason));
        }
        if path.depth() < 3 || path.ids().any(|id| id == u16::MAX) {
            let reason = format!("{path} is not a resource or resource instance path");
            return Err(encode_error(reason));
        }
    }
    if let Some(pair) = records.windows(2).find(|pair| pair[0].path == pair[1].path) {
        return Err(encode_error(format!("two records at {}", pair[0].path)));
    }
    Ok(())
}

/// The id at `level` of `record`'s path (0 when absent, which `check_encodable` rules out).
fn id_at(record: &Record, level: usize) -> u16 {
    record.path.ids().nth(level).unwrap_or_default()
}

/// Writes sorted `records` as the entries of path level `level`, grouped by their id there.
fn write_level(records: &[&Record], level: usize, out: &mut Vec<u8>) -> Result<(), ContentError> {
    for group in records.chunk_by(|a, b| id_at(a, level) == id_at(b, level)) {
        let Some(first) = group.first() else { continue };
        let id = id_at(first, level);
        let leaf = group.len() == 1 && first.path.depth() == level + 1;
        let (kind, body) = match level {
            1 => (Kind::ObjectInstance, nested(group, 2)?),
            2 if leaf => (Kind::Resource, value_bytes(&first.value)),
            2 if group.iter().any(|r| r.path.depth() == 3) => {
                let reason = format!("{} has both a value and resource instances", first.path);
                return Err(encode_error(reason));
            }
            2 => (Kind::MultipleResource, nested(group, 3)?),
            _ => (Kind::ResourceInstance, value_bytes(&first.value)),
        };
        write_entry(kind, id, &body, out)?;
    }
    Ok(())
}

fn nested(records: &[&Record], level: usize) -> Result<Vec<u8>, ContentError> {
    let mut body = Vec::new();
    write_level(records, level, &mut body)?;
    Ok(body)
}

/// Writes one entry with the smallest identifier and length encodings.
fn write_entry(kind: Kind, id: u16, value: &[u8], out: &mut Vec<u8>) -> Result<(), ContentError> {
    let len = value.len();
    if len > MAX_LENGTH {
        let reason = format!("a value of {len} bytes exceeds the TLV limit of {MAX_LENGTH}");
        return Err(encode_error(reason));
    }
    let length_bytes = match len {
        0..=7 => 0,
        8..=0xff => 1,
        0x100..=0xffff => 2,
        _ => 3,
    };
    let mut type_byte = kind.bits() << 6 | (length_bytes as u8) << 3;
    if length_bytes == 0 {
        type_byte |= len as u8;
    }
    if id > 0xff {
        type_byte |= 0x20;
    }
    out.push(type_byte);
    match u8::try_from(id) {
        Ok(id) => out.push(id),
        Err(_) => out.extend_from_slice(&id.to_be_bytes()),
    }
    out.extend_from_slice(&(len as u32).to_be_bytes()[4 - length_bytes..]);
    out.extend_from_slice(value);
    Ok(())
}

/// The TLV bytes of one value.
fn value_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::Integer(i) | Value::Time(i) => {
            let size = if i8::try_from(*i).is_ok() {
                1
            } else if i16::try_from(*i).is_ok() {
                2
            } else if i32::try_from(*i).is_ok() {
                4
            } else {
                8
            };
            i.to_be_bytes()[8 - size..].to_vec()
        }
        Value::UnsignedInteger(u) => {
            let size = match *u {
                0..=0xff => 1,
                0x100..=0xffff => 2,
                0x1_0000..=0xffff_ffff => 4,
                _ => 8,
            };
            u.to_be_bytes()[8 - size..].to_vec()
        }
        Value::Float(f) if f64::from(*f as f32) == *f => (*f as f32).to_be_bytes().to_vec(),
        Value::Float(f) => f.to_be_bytes().to_vec(),
        Value::Boolean(b) => vec![u8::from(*b)],
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Opaque(bytes) | Value::Untyped(bytes) => bytes.clone(),
        Value::ObjectLink(object, instance) => [object.to_be_bytes(), instance.to_be_bytes()]
            .concat()
            .to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Device object instance of the LwM2M 1.0 TS TLV example (section 6.4.3.1).
    const DEVICE: &[u8] = &[
        0xC8, 0x00, 0x14, b'O', b'p', b'e', b'n', b' ', b'M', b'o', b'b', b'i', b'l', b'e', b' ',
        b'A', b'l', b'l', b'i', b'a', b'n', b'c', b'e', // 0 Manufacturer
        0xC8, 0x01, 0x16, b'L', b'i', b'g', b'h', b't', b'w', b'e', b'i', b'g', b'h', b't', b' ',
        b'M', b'2', b'M', b' ', b'C', b'l', b'i', b'e', b'n', b't', // 1 Model Number
        0xC8, 0x02, 0x09, b'3', b'4', b'5', b'0', b'0', b'0', b'1', b'2', b'3', // 2 Serial
        0xC3, 0x03, b'1', b'.', b'0', // 3 Firmware Version
        0x86, 0x06, 0x41, 0x00, 0x01, 0x41, 0x01, 0x05, // 6 Available Power Sources
        0x88, 0x07, 0x08, 0x42, 0x00, 0x0E, 0xD8, 0x42, 0x01, 0x13, 0x88, // 7 Voltage
        0x87, 0x08, 0x41, 0x00, 0x7D, 0x42, 0x01, 0x03, 0x84, // 8 Current
        0xC1, 0x09, 0x64, // 9 Battery Level
        0xC1, 0x0A, 0x0F, // 10 Memory Free
        0x83, 0x0B, 0x41, 0x00, 0x00, // 11 Error Code
        0xC4, 0x0D, 0x51, 0x82, 0x42, 0x8F, // 13 Current Time
        0xC6, 0x0E, b'+', b'0', b'2', b':', b'0', b'0', // 14 UTC Offset
        0xC1, 0x10, b'U', // 16 Binding
    ];

    /// The typed records of [`DEVICE`].
    fn device_records() -> Vec<Record> {
        let r = |res, value| Record::new(LwM2mPath::resource(3, 0, res), value);
        let ri = |res, ri, value| Record::new(LwM2mPath::resource_instance(3, 0, res, ri), value);
        let s = |text: &str| Value::String(text.into());
        vec![
            r(0, s("Open Mobile Alliance")),
            r(1, s("Lightweight M2M Client")),
            r(2, s("345000123")),
            r(3, s("1.0")),
            ri(6, 0, Value::Integer(1)),
            ri(6, 1, Value::Integer(5)),
            ri(7, 0, Value::Integer(3800)),
            ri(7, 1, Value::Integer(5000)),
            ri(8, 0, Value::Integer(125)),
            ri(8, 1, Value::Integer(900)),
            r(9, Value::Integer(100)),
            r(10, Value::Integer(15)),
            ri(11, 0, Value::Integer(0)),
            r(13, Value::Time(0x5182_428F)),
            r(14, s("+02:00")),
            r(16, s("U")),
        ]
    }

    /// Checks that untyped `decoded` records carry the values of typed `expected` ones.
    fn assert_same_values(decoded: &[Record], expected: &[Record]) {
        assert_eq!(decoded.len(), expected.len());
        for (got, want) in decoded.iter().zip(expected) {
            assert_eq!(got.path, want.path);
            assert!(matches!(got.value, Value::Untyped(_)), "{got:?}");
            match &want.value {
                Value::Integer(i) | Value::Time(i) => assert_eq!(got.value.as_i64().unwrap(), *i),
                Value::UnsignedInteger(u) => assert_eq!(got.value.as_u64().unwrap(), *u),
                Value::Float(f) => assert_eq!(got.value.as_f64().unwrap(), *f),
                Value::Boolean(b) => assert_eq!(got.value.as_bool().unwrap(), *b),
                Value::String(s) => assert_eq!(got.value.as_str().unwrap(), s),
                Value::Opaque(b) | Value::Untyped(b) => {
                    assert_eq!(got.value.as_bytes().unwrap(), b)
                }
                Value::ObjectLink(o, i) => {
                    assert_eq!(got.value.as_object_link().unwrap(), (*o, *i))
                }
            }
        }
    }

    #[test]
    fn device_instance_matches_the_specification_example() {
        let base = LwM2mPath::instance(3, 0);
        let decoded = decode(&base, DEVICE).unwrap();
        assert_same_values(&decoded, &device_records());
        assert_eq!(encode(&base, &device_records()).unwrap(), DEVICE);
    }

    #[test]
    fn object_read_wraps_instances() {
        let wrapped = [&[0x08, 0x00, 0x79][..], DEVICE].concat();
        let object = LwM2mPath::object(3);
        assert_eq!(encode(&object, &device_records()).unwrap(), wrapped);
        assert_same_values(&decode(&object, &wrapped).unwrap(), &device_records());
        // A read of /3/0 may also answer with the object instance wrapper.
        let instance = LwM2mPath::instance(3, 0);
        assert_same_values(&decode(&instance, &wrapped).unwrap(), &device_records());
    }

    #[test]
    fn access_control_example_with_two_instances_and_a_16_bit_id() {
        // LwM2M 1.0 TS section 6.4.3.2: Access Control object instances 0 and 2.
        let payload = [
            0x08, 0x00, 0x0E, 0xC1, 0x00, 0x01, 0xC1, 0x01, 0x00, 0x83, 0x02, 0x41, 0x7F, 0x07,
            0xC1, 0x03, 0x7F, 0x08, 0x02, 0x12, 0xC1, 0x00, 0x03, 0xC1, 0x01, 0x00, 0x87, 0x02,
            0x41, 0x7F, 0x07, 0x61, 0x01, 0x36, 0x01, 0xC1, 0x03, 0x7F,
        ];
        let r = |i, res, v| Record::new(LwM2mPath::resource(2, i, res), Value::Integer(v));
        let ri =
            |i, ri, v| Record::new(LwM2mPath::resource_instance(2, i, 2, ri), Value::Integer(v));
        let records = vec![
            r(0, 0, 1),
            r(0, 1, 0),
            ri(0, 127, 7),
            r(0, 3, 127),
            r(2, 0, 3),
            r(2, 1, 0),
            ri(2, 127, 7),
            ri(2, 310, 1),
            r(2, 3, 127),
        ];
        let base = LwM2mPath::object(2);
        assert_same_values(&decode(&base, &payload).unwrap(), &records);
        assert_eq!(encode(&base, &records).unwrap(), payload);
    }

    #[test]
    fn multiple_resource_and_resource_instance_reads() {
        let voltage = device_records()[6..8].to_vec();
        let wrapped = [
            0x88, 0x07, 0x08, 0x42, 0x00, 0x0E, 0xD8, 0x42, 0x01, 0x13, 0x88,
        ];
        let base = LwM2mPath::resource(3, 0, 7);
        assert_eq!(encode(&base, &voltage).unwrap(), wrapped);
        assert_same_values(&decode(&base, &wrapped).unwrap(), &voltage);
        // Bare resource instances are accepted too.
        assert_same_values(&decode(&base, &wrapped[3..]).unwrap(), &voltage);

        let one = LwM2mPath::resource_instance(3, 0, 7, 1);
        assert_eq!(encode(&one, &voltage[1..]).unwrap(), &wrapped[7..]);
        assert_same_values(&decode(&one, &wrapped[7..]).unwrap(), &voltage[1..]);

        let battery = LwM2mPath::resource(3, 0, 9);
        let records = [Record::new(battery, Value::Integer(100))];
        assert_eq!(encode(&battery, &records).unwrap(), [0xC1, 0x09, 0x64]);
        assert_same_values(&decode(&battery, &[0xC1, 0x09, 0x64]).unwrap(), &records);
    }

    #[test]
    fn every_value_type_round_trips() {
        let p = |res| LwM2mPath::resource(1024, 3, res);
        let records = vec![
            Record::new(p(0), Value::Integer(-1)),
            Record::new(p(1), Value::Integer(i64::MIN)),
            Record::new(p(2), Value::UnsignedInteger(u64::MAX)),
            Record::new(p(3), Value::Float(1.5)),
            Record::new(p(4), Value::Float(0.1)),
            Record::new(p(5), Value::Boolean(true)),
            Record::new(p(6), Value::String("ü".into())),
            Record::new(p(7), Value::Opaque(vec![0, 255])),
            Record::new(p(8), Value::Time(-5)),
            Record::new(p(9), Value::ObjectLink(3, 65534)),
            Record::new(p(10), Value::Untyped(vec![])),
            Record::new(p(300), Value::Boolean(false)),
        ];
        let base = LwM2mPath::object(1024);
        let payload = encode(&base, &records).unwrap();
        assert_same_values(&decode(&base, &payload).unwrap(), &records);
    }

    #[test]
    fn smallest_encodings() {
        let bytes = |v| value_bytes(&v).len();
        assert_eq!(bytes(Value::Integer(127)), 1);
        assert_eq!(bytes(Value::Integer(-128)), 1);
        assert_eq!(bytes(Value::Integer(128)), 2);
        assert_eq!(bytes(Value::Integer(-32769)), 4);
        assert_eq!(bytes(Value::Integer(1 << 31)), 8);
        assert_eq!(bytes(Value::UnsignedInteger(255)), 1);
        assert_eq!(bytes(Value::UnsignedInteger(1 << 32)), 8);
        assert_eq!(bytes(Value::Float(1.5)), 4);
        assert_eq!(bytes(Value::Float(0.1)), 8);
        assert_eq!(bytes(Value::ObjectLink(1, 2)), 4);

        let header = |len: usize, id: u16| {
            let mut out = Vec::new();
            write_entry(Kind::Resource, id, &vec![0; len], &mut out).unwrap();
            out.truncate(out.len() - len);
            out
        };
        assert_eq!(header(7, 1), [0xC7, 0x01]);
        assert_eq!(header(8, 1), [0xC8, 0x01, 0x08]);
        assert_eq!(header(300, 1), [0xD0, 0x01, 0x01, 0x2C]);
        assert_eq!(header(70_000, 1), [0xD8, 0x01, 0x01, 0x11, 0x70]);
        assert_eq!(header(0, 300), [0xE0, 0x01, 0x2C]);
        let mut out = Vec::new();
        assert!(write_entry(Kind::Resource, 1, &vec![0; MAX_LENGTH + 1], &mut out).is_err());

        let big = vec![Record::new(
            LwM2mPath::resource(5, 0, 0),
            Value::Opaque(vec![7; 70_000]),
        )];
        let base = LwM2mPath::resource(5, 0, 0);
        let payload = encode(&base, &big).unwrap();
        assert_same_values(&decode(&base, &payload).unwrap(), &big);
    }

    fn decode_error(base: LwM2mPath, payload: &[u8]) -> String {
        decode(&base, payload).unwrap_err().to_string()
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let instance = LwM2mPath::instance(3, 0);
        let cases: [(&[u8], &str); 9] = [
            (
                &[0xC8],
                "byte 0: truncated header: the identifier needs 1 bytes, 0 left",
            ),
            (
                &[0xE8, 0x00],
                "truncated header: the identifier needs 2 bytes, 1 left",
            ),
            (&[0xC8, 0x00], "truncated header: the length needs 1 bytes"),
            (
                &[0xC1, 0x09],
                "resource 9: value of 1 bytes runs past the end",
            ),
            (&[0xC1, 0x09, 0x64, 0x00], "byte 3: truncated header"),
            (
                &[0x84, 0x06, 0x43, 0x00, 0x01, 0x05],
                "byte 2: resource instance 0: value of 3",
            ),
            (
                &[0x83, 0x06, 0x41, 0x00, 0x01, 0x41],
                "byte 5: truncated header",
            ),
            (&[0xE1, 0xFF, 0xFF, 0x01], "identifier 65535 is reserved"),
            (
                &[0x83, 0x06, 0xC1, 0x00, 0x01],
                "byte 2: resource 0 inside multiple resource 6",
            ),
        ];
        for (payload, expected) in cases {
            let message = decode_error(instance, payload);
            assert!(message.contains(expected), "{payload:02X?}: {message}");
            assert!(message.starts_with("malformed application/vnd.oma.lwm2m+tlv"));
        }
    }

    #[test]
    fn ids_outside_the_request_path_are_errors() {
        let battery = [0xC1, 0x09, 0x64];
        let message = decode_error(LwM2mPath::resource(3, 0, 10), &battery);
        assert!(message.contains("resource 9 (/3/0/9) is outside the request path /3/0/10"));
        let message = decode_error(LwM2mPath::object(3), &battery);
        assert!(message.contains("cannot appear directly under the request path /3"));
        let other_instance = [0x03, 0x01, 0xC1, 0x09, 0x64];
        assert!(decode_error(LwM2mPath::instance(3, 0), &other_instance).contains("/3/1"));
        let resource_instance = [0x41, 0x02, 0x05];
        let message = decode_error(LwM2mPath::resource_instance(3, 0, 7, 1), &resource_instance);
        assert!(message.contains("/3/0/7/2"), "{message}");
        let single = decode_error(LwM2mPath::resource_instance(3, 0, 9, 0), &battery);
        assert!(single.contains("outside"), "{single}");
        assert!(decode_error(LwM2mPath::ROOT, &battery).contains("object id"));
    }

    #[test]
    fn unencodable_records_are_errors() {
        let base = LwM2mPath::instance(3, 0);
        let rec = |path, v| Record::new(path, Value::Integer(v));
        let cases = [
            (
                vec![rec(LwM2mPath::resource(4, 0, 1), 1)],
                "outside the request path",
            ),
            (vec![rec(base, 1)], "not a resource or resource instance"),
            (
                vec![rec(LwM2mPath::resource(3, 0, 1), 1); 2],
                "two records at /3/0/1",
            ),
            (
                vec![
                    rec(LwM2mPath::resource(3, 0, 7), 1),
                    rec(LwM2mPath::resource_instance(3, 0, 7, 0), 1),
                ],
                "both a value and resource instances",
            ),
        ];
        for (records, expected) in cases {
            let message = encode(&base, &records).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
        }
        assert!(encode(&LwM2mPath::ROOT, &[]).is_err());
        assert_eq!(encode(&base, &[]).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn random_and_mutated_payloads_never_panic() {
        use rand::{Rng, SeedableRng, rngs::SmallRng};
        let mut rng = SmallRng::seed_from_u64(11542);
        let bases = [
            LwM2mPath::object(3),
            LwM2mPath::instance(3, 0),
            LwM2mPath::resource(3, 0, 7),
            LwM2mPath::resource_instance(3, 0, 7, 1),
        ];
        for round in 0..6000 {
            let payload: Vec<u8> = if round % 2 == 0 {
                let len = rng.random_range(0..48);
                (0..len).map(|_| rng.random::<u8>()).collect()
            } else {
                let mut payload = DEVICE.to_vec();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..payload.len());
                    payload[at] = rng.random::<u8>();
                }
                payload.truncate(rng.random_range(0..=payload.len()));
                payload
            };
            let base = bases[round % bases.len()];
            if let Ok(records) = decode(&base, &payload) {
                assert!(records.iter().all(|r| r.path.starts_with(&base)));
            }
        }
    }
}
