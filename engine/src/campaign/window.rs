//! Maintenance windows: the times of day, in a named time zone, in which a task's new
//! downloads may start, and, separately, in which Execute Update may be sent (download now,
//! install at night). A window whose end comes before its start runs past midnight; no
//! window of a kind: any time.

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};
use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;

/// A task's windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindows {
    /// An IANA time zone name ("Asia/Shanghai", "UTC"): where the devices' nights are.
    pub time_zone: String,
    /// When new downloads (first attempts and retries) may start; empty: any time. A
    /// download under way when a window closes goes on.
    #[serde(default)]
    pub download: Vec<DailyWindow>,
    /// When a device holding the package may be told to install; empty: any time. Outside,
    /// it waits with the package, and takes no download slot meanwhile.
    #[serde(default)]
    pub update: Vec<DailyWindow>,
}

/// From `start` to `end` every day, local times as "HH:MM".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyWindow {
    /// When it opens.
    pub start: String,
    /// When it closes (before `start`: the next day).
    pub end: String,
}

impl MaintenanceWindows {
    /// Why these windows cannot be used: an unknown time zone, a time that is not "HH:MM",
    /// a window that opens and closes at once.
    pub fn check(&self) -> Result<(), String> {
        TimeZone::get(&self.time_zone)
            .map_err(|_| format!("{:?} is not a time zone name", self.time_zone))?;
        for window in self.download.iter().chain(&self.update) {
            let (start, end) = window.times()?;
            if start == end {
                return Err(format!("window {}-{} is empty", window.start, window.end));
            }
        }
        Ok(())
    }

    /// Whether a download may start at `now`.
    pub fn downloads_open(&self, now: UnixMillis) -> bool {
        self.open(&self.download, now)
    }

    /// Whether Execute Update may be sent at `now`.
    pub fn updates_open(&self, now: UnixMillis) -> bool {
        self.open(&self.update, now)
    }

    /// When Execute Update may be sent, from `now` on: `now` if it may be now, else the
    /// soonest opening of an update window.
    pub fn next_update_opening(&self, now: UnixMillis) -> UnixMillis {
        self.next_opening(&self.update, now)
    }

    /// When a download may start, from `now` on, as [`Self::next_update_opening`].
    pub fn next_download_opening(&self, now: UnixMillis) -> UnixMillis {
        self.next_opening(&self.download, now)
    }

    /// `now` if one of `windows` is open (or there is none), else the soonest opening of one
    /// (within a day: every window opens daily).
    fn next_opening(&self, windows: &[DailyWindow], now: UnixMillis) -> UnixMillis {
        if self.open(windows, now) {
            return now;
        }
        let Some(zoned) = self.zoned(now) else {
            return now;
        };
        (windows.iter())
            .filter_map(|window| window.next_start(&zoned))
            .min()
            .unwrap_or(now)
    }

    fn open(&self, windows: &[DailyWindow], now: UnixMillis) -> bool {
        if windows.is_empty() {
            return true;
        }
        let Some(local) = self.local_time(now) else {
            return false;
        };
        windows.iter().any(|window| window.contains(local))
    }

    /// The time of day at `now` in the windows' zone (`None`: a zone or an instant out of
    /// range, which [`MaintenanceWindows::check`] keeps out).
    fn local_time(&self, now: UnixMillis) -> Option<Time> {
        Some(self.zoned(now)?.time())
    }

    /// `now` in the windows' zone.
    fn zoned(&self, now: UnixMillis) -> Option<ZonedDateTime> {
        let zone = TimeZone::get(&self.time_zone).ok()?;
        let instant = Timestamp::from_millisecond(i64::try_from(now).ok()?).ok()?;
        Some(ZonedDateTime::new(instant, zone))
    }
}

impl DailyWindow {
    fn times(&self) -> Result<(Time, Time), String> {
        let parse = |text: &str| {
            let valid = text.len() == 5 && text.as_bytes()[2] == b':';
            valid
                .then(|| text.parse::<Time>().ok())
                .flatten()
                .ok_or_else(|| format!("{text:?} is not a time of day as HH:MM"))
        };
        Ok((parse(&self.start)?, parse(&self.end)?))
    }

    /// When it next opens after `now` (today's opening if still to come, else tomorrow's).
    fn next_start(&self, now: &ZonedDateTime) -> Option<UnixMillis> {
        let (start, _) = self.times().ok()?;
        let mut opening = now.with().time(start).build().ok()?;
        if opening <= *now {
            opening = opening.tomorrow().ok()?;
        }
        UnixMillis::try_from(opening.timestamp().as_millisecond()).ok()
    }

    fn contains(&self, time: Time) -> bool {
        let Ok((start, end)) = self.times() else {
            return false;
        };
        match start <= end {
            true => start <= time && time < end,
            false => time >= start || time < end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2027-01-15T08:00:00Z: 09:00 in Berlin, 16:00 in Shanghai.
    const T0: UnixMillis = 1_800_000_000_000;
    const HOUR: UnixMillis = 3_600_000;

    fn window(start: &str, end: &str) -> DailyWindow {
        DailyWindow {
            start: start.into(),
            end: end.into(),
        }
    }

    fn windows(zone: &str, download: &[DailyWindow], update: &[DailyWindow]) -> MaintenanceWindows {
        MaintenanceWindows {
            time_zone: zone.into(),
            download: download.to_vec(),
            update: update.to_vec(),
        }
    }

    #[test]
    fn windows_are_local_times_and_may_run_past_midnight() {
        let night = windows("Europe/Berlin", &[], &[window("22:00", "05:30")]);
        assert!(night.check().is_ok());
        assert!(night.downloads_open(T0), "no download window: any time");
        assert!(!night.updates_open(T0), "09:00 in Berlin");
        assert!(night.updates_open(T0 + 13 * HOUR), "22:00 in Berlin");
        assert!(night.updates_open(T0 + 20 * HOUR), "05:00 the next day");
        assert!(!night.updates_open(T0 + 21 * HOUR), "06:00");
        let afternoon = windows("Asia/Shanghai", &[window("16:00", "17:00")], &[]);
        assert!(afternoon.downloads_open(T0));
        assert!(!afternoon.downloads_open(T0 + HOUR));
    }

    #[test]
    fn the_next_update_opening_is_the_soonest_window_start_to_come() {
        let night = windows(
            "Europe/Berlin",
            &[],
            &[window("22:00", "05:30"), window("13:00", "14:00")],
        );
        // 09:00 in Berlin: 13:00 comes first, then 22:00.
        assert_eq!(night.next_update_opening(T0), T0 + 4 * HOUR);
        assert_eq!(night.next_update_opening(T0 + 5 * HOUR), T0 + 13 * HOUR);
        // Inside a window: now.
        assert_eq!(night.next_update_opening(T0 + 4 * HOUR), T0 + 4 * HOUR);
        // 06:00 the next day: 13:00 that day.
        assert_eq!(night.next_update_opening(T0 + 21 * HOUR), T0 + 28 * HOUR);
        let any_time = windows("UTC", &[window("01:00", "02:00")], &[]);
        assert_eq!(
            any_time.next_update_opening(T0),
            T0,
            "no update window: now"
        );
        // 08:00 UTC: the download window opens at 01:00 the next day.
        assert_eq!(any_time.next_download_opening(T0), T0 + 17 * HOUR);
    }

    #[test]
    fn unknown_zones_and_times_are_refused() {
        for (bad, named) in [
            (windows("Mars/Olympus", &[], &[]), "time zone"),
            (windows("UTC", &[window("25:00", "02:00")], &[]), "25:00"),
            (windows("UTC", &[], &[window("2:00", "03:00")]), "2:00"),
            (windows("UTC", &[], &[window("03:00", "03:00")]), "empty"),
        ] {
            let error = bad.check().unwrap_err();
            assert!(error.contains(named), "{error}");
        }
    }
}
