//! What Vigil learns about one application from users' feedback ([`AppMemory`]): the
//! normal threshold of each signal, the fingerprints it has shown, and its start-up runs.
//!
//! A learned threshold is the effect a signal reached in a release users called normal
//! (or half as much again above it after a false alarm). It says "this much is normal for
//! this app", so a later release must go past it to count. It is not kept for ever: its
//! excess over the signal's default halves every [`LEARNED_HALF_LIFE`] (14 days) unless a
//! newer normal release reaches it again, so what an app did months ago stops hiding what
//! it does now. It never goes past the signal's cap, which is set so that the signal still
//! sees a clear regression: learning never switches a signal off.
//!
//! Exceptions learn one threshold per counting key (`exception_rate:<fingerprint>`): a
//! noisy exception that doubled in a normal release says nothing about the others.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Feedback, Fingerprint, ReleaseJudge, fingerprint_hex, startup};

/// Kinds of learnable signals, with the default threshold and the cap on learning: what no
/// feedback can raise a threshold past, chosen so that the signal still sees a clear
/// regression: a known exception ×4, error lines ×3, CPU or disk 40 points above what the
/// host's work predicts, load 4 above it, memory climbing half a point a minute, a host
/// that lost 92 % of its log lines, 5xx ×8, responses ×3 slower, 95 % of requests gone.
pub(crate) const SIGNAL_KINDS: &[(&str, f64, f64)] = &[
    ("new_exception", 5.0, 40.0),
    ("exception_rate", 1.5, 4.0),
    ("error_rate", 1.5, 3.0),
    ("host_metric:cpu_pct", 12.0, 40.0),
    ("host_metric:load1", 0.8, 4.0),
    ("host_metric:disk_busy_pct", 12.0, 40.0),
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

/// The learnable kind of an exception's rate: one per counting key.
pub(crate) fn exception_kind(key: Fingerprint) -> String {
    format!("exception_rate:{}", fingerprint_hex(key))
}

/// After a false alarm, the blocking signal's threshold is raised to its peak times this.
pub const FALSE_ALARM_MARGIN: f64 = 1.5;

/// How long a learned threshold's excess over its default takes to halve without a newer
/// normal release reaching it (seconds): 14 days.
pub const LEARNED_HALF_LIFE: i64 = 14 * 24 * 3600;

/// At most this many learned thresholds per app; past it, the ones closest to their
/// default go first.
pub const MAX_THRESHOLDS: usize = 512;

/// A learned threshold whose excess over its default has decayed below this share of the
/// default is forgotten.
const FORGOTTEN: f64 = 0.01;

/// Format version of [`AppMemory`].
pub const APP_MEMORY_VERSION: u32 = 1;

/// How long a fingerprint stays in the app's recent history.
pub const KNOWN_FINGERPRINT_TTL: i64 = 30 * 24 * 3600;

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
    /// `host_metric:cpu_pct`, ..), as it was when learned (see `learned_at`).
    pub thresholds: BTreeMap<String, f64>,
    /// When each threshold was learned (UTC Unix seconds: the start of the release it was
    /// learned from); it decays from then. A threshold without a time (kept before
    /// thresholds decayed) starts decaying at the app's next feedback.
    #[serde(default)]
    pub learned_at: BTreeMap<String, i64>,
    /// Fingerprints shown by the app in releases judged normal (or in baselines and
    /// reference groups), with the last minute seen.
    pub known_fingerprints: BTreeMap<Fingerprint, i64>,
    /// Fingerprints that caused a false alarm: never new, never dangerous-at-once again.
    pub benign_fingerprints: BTreeSet<Fingerprint>,
    /// Releases learned from.
    pub releases_learned: u64,
    /// The start-up runs of the last normal releases, oldest first (at most
    /// [`startup::PROFILES_KEPT`]): what the app's warm-up is learned from.
    #[serde(default)]
    pub startup_profiles: Vec<u32>,
}

impl Default for AppMemory {
    fn default() -> Self {
        Self {
            version: APP_MEMORY_VERSION,
            thresholds: BTreeMap::new(),
            learned_at: BTreeMap::new(),
            known_fingerprints: BTreeMap::new(),
            benign_fingerprints: BTreeSet::new(),
            releases_learned: 0,
            startup_profiles: Vec::new(),
        }
    }
}

impl AppMemory {
    /// The learned threshold of a signal kind as it stands at `at` (UTC Unix seconds),
    /// decayed towards the kind's default since it was learned; `None` when the app never
    /// learned one.
    pub fn threshold(&self, kind: &str, at: i64) -> Option<f64> {
        let &stored = self.thresholds.get(kind)?;
        let Some((default, cap)) = spec(kind) else {
            return Some(stored);
        };
        let stored = stored.min(cap);
        let Some(&learned) = self.learned_at.get(kind) else {
            return Some(stored);
        };
        let age = (at - learned).max(0) as f64;
        let kept = 0.5f64.powf(age / LEARNED_HALF_LIFE as f64);
        Some(default + (stored - default).max(0.0) * kept)
    }

    /// Whether the app has shown `fingerprint` recently (before `at`) or users called it
    /// benign.
    pub fn knows(&self, fingerprint: Fingerprint, at: i64) -> bool {
        self.benign_fingerprints.contains(&fingerprint)
            || self
                .known_fingerprints
                .get(&fingerprint)
                .is_some_and(|&seen| seen >= at - KNOWN_FINGERPRINT_TTL)
    }

    /// Learns from a user's feedback on a judged release, as of the release's start.
    ///
    /// - `confirmed_normal`: each signal's peak in the release becomes its normal
    ///   threshold when larger than the threshold has decayed to (capped); every
    ///   fingerprint shown becomes known.
    /// - `false_alarm`: only the blocking signals learn: their thresholds go to
    ///   [`FALSE_ALARM_MARGIN`] × their peak (capped); every fingerprint shown becomes
    ///   known and the ones behind the block benign.
    /// - `missed_problem`: thresholds that suppressed a signal of this release fall back
    ///   below its peak (never under the default).
    /// - `valid_block`: fingerprints of the baselines and reference group become known
    ///   (the blocked ones do not).
    pub fn learn(&mut self, judge: &ReleaseJudge, label: Feedback) {
        self.releases_learned += 1;
        let record = judge.record();
        let now = judge.release().first_minute().unwrap_or(0);
        // Thresholds kept before they decayed start decaying now.
        for kind in self.thresholds.keys() {
            self.learned_at.entry(kind.clone()).or_insert(now);
        }
        // What a normal release's hosts did after their restart is the app's start-up.
        if matches!(label, Feedback::ConfirmedNormal | Feedback::FalseAlarm)
            && let Some(run) = record.startup
        {
            self.startup_profiles.push(run);
            let excess = self
                .startup_profiles
                .len()
                .saturating_sub(startup::PROFILES_KEPT);
            self.startup_profiles.drain(..excess);
        }
        match label {
            Feedback::ConfirmedNormal => {
                let peaks = record
                    .peaks
                    .iter()
                    .chain(&record.released_levels)
                    .chain(&record.normal_levels);
                for (kind, &peak) in peaks {
                    self.raise(kind, peak, now);
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
                        self.raise(kind, peak * FALSE_ALARM_MARGIN, now);
                    }
                }
            }
            Feedback::MissedProblem => {
                for (kind, &peak) in &record.peaks {
                    let Some(current) = self.threshold(kind, now) else {
                        continue;
                    };
                    if peak <= current {
                        let default = kind_default(kind);
                        self.thresholds
                            .insert(kind.clone(), (peak * 0.95).max(default));
                        self.learned_at.insert(kind.clone(), now);
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
                self.raise(kind, level, now);
            }
        }
        self.forget(now);
    }

    /// Raises a learned threshold to `value` (capped) when that is above what it has
    /// decayed to at `now`; never below the kind's default. All thresholds decay at one
    /// rate, so the higher of two stays the higher: keeping one value and its time is
    /// exactly the largest of every decayed peak.
    fn raise(&mut self, kind: &str, value: f64, now: i64) {
        let Some((default, cap)) = spec(kind) else {
            return;
        };
        let value = value.min(cap);
        if value <= default || self.threshold(kind, now).is_some_and(|t| t >= value) {
            return;
        }
        self.thresholds.insert(kind.to_string(), value);
        self.learned_at.insert(kind.to_string(), now);
    }

    /// Drops the thresholds that decayed back to their default, the ones closest to it
    /// past [`MAX_THRESHOLDS`], and the fingerprints older than the history.
    fn forget(&mut self, now: i64) {
        let mut excess: Vec<(f64, String)> = self
            .thresholds
            .keys()
            .map(|kind| {
                let default = kind_default(kind);
                let t = self.threshold(kind, now).unwrap_or(default);
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
                self.learned_at.remove(&kind);
            }
        }
        let known = &self.thresholds;
        self.learned_at.retain(|k, _| known.contains_key(k));
        // Fingerprints past their time in the history are no longer known by it.
        self.known_fingerprints
            .retain(|_, &mut seen| seen >= now - KNOWN_FINGERPRINT_TTL);
    }

    fn remember(&mut self, fp: Fingerprint, seen: i64) {
        let slot = self.known_fingerprints.entry(fp).or_insert(seen);
        if seen > *slot {
            *slot = seen;
        }
    }
}

/// The app's memory as a release judged at `at` sees it: thresholds decayed to `at`,
/// fingerprints known before it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Learned<'a> {
    pub memory: &'a AppMemory,
    pub at: i64,
}

impl Learned<'_> {
    /// The learned threshold of `kind`, decayed to the release's start.
    pub fn threshold(&self, kind: &str) -> Option<f64> {
        self.memory.threshold(kind, self.at)
    }

    /// Whether the app knew `fingerprint` at the release's start.
    pub fn knows(&self, fingerprint: Fingerprint) -> bool {
        self.memory.knows(fingerprint, self.at)
    }
}
