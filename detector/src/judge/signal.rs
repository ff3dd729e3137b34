//! What the funnel's rules share: the round's view of a host ([`HostView`], [`Role`]) and
//! what a rule finds ([`Candidate`]), with the app's learned threshold applied
//! ([`candidate`]).

use super::{Fingerprint, HostMinute, Learned, Reason, Severity};

/// A signal found in a round.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    /// Learnable kind (`exception_rate:<fingerprint>`, `host_metric:cpu_pct`, ..);
    /// `dangerous_exception` is not learnable.
    pub kind: String,
    /// Other kinds the same signal is learned under: an exception's other fingerprints
    /// (one failure's counting key depends on which of its shapes a round sees).
    pub aliases: Vec<String>,
    pub reason: Reason,
    pub effect: f64,
    pub fingerprint: Option<Fingerprint>,
    /// Rule 1: block now.
    pub immediate: bool,
    /// Passed its test and the default threshold.
    pub significant: bool,
    /// Significant and above the learned threshold: counts in the window.
    pub suspicious: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Released(i64),
    Reference,
}

#[derive(Debug)]
pub(super) struct HostView<'a> {
    pub(super) name: &'a str,
    pub(super) role: Role,
    pub(super) rows: Vec<&'a HostMinute>,
    /// Lines / minutes before, settled after, and all after.
    pub(super) nb: f64,
    pub(super) tb: u32,
    pub(super) na: f64,
    pub(super) ta: u32,
    pub(super) na_all: f64,
    /// A released host whose app has not learned its start-up yet: the minute its own
    /// start-up in this release (minutes elevated by any signal) ends, or may still end,
    /// before which its host metrics are not settled whatever the default warm-up says.
    pub(super) startup_until: Option<i64>,
}

pub(super) fn candidate(
    kind: &str,
    reason: Reason,
    effect: f64,
    default_threshold: f64,
    memory: &Learned<'_>,
    fingerprint: Option<Fingerprint>,
) -> Candidate {
    learned_candidate(
        kind,
        Vec::new(),
        reason,
        effect,
        default_threshold,
        memory,
        fingerprint,
    )
}

/// [`candidate`] for a signal learned under several kinds: the largest of their learned
/// thresholds applies.
pub(super) fn learned_candidate(
    kind: &str,
    aliases: Vec<String>,
    mut reason: Reason,
    effect: f64,
    default_threshold: f64,
    memory: &Learned<'_>,
    fingerprint: Option<Fingerprint>,
) -> Candidate {
    let learned = std::iter::once(kind)
        .chain(aliases.iter().map(String::as_str))
        .filter_map(|k| memory.threshold(k))
        .reduce(f64::max);
    let threshold = learned.map_or(default_threshold, |l| l.max(default_threshold));
    let suspicious = learned.is_none_or(|l| effect > l) && effect >= default_threshold;
    reason.evidence.threshold = threshold;
    reason.evidence.learned_threshold = learned;
    reason.severity = if suspicious {
        Severity::Critical
    } else {
        Severity::Warning
    };
    Candidate {
        kind: kind.to_string(),
        aliases,
        reason,
        effect,
        fingerprint,
        immediate: false,
        significant: true,
        suspicious,
    }
}
