//! Release judgement: the pure core that decides, minute by minute, whether a release is
//! `pass`, `watch` or `block` (DESIGN §5).
//!
//! This module is synchronous code over plain data. The live detector and
//! `vigil-detector replay` both drive the very same [`ReleaseJudge`]: one
//! [`ReleaseJudge::round`] per completed minute over all counters known so far, and
//! [`ReleaseJudge::alert`] when an agent reports a dangerous exception between rounds.
//! An [`AppMemory`] per application carries what users taught Vigil (learned normal
//! thresholds, fingerprints known to be benign) from release to release.
//!
//! # The funnel (cheapest first)
//! Windows: a released host's *baseline* is its minutes before its own release (up to
//! [`JudgeParams::baseline_minutes`] before the first batch); its *after* window starts at
//! its release; the tests of what the logs and access log count skip the first
//! [`JudgeParams::warmup_minutes`] (restart noise, 2), host metrics and latency the first
//! [`JudgeParams::metric_warmup_minutes`] (3: CPU and response times stay up longer after
//! a restart), both replaced by the app's learned start-up profile (`startup`) once five
//! normal releases taught it. Until then, a released host also waits for its own
//! start-up in this release to end, as each round measures it (at most ten minutes): its
//! host metrics for its minutes elevated by any signal, what the logs and access log count
//! for its minutes of elevated CPU; latency and memory's slope keep their warm-up alone.
//! Reference hosts (`reference_hosts` plus hosts of batches not reached
//! yet) have the first batch as their boundary. Missing rows are absent from every sum.
//!
//! 1. `dangerous_exception` — a fingerprint whose definition is dangerous, seen on a
//!    released host after its release, absent from every host's baseline, from the
//!    reference group and from the app's known history: **block at once** (also from
//!    [`ReleaseJudge::alert`], at the alert's time).
//! 2. `new_exception` — a fingerprint unknown to the app (known list, [`AppMemory`]),
//!    absent from baselines and reference hosts, reaching [`JudgeParams::new_min_count`]
//!    events on released hosts in at least two host-minutes.
//! 3. `exception_rate` / `error_rate`, sequential (`sequential`) — with reference hosts,
//!    more of a known exception, or of error lines, per unit of work (log events, or lines
//!    where an agent does not count events) on the released hosts than on the reference
//!    hosts in the same minutes, calibrated by the groups' ratio before the release: an
//!    anytime-valid mixture likelihood-ratio test whose chance of ever firing on a release
//!    with no effect is at most its share of [`JudgeParams::false_block_budget`] (1 %;
//!    half of it for this rule, split between the exceptions tested and error lines),
//!    however many rounds look; half of its evidence from the released hosts together,
//!    half from each one's own test, so a rise on one of several is not diluted. It **blocks at once** when it fires (ratio ≥ 1.5, excess
//!    ≥ 6 events, above the learned threshold; for error lines, the evidence also rose in
//!    each of the last three rounds, so a start-up's swell of complaints that ends does
//!    not block); otherwise the classic test below still judges the signal.
//! 3. `exception_rate` / `error_rate`, classic — more of a known exception or of error
//!    lines, normalised by work (events, else lines). Per minute where both groups report, the released share of
//!    the minute's events is expected to be `c·N_r / (c·N_r + N_f)`, where `c` is each
//!    released host's before-release rate relative to the reference group (shrunk towards
//!    1 by 8 pseudo-events, never below 1, so a host noisy before the release stays quiet):
//!    difference in differences. The main test is a one-sided binomial test on counts
//!    divided by the dispersion `φ` (quasi-Poisson; `φ` is Pearson χ²/df over the
//!    baseline, per host and event-weighted for the group, 1.5 when the baseline is thin),
//!    taking the smaller p of that test and of a pooled test against all other cells
//!    (rare exceptions), at [`JudgeParams::rate_alpha`] = 1e-5. Two guards must also
//!    reject: released after vs released before (p < 0.01) and a one-sample t-test on the
//!    per-minute excesses whose variance comes from the minutes themselves (p < 0.002), so
//!    a fleet-wide surge of overdispersed counts cannot pass. Effect: ratio
//!    `(observed+1)/(expected+1)` ≥ 1.5 and an excess ≥ 6 events. Without reference hosts:
//!    after vs before plus Welch's t-test on per-minute rates. Aggregated over released
//!    hosts, then per released host (α divided by their number) for partial faults.
//! 4. `host_metric` (`signals::host_metric`) — CPU, load and disk busy, host-minute by
//!    host-minute: a minute *hits* when the host's value exceeds what its level before its
//!    release predicts for the work it did that minute (CPU and load grow with work, up to
//!    ×4: more CPU for more work is not a regression, more CPU per unit of work is), after
//!    the reference hosts' median change in the same minute, by the metric's minimum
//!    effect (12 points CPU/disk; load 0.8 and 60 % of its level) and 3× the host's robust
//!    noise. Released host-minutes past the warm-up are tested against how often minutes
//!    hit before the release (bounded above), by a sequential binomial mixture whose
//!    chance of ever passing its bar with no effect is within the rule's 20 % of
//!    [`JudgeParams::false_block_budget`]; runs of hits count about once. With reference
//!    hosts it **blocks at once** past its bar; without, it needs a run of rounds as
//!    memory does.
//!    Memory: the after-release slope above the reference hosts' median slope (≥ 0.12
//!    points/min and ≥ 3 points in all); not calibrated, it must be suspicious for
//!    [`JudgeParams::metric_rounds_needed`] consecutive rounds before it counts in the
//!    window.
//! 5. `log_volume` (`signals::collapse`) — a released host still reporting whose minutes
//!    of log events (or lines) fell below 30 % of its usual volume, after the reference
//!    hosts' own change in the same minute, tested host-minute by host-minute against how
//!    often minutes fell so where nothing was released, within half of the collapse tests'
//!    10 % of the false-block budget; past its bar it blocks at once with two reference
//!    hosts or more (unless the app's learned threshold of the drop holds it back).
//! 6. Business signals (`business`), where hosts report HTTP requests (access logs or a
//!    metrics endpoint): `server_errors` (5xx per request: the sequential test of rule 3
//!    with requests as the unit of work, and one against the released hosts' own rate
//!    before the release), `latency` (host-minutes whose median or 90th percentile is
//!    slower than usual against the reference hosts, in a sequential test of how often that
//!    happened before the release) — both block at once past their bar, each within half
//!    of the business share (20 %) of the false-block budget — and `traffic` (a released
//!    host's requests all but stopped: the collapse test of rule 5 with requests as its
//!    volume, within the other half of the collapse tests' 10 %).
//!
//! Where a host reports requests, they are its unit of work for CPU and load (rule 4).
//!
//! **One failure, several fingerprints** (`family`). Rules 1–3 judge fingerprints by their
//! definitions, not only by their values: fingerprints with the same `class`, `causes` and
//! `frames` are one failure (an agent's fingerprint algorithm upgrade renames some), known
//! when any of them is known and counted together; fingerprints with the same `class` and
//! `causes` are one *family*, whose definition without frames (HotSpot's fast throw) stands
//! for all of it: rules 1 and 2 do not fire for a fingerprint whose family's frameless
//! shape is known (baselines, reference hosts, the app's history), nor for a frameless one
//! any member of whose family is known; and rule 3 sums a family's fingerprints whenever
//! its frameless shape shows in the judged windows (how a host splits a failure between
//! the shapes depends on its JIT's warm-up, not on the release). A family's reasons name its
//! frameless fingerprint; one definition's, its smallest fingerprint seen.
//!
//! Every signal must pass the app's learned threshold ([`AppMemory::learn`]): the largest
//! value it reached in the app's releases users called normal, one per exception, fading
//! back to the default over the normal releases that do not reach it again (half of its
//! excess over 50), and capped (`memory`). Those that do
//! not block at once (new exceptions, the classic rate test, log volume and traffic with
//! fewer than two reference hosts, latency and host metrics without reference hosts,
//! memory) must make [`JudgeParams::window_needed`] (2)
//! of the last [`JudgeParams::window_rounds`] (3) rounds suspicious before a block — a
//! host metric on its own only after [`JudgeParams::metric_rounds_needed`] consecutive
//! suspicious rounds; in between the decision is `watch` with warning reasons. A block is
//! sticky and keeps its time and reasons.
//!
//! ```
//! use std::collections::{BTreeMap, HashMap, HashSet};
//! use vigil_detector::judge::*;
//!
//! let release = Release {
//!     app: "shop".into(),
//!     batches: vec![Batch { at: 600, hosts: vec!["h1".into()] }],
//!     reference_hosts: vec!["h2".into()],
//!     until: Some(1200),
//! };
//! let mut judge = ReleaseJudge::new(release, HashSet::new(), HashMap::new());
//! let memory = AppMemory::default();
//! let verdict = judge.round(600, &[], &memory);
//! assert_eq!(verdict.decision, Decision::Pass);
//! ```

mod business;
mod family;
mod funnel;
mod grid;
mod memory;
mod requests;
mod sequential;
mod signal;
mod signals;
pub mod startup;
pub mod stats;

pub use memory::{
    APP_MEMORY_VERSION, AppMemory, FALSE_ALARM_MARGIN, KNOWN_FINGERPRINT_TTL, LEARNED_HALF_LIFE,
    MAX_BENIGN_FINGERPRINTS, MAX_KNOWN_FINGERPRINTS, NullSample,
};
pub(crate) use memory::{Learned, keep_latest};
pub use requests::{Latency, Requests, StatusClasses};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

/// A 64-bit exception fingerprint as computed by the agent.
pub type Fingerprint = u64;

/// Formats a fingerprint as 16 lowercase hex digits (the API and replay format).
pub fn fingerprint_hex(fingerprint: Fingerprint) -> String {
    format!("{fingerprint:016x}")
}

/// The start of the minute holding `t` (UTC Unix seconds).
pub fn minute_of(t: i64) -> i64 {
    t.div_euclid(60) * 60
}

/// Hosts that got the new version at `at` (UTC Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// When the hosts got the new version.
    pub at: i64,
    /// The hosts.
    pub hosts: Vec<String>,
}

/// A release as the judge sees it.
///
/// A host is *released* from the minute of the first batch that names it; hosts of
/// `reference_hosts` and of batches not yet reached form the reference group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Application name.
    pub app: String,
    /// Batches, in any order.
    pub batches: Vec<Batch>,
    /// Hosts that keep the old version (may be empty: everything released at once).
    pub reference_hosts: Vec<String>,
    /// End of the watch, if known.
    pub until: Option<i64>,
}

impl Release {
    /// Minute of the first batch, `None` without batches.
    pub fn first_minute(&self) -> Option<i64> {
        self.batches.iter().map(|b| minute_of(b.at)).min()
    }
}

/// Host metrics of one minute; absent fields were not measured (and are left out of JSON:
/// the store's series, the replay case format and the judge's state all use this type).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostMetrics {
    /// Mean CPU busy %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_pct: Option<f64>,
    /// Max CPU busy %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_pct_max: Option<f64>,
    /// Memory used % (from MemAvailable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_used_pct: Option<f64>,
    /// Swap used %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_used_pct: Option<f64>,
    /// Load averages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load1: Option<f64>,
    /// 5-minute load average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load5: Option<f64>,
    /// 15-minute load average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load15: Option<f64>,
    /// Disk bytes read in the minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_read_bytes: Option<u64>,
    /// Disk bytes written in the minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_write_bytes: Option<u64>,
    /// Disk read operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_reads: Option<u64>,
    /// Disk write operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_writes: Option<u64>,
    /// Disk busy % (from io time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_busy_pct: Option<f64>,
}

impl HostMetrics {
    /// A metric the judgement compares by name (`cpu_pct`, `mem_used_pct`, `load1`,
    /// `disk_busy_pct`), when measured and finite.
    pub fn get(&self, metric: &str) -> Option<f64> {
        let v = match metric {
            "cpu_pct" => self.cpu_pct,
            "load1" => self.load1,
            "disk_busy_pct" => self.disk_busy_pct,
            "mem_used_pct" => self.mem_used_pct,
            _ => None,
        }?;
        v.is_finite().then_some(v)
    }
}

/// Counters of one app on one host in one minute (summed over reports).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostMinute {
    /// Host name.
    pub host: String,
    /// Start of the minute (UTC Unix seconds, a multiple of 60).
    pub minute: i64,
    /// Log lines (every physical line).
    pub lines: u64,
    /// Log events (a record with its continuation lines counts once); 0 where the agent did
    /// not count them, and then `lines` is the unit of work.
    pub events: u64,
    /// Error lines.
    pub error_lines: u64,
    /// Warning lines.
    pub warn_lines: u64,
    /// Count per exception fingerprint.
    pub exceptions: BTreeMap<Fingerprint, u64>,
    /// Host metrics of the minute (all `None` when not reported).
    pub host_metrics: HostMetrics,
    /// HTTP requests of the minute, when the host has an access log for the app (`None` is
    /// *missing*, not zero).
    pub requests: Option<Requests>,
}

/// What the agent knows about a fingerprint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    /// Outermost exception class.
    pub class: String,
    /// Cause chain classes, outermost first.
    #[serde(default)]
    pub causes: Vec<String>,
    /// A message sample.
    #[serde(default)]
    pub message: String,
    /// Top frames as `class.method`.
    #[serde(default)]
    pub frames: Vec<String>,
    /// A dangerous class appears in the chain.
    #[serde(default)]
    pub dangerous: bool,
}

/// The decision about a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Nothing suspicious.
    Pass,
    /// Something suspicious, not (yet) enough to block.
    Watch,
    /// Stop the release. Sticky.
    Block,
}

impl Decision {
    /// `pass`, `watch` or `block`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Pass => "pass",
            Decision::Watch => "watch",
            Decision::Block => "block",
        }
    }
}

/// How serious a reason is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Enough on its own (with the window) to block.
    Critical,
    /// Worth a look: below the learned threshold, or not yet in enough rounds.
    Warning,
}

/// Counters of one group over one window, as shown in evidence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Events counted (exceptions or error lines), or the metric's median.
    pub value: f64,
    /// Log lines over the window (the volume the count is normalised by).
    pub lines: u64,
    /// Host-minutes with data in the window.
    pub minutes: u32,
}

/// The figures behind a reason, for a person to check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Released hosts before their release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_before: Option<Tally>,
    /// Released hosts after their release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_after: Option<Tally>,
    /// Reference hosts before the first batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_before: Option<Tally>,
    /// Reference hosts over the same minutes as the released hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_after: Option<Tally>,
    /// What the released hosts would show if nothing had changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<f64>,
    /// What they show.
    pub observed: f64,
    /// The effect measured (ratio, count, change in metric units, drop fraction).
    pub effect: f64,
    /// For a rate ratio (`exception_rate` and `server_errors` by their sequential test): its
    /// 95 % interval, low and high (high is `null` when unbounded). It describes the
    /// minutes compared as one sample, so unlike the test it is not valid however often it
    /// is looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect_interval: Option<[Option<f64>; 2]>,
    /// The threshold the effect had to pass (the larger of the default and the learned).
    pub threshold: f64,
    /// The app's learned normal threshold, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned_threshold: Option<f64>,
    /// One-sided p-value of the test, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Dispersion factor the counts were scaled by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispersion: Option<f64>,
    /// For a sequential test: the evidence so far (its e-value, the likelihood ratio mixed
    /// over the effects it looks for)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_value: Option<f64>,
    /// ...and the evidence that blocks (`1/α` of its share of the false-block budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_bar: Option<f64>,
    /// Rounds of the window that were suspicious (at decision time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounds_suspicious: Option<u32>,
    /// Rounds in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_rounds: Option<u32>,
}

impl Evidence {
    /// With the 95 % interval `[low, high]` of its effect (an infinite end as `None`).
    pub(crate) fn with_interval(self, [low, high]: [f64; 2]) -> Self {
        if low.is_nan() || high.is_nan() {
            return self;
        }
        let end = |x: f64| x.is_finite().then_some(x);
        Self {
            effect_interval: Some([end(low), end(high)]),
            ..self
        }
    }

    /// The figures of a sequential test whose log e-value is `log_e` against a bar of
    /// `1/alpha`: the anytime-valid p-value `1/e`, the e-value and the bar.
    pub(crate) fn sequential(self, log_e: f64, alpha: f64) -> Self {
        Self {
            p_value: Some((-log_e).exp().min(1.0)),
            e_value: Some(log_e.min(700.0).exp()),
            e_bar: Some(1.0 / alpha),
            ..self
        }
    }
}

/// The rule of the funnel a reason comes from (DESIGN §5 "Judgement"), named in the API
/// and on the pages as `dangerous_exception`, `new_exception`, `exception_rate`,
/// `error_rate`, `host_metric`, `log_volume`, or one of the business signals
/// `server_errors`, `latency` and `traffic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A dangerous class on a released host (rule 1).
    DangerousException,
    /// A fingerprint the app has not shown (rule 2).
    NewException,
    /// More of a known exception (rule 3).
    ExceptionRate,
    /// More error lines (rule 3).
    ErrorRate,
    /// A host metric moved on released hosts (rule 4).
    HostMetric,
    /// A released host stopped logging (rule 5).
    LogVolume,
    /// More 5xx responses per request on released hosts (business).
    ServerErrors,
    /// Slower responses on released hosts (business).
    Latency,
    /// Requests left the released hosts (business).
    Traffic,
}

impl Rule {
    /// The rule's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::DangerousException => "dangerous_exception",
            Rule::NewException => "new_exception",
            Rule::ExceptionRate => "exception_rate",
            Rule::ErrorRate => "error_rate",
            Rule::HostMetric => "host_metric",
            Rule::LogVolume => "log_volume",
            Rule::ServerErrors => "server_errors",
            Rule::Latency => "latency",
            Rule::Traffic => "traffic",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason for a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// The rule it comes from.
    pub rule: Rule,
    /// One human sentence.
    pub summary: String,
    /// How serious.
    pub severity: Severity,
    /// Hosts concerned.
    pub hosts: Vec<String>,
    /// Fingerprint (16 hex digits) for exception rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Metric name for host-metric and volume rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The figures.
    pub evidence: Evidence,
}

impl Reason {
    /// `rule: summary`, the reason in one line.
    pub fn line(&self) -> String {
        format!("{}: {}", self.rule, self.summary)
    }
}

/// The judge's answer after a round or an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The decision.
    pub decision: Decision,
    /// When it was taken (UTC Unix seconds): the end of the judged minute, or the alert's
    /// time. For a sticky block, the time of the block.
    pub decided_at: i64,
    /// Why (empty for a clean pass).
    pub reasons: Vec<Reason>,
}

/// A user's judgement of a finished release, taught to [`AppMemory::learn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feedback {
    /// Vigil blocked and was right.
    ValidBlock,
    /// Vigil blocked a good release.
    FalseAlarm,
    /// Vigil let a bad release through.
    MissedProblem,
    /// Vigil passed a good release.
    ConfirmedNormal,
}

impl Feedback {
    /// `valid_block`, `false_alarm`, `missed_problem` or `confirmed_normal`.
    pub fn as_str(self) -> &'static str {
        match self {
            Feedback::ValidBlock => "valid_block",
            Feedback::FalseAlarm => "false_alarm",
            Feedback::MissedProblem => "missed_problem",
            Feedback::ConfirmedNormal => "confirmed_normal",
        }
    }
}

/// The funnel's parameters, each documented by what it means to a user (a false-block
/// budget, the smallest effect worth blocking, minutes a restart stays noisy); [`Default`]
/// holds Vigil's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeParams {
    /// Minutes of baseline before the first batch.
    pub baseline_minutes: i64,
    /// Minutes after a host's release left out of the tests of what its logs and access
    /// log count (restart noise): the default until the app has a learned start-up
    /// profile ([`startup`]), which replaces it at the release's first round. Two minutes
    /// by default: a persistent ×15 rise of a known exception is blocked by the round
    /// after the third minute, while a start-up that stays noisy longer blocks an app's
    /// first releases until feedback teaches it.
    pub warmup_minutes: i64,
    /// The same for host metrics and latency (CPU, load, disk busy, response times;
    /// memory's slope never skips less): a restarted JVM keeps burning CPU on compilation
    /// and cold caches, and answers slower, after its logs have settled, so three minutes
    /// by default. A learned start-up profile (which measures CPU too) replaces both.
    /// `None` in judge states stored before it existed, whose one warm-up
    /// (`warmup_minutes`, maybe learned) then holds for both: see
    /// [`JudgeParams::metric_warmup`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_warmup_minutes: Option<i64>,
    /// Rounds in the sliding window.
    pub window_rounds: usize,
    /// Suspicious rounds in the window needed to block.
    pub window_needed: usize,
    /// Rule 2: events of a new fingerprint needed.
    pub new_min_count: f64,
    /// Rule 3: significance level of the aggregate test (per-host tests use it divided by
    /// the number of released hosts).
    pub rate_alpha: f64,
    /// Rule 3: significance level of the after-vs-before guard on the released hosts when
    /// a reference group gives the main test.
    pub rate_guard_alpha: f64,
    /// Rule 3: significance level of the per-minute t-test (whose variance comes from the
    /// minutes themselves, so a fleet-wide surge of overdispersed counts cannot pass).
    pub rate_minutes_alpha: f64,
    /// Rule 3: minimum ratio observed/expected.
    pub rate_min_ratio: f64,
    /// Rule 3: minimum excess events over the expectation (aggregate).
    pub rate_min_excess: f64,
    /// Rule 3: dispersion assumed when the baseline is too thin to estimate it.
    pub default_dispersion: f64,
    /// Rule 3: largest dispersion factor used.
    pub max_dispersion: f64,
    /// Rule 4: consecutive suspicious rounds a host metric alone needs before it counts in
    /// the window, when it did not block at once (memory's slope; CPU, load and disk
    /// without reference hosts).
    pub metric_rounds_needed: usize,
    /// Rule 4: minutes before its release a host needs to have a level.
    pub metric_min_minutes: usize,
    /// Rule 4: recent minutes whose upper quartile is shown as a host's effect (and
    /// learned from).
    pub metric_recent_minutes: i64,
    /// Rule 4: minimum CPU change (points).
    pub cpu_min_points: f64,
    /// Rule 4: minimum disk busy change (points).
    pub disk_min_points: f64,
    /// Rule 4: minimum load change (absolute), and relative to the baseline load.
    pub load_min_abs: f64,
    /// Rule 4: minimum load change relative to the baseline median.
    pub load_min_rel: f64,
    /// Rule 4: minimum memory slope above the reference (points per minute).
    pub mem_min_slope: f64,
    /// Rule 4: minimum memory rise over the after window (points).
    pub mem_min_rise: f64,
    /// Rule 5: a released host-minute's volume relative to its usual (and the reference
    /// hosts' change in that minute) below this is a minute of collapse: the host all but
    /// stopped logging.
    pub volume_max_ratio: f64,
    /// The chance a user accepts that a release with no effect on an exception's rate is
    /// blocked for it (the sequential rate test's share of it, see `sequential`). Absent
    /// from judge states stored before it existed: they read as the default.
    #[serde(default = "default_false_block_budget")]
    pub false_block_budget: f64,
    /// `server_errors`: the released hosts' 5xx per request must be at least this many
    /// times what the reference hosts (or their own past) predict...
    #[serde(default = "default_server_error_min_ratio")]
    pub server_error_min_ratio: f64,
    /// ...and more by at least this share of their requests (0.005: half a point of
    /// success rate).
    #[serde(default = "default_server_error_min_share")]
    pub server_error_min_share: f64,
    /// `latency`: the released hosts' median or 90th percentile must be at least this many
    /// times the comparison's.
    #[serde(default = "default_latency_min_ratio")]
    pub latency_min_ratio: f64,
    /// `traffic`: a released host's requests must have fallen by at least this fraction.
    #[serde(default = "default_traffic_min_drop")]
    pub traffic_min_drop: f64,
}

impl JudgeParams {
    /// Minutes after a host's release left out of its host metrics' and latency's tests.
    pub fn metric_warmup(&self) -> i64 {
        self.metric_warmup_minutes.unwrap_or(self.warmup_minutes)
    }
}

impl Default for JudgeParams {
    fn default() -> Self {
        Self {
            baseline_minutes: 60,
            warmup_minutes: 2,
            metric_warmup_minutes: Some(3),
            window_rounds: 3,
            window_needed: 2,
            new_min_count: 5.0,
            rate_alpha: 1e-5,
            rate_guard_alpha: 1e-2,
            rate_minutes_alpha: 2e-3,
            rate_min_ratio: 1.5,
            rate_min_excess: 6.0,
            default_dispersion: 1.5,
            max_dispersion: 25.0,
            metric_rounds_needed: 5,
            metric_min_minutes: 5,
            metric_recent_minutes: 10,
            cpu_min_points: 12.0,
            disk_min_points: 12.0,
            load_min_abs: 0.8,
            load_min_rel: 0.6,
            mem_min_slope: 0.12,
            mem_min_rise: 3.0,
            volume_max_ratio: 0.3,
            false_block_budget: default_false_block_budget(),
            server_error_min_ratio: default_server_error_min_ratio(),
            server_error_min_share: default_server_error_min_share(),
            latency_min_ratio: default_latency_min_ratio(),
            traffic_min_drop: default_traffic_min_drop(),
        }
    }
}

fn chosen() -> bool {
    true
}

fn default_false_block_budget() -> f64 {
    0.01
}

fn default_server_error_min_ratio() -> f64 {
    2.0
}

fn default_server_error_min_share() -> f64 {
    0.005
}

fn default_latency_min_ratio() -> f64 {
    1.25
}

fn default_traffic_min_drop() -> f64 {
    0.8
}

/// What a judge remembers of its release for learning.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReleaseRecord {
    /// Largest effect per signal kind among signals that passed their test and the
    /// default threshold.
    pub peaks: BTreeMap<String, f64>,
    /// Every fingerprint seen, with the last minute.
    pub seen: BTreeMap<Fingerprint, i64>,
    /// Fingerprints seen in baselines or the reference group.
    pub seen_outside: BTreeMap<Fingerprint, i64>,
    /// Fingerprints behind the reasons of the block.
    pub flagged_fingerprints: BTreeSet<Fingerprint>,
    /// Signal kinds behind the reasons of the block.
    pub blocking_kinds: BTreeSet<String>,
    /// Largest change of a released host per metric kind, significant or not.
    pub released_levels: BTreeMap<String, f64>,
    /// Largest change of a reference host per metric kind (normal by definition).
    pub normal_levels: BTreeMap<String, f64>,
    /// The longest run of elevated minutes from their release on released hosts
    /// (`startup`), when measured.
    #[serde(default)]
    pub startup: Option<u32>,
    /// How long past the end of its CPU's start-up a released host's logs stayed noisy,
    /// the longest (`startup::lag`), when measured.
    #[serde(default)]
    pub startup_lag: Option<u32>,
    /// Rounds judged (0 in states stored before it was counted).
    #[serde(default)]
    pub rounds: u32,
    /// Per host metric and grade of hit, its host-minutes before the release as the last
    /// round counted them (`memory::NullSample`), over [`ReleaseJudge::null_span`].
    #[serde(default)]
    pub null_hits: BTreeMap<String, NullSample>,
    /// Per host metric and grade of hit, its released host-minutes past their warm-up as
    /// the last round counted them, with their hits, over `released_span`: what the app's
    /// host metrics do after a release, once users call it normal.
    #[serde(default)]
    pub released_hits: BTreeMap<String, NullSample>,
    /// The minutes (UTC Unix seconds, end excluded) `released_hits` span: from the first
    /// batch's minute to the minute after the last round's.
    #[serde(default)]
    pub released_span: Option<(i64, i64)>,
}

/// How a released host's own start-up shortens an app's learned warm-up of what its logs
/// count: they are settled from `lag_minutes` past the end of its CPU's start-up in this
/// release (the longest its logs' restart noise outlasted its CPU's in recent normal
/// releases), never before `floor_minutes` (the configured warm-up) nor after the learned
/// warm-up. An app whose start-up stormed once keeps a long warm-up for the releases that
/// follow; a host whose restart this time was short is judged once it is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OwnStartup {
    pub lag_minutes: i64,
    pub floor_minutes: i64,
}

/// The state of one release across rounds: the sliding window, the sticky block and what
/// learning needs. Serializable, so the detector can keep it across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseJudge {
    release: Release,
    /// The app's fingerprints known before the release and the definitions the judge
    /// relates fingerprints by: given whole to a judge built in memory (replay), given
    /// afresh for each round or alert by the detector, which reads from its store only
    /// what that round looks at ([`ReleaseJudge::set_fingerprints`]). Not kept in the
    /// stored state (a state stored with them still reads).
    #[serde(default, skip_serializing)]
    known: HashSet<Fingerprint>,
    #[serde(default, skip_serializing)]
    definitions: HashMap<Fingerprint, Definition>,
    params: JudgeParams,
    window: VecDeque<bool>,
    /// Consecutive rounds with a suspicious host metric that did not block at once.
    metric_streak: usize,
    /// Whether the warm-up was chosen (at the first round, from the app's learned start-up
    /// profile); a state stored before there were profiles keeps its warm-up.
    #[serde(default = "chosen")]
    warmup_chosen: bool,
    /// Whether that warm-up is the app's learned one. Until the app has learned its
    /// start-up, a released host also waits for its own start-up in this release to end,
    /// as measured round by round (see `startup`). A state stored before this reads as
    /// learned and keeps its warm-up alone (one stored before its first round has it set
    /// when the warm-up is chosen).
    #[serde(default = "chosen")]
    warmup_learned: bool,
    /// Once the app has learned its start-up: what a released host's own start-up in this
    /// release may shorten the learned warm-up of what its logs count to (see `startup`).
    /// `None` before the app learned how far its logs' noise outlasts its CPU's, and in
    /// states stored before it existed (their warm-up alone holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    own_startup: Option<OwnStartup>,
    verdict: Verdict,
    record: ReleaseRecord,
    /// Fingerprints seen in baselines or on reference hosts at the last round (for alerts).
    outside_last_round: HashSet<Fingerprint>,
}

impl ReleaseJudge {
    /// A judge for `release` with the app's known fingerprints at the start and the
    /// definitions known so far, with [`JudgeParams::default`].
    pub fn new(
        release: Release,
        known_fingerprints: HashSet<Fingerprint>,
        definitions: HashMap<Fingerprint, Definition>,
    ) -> Self {
        Self::with_params(
            release,
            known_fingerprints,
            definitions,
            JudgeParams::default(),
        )
    }

    /// Like [`ReleaseJudge::new`] with explicit parameters.
    pub fn with_params(
        release: Release,
        known_fingerprints: HashSet<Fingerprint>,
        definitions: HashMap<Fingerprint, Definition>,
        params: JudgeParams,
    ) -> Self {
        let start = release.first_minute().unwrap_or(0);
        Self {
            release,
            known: known_fingerprints,
            definitions,
            params,
            window: VecDeque::new(),
            metric_streak: 0,
            warmup_chosen: false,
            warmup_learned: false,
            own_startup: None,
            verdict: Verdict {
                decision: Decision::Pass,
                decided_at: start,
                reasons: Vec::new(),
            },
            record: ReleaseRecord::default(),
            outside_last_round: HashSet::new(),
        }
    }

    /// The release judged.
    pub fn release(&self) -> &Release {
        &self.release
    }

    /// The minutes (UTC Unix seconds, end excluded) its host metrics' baselines span: from
    /// the baseline's start to the minute after the last batch's (a released host's
    /// minutes count until its own batch, a reference host's until the first).
    pub(crate) fn null_span(&self) -> Option<(i64, i64)> {
        let first = self.release.first_minute()?;
        let last = self.release.batches.iter().map(|b| b.at).max()?;
        Some((
            first - self.params.baseline_minutes * 60,
            minute_of(last) + 60,
        ))
    }

    /// The current verdict.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// Carries over the verdict of a judge whose stored state was lost (unreadable after an
    /// upgrade or a corrupt row): this judge starts its window afresh but from that
    /// decision, so a block stays a block (sticky) and keeps its time and reasons.
    pub fn resume(&mut self, verdict: Verdict) {
        self.verdict = verdict;
    }

    /// Records a new batch of released hosts (the release API's `POST .../batches`); the
    /// next round treats those hosts as released from the batch's minute.
    pub fn add_batch(&mut self, batch: Batch) {
        self.release.batches.push(batch);
    }

    /// Replaces the fingerprints known before the release and the definitions with
    /// those the next round or alert needs: the definitions of the fingerprints it looks
    /// at, which of them were known, and known fingerprints of their class chains.
    pub fn set_fingerprints(
        &mut self,
        known: HashSet<Fingerprint>,
        definitions: HashMap<Fingerprint, Definition>,
    ) {
        self.known = known;
        self.definitions = definitions;
    }

    /// The fingerprints seen in a baseline or on a reference host at the last round,
    /// which an alert between rounds counts as known.
    pub fn outside_last_round(&self) -> impl Iterator<Item = Fingerprint> + '_ {
        self.outside_last_round.iter().copied()
    }

    pub(crate) fn record(&self) -> &ReleaseRecord {
        &self.record
    }

    /// One round at the completed minute `minute` over all data known so far.
    ///
    /// `data` holds every host-minute of the app known now, in any order, possibly with
    /// late additions for earlier minutes; rows after `minute` are ignored; a minute with
    /// no row for a host is *missing*, never zero. After a block the verdict is returned
    /// unchanged (sticky).
    pub fn round(&mut self, minute: i64, data: &[HostMinute], memory: &AppMemory) -> Verdict {
        let minute = minute_of(minute);
        if !self.warmup_chosen {
            let learned = startup::learned_warmup(&memory.startup_profiles);
            if learned.is_some()
                && let Some(lag_minutes) = startup::learned_lag(&memory.startup_lags)
            {
                self.own_startup = Some(OwnStartup {
                    lag_minutes,
                    floor_minutes: self.params.warmup_minutes.max(0),
                });
            }
            if let Some(w) = learned {
                self.params.warmup_minutes = w;
                self.params.metric_warmup_minutes = Some(w);
            }
            self.warmup_learned = learned.is_some();
            self.warmup_chosen = true;
        }
        let outcome = funnel::evaluate(self, minute, data, memory);
        self.outside_last_round = outcome.outside.iter().copied().collect();
        for (&fp, &seen) in &outcome.seen {
            let slot = self.record.seen.entry(fp).or_insert(seen);
            *slot = (*slot).max(seen);
        }
        for &fp in &outcome.outside {
            let seen = outcome.seen.get(&fp).copied().unwrap_or(minute);
            self.record.seen_outside.insert(fp, seen);
        }
        // A release showing fingerprints without end keeps the ones it saw last.
        keep_latest(&mut self.record.seen, MAX_KNOWN_FINGERPRINTS);
        keep_latest(&mut self.record.seen_outside, MAX_KNOWN_FINGERPRINTS);
        for (kind, released, reference) in &outcome.levels {
            for (map, v) in [
                (&mut self.record.released_levels, *released),
                (&mut self.record.normal_levels, *reference),
            ] {
                if v.is_finite() {
                    let slot = map.entry(kind.clone()).or_insert(v);
                    *slot = slot.max(v);
                }
            }
        }
        for (kind, sample) in &outcome.nulls {
            self.record.null_hits.insert(kind.clone(), *sample);
        }
        for (kind, sample) in &outcome.released_hits {
            self.record.released_hits.insert(kind.clone(), *sample);
        }
        if let Some(first) = self.release.first_minute() {
            self.record.released_span = Some((first, minute + 60));
        }
        if let Some(run) = outcome.startup {
            self.record.startup = Some(self.record.startup.map_or(run, |r| r.max(run)));
        }
        if let Some(lag) = outcome.startup_lag {
            self.record.startup_lag = Some(self.record.startup_lag.map_or(lag, |l| l.max(lag)));
        }
        self.record.rounds += 1;
        for c in &outcome.candidates {
            if c.significant {
                for kind in std::iter::once(&c.kind).chain(&c.aliases) {
                    let slot = self.record.peaks.entry(kind.clone()).or_insert(c.effect);
                    if c.effect > *slot {
                        *slot = c.effect;
                    }
                }
            }
        }
        if self.verdict.decision == Decision::Block {
            return self.verdict.clone();
        }
        let decided_at = minute + 60;
        let immediate: Vec<Reason> = outcome
            .candidates
            .iter()
            .filter(|c| c.immediate)
            .map(|c| c.reason.clone())
            .collect();
        if !immediate.is_empty() {
            return self.block(decided_at, immediate, &outcome.candidates);
        }
        // A host metric that did not block at once (memory's slope, which is not a
        // calibrated test, or CPU, load and disk without reference hosts to control for a
        // change of the whole fleet) needs a longer run of suspicious rounds on its own;
        // with any other signal it counts at once.
        let slope = |c: &signal::Candidate| c.reason.rule == Rule::HostMetric;
        let metric_suspicious = outcome.candidates.iter().any(|c| c.suspicious && slope(c));
        self.metric_streak = if metric_suspicious {
            self.metric_streak + 1
        } else {
            0
        };
        let log_suspicious = outcome.candidates.iter().any(|c| c.suspicious && !slope(c));
        let suspicious =
            log_suspicious || self.metric_streak >= self.params.metric_rounds_needed.max(1);
        self.window.push_back(suspicious);
        while self.window.len() > self.params.window_rounds.max(1) {
            self.window.pop_front();
        }
        let hits = self.window.iter().filter(|&&s| s).count();
        let window_info = |mut r: Reason| {
            r.evidence.rounds_suspicious = Some(hits as u32);
            r.evidence.window_rounds = Some(self.params.window_rounds as u32);
            r
        };
        if suspicious && hits >= self.params.window_needed.max(1) {
            let reasons: Vec<Reason> = outcome
                .candidates
                .iter()
                .filter(|c| c.suspicious)
                .map(|c| window_info(c.reason.clone()))
                .collect();
            return self.block(decided_at, reasons, &outcome.candidates);
        }
        let mut reasons: Vec<Reason> = outcome
            .candidates
            .iter()
            .filter(|c| c.significant)
            .map(|c| {
                let mut r = window_info(c.reason.clone());
                r.severity = Severity::Warning;
                r
            })
            .collect();
        reasons.truncate(20);
        self.verdict = Verdict {
            decision: if reasons.is_empty() {
                Decision::Pass
            } else {
                Decision::Watch
            },
            decided_at,
            reasons,
        };
        self.verdict.clone()
    }

    fn block(
        &mut self,
        at: i64,
        reasons: Vec<Reason>,
        candidates: &[signal::Candidate],
    ) -> Verdict {
        for c in candidates {
            if c.immediate || c.suspicious {
                self.record.blocking_kinds.insert(c.kind.clone());
                self.record.blocking_kinds.extend(c.aliases.iter().cloned());
                if let Some(fp) = c.fingerprint {
                    self.record.flagged_fingerprints.insert(fp);
                }
            }
        }
        self.verdict = Verdict {
            decision: Decision::Block,
            decided_at: at,
            reasons,
        };
        self.verdict.clone()
    }

    /// A dangerous-exception alert from `host` at `at`, between rounds: blocks at once
    /// when the host is released, the definition is dangerous, and the fingerprint is not
    /// known to the app, not in the app's known history and was not seen in any baseline
    /// or on a reference host at the last round — itself, a fingerprint with the same
    /// definition, or (see the module docs) its family. Otherwise the verdict is unchanged.
    pub fn alert(
        &mut self,
        at: i64,
        host: &str,
        fingerprint: Fingerprint,
        definition: &Definition,
        memory: &AppMemory,
    ) -> Verdict {
        self.definitions
            .entry(fingerprint)
            .or_insert_with(|| definition.clone());
        if self.verdict.decision == Decision::Block || !definition.dangerous {
            return self.verdict.clone();
        }
        let released = self
            .release
            .batches
            .iter()
            .any(|b| minute_of(b.at) <= minute_of(at) && b.hosts.iter().any(|h| h == host));
        let start = self.release.first_minute().unwrap_or(at);
        let known = |fp: Fingerprint| {
            self.known.contains(&fp)
                || memory.knows(fp, start)
                || self.outside_last_round.contains(&fp)
        };
        if !released
            || known(fingerprint)
            || family::covered(&self.definitions, [definition], known)[0]
        {
            return self.verdict.clone();
        }
        let reason = Reason {
            rule: Rule::DangerousException,
            summary: format!(
                "{} on released host {host} (alert), never seen in the baseline, on reference hosts or in the app's history",
                definition.class
            ),
            severity: Severity::Critical,
            hosts: vec![host.to_string()],
            fingerprint: Some(fingerprint_hex(fingerprint)),
            metric: None,
            evidence: Evidence {
                observed: 1.0,
                effect: 1.0,
                threshold: 1.0,
                ..Evidence::default()
            },
        };
        self.record.flagged_fingerprints.insert(fingerprint);
        self.verdict = Verdict {
            decision: Decision::Block,
            decided_at: at,
            reasons: vec![reason],
        };
        self.verdict.clone()
    }
}
