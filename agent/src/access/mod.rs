//! HTTP access logs (DESIGN §3, business signals): each line of an `[[access_logs]]` file is
//! one request, counted in the minute of its own timestamp by status class and response
//! time (a histogram in the fixed layout of [`vigil_proto::latency`]).
//!
//! - [`format`]: the format string (an alias, a Tomcat/Jetty/Apache `%`-pattern, an nginx
//!   `log_format`) compiled once into matchers: literal separators and typed fields.
//! - [`parse`]: one line read with them — timestamp, status and response time, nothing else.
//! - [`AccessLogs`]: the lines the tailer hands on for the access-log sources, into the
//!   minute counters and `/metrics`.
//!
//! A line that does not match the format, whose timestamp cannot be read, whose status is
//! outside 100..=599, or that was cut at `max_line_bytes` is *malformed*: counted as such in
//! the minute it was read, never an error. An access line is complete by itself, so the
//! files' checkpoints never wait for a following line.
//!
//! ```
//! use vigil_agent::access::AccessFormat;
//!
//! let format = AccessFormat::compile("%h %l %u %t \"%r\" %s %b %D", None)?;
//! let request = format
//!     .parse(b"10.0.0.7 - - [23/Nov/2026:18:45:02 +0100] \"GET /cart HTTP/1.1\" 200 512 8150")
//!     .expect("a request");
//! assert_eq!(request.status, 200);
//! assert_eq!(request.time, Some(1_795_455_902));
//! assert_eq!(request.latency_ms, Some(8.15)); // %D: microseconds
//! # Ok::<(), vigil_agent::access::FormatError>(())
//! ```

pub mod format;
pub mod parse;

use std::sync::Arc;

/// How far ahead of the clock a request's own time may lie and still count in its
/// minute; later, it counts in the minute it was read.
const MAX_AHEAD_SECS: i64 = 120;

pub use format::{AccessFormat, FormatError, LatencyUnit};
pub use parse::{Malformed, Request};

use crate::admin::{self, Metrics};
use crate::config::AgentConfig;
use crate::minute::{AppSlots, MinuteCounters};

/// Counts of one access-log source waiting for [`AccessLogs::publish_metrics`].
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    lines: u64,
    bytes: u64,
    requests: u64,
    malformed: u64,
    truncated: u64,
}

/// The access-log sources of a configuration: reads their lines into the minute counters.
#[derive(Debug)]
pub struct AccessLogs {
    /// Source index of the first `[[access_logs]]` entry.
    first: usize,
    formats: Vec<AccessFormat>,
    /// By access-log source: the app's index in the metrics.
    slots: Vec<Option<usize>>,
    tally: Vec<Tally>,
    metrics: Arc<Metrics>,
}

impl AccessLogs {
    /// The `[[access_logs]]` entries of `config`; `metrics` holds one entry per app of
    /// [`AppSlots`] over [`AgentConfig::source_apps`].
    pub fn new(config: &AgentConfig, metrics: Arc<Metrics>) -> Self {
        let slots = AppSlots::new(&config.source_apps());
        let sources = config.access_sources();
        Self {
            first: sources.start,
            formats: config
                .access_logs
                .iter()
                .map(|a| a.format.clone())
                .collect(),
            slots: sources.map(|source| slots.slot(source)).collect(),
            tally: vec![Tally::default(); config.access_logs.len()],
            metrics,
        }
    }

    /// Whether tail source `source` is an access log.
    pub fn is_access(&self, source: usize) -> bool {
        source
            .checked_sub(self.first)
            .is_some_and(|i| i < self.formats.len())
    }

    /// Counts one line of access-log source `source` (a tail source index), read at
    /// `read_at`; `truncated` when it was cut at `max_line_bytes`.
    pub fn line(
        &mut self,
        counters: &mut MinuteCounters,
        source: usize,
        line: &[u8],
        truncated: bool,
        read_at: i64,
    ) {
        let Some(i) = source.checked_sub(self.first) else {
            return;
        };
        let (Some(format), Some(tally)) = (self.formats.get(i), self.tally.get_mut(i)) else {
            return;
        };
        tally.lines += 1;
        tally.bytes += line.len() as u64 + 1;
        if truncated {
            tally.truncated += 1;
            tally.malformed += 1;
            counters.record_malformed(source, read_at);
            return;
        }
        match format.parse(line) {
            Ok(request) => {
                tally.requests += 1;
                // A line stamped ahead of the clock (a wrong zone, skew, a hostile log)
                // counts when it was read: a far future minute would be held in memory
                // until then, and lost with a crash.
                let at = request
                    .time
                    .filter(|&t| t <= read_at + MAX_AHEAD_SECS)
                    .unwrap_or(read_at);
                counters.record_request(source, at, request.status, request.latency_ms);
            }
            Err(_) => {
                tally.malformed += 1;
                counters.record_malformed(source, read_at);
            }
        }
    }

    /// Adds the counts since the last call to the shared metrics.
    pub fn publish_metrics(&mut self) {
        for (tally, slot) in self.tally.iter_mut().zip(&self.slots) {
            let t = std::mem::take(tally);
            if let Some(app) = slot.and_then(|slot| self.metrics.app(slot)) {
                admin::add(&app.lines, t.lines);
                admin::add(&app.bytes, t.bytes);
                admin::add(&app.requests, t.requests);
                admin::add(&app.access_malformed_lines, t.malformed);
                admin::add(&app.truncated_lines, t.truncated);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const T0: i64 = 1_795_459_500; // 2026-11-23T18:45:00Z

    fn setup() -> (AccessLogs, MinuteCounters, Arc<Metrics>) {
        let config = AgentConfig::parse(
            Path::new("t.toml"),
            "[[logs]]\napp = \"shop\"\npaths = [\"/x/*.log\"]\n\n\
             [[access_logs]]\napp = \"shop\"\npaths = [\"/x/access*.txt\"]\n\
             format = '%h %l %u %t \"%r\" %s %b %D'\n",
        )
        .expect("config");
        let slots = AppSlots::new(&config.source_apps());
        let metrics = Arc::new(Metrics::new(slots.names()));
        let counters =
            MinuteCounters::new(&config.source_apps(), T0).with_requests(config.access_sources());
        (
            AccessLogs::new(&config, Arc::clone(&metrics)),
            counters,
            metrics,
        )
    }

    #[test]
    fn requests_count_in_their_minute_and_malformed_lines_in_the_read_minute() {
        let (mut access, mut counters, metrics) = setup();
        assert!(!access.is_access(0));
        assert!(access.is_access(1));
        assert!(!access.is_access(2));
        let read_at = T0 + 130;
        for line in [
            // 18:45:02Z and 18:46:10Z, written at +01:00.
            &b"10.0.0.1 - - [23/Nov/2026:19:45:02 +0100] \"GET / HTTP/1.1\" 200 5 1500"[..],
            b"10.0.0.1 - - [23/Nov/2026:19:45:59 +0100] \"GET / HTTP/1.1\" 302 - 90",
            b"10.0.0.1 - - [23/Nov/2026:19:46:10 +0100] \"GET / HTTP/1.1\" 500 5 250000",
            b"garbage",
            b"10.0.0.1 - - [23/Nov/2026:19:46:10 +0100] \"GET / HTTP/1.1\" 700 5 1",
        ] {
            access.line(&mut counters, 1, line, false, read_at);
        }
        access.line(&mut counters, 1, b"10.0.0.1 - - [23/No", true, read_at);
        // Stamped a year ahead: counted when read, not held for a year.
        access.line(
            &mut counters,
            1,
            b"10.0.0.1 - - [23/Nov/2027:19:46:10 +0100] \"GET / HTTP/1.1\" 204 5 1",
            false,
            read_at,
        );
        access.publish_metrics();
        let reports = counters.take(T0 + 180, false);
        let requests = |minute: i64| {
            reports
                .iter()
                .find(|r| r.minute == minute)
                .and_then(|r| r.apps[0].requests.clone())
                .expect("the minute's requests")
        };
        let first = requests(T0);
        assert_eq!((first.count, first.status_2xx, first.status_3xx), (2, 1, 1));
        assert_eq!(first.malformed, 0);
        let second = requests(T0 + 60);
        assert_eq!((second.count, second.status_5xx), (1, 1));
        assert!((second.latency_sum_ms - 250.0).abs() < 1e-9);
        let third = requests(T0 + 120);
        assert_eq!(
            (third.count, third.status_2xx, third.malformed),
            (1, 1, 3),
            "the future line; garbage, status 700, cut"
        );
        assert_eq!(reports.len(), 3, "no minute held for the future line");
        let app = metrics.app(0).expect("shop");
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(load(&app.requests), 4);
        assert_eq!(load(&app.access_malformed_lines), 3);
        assert_eq!(load(&app.truncated_lines), 1);
        assert_eq!(load(&app.lines), 7);
    }
}
