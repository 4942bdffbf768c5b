//! Devices as the catalog knows them: created at their first registration, kept current by
//! later registrations and by surveys (reads of /3/0 and /4/0), marked offline when their
//! registration ends, and forgotten when an operator deletes them (a device that registers
//! again is created again).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::firmware::{MAX_NAME_BYTES, MAX_VERSION_BYTES};
use super::{Catalog, CatalogError};
use crate::clock::UnixMillis;
use crate::lwm2m::firmware::{self, DeliveryMethod, UpdateResult};
use crate::lwm2m::{
    ContentFormat, DeviceManagement, LwM2mPath, ManagementError, Record, Registration,
};
use crate::store::{Batch, StoreExt};
use crate::sync::lock;

/// Key prefix of device records.
pub(crate) const PREFIX: &str = "dev/";

/// One device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// LwM2M endpoint client name: the device's id.
    pub endpoint: String,
    /// A name an operator gave it (the endpoint until then).
    pub name: String,
    /// IMEI, from a `urn:imei:` endpoint name.
    pub imei: Option<String>,
    /// /3/0/0.
    pub manufacturer: Option<String>,
    /// /3/0/1.
    pub model: Option<String>,
    /// /3/0/3.
    pub firmware_version: Option<String>,
    /// Last Register or Update.
    pub last_seen: UnixMillis,
    /// Registered now.
    pub online: bool,
    /// /3/0/9, percent.
    pub battery: Option<u8>,
    /// /3/0/6, the power sources (empty: not reported).
    #[serde(default)]
    pub power_sources: Vec<u8>,
    /// /4/0/2, dBm.
    pub signal_dbm: Option<i32>,
    /// /3/0/10, KiB.
    pub memory_free_kb: Option<u32>,
    /// /4/0/8.
    pub cell_id: Option<u32>,
    /// /5/0/9.
    pub delivery: Option<DeliveryMethod>,
    /// When the last survey of a registered device answered.
    #[serde(default)]
    pub last_surveyed: Option<UnixMillis>,
    /// The registration that survey was made in: its values stand for that registration only.
    #[serde(default)]
    pub surveyed_registration: Option<String>,
    /// /5/0/5 as that survey read it, given with it to the attempt that takes it (only then:
    /// it moves with every upgrade), which then need not observe it to know it.
    #[serde(default)]
    pub surveyed_update_result: Option<UpdateResult>,
}

impl DeviceRecord {
    /// A device just learned of at `now`: nothing known of it but its endpoint.
    pub(crate) fn new(endpoint: &str, now: UnixMillis) -> Self {
        DeviceRecord {
            endpoint: endpoint.to_string(),
            name: endpoint.to_string(),
            imei: endpoint.strip_prefix("urn:imei:").map(str::to_string),
            manufacturer: None,
            model: None,
            firmware_version: None,
            last_seen: now,
            online: true,
            battery: None,
            power_sources: Vec::new(),
            signal_dbm: None,
            memory_free_kb: None,
            cell_id: None,
            delivery: None,
            last_surveyed: None,
            surveyed_registration: None,
            surveyed_update_result: None,
        }
    }

    /// Takes the values a survey read (a value it did not get stays as it was).
    pub fn apply(&mut self, survey: &Survey) {
        fn merge<T: Clone>(field: &mut Option<T>, value: &Option<T>) {
            if value.is_some() {
                field.clone_from(value);
            }
        }
        merge(&mut self.manufacturer, &survey.manufacturer);
        merge(&mut self.model, &survey.model);
        merge(&mut self.firmware_version, &survey.firmware_version);
        merge(&mut self.battery, &survey.battery);
        if !survey.power_sources.is_empty() {
            self.power_sources.clone_from(&survey.power_sources);
        }
        merge(&mut self.signal_dbm, &survey.signal_dbm);
        merge(&mut self.memory_free_kb, &survey.memory_free_kb);
        merge(&mut self.cell_id, &survey.cell_id);
        merge(&mut self.delivery, &survey.delivery);
    }
}

/// What one round of reads learned about a device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Survey {
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub firmware_version: Option<String>,
    pub battery: Option<u8>,
    /// /3/0/6, every instance (empty: not reported).
    pub power_sources: Vec<u8>,
    pub signal_dbm: Option<i32>,
    pub memory_free_kb: Option<u32>,
    pub cell_id: Option<u32>,
    pub delivery: Option<DeliveryMethod>,
    /// /5/0/5, when the read brought it: a delivery that follows the survey at once need
    /// not observe it to know it. Kept in the device's record only with a survey that stands
    /// for an attempt (`surveyed_update_result`): it moves with every upgrade.
    pub update_result: Option<UpdateResult>,
}

/// The resources a survey needs of each object, read one by one from a device that does not
/// read whole instances.
const SURVEYED: [(u16, &[u16]); 3] = [(3, &[0, 1, 3, 6, 9, 10]), (4, &[2, 8]), (5, &[9])];

/// Reads the Device (/3/0), Connectivity Monitoring (/4/0) and Firmware Update (/5/0) object
/// instances of the device of `registration`: in one Read-Composite from a device of LwM2M
/// 1.1 or later, else (or when it refuses one) each instance, or each of their resources one
/// by one from a device that reads no whole instance. A device without /4 still answers for
/// the rest.
pub async fn survey(
    management: &DeviceManagement,
    registration: &Registration,
) -> Result<Survey, ManagementError> {
    let device = registration.address;
    if registration.lwm2m_version.as_str() != "1.0" {
        let instances = SURVEYED.map(|(object, _)| LwM2mPath::instance(object, 0));
        let format = match registration.announced_format {
            Some(ContentFormat::SenmlJson) => ContentFormat::SenmlJson,
            _ => ContentFormat::SenmlCbor,
        };
        match management.read_composite(device, &instances, format).await {
            Ok(records) if records.iter().any(|r| r.path.starts_with(&instances[0])) => {
                return Ok(Survey::from_records(&records));
            }
            Ok(_) | Err(ManagementError::Status { .. } | ManagementError::Content { .. }) => {
                tracing::debug!(endpoint = %registration.endpoint, "no Read-Composite: reading instances");
            }
            Err(error) => return Err(error),
        }
    }
    let mut records = Vec::new();
    for (object, resources) in SURVEYED {
        let instance = LwM2mPath::instance(object, 0);
        match management.read_instance(device, instance, resources).await {
            Ok(more) => records.extend(more),
            Err(ManagementError::Status { .. }) if object != 3 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(Survey::from_records(&records))
}

impl Survey {
    /// What `device` holds of its surveys.
    fn from_device(device: &DeviceRecord) -> Self {
        Survey {
            manufacturer: device.manufacturer.clone(),
            model: device.model.clone(),
            firmware_version: device.firmware_version.clone(),
            battery: device.battery,
            power_sources: device.power_sources.clone(),
            signal_dbm: device.signal_dbm,
            memory_free_kb: device.memory_free_kb,
            cell_id: device.cell_id,
            delivery: device.delivery,
            update_result: device.surveyed_update_result,
        }
    }

    fn from_records(records: &[Record]) -> Self {
        let find = |path: LwM2mPath| records.iter().find(|r| r.path == path).map(|r| &r.value);
        // A text longer than the API takes for it is not kept: unknown, as if not reported
        // (a device's names become parts of store keys, and are shown in every listing).
        let text = |path, max: usize| {
            (find(path).and_then(|v| v.as_string().ok())).filter(|text| text.len() <= max)
        };
        let number = |path| find(path).and_then(|v| v.as_i64().ok());
        Survey {
            manufacturer: text(firmware::MANUFACTURER, MAX_NAME_BYTES),
            model: text(firmware::MODEL_NUMBER, MAX_NAME_BYTES),
            firmware_version: text(firmware::FIRMWARE_VERSION, MAX_VERSION_BYTES),
            battery: number(firmware::BATTERY_LEVEL).and_then(|n| u8::try_from(n).ok()),
            power_sources: records
                .iter()
                .filter(|r| r.path.starts_with(&firmware::POWER_SOURCES))
                .filter_map(|r| r.value.as_i64().ok())
                .filter_map(|n| u8::try_from(n).ok())
                .collect(),
            signal_dbm: number(firmware::RADIO_SIGNAL_STRENGTH).and_then(|n| i32::try_from(n).ok()),
            memory_free_kb: number(firmware::MEMORY_FREE).and_then(|n| u32::try_from(n).ok()),
            cell_id: number(firmware::CELL_ID).and_then(|n| u32::try_from(n).ok()),
            delivery: number(firmware::DELIVERY_METHOD).and_then(DeliveryMethod::from_number),
            update_result: number(firmware::UPDATE_RESULT).and_then(UpdateResult::from_number),
        }
    }
}

impl Catalog {
    /// The device `endpoint`.
    pub fn device(&self, endpoint: &str) -> Result<DeviceRecord, CatalogError> {
        self.store
            .get(&device_key(endpoint))?
            .ok_or_else(|| CatalogError::NotFound {
                kind: "device",
                id: endpoint.to_string(),
            })
    }

    /// Every device, in endpoint order.
    pub fn devices(&self) -> Result<Vec<DeviceRecord>, CatalogError> {
        Ok(self.store.scan(PREFIX)?)
    }

    /// The devices as lists filter them, in endpoint order.
    pub fn device_index(&self) -> &super::device_index::DeviceIndex {
        &self.index
    }

    /// A registration or an Update arrived: the device exists, is online, and was seen now.
    pub fn device_seen(&self, registration: &Registration) -> Result<DeviceRecord, CatalogError> {
        let mut seen = self.devices_seen(&[&registration.endpoint])?;
        Ok(seen.remove(0))
    }

    /// Registrations or Updates of each of `endpoints` arrived: [`Catalog::device_seen`] of
    /// each, in one read and one write of the store. Their records, in the same order.
    pub fn devices_seen(&self, endpoints: &[&str]) -> Result<Vec<DeviceRecord>, CatalogError> {
        let now = self.clock.now();
        self.update_devices(endpoints, |device| {
            device.online = true;
            device.last_seen = now;
        })
    }

    /// The device's registration ended (de-registered or expired): it is offline. An
    /// endpoint the catalog does not know (never recorded, or deleted) stays unknown (`None`).
    pub fn device_gone(&self, endpoint: &str) -> Result<Option<DeviceRecord>, CatalogError> {
        self.update_known_device(endpoint, |device| device.online = false)
    }

    /// Removes `endpoint`'s record if the device never answered a survey (its model is not
    /// known, so no group holds it): what a registration that ended left of a device that may
    /// never have existed (a forged Register). True when removed.
    pub fn forget_unsurveyed_device(&self, endpoint: &str) -> Result<bool, CatalogError> {
        let _serialized = lock(&self.device_writes);
        let key = device_key(endpoint);
        let unsurveyed = self
            .store
            .get::<DeviceRecord>(&key)?
            .is_some_and(|device| device.model.is_none());
        if unsurveyed {
            let mut batch = Batch::new();
            batch.remove(key);
            self.store.apply(batch)?;
            self.index.remove(endpoint);
        }
        Ok(unsurveyed)
    }

    /// Records what a survey read (creating the device if the catalog does not know it).
    pub fn device_surveyed(
        &self,
        endpoint: &str,
        survey: &Survey,
    ) -> Result<DeviceRecord, CatalogError> {
        self.update_device(endpoint, |device| device.apply(survey))
    }

    /// Records what a survey of a registered device read, unless the device was deleted while
    /// the survey ran (`None`: a deleted device is not brought back by its survey).
    pub fn known_device_surveyed(
        &self,
        endpoint: &str,
        survey: &Survey,
    ) -> Result<Option<DeviceRecord>, CatalogError> {
        self.update_known_device(endpoint, |device| device.apply(survey))
    }

    /// Records what the survey a Register started read of the device in `registration`, now:
    /// until it is older than a caller's limit, [`Catalog::take_fresh_survey`] gives it back,
    /// once, instead of a new one. A device whose vendor and model this survey learned first
    /// joins the groups that take such devices by themselves.
    pub fn registered_device_surveyed(
        &self,
        registration: &Registration,
        survey: &Survey,
    ) -> Result<DeviceRecord, CatalogError> {
        let now = self.clock.now();
        let mut first_learned = false;
        let device = self.update_device(&registration.endpoint, |device| {
            let unknown = device.manufacturer.is_none() || device.model.is_none();
            device.apply(survey);
            first_learned = unknown && device.manufacturer.is_some() && device.model.is_some();
            device.last_surveyed = Some(now);
            device.surveyed_registration = Some(registration.id.clone());
            device.surveyed_update_result = survey.update_result;
        })?;
        if first_learned && self.joins_groups {
            self.auto_join(&device)?;
        }
        Ok(device)
    }

    /// Another node of a cluster wrote `endpoint`'s record: the index takes it again, and a
    /// device whose vendor and model it knows now and did not before joins the groups that
    /// take such devices by themselves.
    pub fn learn_device(&self, endpoint: &str) -> Result<(), CatalogError> {
        let serialized = lock(&self.device_writes);
        let Some(device) = self.store.get::<DeviceRecord>(&device_key(endpoint))? else {
            self.index.remove(endpoint);
            return Ok(());
        };
        let modelled = |indexed: &super::device_index::Indexed| {
            indexed.manufacturer.is_some() && indexed.model.is_some()
        };
        let known_before = self.index.get(endpoint).is_some_and(|i| modelled(&i));
        self.index.put(&device);
        drop(serialized);
        if !known_before {
            self.auto_join(&device)?;
        }
        Ok(())
    }

    /// The values the survey a Register started read, if it was of `registration` and made
    /// no longer than `max_age` ago, and no one took them yet: they are given once (a device
    /// asked to wait, or that failed, is surveyed again), and a device that registered since,
    /// or was surveyed long ago, is surveyed again.
    pub fn take_fresh_survey(
        &self,
        registration: &Registration,
        max_age: Duration,
    ) -> Option<Survey> {
        let device = self.device(&registration.endpoint).ok()?;
        self.fresh_survey(&device, registration, max_age)?;
        self.update_known_device(&registration.endpoint, |device| {
            device.last_surveyed = None;
            device.surveyed_update_result = None;
        })
        .ok()?;
        Some(Survey::from_device(&device))
    }

    /// When the survey [`Catalog::take_fresh_survey`] would give for `registration` with
    /// `max_age` was made, if there is one; it stays there.
    pub fn fresh_survey_at(
        &self,
        registration: &Registration,
        max_age: Duration,
    ) -> Option<UnixMillis> {
        let device = self.device(&registration.endpoint).ok()?;
        self.fresh_survey(&device, registration, max_age)
    }

    /// When `device` was last surveyed, if that survey was of `registration`, made less than
    /// `max_age` ago, and not taken yet.
    fn fresh_survey(
        &self,
        device: &DeviceRecord,
        registration: &Registration,
        max_age: Duration,
    ) -> Option<UnixMillis> {
        let surveyed = device.last_surveyed?;
        let max_age = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        let fresh = self.clock.now().saturating_sub(surveyed) < max_age;
        let same = device.surveyed_registration.as_deref() == Some(registration.id.as_str());
        (fresh && same).then_some(surveyed)
    }

    /// Forgets the device `endpoint` and takes it out of every group, in one write. The caller
    /// checks that no task that is not final holds it.
    pub fn delete_device(&self, endpoint: &str) -> Result<(), CatalogError> {
        let _serialized = lock(&self.device_writes);
        self.device(endpoint)?;
        let _groups = lock(&self.group_writes);
        let mut batch = Batch::new();
        batch.remove(device_key(endpoint));
        self.leave_every_group(endpoint, &mut batch)?;
        self.store.apply(batch)?;
        self.index.remove(endpoint);
        self.store.flush()?;
        Ok(())
    }

    /// Renames a device.
    pub fn rename_device(&self, endpoint: &str, name: &str) -> Result<DeviceRecord, CatalogError> {
        self.device(endpoint)?;
        self.update_device(endpoint, |device| device.name = name.to_string())
    }

    /// Changes a device the catalog knows; `None` (nothing written) for one it does not.
    fn update_known_device(
        &self,
        endpoint: &str,
        change: impl FnOnce(&mut DeviceRecord),
    ) -> Result<Option<DeviceRecord>, CatalogError> {
        let _serialized = lock(&self.device_writes);
        let key = device_key(endpoint);
        let Some(mut device) = self.store.get::<DeviceRecord>(&key)? else {
            return Ok(None);
        };
        change(&mut device);
        let mut batch = Batch::new();
        batch.put(key, &device);
        self.store.apply(batch)?;
        self.index.put(&device);
        Ok(Some(device))
    }

    /// Changes a device, creating it first if the catalog does not know it.
    fn update_device(
        &self,
        endpoint: &str,
        change: impl FnMut(&mut DeviceRecord),
    ) -> Result<DeviceRecord, CatalogError> {
        let mut changed = self.update_devices(&[endpoint], change)?;
        Ok(changed.remove(0))
    }

    /// Makes one `change` to each of `endpoints`' devices (twice to one named twice), creating
    /// those the catalog does not know, in one read and one write of the store: the devices
    /// as changed, in the order of `endpoints`.
    fn update_devices(
        &self,
        endpoints: &[&str],
        mut change: impl FnMut(&mut DeviceRecord),
    ) -> Result<Vec<DeviceRecord>, CatalogError> {
        let _serialized = lock(&self.device_writes);
        let keys: Vec<String> = endpoints
            .iter()
            .map(|endpoint| device_key(endpoint))
            .collect();
        let stored = self.store.get_many::<DeviceRecord>(&keys)?;
        let now = self.clock.now();
        let mut latest: HashMap<&str, DeviceRecord> = HashMap::new();
        let mut changed = Vec::with_capacity(endpoints.len());
        for (&endpoint, stored) in endpoints.iter().zip(stored) {
            let mut device = (latest.remove(endpoint).or(stored))
                .unwrap_or_else(|| DeviceRecord::new(endpoint, now));
            change(&mut device);
            latest.insert(endpoint, device.clone());
            changed.push(device);
        }
        let mut batch = Batch::new();
        for device in latest.values() {
            batch.put(device_key(&device.endpoint), device);
        }
        self.store.apply(batch)?;
        for device in latest.values() {
            self.index.put(device);
        }
        Ok(changed)
    }
}

fn device_key(endpoint: &str) -> String {
    format!("{PREFIX}{endpoint}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::catalog::test_catalog;
    use crate::clock::Clock;

    const T0: UnixMillis = 1_800_000_000_000;
    const IMEI: &str = "urn:imei:356938035643809";

    fn registration(endpoint: &str) -> Registration {
        Registration {
            id: "r1".into(),
            lifetime: Duration::from_secs(300),
            ..Registration::for_tests(endpoint, "127.0.0.1:5684".parse().unwrap())
        }
    }

    fn survey() -> Survey {
        Survey {
            manufacturer: Some("Acme".into()),
            model: Some("NB-1".into()),
            firmware_version: Some("1.0".into()),
            battery: Some(80),
            power_sources: vec![1, 5],
            signal_dbm: Some(-95),
            memory_free_kb: Some(512),
            cell_id: Some(4_711),
            delivery: Some(DeliveryMethod::Both),
            update_result: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_is_learned_from_its_registration_and_its_survey() {
        let catalog = test_catalog(Clock::starting_at(T0));
        let seen = catalog.device_seen(&registration(IMEI)).unwrap();
        assert_eq!(seen.imei.as_deref(), Some("356938035643809"));
        assert_eq!(
            (seen.name.as_str(), seen.online, seen.last_seen),
            (IMEI, true, T0)
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        let surveyed = catalog.device_surveyed(IMEI, &survey()).unwrap();
        assert_eq!(surveyed.manufacturer.as_deref(), Some("Acme"));
        assert_eq!(surveyed.model.as_deref(), Some("NB-1"));
        assert_eq!(surveyed.firmware_version.as_deref(), Some("1.0"));
        assert_eq!(
            (
                surveyed.battery,
                surveyed.signal_dbm,
                surveyed.memory_free_kb,
                surveyed.cell_id
            ),
            (Some(80), Some(-95), Some(512), Some(4_711))
        );
        assert_eq!(surveyed.last_seen, T0, "a survey is no Register or Update");
        // A later survey that did not get a value keeps the one known.
        let partial = Survey {
            battery: Some(40),
            ..Survey::default()
        };
        let again = catalog.device_surveyed(IMEI, &partial).unwrap();
        assert_eq!((again.battery, again.cell_id), (Some(40), Some(4_711)));
        assert_eq!(catalog.device(IMEI).unwrap(), again, "it is in the store");
    }

    #[tokio::test(start_paused = true)]
    async fn devices_seen_together_are_each_recorded_as_if_seen_alone() {
        let catalog = test_catalog(Clock::starting_at(T0));
        catalog.device_seen(&registration("known")).unwrap();
        catalog.rename_device("known", "pump 7").unwrap();
        catalog.device_gone("known").unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let seen = catalog
            .devices_seen(&["new", "known", IMEI, "new"])
            .unwrap();
        let what = |device: &DeviceRecord| {
            (
                device.endpoint.clone(),
                device.name.clone(),
                device.online,
                device.last_seen,
            )
        };
        let later = T0 + 10_000;
        assert_eq!(
            seen.iter().map(what).collect::<Vec<_>>(),
            vec![
                ("new".into(), "new".into(), true, later),
                ("known".into(), "pump 7".into(), true, later),
                (IMEI.into(), IMEI.into(), true, later),
                ("new".into(), "new".into(), true, later),
            ],
            "in the order asked; a known device keeps what it had"
        );
        assert_eq!(seen[2].imei.as_deref(), Some("356938035643809"));
        for device in &seen {
            assert_eq!(&catalog.device(&device.endpoint).unwrap(), device, "stored");
            let indexed = catalog.device_index().get(&device.endpoint);
            assert!(indexed.is_some_and(|d| d.online), "indexed as online");
        }
        assert_eq!(catalog.devices().unwrap().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn last_seen_moves_only_with_register_and_update_and_online_follows_the_registration() {
        let catalog = test_catalog(Clock::starting_at(T0));
        catalog.device_seen(&registration("plain-name")).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let renamed = catalog.rename_device("plain-name", "pump 7").unwrap();
        assert_eq!((renamed.name.as_str(), renamed.last_seen), ("pump 7", T0));
        assert_eq!(renamed.imei, None, "not a urn:imei endpoint");
        let gone = catalog.device_gone("plain-name").unwrap().unwrap();
        assert_eq!((gone.online, gone.last_seen), (false, T0));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let back = catalog.device_seen(&registration("plain-name")).unwrap();
        assert_eq!((back.online, back.last_seen), (true, T0 + 10_000));
        assert_eq!(back.name, "pump 7");
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_device_never_surveyed_is_forgotten() {
        let catalog = test_catalog(Clock::starting_at(T0));
        catalog.device_seen(&registration("forged")).unwrap();
        catalog.device_seen(&registration(IMEI)).unwrap();
        catalog.device_surveyed(IMEI, &survey()).unwrap();
        assert!(catalog.forget_unsurveyed_device("forged").unwrap());
        assert!(!catalog.forget_unsurveyed_device(IMEI).unwrap());
        assert!(!catalog.forget_unsurveyed_device("never-seen").unwrap());
        let left: Vec<String> = catalog
            .devices()
            .unwrap()
            .into_iter()
            .map(|d| d.endpoint)
            .collect();
        assert_eq!(left, vec![IMEI.to_string()]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_device_leaves_its_groups_and_only_its_registration_brings_it_back() {
        let catalog = test_catalog(Clock::starting_at(T0));
        catalog.device_seen(&registration(IMEI)).unwrap();
        catalog.device_surveyed(IMEI, &survey()).unwrap();
        let group = catalog.create_group("g", "Acme", "NB-1").unwrap();
        catalog
            .add_to_group(&group.id, &[IMEI.to_string()])
            .unwrap();
        assert_eq!(catalog.groups_of(IMEI).unwrap().len(), 1);

        catalog.delete_device(IMEI).unwrap();
        assert!(matches!(
            catalog.device(IMEI),
            Err(CatalogError::NotFound { .. })
        ));
        assert_eq!(catalog.group(&group.id).unwrap().device_count, 0);
        assert!(catalog.group_members(&group.id).unwrap().devices.is_empty());
        assert!(catalog.groups_of(IMEI).unwrap().is_empty());
        assert!(matches!(
            catalog.delete_device(IMEI),
            Err(CatalogError::NotFound { .. })
        ));
        // What was under way when it was deleted does not bring it back...
        assert_eq!(catalog.device_gone(IMEI).unwrap(), None);
        assert_eq!(
            catalog.known_device_surveyed(IMEI, &survey()).unwrap(),
            None
        );
        assert!(catalog.devices().unwrap().is_empty());
        // ...a new registration does.
        let back = catalog.device_seen(&registration(IMEI)).unwrap();
        assert_eq!((back.online, back.model), (true, None));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_device_going_away_stays_unknown() {
        let catalog = test_catalog(Clock::starting_at(T0));
        assert_eq!(catalog.device_gone("never-seen").unwrap(), None);
        assert!(matches!(
            catalog.device("never-seen"),
            Err(CatalogError::NotFound { .. })
        ));
        assert!(catalog.rename_device("never-seen", "x").is_err());
        assert!(catalog.devices().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_first_surveyed_joins_the_groups_that_take_its_model_once() {
        let catalog = test_catalog(Clock::starting_at(T0));
        let takes = catalog.create_group("auto", "Acme", "NB-1").unwrap();
        catalog.set_auto_join(&takes.id, true).unwrap();
        let manual = catalog.create_group("manual", "Acme", "NB-1").unwrap();
        let other = catalog.create_group("other", "Acme", "NB-2").unwrap();
        catalog.set_auto_join(&other.id, true).unwrap();
        let mut joins = catalog.subscribe_joins();

        catalog.device_seen(&registration(IMEI)).unwrap();
        catalog
            .registered_device_surveyed(&registration(IMEI), &survey())
            .unwrap();
        let join = joins.try_recv().unwrap();
        assert_eq!(
            (join.group_id, join.endpoints),
            (takes.id.clone(), vec![IMEI.to_string()])
        );
        assert!(joins.try_recv().is_err(), "one join only");
        let member =
            |id: &str| (catalog.group_members(id).unwrap().devices).contains(&IMEI.to_string());
        assert!(member(&takes.id) && !member(&manual.id) && !member(&other.id));

        // Taken out by the operator, it stays out when surveyed again.
        catalog
            .remove_from_group(&takes.id, &[IMEI.to_string()])
            .unwrap();
        catalog
            .registered_device_surveyed(&registration(IMEI), &survey())
            .unwrap();
        assert!(!member(&takes.id));
        assert!(joins.try_recv().is_err());
    }

    #[test]
    fn names_and_versions_longer_than_the_api_takes_are_not_kept_from_a_survey() {
        use crate::lwm2m::{Record, Value};
        let text = |path, length| Record::new(path, Value::String("n".repeat(length)));
        let fits = Survey::from_records(&[
            text(firmware::MANUFACTURER, MAX_NAME_BYTES),
            text(firmware::MODEL_NUMBER, MAX_NAME_BYTES),
            text(firmware::FIRMWARE_VERSION, MAX_VERSION_BYTES),
        ]);
        assert_eq!(fits.manufacturer.map(|m| m.len()), Some(MAX_NAME_BYTES));
        assert_eq!(fits.model.map(|m| m.len()), Some(MAX_NAME_BYTES));
        assert_eq!(
            fits.firmware_version.map(|v| v.len()),
            Some(MAX_VERSION_BYTES)
        );
        let long = Survey::from_records(&[
            text(firmware::MANUFACTURER, 10_000),
            text(firmware::MODEL_NUMBER, MAX_NAME_BYTES + 1),
            text(firmware::FIRMWARE_VERSION, MAX_VERSION_BYTES + 1),
        ]);
        assert_eq!(
            (long.manufacturer, long.model, long.firmware_version),
            (None, None, None)
        );
    }
}
