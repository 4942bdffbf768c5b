//! `GET /v1/models`: the vendors and module models the engine knows, with how many devices of
//! each are in the catalog and whether firmware was uploaded for it: what a group's vendor and
//! model are chosen from (white paper section 9: chosen from what is known, then locked).
//! The devices are counted by the device index as their records are written; the firmware is
//! read from the catalog each time. Owns the listing only.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::ApiState;
use super::problem::ApiResult;

/// One vendor and module model.
#[derive(Debug, Default, Serialize)]
pub struct KnownModel {
    /// Manufacturer (/3/0/0).
    vendor: String,
    /// Module model (/3/0/1).
    model: String,
    /// Devices of it in the catalog.
    devices: u64,
    /// Firmware versions uploaded for it.
    firmware: u64,
}

/// `GET /v1/models`: every vendor and model a device reported or firmware was uploaded for,
/// in vendor then model order.
pub async fn list(State(state): State<ApiState>) -> ApiResult<Json<Vec<KnownModel>>> {
    let catalog = &state.platform.catalog;
    let mut known = BTreeMap::new();
    for ((vendor, model), devices) in catalog.device_index().models() {
        count(&mut known, &vendor, &model).devices = devices as u64;
    }
    for firmware in catalog.firmwares()? {
        count(&mut known, &firmware.vendor, &firmware.model).firmware += 1;
    }
    Ok(Json(known.into_values().collect()))
}

/// The entry of `vendor` and `model` in `known`, made when it is not there.
fn count<'a>(
    known: &'a mut BTreeMap<(String, String), KnownModel>,
    vendor: &str,
    model: &str,
) -> &'a mut KnownModel {
    known
        .entry((vendor.to_string(), model.to_string()))
        .or_insert_with(|| KnownModel {
            vendor: vendor.to_string(),
            model: model.to_string(),
            ..KnownModel::default()
        })
}
