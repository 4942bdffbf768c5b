//! Devices routes: the catalog's devices with filters and paging, one device with its live
//! registration (registered now, address, binding, last update) and its progress in every task
//! it is in, and deleting a device. Devices are created by their registrations, never by the
//! API.
//!
//! Deleting a device forgets it: its record goes, it leaves every group, and a live
//! registration is ended as a De-register would end it (a registration flood's devices go with
//! one request each). A device still running answers nothing of this: its next Update is
//! answered 4.04, so it registers again and is created again, as new. A device a task that is
//! not final holds (in its group, or among its devices once started) is not deleted (409).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::extract::Checked;
use super::paging::{PageStart, Paging, SortBy, SortKey};
use super::problem::{ApiResult, Kind, Problem};
use crate::campaign::DeviceProgress;
use crate::catalog::device_index::{DeviceIndex, Indexed, WindowStart};
use crate::catalog::{Catalog, CatalogError, DeviceRecord};
use crate::clock::{Clock, UnixMillis};
use crate::lwm2m::Registration;

/// Filters of `GET /v1/devices`; each one given must match.
#[derive(Debug, Default, Deserialize)]
pub struct DeviceFilter {
    /// Manufacturer (/3/0/0).
    vendor: Option<String>,
    /// Module model (/3/0/1).
    model: Option<String>,
    /// Registered now or not.
    online: Option<bool>,
    /// Firmware version (/3/0/3).
    version: Option<String>,
    /// Radio cell (/4/0/8), as last surveyed.
    cell: Option<u32>,
    /// A group the device is in (its id).
    group: Option<String>,
    /// With `group`: whether it is one of the group's test devices.
    test: Option<bool>,
}

impl DeviceFilter {
    /// A 400 for a filter that asks for test devices without saying of which group.
    fn check(&self) -> ApiResult<()> {
        if self.test.is_some() && self.group.is_none() {
            return Err(Problem::new(
                Kind::BadRequest,
                "test filters a group's devices: give its group too",
            ));
        }
        Ok(())
    }

    /// The filter with its names as `index` shares them.
    fn resolve(&self, index: &DeviceIndex) -> ResolvedFilter {
        let name = |wanted: &Option<String>| wanted.as_deref().map(|name| index.interned(name));
        ResolvedFilter {
            vendor: name(&self.vendor),
            model: name(&self.model),
            version: name(&self.version),
            group: name(&self.group),
            online: self.online,
            cell: self.cell,
            test: self.test,
        }
    }
}

/// A name a filter asks for: `None` for any; `Some(None)` for one no device has.
type WantedName = Option<Option<Arc<str>>>;

/// A [`DeviceFilter`] whose names are the index's own, compared by address: a pass over a
/// million devices compares no text.
struct ResolvedFilter {
    vendor: WantedName,
    model: WantedName,
    version: WantedName,
    group: WantedName,
    online: Option<bool>,
    cell: Option<u32>,
    test: Option<bool>,
}

impl ResolvedFilter {
    /// Whether every device passes (nothing is filtered on).
    fn takes_all(&self) -> bool {
        let names = [&self.vendor, &self.model, &self.version, &self.group];
        names.iter().all(|name| name.is_none())
            && (self.online, self.cell, self.test) == (None, None, None)
    }

    /// Whether a device, as the catalog's index holds it, passes the filter.
    fn matches(&self, device: &Indexed) -> bool {
        let same = |wanted: &Option<Arc<str>>, value: &Option<Arc<str>>| match (wanted, value) {
            (Some(wanted), Some(value)) => Arc::ptr_eq(wanted, value),
            _ => false,
        };
        let named = |wanted: &WantedName, value: &Option<Arc<str>>| {
            wanted.as_ref().is_none_or(|wanted| same(wanted, value))
        };
        let in_group = |group: &Option<Arc<str>>| {
            let group = group.as_ref();
            let place = (device.groups.iter())
                .find(|place| group.is_some_and(|group| Arc::ptr_eq(&place.group, group)));
            place.is_some_and(|place| self.test.is_none_or(|test| place.test == test))
        };
        named(&self.vendor, &device.manufacturer)
            && named(&self.model, &device.model)
            && named(&self.version, &device.firmware_version)
            && self.online.is_none_or(|online| online == device.online)
            && self.cell.is_none_or(|cell| device.cell_id == Some(cell))
            && self.group.as_ref().is_none_or(in_group)
    }
}

/// A device's place in a group, as a device is shown with it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupPlace {
    /// The group's id.
    id: String,
    /// Whether it is one of the group's test devices.
    test: bool,
}

/// The groups device `endpoint` is in, as the catalog's index holds them.
fn places(catalog: &Catalog, endpoint: &str) -> Vec<GroupPlace> {
    (catalog.device_index().memberships(endpoint).iter())
        .map(|place| GroupPlace {
            id: place.group.to_string(),
            test: place.test,
        })
        .collect()
}

/// A device as lists show it: its record and its groups.
#[derive(Debug, Serialize)]
pub struct ListedDevice {
    /// The catalog's record.
    #[serde(flatten)]
    device: DeviceRecord,
    /// The groups it is in.
    groups: Vec<GroupPlace>,
}

/// The orders `GET /v1/devices` sorts in: by endpoint name.
const ORDERS: [SortBy<ListedDevice>; 1] = [SortBy {
    name: "endpoint",
    key: |listed| SortKey(0, listed.device.endpoint.clone()),
}];

/// `GET /v1/devices`: the page is found in the catalog's index of devices, and only its own
/// records are read.
pub async fn list(
    State(state): State<ApiState>,
    Checked(Query(filter)): Checked<Query<DeviceFilter>>,
    Checked(Query(paging)): Checked<Query<Paging>>,
    uri: Uri,
) -> ApiResult<Response> {
    filter.check()?;
    let catalog = &state.platform.catalog;
    let plan = paging.plan(&ORDERS)?;
    let start = match &plan.start {
        PageStart::Offset(skip) => WindowStart::Offset(*skip),
        PageStart::After(key) => WindowStart::After(&key.1),
    };
    let index = catalog.device_index();
    let filter = filter.resolve(index);
    let (descending, take) = (plan.descending(), plan.limit + 1);
    let window = if filter.takes_all() {
        index.window_of_all(start, descending, take)
    } else {
        let keep = |_: &str, device: &Indexed| filter.matches(device);
        index.window(keep, start, descending, take)
    };
    let mut devices = Vec::with_capacity(window.endpoints.len());
    for endpoint in &window.endpoints {
        match catalog.device(endpoint) {
            Ok(device) => devices.push(ListedDevice {
                groups: places(catalog, endpoint),
                device,
            }),
            // Deleted since the index was read.
            Err(CatalogError::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(plan.page(devices, window.before, window.total).linked(&uri))
}

/// One device, as `GET /v1/devices/{endpoint}` shows it.
#[derive(Debug, Serialize)]
pub struct DeviceDetail {
    /// The catalog's record and its groups.
    #[serde(flatten)]
    device: ListedDevice,
    /// True while the device has a live registration.
    registered: bool,
    /// Its live registration.
    registration: Option<RegistrationView>,
    /// Its progress in every task it is in.
    tasks: Vec<DeviceProgress>,
}

/// A live registration, with its times as wall-clock milliseconds.
#[derive(Debug, Serialize)]
struct RegistrationView {
    /// Registration id (`/rd/{id}`).
    id: String,
    /// Where the device's last Register or Update came from.
    address: String,
    /// `U` or `UQ` (queue mode: reachable only right after an Update).
    binding: &'static str,
    /// LwM2M version.
    lwm2m_version: String,
    /// Lifetime in seconds.
    lifetime_secs: u64,
    /// When it registered.
    registered_at: UnixMillis,
    /// When it was last heard from (Register or Update).
    last_update: UnixMillis,
    /// Objects and instances it announced.
    objects: Vec<String>,
}

impl RegistrationView {
    fn new(registration: &Registration, clock: Clock) -> Self {
        let now = clock.now();
        let at = |instant: tokio::time::Instant| {
            now.saturating_sub(instant.elapsed().as_millis() as UnixMillis)
        };
        RegistrationView {
            id: registration.id.clone(),
            address: registration.address.to_string(),
            binding: if registration.binding.queue_mode {
                "UQ"
            } else {
                "U"
            },
            lwm2m_version: registration.lwm2m_version.clone(),
            lifetime_secs: registration.lifetime.as_secs(),
            registered_at: at(registration.registered_at),
            last_update: at(registration.last_update),
            objects: registration
                .objects
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }
}

/// `GET /v1/devices/{endpoint}`.
pub async fn one(
    State(state): State<ApiState>,
    Checked(Path(endpoint)): Checked<Path<String>>,
) -> ApiResult<Json<DeviceDetail>> {
    let platform = &state.platform;
    let device = platform.catalog.device(&endpoint)?;
    let registration = platform
        .server
        .registry
        .get(&endpoint)
        .map(|r| RegistrationView::new(&r, platform.catalog.clock));
    Ok(Json(DeviceDetail {
        device: ListedDevice {
            groups: places(&platform.catalog, &endpoint),
            device,
        },
        registered: registration.is_some(),
        registration,
        tasks: platform.campaigns.progress_of(&endpoint),
    }))
}

/// `DELETE /v1/devices/{endpoint}`.
pub async fn delete(
    State(state): State<ApiState>,
    Checked(Path(endpoint)): Checked<Path<String>>,
) -> ApiResult<StatusCode> {
    let platform = &state.platform;
    platform.catalog.device(&endpoint)?;
    let groups: Vec<String> = platform
        .catalog
        .groups_of(&endpoint)?
        .into_iter()
        .map(|group| group.id)
        .collect();
    if platform.campaigns.holds_device(&endpoint, &groups) {
        return Err(Problem::used_by_task("device", &endpoint));
    }
    let registry = &platform.server.registry;
    if let Some(registration) = registry.get(&endpoint) {
        registry.deregister(&registration.id);
    }
    platform.catalog.delete_device(&endpoint)?;
    Ok(StatusCode::NO_CONTENT)
}
