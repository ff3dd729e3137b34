//! What both stores share: the pure Rust behind their rows, so that the embedded SQLite
//! store and the shared PostgreSQL store keep, merge and read back counters identically.
//!
//! - [`accumulator`]: one batch's new reports added up in memory before they are written;
//! - [`host_metrics`], [`requests`], [`scraped`]: values stored as text and merged in Rust
//!   (two reports of one minute, minutes rolled into their hour), with [`merged`] the
//!   trait they share;
//! - [`rows`]: stored rows decoded into the store's types;
//! - [`fingerprints`]: an app's fingerprints read back in bounded pieces;
//! - [`retention`]: what a retention pass does and how often, whatever the database;
//! - below: the encodings of counts, fingerprints, JSON and enums in columns.

pub(super) mod accumulator;
pub(super) mod fingerprints;
pub(super) mod host_metrics;
pub(super) mod merged;
pub(super) mod requests;
pub(super) mod retention;
pub(super) mod rows;
pub(super) mod scraped;

use std::collections::BTreeMap;

use super::{StoreError, fingerprint_hex};

/// Counts are kept as signed 64-bit integers; a count never comes near 2^63, and one that
/// would is held at `i64::MAX`.
pub(super) fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored count read back: a negative one (no Vigil writes it) reads as 0.
pub(super) fn stored_count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Fingerprints are 64-bit patterns stored in signed 64-bit integers bit for bit.
pub(super) fn fp(fingerprint: u64) -> i64 {
    fingerprint as i64
}

/// The start of the hour of `t` (UTC Unix seconds).
pub(super) fn hour_of(t: i64) -> i64 {
    t.div_euclid(3600) * 3600
}

pub(super) fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
        what: "value to store",
        reason: e.to_string(),
    })
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

/// The text of a unit enum as serde writes it (`rolled_back`, `false_alarm`, ...).
pub(super) fn enum_text(value: &impl serde::Serialize) -> Result<String, StoreError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(StoreError::Corrupt {
            what: "enum",
            reason: "not a string".into(),
        }),
    }
}

pub(super) fn parse_enum<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|e| {
        StoreError::Corrupt {
            what,
            reason: e.to_string(),
        }
    })
}

/// Exception counts as gathered by `series`: `fingerprint:count` pairs (the fingerprint as
/// stored, a signed 64-bit integer) separated by commas.
pub(super) fn parse_counts(text: &str) -> Result<BTreeMap<String, u64>, StoreError> {
    let corrupt = |pair: &str| StoreError::Corrupt {
        what: "exception counts",
        reason: format!("{pair:?} is not fingerprint:count"),
    };
    text.split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (fingerprint, count) = pair.split_once(':').ok_or_else(|| corrupt(pair))?;
            let fingerprint: i64 = fingerprint.parse().map_err(|_| corrupt(pair))?;
            let count: u64 = count.parse().map_err(|_| corrupt(pair))?;
            Ok((fingerprint_hex(fingerprint as u64), count))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathered_exception_counts_parse_back_and_garbage_is_named() {
        let counts = parse_counts("-1:3,255:12").expect("valid counts");
        assert_eq!(counts.get("ffffffffffffffff"), Some(&3));
        assert_eq!(counts.get("00000000000000ff"), Some(&12));
        assert!(parse_counts("").expect("no counts").is_empty());
        let e = parse_counts("12:3,oops").expect_err("garbage");
        assert!(
            e.to_string().contains("\"oops\" is not fingerprint:count"),
            "{e}"
        );
    }
}
