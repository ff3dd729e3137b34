//! `log_volume`: a released host still reporting whose logging all but stopped — its
//! minutes below [`JudgeParams::volume_max_ratio`] of its usual volume (log events, or
//! lines where its agent does not count events), after the reference hosts' own change —
//! by the calibrated collapse test of `collapse`, which spends half of
//! [`COLLAPSE_SHARE`] of the release's false-block budget. Past its bar it blocks at once
//! with two reference hosts or more; with fewer, the window's rounds decide.

use super::collapse::{self, COLLAPSE_SHARE, Volume};
use crate::judge::grid::Windows;
use crate::judge::signal::{Candidate, HostView};
use crate::judge::{JudgeParams, Learned, Rule};

/// `work` is the round's grid of each host-minute's log events (or lines), `< 0` where the
/// host did not report.
pub(crate) fn volume_signal(
    hosts: &[HostView<'_>],
    work: &[f64],
    w: &Windows<'_>,
    params: &JudgeParams,
    memory: &Learned<'_>,
) -> Option<Candidate> {
    let alpha = params.false_block_budget * COLLAPSE_SHARE / 2.0;
    let c = collapse::test(work, w, params.volume_max_ratio, alpha)?;
    let volume = Volume {
        rule: Rule::LogVolume,
        what: "log volume",
        metric: "lines",
        min_drop: 1.0 - params.volume_max_ratio,
    };
    Some(collapse::candidate_of(&c, &volume, hosts, alpha, memory))
}
