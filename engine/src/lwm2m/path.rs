//! `LwM2mPath`: the /object/instance/resource/resource-instance address of LwM2M data.
//!
//! Owns parsing and printing of paths, nothing else.

use std::fmt;
use std::str::FromStr;

/// A path into the LwM2M data model, from the root (`/`) down to one resource instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LwM2mPath {
    /// Object, instance, resource and resource instance ids; `None` from the first missing level on.
    ids: [Option<u16>; 4],
}

/// Why a string is not an LwM2M path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LwM2M path {text:?}: {reason}")]
pub struct PathError {
    /// The text that was given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl LwM2mPath {
    /// The root path `/`.
    pub const ROOT: LwM2mPath = LwM2mPath { ids: [None; 4] };

    /// `/object`.
    pub const fn object(object: u16) -> Self {
        LwM2mPath {
            ids: [Some(object), None, None, None],
        }
    }

    /// `/object/instance`.
    pub const fn instance(object: u16, instance: u16) -> Self {
        LwM2mPath {
            ids: [Some(object), Some(instance), None, None],
        }
    }

    /// `/object/instance/resource`.
    pub const fn resource(object: u16, instance: u16, resource: u16) -> Self {
        LwM2mPath {
            ids: [Some(object), Some(instance), Some(resource), None],
        }
    }

    /// `/object/instance/resource/resource-instance`.
    pub const fn resource_instance(object: u16, instance: u16, resource: u16, ri: u16) -> Self {
        LwM2mPath {
            ids: [Some(object), Some(instance), Some(resource), Some(ri)],
        }
    }

    /// Builds a path from up to four ids; `None` when there are more than four.
    pub fn from_ids(ids: &[u16]) -> Option<Self> {
        if ids.len() > 4 {
            return None;
        }
        let mut path = LwM2mPath::ROOT;
        for (slot, id) in path.ids.iter_mut().zip(ids) {
            *slot = Some(*id);
        }
        Some(path)
    }

    /// The ids present, from the object down.
    pub fn ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.ids.iter().map_while(|id| *id)
    }

    /// Number of levels: 0 for the root, 4 for a resource instance.
    pub fn depth(&self) -> usize {
        self.ids().count()
    }

    /// The object id, if any.
    pub fn object_id(&self) -> Option<u16> {
        self.ids[0]
    }

    /// The object instance id, if any.
    pub fn instance_id(&self) -> Option<u16> {
        self.ids[1]
    }

    /// The resource id, if any.
    pub fn resource_id(&self) -> Option<u16> {
        self.ids[2]
    }

    /// The resource instance id, if any.
    pub fn resource_instance_id(&self) -> Option<u16> {
        self.ids[3]
    }

    /// The child path one level down; `None` below a resource instance.
    pub fn child(&self, id: u16) -> Option<Self> {
        let depth = self.depth();
        if depth == 4 {
            return None;
        }
        let mut path = *self;
        path.ids[depth] = Some(id);
        Some(path)
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &LwM2mPath) -> bool {
        other.ids().zip(self.ids()).all(|(a, b)| a == b) && self.depth() >= other.depth()
    }

    /// The path as CoAP Uri-Path segments.
    pub fn segments(&self) -> Vec<String> {
        self.ids().map(|id| id.to_string()).collect()
    }

    /// Parses Uri-Path segments (`["5", "0", "1"]`) into a path.
    pub fn from_segments<S: AsRef<str>>(segments: &[S]) -> Result<Self, PathError> {
        let text = || {
            format!(
                "/{}",
                segments
                    .iter()
                    .map(|s| s.as_ref())
                    .collect::<Vec<_>>()
                    .join("/")
            )
        };
        if segments.len() > 4 {
            return Err(PathError {
                text: text(),
                reason: "more than four levels",
            });
        }
        let mut ids = Vec::with_capacity(segments.len());
        for segment in segments {
            let segment = segment.as_ref();
            let valid_digits = !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit());
            let id = valid_digits.then(|| segment.parse::<u16>().ok()).flatten();
            match id {
                Some(id) if id != u16::MAX => ids.push(id),
                _ => {
                    return Err(PathError {
                        text: text(),
                        reason: "each level must be a number from 0 to 65534",
                    });
                }
            }
        }
        Ok(LwM2mPath::from_ids(&ids).expect("at most four ids"))
    }
}

impl FromStr for LwM2mPath {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.strip_prefix('/').ok_or(PathError {
            text: s.to_string(),
            reason: "must start with '/'",
        })?;
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Ok(LwM2mPath::ROOT);
        }
        let segments: Vec<&str> = trimmed.split('/').collect();
        LwM2mPath::from_segments(&segments)
    }
}

/// A path is kept (in the store) as its text, `/3/0/9`.
impl serde::Serialize for LwM2mPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for LwM2mPath {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for LwM2mPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.depth() == 0 {
            return f.write_str("/");
        }
        for id in self.ids() {
            write!(f, "/{id}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_depth() {
        for text in ["/", "/5", "/5/0", "/5/0/26500", "/3/0/7/1"] {
            let path: LwM2mPath = text.parse().unwrap();
            assert_eq!(path.to_string(), text);
        }
        assert_eq!(
            "/5/0/3".parse::<LwM2mPath>().unwrap(),
            LwM2mPath::resource(5, 0, 3)
        );
    }

    #[test]
    fn rejects_malformed_paths() {
        for text in [
            "",
            "5/0",
            "/a",
            "/5//3",
            "/1/2/3/4/5",
            "/65535",
            "/70000",
            "/-1",
            "/+1",
        ] {
            assert!(
                text.parse::<LwM2mPath>().is_err(),
                "{text} should be rejected"
            );
        }
    }

    #[test]
    fn a_path_is_kept_as_its_text() {
        let path = LwM2mPath::resource(5, 0, 3);
        let json = serde_json::to_string(&path).unwrap();
        assert_eq!(json, "\"/5/0/3\"");
        assert_eq!(serde_json::from_str::<LwM2mPath>(&json).unwrap(), path);
        assert!(serde_json::from_str::<LwM2mPath>("\"/a\"").is_err());
    }

    #[test]
    fn prefix_relation() {
        let res = LwM2mPath::resource(5, 0, 3);
        assert!(res.starts_with(&LwM2mPath::object(5)));
        assert!(res.starts_with(&LwM2mPath::ROOT));
        assert!(!res.starts_with(&LwM2mPath::object(3)));
        assert!(!LwM2mPath::object(5).starts_with(&res));
        assert_eq!(LwM2mPath::instance(5, 0).child(3), Some(res));
    }
}
