//! The `date` filter: a lenient date parser (timestamps, ISO 8601, "March 14, 2016",
//! RFC 2822-ish) and Ruby's `strftime`. Dates without an offset are taken as UTC; the engine
//! never consults the machine's time zone so renders are reproducible.

use crate::filters::FilterError;
use crate::value::Value;

/// A civil date-time at a fixed UTC offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    /// Seconds east of UTC; `None` means UTC written as such (`%Z` prints `UTC`).
    offset: Option<i32>,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Years outside this range are not dates anyone formats in an email; refusing them keeps the
/// arithmetic far from overflow.
const MAX_YEAR: i64 = 1_000_000;

pub(crate) fn date_filter<'a>(
    input: Value<'a>,
    format: &Value<'_>,
    max_len: usize,
) -> Result<Value<'a>, FilterError> {
    let format = format.to_str();
    if format.is_empty() {
        return Ok(input);
    }
    let parsed = match &input {
        Value::Int(ts) => DateTime::from_timestamp(*ts),
        Value::Str(_) | Value::String(_) => {
            let s = input.as_str().unwrap_or_default();
            let lower = s.trim().to_ascii_lowercase();
            if s.is_empty() {
                None
            } else if lower == "now" || lower == "today" {
                DateTime::from_timestamp(now_timestamp())
            } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse::<i64>().ok().and_then(DateTime::from_timestamp)
            } else {
                parse_date(s)
            }
        }
        _ => None,
    };
    match parsed {
        Some(dt) => {
            let text = dt.strftime_capped(&format, max_len);
            if text.len() > max_len {
                return Err(FilterError::Limit(
                    crate::error::LimitKind::OutputSize,
                    max_len as u64,
                ));
            }
            Ok(Value::string(text))
        }
        None => Ok(input),
    }
}

fn now_timestamp() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

fn current_year() -> i64 {
    DateTime::from_timestamp(now_timestamp()).map_or(1970, |d| d.year)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m as u32, d as u32)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

impl DateTime {
    pub(crate) fn from_timestamp(ts: i64) -> Option<DateTime> {
        let days = ts.div_euclid(86_400);
        let secs = ts.rem_euclid(86_400);
        if days.abs() > MAX_YEAR * 366 {
            return None;
        }
        let (year, month, day) = civil_from_days(days);
        Some(DateTime {
            year,
            month,
            day,
            hour: (secs / 3600) as u32,
            minute: (secs % 3600 / 60) as u32,
            second: (secs % 60) as u32,
            nanos: 0,
            offset: None,
        })
    }

    fn valid(&self) -> bool {
        (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= days_in_month(self.year, self.month)
            && self.hour < 24
            && self.minute < 60
            && self.second < 61
            && self.year.abs() <= MAX_YEAR
    }

    fn days(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    fn timestamp(&self) -> i64 {
        self.days() * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(self.offset.unwrap_or(0))
    }

    /// 0 = Sunday.
    fn weekday(&self) -> u32 {
        (self.days() + 4).rem_euclid(7) as u32
    }

    fn day_of_year(&self) -> u32 {
        (self.days() - days_from_civil(self.year, 1, 1) + 1) as u32
    }

    /// ISO 8601 week-based year and week number.
    fn iso_week(&self) -> (i64, u32) {
        let wday = (self.weekday() + 6) % 7; // Monday = 0
        let thursday = self.days() - i64::from(wday) + 3;
        let (y, _, _) = civil_from_days(thursday);
        let week = (thursday - days_from_civil(y, 1, 1)) / 7 + 1;
        (y, week as u32)
    }

    /// Ruby's `strftime`, with the `-`, `_`, `0`, `^`, `#` flags and widths.
    pub(crate) fn strftime(&self, fmt: &str) -> String {
        self.strftime_capped(fmt, usize::MAX)
    }

    /// `strftime` that stops once the output passes `max_len` bytes.
    fn strftime_capped(&self, fmt: &str, max_len: usize) -> String {
        let mut out = String::with_capacity(fmt.len() + 16);
        let mut chars = fmt.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            if out.len() > max_len {
                break;
            }
            if c != '%' {
                out.push(c);
                continue;
            }
            let mut flags = String::new();
            while let Some(&(_, f)) = chars.peek() {
                if matches!(f, '-' | '_' | '0' | '^' | '#') {
                    flags.push(f);
                    chars.next();
                } else {
                    break;
                }
            }
            let mut width = String::new();
            while let Some(&(_, d)) = chars.peek() {
                if d.is_ascii_digit() && width.len() < 2 {
                    width.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            let mut colon = false;
            if let Some(&(_, ':')) = chars.peek() {
                colon = true;
                chars.next();
            }
            let Some((end, conv)) = chars.next() else {
                out.push_str(&fmt[start..]);
                break;
            };
            let width: Option<usize> = width.parse().ok();
            if !self.directive(&mut out, conv, &flags, width, colon) {
                out.push_str(&fmt[start..end + conv.len_utf8()]);
            }
        }
        out
    }

    /// Writes one directive; false when it is not a known directive.
    fn directive(
        &self,
        out: &mut String,
        conv: char,
        flags: &str,
        width: Option<usize>,
        colon: bool,
    ) -> bool {
        let hour12 = match self.hour % 12 {
            0 => 12,
            h => h,
        };
        let (text, numeric_pad): (String, Option<(char, usize)>) = match conv {
            'Y' => (
                self.year.to_string(),
                Some(('0', if self.year < 0 { 5 } else { 4 })),
            ),
            'C' => (self.year.div_euclid(100).to_string(), Some(('0', 2))),
            'y' => (self.year.rem_euclid(100).to_string(), Some(('0', 2))),
            'm' => (self.month.to_string(), Some(('0', 2))),
            'd' => (self.day.to_string(), Some(('0', 2))),
            'e' => (self.day.to_string(), Some((' ', 2))),
            'j' => (self.day_of_year().to_string(), Some(('0', 3))),
            'H' => (self.hour.to_string(), Some(('0', 2))),
            'k' => (self.hour.to_string(), Some((' ', 2))),
            'I' => (hour12.to_string(), Some(('0', 2))),
            'l' => (hour12.to_string(), Some((' ', 2))),
            'M' => (self.minute.to_string(), Some(('0', 2))),
            'S' => (self.second.to_string(), Some(('0', 2))),
            'L' => (format!("{:03}", self.nanos / 1_000_000), None),
            'N' => {
                let digits = format!("{:09}", self.nanos);
                let w = width.unwrap_or(9);
                let text = if w <= 9 {
                    digits[..w].to_string()
                } else {
                    format!("{digits:0<w$}")
                };
                out.push_str(&text);
                return true;
            }
            's' => (self.timestamp().to_string(), Some(('0', 1))),
            'u' => (
                (match self.weekday() {
                    0 => 7,
                    w => w,
                })
                .to_string(),
                Some(('0', 1)),
            ),
            'w' => (self.weekday().to_string(), Some(('0', 1))),
            'U' => {
                let week = (self.day_of_year() + 6 - self.weekday()) / 7;
                (week.to_string(), Some(('0', 2)))
            }
            'W' => {
                let wday = (self.weekday() + 6) % 7;
                let week = (self.day_of_year() + 6 - wday) / 7;
                (week.to_string(), Some(('0', 2)))
            }
            'G' => (self.iso_week().0.to_string(), Some(('0', 4))),
            'g' => (
                self.iso_week().0.rem_euclid(100).to_string(),
                Some(('0', 2)),
            ),
            'V' => (self.iso_week().1.to_string(), Some(('0', 2))),
            'B' => (MONTHS[(self.month as usize + 11) % 12].to_string(), None),
            'b' | 'h' => (
                MONTHS[(self.month as usize + 11) % 12][..3].to_string(),
                None,
            ),
            'A' => (WEEKDAYS[self.weekday() as usize].to_string(), None),
            'a' => (WEEKDAYS[self.weekday() as usize][..3].to_string(), None),
            'p' => ((if self.hour < 12 { "AM" } else { "PM" }).to_string(), None),
            'P' => ((if self.hour < 12 { "am" } else { "pm" }).to_string(), None),
            'Z' => (
                match self.offset {
                    None => "UTC".to_string(),
                    Some(_) => String::new(),
                },
                None,
            ),
            'z' => {
                let off = self.offset.unwrap_or(0);
                let sign = if off < 0 { '-' } else { '+' };
                let abs = off.unsigned_abs();
                let text = if colon {
                    format!("{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60)
                } else {
                    format!("{sign}{:02}{:02}", abs / 3600, abs % 3600 / 60)
                };
                (text, None)
            }
            'n' => ("\n".to_string(), None),
            't' => ("\t".to_string(), None),
            '%' => ("%".to_string(), None),
            'c' => (self.strftime("%a %b %e %H:%M:%S %Y"), None),
            'D' | 'x' => (self.strftime("%m/%d/%y"), None),
            'F' => (self.strftime("%Y-%m-%d"), None),
            'T' | 'X' => (self.strftime("%H:%M:%S"), None),
            'R' => (self.strftime("%H:%M"), None),
            'r' => (self.strftime("%I:%M:%S %p"), None),
            'v' => (self.strftime("%e-%^b-%Y"), None),
            '+' => (self.strftime("%a %b %e %H:%M:%S %Z %Y"), None),
            _ => return false,
        };
        let mut text = text;
        if flags.contains('^') {
            text = text.to_uppercase();
        } else if flags.contains('#') {
            text = if text.chars().any(char::is_lowercase) {
                text.to_uppercase()
            } else {
                text.to_lowercase()
            };
        }
        let (pad_char, default_width) = match numeric_pad {
            Some((c, w)) => (c, w),
            None => (' ', 0),
        };
        let pad_char = if flags.contains('-') {
            None
        } else if flags.contains('_') {
            Some(' ')
        } else if flags.contains('0') {
            Some('0')
        } else {
            Some(pad_char)
        };
        let width = width.unwrap_or(default_width);
        match pad_char {
            Some(p) if text.chars().count() < width => {
                let (sign, digits) = match text.strip_prefix('-') {
                    Some(d) if p == '0' => ("-", d.to_string()),
                    _ => ("", text.clone()),
                };
                let missing = width - text.chars().count();
                out.push_str(sign);
                for _ in 0..missing {
                    out.push(p);
                }
                out.push_str(&digits);
            }
            _ => out.push_str(&text),
        }
        true
    }
}

fn month_from_name(word: &str) -> Option<u32> {
    if word.len() < 3 {
        return None;
    }
    MONTHS
        .iter()
        .position(|m| {
            let m = m.to_ascii_lowercase();
            m == word
                || (word.len() == 3 && m.starts_with(word))
                || (word == "sept" && m == "september")
        })
        .map(|i| i as u32 + 1)
}

fn is_weekday_name(word: &str) -> bool {
    word.len() >= 3
        && WEEKDAYS.iter().any(|d| {
            d.to_ascii_lowercase().starts_with(word) && (word.len() == 3 || d.len() == word.len())
        })
}

/// Parses `+hh:mm`, `+hhmm`, `+hh`, `Z`, `UTC`, `GMT`.
fn parse_zone(s: &str) -> Option<i32> {
    let s = s.trim();
    let upper = s.to_ascii_uppercase();
    if matches!(upper.as_str(), "Z" | "UTC" | "GMT" | "UT") {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|&c| c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = if digits.len() == 4 {
        digits[2..].parse().ok()?
    } else {
        0
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}

/// A zone as stored in [`DateTime::offset`]: named UTC stays `None` so `%Z` prints `UTC`.
fn zone_offset(s: &str) -> Option<Option<i32>> {
    let offset = parse_zone(s)?;
    let named = s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    Some(if named { None } else { Some(offset) })
}

/// Parses `h:mm[:ss[.frac]]`.
fn parse_time(s: &str) -> Option<(u32, u32, u32, u32)> {
    let mut parts = s.split(':');
    let hour: u32 = parts.next()?.parse().ok()?;
    let minute: u32 = parts.next()?.parse().ok()?;
    let (second, nanos) = match parts.next() {
        Some(sec) => {
            let (whole, frac) = sec.split_once(['.', ',']).unwrap_or((sec, ""));
            let second: u32 = whole.parse().ok()?;
            let mut digits: String = frac.chars().take(9).collect();
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            while digits.len() < 9 {
                digits.push('0');
            }
            (second, digits.parse().unwrap_or(0))
        }
        None => (0, 0),
    };
    if parts.next().is_some() {
        return None;
    }
    Some((hour, minute, second, nanos))
}

/// A lenient date parser in the spirit of Ruby's `Time.parse`.
pub(crate) fn parse_date(input: &str) -> Option<DateTime> {
    let s = input.trim();
    let mut dt = DateTime {
        year: i64::MIN,
        month: 0,
        day: 0,
        hour: 0,
        minute: 0,
        second: 0,
        nanos: 0,
        offset: None,
    };
    // ISO 8601 and friends: 2016-03-14, 2016-03-14T10:00:00Z, 2016/03/14 10:00 +02:00.
    let words: Vec<&str> = s
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .flat_map(split_iso_t)
        .collect();
    let mut loose_numbers = Vec::new();
    let mut pm: Option<bool> = None;
    for word in words {
        let lower = word.to_ascii_lowercase();
        let lower = lower.trim_end_matches('.');
        if let Some((date, zone)) = split_date_token(word) {
            if dt.month != 0 {
                return None;
            }
            dt.year = date.0;
            dt.month = date.1;
            dt.day = date.2;
            if let Some(z) = zone {
                dt.offset = Some(z);
            }
        } else if word.contains(':') && word.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
            let (time, zone) = match word.find(['+', '-', 'Z', 'z']) {
                Some(i) => (&word[..i], Some(&word[i..])),
                None => (word, None),
            };
            let (h, m, sec, nanos) = parse_time(time)?;
            dt.hour = h;
            dt.minute = m;
            dt.second = sec;
            dt.nanos = nanos;
            if let Some(z) = zone {
                dt.offset = zone_offset(z)?;
            }
        } else if let Some(m) = month_from_name(lower) {
            dt.month = m;
        } else if is_weekday_name(lower) {
        } else if lower == "am" || lower == "pm" {
            pm = Some(lower == "pm");
        } else if let Some(z) =
            zone_offset(word).filter(|_| !word.bytes().all(|b| b.is_ascii_digit()))
        {
            dt.offset = z;
        } else {
            let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let suffix = &lower[digits.len()..];
            if digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || !matches!(suffix, "" | "st" | "nd" | "rd" | "th")
            {
                return None;
            }
            loose_numbers.push((digits.parse::<i64>().ok()?, digits.len()));
        }
    }
    if let Some(is_pm) = pm {
        if dt.hour == 0 || dt.hour > 12 {
            return None;
        }
        dt.hour = match (is_pm, dt.hour) {
            (true, 12) => 12,
            (true, h) => h + 12,
            (false, 12) => 0,
            (false, h) => h,
        };
    }
    for (n, len) in loose_numbers {
        if len >= 3 && dt.year == i64::MIN {
            dt.year = n;
        } else if len <= 2 && dt.day == 0 {
            dt.day = u32::try_from(n).ok()?;
        } else if len <= 2 && dt.year == i64::MIN && dt.month != 0 {
            dt.year = 2000 + n;
        } else {
            return None;
        }
    }
    if dt.month == 0 || dt.day == 0 {
        return None;
    }
    if dt.year == i64::MIN {
        dt.year = current_year();
    }
    dt.valid().then_some(dt)
}

/// Splits `2016-03-14T10:00:00` at the `T`.
fn split_iso_t(word: &str) -> Vec<&str> {
    let bytes = word.as_bytes();
    if let Some(t) = word.find(['T', 't']) {
        if t > 0
            && bytes[t - 1].is_ascii_digit()
            && bytes.get(t + 1).is_some_and(u8::is_ascii_digit)
        {
            return vec![&word[..t], &word[t + 1..]];
        }
    }
    vec![word]
}

type DateParts = (i64, u32, u32);

/// `2016-03-14`, `2016/03/14`, `03/14/2016` (US order), with an optional trailing zone.
fn split_date_token(word: &str) -> Option<(DateParts, Option<i32>)> {
    let sep = if word.contains('-') && word.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        '-'
    } else if word.contains('/') {
        '/'
    } else {
        return None;
    };
    let parts: Vec<&str> = word.split(sep).collect();
    if parts.len() != 3
        || !parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let nums: Vec<i64> = parts
        .iter()
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let date = if parts[0].len() == 4 {
        (
            nums[0],
            u32::try_from(nums[1]).ok()?,
            u32::try_from(nums[2]).ok()?,
        )
    } else if sep == '/' {
        let year = if parts[2].len() == 2 {
            2000 + nums[2]
        } else {
            nums[2]
        };
        (
            year,
            u32::try_from(nums[0]).ok()?,
            u32::try_from(nums[1]).ok()?,
        )
    } else {
        return None;
    };
    Some((date, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(s: &str, f: &str) -> Option<String> {
        parse_date(s).map(|d| d.strftime(f))
    }

    #[test]
    fn parses_common_formats() {
        assert_eq!(fmt("March 14, 2016", "%s").as_deref(), Some("1457913600"));
        assert_eq!(
            fmt("2016-03-14", "%b %d, %y").as_deref(),
            Some("Mar 14, 16")
        );
        assert_eq!(
            fmt("2016-03-14T10:05:09Z", "%Y-%m-%d %H:%M:%S %Z").as_deref(),
            Some("2016-03-14 10:05:09 UTC")
        );
        assert_eq!(
            fmt("2016-03-14 10:05 +02:00", "%H:%M %z").as_deref(),
            Some("10:05 +0200")
        );
        assert_eq!(
            fmt("Mon, 14 Mar 2016 10:00:00 +0000", "%a %-d %B").as_deref(),
            Some("Mon 14 March")
        );
        assert_eq!(fmt("03/14/2016", "%F").as_deref(), Some("2016-03-14"));
        assert_eq!(
            fmt("March 14th 2016 3:30 pm", "%l:%M %P").as_deref(),
            Some(" 3:30 pm")
        );
        assert!(parse_date("-1152098955").is_none());
        assert!(parse_date("hello").is_none());
        assert!(parse_date("2016-02-30").is_none());
    }

    #[test]
    fn strftime_directives() {
        let d = DateTime::from_timestamp(1_152_098_955).expect("valid timestamp");
        assert_eq!(d.strftime("%m/%d/%Y"), "07/05/2006");
        assert_eq!(
            d.strftime("%A %j %U %W %V %G %u %w"),
            "Wednesday 186 27 27 27 2006 3 3"
        );
        assert_eq!(
            d.strftime("%-m/%-d %^a %10A|%-10A|%03e"),
            "7/5 WED  Wednesday|Wednesday|005"
        );
        assert_eq!(d.strftime("%%%b %q"), "%Jul %q");
        assert_eq!(d.strftime("%I:%M:%S %p %L"), "11:29:15 AM 000");
    }
}
