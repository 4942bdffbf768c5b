//! `SledStore`: the embedded default store, one sled database in a data directory. Opening it
//! checks the schema version kept under `meta/schema` and refuses data it cannot read.

use std::ops::Bound;
use std::path::Path;

use super::{Batch, FORMAT_VERSION, Store, StoreError};

/// Key of the schema version.
const SCHEMA_KEY: &str = "meta/schema";

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
        store.check_schema()?;
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
        store.check_schema()?;
        Ok(store)
    }

    /// A new store is stamped with this release's version; an existing one must carry it.
    fn check_schema(&self) -> Result<(), StoreError> {
        match self.db.get(SCHEMA_KEY).map_err(io)? {
            None => {
                self.db.insert(SCHEMA_KEY, &[FORMAT_VERSION]).map_err(io)?;
                self.flush()
            }
            Some(version) if version.as_ref() == [FORMAT_VERSION] => Ok(()),
            Some(version) => Err(StoreError::UnknownVersion {
                found: version.first().copied().unwrap_or(0),
            }),
        }
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
    use super::*;
    use crate::store::StoreExt;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Thing {
        name: String,
        count: u32,
    }

    fn thing(name: &str, count: u32) -> Thing {
        Thing {
            name: name.into(),
            count,
        }
    }

    #[test]
    fn records_survive_a_reopen_and_scan_in_key_order() {
        let dir = tempdir("reopen");
        {
            let store = SledStore::open(&dir).unwrap();
            store.put_durable("thing/b", &thing("b", 2)).unwrap();
            store.put_durable("thing/a", &thing("a", 1)).unwrap();
            store.put_durable("other/x", &thing("x", 9)).unwrap();
        }
        let store = SledStore::reopen(&dir).unwrap();
        assert_eq!(store.get::<Thing>("thing/a").unwrap(), Some(thing("a", 1)));
        let things: Vec<Thing> = store.scan("thing/").unwrap();
        assert_eq!(things, vec![thing("a", 1), thing("b", 2)]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_batch_is_applied_whole() {
        let store = SledStore::temporary().unwrap();
        store.put("thing/old", &thing("old", 0)).unwrap();
        let mut batch = Batch::new();
        batch.put("thing/new", &thing("new", 1)).remove("thing/old");
        store.apply(batch).unwrap();
        let things: Vec<Thing> = store.scan("thing/").unwrap();
        assert_eq!(things, vec![thing("new", 1)]);
    }

    #[test]
    fn a_page_after_a_key_and_the_last_key_stay_under_their_prefix() {
        let store = SledStore::temporary().unwrap();
        for (key, count) in [("a/1", 1), ("b/1", 2), ("b/2", 3), ("b/3", 4), ("c/1", 5)] {
            store.put(key, &thing(key, count)).unwrap();
        }
        let page: Vec<(String, Thing)> = store.scan_after("b/", Some("b/1"), 5).unwrap();
        let keys: Vec<&str> = page.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["b/2", "b/3"]);
        let first: Vec<(String, Thing)> = store.scan_after("b/", None, 1).unwrap();
        assert_eq!(first[0].1, thing("b/1", 2));
        let last: Option<(String, Thing)> = store.last("b/").unwrap();
        assert_eq!(last.map(|(key, _)| key).as_deref(), Some("b/3"));
        assert!(store.last::<Thing>("d/").unwrap().is_none());
    }

    #[test]
    fn data_of_an_unknown_version_is_refused_with_a_clear_error() {
        let dir = tempdir("version");
        {
            let db = sled::open(&dir).unwrap();
            db.insert(SCHEMA_KEY, &[FORMAT_VERSION + 1]).unwrap();
            db.flush().unwrap();
        }
        let error = SledStore::open(&dir).err().expect("refused");
        assert!(error.to_string().contains("format version 2"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_record_of_an_unknown_version_or_garbage_is_an_error_not_a_panic() {
        let store = SledStore::temporary().unwrap();
        let mut batch = Batch::new();
        batch.put_bytes("thing/future", vec![FORMAT_VERSION + 1, b'{', b'}']);
        batch.put_bytes("thing/garbage", vec![FORMAT_VERSION, 0xFF]);
        store.apply(batch).unwrap();
        assert!(matches!(
            store.get::<Thing>("thing/future"),
            Err(StoreError::UnknownVersion { .. })
        ));
        assert!(matches!(
            store.get::<Thing>("thing/garbage"),
            Err(StoreError::Corrupt { .. })
        ));
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
