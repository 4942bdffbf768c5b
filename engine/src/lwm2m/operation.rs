//! `DeviceOperation`: one Read, Write or Execute an integrator asks of a device, as it is
//! kept (in the queue of operations, in the store) and as it runs against the device's current
//! registration: values read are typed (`model`), a write goes in the format the device takes
//! (plain text or opaque for one resource, the registration's multi-value format for more),
//! and the Firmware Update object belongs to a delivery while the device is upgrading.

use serde::{Deserialize, Serialize};

use super::content::{self, ContentFormat, Record, Value};
use super::management::{DeviceManagement, ManagementError};
use super::model::typed;
use super::path::LwM2mPath;
use super::registration::Registration;

/// The Firmware Update object: a delivery writes and executes it.
const FIRMWARE_UPDATE: u16 = 5;

/// An operation on a device's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceOperation {
    /// Read of an object, instance, resource or resource instance.
    Read {
        /// What to read.
        path: LwM2mPath,
    },
    /// Write of a resource (replaced) or of an object instance (the resources given
    /// replaced, the others kept).
    Write {
        /// What to write.
        path: LwM2mPath,
        /// The values, at or below `path`.
        records: Vec<Record>,
    },
    /// Execute of a resource.
    Execute {
        /// What to execute.
        path: LwM2mPath,
        /// The arguments, if any (LwM2M's `0='a',1` text).
        arguments: Option<String>,
    },
}

/// Why an operation is refused before it is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{endpoint} is being upgraded: its Firmware Update object (/5) takes no write or execute \
     but the delivery's until the upgrade ends"
)]
pub struct Upgrading {
    /// The device.
    pub endpoint: String,
}

/// Whether devices are being upgraded now: the campaigns know, operations only ask.
pub trait Upgrades: Send + Sync {
    /// True while a task upgrades `endpoint`: an attempt is under way, or it waits for the
    /// next in a task under way.
    fn upgrading(&self, endpoint: &str) -> bool;
}

impl DeviceOperation {
    /// The path it targets.
    pub fn path(&self) -> LwM2mPath {
        match self {
            DeviceOperation::Read { path }
            | DeviceOperation::Write { path, .. }
            | DeviceOperation::Execute { path, .. } => *path,
        }
    }

    /// `kind` as the API and the store name it: `read`, `write` or `execute`.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceOperation::Read { .. } => "read",
            DeviceOperation::Write { .. } => "write",
            DeviceOperation::Execute { .. } => "execute",
        }
    }

    /// Refuses a write or execute on the Firmware Update object of a device `upgrades` says is
    /// being upgraded: it would break the delivery under way.
    pub fn check_upgrade(&self, endpoint: &str, upgrades: &dyn Upgrades) -> Result<(), Upgrading> {
        let changes_firmware = !matches!(self, DeviceOperation::Read { .. })
            && self.path().object_id() == Some(FIRMWARE_UPDATE);
        if changes_firmware && upgrades.upgrading(endpoint) {
            return Err(Upgrading {
                endpoint: endpoint.to_string(),
            });
        }
        Ok(())
    }

    /// Runs the operation on the device of `registration`: the records read (typed), or none.
    pub async fn run(
        &self,
        management: &DeviceManagement,
        registration: &Registration,
    ) -> Result<Vec<Record>, ManagementError> {
        let device = registration.address;
        match self {
            DeviceOperation::Read { path } => {
                let records = management.read(device, *path).await?;
                Ok(typed_records(records))
            }
            DeviceOperation::Write { path, records } => {
                let format = write_format(registration, path, records);
                let payload = content::encode(format, path, records).map_err(|source| {
                    ManagementError::Content {
                        path: *path,
                        source,
                    }
                })?;
                match path.depth() {
                    2 => {
                        management
                            .write_update(device, *path, format, payload)
                            .await?
                    }
                    _ => management.write(device, *path, format, payload).await?,
                }
                Ok(Vec::new())
            }
            DeviceOperation::Execute { path, arguments } => {
                management
                    .execute(device, *path, arguments.as_deref())
                    .await?;
                Ok(Vec::new())
            }
        }
    }
}

/// `records` read from a device, each value with its type (see [`typed`]).
pub fn typed_records(records: Vec<Record>) -> Vec<Record> {
    records
        .into_iter()
        .map(|record| Record::new(record.path, typed(&record.path, record.value)))
        .collect()
}

/// The format a write of `records` to `path` goes in: one resource's value as plain text (or
/// opaque, for bytes), which every LwM2M client reads; several values in the registration's
/// multi-value format.
fn write_format(
    registration: &Registration,
    path: &LwM2mPath,
    records: &[Record],
) -> ContentFormat {
    match records {
        [record] if record.path == *path && path.depth() >= 3 => match record.value {
            Value::Opaque(_) => ContentFormat::Opaque,
            _ => ContentFormat::TextPlain,
        },
        _ => registration.multi_value_format(),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn registration(announced_format: Option<ContentFormat>) -> Registration {
        Registration {
            announced_format,
            ..Registration::for_tests("dev", ([127, 0, 0, 1], 1000).into())
        }
    }

    struct AlwaysUpgrading;

    impl Upgrades for AlwaysUpgrading {
        fn upgrading(&self, _: &str) -> bool {
            true
        }
    }

    #[test]
    fn one_value_goes_as_text_or_opaque_and_more_in_the_announced_format() {
        let timezone = LwM2mPath::resource(3, 0, 15);
        let text = [Record::new(timezone, Value::String("UTC".into()))];
        let bytes = [Record::new(timezone, Value::Opaque(vec![0]))];
        let instance = LwM2mPath::instance(3, 0);
        let plain = registration(None);
        assert_eq!(
            write_format(&plain, &timezone, &text),
            ContentFormat::TextPlain
        );
        assert_eq!(
            write_format(&plain, &timezone, &bytes),
            ContentFormat::Opaque
        );
        assert_eq!(write_format(&plain, &instance, &text), ContentFormat::Tlv);
        let cbor = registration(Some(ContentFormat::SenmlCbor));
        assert_eq!(
            write_format(&cbor, &instance, &text),
            ContentFormat::SenmlCbor
        );
    }

    #[test]
    fn only_writes_and_executes_of_object_5_wait_for_an_upgrade() {
        let update = DeviceOperation::Execute {
            path: LwM2mPath::resource(5, 0, 2),
            arguments: None,
        };
        let err = update.check_upgrade("dev", &AlwaysUpgrading).unwrap_err();
        assert!(err.to_string().contains("dev is being upgraded"), "{err}");
        let read = DeviceOperation::Read {
            path: LwM2mPath::resource(5, 0, 3),
        };
        assert!(read.check_upgrade("dev", &AlwaysUpgrading).is_ok());
        let reboot = DeviceOperation::Execute {
            path: LwM2mPath::resource(3, 0, 4),
            arguments: None,
        };
        assert!(reboot.check_upgrade("dev", &AlwaysUpgrading).is_ok());
    }
}
