//! `McuEvent`: the notifications the FOTA client gives the device's MCU (white paper: downloading,
//! download failed, downloaded, updating, update success, update failed, update over; and the
//! server cancelling a download), readable by tests as a stream.

/// One notification to the MCU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McuEvent {
    /// A package download started (or resumed).
    Downloading,
    /// The download failed (integrity, space, abandoned).
    DownloadFailed(String),
    /// The server reset the Firmware Update object (an empty package write or Package URI):
    /// the stored package, partial or whole, is erased.
    DownloadCancelled,
    /// The whole package is stored and verified.
    Downloaded,
    /// Installing started.
    Updating,
    /// The new firmware runs.
    UpdateSuccess,
    /// Installing failed; the old firmware still runs.
    UpdateFailed(String),
    /// The upgrade procedure ended (after success or failure).
    UpdateOver,
}
