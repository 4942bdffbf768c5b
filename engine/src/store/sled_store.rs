//! `SledStore`: the embedded default store, one sled database in a data directory. Opening it
//! checks the format version kept under `meta/schema` and refuses data it cannot read.

use std::ops::Bound;
use std::path::Path;

use super::{Batch, Store, StoreError};

/// A sled database.
pub struct SledStore {
    db: sled::Db,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled::open(dir).map_err(|error| {
            StoreError::Io(format!(
                "cannot open the data directory {}: {error}",
                dir.display()
            ))
        })?;
        let store = SledStore { db };
        super::check_format(&store)?;
        Ok(store)
    }

    /// Opens the store at `dir` again in the process that dropped it (tests): sled's
    /// background flusher lets go of the directory's lock a moment after the last handle is
    /// dropped, so this waits for the lock, within a bound.
    pub fn reopen(dir: &Path) -> Result<SledStore, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match SledStore::open(dir) {
                Err(StoreError::Io(error))
                    if error.contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                opened => return opened,
            }
        }
    }

    /// A store that lives only as long as the process (tests).
    pub fn temporary() -> Result<SledStore, StoreError> {
        let db = sled::Config::new().temporary(true).open().map_err(io)?;
        let store = SledStore { db };
        super::check_format(&store)?;
        Ok(store)
    }
}

impl Store for SledStore {
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn scan_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.db.scan_prefix(prefix).map(entry).collect()
    }

    fn scan_after_raw(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let start = match after {
            Some(after) => Bound::Excluded(after.as_bytes()),
            None => Bound::Included(prefix.as_bytes()),
        };
        self.db
            .range::<&[u8], _>((start, Bound::Unbounded))
            .take_while(|entry| {
                entry
                    .as_ref()
                    .map_or(true, |(key, _)| key.starts_with(prefix.as_bytes()))
            })
            .take(limit)
            .map(entry)
            .collect()
    }

    fn last_raw(&self, prefix: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        self.db
            .scan_prefix(prefix)
            .next_back()
            .map(entry)
            .transpose()
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.puts {
            sled_batch.insert(key.as_bytes(), value);
        }
        for key in batch.removes {
            sled_batch.remove(key.as_bytes());
        }
        self.db.apply_batch(sled_batch).map_err(io)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(io)
    }
}

/// One entry of a scan, its key as text.
fn entry(entry: sled::Result<(sled::IVec, sled::IVec)>) -> Result<(String, Vec<u8>), StoreError> {
    let (key, value) = entry.map_err(io)?;
    Ok((String::from_utf8_lossy(&key).into_owned(), value.to_vec()))
}

fn io(error: sled::Error) -> StoreError {
    StoreError::Io(error.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn the_store_contract_holds_on_sled() {
        let dir = tempdir("contract");
        crate::store::conformance::suite(&|| {
            let store: Arc<dyn Store> = Arc::new(SledStore::reopen(&dir)?);
            Ok(store)
        });
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_directory_that_cannot_be_a_database_is_a_clear_error() {
        let file = std::env::temp_dir().join(format!("fota-store-file-{}", std::process::id()));
        std::fs::write(&file, b"not a directory").unwrap();
        let error = SledStore::open(&file).err().expect("refused");
        assert!(error.to_string().contains("cannot open"), "{error}");
        std::fs::remove_file(file).unwrap();
    }

    fn tempdir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fota-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
