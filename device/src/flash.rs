//! `SimulatedFlash`: an in-memory [`DeviceSystem`] that really stores the package, checks it (the
//! platform's signature when it trusts a key, then format, hashes and a delta's base), and
//! installs it, so a test can read back the image a device ended with.

use std::sync::Arc;

use fota_engine::package::{self, PackageError, PackageHeader, PackageKind};
use fota_engine::signing::PlatformPublicKey;
use sha2::{Digest, Sha256};

use crate::patch::DeltaError;
use crate::rebuilt::RebuiltImages;
use crate::system::{DeviceSystem, SystemError};

/// A simulated module: firmware image, download partition, battery and radio.
#[derive(Debug, Clone)]
pub struct SimulatedFlash {
    /// The running firmware image.
    pub image: Vec<u8>,
    /// Its version string.
    pub version: String,
    /// The download partition: package bytes received so far. Kept across reboots.
    pub download: Vec<u8>,
    /// What the validated package rebuilds, written to the spare slot when the package was
    /// validated (as an A/B module does), so Update installs it without rebuilding it.
    staged: Option<Staged>,
    /// Size of the download partition.
    pub capacity: usize,
    /// Package bytes the device was given, repeats included: what a resume must keep small.
    pub received: u64,
    /// Writes that started before the end of what was stored: a block given again (after a
    /// reboot lost the message layer's duplicate cache, or a resume).
    pub rewrites: u64,
    /// The most stored bytes one write started before: what one resume sent again.
    pub largest_rewind: usize,
    /// Whole packages erased (an install that failed, a reset after the download): the next
    /// transfer sends such a package again from its start, by design, not for want of resume.
    pub whole_packages_erased: u32,
    /// Battery level, percent.
    pub battery: u8,
    /// Signal strength, dBm.
    pub signal_dbm: i32,
    /// The platform key packages must be signed with; `None` accepts unsigned packages (and
    /// signed ones unchecked), as a device built before signing did.
    pub trusted_key: Option<PlatformPublicKey>,
    /// When set, installing fails for this reason (a flash that cannot be written): the
    /// package checks out, the update does not (Update Result 8).
    pub install_fault: Option<String>,
    /// Where the devices of a simulated fleet share the images they rebuild from delta
    /// packages; `None`: this device rebuilds its own.
    pub rebuilt: Option<RebuiltImages>,
}

/// The image a validated package rebuilds, in the spare slot.
#[derive(Debug, Clone)]
struct Staged {
    /// sha256 of the package it was rebuilt from: a package changed in flash since (a bit
    /// flipped) is rebuilt, and checked, again at Update.
    package_sha256: [u8; 32],
    /// The version it runs.
    version: String,
    /// The image (the fleet's, when its devices share what they rebuild: copied at Update).
    image: Arc<Vec<u8>>,
}

impl SimulatedFlash {
    /// A module running `image` as `version`, with room for `capacity` package bytes.
    pub fn new(image: Vec<u8>, version: &str, capacity: usize) -> Self {
        SimulatedFlash {
            image,
            version: version.to_string(),
            download: Vec::new(),
            staged: None,
            capacity,
            received: 0,
            rewrites: 0,
            largest_rewind: 0,
            whole_packages_erased: 0,
            battery: 90,
            signal_dbm: -85,
            trusted_key: None,
            install_fault: None,
            rebuilt: None,
        }
    }

    /// sha256 of the running image.
    pub fn image_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.image).into()
    }

    /// Header and payload of the stored package, once its signature verifies with the trusted
    /// key (when there is one).
    fn open(&self) -> Result<(PackageHeader, &[u8]), PackageError> {
        match &self.trusted_key {
            Some(key) => package::verify(&self.download, key),
            None => package::parse(&self.download),
        }
    }

    /// The image a delta `patch` rebuilds from the running image (shared with the fleet's
    /// other devices, when they share).
    fn rebuild(&self, patch: &[u8]) -> Result<Arc<Vec<u8>>, DeltaError> {
        match &self.rebuilt {
            Some(rebuilt) => rebuilt.apply(&self.image, patch),
            None => crate::patch::apply(&self.image, patch).map(Arc::new),
        }
    }

    /// The image the stored package produces, checked against its header.
    fn unpack(&self) -> Result<(String, Arc<Vec<u8>>), SystemError> {
        let (header, payload) = self
            .open()
            .map_err(|e| SystemError::Integrity(e.to_string()))?;
        let image = match header.kind {
            PackageKind::Full => Arc::new(payload.to_vec()),
            PackageKind::Delta => {
                if header.from_version.as_deref() != Some(self.version.as_str()) {
                    return Err(SystemError::Unsupported(format!(
                        "delta from {:?} but this device runs {}",
                        header.from_version, self.version
                    )));
                }
                self.rebuild(payload)
                    .map_err(|e| SystemError::Integrity(e.to_string()))?
            }
        };
        if image.len() != header.image_len as usize
            || <[u8; 32]>::from(Sha256::digest(image.as_slice())) != header.image_sha256
        {
            return Err(SystemError::Integrity(
                "image sha256 does not match the package".into(),
            ));
        }
        Ok((header.to_version, image))
    }
}

impl DeviceSystem for SimulatedFlash {
    fn firmware_version(&self) -> String {
        self.version.clone()
    }

    fn battery_voltage_mv(&self) -> u32 {
        3300 + u32::from(self.battery) * 9
    }

    fn battery_level(&self) -> u8 {
        self.battery
    }

    fn signal_strength_dbm(&self) -> i32 {
        self.signal_dbm
    }

    fn free_memory(&self) -> usize {
        self.capacity
    }

    fn erase(&mut self) {
        if self.open().is_ok() {
            self.whole_packages_erased += 1;
        }
        self.download.clear();
        self.staged = None;
    }

    fn write_bytes(&mut self, offset: usize, bytes: &[u8]) -> Result<(), SystemError> {
        self.received += bytes.len() as u64;
        let saved = self.download.len();
        if offset > saved {
            return Err(SystemError::OutOfOrder { offset, saved });
        }
        if offset < saved {
            self.rewrites += 1;
            self.largest_rewind = self.largest_rewind.max(saved - offset);
        }
        let end = offset + bytes.len();
        if end > self.capacity {
            return Err(SystemError::NotEnoughFlash {
                needed: end,
                available: self.capacity,
            });
        }
        // A block written again (a retransmission, or the block before a resume) holds bytes
        // already stored; only the part past the end is new.
        if end > saved {
            self.download.extend_from_slice(&bytes[saved - offset..]);
            self.staged = None;
        }
        Ok(())
    }

    fn saved_bytes(&self) -> usize {
        self.download.len()
    }

    fn validate(&mut self) -> Result<(), SystemError> {
        let (version, image) = self.unpack()?;
        self.staged = Some(Staged {
            package_sha256: Sha256::digest(&self.download).into(),
            version,
            image,
        });
        Ok(())
    }

    fn start_update(&mut self) -> Result<(), SystemError> {
        if let Some(fault) = &self.install_fault {
            return Err(SystemError::UpdateFailed(fault.clone()));
        }
        let (version, image) = match self.staged.take() {
            Some(staged)
                if staged.package_sha256 == <[u8; 32]>::from(Sha256::digest(&self.download)) =>
            {
                (staged.version, staged.image)
            }
            _ => self
                .unpack()
                .map_err(|e| SystemError::UpdateFailed(e.to_string()))?,
        };
        self.image = Arc::unwrap_or_clone(image);
        self.version = version;
        self.download.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use fota_engine::signing::PlatformKey;

    use super::*;

    #[test]
    fn a_full_package_written_in_blocks_validates_and_installs() {
        let new_image: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let pkg = package::full(&new_image, "2.0").unwrap();
        let mut flash = SimulatedFlash::new(vec![0; 100], "1.0", 1 << 20);
        for (i, chunk) in pkg.chunks(128).enumerate() {
            flash.write_bytes(i * 128, chunk).unwrap();
            // A retransmitted block changes nothing.
            flash.write_bytes(i * 128, chunk).unwrap();
        }
        assert_eq!(flash.saved_bytes(), pkg.len());
        flash.validate().unwrap();
        flash.start_update().unwrap();
        assert_eq!(flash.version, "2.0");
        assert_eq!(flash.image, new_image);
        assert_eq!(flash.saved_bytes(), 0);
    }

    /// An image of 1.0, the image of 1.1 it becomes, and the delta package between them.
    fn delta_package() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let old: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut new = old.clone();
        new[5_000..5_100].fill(7);
        let header = package::PackageHeader {
            kind: PackageKind::Delta,
            to_version: "1.1".into(),
            from_version: Some("1.0".into()),
            image_len: new.len() as u32,
            image_sha256: Sha256::digest(&new).into(),
        };
        let pkg = package::build(&header, &fota_delta::make_patch(&old, &new)).unwrap();
        (old, new, pkg)
    }

    #[test]
    fn a_delta_package_installs_on_its_base_and_is_refused_on_another() {
        let (old, new, pkg) = delta_package();
        assert!(
            pkg.len() < new.len() / 10,
            "a delta is small: {} bytes",
            pkg.len()
        );
        let mut flash = SimulatedFlash::new(old.clone(), "1.0", 1 << 20);
        flash.write_bytes(0, &pkg).unwrap();
        flash.start_update().unwrap();
        assert_eq!((flash.version.as_str(), flash.image == new), ("1.1", true));
        let mut other_base = SimulatedFlash::new(vec![9; 20_000], "1.0", 1 << 20);
        other_base.write_bytes(0, &pkg).unwrap();
        assert!(
            other_base.validate().is_err(),
            "a patch for another image is refused"
        );
    }

    #[test]
    fn update_installs_the_image_rebuilt_at_validation_unless_the_package_changed_since() {
        let (old, new, pkg) = delta_package();
        let validated = |pkg: &[u8]| {
            let mut flash = SimulatedFlash::new(old.clone(), "1.0", 1 << 20);
            flash.write_bytes(0, pkg).unwrap();
            flash.validate().unwrap();
            // The patch no longer applies to what runs: only the staged image can install.
            flash.image = vec![9; old.len()];
            flash
        };
        let mut flash = validated(&pkg);
        flash.start_update().unwrap();
        assert_eq!((flash.version.as_str(), flash.image == new), ("1.1", true));

        let mut flipped = validated(&pkg);
        flipped.download[200] ^= 0xFF;
        assert!(
            matches!(flipped.start_update(), Err(SystemError::UpdateFailed(_))),
            "a package changed in flash since it was validated is checked again"
        );
        assert_eq!(flipped.version, "1.0");
    }

    #[test]
    fn holes_overflow_and_corruption_are_refused() {
        let mut flash = SimulatedFlash::new(vec![], "1.0", 300);
        assert_eq!(
            flash.write_bytes(128, &[0; 128]),
            Err(SystemError::OutOfOrder {
                offset: 128,
                saved: 0
            })
        );
        flash.write_bytes(0, &[0; 256]).unwrap();
        assert!(matches!(
            flash.write_bytes(256, &[0; 128]),
            Err(SystemError::NotEnoughFlash { .. })
        ));
        let mut pkg = package::full(&[1, 2, 3, 4], "2.0").unwrap();
        let last = pkg.len() - 1;
        pkg[last] ^= 0xFF;
        let mut flash = SimulatedFlash::new(vec![], "1.0", 1000);
        flash.write_bytes(0, &pkg).unwrap();
        assert!(matches!(flash.validate(), Err(SystemError::Integrity(_))));
    }

    /// A device on 1.0 trusting `key`, holding `pkg`.
    fn trusting(key: &PlatformKey, pkg: &[u8]) -> SimulatedFlash {
        let mut flash = SimulatedFlash::new(vec![0; 100], "1.0", 1 << 20);
        flash.trusted_key = Some(key.public());
        flash.write_bytes(0, pkg).unwrap();
        flash
    }

    /// Validating and installing both fail on integrity, and the device still runs 1.0.
    fn assert_refused(mut flash: SimulatedFlash, why: &str) {
        match flash.validate() {
            Err(SystemError::Integrity(message)) => assert!(message.contains(why), "{message}"),
            other => panic!("expected an integrity failure ({why}), got {other:?}"),
        }
        assert!(flash.start_update().is_err());
        assert_eq!((flash.version.as_str(), flash.image.len()), ("1.0", 100));
    }

    /// An unsigned full package of 2000 bytes, version 2.0, and its image.
    fn unsigned_2000() -> (Vec<u8>, Vec<u8>) {
        let image = vec![3; 2000];
        (package::full(&image, "2.0").unwrap(), image)
    }

    #[test]
    fn a_package_signed_with_the_trusted_key_validates_and_installs() {
        let key = PlatformKey::generate();
        let (unsigned, image) = unsigned_2000();
        let mut flash = trusting(&key, &package::sign(&unsigned, &key).unwrap());
        flash.validate().unwrap();
        flash.start_update().unwrap();
        assert_eq!(
            (flash.version.as_str(), flash.image == image),
            ("2.0", true)
        );
    }

    #[test]
    fn a_tampered_or_foreign_package_is_an_integrity_failure_and_does_not_install() {
        let key = PlatformKey::generate();
        let (unsigned, _) = unsigned_2000();
        let mut tampered = package::sign(&unsigned, &key).unwrap();
        tampered[1000] ^= 0x01;
        assert_refused(trusting(&key, &tampered), "signature");
        let foreign = package::sign(&unsigned, &PlatformKey::generate()).unwrap();
        assert_refused(trusting(&key, &foreign), "signature");
    }

    #[test]
    fn an_unsigned_package_is_refused_when_a_key_is_trusted() {
        let key = PlatformKey::generate();
        let (unsigned, _) = unsigned_2000();
        assert_refused(trusting(&key, &unsigned), "not signed");
    }
}
