//! Rules 1 and 2: a dangerous exception absent from everything known blocks at once; any
//! other new one once it is seen often enough.

use crate::judge::grid::SigHost;
use crate::judge::memory::kind_default;
use crate::judge::signal::{Candidate, HostView, candidate};
use crate::judge::{
    Evidence, Fingerprint, Learned, Reason, ReleaseJudge, Rule, Severity, Tally, fingerprint_hex,
};

/// Rules 1 and 2 for a shape seen on released hosts after their release and known
/// nowhere (not in a baseline, on a reference host or in the app's history, by
/// fingerprint, definition or family): a dangerous one blocks at once, any other is new
/// once it reaches [`JudgeParams::new_min_count`] events in two host-minutes.
#[allow(clippy::too_many_arguments)] // the round's views, passed as they are
pub(crate) fn new_or_dangerous(
    judge: &ReleaseJudge,
    fp: Fingerprint,
    per_host: &[SigHost],
    hosts: &[HostView<'_>],
    released: &[usize],
    group_lines: [f64; 4],
    minutes: [u32; 4],
    memory: &Learned<'_>,
) -> Option<Candidate> {
    let params = &judge.params;
    let after_all: f64 = released.iter().map(|&i| per_host[i].ka_all).sum();
    let hit_hosts: Vec<String> = released
        .iter()
        .filter(|&&i| per_host[i].ka_all > 0.0)
        .map(|&i| hosts[i].name.to_string())
        .collect();
    let definition = judge.definitions.get(&fp);
    let class = definition.map_or("unknown exception", |d| d.class.as_str());
    let released_after = Tally {
        value: after_all,
        lines: released.iter().map(|&i| hosts[i].na_all).sum::<f64>() as u64,
        minutes: released.iter().map(|&i| per_host[i].minutes_all).sum(),
    };
    let evidence = Evidence {
        released_before: Some(Tally {
            value: 0.0,
            lines: group_lines[0] as u64,
            minutes: minutes[0],
        }),
        released_after: Some(released_after),
        reference_after: Some(Tally {
            value: 0.0,
            lines: group_lines[3] as u64,
            minutes: minutes[3],
        }),
        expected: Some(0.0),
        observed: after_all,
        effect: after_all,
        ..Evidence::default()
    };
    if definition.is_some_and(|d| d.dangerous) {
        return Some(Candidate {
            kind: "dangerous_exception".into(),
            aliases: Vec::new(),
            reason: Reason {
                rule: Rule::DangerousException,
                summary: format!(
                    "dangerous {class} ×{after_all} on released host(s) {}, absent from the baseline, the reference hosts and the app's history",
                    hit_hosts.join(", ")
                ),
                severity: Severity::Critical,
                hosts: hit_hosts,
                fingerprint: Some(fingerprint_hex(fp)),
                metric: None,
                evidence: Evidence {
                    threshold: 1.0,
                    ..evidence
                },
            },
            effect: after_all,
            fingerprint: Some(fp),
            immediate: true,
            significant: true,
            suspicious: true,
        });
    }
    let spread: u32 = released.iter().map(|&i| per_host[i].minutes_all).sum();
    if after_all < params.new_min_count || spread < 2 {
        return None;
    }
    let reason = Reason {
        rule: Rule::NewException,
        summary: format!(
            "new exception {class} ×{after_all} in {spread} host-minutes on released host(s) {}, never seen in the baseline, on reference hosts or in the app's history",
            hit_hosts.join(", ")
        ),
        severity: Severity::Critical,
        hosts: hit_hosts,
        fingerprint: Some(fingerprint_hex(fp)),
        metric: None,
        evidence,
    };
    Some(candidate(
        "new_exception",
        reason,
        after_all,
        params.new_min_count.max(kind_default("new_exception")),
        memory,
        Some(fp),
    ))
}
