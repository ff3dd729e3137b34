//! Micrometer's HTTP server timer, `http_server_requests_seconds`, as Spring Boot's
//! `/actuator/prometheus` exposes it: turned into the requests of each scrape interval by
//! status class, with their time, in the layout of [`vigil_proto::latency`].
//!
//! One *series* is one label set (`method`, `uri`, `status`, `outcome`, `exception`, ...;
//! `le` aside). Micrometer writes a summary (`_count`, `_sum`) or, with
//! `percentiles-histogram` on, a histogram (also `_bucket{le=...}`, cumulative). Per series:
//!
//! - the interval's requests are the growth of `_count` since the last good scrape, their
//!   time the growth of `_sum` (seconds, sent in ms);
//! - a `_count` below the last one is a reset (the service restarted): the new values are
//!   the growth since the reset;
//! - the first good scrape of a target only sets the baseline; a series that appears in a
//!   later one counts from zero (Micrometer creates a series at the first request with its
//!   tags, so a first 500 after a release is counted, not taken as a baseline);
//! - `uri="/actuator/..."` is left out (the scrapes themselves, health checks);
//! - the class comes from `status` (`"503"` → 5xx), else from `outcome` (`SUCCESS` 2xx,
//!   `REDIRECTION` 3xx, `CLIENT_ERROR` 4xx, `SERVER_ERROR` 5xx, `INFORMATIONAL` 1xx); a
//!   series with neither is counted as unclassified (the `malformed` of the counters).
//!
//! **Latency buckets (an approximation).** The growth of each cumulative bucket gives the
//! requests of the interval per Micrometer bucket `(le_prev, le]`; they are all placed in
//! the Vigil bucket of that upper bound `le` (and `+Inf` in the one of the largest finite
//! bound). Micrometer's default bounds are at most a third apart, Vigil's 19 %: a time is
//! read up to one Micrometer bucket too high, never lower. Without buckets (a summary) the
//! counters carry no latency histogram, only `latency_sum_ms`.

use foldhash::{HashMap, HashMapExt};
use xxhash_rust::xxh3::Xxh3;

use vigil_proto::latency;

use super::exposition::Page;

/// The request family Micrometer names for `http.server.requests`.
pub const REQUEST_FAMILY: &str = "http_server_requests_seconds";

/// Most requests one scrape may add: 10^8 in one interval is no real service, and bounds
/// what one minute can carry (the detector refuses more than 10^10).
pub const MAX_REQUESTS_PER_SCRAPE: u64 = 100_000_000;

/// Buckets in the layout of [`vigil_proto::latency`].
const BUCKETS: usize = (latency::MAX_INDEX - latency::MIN_INDEX + 1) as usize;

/// Requests of one scrape interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestDelta {
    /// By status class, 1xx to 5xx.
    pub classes: [u64; 5],
    /// Requests of series with neither a readable `status` nor `outcome`.
    pub unclassified: u64,
    /// Counts by latency bucket (index less [`latency::MIN_INDEX`]); empty without buckets.
    pub latency: Vec<u64>,
    /// Sum of the requests' times, ms.
    pub latency_sum_ms: f64,
}

impl RequestDelta {
    /// Requests with a status class.
    pub fn count(&self) -> u64 {
        self.classes.iter().sum()
    }

    /// Requests with a latency bucket.
    pub fn timed(&self) -> u64 {
        self.latency.iter().sum()
    }
}

/// What one series showed at the last good scrape.
#[derive(Debug, Clone, Default)]
struct Seen {
    count: f64,
    sum: f64,
    /// Cumulative buckets, ascending `le` (`+Inf` last).
    buckets: Vec<(f64, f64)>,
    /// Pages in a row this series was absent from.
    missed: u32,
}

/// Pages a series may be absent from and keep its last values: when it comes back, only
/// its growth counts, not its whole count again.
const MAX_MISSED_PAGES: u32 = 10;

/// One series on the page being read.
#[derive(Debug, Default)]
struct Now {
    class: Option<usize>,
    count: Option<f64>,
    sum: Option<f64>,
    buckets: Vec<(f64, f64)>,
}

/// The request family of one target, from scrape to scrape.
#[derive(Debug, Default)]
pub struct Requests {
    /// By series (a hash of its labels but `le`).
    seen: HashMap<u64, Seen>,
    /// A good scrape set the baseline.
    baselined: bool,
}

impl Requests {
    /// Reads the request family of a good scrape: the requests since the last good one,
    /// `None` for the first (the baseline). The page becomes the new baseline.
    pub fn observe(&mut self, page: &Page<'_>) -> Option<RequestDelta> {
        let mut now: HashMap<u64, Now> = HashMap::new();
        for sample in &page.samples {
            let Some(suffix) = sample.name.strip_prefix(REQUEST_FAMILY) else {
                continue;
            };
            if !matches!(suffix, "_count" | "_sum" | "_bucket") {
                continue;
            }
            let mut hash = Xxh3::new();
            let mut le = None;
            let (mut status, mut outcome) = (None, None);
            let mut actuator = false;
            for (name, value) in sample.labels() {
                match name {
                    "le" => {
                        le = super::exposition::parse_value(&value);
                        continue;
                    }
                    "status" => status = class_of_status(&value),
                    "outcome" => outcome = class_of_outcome(&value),
                    "uri" => actuator = value.starts_with("/actuator"),
                    _ => {}
                }
                hash.update(name.as_bytes());
                hash.update(b"=");
                hash.update(value.as_bytes());
                hash.update(b"\0");
            }
            if actuator || !sample.value.is_finite() || sample.value < 0.0 {
                continue;
            }
            let series = now.entry(hash.digest()).or_default();
            series.class = status.or(outcome);
            match (suffix, le) {
                ("_count", _) => series.count = Some(sample.value),
                ("_sum", _) => series.sum = Some(sample.value),
                ("_bucket", Some(le)) if !le.is_nan() => series.buckets.push((le, sample.value)),
                _ => {}
            }
        }
        let mut delta = RequestDelta::default();
        let baselined = self.baselined;
        let mut seen = HashMap::with_capacity(now.len());
        for (key, mut series) in now {
            series.buckets.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            let count = match series.count {
                Some(count) => count,
                // A histogram without its count: the +Inf bucket is the count.
                None => match series.buckets.last() {
                    Some(&(le, cum)) if le == f64::INFINITY => cum,
                    _ => continue,
                },
            };
            let current = Seen {
                count,
                sum: series.sum.unwrap_or(0.0),
                buckets: series.buckets,
                missed: 0,
            };
            if baselined {
                let zero = Seen::default();
                let before = self.seen.get(&key).unwrap_or(&zero);
                add_series(&mut delta, series.class, before, &current);
            }
            seen.insert(key, current);
        }
        for (key, mut old) in std::mem::take(&mut self.seen) {
            if old.missed < MAX_MISSED_PAGES && !seen.contains_key(&key) {
                old.missed += 1;
                seen.insert(key, old);
            }
        }
        self.seen = seen;
        self.baselined = true;
        if !baselined {
            return None;
        }
        if delta.count() + delta.unclassified > MAX_REQUESTS_PER_SCRAPE {
            // Not a service's counters: the page is taken as the new baseline only, and
            // the interval is missing (not zero, which would look like traffic gone).
            return None;
        }
        Some(delta)
    }
}

/// Adds the growth of one series from `before` to `now` to `delta`.
fn add_series(delta: &mut RequestDelta, class: Option<usize>, before: &Seen, now: &Seen) {
    let reset = now.count < before.count;
    let base = if reset { &Seen::default() } else { before };
    let Some(count) = whole(now.count - base.count) else {
        return;
    };
    if count == 0 {
        return;
    }
    match class.and_then(|c| delta.classes.get_mut(c)) {
        Some(n) => *n += count,
        None => {
            delta.unclassified += count;
            return;
        }
    }
    let sum = now.sum - base.sum;
    if sum.is_finite() && sum > 0.0 {
        delta.latency_sum_ms += sum * 1000.0;
    }
    add_buckets(delta, count, &base.buckets, &now.buckets, reset);
}

/// Adds the interval's requests per Micrometer bucket to the latency histogram, when the
/// buckets add up (no more than `count` requests in them).
fn add_buckets(
    delta: &mut RequestDelta,
    count: u64,
    before: &[(f64, f64)],
    now: &[(f64, f64)],
    reset: bool,
) {
    if now.is_empty() {
        return;
    }
    // The bounds must be the same as at the last scrape (a new series or a reset starts
    // from zero).
    let same_bounds = before.len() == now.len() && before.iter().zip(now).all(|(a, b)| a.0 == b.0);
    if !(reset || before.is_empty() || same_bounds) {
        return;
    }
    let largest_finite = now
        .iter()
        .rev()
        .map(|&(le, _)| le)
        .find(|le| le.is_finite());
    let mut placed: Vec<(i32, u64)> = Vec::with_capacity(now.len());
    let mut below = 0u64;
    for (i, &(le, cum)) in now.iter().enumerate() {
        let was = if reset || before.is_empty() {
            0.0
        } else {
            before.get(i).map_or(0.0, |b| b.1)
        };
        let Some(cumulative) = whole(cum - was) else {
            return;
        };
        let in_bucket = cumulative.saturating_sub(below);
        below = below.max(cumulative);
        if in_bucket == 0 {
            continue;
        }
        let bound = if le.is_finite() {
            le
        } else {
            match largest_finite {
                Some(le) => le,
                None => return,
            }
        };
        placed.push((latency::bucket_of(bound * 1000.0), in_bucket));
    }
    let timed: u64 = placed.iter().map(|p| p.1).sum();
    if timed > count {
        // Buckets that grew more than the count: an inconsistent page, no histogram.
        return;
    }
    if delta.latency.is_empty() {
        delta.latency = vec![0; BUCKETS];
    }
    for (index, n) in placed {
        let slot = usize::try_from(index - latency::MIN_INDEX).unwrap_or(0);
        if let Some(c) = delta.latency.get_mut(slot) {
            *c += n;
        }
    }
}

/// A growth of a count as a whole number; `None` when it is not one a page can hold.
fn whole(growth: f64) -> Option<u64> {
    if !growth.is_finite() || growth < -0.5 || growth > MAX_REQUESTS_PER_SCRAPE as f64 {
        return None;
    }
    // Counts are whole numbers written as floats (`3.0`).
    Some(growth.round().max(0.0) as u64)
}

/// `"503"` → 4 (5xx); anything but a status from 100 to 599 → `None`.
fn class_of_status(status: &str) -> Option<usize> {
    let code: u16 = status.parse().ok()?;
    (100..600)
        .contains(&code)
        .then(|| usize::from(code / 100 - 1))
}

/// Micrometer's `outcome` tag → status class index.
fn class_of_outcome(outcome: &str) -> Option<usize> {
    match outcome {
        "INFORMATIONAL" => Some(0),
        "SUCCESS" => Some(1),
        "REDIRECTION" => Some(2),
        "CLIENT_ERROR" => Some(3),
        "SERVER_ERROR" => Some(4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observe(r: &mut Requests, text: &str) -> Option<RequestDelta> {
        r.observe(&Page::parse(text).expect("page"))
    }

    fn summary(series: &[(&str, &str, &str, f64, f64)]) -> String {
        let mut text = String::from(
            "# HELP http_server_requests_seconds  \n# TYPE http_server_requests_seconds summary\n",
        );
        for (status, outcome, uri, count, sum) in series {
            let labels = format!(
                "error=\"none\",exception=\"none\",method=\"GET\",outcome=\"{outcome}\",status=\"{status}\",uri=\"{uri}\""
            );
            text.push_str(&format!(
                "http_server_requests_seconds_count{{{labels}}} {count}\n\
                 http_server_requests_seconds_sum{{{labels}}} {sum}\n"
            ));
        }
        text
    }

    #[test]
    fn deltas_by_class_resets_new_series_and_actuator_left_out() {
        let mut r = Requests::default();
        let first = summary(&[
            ("200", "SUCCESS", "/api/cart", 100.0, 5.0),
            ("404", "CLIENT_ERROR", "/**", 3.0, 0.01),
            ("200", "SUCCESS", "/actuator/prometheus", 50.0, 1.0),
        ]);
        assert_eq!(
            observe(&mut r, &first),
            None,
            "the first scrape is the baseline"
        );
        let second = summary(&[
            ("200", "SUCCESS", "/api/cart", 130.0, 6.5),
            ("404", "CLIENT_ERROR", "/**", 3.0, 0.01),
            ("200", "SUCCESS", "/actuator/prometheus", 51.0, 1.1),
            ("500", "SERVER_ERROR", "/api/cart", 4.0, 0.4),
        ]);
        let d = observe(&mut r, &second).expect("a delta");
        assert_eq!(
            d.classes,
            [0, 30, 0, 0, 4],
            "the new 500 series counts from 0"
        );
        assert!(
            (d.latency_sum_ms - 1900.0).abs() < 1e-6,
            "{}",
            d.latency_sum_ms
        );
        assert!(d.latency.is_empty(), "a summary has no buckets");
        // The service restarts: its counters start again.
        let third = summary(&[
            ("200", "SUCCESS", "/api/cart", 7.0, 0.7),
            ("200", "SUCCESS", "/actuator/prometheus", 1.0, 0.1),
        ]);
        let d = observe(&mut r, &third).expect("a delta");
        assert_eq!(d.classes, [0, 7, 0, 0, 0], "a reset counts the new value");
        assert!((d.latency_sum_ms - 700.0).abs() < 1e-6);
        // A series absent from a page and back on the next counts its growth only.
        let fourth = summary(&[
            ("200", "SUCCESS", "/api/cart", 9.0, 0.9),
            ("404", "CLIENT_ERROR", "/**", 4.0, 0.02),
        ]);
        let d = observe(&mut r, &fourth).expect("a delta");
        assert_eq!(
            d.classes,
            [0, 2, 0, 1, 0],
            "not the 404s' whole count again"
        );
    }

    #[test]
    fn outcome_when_status_is_missing_and_unclassified_otherwise() {
        let mut r = Requests::default();
        let page = |n: f64| {
            format!(
                "http_server_requests_seconds_count{{outcome=\"SERVER_ERROR\",uri=\"/a\"}} {n}\n\
                 http_server_requests_seconds_count{{outcome=\"REDIRECTION\",status=\"UNKNOWN\",uri=\"/b\"}} {n}\n\
                 http_server_requests_seconds_count{{outcome=\"INFORMATIONAL\",uri=\"/c\"}} {n}\n\
                 http_server_requests_seconds_count{{outcome=\"UNKNOWN\",uri=\"/d\"}} {n}\n"
            )
        };
        assert_eq!(observe(&mut r, &page(1.0)), None);
        let d = observe(&mut r, &page(3.0)).expect("delta");
        assert_eq!(d.classes, [2, 0, 2, 0, 2]);
        assert_eq!(d.unclassified, 2);
    }

    #[test]
    fn buckets_become_the_latency_histogram() {
        let mut r = Requests::default();
        let page = |b: [f64; 4], count: f64, sum: f64| {
            let l = "method=\"GET\",outcome=\"SUCCESS\",status=\"200\",uri=\"/api/cart\"";
            format!(
                "# TYPE http_server_requests_seconds histogram\n\
                 http_server_requests_seconds_bucket{{{l},le=\"0.005592405\",}} {}\n\
                 http_server_requests_seconds_bucket{{{l},le=\"0.1\",}} {}\n\
                 http_server_requests_seconds_bucket{{{l},le=\"1.0\",}} {}\n\
                 http_server_requests_seconds_bucket{{{l},le=\"+Inf\",}} {}\n\
                 http_server_requests_seconds_count{{{l},}} {count}\n\
                 http_server_requests_seconds_sum{{{l},}} {sum}\n",
                b[0], b[1], b[2], b[3]
            )
        };
        assert_eq!(observe(&mut r, &page([1.0, 2.0, 2.0, 3.0], 3.0, 2.1)), None);
        // 4 more: 1 under 5.6 ms, 2 under 100 ms, 0 under 1 s, 1 above.
        let d = observe(&mut r, &page([2.0, 5.0, 5.0, 7.0], 7.0, 4.2)).expect("delta");
        assert_eq!(d.classes[1], 4);
        let placed: Vec<(i32, u64)> = d
            .latency
            .iter()
            .zip(latency::MIN_INDEX..)
            .filter(|(n, _)| **n > 0)
            .map(|(&n, i)| (i, n))
            .collect();
        assert_eq!(
            placed,
            [
                (latency::bucket_of(5.592405), 1),
                (latency::bucket_of(100.0), 2),
                (latency::bucket_of(1000.0), 1)
            ],
            "+Inf in the bucket of the largest finite bound"
        );
        assert_eq!(d.timed(), 4);
        // A reset: the buckets restart too.
        let d = observe(&mut r, &page([0.0, 1.0, 1.0, 1.0], 1.0, 0.05)).expect("delta");
        assert_eq!(d.classes[1], 1);
        assert_eq!(d.timed(), 1);
        assert_eq!(
            d.latency[(latency::bucket_of(100.0) - latency::MIN_INDEX) as usize],
            1
        );
    }

    #[test]
    fn implausible_values_add_nothing() {
        let mut r = Requests::default();
        assert_eq!(
            observe(&mut r, &summary(&[("200", "SUCCESS", "/", 1.0, 0.0)])),
            None
        );
        let huge = summary(&[("200", "SUCCESS", "/", 1e30, 1e30)]);
        assert_eq!(observe(&mut r, &huge), Some(RequestDelta::default()));
        let nan = summary(&[("200", "SUCCESS", "/", f64::NAN, 0.0)]);
        let d = observe(&mut r, &nan).expect("delta");
        assert_eq!(d.count(), 0);
    }

    #[test]
    fn statuses_and_outcomes_map_to_classes() {
        assert_eq!(class_of_status("200"), Some(1));
        assert_eq!(class_of_status("503"), Some(4));
        assert_eq!(class_of_status("99"), None);
        assert_eq!(class_of_status("600"), None);
        assert_eq!(class_of_status("UNKNOWN"), None);
        assert_eq!(class_of_outcome("CLIENT_ERROR"), Some(3));
    }
}
