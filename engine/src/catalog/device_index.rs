//! The devices as lists filter them: every device record's endpoint with the fields
//! `GET /v1/devices` filters on (manufacturer, model, firmware version, online, cell, the
//! groups it is in and whether it is a test device there), in memory and in endpoint order,
//! kept with each write of a device record or of a group's members. A page of a filtered list
//! is found here, and only its own records are read from the store: a list of a million
//! devices costs a pass over this index, not a million records decoded. Owns the index; the
//! records are the catalog's.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::sync::{Arc, Mutex, RwLock};

use super::DeviceRecord;
use crate::sync::{lock, read, write};

/// What a list filters a device on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed {
    /// Manufacturer (/3/0/0).
    pub manufacturer: Option<Arc<str>>,
    /// Module model (/3/0/1).
    pub model: Option<Arc<str>>,
    /// Firmware version (/3/0/3).
    pub firmware_version: Option<Arc<str>>,
    /// Registered now.
    pub online: bool,
    /// Radio cell (/4/0/8).
    pub cell_id: Option<u32>,
    /// The groups it is in.
    pub groups: Box<[Membership]>,
}

/// A device's place in one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The group's id.
    pub group: Arc<str>,
    /// Whether it is one of the group's test devices.
    pub test: bool,
}

impl Indexed {
    /// Its place in group `group`, if it is in it.
    pub fn membership(&self, group: &str) -> Option<&Membership> {
        self.groups.iter().find(|m| &*m.group == group)
    }
}

/// A page's worth of endpoints, where it stands in the filtered list, and the list's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexWindow {
    /// The endpoints, in the order asked.
    pub endpoints: Vec<String>,
    /// Devices of the filtered list before them, in that order.
    pub before: usize,
    /// Devices in the filtered list.
    pub total: usize,
}

/// Where a window starts.
#[derive(Debug, Clone, Copy)]
pub enum WindowStart<'a> {
    /// After this many devices of the filtered list.
    Offset(usize),
    /// After this endpoint (a cursor's).
    After(&'a str),
}

/// A manufacturer and a module model, as the index names them.
pub type ModelName = (Arc<str>, Arc<str>);

/// The index. Cheap to share.
#[derive(Default)]
pub struct DeviceIndex {
    entries: RwLock<Entries>,
    /// Each manufacturer, model, version and group id once, shared by the devices naming it:
    /// a filter compares them by address.
    names: Mutex<HashSet<Arc<str>>>,
}

/// The indexed devices, and how many there are of each model.
#[derive(Default)]
struct Entries {
    devices: BTreeMap<String, Indexed>,
    models: BTreeMap<ModelName, usize>,
}

impl Entries {
    /// Moves a device of `named` model out of its count (`-1`) or into it (`+1`).
    fn count_model(&mut self, named: &(Option<Arc<str>>, Option<Arc<str>>), step: isize) {
        let (Some(vendor), Some(model)) = named else {
            return;
        };
        let key = (vendor.clone(), model.clone());
        let count = self.models.entry(key.clone()).or_default();
        *count = count.saturating_add_signed(step);
        if *count == 0 {
            self.models.remove(&key);
        }
    }
}

impl DeviceIndex {
    /// The index of `records`.
    pub fn of(records: impl IntoIterator<Item = DeviceRecord>) -> DeviceIndex {
        let index = DeviceIndex::default();
        for record in records {
            index.put(&record);
        }
        index
    }

    /// `device`'s record was written (its groups stay as they were).
    pub fn put(&self, device: &DeviceRecord) {
        let manufacturer = self.name(device.manufacturer.as_deref());
        let model = self.name(device.model.as_deref());
        let firmware_version = self.name(device.firmware_version.as_deref());
        let mut entries = write(&self.entries);
        let entries = &mut *entries;
        let entry = entries
            .devices
            .entry(device.endpoint.clone())
            .or_insert(Indexed {
                manufacturer: None,
                model: None,
                firmware_version: None,
                online: false,
                cell_id: None,
                groups: Box::default(),
            });
        let was = (entry.manufacturer.clone(), entry.model.clone());
        entry.manufacturer = manufacturer;
        entry.model = model;
        entry.firmware_version = firmware_version;
        entry.online = device.online;
        entry.cell_id = device.cell_id;
        let now = (entry.manufacturer.clone(), entry.model.clone());
        if was != now {
            entries.count_model(&was, -1);
            entries.count_model(&now, 1);
        }
    }

    /// How many devices there are of each model, by manufacturer and model.
    pub fn models(&self) -> BTreeMap<ModelName, usize> {
        read(&self.entries).models.clone()
    }

    /// The shared copy of `name` (a manufacturer, model, version or group id), if a device
    /// names it: a filter that asks for a name no device has matches nothing.
    pub fn interned(&self, name: &str) -> Option<Arc<str>> {
        lock(&self.names).get(name).cloned()
    }

    /// The device `endpoint` as indexed.
    pub fn get(&self, endpoint: &str) -> Option<Indexed> {
        read(&self.entries).devices.get(endpoint).cloned()
    }

    /// The groups device `endpoint` is in (none for a device the index does not hold).
    pub fn memberships(&self, endpoint: &str) -> Box<[Membership]> {
        let entries = read(&self.entries);
        (entries.devices.get(endpoint)).map_or_else(Box::default, |d| d.groups.clone())
    }

    /// The radio cell device `endpoint` was last surveyed in.
    pub fn cell_of(&self, endpoint: &str) -> Option<u32> {
        read(&self.entries).devices.get(endpoint)?.cell_id
    }

    /// Whether device `endpoint` is one of group `group`'s test devices; `None` when it is not
    /// in the group.
    pub fn placed(&self, endpoint: &str, group: &str) -> Option<bool> {
        let entries = read(&self.entries);
        Some(entries.devices.get(endpoint)?.membership(group)?.test)
    }

    /// Device `endpoint` is now in group `group` (a test device there when `test`), or out of
    /// it (`None`). Nothing for a device the index does not hold.
    pub fn place(&self, endpoint: &str, group: &str, test: Option<bool>) {
        let shared = test.and_then(|test| Some((self.name(Some(group))?, test)));
        let mut entries = write(&self.entries);
        let Some(entry) = entries.devices.get_mut(endpoint) else {
            return;
        };
        let mut groups: Vec<Membership> = (entry.groups.iter())
            .filter(|m| &*m.group != group)
            .cloned()
            .collect();
        if let Some((group, test)) = shared {
            groups.push(Membership { group, test });
        }
        entry.groups = groups.into_boxed_slice();
    }

    /// `endpoint`'s record was removed.
    pub fn remove(&self, endpoint: &str) {
        let mut entries = write(&self.entries);
        if let Some(gone) = entries.devices.remove(endpoint) {
            entries.count_model(&(gone.manufacturer, gone.model), -1);
        }
    }

    /// Up to `take` endpoints of the devices `keep` accepts, in endpoint order (from the last
    /// when `descending`), from `start`; with how many of the accepted come before them and
    /// how many there are.
    pub fn window(
        &self,
        keep: impl Fn(&str, &Indexed) -> bool,
        start: WindowStart,
        descending: bool,
        take: usize,
    ) -> IndexWindow {
        let guard = read(&self.entries);
        let entries = &guard.devices;
        let kept = |(endpoint, indexed): &(&String, &Indexed)| keep(endpoint, indexed);
        // The list is counted on each side of a cursor, so no endpoint is compared with it.
        let (mut before, total) = match start {
            WindowStart::Offset(_) => (0, entries.iter().filter(kept).count()),
            WindowStart::After(after) => {
                let below = entries.range::<str, _>((Unbounded, Excluded(after)));
                let above = entries.range::<str, _>((Excluded(after), Unbounded));
                let (below, above) = (below.filter(kept).count(), above.filter(kept).count());
                let at = usize::from(entries.get_key_value(after).is_some_and(|e| kept(&e)));
                let near = if descending { above } else { below };
                (near + at, below + at + above)
            }
        };
        if let WindowStart::Offset(skip) = start {
            before = skip.min(total);
        }
        IndexWindow {
            endpoints: page(entries, kept, start, descending, take),
            before,
            total,
        }
    }

    /// Like [`DeviceIndex::window`] over every device, counted without a pass: the list is
    /// as long as the index, and a cursor's place is counted from its near end (the first
    /// pages cost a page).
    pub fn window_of_all(&self, start: WindowStart, descending: bool, take: usize) -> IndexWindow {
        let guard = read(&self.entries);
        let entries = &guard.devices;
        let total = entries.len();
        let before = match start {
            WindowStart::Offset(skip) => skip.min(total),
            WindowStart::After(after) if descending => entries
                .range::<str, _>((Included(after), Unbounded))
                .count(),
            WindowStart::After(after) => entries
                .range::<str, _>((Unbounded, Included(after)))
                .count(),
        };
        IndexWindow {
            endpoints: page(entries, |_| true, start, descending, take),
            before,
            total,
        }
    }

    /// `name`, shared with every other device naming it.
    fn name(&self, name: Option<&str>) -> Option<Arc<str>> {
        let name = name?;
        let mut names = lock(&self.names);
        if let Some(known) = names.get(name) {
            return Some(known.clone());
        }
        let shared: Arc<str> = Arc::from(name);
        names.insert(shared.clone());
        Some(shared)
    }
}

/// Up to `take` endpoints of `entries` that `kept` accepts, in endpoint order (from the last
/// when `descending`), from `start`.
fn page(
    entries: &BTreeMap<String, Indexed>,
    kept: impl Fn(&(&String, &Indexed)) -> bool,
    start: WindowStart,
    descending: bool,
    take: usize,
) -> Vec<String> {
    let endpoints: Vec<&String> = match (start, descending) {
        (WindowStart::Offset(skip), false) => {
            let page = entries.iter().filter(kept).skip(skip).take(take);
            page.map(|(e, _)| e).collect()
        }
        (WindowStart::Offset(skip), true) => {
            let page = entries.iter().rev().filter(kept).skip(skip).take(take);
            page.map(|(e, _)| e).collect()
        }
        (WindowStart::After(after), false) => {
            let rest = entries.range::<str, _>((Excluded(after), Unbounded));
            rest.filter(kept).take(take).map(|(e, _)| e).collect()
        }
        (WindowStart::After(after), true) => {
            let rest = entries.range::<str, _>((Unbounded, Excluded(after)));
            rest.rev().filter(kept).take(take).map(|(e, _)| e).collect()
        }
    };
    endpoints.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(endpoint: &str, model: &str, online: bool) -> DeviceRecord {
        let mut device = DeviceRecord::new(endpoint, 0);
        device.model = Some(model.into());
        device.online = online;
        device
    }

    fn walked(
        devices: &[DeviceRecord],
        keep: impl Fn(&DeviceRecord) -> bool,
        start: WindowStart,
        descending: bool,
        take: usize,
    ) -> IndexWindow {
        let mut kept: Vec<&DeviceRecord> = devices.iter().filter(|d| keep(d)).collect();
        kept.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        if descending {
            kept.reverse();
        }
        let before = match start {
            WindowStart::Offset(skip) => skip.min(kept.len()),
            WindowStart::After(after) if descending => {
                kept.iter().filter(|d| d.endpoint.as_str() >= after).count()
            }
            WindowStart::After(after) => {
                kept.iter().filter(|d| d.endpoint.as_str() <= after).count()
            }
        };
        IndexWindow {
            endpoints: kept
                .iter()
                .skip(before)
                .take(take)
                .map(|d| d.endpoint.clone())
                .collect(),
            before,
            total: kept.len(),
        }
    }

    /// Where the windows of the tests start: offsets within and past the list, cursors on an
    /// endpoint, between two, and before and after every one.
    const STARTS: [WindowStart<'static>; 7] = [
        WindowStart::Offset(0),
        WindowStart::Offset(7),
        WindowStart::Offset(500),
        WindowStart::After("ep050"),
        WindowStart::After("ep0505"),
        WindowStart::After(""),
        WindowStart::After("zz"),
    ];

    #[test]
    fn windows_match_a_filtered_sorted_walk_and_follow_writes() {
        let mut devices: Vec<DeviceRecord> = (0..200)
            .map(|i| {
                device(
                    &format!("ep{:03}", (i * 37) % 200),
                    ["A", "B"][i % 2],
                    i % 3 == 0,
                )
            })
            .collect();
        let index = DeviceIndex::of(devices.clone());
        let check = |index: &DeviceIndex, devices: &[DeviceRecord]| {
            let wanted: Arc<str> = Arc::from("A");
            for descending in [false, true] {
                for start in STARTS {
                    let got = index.window(
                        |_, d| d.model.as_ref() == Some(&wanted) && d.online,
                        start,
                        descending,
                        10,
                    );
                    let expected = walked(
                        devices,
                        |d| d.model.as_deref() == Some("A") && d.online,
                        start,
                        descending,
                        10,
                    );
                    assert_eq!(got, expected, "{start:?} descending {descending}");
                }
            }
        };
        check(&index, &devices);
        check_all(&index, &devices);
        devices[3].online = !devices[3].online;
        index.put(&devices[3]);
        let gone = devices.remove(10);
        index.remove(&gone.endpoint);
        check(&index, &devices);
        check_all(&index, &devices);
    }

    /// [`DeviceIndex::window_of_all`] against a walk of every device.
    fn check_all(index: &DeviceIndex, devices: &[DeviceRecord]) {
        for descending in [false, true] {
            for start in STARTS {
                let got = index.window_of_all(start, descending, 10);
                let expected = walked(devices, |_| true, start, descending, 10);
                assert_eq!(got, expected, "{start:?} descending {descending}");
            }
        }
    }

    #[test]
    fn models_are_counted_as_devices_are_written_and_removed() {
        let acme = |endpoint: &str, model: &str| {
            let mut device = device(endpoint, model, true);
            device.manufacturer = Some("Acme".into());
            device
        };
        let index = DeviceIndex::of([acme("a", "NB-1"), acme("b", "NB-1"), acme("c", "NB-2")]);
        index.put(&device("unknown-vendor", "NB-1", false));
        let counted = |index: &DeviceIndex| -> Vec<(String, String, usize)> {
            (index.models().into_iter())
                .map(|((vendor, model), n)| (vendor.to_string(), model.to_string(), n))
                .collect()
        };
        let count = |model: &str, n| ("Acme".to_string(), model.to_string(), n);
        assert_eq!(counted(&index), vec![count("NB-1", 2), count("NB-2", 1)]);
        index.put(&acme("b", "NB-2"));
        index.put(&acme("b", "NB-2"));
        index.remove("c");
        index.remove("c");
        assert_eq!(counted(&index), vec![count("NB-1", 1), count("NB-2", 1)]);
        index.remove("a");
        assert_eq!(
            counted(&index),
            vec![count("NB-2", 1)],
            "a model none has is gone"
        );
    }
}
