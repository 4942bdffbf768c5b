//! Why a delta package could not be applied.

/// Why a delta package could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    /// The bytes do not start with the delta magic: not a delta package of ours.
    #[error("not a delta package (bad magic)")]
    BadMagic,
    /// The envelope names an algorithm this build does not know.
    #[error("unknown delta algorithm {0}")]
    UnknownAlgorithm(u8),
    /// The patch was made from another image than the one it is applied to.
    #[error("wrong base image: the patch was made from another firmware ({0})")]
    WrongBase(&'static str),
    /// The rebuilt image does not match the envelope: the patch is damaged.
    #[error("result check failed: {0}")]
    ResultMismatch(&'static str),
    /// The patch body is truncated or inconsistent.
    #[error("corrupt patch: {0}")]
    Corrupt(&'static str),
    /// Writing the rebuilt image failed.
    #[error("write failed: {0}")]
    Write(String),
}

impl From<std::io::Error> for DeltaError {
    fn from(e: std::io::Error) -> Self {
        DeltaError::Write(e.to_string())
    }
}
