//! The round's tallies, shared by the funnel and its signals: per host and signal, its
//! counts before and after; per host and minute, its work.

use super::signal::HostView;

/// Per host counters of one signal.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SigHost {
    pub(crate) kb: f64,
    /// Σ k²/n over baseline minutes (for the dispersion estimate).
    pub(crate) kb_sq: f64,
    pub(crate) ka: f64,
    pub(crate) ka_all: f64,
    pub(crate) minutes_all: u32,
}

/// The per-minute grid of one round: `value[host * t_len + t]`, lines `< 0` when the
/// host did not report that minute.
#[derive(Debug)]
pub(crate) struct Grid {
    pub(crate) t_len: usize,
    pub(crate) lines: Vec<f64>,
    /// Minute index where each host's after-window starts (its release, or the first
    /// batch for reference hosts), and where its settled window starts.
    pub(crate) start: Vec<usize>,
    pub(crate) settled: Vec<usize>,
    /// First batch's minute index.
    pub(crate) first: usize,
}

impl SigHost {
    /// Counts `k` events of a host-minute whose work was `n`, `(before, settled)`: in
    /// its baseline, or after its release and past its warm-up or not.
    pub(crate) fn add(&mut self, k: f64, n: f64, (before, settled): (bool, bool)) {
        if before {
            self.kb += k;
            if n > 0.0 {
                self.kb_sq += k * k / n;
            }
        } else {
            self.ka_all += k;
            if k > 0.0 {
                self.minutes_all += 1;
            }
            if settled {
                self.ka += k;
            }
        }
    }
}

impl Grid {
    /// The round's windows, with `released` and `reference` its two groups of hosts.
    pub(crate) fn windows<'a>(
        &'a self,
        released: &'a [usize],
        reference: &'a [usize],
    ) -> Windows<'a> {
        Windows {
            t_len: self.t_len,
            start: &self.start,
            settled: &self.settled,
            first: self.first,
            released,
            reference,
        }
    }

    /// A signal's per-host counters from its per-minute `values` (as the row pass tallies
    /// them, one cell per host-minute): for fingerprints judged together.
    pub(crate) fn tally(&self, values: &[f64]) -> Vec<SigHost> {
        let t_len = self.t_len;
        (0..self.start.len())
            .map(|h| {
                let mut s = SigHost::default();
                for t in 0..t_len {
                    let n = self.lines[h * t_len + t];
                    if n >= 0.0 {
                        let when = (t < self.start[h], t >= self.settled[h]);
                        s.add(values[h * t_len + t], n, when);
                    }
                }
                s
            })
            .collect()
    }
}

/// The round's hosts as rule 3 sees them: their views, the per-minute grid of their work,
/// and which are released and which the reference.
#[derive(Clone, Copy)]
pub(crate) struct Groups<'g, 'h> {
    pub(crate) hosts: &'g [HostView<'h>],
    pub(crate) grid: &'g Grid,
    pub(crate) released: &'g [usize],
    pub(crate) reference: &'g [usize],
}

/// Where the round's windows are, in grid minutes, and which hosts are released and which
/// the reference: what the signals judged host-minute by host-minute share.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Windows<'a> {
    pub t_len: usize,
    /// Per host: first minute of its after window, and past its warm-up.
    pub start: &'a [usize],
    pub settled: &'a [usize],
    /// Minute of the first batch.
    pub first: usize,
    pub released: &'a [usize],
    pub reference: &'a [usize],
}
