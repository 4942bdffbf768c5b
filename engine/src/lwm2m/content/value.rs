//! `Value`: one LwM2M resource value, and the typed accessors that read it as the type the
//! caller expects (interpreting untyped TLV bytes and text as the LwM2M rules say).

use super::ContentError;

/// One LwM2M resource value (kept in the store as serde writes it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    /// Signed integer.
    Integer(i64),
    /// Unsigned integer (LwM2M 1.1).
    UnsignedInteger(u64),
    /// Floating point number.
    Float(f64),
    /// Boolean.
    Boolean(bool),
    /// UTF-8 string; also what text/plain decodes to, whatever the resource type.
    String(String),
    /// Opaque bytes.
    Opaque(Vec<u8>),
    /// Time: seconds since the Unix epoch.
    Time(i64),
    /// Object link: object id and object instance id.
    ObjectLink(u16, u16),
    /// TLV value bytes, whose type only the reader knows: read them with an accessor.
    Untyped(Vec<u8>),
}

impl Value {
    /// The name of this kind of value, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Integer(_) => "integer",
            Value::UnsignedInteger(_) => "unsigned integer",
            Value::Float(_) => "float",
            Value::Boolean(_) => "boolean",
            Value::String(_) => "string",
            Value::Opaque(_) => "opaque",
            Value::Time(_) => "time",
            Value::ObjectLink(..) => "object link",
            Value::Untyped(_) => "untyped",
        }
    }

    /// Reads a signed integer (or a time). Untyped bytes are 1, 2, 4 or 8 bytes of big-endian
    /// two's complement; strings are decimal; floats must be whole and in range.
    pub fn as_i64(&self) -> Result<i64, ContentError> {
        const EXPECTED: &str = "integer";
        match self {
            Value::Integer(i) | Value::Time(i) => Ok(*i),
            Value::UnsignedInteger(u) => {
                i64::try_from(*u).map_err(|_| self.conversion(EXPECTED, "out of range"))
            }
            Value::Float(f) => whole_float(*f)
                .and_then(|f| i64::try_from(f).ok())
                .ok_or_else(|| self.conversion(EXPECTED, "not a whole number in range")),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|e| self.conversion(EXPECTED, format!("{s:?}: {e}"))),
            Value::Untyped(bytes) => {
                self.check_len(EXPECTED, &[1, 2, 4, 8])?;
                let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
                let init = if negative { -1 } else { 0 };
                Ok(bytes.iter().fold(init, |acc, b| acc << 8 | i64::from(*b)))
            }
            _ => Err(self.conversion(EXPECTED, "not a number")),
        }
    }

    /// Reads an unsigned integer. Untyped bytes are 1, 2, 4 or 8 bytes of big-endian unsigned
    /// integer (LwM2M 1.1); strings are decimal; signed values and floats must be in range.
    pub fn as_u64(&self) -> Result<u64, ContentError> {
        const EXPECTED: &str = "unsigned integer";
        match self {
            Value::UnsignedInteger(u) => Ok(*u),
            Value::Integer(i) | Value::Time(i) => {
                u64::try_from(*i).map_err(|_| self.conversion(EXPECTED, "negative"))
            }
            Value::Float(f) => whole_float(*f)
                .and_then(|f| u64::try_from(f).ok())
                .ok_or_else(|| self.conversion(EXPECTED, "not a whole number in range")),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|e| self.conversion(EXPECTED, format!("{s:?}: {e}"))),
            Value::Untyped(bytes) => {
                self.check_len(EXPECTED, &[1, 2, 4, 8])?;
                Ok(bytes.iter().fold(0, |acc, b| acc << 8 | u64::from(*b)))
            }
            _ => Err(self.conversion(EXPECTED, "not a number")),
        }
    }

    /// Reads a float. Untyped bytes are a 4- or 8-byte IEEE 754 big-endian float; strings are
    /// decimal; integers convert (large ones lose precision).
    pub fn as_f64(&self) -> Result<f64, ContentError> {
        const EXPECTED: &str = "float";
        match self {
            Value::Float(f) => Ok(*f),
            Value::Integer(i) => Ok(*i as f64),
            Value::UnsignedInteger(u) => Ok(*u as f64),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|e| self.conversion(EXPECTED, format!("{s:?}: {e}"))),
            Value::Untyped(bytes) => {
                self.check_len(EXPECTED, &[4, 8])?;
                let bits = bytes.iter().fold(0, |acc, b| acc << 8 | u64::from(*b));
                Ok(match bytes.len() {
                    4 => f32::from_bits(bits as u32).into(),
                    _ => f64::from_bits(bits),
                })
            }
            _ => Err(self.conversion(EXPECTED, "not a number")),
        }
    }

    /// Reads a boolean. Untyped bytes are one byte, 0 or 1; strings are `0`/`1` (LwM2M text)
    /// or `false`/`true`; integers are 0 or 1.
    pub fn as_bool(&self) -> Result<bool, ContentError> {
        const EXPECTED: &str = "boolean";
        match self {
            Value::Boolean(b) => Ok(*b),
            Value::Integer(i) if (0..=1).contains(i) => Ok(*i == 1),
            Value::UnsignedInteger(u) if *u <= 1 => Ok(*u == 1),
            Value::Untyped(bytes) => match bytes.as_slice() {
                [0] => Ok(false),
                [1] => Ok(true),
                _ => Err(self.conversion(EXPECTED, "must be one byte, 0 or 1")),
            },
            Value::String(s) => match s.trim() {
                "0" | "false" => Ok(false),
                "1" | "true" => Ok(true),
                _ => Err(self.conversion(EXPECTED, format!("{s:?} is not 0, 1, false or true"))),
            },
            _ => Err(self.conversion(EXPECTED, "not 0 or 1")),
        }
    }

    /// Reads a string. Untyped bytes must be UTF-8.
    pub fn as_str(&self) -> Result<&str, ContentError> {
        match self {
            Value::String(s) => Ok(s),
            Value::Untyped(bytes) => std::str::from_utf8(bytes).map_err(|e| {
                self.conversion(
                    "string",
                    format!("not UTF-8 after byte {}", e.valid_up_to()),
                )
            }),
            _ => Err(self.conversion("string", "not text")),
        }
    }

    /// Reads a string into an owned `String`; same rules as [`Value::as_str`].
    pub fn as_string(&self) -> Result<String, ContentError> {
        self.as_str().map(str::to_owned)
    }

    /// Reads opaque bytes: the bytes of an opaque, untyped or string value.
    pub fn as_bytes(&self) -> Result<&[u8], ContentError> {
        match self {
            Value::Opaque(bytes) | Value::Untyped(bytes) => Ok(bytes),
            Value::String(s) => Ok(s.as_bytes()),
            _ => Err(self.conversion("opaque", "not bytes")),
        }
    }

    /// Reads an object link. Untyped bytes are two 16-bit big-endian ids; strings are
    /// `object:instance`.
    pub fn as_object_link(&self) -> Result<(u16, u16), ContentError> {
        const EXPECTED: &str = "object link";
        match self {
            Value::ObjectLink(object, instance) => Ok((*object, *instance)),
            Value::Untyped(bytes) => match bytes.as_slice() {
                [a, b, c, d] => Ok((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))),
                _ => Err(self.conversion(EXPECTED, format!("{} bytes, not 4", bytes.len()))),
            },
            Value::String(s) => parse_object_link(s)
                .ok_or_else(|| self.conversion(EXPECTED, format!("{s:?} is not object:instance"))),
            _ => Err(self.conversion(EXPECTED, "not a link")),
        }
    }

    /// Checks that untyped bytes have one of the `allowed` lengths.
    fn check_len(&self, expected: &'static str, allowed: &[usize]) -> Result<(), ContentError> {
        let len = self.as_bytes().map_or(0, <[u8]>::len);
        if allowed.contains(&len) {
            return Ok(());
        }
        let mut sizes: Vec<String> = allowed.iter().map(usize::to_string).collect();
        let last = sizes.pop().unwrap_or_default();
        let reason = match sizes.is_empty() {
            true => format!("{len} bytes, not {last}"),
            false => format!("{len} bytes, not {} or {last}", sizes.join(", ")),
        };
        Err(self.conversion(expected, reason))
    }

    fn conversion(&self, expected: &'static str, reason: impl Into<String>) -> ContentError {
        ContentError::Conversion {
            expected,
            found: self.kind(),
            reason: reason.into(),
        }
    }
}

/// Parses an object link written as `object:instance` (as in text and SenML `vlo`).
pub(super) fn parse_object_link(text: &str) -> Option<(u16, u16)> {
    let (object, instance) = text.trim().split_once(':')?;
    let id = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    Some((id(object)?, id(instance)?))
}

/// `f` as a whole number, if it is one.
fn whole_float(f: f64) -> Option<i128> {
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 1e20).then_some(f as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn untyped(bytes: &[u8]) -> Value {
        Value::Untyped(bytes.to_vec())
    }

    #[test]
    fn untyped_integers_are_big_endian_twos_complement() {
        assert_eq!(untyped(&[0x7f]).as_i64().unwrap(), 127);
        assert_eq!(untyped(&[0xff]).as_i64().unwrap(), -1);
        assert_eq!(untyped(&[0x80, 0x00]).as_i64().unwrap(), -32768);
        assert_eq!(untyped(&[0, 0, 1, 0]).as_i64().unwrap(), 256);
        assert_eq!(untyped(&[0xff; 8]).as_i64().unwrap(), -1);
        assert_eq!(untyped(&[0xff; 8]).as_u64().unwrap(), u64::MAX);
        assert_eq!(untyped(&[0xc8]).as_u64().unwrap(), 200);
        for bad in [&[][..], &[1, 2, 3], &[0; 5], &[0; 9]] {
            let err = untyped(bad).as_i64().unwrap_err().to_string();
            assert!(err.contains("not 1, 2, 4 or 8"), "{err}");
            assert!(untyped(bad).as_u64().is_err());
        }
    }

    #[test]
    fn untyped_floats_bools_strings_links() {
        assert_eq!(untyped(&1.5f32.to_be_bytes()).as_f64().unwrap(), 1.5);
        assert_eq!(untyped(&0.1f64.to_be_bytes()).as_f64().unwrap(), 0.1);
        assert!(untyped(&[0; 3]).as_f64().is_err());
        assert!(untyped(&[1]).as_bool().unwrap());
        assert!(!untyped(&[0]).as_bool().unwrap());
        assert!(untyped(&[2]).as_bool().is_err());
        assert!(untyped(&[0, 1]).as_bool().is_err());
        assert_eq!(untyped(b"abc").as_str().unwrap(), "abc");
        assert_eq!(untyped(b"abc").as_string().unwrap(), "abc");
        assert!(untyped(&[0xff]).as_str().is_err());
        assert_eq!(untyped(&[0, 3, 0, 1]).as_object_link().unwrap(), (3, 1));
        assert!(untyped(&[0, 3]).as_object_link().is_err());
        assert_eq!(untyped(&[9]).as_bytes().unwrap(), &[9]);
    }

    #[test]
    fn strings_follow_text_rules() {
        let s = |t: &str| Value::String(t.to_string());
        assert_eq!(s("-42").as_i64().unwrap(), -42);
        assert_eq!(s("42").as_u64().unwrap(), 42);
        assert!(s("-42").as_u64().is_err());
        assert_eq!(s("2.5").as_f64().unwrap(), 2.5);
        assert!(s("1").as_bool().unwrap());
        assert!(!s("0").as_bool().unwrap());
        assert!(s("yes").as_bool().is_err());
        assert_eq!(s("3:0").as_object_link().unwrap(), (3, 0));
        assert!(s("3:").as_object_link().is_err());
        assert!(s("3:+1").as_object_link().is_err());
        assert_eq!(s("ab").as_bytes().unwrap(), b"ab");
        let err = s("x1").as_i64().unwrap_err().to_string();
        assert!(err.contains("string") && err.contains("integer"), "{err}");
    }

    #[test]
    fn numbers_convert_where_exact() {
        assert_eq!(Value::Float(95.0).as_i64().unwrap(), 95);
        assert!(Value::Float(95.5).as_i64().is_err());
        assert!(Value::Float(f64::NAN).as_u64().is_err());
        assert_eq!(Value::UnsignedInteger(7).as_i64().unwrap(), 7);
        assert!(Value::UnsignedInteger(u64::MAX).as_i64().is_err());
        assert!(Value::Integer(-1).as_u64().is_err());
        assert_eq!(Value::Time(1_700_000_000).as_i64().unwrap(), 1_700_000_000);
        assert_eq!(Value::Integer(3).as_f64().unwrap(), 3.0);
        assert!(Value::Integer(1).as_bool().unwrap());
        assert!(Value::Integer(2).as_bool().is_err());
        assert!(Value::Boolean(true).as_i64().is_err());
        assert!(Value::Opaque(vec![1]).as_str().is_err());
        assert!(Value::Integer(1).as_bytes().is_err());
    }
}
