//! The catalog the fleet-scale benches (`campaign`, `console`) start from: firmware for Acme
//! NB-1, a full package of it, and one group of N devices of that model, surveyed in 2,000
//! cells (a tenth of them on version 1.1, the rest on 1.0).

use fota_engine::catalog::Catalog;
use fota_engine::catalog::devices::Survey;

/// What the benches name in the catalog.
pub struct FleetCatalog {
    /// The full package's id.
    pub package: String,
    /// The group's id.
    pub group: String,
    /// Every device's endpoint, in the order they were made.
    pub endpoints: Vec<String>,
}

/// Fills `catalog` with `devices` devices in one group, and the package to upgrade them with.
pub async fn fill(catalog: &Catalog, devices: usize) -> anyhow::Result<FleetCatalog> {
    let firmware = catalog.add_firmware("Acme", "NB-1", "2.0", &[7; 4096])?;
    let package = catalog.create_full_package(&firmware.id, None).await?;
    let group = catalog.create_group("fleet", "Acme", "NB-1")?;
    let endpoints: Vec<String> = (0..devices).map(endpoint).collect();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let survey = Survey {
            manufacturer: Some("Acme".into()),
            model: Some("NB-1".into()),
            firmware_version: Some(if i % 10 == 0 { "1.1" } else { "1.0" }.into()),
            battery: Some(80),
            signal_dbm: Some(-90),
            cell_id: Some((i % 2_000) as u32),
            ..Survey::default()
        };
        catalog.device_surveyed(endpoint, &survey)?;
    }
    catalog.add_to_group(&group.id, &endpoints)?;
    Ok(FleetCatalog {
        package: package.id,
        group: group.id,
        endpoints,
    })
}

/// The endpoint of the bench's device `i`.
pub fn endpoint(i: usize) -> String {
    format!("urn:imei:{i:015}")
}
