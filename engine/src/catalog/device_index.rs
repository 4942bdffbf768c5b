//! The devices as lists filter them: every device record's endpoint with the fields
//! `GET /v1/devices` filters on (manufacturer, model, firmware version, online, cell, the
//! groups it is in and whether it is a test device there), in memory and in endpoint order,
//! kept with each write of a device record or of a group's members. A page of a filtered list
//! is found here, and only its own records are read from the store: a list of a million
//! devices costs a pass over this index, not a million records decoded. Owns the index; the
//! records are the catalog's.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound::{Excluded, Unbounded};
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

/// The index. Cheap to share.
#[derive(Default)]
pub struct DeviceIndex {
    entries: RwLock<BTreeMap<String, Indexed>>,
    /// Each manufacturer, model and version once, shared by the devices naming it.
    names: Mutex<HashSet<Arc<str>>>,
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
        let (manufacturer, model) = (self.name(&device.manufacturer), self.name(&device.model));
        let firmware_version = self.name(&device.firmware_version);
        let mut entries = write(&self.entries);
        let entry = entries.entry(device.endpoint.clone()).or_insert(Indexed {
            manufacturer: None,
            model: None,
            firmware_version: None,
            online: false,
            cell_id: None,
            groups: Box::default(),
        });
        entry.manufacturer = manufacturer;
        entry.model = model;
        entry.firmware_version = firmware_version;
        entry.online = device.online;
        entry.cell_id = device.cell_id;
    }

    /// The device `endpoint` as indexed.
    pub fn get(&self, endpoint: &str) -> Option<Indexed> {
        read(&self.entries).get(endpoint).cloned()
    }

    /// Whether device `endpoint` is in group `group` (`None`) and, if it is, whether it is a
    /// test device there.
    pub fn placed(&self, endpoint: &str, group: &str) -> Option<bool> {
        let entries = read(&self.entries);
        Some(entries.get(endpoint)?.membership(group)?.test)
    }

    /// Device `endpoint` is now in group `group` (a test device there when `test`), or out of
    /// it (`None`). Nothing for a device the index does not hold.
    pub fn place(&self, endpoint: &str, group: &str, test: Option<bool>) {
        let shared = self.name(&Some(group.to_string()));
        let mut entries = write(&self.entries);
        let Some(entry) = entries.get_mut(endpoint) else {
            return;
        };
        let mut groups: Vec<Membership> = (entry.groups.iter())
            .filter(|m| &*m.group != group)
            .cloned()
            .collect();
        if let (Some(test), Some(group)) = (test, shared) {
            groups.push(Membership { group, test });
        }
        entry.groups = groups.into_boxed_slice();
    }

    /// `endpoint`'s record was removed.
    pub fn remove(&self, endpoint: &str) {
        write(&self.entries).remove(endpoint);
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
        let entries = read(&self.entries);
        let kept = |(endpoint, indexed): &(&String, &Indexed)| keep(endpoint, indexed);
        // One pass counts the list and, for a cursor, those on its near side.
        let before_cursor = |endpoint: &str| match start {
            WindowStart::After(after) if descending => endpoint >= after,
            WindowStart::After(after) => endpoint <= after,
            WindowStart::Offset(_) => false,
        };
        let (mut total, mut before) = (0, 0);
        for entry in entries.iter().filter(kept) {
            total += 1;
            before += usize::from(before_cursor(entry.0));
        }
        let endpoints: Vec<&String> = match (start, descending) {
            (WindowStart::Offset(skip), false) => {
                before = skip.min(total);
                let page = entries.iter().filter(kept).skip(skip).take(take);
                page.map(|(e, _)| e).collect()
            }
            (WindowStart::Offset(skip), true) => {
                before = skip.min(total);
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
        IndexWindow {
            endpoints: endpoints.into_iter().cloned().collect(),
            before,
            total,
        }
    }

    /// Every device, as indexed, for a count over all of them.
    pub fn each(&self, mut visit: impl FnMut(&str, &Indexed)) {
        for (endpoint, indexed) in read(&self.entries).iter() {
            visit(endpoint, indexed);
        }
    }

    /// `name`, shared with every other device naming it.
    fn name(&self, name: &Option<String>) -> Option<Arc<str>> {
        let name = name.as_deref()?;
        let mut names = lock(&self.names);
        if let Some(known) = names.get(name) {
            return Some(known.clone());
        }
        let shared: Arc<str> = Arc::from(name);
        names.insert(shared.clone());
        Some(shared)
    }
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
                for start in [
                    WindowStart::Offset(0),
                    WindowStart::Offset(7),
                    WindowStart::Offset(500),
                    WindowStart::After("ep050"),
                    WindowStart::After("ep0505"),
                    WindowStart::After(""),
                    WindowStart::After("zz"),
                ] {
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
        devices[3].online = !devices[3].online;
        index.put(&devices[3]);
        let gone = devices.remove(10);
        index.remove(&gone.endpoint);
        check(&index, &devices);
    }
}
