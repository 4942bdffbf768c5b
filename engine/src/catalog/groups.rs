//! Groups: a vendor and a module model chosen at creation and locked, a name, and the devices
//! in it (only devices of that vendor and model), added by the operator or, in a group that
//! takes them automatically, when a device's vendor and model are first learned. Every device
//! that joins is announced ([`GroupJoin`]), so a running task picks it up.
//!
//! A group's record holds what it is and how many devices it has; each member is a record of
//! its own (`grpm/{group}/{endpoint}`, with whether it is a test device), mirrored in the
//! catalog's device index. A group of a million devices is read, changed and listed without
//! reading its members; a device joins with one small write. Groups written by releases that
//! kept the members in the group's record are rewritten so when the catalog opens.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use tokio::sync::broadcast;

use super::device_index::DeviceIndex;
use super::firmware::name_ok;
use super::{Catalog, CatalogError, DeviceRecord, new_id};
use crate::clock::UnixMillis;
use crate::store::{Batch, Store, StoreError, StoreExt};
use crate::sync::lock;

/// Key prefix of group records.
const PREFIX: &str = "grp/";

/// Key prefix of member records.
const MEMBERS: &str = "grpm/";

/// A group of devices of one vendor and module model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Id.
    pub id: String,
    /// Name, editable.
    pub name: String,
    /// Manufacturer (/3/0/0), locked.
    pub vendor: String,
    /// Module model (/3/0/1), locked.
    pub model: String,
    /// Whether a device of its vendor and model joins it by itself, when its first survey
    /// learns them (a device the operator removes later stays out).
    #[serde(default)]
    pub auto_join: bool,
    /// How many devices it has (`GET /v1/devices?group=` lists them).
    #[serde(default)]
    pub device_count: usize,
    /// How many of them are marked as test devices (white paper section 9): a task can run on
    /// them first, in a stage of their own.
    #[serde(default)]
    pub test_device_count: usize,
    /// Moves with every change of the group or of its members, so its ETag does.
    #[serde(default)]
    pub revision: u64,
    /// Creation time.
    pub created_at: UnixMillis,
}

/// A group's devices, as a task starts with them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupMembers {
    /// Every member, in endpoint order.
    pub devices: Vec<String>,
    /// Those marked as test devices.
    pub test_devices: BTreeSet<String>,
}

/// One device in one group, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Member {
    /// The group's id.
    group: String,
    /// The device.
    endpoint: String,
    /// Whether it is one of the group's test devices.
    test: bool,
}

/// A group record as any release wrote it: earlier ones kept the members in it.
#[derive(Serialize, Deserialize)]
struct StoredGroup {
    #[serde(flatten)]
    group: Group,
    #[serde(default)]
    devices: BTreeSet<String>,
    #[serde(default)]
    test_devices: BTreeSet<String>,
}

/// Devices that joined a group (announced after the group was saved).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupJoin {
    /// The group.
    pub group_id: String,
    /// The endpoints that were not in it before.
    pub endpoints: Vec<String>,
}

impl Catalog {
    /// Creates an empty group for `vendor` and `model`.
    pub fn create_group(
        &self,
        name: &str,
        vendor: &str,
        model: &str,
    ) -> Result<Group, CatalogError> {
        if !name_ok(name) || !name_ok(vendor) || !name_ok(model) {
            return Err(CatalogError::Invalid(
                "a group needs a name, a vendor and a model (1 to 255 bytes each)".into(),
            ));
        }
        let group = Group {
            id: new_id("grp"),
            name: name.to_string(),
            vendor: vendor.to_string(),
            model: model.to_string(),
            auto_join: false,
            device_count: 0,
            test_device_count: 0,
            revision: 0,
            created_at: self.clock.now(),
        };
        self.store.put_durable(&group_key(&group.id), &group)?;
        Ok(group)
    }

    /// The group `id`.
    pub fn group(&self, id: &str) -> Result<Group, CatalogError> {
        self.store
            .get(&group_key(id))?
            .ok_or_else(|| CatalogError::NotFound {
                kind: "group",
                id: id.to_string(),
            })
    }

    /// Every group.
    pub fn groups(&self) -> Result<Vec<Group>, CatalogError> {
        Ok(self.store.scan(PREFIX)?)
    }

    /// The devices of group `id`, read from their records.
    pub fn group_members(&self, id: &str) -> Result<GroupMembers, CatalogError> {
        self.group(id)?;
        let mut members = GroupMembers::default();
        for member in self.store.scan::<Member>(&members_prefix(id))? {
            if member.test {
                members.test_devices.insert(member.endpoint.clone());
            }
            members.devices.push(member.endpoint);
        }
        Ok(members)
    }

    /// Those of `endpoints` that are test devices of group `id`.
    pub fn test_devices_among(&self, id: &str, endpoints: &[String]) -> BTreeSet<String> {
        (endpoints.iter())
            .filter(|endpoint| self.index.placed(endpoint, id) == Some(true))
            .cloned()
            .collect()
    }

    /// The groups device `endpoint` is in.
    pub fn groups_of(&self, endpoint: &str) -> Result<Vec<Group>, CatalogError> {
        (self.index.memberships(endpoint).iter())
            .map(|membership| self.group(&membership.group))
            .collect()
    }

    /// Renames a group (vendor and model stay).
    pub fn rename_group(&self, id: &str, name: &str) -> Result<Group, CatalogError> {
        if !name_ok(name) {
            return Err(CatalogError::Invalid(
                "a group needs a name of 1 to 255 bytes".into(),
            ));
        }
        self.revise_group(id, |group| group.name = name.to_string())
    }

    /// Whether devices of group `id` join it by themselves when first surveyed.
    pub fn set_auto_join(&self, id: &str, auto_join: bool) -> Result<Group, CatalogError> {
        self.revise_group(id, |group| group.auto_join = auto_join)
    }

    /// Adds devices; refuses the whole request, naming the device, if one is unknown or of
    /// another vendor or model.
    pub fn add_to_group(&self, id: &str, endpoints: &[String]) -> Result<Group, CatalogError> {
        let _serialized = lock(&self.group_writes);
        let mut group = self.group(id)?;
        for endpoint in endpoints {
            self.check_fits(&group, endpoint)?;
        }
        let joined = self.join(&mut group, endpoints)?;
        self.announce_join(&group.id, joined);
        Ok(group)
    }

    /// Puts `device`, whose vendor and model its first survey just learned, in every group of
    /// that vendor and model that takes devices by itself.
    pub(super) fn auto_join(&self, device: &DeviceRecord) -> Result<(), CatalogError> {
        let (Some(vendor), Some(model)) = (&device.manufacturer, &device.model) else {
            return Ok(());
        };
        let _serialized = lock(&self.group_writes);
        for mut group in self.groups()? {
            if group.auto_join && &group.vendor == vendor && &group.model == model {
                let joined = self.join(&mut group, std::slice::from_ref(&device.endpoint))?;
                self.announce_join(&group.id, joined);
            }
        }
        Ok(())
    }

    /// Every later join, as it happens.
    pub fn subscribe_joins(&self) -> broadcast::Receiver<GroupJoin> {
        self.joins.subscribe()
    }

    /// Removes devices from a group (absent ones are ignored).
    pub fn remove_from_group(&self, id: &str, endpoints: &[String]) -> Result<Group, CatalogError> {
        let _serialized = lock(&self.group_writes);
        let mut group = self.group(id)?;
        let mut batch = Batch::new();
        let mut left = Vec::new();
        for endpoint in distinct(endpoints) {
            if let Some(test) = self.index.placed(endpoint, id) {
                leave(&mut group, endpoint, test, &mut batch);
                left.push((endpoint, None));
            }
        }
        if !left.is_empty() {
            self.commit(&mut group, batch, left)?;
        }
        Ok(group)
    }

    /// Marks devices of group `id` as test devices (`test`) or as ordinary ones (absent ones
    /// are ignored); marking refuses the whole request, naming the device, if one is not in
    /// the group.
    pub fn mark_test_devices(
        &self,
        id: &str,
        endpoints: &[String],
        test: bool,
    ) -> Result<Group, CatalogError> {
        let _serialized = lock(&self.group_writes);
        let mut group = self.group(id)?;
        let outsider = endpoints
            .iter()
            .find(|endpoint| self.index.placed(endpoint, id).is_none());
        if let Some(outsider) = outsider.filter(|_| test) {
            return Err(CatalogError::Invalid(format!(
                "device {outsider} is not in group {id}: add it to the group first"
            )));
        }
        let mut batch = Batch::new();
        let mut marked = Vec::new();
        for endpoint in distinct(endpoints) {
            if self.index.placed(endpoint, id) == Some(!test) {
                batch.put(member_key(id, endpoint), &Member::of(id, endpoint, test));
                if test {
                    group.test_device_count += 1;
                } else {
                    group.test_device_count = group.test_device_count.saturating_sub(1);
                }
                marked.push((endpoint, Some(test)));
            }
        }
        if !marked.is_empty() {
            self.commit(&mut group, batch, marked)?;
        }
        Ok(group)
    }

    /// Deletes a group and its members' records. The caller checks no task uses it.
    pub fn delete_group(&self, id: &str) -> Result<(), CatalogError> {
        let _serialized = lock(&self.group_writes);
        self.group(id)?;
        let prefix = members_prefix(id);
        let mut batch = Batch::new();
        batch.remove(group_key(id));
        let members: Vec<String> = (self.store.scan_raw(&prefix)?.into_iter())
            .map(|(key, _)| key)
            .collect();
        for key in &members {
            batch.remove(key.clone());
        }
        self.store.apply(batch)?;
        self.store.flush()?;
        for key in &members {
            self.index.place(&key[prefix.len()..], id, None);
        }
        Ok(())
    }

    /// Takes `endpoint` out of every group it is in, in `batch`; the caller holds the group
    /// writes' lock and applies the batch.
    pub(super) fn leave_every_group(
        &self,
        endpoint: &str,
        batch: &mut Batch,
    ) -> Result<(), CatalogError> {
        for membership in self.index.memberships(endpoint).iter() {
            let mut group = self.group(&membership.group)?;
            leave(&mut group, endpoint, membership.test, batch);
            next_revision(&mut group, batch);
        }
        Ok(())
    }

    /// Changes group `id` with `change` and saves it.
    fn revise_group(
        &self,
        id: &str,
        change: impl FnOnce(&mut Group),
    ) -> Result<Group, CatalogError> {
        let _serialized = lock(&self.group_writes);
        let mut group = self.group(id)?;
        change(&mut group);
        self.commit(&mut group, Batch::new(), [])?;
        Ok(group)
    }

    /// Refuses `endpoint` in `group` unless the device is known and of its vendor and model.
    fn check_fits(&self, group: &Group, endpoint: &str) -> Result<(), CatalogError> {
        let device = self
            .index
            .get(endpoint)
            .ok_or_else(|| CatalogError::NotFound {
                kind: "device",
                id: endpoint.to_string(),
            })?;
        let (vendor, model) = (device.manufacturer.as_deref(), device.model.as_deref());
        if vendor == Some(group.vendor.as_str()) && model == Some(group.model.as_str()) {
            return Ok(());
        }
        Err(CatalogError::Invalid(format!(
            "device {endpoint} is {} {}, not {} {} like group {}",
            vendor.unwrap_or("(unknown vendor)"),
            model.unwrap_or("(unknown model)"),
            group.vendor,
            group.model,
            group.id
        )))
    }

    /// Puts those of `endpoints` not in `group` yet in it, saved with the group; the
    /// endpoints that joined. The caller holds the group writes' lock.
    fn join(&self, group: &mut Group, endpoints: &[String]) -> Result<Vec<String>, CatalogError> {
        let joined: Vec<String> = distinct(endpoints)
            .filter(|endpoint| self.index.placed(endpoint, &group.id).is_none())
            .cloned()
            .collect();
        if joined.is_empty() {
            return Ok(joined);
        }
        let mut batch = Batch::new();
        for endpoint in &joined {
            let member = Member::of(&group.id, endpoint, false);
            batch.put(member_key(&group.id, endpoint), &member);
        }
        group.device_count += joined.len();
        let placed = joined.iter().map(|endpoint| (endpoint, Some(false)));
        self.commit(group, batch, placed)?;
        Ok(joined)
    }

    /// Writes `batch` with `group` (its revision moved on) durably, then places each device of
    /// `placed` in it (or out of it, `None`) in the device index.
    fn commit<'a>(
        &self,
        group: &mut Group,
        mut batch: Batch,
        placed: impl IntoIterator<Item = (&'a String, Option<bool>)>,
    ) -> Result<(), CatalogError> {
        next_revision(group, &mut batch);
        self.store.apply(batch)?;
        self.store.flush()?;
        for (endpoint, test) in placed {
            self.index.place(endpoint, &group.id, test);
        }
        Ok(())
    }

    fn announce_join(&self, group_id: &str, endpoints: Vec<String>) {
        if !endpoints.is_empty() {
            let join = GroupJoin {
                group_id: group_id.to_string(),
                endpoints,
            };
            // Nobody listening (no campaigns) is fine.
            let _ = self.joins.send(join);
        }
    }
}

impl Member {
    fn of(group: &str, endpoint: &str, test: bool) -> Member {
        Member {
            group: group.to_string(),
            endpoint: endpoint.to_string(),
            test,
        }
    }
}

/// Rewrites each group stored with its members inside (by earlier releases) as a group record
/// and a record per member, then places every member of every group in `index`.
pub(super) fn load_members(store: &dyn Store, index: &DeviceIndex) -> Result<(), CatalogError> {
    for (key, bytes) in store.scan_raw(PREFIX)? {
        let stored: StoredGroup = crate::store::decode(&key, &bytes)?;
        if !stored.devices.is_empty() || !stored.test_devices.is_empty() {
            split_members(store, stored)?;
        }
    }
    for member in store.scan::<Member>(MEMBERS)? {
        index.place(&member.endpoint, &member.group, Some(member.test));
    }
    Ok(())
}

/// Writes `stored`'s members as records of their own and the group without them, in one
/// batch.
fn split_members(store: &dyn Store, stored: StoredGroup) -> Result<(), StoreError> {
    let StoredGroup {
        mut group,
        devices,
        test_devices,
    } = stored;
    let mut batch = Batch::new();
    for endpoint in &devices {
        let member = Member::of(&group.id, endpoint, test_devices.contains(endpoint));
        batch.put(member_key(&group.id, endpoint), &member);
    }
    group.device_count = devices.len();
    group.test_device_count = test_devices.intersection(&devices).count();
    next_revision(&mut group, &mut batch);
    store.apply(batch)?;
    store.flush()
}

/// Takes `endpoint` (a test device when `test`) out of `group`'s count and its record out of
/// the store, in `batch`.
fn leave(group: &mut Group, endpoint: &str, test: bool, batch: &mut Batch) {
    batch.remove(member_key(&group.id, endpoint));
    group.device_count = group.device_count.saturating_sub(1);
    group.test_device_count = group.test_device_count.saturating_sub(usize::from(test));
}

/// Moves `group`'s revision on and puts it in `batch`.
fn next_revision(group: &mut Group, batch: &mut Batch) {
    group.revision += 1;
    batch.put(group_key(&group.id), group);
}

/// `endpoints` without repeats, in their order.
fn distinct(endpoints: &[String]) -> impl Iterator<Item = &String> {
    let mut seen = HashSet::new();
    endpoints
        .iter()
        .filter(move |endpoint| seen.insert(endpoint.as_str()))
}

pub(super) fn group_key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

fn members_prefix(id: &str) -> String {
    format!("{MEMBERS}{id}/")
}

fn member_key(id: &str, endpoint: &str) -> String {
    format!("{MEMBERS}{id}/{endpoint}")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::catalog::devices::Survey;
    use crate::catalog::firmware::MAX_NAME_BYTES;
    use crate::clock::Clock;
    use crate::plugin::{HostConfig, PluginHost, PluginRegistry};
    use crate::store::SledStore;
    use crate::transfer::PackageShelf;

    const T0: UnixMillis = 1_800_000_000_000;

    fn open(store: &Arc<dyn Store>) -> Catalog {
        let host = PluginHost::new(HostConfig::default()).unwrap();
        let plugins = Arc::new(PluginRegistry::new(host).unwrap());
        Catalog::open(
            store.clone(),
            PackageShelf::new(),
            plugins,
            Clock::starting_at(T0),
        )
        .unwrap()
    }

    /// A catalog knowing devices `ep0..ep{n}` of Acme NB-1, and its store.
    fn with_devices(n: usize) -> (Arc<dyn Store>, Catalog, Vec<String>) {
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary().unwrap());
        let catalog = open(&store);
        let survey = Survey {
            manufacturer: Some("Acme".into()),
            model: Some("NB-1".into()),
            ..Survey::default()
        };
        let endpoints: Vec<String> = (0..n).map(|i| format!("ep{i}")).collect();
        for endpoint in &endpoints {
            catalog.device_surveyed(endpoint, &survey).unwrap();
        }
        (store, catalog, endpoints)
    }

    fn placed(catalog: &Catalog, group: &str, endpoints: &[String]) -> Vec<Option<bool>> {
        (endpoints.iter())
            .map(|endpoint| catalog.index.placed(endpoint, group))
            .collect()
    }

    #[test]
    fn names_vendors_and_models_are_1_to_255_bytes() {
        let (_, catalog, _) = with_devices(0);
        let (fits, long) = ("n".repeat(MAX_NAME_BYTES), "n".repeat(MAX_NAME_BYTES + 1));
        let long = long.as_str();
        let group = catalog.create_group(&fits, &fits, &fits).unwrap();
        for (name, vendor, model) in [
            (long, "Acme", "NB-1"),
            ("g", long, "NB-1"),
            ("g", "Acme", long),
            (" ", "Acme", "NB-1"),
        ] {
            let refused = catalog.create_group(name, vendor, model);
            assert!(
                matches!(refused, Err(CatalogError::Invalid(_))),
                "{refused:?}"
            );
        }
        assert!(matches!(
            catalog.rename_group(&group.id, long),
            Err(CatalogError::Invalid(_))
        ));
        let refused = catalog.add_firmware("Acme", long, "1.0", b"image");
        assert!(
            matches!(refused, Err(CatalogError::Invalid(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn members_are_records_of_their_own_counted_in_the_group_and_found_again_at_open() {
        let (store, catalog, eps) = with_devices(4);
        let group = catalog.create_group("g", "Acme", "NB-1").unwrap();
        let twice = [
            eps[0].clone(),
            eps[1].clone(),
            eps[0].clone(),
            eps[2].clone(),
        ];
        let added = catalog.add_to_group(&group.id, &twice).unwrap();
        assert_eq!(
            (added.device_count, added.revision),
            (3, 1),
            "one added twice counts once"
        );
        let again = catalog.add_to_group(&group.id, &eps[..2]).unwrap();
        assert_eq!(
            again, added,
            "adding members again changes nothing, not even the revision"
        );
        let marked = (catalog.mark_test_devices(&group.id, &eps[1..3], true)).unwrap();
        assert_eq!((marked.test_device_count, marked.revision), (2, 2));
        let outsider = catalog.mark_test_devices(&group.id, &eps[3..], true);
        assert!(
            matches!(outsider, Err(CatalogError::Invalid(_))),
            "{outsider:?}"
        );
        let left = (catalog.remove_from_group(&group.id, &eps[2..])).unwrap();
        assert_eq!((left.device_count, left.test_device_count), (2, 1));
        assert_eq!(catalog.group(&group.id).unwrap(), left, "as stored");

        let members = catalog.group_members(&group.id).unwrap();
        assert_eq!(members.devices, eps[..2].to_vec());
        assert_eq!(members.test_devices, BTreeSet::from([eps[1].clone()]));
        let expected = vec![Some(false), Some(true), None, None];
        assert_eq!(placed(&catalog, &group.id, &eps), expected);
        assert_eq!(
            catalog.test_devices_among(&group.id, &eps),
            members.test_devices
        );
        assert_eq!(catalog.groups_of(&eps[1]).unwrap(), vec![left.clone()]);

        drop(catalog);
        let reopened = open(&store);
        assert_eq!(
            placed(&reopened, &group.id, &eps),
            expected,
            "the index is rebuilt"
        );
        assert_eq!(reopened.group_members(&group.id).unwrap(), members);
    }

    #[test]
    fn a_deleted_group_or_device_takes_its_member_records_with_it() {
        let (store, catalog, eps) = with_devices(3);
        let kept = catalog.create_group("kept", "Acme", "NB-1").unwrap();
        let gone = catalog.create_group("gone", "Acme", "NB-1").unwrap();
        catalog.add_to_group(&kept.id, &eps).unwrap();
        catalog.add_to_group(&gone.id, &eps).unwrap();
        catalog
            .mark_test_devices(&kept.id, &eps[..1], true)
            .unwrap();
        catalog.delete_group(&gone.id).unwrap();
        catalog.delete_device(&eps[0]).unwrap();
        assert_eq!(store.scan_raw(&members_prefix(&gone.id)).unwrap().len(), 0);
        let kept = catalog.group(&kept.id).unwrap();
        assert_eq!((kept.device_count, kept.test_device_count), (2, 0));
        assert_eq!(
            catalog.group_members(&kept.id).unwrap().devices,
            eps[1..].to_vec()
        );
        assert_eq!(placed(&catalog, &gone.id, &eps), vec![None; 3]);
        assert_eq!(catalog.groups_of(&eps[1]).unwrap(), vec![kept]);
    }

    #[test]
    fn a_group_stored_with_its_members_inside_is_split_when_the_catalog_opens() {
        let (store, catalog, eps) = with_devices(3);
        drop(catalog);
        let legacy = serde_json::json!({
            "id": "grp-old", "name": "old", "vendor": "Acme", "model": "NB-1",
            "devices": eps, "auto_join": true, "test_devices": [eps[2]],
            "created_at": T0,
        });
        store.put_durable(&group_key("grp-old"), &legacy).unwrap();
        let catalog = open(&store);
        let group = catalog.group("grp-old").unwrap();
        assert_eq!(
            (group.device_count, group.test_device_count, group.auto_join),
            (3, 1, true)
        );
        let members = catalog.group_members("grp-old").unwrap();
        assert_eq!(members.devices, eps);
        assert_eq!(members.test_devices, BTreeSet::from([eps[2].clone()]));
        assert_eq!(
            placed(&catalog, "grp-old", &eps),
            vec![Some(false), Some(false), Some(true)]
        );
        let stored: serde_json::Value = store.get(&group_key("grp-old")).unwrap().unwrap();
        assert!(stored.get("devices").is_none(), "{stored}");
        drop(catalog);
        let again = open(&store).group("grp-old").unwrap();
        assert_eq!(again, group, "split once");
    }
}
