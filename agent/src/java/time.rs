//! Timestamps at the start of a log record (DESIGN §2) and their conversion to UTC Unix
//! seconds.
//!
//! Parsing is hand-written (fixed positions, no regex) because it runs on every line.

use std::fmt;
use std::str::FromStr;

/// The time zone of timestamps that carry no zone of their own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Tz {
    /// The host's local time zone (`/etc/localtime`, `TZ`), the default.
    #[default]
    Local,
    /// UTC.
    Utc,
    /// A fixed offset east of UTC, in seconds (`"+02:00"` is `Fixed(7200)`).
    Fixed(i32),
}

/// A time zone string that is neither `local`, `UTC` nor an offset like `+02:00`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time zone {0:?}: expected \"local\", \"UTC\" or an offset such as \"+02:00\"")]
pub struct TzError(pub String);

impl FromStr for Tz {
    type Err = TzError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("local") {
            return Ok(Tz::Local);
        }
        if t.eq_ignore_ascii_case("utc") || t == "Z" || t.eq_ignore_ascii_case("gmt") {
            return Ok(Tz::Utc);
        }
        match parse_offset(t.as_bytes()) {
            Some((secs, n)) if n == t.len() => Ok(Tz::Fixed(secs)),
            _ => Err(TzError(s.to_owned())),
        }
    }
}

impl fmt::Display for Tz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tz::Local => f.write_str("local"),
            Tz::Utc => f.write_str("UTC"),
            Tz::Fixed(s) => {
                let sign = if *s < 0 { '-' } else { '+' };
                let a = s.unsigned_abs();
                write!(f, "{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
            }
        }
    }
}

/// A wall-clock time read from a log line; `offset` is `Some` when the line carried a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i32,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub offset: Option<i32>,
}

impl Civil {
    /// Seconds since the epoch of this wall-clock time read as UTC.
    pub(crate) fn naive_seconds(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day, hour, minute, second)` in UTC of Unix seconds `t`.
pub fn utc_fields(t: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m as u32,
        d as u32,
        (secs / 3600) as u32,
        ((secs % 3600) / 60) as u32,
        (secs % 60) as u32,
    )
}

/// Formats Unix seconds as `yyyy-MM-ddTHH:mm:ssZ`.
pub fn format_utc(t: i64) -> String {
    let (y, mo, d, h, mi, s) = utc_fields(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[inline]
fn digit(b: &[u8], i: usize) -> Option<u32> {
    match b.get(i) {
        Some(c @ b'0'..=b'9') => Some(u32::from(c - b'0')),
        _ => None,
    }
}

#[inline]
fn num2(b: &[u8], i: usize) -> Option<u32> {
    Some(digit(b, i)? * 10 + digit(b, i + 1)?)
}

/// A zone offset `Z`, `+HH`, `+HHMM` or `+HH:MM` at the start of `b`: `(seconds, length)`.
pub(crate) fn parse_offset(b: &[u8]) -> Option<(i32, usize)> {
    match b.first()? {
        b'Z' => Some((0, 1)),
        s @ (b'+' | b'-') => {
            let h = num2(b, 1)?;
            let (m, n) = if b.get(3) == Some(&b':') {
                (num2(b, 4)?, 6)
            } else if let Some(m) = num2(b, 3) {
                (m, 5)
            } else {
                (0, 3)
            };
            if h > 18 || m > 59 {
                return None;
            }
            let secs = (h * 3600 + m * 60) as i32;
            Some((if *s == b'-' { -secs } else { secs }, n))
        }
        _ => None,
    }
}

/// Validates calendar and clock ranges.
pub(crate) fn valid(y: u32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> bool {
    (1970..=9999).contains(&y)
        && (1..=12).contains(&mo)
        && (1..=31).contains(&d)
        && h <= 23
        && mi <= 59
        && s <= 60
}

/// Skips `[.,]digits` and an optional zone after the seconds at `i`.
fn fraction_and_zone(b: &[u8], mut i: usize) -> (Option<i32>, usize) {
    if matches!(b.get(i), Some(b'.' | b',')) && digit(b, i + 1).is_some() {
        i += 1;
        while digit(b, i).is_some() {
            i += 1;
        }
    }
    match parse_offset(&b[i.min(b.len())..]) {
        // `+HH` alone is too weak after a time (it could be text); require Z or minutes.
        Some((off, n)) if n != 3 => (Some(off), i + n),
        _ => (None, i),
    }
}

/// Parses an ISO-8601-like timestamp `yyyy-MM-dd[ T]HH:mm:ss[[.,]S+][zone]` at the start of
/// `b` (optionally after one `[`). Returns the time and the number of bytes consumed.
pub(crate) fn parse_iso(b: &[u8]) -> Option<(Civil, usize)> {
    let o = usize::from(b.first() == Some(&b'['));
    // Cheapest rejection first: the separators at fixed positions.
    if b.len() < o + 19
        || b[o + 4] != b'-'
        || b[o + 7] != b'-'
        || !matches!(b[o + 10], b' ' | b'T')
        || b[o + 13] != b':'
        || b[o + 16] != b':'
    {
        return None;
    }
    let y = num2(b, o)? * 100 + num2(b, o + 2)?;
    let mo = num2(b, o + 5)?;
    let d = num2(b, o + 8)?;
    let h = num2(b, o + 11)?;
    let mi = num2(b, o + 14)?;
    let s = num2(b, o + 17)?;
    if !valid(y, mo, d, h, mi, s) {
        return None;
    }
    let (offset, end) = fraction_and_zone(b, o + 19);
    let end = if o == 1 && b.get(end) == Some(&b']') {
        end + 1
    } else {
        end
    };
    Some((
        Civil {
            year: y as i32,
            month: mo as u8,
            day: d as u8,
            hour: h as u8,
            minute: mi as u8,
            second: s as u8,
            offset,
        },
        end,
    ))
}

fn month_abbrev(b: &[u8]) -> Option<u32> {
    const M: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let k = b.get(..3)?;
    M.iter().position(|m| &m[..] == k).map(|i| i as u32 + 1)
}

/// Parses Tomcat's `dd-MMM-yyyy HH:mm:ss[.SSS]` at the start of `b`.
pub(crate) fn parse_tomcat(b: &[u8]) -> Option<(Civil, usize)> {
    if b.len() < 20 || b[2] != b'-' || b[6] != b'-' || b[11] != b' ' {
        return None;
    }
    let d = num2(b, 0)?;
    let mo = month_abbrev(&b[3..])?;
    let y = num2(b, 7)? * 100 + num2(b, 9)?;
    if b[14] != b':' || b[17] != b':' {
        return None;
    }
    let (h, mi, s) = (num2(b, 12)?, num2(b, 15)?, num2(b, 18)?);
    if !valid(y, mo, d, h, mi, s) {
        return None;
    }
    let (offset, end) = fraction_and_zone(b, 20);
    Some((
        Civil {
            year: y as i32,
            month: mo as u8,
            day: d as u8,
            hour: h as u8,
            minute: mi as u8,
            second: s as u8,
            offset,
        },
        end,
    ))
}

/// Parses java.util.logging's default first line `MMM d, yyyy h:mm:ss AM|PM ` at the start of
/// `b` (`Nov 23, 2026 6:44:43 PM shop.OrderService tick`).
pub(crate) fn parse_jul(b: &[u8]) -> Option<(Civil, usize)> {
    let mo = month_abbrev(b)?;
    if b.get(3) != Some(&b' ') {
        return None;
    }
    let mut i = 4;
    let num = |i: &mut usize, max_len: usize| -> Option<u32> {
        let start = *i;
        let mut v = 0u32;
        while *i - start < max_len {
            match digit(b, *i) {
                Some(x) => v = v * 10 + x,
                None => break,
            }
            *i += 1;
        }
        (*i > start).then_some(v)
    };
    let d = num(&mut i, 2)?;
    if b.get(i..i + 2) != Some(b", ") {
        return None;
    }
    i += 2;
    let y = num(&mut i, 4)?;
    if b.get(i) != Some(&b' ') {
        return None;
    }
    i += 1;
    let h12 = num(&mut i, 2)?;
    if b.get(i) != Some(&b':') {
        return None;
    }
    let mi = num2(b, i + 1)?;
    if b.get(i + 3) != Some(&b':') {
        return None;
    }
    let s = num2(b, i + 4)?;
    i += 6;
    let pm = match b.get(i..i + 3) {
        Some(b" AM") => false,
        Some(b" PM") => true,
        _ => return None,
    };
    if !(1..=12).contains(&h12) {
        return None;
    }
    let h = (h12 % 12) + if pm { 12 } else { 0 };
    if !valid(y, mo, d, h, mi, s) {
        return None;
    }
    Some((
        Civil {
            year: y as i32,
            month: mo as u8,
            day: d as u8,
            hour: h as u8,
            minute: mi as u8,
            second: s as u8,
            offset: None,
        },
        i + 3,
    ))
}

/// `HH:mm:ss[.,]SSS` at the start of a line (logback's default pattern has no date): the
/// seconds since midnight, for a record start without a date.
pub(crate) fn time_of_day(b: &[u8]) -> Option<u32> {
    if b.len() < 13 || b[2] != b':' || b[5] != b':' || !matches!(b[8], b'.' | b',') {
        return None;
    }
    digit(b, 9)?;
    let (h, m, s) = (num2(b, 0)?, num2(b, 3)?, num2(b, 6)?);
    (h <= 23 && m <= 59 && s <= 60).then_some(h * 3600 + m * 60 + s)
}

/// Converts wall-clock times to Unix seconds for one file, caching the day number and the
/// zone offset of the last hour seen so that the common case costs a few comparisons.
#[derive(Debug)]
pub(crate) struct Clock {
    zone: Zone,
    /// `(days*24 + hour)` of the cached local offset.
    hour_key: i64,
    hour_offset: i32,
}

#[derive(Debug, Clone)]
pub(crate) enum Zone {
    Fixed(i32),
    Named(jiff::tz::TimeZone),
}

impl Zone {
    /// Resolves the configured zone; `Local` falls back to UTC when the host has none.
    pub(crate) fn resolve(tz: &Tz) -> Zone {
        match tz {
            Tz::Utc => Zone::Fixed(0),
            Tz::Fixed(s) => Zone::Fixed(*s),
            Tz::Local => {
                let z = jiff::tz::TimeZone::system();
                if z == jiff::tz::TimeZone::UTC {
                    Zone::Fixed(0)
                } else {
                    Zone::Named(z)
                }
            }
        }
    }
}

impl Clock {
    pub(crate) fn new(zone: Zone) -> Clock {
        Clock {
            zone,
            hour_key: i64::MIN,
            hour_offset: 0,
        }
    }

    /// Unix seconds of a time of day `tod` (seconds since local midnight) on the day it was
    /// read (`read_at`), or the day before when that would put it more than an hour after
    /// `read_at` (a line written before midnight, read after).
    pub(crate) fn at_time_of_day(&mut self, tod: u32, read_at: i64) -> i64 {
        let off = match &self.zone {
            Zone::Fixed(off) => i64::from(*off),
            Zone::Named(tz) => jiff::Timestamp::from_second(read_at)
                .map_or(0, |ts| i64::from(tz.to_offset(ts).seconds())),
        };
        let local = read_at + off;
        let mut t = local.div_euclid(86_400) * 86_400 + i64::from(tod);
        if t > local + 3600 {
            t -= 86_400;
        }
        t - off
    }

    /// Unix seconds of `c`: its own offset when it has one, else the configured zone's.
    pub(crate) fn unix(&mut self, c: &Civil) -> i64 {
        let naive = c.naive_seconds();
        if let Some(off) = c.offset {
            return naive - i64::from(off);
        }
        match &self.zone {
            Zone::Fixed(off) => naive - i64::from(*off),
            Zone::Named(tz) => {
                let key = naive.div_euclid(3600);
                if key != self.hour_key {
                    self.hour_offset = local_offset(tz, c).unwrap_or(0);
                    self.hour_key = key;
                }
                naive - i64::from(self.hour_offset)
            }
        }
    }
}

pub(crate) fn local_offset(tz: &jiff::tz::TimeZone, c: &Civil) -> Option<i32> {
    let dt = jiff::civil::DateTime::new(
        i16::try_from(c.year).ok()?,
        i8::try_from(c.month).ok()?,
        i8::try_from(c.day).ok()?,
        i8::try_from(c.hour).ok()?,
        0,
        0,
        0,
    )
    .ok()?;
    let ts = tz.to_ambiguous_timestamp(dt).compatible().ok()?;
    let naive = Civil {
        minute: 0,
        second: 0,
        ..*c
    }
    .naive_seconds();
    i32::try_from(naive - ts.as_second()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_utc(s: &str) -> Option<i64> {
        let (c, _) = parse_iso(s.as_bytes())?;
        Some(Clock::new(Zone::Fixed(0)).unix(&c))
    }

    #[test]
    fn iso_variants() {
        let t = 1_763_923_483; // 2025-11-23T18:44:43Z
        assert_eq!(unix_utc("2025-11-23 18:44:43.568 INFO"), Some(t));
        assert_eq!(unix_utc("2025-11-23T18:44:43,568 INFO"), Some(t));
        assert_eq!(unix_utc("2025-11-23T18:44:43.568Z INFO"), Some(t));
        assert_eq!(unix_utc("2025-11-23T20:44:43.568+02:00 x"), Some(t));
        assert_eq!(unix_utc("2025-11-23T20:44:43.568+0200 x"), Some(t));
        assert_eq!(unix_utc("[2025-11-23 18:44:43] x"), Some(t));
        assert_eq!(unix_utc("2025-11-23 18:44:43 x"), Some(t));
        assert_eq!(unix_utc("2025-13-23 18:44:43 x"), None);
        assert_eq!(unix_utc("2025-11-23 18:44"), None);
        assert_eq!(unix_utc("\tat x"), None);
    }

    #[test]
    fn configured_zone_applies_only_without_own_zone() {
        let (c, _) = parse_iso(b"2025-11-23 20:44:43.000").expect("parses");
        assert_eq!(Clock::new(Zone::Fixed(7200)).unix(&c), 1_763_923_483);
        let (c, _) = parse_iso(b"2025-11-23T18:44:43Z").expect("parses");
        assert_eq!(Clock::new(Zone::Fixed(7200)).unix(&c), 1_763_923_483);
    }

    #[test]
    fn jul_and_tomcat() {
        let (c, n) = parse_jul(b"Nov 23, 2025 6:44:43 PM shop.A b").expect("jul");
        assert_eq!((c.hour, c.minute, n), (18, 44, 23));
        assert_eq!(Clock::new(Zone::Fixed(0)).unix(&c), 1_763_923_483);
        let (c, _) = parse_jul(b"Nov 23, 2025 12:05:00 AM x").expect("jul");
        assert_eq!(c.hour, 0);
        let (c, _) = parse_tomcat(b"23-Nov-2025 18:44:43.568 SEVERE [main]").expect("tomcat");
        assert_eq!(Clock::new(Zone::Fixed(0)).unix(&c), 1_763_923_483);
        assert_eq!(time_of_day(b"18:44:43.568 [main] INFO x"), Some(67_483));
        assert_eq!(time_of_day(b"18:44 x"), None);
        let mut clock = Clock::new(Zone::Fixed(0));
        // Read at 2025-11-23T18:50:00Z.
        assert_eq!(clock.at_time_of_day(67_483, 1_763_923_800), 1_763_923_483);
        // Written at 23:59:59, read just after midnight: the day before.
        assert_eq!(clock.at_time_of_day(86_399, 1_763_942_410), 1_763_942_399);
        let mut plus2 = Clock::new(Zone::Fixed(7200));
        assert_eq!(
            plus2.at_time_of_day(67_483 + 7200, 1_763_923_800),
            1_763_923_483
        );
    }

    #[test]
    fn tz_from_str() {
        assert_eq!("local".parse::<Tz>(), Ok(Tz::Local));
        assert_eq!("UTC".parse::<Tz>(), Ok(Tz::Utc));
        assert_eq!("+02:00".parse::<Tz>(), Ok(Tz::Fixed(7200)));
        assert_eq!("-05:30".parse::<Tz>(), Ok(Tz::Fixed(-19800)));
        assert!("Mars/Olympus".parse::<Tz>().is_err());
        assert_eq!(Tz::Fixed(-19800).to_string(), "-05:30");
    }

    #[test]
    fn utc_roundtrip() {
        assert_eq!(format_utc(1_763_923_483), "2025-11-23T18:44:43Z");
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
    }
}
