//! What every store must do, as one suite each store's tests run on their own backend (sled,
//! PostgreSQL): the engine relies on exactly this and nothing more.

use std::sync::Arc;

use super::{Batch, FORMAT_VERSION, Store, StoreError, StoreExt};

/// Opens the store under test: the same data every time (a reopen).
pub(super) type Open<'a> = &'a dyn Fn() -> Result<Arc<dyn Store>, StoreError>;

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

/// Runs every check on an empty store that `open` opens again and again.
pub(super) fn suite(open: Open) {
    let store = open().expect("the store opens");
    records_scan_in_key_order_under_their_prefix(store.as_ref());
    a_batch_is_applied_whole(store.as_ref());
    many_records_are_read_at_once_in_the_order_asked(store.as_ref());
    a_page_after_a_key_and_the_last_key_stay_under_their_prefix(store.as_ref());
    keys_sort_by_their_bytes(store.as_ref());
    a_record_of_an_unknown_version_or_garbage_is_an_error_not_a_panic(store.as_ref());
    a_large_batch_and_a_large_value_go_through(store.as_ref());
    drop(store);
    records_survive_a_reopen(open);
    data_of_an_unknown_format_version_is_refused(open);
}

fn records_scan_in_key_order_under_their_prefix(store: &dyn Store) {
    store.put("scan/thing/b", &thing("b", 2)).unwrap();
    store.put("scan/thing/a", &thing("a", 1)).unwrap();
    store
        .put("scan/thinga", &thing("not under thing/", 0))
        .unwrap();
    store.put("scan/other/x", &thing("x", 9)).unwrap();
    assert_eq!(
        store.get::<Thing>("scan/thing/a").unwrap(),
        Some(thing("a", 1))
    );
    assert_eq!(store.get::<Thing>("scan/thing/c").unwrap(), None);
    let things: Vec<Thing> = store.scan("scan/thing/").unwrap();
    assert_eq!(things, vec![thing("a", 1), thing("b", 2)]);
    assert!(store.scan_raw("scan/none/").unwrap().is_empty());
}

fn many_records_are_read_at_once_in_the_order_asked(store: &dyn Store) {
    store.put("many/a", &thing("a", 1)).unwrap();
    store.put("many/b", &thing("b", 2)).unwrap();
    let keys = ["many/b", "many/none", "many/a", "many/b"].map(String::from);
    assert_eq!(
        store.get_many::<Thing>(&keys).unwrap(),
        vec![
            Some(thing("b", 2)),
            None,
            Some(thing("a", 1)),
            Some(thing("b", 2))
        ],
        "each key's record or none, in the order asked, a key asked twice given twice"
    );
    assert!(store.get_many::<Thing>(&[]).unwrap().is_empty());
}

fn a_batch_is_applied_whole(store: &dyn Store) {
    store.put("batch/old", &thing("old", 0)).unwrap();
    store.put("batch/kept", &thing("kept", 0)).unwrap();
    let mut batch = Batch::new();
    batch
        .put("batch/new", &thing("new", 1))
        .remove("batch/old")
        .put("batch/kept", &thing("kept", 1))
        .put("batch/kept", &thing("kept", 2))
        .put("batch/gone", &thing("gone", 3))
        .remove("batch/gone");
    store.apply(batch).unwrap();
    let things: Vec<Thing> = store.scan("batch/").unwrap();
    assert_eq!(things, vec![thing("kept", 2), thing("new", 1)]);
    store.apply(Batch::new()).unwrap();
    store.flush().unwrap();
}

fn a_page_after_a_key_and_the_last_key_stay_under_their_prefix(store: &dyn Store) {
    for (key, count) in [
        ("page/a/1", 1),
        ("page/b/1", 2),
        ("page/b/2", 3),
        ("page/b/3", 4),
        ("page/c/1", 5),
    ] {
        store.put(key, &thing(key, count)).unwrap();
    }
    let page: Vec<(String, Thing)> = store.scan_after("page/b/", Some("page/b/1"), 5).unwrap();
    let keys: Vec<&str> = page.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["page/b/2", "page/b/3"]);
    let first: Vec<(String, Thing)> = store.scan_after("page/b/", None, 1).unwrap();
    assert_eq!(first[0].1, thing("page/b/1", 2));
    let two: Vec<(String, Thing)> = store.scan_after("page/", Some("page/a/1"), 2).unwrap();
    let keys: Vec<&str> = two.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["page/b/1", "page/b/2"]);
    let last: Option<(String, Thing)> = store.last("page/b/").unwrap();
    assert_eq!(last.map(|(key, _)| key).as_deref(), Some("page/b/3"));
    assert!(store.last::<Thing>("page/d/").unwrap().is_none());
}

/// Keys order as their UTF-8 bytes: what sled does, and what the engine's pages assume.
fn keys_sort_by_their_bytes(store: &dyn Store) {
    let keys = [
        "bytes/Z",
        "bytes/a",
        "bytes/é",
        "bytes/z",
        "bytes/éa",
        "bytes/~",
    ];
    for key in keys {
        store.put(key, &thing(key, 0)).unwrap();
    }
    let mut sorted = keys.to_vec();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let scanned: Vec<String> = store
        .scan_raw("bytes/")
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(scanned, sorted);
    let under: Vec<String> = store
        .scan_raw("bytes/é")
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(under, ["bytes/é", "bytes/éa"]);
}

fn a_record_of_an_unknown_version_or_garbage_is_an_error_not_a_panic(store: &dyn Store) {
    let mut batch = Batch::new();
    batch.put_bytes("bad/future", vec![FORMAT_VERSION + 1, b'{', b'}']);
    batch.put_bytes("bad/garbage", vec![FORMAT_VERSION, 0xFF]);
    batch.put_bytes("bad/empty", vec![]);
    store.apply(batch).unwrap();
    assert!(matches!(
        store.get::<Thing>("bad/future"),
        Err(StoreError::UnknownVersion { .. })
    ));
    assert!(matches!(
        store.get::<Thing>("bad/garbage"),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.get::<Thing>("bad/empty"),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.get_raw("bad/empty").unwrap(), Some(vec![]));
}

/// A task's start writes tens of thousands of records at once; an image is megabytes.
fn a_large_batch_and_a_large_value_go_through(store: &dyn Store) {
    let mut batch = Batch::new();
    for index in 0..5_000 {
        batch.put(format!("large/{index:05}"), &thing("many", index));
    }
    let image: Vec<u8> = (0..4 << 20).map(|index| (index % 251) as u8).collect();
    batch.put_bytes("large/image", image.clone());
    store.apply(batch).unwrap();
    assert_eq!(store.scan_raw("large/0").unwrap().len(), 5_000);
    assert_eq!(store.get_raw("large/image").unwrap(), Some(image));
}

fn records_survive_a_reopen(open: Open) {
    {
        let store = open().unwrap();
        store.put_durable("reopen/b", &thing("b", 2)).unwrap();
        store.put_durable("reopen/a", &thing("a", 1)).unwrap();
    }
    let store = open().unwrap();
    let things: Vec<Thing> = store.scan("reopen/").unwrap();
    assert_eq!(things, vec![thing("a", 1), thing("b", 2)]);
}

fn data_of_an_unknown_format_version_is_refused(open: Open) {
    {
        let store = open().unwrap();
        let mut batch = Batch::new();
        batch.put_bytes(super::FORMAT_KEY, vec![FORMAT_VERSION + 1]);
        store.apply(batch).unwrap();
        store.flush().unwrap();
    }
    let error = open().err().expect("refused");
    assert!(error.to_string().contains("format version 2"), "{error}");
}
