//! Per-minute counters: what the agent saw, per app and minute, until it is cut into
//! [`MinuteReport`]s. Pure code over plain data; the caller supplies the time.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use vigil_proto::v1::{
    AppCounters, ExceptionCount, ExceptionDefinition, HostMetrics, MinuteReport,
};

/// The start of the minute holding `t` (UTC Unix seconds): `floor(t/60)*60`.
pub fn minute_of(t: i64) -> i64 {
    t.div_euclid(60) * 60
}

/// At most this many closed minutes get an empty report after the clock jumps ahead.
const MAX_HEARTBEAT_MINUTES: i64 = 60;

/// Counts of one log event (or of plain lines) to add to a minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub lines: u64,
    pub error_lines: u64,
    pub warn_lines: u64,
    pub events: u64,
    pub truncated_lines: u64,
}

#[derive(Debug, Default)]
struct AppMinute {
    counts: Counts,
    exceptions: HashMap<u64, u64>,
    definitions: Vec<ExceptionDefinition>,
    process_cpu_pct: Option<f64>,
    process_rss_bytes: Option<u64>,
}

#[derive(Debug, Default)]
struct Minute {
    apps: BTreeMap<usize, AppMinute>,
    host_metrics: Option<HostMetrics>,
}

/// Counters of the minutes not yet reported.
///
/// Invariants: every count recorded is returned by exactly one later [`take`](Self::take);
/// every minute that closed while the agent ran is reported at least once, with every app
/// (zero counts included), so the detector can tell "nothing logged" from "agent down".
#[derive(Debug)]
pub struct MinuteCounters {
    apps: Vec<String>,
    /// By minute; a hash map, as a backlog read holds hundreds of minutes, each looked up
    /// per event (reports are cut in minute order by [`take`](Self::take)).
    minutes: HashMap<i64, Minute>,
    /// The first minute that still owes its "closed" report.
    heartbeat_from: i64,
    /// Fingerprints whose definition went out (per app index).
    defined: HashSet<(usize, u64)>,
}

impl MinuteCounters {
    /// Counters for `apps` (indexed as given), starting at the minute of `now`.
    pub fn new(apps: Vec<String>, now: i64) -> Self {
        Self {
            apps,
            minutes: HashMap::new(),
            heartbeat_from: minute_of(now),
            defined: HashSet::new(),
        }
    }

    /// Adds `counts` to `app` in the minute holding `t`.
    pub fn record(&mut self, app: usize, t: i64, counts: Counts) {
        let c = &mut self.app_minute(app, t).counts;
        c.lines += counts.lines;
        c.error_lines += counts.error_lines;
        c.warn_lines += counts.warn_lines;
        c.events += counts.events;
        c.truncated_lines += counts.truncated_lines;
    }

    /// Counts one occurrence of `fingerprint` for `app` in the minute holding `t`; the
    /// definition is built (by `define`) and sent only the first time.
    pub fn record_exception(
        &mut self,
        app: usize,
        t: i64,
        fingerprint: u64,
        define: impl FnOnce() -> ExceptionDefinition,
    ) {
        let first = self.defined.insert((app, fingerprint));
        let entry = self.app_minute(app, t);
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

    /// Sets the CPU % and resident memory of `app`'s process in a minute.
    pub fn set_process_metrics(
        &mut self,
        app: usize,
        minute: i64,
        cpu_pct: Option<f64>,
        rss_bytes: Option<u64>,
    ) {
        let entry = self.app_minute(app, minute);
        entry.process_cpu_pct = cpu_pct;
        entry.process_rss_bytes = rss_bytes;
    }

    fn app_minute(&mut self, app: usize, t: i64) -> &mut AppMinute {
        self.minutes
            .entry(minute_of(t))
            .or_default()
            .apps
            .entry(app)
            .or_default()
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
                .apps
                .iter()
                .enumerate()
                .filter_map(|(index, name)| {
                    let data = entry.apps.get(&index);
                    // A closed minute lists every app; the open one only those with data.
                    if data.is_none() && !closed {
                        return None;
                    }
                    Some(app_counters(name, data))
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
        reports
    }
}

fn app_counters(name: &str, data: Option<&AppMinute>) -> AppCounters {
    let Some(data) = data else {
        return AppCounters {
            app: name.to_owned(),
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
        requests: None,
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
        let mut c = MinuteCounters::new(vec!["shop".into(), "cart".into()], T0 + 5);
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
        let mut c = MinuteCounters::new(vec!["shop".into()], T0);
        let reports = c.take(T0 + 180, false);
        let minutes: Vec<i64> = reports.iter().map(|r| r.minute).collect();
        assert_eq!(minutes, [T0, T0 + 60, T0 + 120]);
    }

    #[test]
    fn a_clock_jump_makes_a_bounded_number_of_empty_reports() {
        let mut c = MinuteCounters::new(vec!["shop".into()], 0);
        assert_eq!(c.take(T0, false).len(), 60);
    }

    #[test]
    fn open_minute_flushes_add_up_to_the_total() {
        let mut c = MinuteCounters::new(vec!["shop".into()], T0);
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
        let mut c = MinuteCounters::new(vec!["shop".into()], T0 + 600);
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
}
