//! `vigil-agent parse [--json] [--app-packages P,..] FILE...` (DESIGN §3): read files from the
//! start and print every exception event, then a summary.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::analyzer::{Analyzer, AnalyzerConfig, AnalyzerError};
use super::assemble::{Event, EventAssembler};
use super::exception::Fingerprint;
use super::time::format_utc;

/// Longest line kept whole by [`read_lines`] in `parse`; longer lines are cut (still one line).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// What `parse` failed on.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// A file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The output could not be written.
    #[error("cannot write the output: {0}")]
    Write(#[source] io::Error),
    /// The analysis could not be configured.
    #[error(transparent)]
    Analyzer(#[from] AnalyzerError),
}

/// One fingerprint in the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintSummary {
    /// The fingerprint.
    pub fingerprint: Fingerprint,
    /// Events that had it.
    pub count: u64,
    /// Outermost class.
    pub class: String,
    /// Cause chain.
    pub causes: Vec<String>,
    /// Dangerous?
    pub dangerous: bool,
    /// File and line of the first event with it.
    pub first_seen: (PathBuf, u64),
}

/// Totals of a `parse` run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// All log events (a multi-line event counts once).
    pub events: u64,
    /// Events holding an exception.
    pub exceptions: u64,
    /// Distinct fingerprints.
    pub fingerprints: u64,
    /// Exception events whose cause chain holds a dangerous class.
    pub dangerous: u64,
    /// Per fingerprint, in order of first appearance.
    pub per_fingerprint: Vec<FingerprintSummary>,
}

/// Splits everything `r` yields into lines (without `\n`), calling `f(line, end_offset)`
/// where `end_offset` is the byte offset just after the line's newline (or the end of the
/// data for a last line without one). Lines longer than `max_line` are cut to it (the rest is
/// skipped, the line still counts once). Returns the bytes read.
///
/// # Errors
/// The reader's errors.
pub fn read_lines<R: Read>(
    mut r: R,
    max_line: usize,
    mut f: impl FnMut(&[u8], u64),
) -> io::Result<u64> {
    let mut chunk = vec![0u8; 256 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    let mut carry_cut = false;
    let mut offset = 0u64;
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let data = &chunk[..n];
        let base = offset;
        offset += n as u64;
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', data) {
            let end = base + nl as u64 + 1;
            if carry.is_empty() && !carry_cut {
                let l = &data[start..nl];
                f(&l[..l.len().min(max_line)], end);
            } else {
                let room = max_line.saturating_sub(carry.len());
                let part = &data[start..nl];
                carry.extend_from_slice(&part[..part.len().min(room)]);
                f(&carry, end);
                carry.clear();
                carry_cut = false;
            }
            start = nl + 1;
        }
        let rest = &data[start..];
        let room = max_line.saturating_sub(carry.len());
        carry.extend_from_slice(&rest[..rest.len().min(room)]);
        carry_cut |= rest.len() > room;
    }
    if !carry.is_empty() || carry_cut {
        f(&carry, offset);
    }
    Ok(offset)
}

/// One exception event of `parse --json`, keys in the documented order.
#[derive(serde::Serialize)]
struct JsonEvent<'a> {
    file: &'a str,
    line: u64,
    time: i64,
    class: &'a str,
    causes: &'a [String],
    fingerprint: String,
    dangerous: bool,
    frames: u32,
}

#[derive(serde::Serialize)]
struct JsonSummary {
    summary: JsonTotals,
}

#[derive(serde::Serialize)]
struct JsonTotals {
    events: u64,
    exceptions: u64,
    fingerprints: u64,
    dangerous: u64,
}

struct Printer<'w> {
    out: &'w mut dyn Write,
    json: bool,
    summary: Summary,
    index: HashMap<Fingerprint, usize>,
    error: Option<io::Error>,
}

impl Printer<'_> {
    fn event(&mut self, path: &Path, ev: &Event<'_>) {
        self.summary.events += 1;
        let Some(x) = ev.exception else {
            return;
        };
        self.summary.exceptions += 1;
        if x.dangerous {
            self.summary.dangerous += 1;
        }
        match self.index.get(&x.fingerprint) {
            Some(&i) => self.summary.per_fingerprint[i].count += 1,
            None => {
                self.index
                    .insert(x.fingerprint, self.summary.per_fingerprint.len());
                self.summary.per_fingerprint.push(FingerprintSummary {
                    fingerprint: x.fingerprint,
                    count: 1,
                    class: x.class.clone(),
                    causes: x.causes.clone(),
                    dangerous: x.dangerous,
                    first_seen: (path.to_owned(), ev.line_number),
                });
            }
        }
        if self.error.is_some() {
            return;
        }
        let r = if self.json {
            let v = JsonEvent {
                file: &path.to_string_lossy(),
                line: ev.line_number,
                time: ev.time,
                class: &x.class,
                causes: &x.causes,
                fingerprint: x.fingerprint.to_string(),
                dangerous: x.dangerous,
                frames: x.frame_count,
            };
            serde_json::to_writer(&mut *self.out, &v)
                .map_err(io::Error::from)
                .and_then(|()| writeln!(self.out))
        } else {
            let mut chain = x.class.clone();
            for c in &x.causes {
                chain.push_str(" <- ");
                chain.push_str(c);
            }
            writeln!(
                self.out,
                "{}:{} {} {} {}{} frames={} {}",
                path.display(),
                ev.line_number,
                format_utc(ev.time),
                x.fingerprint,
                if x.dangerous { "DANGEROUS " } else { "" },
                chain,
                x.frame_count,
                x.message,
            )
        };
        if let Err(e) = r {
            self.error = Some(e);
        }
    }
}

/// Runs `parse` over `paths` (each read from its start, local time zone, built-in dangerous
/// list) and writes the report to `out`: one line (or, with `json`, one JSON object with keys
/// `file, line, time, class, causes, fingerprint, dangerous, frames`) per exception event,
/// then the summary (with `json`, one last object
/// `{"summary": {"events", "exceptions", "fingerprints", "dangerous"}}`).
/// `time` is UTC Unix seconds, `line` the event's first line (1-based), `frames` the number of
/// frame lines.
///
/// # Errors
/// [`ParseError`] naming the file that could not be opened or read, or the output error.
pub fn parse_files(
    paths: &[PathBuf],
    app_packages: &[String],
    json: bool,
    out: &mut dyn Write,
) -> Result<Summary, ParseError> {
    let analyzer = Analyzer::new(AnalyzerConfig {
        app_packages: app_packages.to_vec(),
        ..AnalyzerConfig::default()
    })?;
    let read_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut p = Printer {
        out,
        json,
        summary: Summary::default(),
        index: HashMap::new(),
        error: None,
    };
    for path in paths {
        let file = File::open(path).map_err(|source| ParseError::Open {
            path: path.clone(),
            source,
        })?;
        let mut asm = EventAssembler::new(&analyzer);
        let mut sink = |ev: Event<'_>| p.event(path, &ev);
        read_lines(file, MAX_LINE_BYTES, |line, end| {
            asm.push_line(&analyzer, line, end, read_at, &mut sink);
        })
        .map_err(|source| ParseError::Read {
            path: path.clone(),
            source,
        })?;
        asm.flush(&analyzer, &mut sink);
        if let Some(e) = p.error.take() {
            return Err(ParseError::Write(e));
        }
    }
    let s = &mut p.summary;
    s.fingerprints = s.per_fingerprint.len() as u64;
    let r = if json {
        let v = JsonSummary {
            summary: JsonTotals {
                events: s.events,
                exceptions: s.exceptions,
                fingerprints: s.fingerprints,
                dangerous: s.dangerous,
            },
        };
        serde_json::to_writer(&mut *p.out, &v)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(p.out))
    } else {
        write_human_summary(p.out, s)
    };
    r.map_err(ParseError::Write)?;
    Ok(p.summary)
}

fn write_human_summary(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    writeln!(
        out,
        "summary: {} events, {} exceptions, {} fingerprints, {} dangerous",
        s.events, s.exceptions, s.fingerprints, s.dangerous
    )?;
    for f in &s.per_fingerprint {
        let mut chain = f.class.clone();
        for c in &f.causes {
            chain.push_str(" <- ");
            chain.push_str(c);
        }
        writeln!(
            out,
            "  {} {:>6}x {}{} (first {}:{})",
            f.fingerprint,
            f.count,
            if f.dangerous { "DANGEROUS " } else { "" },
            chain,
            f.first_seen.0.display(),
            f.first_seen.1
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_lines_offsets_and_cap() {
        let data = b"ab\ncdefgh\n\nlast";
        let mut got = Vec::new();
        let n = read_lines(&data[..], 4, |l, e| got.push((l.to_vec(), e))).expect("reads");
        assert_eq!(n, data.len() as u64);
        assert_eq!(
            got,
            vec![
                (b"ab".to_vec(), 3),
                (b"cdef".to_vec(), 10),
                (b"".to_vec(), 11),
                (b"last".to_vec(), 15)
            ]
        );
    }
}
