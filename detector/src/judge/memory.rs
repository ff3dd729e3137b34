//! What Vigil learns about one application from users' feedback ([`AppMemory`]): the
//! normal threshold of each signal, the fingerprints it has shown, its start-up runs and
//! how far its logs' start-up noise outlasts its CPU's.
//!
//! A learned threshold is the effect a signal reached in a release users called normal
//! (or half as much again above it after a false alarm). It says "this much is normal for
//! this app", so a later release must go past it to count. It is not kept for ever: each
//! release users call normal (`confirmed_normal`, `false_alarm`) is evidence of what the
//! app does now, and a threshold that release did not reach again loses a little of its
//! excess over the signal's default — half of it over [`LEARNED_HALF_LIFE`] (50) such
//! releases — so what an app did long ago stops hiding what it does now. Without feedback
//! nothing fades: time alone says nothing about what is normal. A threshold never goes
//! past the signal's cap (see [`SIGNAL_KINDS`]).
//!
//! Exceptions learn one threshold each (`exception_rate:<fingerprint>`): a noisy exception
//! that doubled in a normal release says nothing about the others. Fingerprints counted
//! together as one failure (one definition, or a family with its fast-throw shape) learn
//! and are judged under all of theirs, whichever of them a round sees.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::signals::host_metric::metric_kind_of;
use super::{Feedback, Fingerprint, ReleaseJudge, fingerprint_hex, startup};

/// Kinds of learnable signals, with the default threshold and the cap on learning: what no
/// feedback can raise a threshold past, chosen so that the signal still sees a clear
/// regression: a known exception ×4, error lines ×3, memory climbing half a point a minute,
/// a host that lost 92 % of its log lines, 5xx ×8, responses ×3 slower, 95 % of requests
/// gone. CPU, disk busy (100 points) and load (64) are the exception: real hosts' CPU jumps
/// from idle to busy by 50 points and more on its own, and caps of 40 or 60 points blocked
/// such apps' normal releases again and again whatever users said (the replay benchmark's
/// false blocks went from 4 to 15–17 on a seed it was not tuned on). For those three the
/// learned threshold holds back modest evidence only: a sequential test
/// [`LEARNED_YIELDS_AT`](crate::judge::signals::host_metric::LEARNED_YIELDS_AT) times
/// past its bar blocks whatever it says.
pub(crate) const SIGNAL_KINDS: &[(&str, f64, f64)] = &[
    ("new_exception", 5.0, 40.0),
    ("exception_rate", 1.5, 4.0),
    ("error_rate", 1.5, 3.0),
    ("host_metric:cpu_pct", 12.0, 100.0),
    ("host_metric:load1", 0.8, 64.0),
    ("host_metric:disk_busy_pct", 12.0, 100.0),
    ("host_metric:mem_slope", 0.12, 0.5),
    ("log_volume", 0.7, 0.92),
    ("server_errors", 2.0, 8.0),
    ("latency", 1.25, 3.0),
    ("traffic", 0.8, 0.95),
];

/// The default and the cap of a kind: its own entry, or the family's before the last `:`
/// (`exception_rate:<fingerprint>` is an `exception_rate`).
fn spec(kind: &str) -> Option<(f64, f64)> {
    let find = |k: &str| SIGNAL_KINDS.iter().find(|s| s.0 == k).map(|s| (s.1, s.2));
    find(kind).or_else(|| kind.rsplit_once(':').and_then(|(family, _)| find(family)))
}

/// The default threshold of a kind (0 for one not learnable).
pub(crate) fn kind_default(kind: &str) -> f64 {
    spec(kind).map_or(0.0, |s| s.0)
}

const EXCEPTION_RATE_PREFIX: &str = "exception_rate:";

/// The one threshold all of an app's exceptions shared before they learned one each.
const LEGACY_EXCEPTION_RATE: &str = "exception_rate";

/// The learnable kind of an exception's rate: one per fingerprint.
pub(crate) fn exception_kind(fingerprint: Fingerprint) -> String {
    format!("{EXCEPTION_RATE_PREFIX}{}", fingerprint_hex(fingerprint))
}

/// After a false alarm, the blocking signal's threshold is raised to its peak times this.
pub const FALSE_ALARM_MARGIN: f64 = 1.5;

/// Normal releases (`confirmed_normal` or `false_alarm`) over which a learned threshold's
/// excess over its default halves when none of them reaches it again: for an app released
/// daily, about two months. (Over 20, apps whose CPU jumps from idle to busy once in dozens
/// of releases forgot it between two jumps: the replay benchmark's false blocks went from 4
/// to 9 on one of its seeds.)
pub const LEARNED_HALF_LIFE: f64 = 50.0;

/// What one release's worth of fading keeps: `2^(-1/LEARNED_HALF_LIFE)`.
fn kept_per_release() -> f64 {
    0.5f64.powf(1.0 / LEARNED_HALF_LIFE)
}

/// At most this many learned thresholds per app; past it, the ones closest to their
/// default go first.
pub const MAX_THRESHOLDS: usize = 512;

/// At most this many fingerprints called benign per app; past it, the ones the history no
/// longer knows go first (a benign fingerprint that comes back after that is judged as any
/// other unknown one).
pub const MAX_BENIGN_FINGERPRINTS: usize = 4096;

/// At most this many fingerprints in an app's recent history, and in what one release
/// records as seen; past it, the ones seen longest ago go first. A real app shows a few
/// thousand distinct fingerprints in a month; the bound is for one that mints them without
/// end (a message-dependent stack, a generated class per request), whose memory and judge
/// state would otherwise grow with every release. A fingerprint dropped so is still known
/// to a later release from the store's record of the app's fingerprints.
pub const MAX_KNOWN_FINGERPRINTS: usize = 16_384;

/// Keeps the `cap` fingerprints of `seen` seen last (ties: the smaller fingerprint goes).
pub(crate) fn keep_latest(seen: &mut BTreeMap<Fingerprint, i64>, cap: usize) {
    if seen.len() <= cap {
        return;
    }
    let excess = seen.len() - cap;
    let mut by_age: Vec<(i64, Fingerprint)> = seen.iter().map(|(&fp, &at)| (at, fp)).collect();
    by_age.select_nth_unstable(excess - 1);
    for &(_, fp) in &by_age[..excess] {
        seen.remove(&fp);
    }
}

/// A learned threshold whose excess over its default has faded below this share of the
/// default is forgotten.
const FORGOTTEN: f64 = 0.01;

/// Format version of [`AppMemory`].
pub const APP_MEMORY_VERSION: u32 = 1;

/// How long a fingerprint stays in the app's recent history.
pub const KNOWN_FINGERPRINT_TTL: i64 = 30 * 24 * 3600;

/// How much longer than [`KNOWN_FINGERPRINT_TTL`] a fingerprint is kept in the memory, for
/// releases that started before the one learned from and are still watched.
const PRUNE_MARGIN: i64 = 7 * 24 * 3600;

/// What Vigil learned about one application from users' feedback. Serializable; the
/// detector persists it per app.
///
/// Invariants: every learned threshold lies between the signal's default and its cap;
/// fingerprints in `benign_fingerprints` were shown in releases users called normal or a
/// false alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppMemory {
    /// Format version ([`APP_MEMORY_VERSION`]).
    pub version: u32,
    /// Learned normal threshold per signal kind (`exception_rate:<fingerprint>`,
    /// `host_metric:cpu_pct`, ..).
    pub thresholds: BTreeMap<String, f64>,
    /// Fingerprints shown by the app in releases judged normal (or in baselines and
    /// reference groups), with the last minute seen.
    pub known_fingerprints: BTreeMap<Fingerprint, i64>,
    /// Fingerprints that caused a false alarm: never new, never dangerous-at-once again
    /// (at most [`MAX_BENIGN_FINGERPRINTS`]).
    pub benign_fingerprints: BTreeSet<Fingerprint>,
    /// Releases learned from.
    pub releases_learned: u64,
    /// The start-up runs of the last normal releases, oldest first (at most
    /// [`startup::PROFILES_KEPT`]): what the app's warm-up is learned from.
    #[serde(default)]
    pub startup_profiles: Vec<u32>,
    /// How far past the end of their CPU's start-up the released hosts' logs stayed noisy
    /// in the last normal releases (`startup::lag`), oldest first (at most
    /// [`startup::PROFILES_KEPT`]): what lets a host's own short start-up end the learned
    /// warm-up of what its logs count.
    #[serde(default)]
    pub startup_lags: Vec<u32>,
    /// Per host metric and grade of hit (`host_metric:cpu_pct`,
    /// `host_metric:cpu_pct:strong` for twice the bar, ..): how often its host-minutes hit
    /// where nothing was released or wrong, over the baselines of the releases learned
    /// from and the released hosts' minutes past their warm-up of those users called a
    /// false alarm on that metric, each release learned fading the sum by half over
    /// [`LEARNED_HALF_LIFE`] releases. It tells the calibrated test how rare a hit is in
    /// this app far better than one release's baseline hour can.
    #[serde(default)]
    pub null_hits: BTreeMap<String, NullSample>,
    /// The minute (UTC Unix seconds) up to which `null_hits` has counted host-minutes: a
    /// release whose baseline hour (or window, for a false alarm) overlaps one learned
    /// before adds only the share of its sample past it (its minutes taken as alike), so no minute counts twice; a release
    /// learned after a later one adds none (fewer minutes, never a rarer hit than seen).
    #[serde(default)]
    pub null_from: i64,
}

/// Host-minutes where nothing was released, of one host metric: how many, how many hit
/// (the test's definition of a hit), and in how many runs of consecutive hits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NullSample {
    pub minutes: f64,
    pub hits: f64,
    pub runs: f64,
}

impl NullSample {
    /// Its hits over its minutes (0 with none).
    pub(crate) fn rate(self) -> f64 {
        if self.minutes > 0.0 {
            self.hits / self.minutes
        } else {
            0.0
        }
    }

    /// Both samples together.
    pub(crate) fn plus(self, other: NullSample) -> NullSample {
        NullSample {
            minutes: self.minutes + other.minutes,
            hits: self.hits + other.hits,
            runs: self.runs + other.runs,
        }
    }

    fn scaled(self, kept: f64) -> NullSample {
        NullSample {
            minutes: self.minutes * kept,
            hits: self.hits * kept,
            runs: self.runs * kept,
        }
    }
}

impl Default for AppMemory {
    fn default() -> Self {
        Self {
            version: APP_MEMORY_VERSION,
            thresholds: BTreeMap::new(),
            known_fingerprints: BTreeMap::new(),
            benign_fingerprints: BTreeSet::new(),
            releases_learned: 0,
            startup_profiles: Vec::new(),
            startup_lags: Vec::new(),
            null_hits: BTreeMap::new(),
            null_from: 0,
        }
    }
}

impl AppMemory {
    /// The learned threshold of a signal kind; `None` when the app has none. An
    /// exception's (`exception_rate:<fingerprint>`) is at least what the app learned for
    /// all its exceptions at once before they learned one each (`exception_rate`, which
    /// fades like the others and is no longer raised).
    pub fn threshold(&self, kind: &str) -> Option<f64> {
        let own = self.thresholds.get(kind).copied();
        let legacy = kind
            .starts_with(EXCEPTION_RATE_PREFIX)
            .then(|| self.thresholds.get(LEGACY_EXCEPTION_RATE).copied())
            .flatten();
        let stored = match (own, legacy) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b)?,
        };
        Some(spec(kind).map_or(stored, |(_, cap)| stored.min(cap)))
    }

    /// Whether the app has shown `fingerprint` in the history's 30 days before `at` (or
    /// since) or users called it benign.
    pub fn knows(&self, fingerprint: Fingerprint, at: i64) -> bool {
        self.benign_fingerprints.contains(&fingerprint)
            || self
                .known_fingerprints
                .get(&fingerprint)
                .is_some_and(|&seen| seen >= at - KNOWN_FINGERPRINT_TTL)
    }

    /// Learns from a user's feedback on a judged release, as of the release's start.
    ///
    /// - `confirmed_normal`: every threshold fades a little ([`LEARNED_HALF_LIFE`]), then
    ///   each signal's peak in the release becomes its normal threshold when larger
    ///   (capped); every fingerprint shown becomes known.
    /// - `false_alarm`: only the blocking signals learn: their thresholds go to
    ///   [`FALSE_ALARM_MARGIN`] × their peak (capped), the others fade; every fingerprint
    ///   shown becomes known and the ones behind the block benign; the host metrics'
    ///   released minutes past their warm-up, of the ones that blocked, join `null_hits`
    ///   (minutes where nothing was wrong, each once).
    /// - `missed_problem`: thresholds that suppressed a signal of this release fall back
    ///   below its peak (never under the default).
    /// - `valid_block`: fingerprints of the baselines and reference group become known
    ///   (the blocked ones do not).
    pub fn learn(&mut self, judge: &ReleaseJudge, label: Feedback) {
        self.releases_learned += 1;
        let record = judge.record();
        let now = judge.release().first_minute().unwrap_or(0);
        // A release never judged says nothing about what is normal now.
        if matches!(label, Feedback::ConfirmedNormal | Feedback::FalseAlarm) && record.rounds > 0 {
            self.fade();
        }
        // Whatever the release turned out to be, its baselines were minutes with nothing
        // released: every judged release learned from teaches how often host metrics hit
        // in them.
        if record.rounds > 0 {
            for sample in self.null_hits.values_mut() {
                *sample = sample.scaled(kept_per_release());
            }
            // A second grade's history starts as its first grade's (a hit of twice the
            // bar is a hit of the bar, so those hits and runs bound its own) where the
            // app learned before it had one.
            for kind in record.null_hits.keys() {
                let first = metric_kind_of(kind);
                if first != kind
                    && !self.null_hits.contains_key(kind)
                    && let Some(&sample) = self.null_hits.get(first)
                {
                    self.null_hits.insert(kind.clone(), sample);
                }
            }
            if let Some((from, to)) = judge.null_span() {
                let new = (to - from.max(self.null_from)).max(0) as f64;
                let share = (new / (to - from).max(1) as f64).min(1.0);
                for (kind, &sample) in &record.null_hits {
                    if spec(kind).is_some() {
                        let slot = self.null_hits.entry(kind.clone()).or_default();
                        *slot = slot.plus(sample.scaled(share));
                    }
                }
                self.null_from = self.null_from.max(to);
            }
            // A false alarm's released host-minutes past their warm-up, of the metrics
            // that blocked, were minutes where nothing was wrong: what the app's host
            // metric does after a release. As a baseline's, only their share after the
            // minutes already taught counts, and a later release's baseline that overlaps
            // them adds nothing of it.
            if label == Feedback::FalseAlarm
                && let Some((from, to)) = record.released_span
            {
                let new = (to - from.max(self.null_from)).max(0) as f64;
                let share = (new / (to - from).max(1) as f64).min(1.0);
                for (kind, &sample) in &record.released_hits {
                    if spec(kind).is_some() && record.blocking_kinds.contains(metric_kind_of(kind))
                    {
                        let slot = self.null_hits.entry(kind.clone()).or_default();
                        *slot = slot.plus(sample.scaled(share));
                    }
                }
                self.null_from = self.null_from.max(to);
            }
        }
        // What a normal release's hosts did after their restart is the app's start-up,
        // and how far its logs' noise outlasted its CPU's.
        if matches!(label, Feedback::ConfirmedNormal | Feedback::FalseAlarm) {
            for (kept, measured) in [
                (&mut self.startup_profiles, record.startup),
                (&mut self.startup_lags, record.startup_lag),
            ] {
                if let Some(minutes) = measured {
                    kept.push(minutes);
                    let excess = kept.len().saturating_sub(startup::PROFILES_KEPT);
                    kept.drain(..excess);
                }
            }
        }
        match label {
            Feedback::ConfirmedNormal => {
                let peaks = record
                    .peaks
                    .iter()
                    .chain(&record.released_levels)
                    .chain(&record.normal_levels);
                for (kind, &peak) in peaks {
                    self.raise(kind, peak);
                }
                for (&fp, &seen) in &record.seen {
                    self.remember(fp, seen);
                }
            }
            Feedback::FalseAlarm => {
                // Only the signals that blocked learn: a false alarm on CPU says nothing
                // about how many exceptions are normal.
                for (&fp, &seen) in &record.seen {
                    self.remember(fp, seen);
                }
                self.benign_fingerprints
                    .extend(record.flagged_fingerprints.iter().copied());
                // A signal that raised a false alarm can go further still in this app:
                // leave it half as much room again above what it reached.
                for kind in &record.blocking_kinds {
                    if let Some(&peak) = record.peaks.get(kind) {
                        self.raise(kind, peak * FALSE_ALARM_MARGIN);
                    }
                }
            }
            Feedback::MissedProblem => {
                for (kind, &peak) in &record.peaks {
                    if let Some(slot) = self.thresholds.get_mut(kind)
                        && peak <= *slot
                    {
                        *slot = (peak * 0.95).max(kind_default(kind));
                    }
                }
                for (&fp, &seen) in &record.seen_outside {
                    self.remember(fp, seen);
                }
            }
            Feedback::ValidBlock => {
                for (&fp, &seen) in &record.seen_outside {
                    self.remember(fp, seen);
                }
            }
        }
        if matches!(label, Feedback::ValidBlock | Feedback::MissedProblem) {
            // Reference hosts kept the old version: what they did is normal whatever the
            // release turned out to be.
            for (kind, &level) in &record.normal_levels {
                self.raise(kind, level);
            }
        }
        self.forget(now);
    }

    /// Raises a learned threshold to `value` (capped); never below the kind's default.
    fn raise(&mut self, kind: &str, value: f64) {
        let Some((default, cap)) = spec(kind) else {
            return;
        };
        let value = value.min(cap);
        if value <= default || kind == LEGACY_EXCEPTION_RATE {
            return;
        }
        let slot = self.thresholds.entry(kind.to_string()).or_insert(value);
        *slot = slot.max(value);
    }

    /// One normal release's worth of fading: every threshold keeps `2^(-1/50)` of its
    /// excess over its default.
    fn fade(&mut self) {
        for (kind, value) in &mut self.thresholds {
            let default = kind_default(kind);
            *value = default + (*value - default).max(0.0) * kept_per_release();
        }
    }

    /// Drops the thresholds of kinds no longer learned, the ones that faded back to their
    /// default, the ones closest to it (relative to it) past [`MAX_THRESHOLDS`], and the
    /// fingerprints older than the history (at `now`, less a week: a release started
    /// earlier may still be watched and judge by them).
    fn forget(&mut self, now: i64) {
        self.thresholds.retain(|kind, _| spec(kind).is_some());
        let mut excess: Vec<(f64, String)> = self
            .thresholds
            .iter()
            .map(|(kind, &t)| {
                let default = kind_default(kind);
                (
                    (t - default) / default.abs().max(f64::MIN_POSITIVE),
                    kind.clone(),
                )
            })
            .collect();
        excess.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (i, (share, kind)) in excess.into_iter().enumerate() {
            if share < FORGOTTEN || i >= MAX_THRESHOLDS {
                self.thresholds.remove(&kind);
            }
        }
        // Fingerprints past their time in the history are no longer known by it.
        self.known_fingerprints
            .retain(|_, &mut seen| seen >= now - KNOWN_FINGERPRINT_TTL - PRUNE_MARGIN);
        keep_latest(&mut self.known_fingerprints, MAX_KNOWN_FINGERPRINTS);
        if self.benign_fingerprints.len() > MAX_BENIGN_FINGERPRINTS {
            let known = &self.known_fingerprints;
            let mut gone: Vec<Fingerprint> = self
                .benign_fingerprints
                .iter()
                .copied()
                .filter(|fp| !known.contains_key(fp))
                .collect();
            // Still too many known ones: the oldest seen go next.
            let mut old: Vec<(i64, Fingerprint)> = self
                .benign_fingerprints
                .iter()
                .filter_map(|fp| known.get(fp).map(|&seen| (seen, *fp)))
                .collect();
            old.sort_unstable();
            gone.extend(old.into_iter().map(|(_, fp)| fp));
            let excess = self.benign_fingerprints.len() - MAX_BENIGN_FINGERPRINTS;
            for fp in gone.into_iter().take(excess) {
                self.benign_fingerprints.remove(&fp);
            }
        }
    }

    fn remember(&mut self, fp: Fingerprint, seen: i64) {
        let slot = self.known_fingerprints.entry(fp).or_insert(seen);
        if seen > *slot {
            *slot = seen;
        }
    }
}

/// The app's memory as a release that started at `at` sees it: fingerprints known are the
/// ones seen in the 30 days before.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Learned<'a> {
    pub memory: &'a AppMemory,
    pub at: i64,
}

impl Learned<'_> {
    /// The learned threshold of `kind`.
    pub fn threshold(&self, kind: &str) -> Option<f64> {
        self.memory.threshold(kind)
    }

    /// Whether the app knew `fingerprint` at the release's start.
    pub fn knows(&self, fingerprint: Fingerprint) -> bool {
        self.memory.knows(fingerprint, self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_stored_before_the_logs_lag_was_learned_reads_with_none() {
        let mut memory = AppMemory {
            startup_profiles: vec![3; 5],
            ..AppMemory::default()
        };
        let text = serde_json::to_string(&memory).expect("encode");
        let older = text.replace(",\"startup_lags\":[]", "");
        assert_ne!(older, text, "{text}");
        let read: AppMemory = serde_json::from_str(&older).expect("an older memory reads");
        assert_eq!(read, memory);
        memory.startup_lags = vec![1; 5];
        assert_eq!(startup::learned_lag(&memory.startup_lags), Some(1));
        assert_eq!(startup::learned_lag(&read.startup_lags), None);
    }

    #[test]
    fn known_fingerprints_are_bounded_and_the_ones_seen_longest_ago_go_first() {
        let now = 100 * 24 * 3600;
        let mut memory = AppMemory::default();
        let total = MAX_KNOWN_FINGERPRINTS as u64 + 10;
        // All within the history; fingerprint `fp` last seen `fp` seconds ago, so the
        // highest ten are the oldest.
        for fp in 0..total {
            memory.remember(fp, now - fp as i64);
        }
        memory.forget(now);
        assert_eq!(memory.known_fingerprints.len(), MAX_KNOWN_FINGERPRINTS);
        assert!((total - 10..total).all(|fp| !memory.known_fingerprints.contains_key(&fp)));
        assert!((0..total - 10).all(|fp| memory.known_fingerprints.contains_key(&fp)));
        // A judge's own record of what it saw is bounded the same way.
        let mut seen: BTreeMap<Fingerprint, i64> = (0..total).map(|fp| (fp, fp as i64)).collect();
        keep_latest(&mut seen, MAX_KNOWN_FINGERPRINTS);
        assert_eq!(seen.len(), MAX_KNOWN_FINGERPRINTS);
        assert_eq!(seen.keys().next(), Some(&10));
        keep_latest(&mut seen, MAX_KNOWN_FINGERPRINTS);
        assert_eq!(seen.len(), MAX_KNOWN_FINGERPRINTS);
        // Seen in the same minute: the smaller fingerprints go.
        let mut tied: BTreeMap<Fingerprint, i64> = (0..10).map(|fp| (fp, 600)).collect();
        keep_latest(&mut tied, 7);
        assert_eq!(
            tied.keys().copied().collect::<Vec<_>>(),
            (3..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn benign_fingerprints_are_bounded_and_the_ones_no_longer_seen_go_first() {
        let now = 100 * 24 * 3600;
        let mut memory = AppMemory::default();
        let total = MAX_BENIGN_FINGERPRINTS as u64 + 10;
        // The 5 highest fingerprints are no longer in the history; the others are, the
        // higher the longer ago (so neither the set's order nor the history's alone gives
        // the right ones).
        for fp in 0..total {
            memory.benign_fingerprints.insert(fp);
            if fp < total - 5 {
                memory.remember(fp, now - 1000 - fp as i64);
            }
        }
        memory.forget(now);
        assert_eq!(memory.benign_fingerprints.len(), MAX_BENIGN_FINGERPRINTS);
        // The 5 the history forgot went, then the 5 seen longest ago.
        assert!((total - 10..total).all(|fp| !memory.benign_fingerprints.contains(&fp)));
        assert!((0..total - 10).all(|fp| memory.benign_fingerprints.contains(&fp)));
        // Under the bound, nothing goes.
        memory.forget(now);
        assert_eq!(memory.benign_fingerprints.len(), MAX_BENIGN_FINGERPRINTS);
    }
}
