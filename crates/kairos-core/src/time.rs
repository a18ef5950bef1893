//! Instants are `i64` milliseconds since the Unix epoch (UTC). The core never reads a clock:
//! every instant it sees is passed in.

use jiff::{civil, tz::TimeZone, Timestamp};
use std::cell::RefCell;
use std::collections::HashMap;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

pub const SECOND: Millis = 1_000;
pub const MINUTE: Millis = 60 * SECOND;
pub const HOUR: Millis = 60 * MINUTE;
pub const DAY: Millis = 24 * HOUR;

/// Parses an ISO-8601 / RFC 3339 instant as SDKs send it: `Z` or `+hh:mm` offsets, any number
/// of fractional digits (ms, us, ns). A date-time without an offset is read as UTC, because
/// some server-side libraries omit it and UTC is what they mean.
pub fn parse_timestamp(s: &str) -> Option<Millis> {
    let s = s.trim();
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Some(ts.as_millisecond());
    }
    let dt: civil::DateTime = s.parse().ok()?;
    let zoned = dt.to_zoned(TimeZone::UTC).ok()?;
    Some(zoned.timestamp().as_millisecond())
}

/// Formats an instant as RFC 3339 UTC with milliseconds.
pub fn format_timestamp(ms: Millis) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => ms.to_string(),
    }
}

thread_local! {
    static TZ_CACHE: RefCell<HashMap<String, Option<TimeZone>>> = RefCell::new(HashMap::new());
}

/// A duration in the largest unit that divides it (`4h`, `90m`, `1500ms`), as rules write it.
pub fn format_duration(ms: Millis) -> String {
    for (unit, size) in [
        ("w", 7 * DAY),
        ("d", DAY),
        ("h", HOUR),
        ("m", MINUTE),
        ("s", SECOND),
    ] {
        if ms != 0 && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Looks up an IANA zone in the bundled database, cached per thread because the same few
/// zones are looked up for every event.
pub fn time_zone(name: &str) -> Option<TimeZone> {
    TZ_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(tz) = cache.get(name) {
            return tz.clone();
        }
        let tz = TimeZone::get(name).ok();
        if cache.len() < 4096 {
            cache.insert(name.to_string(), tz.clone());
        }
        tz
    })
}

/// Hour of the week (0 = Monday 00:00-00:59 ... 167 = Sunday 23:00) of an instant in a zone.
/// Arithmetic on the local wall clock (the instant plus the zone's offset then): called for
/// every event, where a civil date-time cost several times as much.
pub fn hour_of_week(ms: Millis, tz: &TimeZone) -> Option<u8> {
    let offset = tz
        .to_offset(Timestamp::from_millisecond(ms).ok()?)
        .seconds();
    let local = ms + offset as Millis * SECOND;
    // 1970-01-01 was a Thursday, day 3 counting from Monday.
    let day = (local.div_euclid(DAY) + 3).rem_euclid(7);
    let hour = local.div_euclid(HOUR).rem_euclid(24);
    Some((day * 24 + hour) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_offsets_and_precisions_sdks_send() {
        let base = parse_timestamp("2026-11-22T11:28:49.349Z");
        assert_eq!(base, Some(1_795_346_929_349));
        assert_eq!(parse_timestamp("2026-11-22T11:28:49.349+00:00"), base);
        assert_eq!(parse_timestamp("2026-11-22T11:28:49.349123+00:00"), base);
        assert_eq!(parse_timestamp("2026-11-22T12:28:49.349+01:00"), base);
        assert_eq!(parse_timestamp("2026-11-22T11:28:49.349"), base);
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp(""), None);
    }

    #[test]
    fn hour_of_week_follows_the_zone_and_dst() {
        let ny = time_zone("America/New_York").expect("bundled tz");
        // Monday 2026-03-09 14:00 UTC is 10:00 EDT (DST started on 2026-03-08).
        let ms = parse_timestamp("2026-03-09T14:00:00Z").expect("valid");
        assert_eq!(hour_of_week(ms, &ny), Some(10));
        // One week earlier, before DST, the same UTC instant is 09:00 EST.
        assert_eq!(hour_of_week(ms - 7 * DAY, &ny), Some(9));
        assert!(time_zone("Mars/Olympus").is_none());
    }

    /// The arithmetic agrees with the zone's calendar, in zones with DST, half and quarter
    /// hours, and before 1970.
    #[test]
    fn hour_of_week_is_the_calendar_s() {
        for zone in [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Asia/Kathmandu",
            "Australia/Lord_Howe",
            "Pacific/Chatham",
        ] {
            let tz = time_zone(zone).expect("bundled tz");
            let mut ms = -400 * DAY + 12_345;
            while ms < 21_000 * DAY {
                let dt = tz.to_datetime(Timestamp::from_millisecond(ms).expect("in range"));
                let want = dt.weekday().to_monday_zero_offset() as u8 * 24 + dt.hour() as u8;
                assert_eq!(hour_of_week(ms, &tz), Some(want), "{zone} {ms}");
                ms += 7 * HOUR + 13 * MINUTE + 7 * SECOND;
            }
        }
    }

    #[test]
    fn formats_round_trip() {
        let ms = 1_795_346_929_349;
        assert_eq!(format_timestamp(ms), "2026-11-22T11:28:49.349Z");
        assert_eq!(parse_timestamp(&format_timestamp(ms)), Some(ms));
    }
}
