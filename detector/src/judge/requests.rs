//! HTTP requests of one app on one host in one minute, from its access logs (DESIGN §3
//! "Business signals"): the shape of the replay case's `requests` (DESIGN §5), of the
//! series API and of the judge's input.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_proto::latency;
use vigil_proto::v1::RequestCounters;

/// Responses by status class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusClasses {
    #[serde(rename = "1xx", default, skip_serializing_if = "is_zero")]
    pub informational: u64,
    #[serde(rename = "2xx", default)]
    pub success: u64,
    #[serde(rename = "3xx", default, skip_serializing_if = "is_zero")]
    pub redirection: u64,
    #[serde(rename = "4xx", default)]
    pub client_error: u64,
    #[serde(rename = "5xx", default)]
    pub server_error: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Response times as a histogram in the fixed layout of [`vigil_proto::latency`]: bucket
/// `i` holds the times in `(2^((i-1)/4), 2^(i/4)]` ms. Written with its `p50`, `p90` and
/// `p99` (read from the buckets, within ±9.1 %) for people; read back from `buckets` and
/// `sum` only.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Latency {
    /// Sum of the times, ms.
    #[serde(default)]
    pub sum: f64,
    /// Requests per bucket index (only non-empty buckets).
    #[serde(default)]
    pub buckets: BTreeMap<i32, u64>,
}

impl Latency {
    /// Requests with a time.
    pub fn count(&self) -> u64 {
        self.buckets
            .values()
            .fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// Whether no time was recorded.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The `q` quantile in ms, `None` without times.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let pairs: Vec<(i32, u64)> = self.buckets.iter().map(|(&i, &c)| (i, c)).collect();
        latency::quantile(&pairs, q)
    }

    /// Adds `other`'s times.
    pub fn merge(&mut self, other: &Latency) {
        self.sum += other.sum;
        for (&i, &c) in &other.buckets {
            let slot = self.buckets.entry(i).or_insert(0);
            *slot = slot.saturating_add(c);
        }
    }
}

impl Serialize for Latency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            p50: Option<f64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            p90: Option<f64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            p99: Option<f64>,
            sum: f64,
            buckets: &'a BTreeMap<i32, u64>,
        }
        let round = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
        Shown {
            p50: round(self.quantile(0.5)),
            p90: round(self.quantile(0.9)),
            p99: round(self.quantile(0.99)),
            sum: self.sum,
            buckets: &self.buckets,
        }
        .serialize(serializer)
    }
}

/// Requests answered in one minute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Requests {
    /// Requests (access-log lines read as a request); the sum of `status`.
    #[serde(default)]
    pub count: u64,
    /// Responses by status class.
    #[serde(default)]
    pub status: StatusClasses,
    /// Access-log lines that could not be read (not in `count`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub malformed: u64,
    /// Response times, when the log format has them.
    #[serde(default, skip_serializing_if = "Latency::is_empty")]
    pub latency_ms: Latency,
}

impl Requests {
    /// The counters an agent sent.
    pub fn from_proto(r: &RequestCounters) -> Self {
        Self {
            count: r.count,
            status: StatusClasses {
                informational: r.status_1xx,
                success: r.status_2xx,
                redirection: r.status_3xx,
                client_error: r.status_4xx,
                server_error: r.status_5xx,
            },
            malformed: r.malformed,
            latency_ms: Latency {
                sum: if r.latency_sum_ms.is_finite() {
                    r.latency_sum_ms.max(0.0)
                } else {
                    0.0
                },
                buckets: r.latency.iter().filter(|b| b.count > 0).fold(
                    BTreeMap::new(),
                    |mut m, b| {
                        let slot = m
                            .entry(b.index.clamp(latency::MIN_INDEX, latency::MAX_INDEX))
                            .or_insert(0u64);
                        *slot = slot.saturating_add(b.count);
                        m
                    },
                ),
            },
        }
    }

    /// Adds another report's counters of the same minute.
    pub fn merge(&mut self, other: &Requests) {
        self.count = self.count.saturating_add(other.count);
        let (a, b) = (&mut self.status, &other.status);
        a.informational = a.informational.saturating_add(b.informational);
        a.success = a.success.saturating_add(b.success);
        a.redirection = a.redirection.saturating_add(b.redirection);
        a.client_error = a.client_error.saturating_add(b.client_error);
        a.server_error = a.server_error.saturating_add(b.server_error);
        self.malformed = self.malformed.saturating_add(other.malformed);
        self.latency_ms.merge(&other.latency_ms);
    }

    /// What is wrong with counters read from a replay case: status classes, when given, that
    /// do not add up to `count`, more times than requests, a bucket outside the layout, a sum that is
    /// not a time; `None` when they are sound.
    pub fn problem(&self) -> Option<String> {
        let s = &self.status;
        let classes = [
            s.informational,
            s.success,
            s.redirection,
            s.client_error,
            s.server_error,
        ]
        .iter()
        .fold(0u64, |a, &c| a.saturating_add(c));
        // `status` is optional in the case format: absent (all zero), only `count` is known.
        if classes != 0 && classes != self.count {
            return Some(format!(
                "status classes add up to {classes}, not count {}",
                self.count
            ));
        }
        if let Some(i) = self
            .latency_ms
            .buckets
            .keys()
            .find(|i| !(latency::MIN_INDEX..=latency::MAX_INDEX).contains(*i))
        {
            return Some(format!(
                "latency bucket {i} outside {}..={}",
                latency::MIN_INDEX,
                latency::MAX_INDEX
            ));
        }
        if self.latency_ms.count() > self.count {
            return Some(format!(
                "{} latency times for {} requests",
                self.latency_ms.count(),
                self.count
            ));
        }
        let sum = self.latency_ms.sum;
        if !sum.is_finite() || sum < 0.0 {
            return Some(format!("latency sum {sum} is not a time"));
        }
        None
    }

    /// Share of the requests answered with a 5xx, `None` without requests.
    pub fn server_error_share(&self) -> Option<f64> {
        (self.count > 0).then(|| self.status.server_error as f64 / self.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_with_quantiles_and_read_back_from_buckets() {
        let mut r = Requests {
            count: 100,
            status: StatusClasses {
                success: 95,
                server_error: 5,
                ..StatusClasses::default()
            },
            ..Requests::default()
        };
        r.latency_ms.buckets.insert(latency::bucket_of(20.0), 90);
        r.latency_ms.buckets.insert(latency::bucket_of(400.0), 10);
        r.latency_ms.sum = 90.0 * 20.0 + 10.0 * 400.0;
        let json = serde_json::to_string(&r).unwrap_or_default();
        assert!(json.contains("\"2xx\":95"), "{json}");
        assert!(json.contains("\"p50\":"), "{json}");
        let back: Requests = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, r);
        let p99 = back.latency_ms.quantile(0.99).unwrap_or_default();
        assert!((p99 - 400.0).abs() < 40.0, "{p99}");
        assert_eq!(back.server_error_share(), Some(0.05));
    }
}
