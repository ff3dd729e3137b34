//! From lines to counts: each file's lines go through its own [`EventAssembler`]; every
//! completed event is counted in the minute of its own timestamp (lines, error and warn
//! records, events, exceptions by fingerprint), and a dangerous exception also raises an
//! alert at once (rate-limited per fingerprint).
//!
//! Pure code over plain data: the caller hands in lines and the clock.

use foldhash::{HashMap, HashMapExt};
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_proto::v1::{Alert, ExceptionDefinition};

use crate::admin::{self, Metrics};
use crate::config::{AgentConfig, Timezone};
use crate::java::{
    Analyzer, AnalyzerConfig, AnalyzerError, Event, EventAssembler, ExceptionInfo, Level, Tz,
    configured_dangerous,
};
use crate::minute::{AppSlots, Counts, MinuteCounters};

/// A dangerous fingerprint alerts at most once per this many seconds (with the count since).
pub const ALERT_INTERVAL_SECS: i64 = 60;

/// The definition sent to the detector for an exception.
pub fn definition(info: &ExceptionInfo) -> ExceptionDefinition {
    ExceptionDefinition {
        fingerprint: info.fingerprint.0,
        class: info.class.clone(),
        causes: info.causes.clone(),
        message: info.message.clone(),
        frames: info.frames.clone(),
        dangerous: info.dangerous,
        sample: info.sample.clone(),
    }
}

struct FileState {
    source: usize,
    assembler: EventAssembler,
    /// Lines of the pending event that were cut at `max_line_bytes`.
    truncated_lines: u64,
}

#[derive(Debug, Clone, Copy)]
struct AlertState {
    last_sent: i64,
    unsent: u64,
}

/// Per-file event assembly and counting for every configured `[[logs]]` entry.
pub struct LogAnalysis<K> {
    analyzers: Vec<Analyzer>,
    files: HashMap<K, FileState>,
    alerts: HashMap<(usize, u64), AlertState>,
    pending_alerts: Vec<Alert>,
    metrics: Arc<Metrics>,
    /// By source: the app's index in `metrics` (sources of one app share it).
    slots: Vec<Option<usize>>,
    /// Lines, bytes and events per source not yet added to `metrics` (shared atomics are
    /// updated once per read, not per line: see [`publish_metrics`](Self::publish_metrics)).
    tally: Vec<Tally>,
}

/// Per-source counts waiting for [`LogAnalysis::publish_metrics`].
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    lines: u64,
    bytes: u64,
    events: u64,
}

impl<K> std::fmt::Debug for LogAnalysis<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogAnalysis")
            .field("files", &self.files.len())
            .field("pending_alerts", &self.pending_alerts.len())
            .finish()
    }
}

impl<K: Hash + Eq + Clone> LogAnalysis<K> {
    /// One analyzer per `[[logs]]` entry of `config`; `metrics` holds one entry per app of
    /// [`AppSlots`] over [`AgentConfig::source_apps`].
    ///
    /// # Errors
    /// [`AnalyzerError`] when a matcher cannot be built.
    pub fn new(config: &AgentConfig, metrics: Arc<Metrics>) -> Result<Self, AnalyzerError> {
        let dangerous = configured_dangerous(
            config.java.dangerous.as_deref(),
            &config.java.extra_dangerous,
        );
        let analyzers = config
            .logs
            .iter()
            .map(|logs| {
                Analyzer::new(AnalyzerConfig {
                    event_start: logs.event_start.clone(),
                    app_packages: logs.app_packages.clone(),
                    dangerous: dangerous.clone(),
                    timezone: match logs.timezone {
                        Timezone::Local => Tz::Local,
                        Timezone::Fixed(0) => Tz::Utc,
                        Timezone::Fixed(offset) => Tz::Fixed(offset),
                    },
                    ..AnalyzerConfig::default()
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let slots = AppSlots::new(&config.source_apps());
        Ok(Self {
            tally: vec![Tally::default(); analyzers.len()],
            slots: (0..analyzers.len()).map(|s| slots.slot(s)).collect(),
            analyzers,
            files: HashMap::new(),
            alerts: HashMap::new(),
            pending_alerts: Vec::new(),
            metrics,
        })
    }

    /// Feeds one line of `file` (of `[[logs]]` entry `source`), read at `read_at`.
    #[allow(clippy::too_many_arguments)]
    pub fn line(
        &mut self,
        counters: &mut MinuteCounters,
        source: usize,
        file: &K,
        line: &[u8],
        end_offset: u64,
        truncated: bool,
        read_at: i64,
    ) {
        let Some(analyzer) = self.analyzers.get(source) else {
            return;
        };
        let state = self.files.entry(file.clone()).or_insert_with(|| FileState {
            source,
            assembler: EventAssembler::new(analyzer),
            truncated_lines: 0,
        });
        let Some(tally) = self.tally.get_mut(source) else {
            return;
        };
        tally.lines += 1;
        tally.bytes += line.len() as u64 + 1;
        let mut sink = Sink {
            counters,
            source,
            slot: self.slots.get(source).copied().flatten(),
            truncated_lines: &mut state.truncated_lines,
            alerts: &mut self.alerts,
            pending_alerts: &mut self.pending_alerts,
            metrics: &self.metrics,
            events: &mut tally.events,
        };
        state
            .assembler
            .push_line(analyzer, line, end_offset, read_at, &mut |event| {
                sink.event(&event)
            });
        // A cut line belongs to the event still pending (or just started) in this file.
        if truncated {
            state.truncated_lines += 1;
        }
    }

    /// Completes and counts the pending event of `file`, which will give no more lines, and
    /// forgets the file.
    pub fn file_done(&mut self, counters: &mut MinuteCounters, file: &K) {
        if let Some(mut state) = self.files.remove(file) {
            self.flush_state(counters, &mut state);
        }
    }

    /// Completes events that saw no new line for `idle` (the flush timeout). Visits the
    /// files in place (no key is cloned, no state moved).
    pub fn flush_idle(&mut self, counters: &mut MinuteCounters, now: Instant, idle: Duration) {
        let Self {
            analyzers,
            files,
            alerts,
            pending_alerts,
            metrics,
            slots,
            tally,
        } = self;
        for state in files.values_mut() {
            let (Some(analyzer), Some(tally)) =
                (analyzers.get(state.source), tally.get_mut(state.source))
            else {
                continue;
            };
            let mut sink = Sink {
                counters,
                source: state.source,
                slot: slots.get(state.source).copied().flatten(),
                truncated_lines: &mut state.truncated_lines,
                alerts,
                pending_alerts,
                metrics,
                events: &mut tally.events,
            };
            state
                .assembler
                .flush_idle(analyzer, now, idle, &mut |event| sink.event(&event));
        }
    }

    fn flush_state(&mut self, counters: &mut MinuteCounters, state: &mut FileState) {
        let (Some(analyzer), Some(tally)) = (
            self.analyzers.get(state.source),
            self.tally.get_mut(state.source),
        ) else {
            return;
        };
        let mut sink = Sink {
            counters,
            source: state.source,
            slot: self.slots.get(state.source).copied().flatten(),
            truncated_lines: &mut state.truncated_lines,
            alerts: &mut self.alerts,
            pending_alerts: &mut self.pending_alerts,
            metrics: &self.metrics,
            events: &mut tally.events,
        };
        state
            .assembler
            .flush(analyzer, &mut |event| sink.event(&event));
    }

    /// Byte offset of `file` up to which every line has been counted in a completed event.
    pub fn committed_offset(&self, file: &K) -> Option<u64> {
        self.files
            .get(file)
            .and_then(|s| s.assembler.committed_offset())
    }

    /// Whether `file` has lines read but not yet counted.
    pub fn has_pending(&self, file: &K) -> bool {
        self.files
            .get(file)
            .is_some_and(|s| s.assembler.has_pending())
    }

    /// Adds the lines, bytes and events counted since the last call to the shared metrics.
    pub fn publish_metrics(&mut self) {
        for (tally, slot) in self.tally.iter_mut().zip(&self.slots) {
            let Tally {
                lines,
                bytes,
                events,
            } = std::mem::take(tally);
            if let Some(app) = slot.and_then(|slot| self.metrics.app(slot)) {
                admin::add(&app.lines, lines);
                admin::add(&app.bytes, bytes);
                admin::add(&app.events, events);
            }
        }
    }

    /// Alerts raised since the last call.
    pub fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.pending_alerts)
    }
}

/// Where completed events go.
struct Sink<'a> {
    counters: &'a mut MinuteCounters,
    source: usize,
    /// The app's index in `metrics`.
    slot: Option<usize>,
    truncated_lines: &'a mut u64,
    alerts: &'a mut HashMap<(usize, u64), AlertState>,
    pending_alerts: &'a mut Vec<Alert>,
    metrics: &'a Metrics,
    /// Events completed, for [`LogAnalysis::publish_metrics`].
    events: &'a mut u64,
}

impl Sink<'_> {
    fn event(&mut self, event: &Event<'_>) {
        let truncated = std::mem::take(self.truncated_lines);
        self.counters.record(
            self.source,
            event.time,
            Counts {
                lines: u64::from(event.lines),
                error_lines: u64::from(event.level == Level::Error),
                warn_lines: u64::from(event.level == Level::Warn),
                events: 1,
                truncated_lines: truncated,
            },
        );
        *self.events += 1;
        let app = self.slot.and_then(|slot| self.metrics.app(slot));
        if truncated > 0
            && let Some(app) = app
        {
            admin::add(&app.truncated_lines, truncated);
        }
        let Some(info) = event.exception else {
            return;
        };
        self.counters
            .record_exception(self.source, event.time, info.fingerprint.0, || {
                definition(info)
            });
        if let Some(app) = app {
            admin::add(&app.exceptions, 1);
            if info.dangerous {
                admin::add(&app.dangerous_exceptions, 1);
            }
        }
        if info.dangerous {
            self.alert(event.time, info);
        }
    }

    /// The first sighting of a dangerous fingerprint alerts at once; later ones at most
    /// every [`ALERT_INTERVAL_SECS`], with how many were seen since.
    fn alert(&mut self, at: i64, info: &ExceptionInfo) {
        // Per app: the sources of one app share their alerts' rate limit.
        let key = (self.slot.unwrap_or(usize::MAX), info.fingerprint.0);
        let state = self.alerts.entry(key).or_insert(AlertState {
            last_sent: i64::MIN,
            unsent: 0,
        });
        state.unsent += 1;
        if state.last_sent != i64::MIN && at < state.last_sent + ALERT_INTERVAL_SECS {
            return;
        }
        let app = self
            .slot
            .and_then(|slot| self.metrics.apps.get(slot))
            .map(|(name, _)| name.clone())
            .unwrap_or_default();
        self.pending_alerts.push(Alert {
            app,
            at,
            definition: Some(definition(info)),
            count: state.unsent,
        });
        state.last_sent = at;
        state.unsent = 0;
        admin::add(&self.metrics.alerts, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const LOG: &str = "2026-11-23 18:45:02.461 ERROR [main] shop.Checkout - failed\n\
java.lang.NoSuchMethodError: 'void shop.Cart.clear()'\n\
\tat shop.Checkout.run(Checkout.java:14)\n\
2026-11-23 18:45:03.100 WARN  [main] shop.Checkout - slow\n\
2026-11-23 18:46:01.000 INFO  [main] shop.Checkout - fine\n\
2026-11-23 18:46:02.461 ERROR [main] shop.Checkout - failed again\n\
java.lang.NoSuchMethodError: 'void shop.Cart.clear()'\n\
\tat shop.Checkout.run(Checkout.java:15)\n";

    fn analysis() -> (LogAnalysis<u32>, MinuteCounters) {
        let config = AgentConfig::parse(
            Path::new("t.toml"),
            "[[logs]]\napp = \"shop\"\npaths = [\"/x/*.log\"]\ntimezone = \"UTC\"\n",
        )
        .expect("config");
        let metrics = Arc::new(Metrics::new(&["shop".into()]));
        (
            LogAnalysis::new(&config, metrics).expect("analysis"),
            MinuteCounters::new(&["shop"], 1_795_459_500),
        )
    }

    #[test]
    fn events_are_counted_in_their_own_minute_and_dangerous_ones_alert() {
        let (mut a, mut counters) = analysis();
        let mut offset = 0;
        for line in LOG.lines() {
            offset += line.len() as u64 + 1;
            a.line(&mut counters, 0, &7, line.as_bytes(), offset, false, 0);
        }
        assert!(a.has_pending(&7));
        a.file_done(&mut counters, &7);
        let reports = counters.take(1_795_459_800, false);
        let first = reports
            .iter()
            .find(|r| r.minute == 1_795_459_500)
            .expect("18:45");
        let app = &first.apps[0];
        assert_eq!(
            (app.lines, app.events, app.error_lines, app.warn_lines),
            (4, 2, 1, 1)
        );
        assert_eq!(app.exceptions.len(), 1);
        assert_eq!(app.definitions.len(), 1);
        assert!(app.definitions[0].dangerous);
        let second = reports
            .iter()
            .find(|r| r.minute == 1_795_459_560)
            .expect("18:46");
        assert_eq!(second.apps[0].lines, 4);
        assert_eq!(
            second.apps[0].exceptions[0].fingerprint, app.exceptions[0].fingerprint,
            "line numbers do not change the fingerprint"
        );
        // The two sightings are a minute apart, the alert interval: both alert.
        let alerts = a.take_alerts();
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].app, "shop");
        assert_eq!(alerts[0].at, 1_795_459_502);
    }

    #[test]
    fn a_burst_of_one_dangerous_fingerprint_alerts_once_then_counts() {
        let (mut a, mut counters) = analysis();
        let trace =
            "java.lang.NoClassDefFoundError: shop/Promo\n\tat shop.Checkout.run(Checkout.java:14)";
        let mut offset = 0;
        for second in 0..5 {
            let text = format!(
                "2026-11-23 18:45:0{second}.000 ERROR [main] shop.Checkout - failed\n{trace}\n"
            );
            for line in text.lines() {
                offset += line.len() as u64 + 1;
                a.line(&mut counters, 0, &1, line.as_bytes(), offset, false, 0);
            }
        }
        a.file_done(&mut counters, &1);
        let alerts = a.take_alerts();
        assert_eq!(alerts.len(), 1, "one alert within the interval");
        assert_eq!(alerts[0].count, 1);
    }

    #[test]
    fn committed_offset_stops_before_the_pending_event() {
        let (mut a, mut counters) = analysis();
        let mut offset = 0;
        let mut ends = Vec::new();
        for line in LOG.lines().take(4) {
            offset += line.len() as u64 + 1;
            ends.push(offset);
            a.line(&mut counters, 0, &1, line.as_bytes(), offset, false, 0);
        }
        // Lines 1-3 form a completed event; line 4 starts the pending one.
        assert_eq!(a.committed_offset(&1), Some(ends[2]));
    }
}
