//! A scratch directory on disk for a bench's store (sled's temporary stores live in /dev/shm,
//! that is in memory, and a fleet of millions outgrows it), removed when dropped.

use std::path::PathBuf;

/// The directory; gone with the value.
pub struct ScratchDir {
    /// Where it is.
    pub path: PathBuf,
}

impl ScratchDir {
    /// An empty directory `fota-bench-{name}-{pid}` under the system's temporary directory
    /// (one a crashed run left is emptied first).
    pub fn new(name: &str) -> ScratchDir {
        let name = format!("fota-bench-{name}-{}", std::process::id());
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        ScratchDir { path }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
