//! Host metrics as stored: one JSON object per host and minute (or hour), merged when
//! several reports carry the same minute and when retention rolls minutes into an hour.

use std::collections::BTreeMap;

use vigil_proto::v1::HostMetrics;

use crate::store::HostMetricsRow;

/// Host metrics as stored, with what is needed to add up several reports of one minute.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(in crate::store) struct StoredHostMetrics {
    #[serde(flatten)]
    values: BTreeMap<String, f64>,
    pub(in crate::store) samples: u32,
    pub(in crate::store) partial: bool,
}

/// Fields averaged (weighted by samples) when two reports carry the same minute.
const MEAN_FIELDS: [&str; 7] = [
    "cpu_pct",
    "mem_used_pct",
    "swap_used_pct",
    "load1",
    "load5",
    "load15",
    "disk_busy_pct",
];
/// Fields that take the larger value.
const MAX_FIELDS: [&str; 1] = ["cpu_pct_max"];
/// Fields added up.
const SUM_FIELDS: [&str; 4] = [
    "disk_read_bytes",
    "disk_write_bytes",
    "disk_reads",
    "disk_writes",
];

pub(in crate::store) fn decode_metrics(text: String) -> StoredHostMetrics {
    serde_json::from_str(&text).unwrap_or_default()
}

impl StoredHostMetrics {
    pub(in crate::store) fn from_proto(m: &HostMetrics) -> Self {
        let mut values = BTreeMap::new();
        let floats = [
            ("cpu_pct", m.cpu_pct),
            ("cpu_pct_max", m.cpu_pct_max),
            ("mem_used_pct", m.mem_used_pct),
            ("swap_used_pct", m.swap_used_pct),
            ("load1", m.load1),
            ("load5", m.load5),
            ("load15", m.load15),
            ("disk_busy_pct", m.disk_busy_pct),
        ];
        let counters = [
            ("disk_read_bytes", m.disk_read_bytes),
            ("disk_write_bytes", m.disk_write_bytes),
            ("disk_reads", m.disk_reads),
            ("disk_writes", m.disk_writes),
        ];
        for (name, value) in floats {
            if let Some(v) = value.filter(|v| v.is_finite()) {
                values.insert(name.to_owned(), v);
            }
        }
        for (name, value) in counters {
            if let Some(v) = value {
                values.insert(name.to_owned(), v as f64);
            }
        }
        Self {
            values,
            samples: m.samples.max(1),
            partial: m.partial,
        }
    }

    /// Adds up two reports of the same host and minute.
    pub(in crate::store) fn merge(&self, other: &Self) -> Self {
        let mut values = BTreeMap::new();
        let (wa, wb) = (f64::from(self.samples), f64::from(other.samples));
        for name in MEAN_FIELDS.iter().chain(&MAX_FIELDS).chain(&SUM_FIELDS) {
            let merged = match (self.values.get(*name), other.values.get(*name)) {
                (Some(a), Some(b)) if MEAN_FIELDS.contains(name) => (a * wa + b * wb) / (wa + wb),
                (Some(a), Some(b)) if MAX_FIELDS.contains(name) => a.max(*b),
                (Some(a), Some(b)) => a + b,
                (Some(a), None) | (None, Some(a)) => *a,
                (None, None) => continue,
            };
            values.insert((*name).to_owned(), merged);
        }
        Self {
            values,
            samples: self.samples.saturating_add(other.samples),
            partial: self.partial && other.partial,
        }
    }

    pub(in crate::store) fn into_row(self) -> HostMetricsRow {
        let f = |name: &str| self.values.get(name).copied();
        let u = |name: &str| self.values.get(name).map(|v| *v as u64);
        HostMetricsRow {
            cpu_pct: f("cpu_pct"),
            cpu_pct_max: f("cpu_pct_max"),
            mem_used_pct: f("mem_used_pct"),
            swap_used_pct: f("swap_used_pct"),
            load1: f("load1"),
            load5: f("load5"),
            load15: f("load15"),
            disk_read_bytes: u("disk_read_bytes"),
            disk_write_bytes: u("disk_write_bytes"),
            disk_reads: u("disk_reads"),
            disk_writes: u("disk_writes"),
            disk_busy_pct: f("disk_busy_pct"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_metrics_merge_weights_means_and_adds_counters() {
        let a = StoredHostMetrics::from_proto(&HostMetrics {
            cpu_pct: Some(10.0),
            cpu_pct_max: Some(50.0),
            disk_reads: Some(4),
            samples: 3,
            ..Default::default()
        });
        let b = StoredHostMetrics::from_proto(&HostMetrics {
            cpu_pct: Some(40.0),
            cpu_pct_max: Some(45.0),
            disk_reads: Some(6),
            load1: Some(1.5),
            samples: 1,
            partial: true,
            ..Default::default()
        });
        let row = a.merge(&b).into_row();
        assert_eq!(row.cpu_pct, Some(17.5));
        assert_eq!(row.cpu_pct_max, Some(50.0));
        assert_eq!(row.disk_reads, Some(10));
        assert_eq!(row.load1, Some(1.5));
    }
}
