//! Per-minute counters: what the agent saw, per app and minute, until it is cut into
//! [`MinuteReport`]s. Pure code over plain data; the caller supplies the time.
//!
//! Counts come in by *source* (a `[[logs]]` or `[[access_logs]]` entry, indexed as the
//! tailer indexes them) and are kept by *app*: the sources of one app name (its Java log and
//! its access log, say) add up into one [`AppCounters`] per minute.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use vigil_proto::latency;
use vigil_proto::v1::{
    AppCounters, ExceptionCount, ExceptionDefinition, HostMetrics, LatencyBucket, MinuteReport,
    RequestCounters, ScrapedKind, ScrapedValue,
};

use crate::scrape::RequestDelta;

/// The start of the minute holding `t` (UTC Unix seconds): `floor(t/60)*60`.
pub fn minute_of(t: i64) -> i64 {
    t.div_euclid(60) * 60
}

/// At most this many closed minutes get an empty report after the clock jumps ahead.
const MAX_HEARTBEAT_MINUTES: i64 = 60;
/// Most scraped value names per app and minute.
pub const MAX_SCRAPED_NAMES: usize = 64;
/// Longest name of a scraped value.
pub const MAX_SCRAPED_NAME_BYTES: usize = 128;
/// Most requests scrapes may add to one app's minute (the detector refuses more than
/// 10^10); a scrape that would pass it adds nothing.
const MAX_SCRAPED_REQUESTS: u64 = 5_000_000_000;

/// Counts of one log event (or of plain lines) to add to a minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub lines: u64,
    pub error_lines: u64,
    pub warn_lines: u64,
    pub events: u64,
    pub truncated_lines: u64,
}

/// The apps of a configuration, each once (in the order first named), and the app each
/// source feeds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppSlots {
    names: Vec<String>,
    of_source: Vec<usize>,
}

impl AppSlots {
    /// Slots for sources that feed these apps (indexed as given; a name may repeat).
    pub fn new<S: AsRef<str>>(source_apps: &[S]) -> Self {
        let mut names: Vec<String> = Vec::new();
        let of_source = source_apps
            .iter()
            .map(|app| {
                let app = app.as_ref();
                names.iter().position(|n| n == app).unwrap_or_else(|| {
                    names.push(app.to_owned());
                    names.len() - 1
                })
            })
            .collect();
        Self { names, of_source }
    }

    /// Each app once.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The app (index in [`names`](Self::names)) that `source` feeds.
    pub fn slot(&self, source: usize) -> Option<usize> {
        self.of_source.get(source).copied()
    }
}

#[derive(Debug, Default)]
struct AppMinute {
    counts: Counts,
    exceptions: HashMap<u64, u64>,
    definitions: Vec<ExceptionDefinition>,
    process_cpu_pct: Option<f64>,
    process_rss_bytes: Option<u64>,
    requests: Requests,
    /// A good scrape counted requests in the minute (so `requests` is sent, zero included).
    scraped_requests: bool,
    /// Scraped counters' growth in the minute, by name.
    scraped: Vec<ScrapedValue>,
}

/// Requests of one app in one minute.
#[derive(Debug, Default)]
struct Requests {
    count: u64,
    /// By status class, 1xx to 5xx.
    classes: [u64; 5],
    malformed: u64,
    /// Counts by latency bucket (index less [`latency::MIN_INDEX`]); empty until the first.
    latency: Vec<u64>,
    latency_sum_ms: f64,
}

/// Buckets in the layout of [`vigil_proto::latency`].
const BUCKETS: usize = (latency::MAX_INDEX - latency::MIN_INDEX + 1) as usize;

impl Requests {
    fn to_proto(&self) -> RequestCounters {
        let [c1, c2, c3, c4, c5] = self.classes;
        RequestCounters {
            count: self.count,
            status_1xx: c1,
            status_2xx: c2,
            status_3xx: c3,
            status_4xx: c4,
            status_5xx: c5,
            malformed: self.malformed,
            latency: self
                .latency
                .iter()
                .zip(latency::MIN_INDEX..)
                .filter(|(count, _)| **count > 0)
                .map(|(&count, index)| LatencyBucket { index, count })
                .collect(),
            latency_sum_ms: self.latency_sum_ms,
        }
    }
}

#[derive(Debug, Default)]
struct Minute {
    /// By app slot.
    apps: BTreeMap<usize, AppMinute>,
    host_metrics: Option<HostMetrics>,
}

/// Counters of the minutes not yet reported.
///
/// Invariants: every count recorded is returned by exactly one later [`take`](Self::take);
/// every minute that closed while the agent ran is reported at least once, with every app
/// (zero counts included), so the detector can tell "nothing logged" from "agent down";
/// a report holds one [`AppCounters`] per app, whatever the number of its sources; an app
/// with an access log carries `requests` (zero included) in every minute it is reported.
#[derive(Debug)]
pub struct MinuteCounters {
    slots: AppSlots,
    /// By app slot: whether the app has an access log (and so request counters).
    with_requests: Vec<bool>,
    /// By minute; a hash map, as a backlog read holds hundreds of minutes, each looked up
    /// per event (reports are cut in minute order by [`take`](Self::take)).
    minutes: HashMap<i64, Minute>,
    /// The first minute that still owes its "closed" report.
    heartbeat_from: i64,
    /// Fingerprints whose definition went out (per app slot).
    defined: HashSet<(usize, u64)>,
    /// Scraped gauges by (minute, app slot): the last value of each name, held until the
    /// minute closes (a gauge does not add up over reports of the open minute).
    gauges: HashMap<(i64, usize), Vec<ScrapedValue>>,
}

impl MinuteCounters {
    /// Counters for sources feeding `source_apps` (indexed as given; sources of one app name
    /// add up), starting at the minute of `now`.
    pub fn new<S: AsRef<str>>(source_apps: &[S], now: i64) -> Self {
        let slots = AppSlots::new(source_apps);
        Self {
            with_requests: vec![false; slots.names.len()],
            slots,
            minutes: HashMap::new(),
            heartbeat_from: minute_of(now),
            defined: HashSet::new(),
            gauges: HashMap::new(),
        }
    }

    /// Marks `sources` as access logs: their apps report request counters in every minute.
    #[must_use]
    pub fn with_requests(mut self, sources: impl IntoIterator<Item = usize>) -> Self {
        for source in sources {
            if let Some(flag) = self
                .slots
                .slot(source)
                .and_then(|slot| self.with_requests.get_mut(slot))
            {
                *flag = true;
            }
        }
        self
    }

    /// Adds `counts` to the app of `source` in the minute holding `t`.
    pub fn record(&mut self, source: usize, t: i64, counts: Counts) {
        let Some(entry) = self.app_minute(source, t) else {
            return;
        };
        let c = &mut entry.counts;
        c.lines += counts.lines;
        c.error_lines += counts.error_lines;
        c.warn_lines += counts.warn_lines;
        c.events += counts.events;
        c.truncated_lines += counts.truncated_lines;
    }

    /// Counts one occurrence of `fingerprint` for the app of `source` in the minute holding
    /// `t`; the definition is built (by `define`) and sent only the first time for the app.
    pub fn record_exception(
        &mut self,
        source: usize,
        t: i64,
        fingerprint: u64,
        define: impl FnOnce() -> ExceptionDefinition,
    ) {
        let Some(slot) = self.slots.slot(source) else {
            return;
        };
        let first = self.defined.insert((slot, fingerprint));
        let Some(entry) = self.app_minute(source, t) else {
            return;
        };
        *entry.exceptions.entry(fingerprint).or_default() += 1;
        if first {
            entry.definitions.push(define());
        }
    }

    /// Sets the host metrics of a minute.
    pub fn set_host_metrics(&mut self, minute: i64, metrics: HostMetrics) {
        self.minutes
            .entry(minute_of(minute))
            .or_default()
            .host_metrics = Some(metrics);
    }

    /// Counts one request answered with `status` (100 to 599; anything else counts as a
    /// malformed line) in `latency_ms` (when the line says) for the app of `source`, in the
    /// minute holding `t`.
    pub fn record_request(&mut self, source: usize, t: i64, status: u16, latency_ms: Option<f64>) {
        let Some(entry) = self.app_minute(source, t) else {
            return;
        };
        let r = &mut entry.requests;
        let Some(class) = r.classes.get_mut(usize::from(status / 100).wrapping_sub(1)) else {
            r.malformed += 1;
            return;
        };
        *class += 1;
        r.count += 1;
        if let Some(ms) = latency_ms.filter(|ms| ms.is_finite() && *ms >= 0.0) {
            if r.latency.is_empty() {
                r.latency = vec![0; BUCKETS];
            }
            // `bucket_of` stays within MIN_INDEX..=MAX_INDEX.
            let index = usize::try_from(latency::bucket_of(ms) - latency::MIN_INDEX).unwrap_or(0);
            if let Some(count) = r.latency.get_mut(index) {
                *count += 1;
            }
            r.latency_sum_ms += ms;
        }
    }

    /// Counts an access-log line of `source` that could not be read as a request, in the
    /// minute holding `t` (the time it was read).
    pub fn record_malformed(&mut self, source: usize, t: i64) {
        if let Some(entry) = self.app_minute(source, t) {
            entry.requests.malformed += 1;
        }
    }

    /// Adds the requests a scrape of `source` (a `[[scrape]]` source) observed, in the
    /// minute holding `t` (the scrape's time): the minute then carries `requests`.
    pub fn record_scraped_requests(&mut self, source: usize, t: i64, delta: &RequestDelta) {
        let Some(entry) = self.app_minute(source, t) else {
            return;
        };
        entry.scraped_requests = true;
        let r = &mut entry.requests;
        let added = delta.count().saturating_add(delta.unclassified);
        if r.count.saturating_add(r.malformed).saturating_add(added) > MAX_SCRAPED_REQUESTS {
            return;
        }
        for (class, n) in r.classes.iter_mut().zip(delta.classes) {
            *class += n;
        }
        r.count += delta.count();
        r.malformed += delta.unclassified;
        if !delta.latency.is_empty() {
            if r.latency.is_empty() {
                r.latency = vec![0; BUCKETS];
            }
            for (count, n) in r.latency.iter_mut().zip(&delta.latency) {
                *count += n;
            }
        }
        if delta.latency_sum_ms.is_finite() && delta.latency_sum_ms > 0.0 {
            r.latency_sum_ms += delta.latency_sum_ms;
        }
    }

    /// Adds the values a scrape of `source` read, in the minute holding `t`: a counter's
    /// growth adds to the minute's, a gauge replaces the minute's value. Names beyond
    /// [`MAX_SCRAPED_NAMES`] per app and minute, names longer than
    /// [`MAX_SCRAPED_NAME_BYTES`] and values that are not finite are left out.
    pub fn record_scraped(&mut self, source: usize, t: i64, values: Vec<ScrapedValue>) {
        let Some(slot) = self.slots.slot(source) else {
            return;
        };
        let minute = minute_of(t);
        let counters = &mut self
            .minutes
            .entry(minute)
            .or_default()
            .apps
            .entry(slot)
            .or_default()
            .scraped;
        let gauges = self.gauges.entry((minute, slot)).or_default();
        for value in values {
            if !value.value.is_finite()
                || value.name.len() > MAX_SCRAPED_NAME_BYTES
                || value.name.chars().any(char::is_control)
                || (value.kind != ScrapedKind::Gauge as i32 && value.value < 0.0)
            {
                continue;
            }
            let gauge = value.kind == ScrapedKind::Gauge as i32;
            let names = counters.len() + gauges.len();
            let list = if gauge { &mut *gauges } else { &mut *counters };
            match list.iter_mut().find(|v| v.name == value.name) {
                Some(known) if gauge => known.value = value.value,
                // Bounded: a sum that would overflow keeps its last finite value.
                Some(known) => {
                    let sum = known.value + value.value;
                    if sum.is_finite() {
                        known.value = sum;
                    }
                }
                None if names < MAX_SCRAPED_NAMES => list.push(value),
                None => {}
            }
        }
        if gauges.is_empty() {
            self.gauges.remove(&(minute, slot));
        }
    }

    /// Sets the CPU % and resident memory of the process of `source`'s app in a minute.
    pub fn set_process_metrics(
        &mut self,
        source: usize,
        minute: i64,
        cpu_pct: Option<f64>,
        rss_bytes: Option<u64>,
    ) {
        let Some(entry) = self.app_minute(source, minute) else {
            return;
        };
        entry.process_cpu_pct = cpu_pct;
        entry.process_rss_bytes = rss_bytes;
    }

    fn app_minute(&mut self, source: usize, t: i64) -> Option<&mut AppMinute> {
        let slot = self.slots.slot(source)?;
        Some(
            self.minutes
                .entry(minute_of(t))
                .or_default()
                .apps
                .entry(slot)
                .or_default(),
        )
    }

    /// Cuts reports: every closed minute (ended at or before `now`) with data or still owing
    /// its closed report, and, when `include_open`, the counts of the open minute so far.
    /// Everything returned is forgotten here.
    pub fn take(&mut self, now: i64, include_open: bool) -> Vec<MinuteReport> {
        let open = minute_of(now);
        // A clock that jumps far ahead must not make hours of empty reports.
        self.heartbeat_from = self.heartbeat_from.max(open - 60 * MAX_HEARTBEAT_MINUTES);
        while self.heartbeat_from < open {
            self.minutes.entry(self.heartbeat_from).or_default();
            self.heartbeat_from += 60;
        }
        let mut due: Vec<(i64, Minute)> = self
            .minutes
            .extract_if(|m, _| *m < open || (include_open && *m == open))
            .collect();
        due.sort_unstable_by_key(|(minute, _)| *minute);
        let mut reports = Vec::with_capacity(due.len());
        for (minute, entry) in due {
            let closed = minute < open;
            let apps = self
                .slots
                .names
                .iter()
                .zip(&self.with_requests)
                .enumerate()
                .filter_map(|(slot, (name, &requests))| {
                    let data = entry.apps.get(&slot);
                    // A closed minute lists every app; the open one only those with data.
                    if data.is_none() && !closed {
                        return None;
                    }
                    let mut counters = app_counters(name, data, requests);
                    if closed && let Some(gauges) = self.gauges.remove(&(minute, slot)) {
                        counters.scraped.extend(gauges);
                    }
                    Some(counters)
                })
                .collect::<Vec<_>>();
            if apps.is_empty() && entry.host_metrics.is_none() {
                continue;
            }
            reports.push(MinuteReport {
                minute,
                apps,
                host_metrics: entry.host_metrics,
            });
        }
        // Gauges of minutes that closed without a report (a clock jump) are not sent late.
        self.gauges.retain(|(minute, _), _| *minute >= open);
        reports
    }
}

fn app_counters(name: &str, data: Option<&AppMinute>, requests: bool) -> AppCounters {
    let Some(data) = data else {
        return AppCounters {
            app: name.to_owned(),
            requests: requests.then(RequestCounters::default),
            ..Default::default()
        };
    };
    let mut exceptions: Vec<ExceptionCount> = data
        .exceptions
        .iter()
        .map(|(fingerprint, count)| ExceptionCount {
            fingerprint: *fingerprint,
            count: *count,
        })
        .collect();
    exceptions.sort_unstable_by_key(|e| e.fingerprint);
    AppCounters {
        app: name.to_owned(),
        lines: data.counts.lines,
        error_lines: data.counts.error_lines,
        warn_lines: data.counts.warn_lines,
        events: data.counts.events,
        truncated_lines: data.counts.truncated_lines,
        exceptions,
        definitions: data.definitions.clone(),
        process_cpu_pct: data.process_cpu_pct,
        process_rss_bytes: data.process_rss_bytes,
        requests: (requests || data.scraped_requests).then(|| data.requests.to_proto()),
        scraped: data.scraped.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_763_880_000; // a minute boundary

    fn lines(n: u64) -> Counts {
        Counts {
            lines: n,
            events: n,
            ..Default::default()
        }
    }

    #[test]
    fn minute_of_floors_including_negative_times() {
        assert_eq!(minute_of(T0 + 59), T0);
        assert_eq!(minute_of(T0 + 60), T0 + 60);
        assert_eq!(minute_of(-1), -60);
    }

    #[test]
    fn closed_minutes_are_reported_once_with_every_app() {
        let mut c = MinuteCounters::new(&["shop", "cart"], T0 + 5);
        c.record(0, T0 + 10, lines(3));
        c.record(0, T0 + 70, lines(2));
        assert!(c.take(T0 + 30, false).is_empty(), "the open minute waits");
        let reports = c.take(T0 + 125, false);
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].minute, T0);
        assert_eq!(reports[0].apps.len(), 2, "zero counts are reported too");
        assert_eq!(reports[0].apps[0].lines, 3);
        assert_eq!(reports[0].apps[1].lines, 0);
        assert_eq!(reports[1].apps[0].lines, 2);
        assert!(c.take(T0 + 170, false).is_empty());
    }

    #[test]
    fn quiet_minutes_still_get_a_closed_report() {
        let mut c = MinuteCounters::new(&["shop"], T0);
        let reports = c.take(T0 + 180, false);
        let minutes: Vec<i64> = reports.iter().map(|r| r.minute).collect();
        assert_eq!(minutes, [T0, T0 + 60, T0 + 120]);
    }

    #[test]
    fn a_clock_jump_makes_a_bounded_number_of_empty_reports() {
        let mut c = MinuteCounters::new(&["shop"], 0);
        assert_eq!(c.take(T0, false).len(), 60);
    }

    #[test]
    fn open_minute_flushes_add_up_to_the_total() {
        let mut c = MinuteCounters::new(&["shop"], T0);
        c.record(0, T0 + 1, lines(4));
        let first = c.take(T0 + 2, true);
        c.record(0, T0 + 3, lines(6));
        let second = c.take(T0 + 61, true);
        let total: u64 = first
            .iter()
            .chain(&second)
            .filter(|r| r.minute == T0)
            .map(|r| r.apps[0].lines)
            .sum();
        assert_eq!(total, 10);
    }

    #[test]
    fn definitions_go_out_once_and_backlog_lands_in_its_minute() {
        let mut c = MinuteCounters::new(&["shop"], T0 + 600);
        let define = || ExceptionDefinition {
            fingerprint: 7,
            class: "java.lang.IllegalStateException".into(),
            ..Default::default()
        };
        c.record_exception(0, T0 + 5, 7, define);
        c.record_exception(0, T0 + 6, 7, define);
        c.record_exception(0, T0 + 605, 7, define);
        let reports = c.take(T0 + 660, false);
        assert_eq!(reports[0].minute, T0, "a backlog minute before the start");
        assert_eq!(reports[0].apps[0].exceptions[0].count, 2);
        assert_eq!(reports[0].apps[0].definitions.len(), 1);
        assert!(reports[1].apps[0].definitions.is_empty());
    }

    #[test]
    fn sources_of_one_app_make_one_app_counters() {
        // Source 0: shop's Java log; 1: cart's; 2: shop's access log; 3: a second shop log.
        let mut c = MinuteCounters::new(&["shop", "cart", "shop", "shop"], T0).with_requests([2]);
        let define = || ExceptionDefinition {
            fingerprint: 9,
            ..Default::default()
        };
        c.record(0, T0 + 1, lines(2));
        c.record(3, T0 + 2, lines(5));
        c.record_exception(0, T0 + 3, 9, define);
        c.record_exception(3, T0 + 4, 9, define);
        c.record_request(2, T0 + 5, 200, Some(12.0));
        c.record_request(2, T0 + 6, 503, Some(250.0));
        c.record_request(2, T0 + 7, 204, None);
        c.record_malformed(2, T0 + 8);
        c.set_process_metrics(3, T0, Some(12.5), Some(1 << 20));
        let reports = c.take(T0 + 61, false);
        assert_eq!(reports.len(), 1);
        let names: Vec<&str> = reports[0].apps.iter().map(|a| a.app.as_str()).collect();
        assert_eq!(names, ["shop", "cart"], "one AppCounters per app");
        let shop = &reports[0].apps[0];
        assert_eq!(shop.lines, 7);
        assert_eq!(shop.exceptions.len(), 1);
        assert_eq!(shop.exceptions[0].count, 2);
        assert_eq!(shop.definitions.len(), 1, "defined once per app");
        assert_eq!(shop.process_cpu_pct, Some(12.5));
        let r = shop.requests.as_ref().expect("shop has an access log");
        assert_eq!(
            (r.count, r.status_2xx, r.status_5xx, r.malformed),
            (3, 2, 1, 1)
        );
        let buckets: Vec<(i32, u64)> = r.latency.iter().map(|b| (b.index, b.count)).collect();
        assert_eq!(
            buckets,
            [
                (latency::bucket_of(12.0), 1),
                (latency::bucket_of(250.0), 1)
            ],
            "non-empty buckets only, by index"
        );
        assert!((r.latency_sum_ms - 262.0).abs() < 1e-9);
        assert_eq!(reports[0].apps[1].requests, None, "cart has no access log");
    }

    #[test]
    fn apps_with_access_logs_report_zero_requests_in_quiet_minutes() {
        let mut c = MinuteCounters::new(&["shop", "shop"], T0).with_requests([1]);
        let reports = c.take(T0 + 120, false);
        assert_eq!(reports.len(), 2);
        for report in &reports {
            assert_eq!(report.apps.len(), 1);
            assert_eq!(report.apps[0].requests, Some(RequestCounters::default()));
        }
    }

    #[test]
    fn statuses_outside_the_classes_count_as_malformed_and_unknown_sources_are_ignored() {
        let mut c = MinuteCounters::new(&["shop"], T0).with_requests([0, 7]);
        c.record_request(0, T0, 99, Some(1.0));
        c.record_request(0, T0, 600, None);
        c.record_request(0, T0, 0, None);
        c.record_request(0, T0, 100, Some(f64::NAN));
        c.record(5, T0, lines(1));
        c.record_request(5, T0, 200, None);
        let reports = c.take(T0 + 60, false);
        let r = reports[0].apps[0].requests.as_ref().expect("requests");
        assert_eq!((r.count, r.status_1xx, r.malformed), (1, 1, 3));
        assert!(r.latency.is_empty(), "NaN is no response time");
        assert_eq!(reports[0].apps[0].lines, 0);
    }

    fn value(name: &str, value: f64, kind: ScrapedKind) -> ScrapedValue {
        ScrapedValue {
            name: name.into(),
            value,
            kind: kind as i32,
        }
    }

    #[test]
    fn scraped_requests_are_present_only_in_minutes_with_a_good_scrape() {
        // Source 0: shop's Java log; 1: shop's scrape target.
        let mut c = MinuteCounters::new(&["shop", "shop"], T0);
        let mut delta = RequestDelta {
            classes: [0, 30, 0, 1, 2],
            unclassified: 1,
            latency: vec![0; BUCKETS],
            latency_sum_ms: 1234.5,
        };
        delta.latency[(latency::bucket_of(50.0) - latency::MIN_INDEX) as usize] = 33;
        c.record_scraped_requests(1, T0 + 59, &delta);
        c.record_scraped_requests(1, T0 + 125, &RequestDelta::default());
        let reports = c.take(T0 + 240, false);
        assert_eq!(reports.len(), 4);
        let r = reports[0].apps[0].requests.as_ref().expect("a good scrape");
        assert_eq!(
            (
                r.count,
                r.status_2xx,
                r.status_4xx,
                r.status_5xx,
                r.malformed
            ),
            (33, 30, 1, 2, 1)
        );
        assert_eq!(
            r.latency,
            [LatencyBucket {
                index: latency::bucket_of(50.0),
                count: 33
            }]
        );
        assert_eq!(
            reports[1].apps[0].requests, None,
            "no scrape: missing, not zero"
        );
        assert_eq!(
            reports[2].apps[0].requests,
            Some(RequestCounters::default()),
            "a good scrape with nothing new: zero"
        );
        assert_eq!(reports[3].apps[0].requests, None);
    }

    #[test]
    fn scraped_counters_add_up_and_gauges_wait_for_the_closed_minute() {
        let mut c = MinuteCounters::new(&["shop"], T0);
        c.record_scraped(
            0,
            T0 + 10,
            vec![
                value("jvm_gc_pause_seconds_count", 2.0, ScrapedKind::Counter),
                value("hikaricp_connections_pending", 5.0, ScrapedKind::Gauge),
            ],
        );
        // An open-minute flush: the counter's growth so far, no gauge.
        let open = c.take(T0 + 20, true);
        assert_eq!(
            open[0].apps[0].scraped,
            [value(
                "jvm_gc_pause_seconds_count",
                2.0,
                ScrapedKind::Counter
            )]
        );
        c.record_scraped(
            0,
            T0 + 30,
            vec![
                value("jvm_gc_pause_seconds_count", 3.0, ScrapedKind::Counter),
                value("hikaricp_connections_pending", 1.0, ScrapedKind::Gauge),
                value("bad", f64::NAN, ScrapedKind::Gauge),
                value(&"x".repeat(129), 1.0, ScrapedKind::Gauge),
            ],
        );
        c.record_scraped(
            0,
            T0 + 40,
            vec![
                value("jvm_gc_pause_seconds_count", 1.0, ScrapedKind::Counter),
                value("hikaricp_connections_pending", 7.0, ScrapedKind::Gauge),
            ],
        );
        let closed = c.take(T0 + 61, false);
        assert_eq!(closed.len(), 1);
        assert_eq!(
            closed[0].apps[0].scraped,
            [
                value("jvm_gc_pause_seconds_count", 4.0, ScrapedKind::Counter),
                value("hikaricp_connections_pending", 7.0, ScrapedKind::Gauge),
            ],
            "counters add up over reports (2 + 4), a gauge is the minute's last value, sent once"
        );
        assert_eq!(
            closed[0].apps[0].requests, None,
            "no request family, no requests"
        );
        assert!(
            c.take(T0 + 200, false)
                .iter()
                .all(|r| r.apps[0].scraped.is_empty())
        );
    }

    #[test]
    fn scraped_names_are_bounded_per_app_and_minute() {
        let mut c = MinuteCounters::new(&["shop"], T0);
        let values: Vec<ScrapedValue> = (0..100)
            .map(|i| {
                let kind = if i % 2 == 0 {
                    ScrapedKind::Gauge
                } else {
                    ScrapedKind::Counter
                };
                value(&format!("f{i}"), 1.0, kind)
            })
            .collect();
        c.record_scraped(0, T0, values.clone());
        c.record_scraped(0, T0 + 1, values);
        let reports = c.take(T0 + 60, false);
        let scraped = &reports[0].apps[0].scraped;
        assert_eq!(scraped.len(), MAX_SCRAPED_NAMES);
        assert!(scraped.iter().all(|v| v.value == 1.0 || v.value == 2.0));
    }

    #[test]
    fn app_slots_name_each_app_once() {
        let slots = AppSlots::new(&["a", "b", "a", "c", "b"]);
        assert_eq!(slots.names(), ["a", "b", "c"]);
        let of: Vec<Option<usize>> = (0..6).map(|s| slots.slot(s)).collect();
        assert_eq!(of, [Some(0), Some(1), Some(0), Some(2), Some(1), None]);
    }
}
