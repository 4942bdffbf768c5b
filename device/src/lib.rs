//! fota-device: reference LwM2M device client and fleet simulator (being written).

pub mod patch;
