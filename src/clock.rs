//! The one place that reads the wall clock. Everything else takes `now` from here
//! (or as a parameter), so tests can move time forward without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in seconds, plus an offset that only tests set.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset: Arc<AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        real + self.offset.load(Ordering::Relaxed)
    }

    /// Moves this clock (and every clone of it) forward; for tests.
    pub fn advance(&self, seconds: i64) {
        self.offset.fetch_add(seconds, Ordering::Relaxed);
    }
}

/// The time zones a user may choose on the account page (IANA names, read by the
/// browser), with their names in words. The first, "", is the browser's own zone.
/// Pages always carry UTC; the browser shows it in the chosen zone (`static/app.js`).
pub const TIME_ZONES: &[(&str, &str)] = &[
    ("", "This browser's time zone"),
    ("America/New_York", "Eastern (New York)"),
    ("America/Chicago", "Central (Chicago)"),
    ("America/Denver", "Mountain (Denver)"),
    ("America/Phoenix", "Arizona (Phoenix, no daylight saving)"),
    ("America/Los_Angeles", "Pacific (Los Angeles)"),
    ("America/Anchorage", "Alaska (Anchorage)"),
    ("Pacific/Honolulu", "Hawaii (Honolulu)"),
    (
        "America/Puerto_Rico",
        "Atlantic (Puerto Rico, Virgin Islands)",
    ),
    ("Pacific/Guam", "Chamorro (Guam, Northern Mariana Islands)"),
    ("Pacific/Pago_Pago", "Samoa (American Samoa)"),
    ("UTC", "UTC"),
];

/// The name in words of a zone from [`TIME_ZONES`], or `None` for any other text.
pub fn time_zone_label(zone: &str) -> Option<&'static str> {
    TIME_ZONES
        .iter()
        .find(|(name, _)| *name == zone)
        .map(|(_, label)| *label)
}

/// `2026-11-26 14:05 UTC` for pages and exports.
pub fn format_utc(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// `2026-11-26T14:05:09Z`, for CSV and JSON.
pub fn format_rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// Parses `YYYY-MM-DD` as the start of that day, UTC.
pub fn parse_date(input: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(input.trim(), &format)
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp())
}
