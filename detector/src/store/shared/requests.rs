//! The requests of an app on a host in a minute or an hour (`app_minutes.requests`,
//! `app_hours.requests`): one compact JSON array per row,
//! `[count, 1xx, 2xx, 3xx, 4xx, 5xx, malformed, latency_sum_ms, [[bucket, n], ...]]`,
//! merged (`merged`) when a second report of the same minute arrives and when minutes are
//! rolled up into their hour (counts added, histograms added bucket by bucket). `NULL`
//! where the host has no access log for the app: *missing*, not zero.

use std::collections::BTreeMap;

use super::merged::Merged;
use crate::judge::{Latency, Requests, StatusClasses};

type Stored = (u64, u64, u64, u64, u64, u64, u64, f64, Vec<(i32, u64)>);

/// The stored form of `r`.
pub(in crate::store) fn encode(r: &Requests) -> String {
    let s = &r.status;
    let stored: Stored = (
        r.count,
        s.informational,
        s.success,
        s.redirection,
        s.client_error,
        s.server_error,
        r.malformed,
        r.latency_ms.sum,
        r.latency_ms.buckets.iter().map(|(&i, &c)| (i, c)).collect(),
    );
    serde_json::to_string(&stored).unwrap_or_default()
}

/// Reads a stored value; `None` for `NULL` or a value this version cannot read.
pub(in crate::store) fn decode(text: Option<&str>) -> Option<Requests> {
    let (count, s1, s2, s3, s4, s5, malformed, sum, buckets): Stored =
        serde_json::from_str(text?).ok()?;
    Some(Requests {
        count,
        status: StatusClasses {
            informational: s1,
            success: s2,
            redirection: s3,
            client_error: s4,
            server_error: s5,
        },
        malformed,
        latency_ms: Latency {
            sum,
            buckets: buckets.into_iter().collect::<BTreeMap<_, _>>(),
        },
    })
}

impl Merged for Requests {
    const COLUMN: &'static str = "requests";

    fn decode(text: Option<&str>) -> Option<Self> {
        decode(text)
    }

    fn encode(&self) -> String {
        encode(self)
    }

    /// Counts and histograms add up whatever the minutes.
    fn absorb(&mut self, older: &Self, _across_minutes: bool) {
        self.merge(older);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_reads_back() {
        let mut r = Requests {
            count: 12,
            malformed: 1,
            ..Requests::default()
        };
        r.status.success = 10;
        r.status.server_error = 2;
        r.latency_ms.sum = 123.5;
        r.latency_ms.buckets.insert(-3, 4);
        r.latency_ms.buckets.insert(27, 8);
        assert_eq!(decode(Some(&encode(&r))), Some(r));
        assert_eq!(decode(Some("{not json")), None);
        assert_eq!(decode(None), None);
    }
}
