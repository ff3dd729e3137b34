//! Values scraped from an app's metrics endpoint, per host and minute (and hour):
//! `app_minutes.scraped`, `app_hours.scraped`, one JSON object per row,
//! `{"name": ["gauge"|"counter", value, minutes]}`. Two reports of a minute: counters add
//! up, a gauge keeps the later value. Minutes rolled into an hour: counters add up, a
//! gauge becomes the mean of its minutes (`minutes` weighs it when a later pass adds
//! more). `NULL` where nothing was scraped.

use std::collections::BTreeMap;

use vigil_proto::v1::{ScrapedKind, ScrapedValue};

use super::merged::Merged;
use crate::store::ScrapedRow;

/// One stored value: its kind, the value, and the minutes behind it.
type Entry = (String, f64, u64);

/// The scraped values of one row, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub(in crate::store) struct Scraped(BTreeMap<String, Entry>);

/// Most names one row keeps, whatever the reports of its minutes (or hour) send: the
/// first ones stay.
pub(in crate::store) const MAX_NAMES: usize = 64;
/// Longest name kept, in bytes.
pub(in crate::store) const MAX_NAME_BYTES: usize = 128;
/// Largest magnitude of a value kept: sums of many stay finite.
pub(in crate::store) const MAX_VALUE: f64 = 1e15;

const GAUGE: &str = "gauge";
const COUNTER: &str = "counter";

impl Scraped {
    /// Adds one report's values, leaving out the ones no agent should send (a name empty,
    /// longer than [`MAX_NAME_BYTES`] or with control characters, a kind unknown, a value
    /// not finite or beyond ±[`MAX_VALUE`], a counter's growth negative) rather than the
    /// report: its other counters are good.
    pub(in crate::store) fn add_report(&mut self, values: &[ScrapedValue]) {
        for v in values {
            let kind = match ScrapedKind::try_from(v.kind) {
                Ok(ScrapedKind::Counter) if v.value >= 0.0 => COUNTER,
                Ok(ScrapedKind::Gauge) => GAUGE,
                _ => continue,
            };
            if v.name.is_empty()
                || v.name.len() > MAX_NAME_BYTES
                || v.name.chars().any(char::is_control)
                || !v.value.is_finite()
                || v.value.abs() > MAX_VALUE
            {
                continue;
            }
            self.add(&v.name, kind, v.value, 1, false);
        }
    }

    /// Adds a value of the same minute (`across_minutes` false: a gauge is replaced) or of
    /// another minute of the same hour (true: a gauge is averaged over the minutes).
    fn add(&mut self, name: &str, kind: &str, value: f64, minutes: u64, across_minutes: bool) {
        if !self.0.contains_key(name) && self.0.len() >= MAX_NAMES {
            return;
        }
        match self.0.get_mut(name) {
            Some(e) if e.0 == COUNTER && kind == COUNTER => {
                e.1 = (e.1 + value).min(f64::MAX);
                e.2 = e.2.max(minutes);
            }
            Some(e) if across_minutes => {
                let n = e.2 + minutes;
                e.1 = (e.1 * e.2 as f64 + value * minutes as f64) / n.max(1) as f64;
                e.2 = n;
            }
            Some(e) => *e = (kind.to_owned(), value, minutes),
            None => {
                self.0
                    .insert(name.to_owned(), (kind.to_owned(), value, minutes));
            }
        }
    }

    /// Adds `older`'s values as the earlier report of the same row.
    pub(in crate::store) fn merge_older(&mut self, older: &Scraped, across_minutes: bool) {
        let newer = std::mem::replace(self, older.clone());
        for (name, (kind, value, minutes)) in newer.0 {
            self.add(&name, &kind, value, minutes, across_minutes);
        }
    }

    /// The values as the series shows them.
    pub(in crate::store) fn row(&self) -> ScrapedRow {
        self.0.iter().map(|(n, e)| (n.clone(), e.1)).collect()
    }
}

impl Merged for Scraped {
    const COLUMN: &'static str = "scraped";

    fn decode(text: Option<&str>) -> Option<Self> {
        serde_json::from_str(text?).ok().map(Scraped)
    }

    fn encode(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_default()
    }

    fn absorb(&mut self, older: &Self, across_minutes: bool) {
        self.merge_older(older, across_minutes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::shared::merged::Merged;

    fn value(name: &str, value: f64, kind: ScrapedKind) -> ScrapedValue {
        ScrapedValue {
            name: name.into(),
            value,
            kind: kind as i32,
        }
    }

    #[test]
    fn counters_add_gauges_keep_the_later_value_and_average_over_minutes() {
        let mut first = Scraped::default();
        first.add_report(&[
            value("jvm_gc_pause_seconds_count", 3.0, ScrapedKind::Counter),
            value("hikaricp_connections_pending", 2.0, ScrapedKind::Gauge),
        ]);
        let mut second = Scraped::default();
        second.add_report(&[
            value("jvm_gc_pause_seconds_count", 4.0, ScrapedKind::Counter),
            value("hikaricp_connections_pending", 6.0, ScrapedKind::Gauge),
        ]);
        // Two reports of one minute.
        let mut minute = second.clone();
        minute.merge_older(&first, false);
        let row = minute.row();
        assert_eq!(row["jvm_gc_pause_seconds_count"], 7.0);
        assert_eq!(row["hikaricp_connections_pending"], 6.0);
        // Two minutes of one hour.
        let mut hour = second;
        hour.merge_older(&first, true);
        assert_eq!(hour.row()["hikaricp_connections_pending"], 4.0);
        assert_eq!(Scraped::decode(Some(&hour.encode())), Some(hour));
        assert_eq!(Scraped::decode(Some("[1,2")), None);
    }

    #[test]
    fn bad_values_are_left_out_and_names_bounded() {
        let mut s = Scraped::default();
        s.add_report(&[
            value("ok", 1.0, ScrapedKind::Gauge),
            value("inf", f64::INFINITY, ScrapedKind::Gauge),
            value("huge", 1e300, ScrapedKind::Gauge),
            value("negative_counter", -1.0, ScrapedKind::Counter),
            value("no_kind", 1.0, ScrapedKind::Unspecified),
            value("tab\tname", 1.0, ScrapedKind::Gauge),
            value(&"n".repeat(200), 1.0, ScrapedKind::Gauge),
        ]);
        assert_eq!(s.row().keys().collect::<Vec<_>>(), ["ok"]);
        let many: Vec<ScrapedValue> = (0..100)
            .map(|i| value(&format!("m{i:03}"), 1.0, ScrapedKind::Counter))
            .collect();
        let mut later = Scraped::default();
        later.add_report(&many);
        later.merge_older(&s, false);
        assert_eq!(
            later.row().len(),
            MAX_NAMES,
            "the row keeps {MAX_NAMES} names"
        );
        assert!(later.row().contains_key("ok"), "the older names stay");
    }
}
