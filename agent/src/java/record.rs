//! Which lines start a log record, and the record's level.

use super::analyzer::Analyzer;
use super::json;
use super::time::{self, Civil};

/// Severity of a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Level {
    /// `ERROR`, `FATAL`, `SEVERE` (and `CRITICAL`).
    Error,
    /// `WARN`, `WARNING`.
    Warn,
    /// `INFO` (and jul's `CONFIG`).
    Info,
    /// Anything else: `DEBUG`, `TRACE`, `FINE…`, or no level found.
    #[default]
    Other,
}

impl Level {
    /// The level named by `word` (case-insensitive), if it names one.
    pub fn from_word(word: &[u8]) -> Option<Level> {
        if word.len() < 4 || word.len() > 8 {
            // `ERR`/`WRN` style abbreviations are too ambiguous in free text.
            return None;
        }
        let mut up = [0u8; 8];
        for (d, s) in up.iter_mut().zip(word) {
            *d = s.to_ascii_uppercase();
        }
        Some(match &up[..word.len()] {
            b"ERROR" | b"FATAL" | b"SEVERE" | b"CRITICAL" => Level::Error,
            b"WARN" | b"WARNING" => Level::Warn,
            b"INFO" | b"CONFIG" => Level::Info,
            b"DEBUG" | b"TRACE" | b"FINE" | b"FINER" | b"FINEST" => Level::Other,
            _ => return None,
        })
    }
}

/// How a record's first line is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A text line; the level and message follow the timestamp.
    Text,
    /// A JSON object holding the whole record.
    Json,
    /// java.util.logging's first line (`Nov 23, 2026 6:44:43 PM class method`); its level is
    /// on the next line (`SEVERE: message`).
    JulHeader,
}

/// What the first line of a record says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordStart {
    pub civil: Option<Civil>,
    /// Seconds since midnight, for a time without a date.
    pub time_of_day: Option<u32>,
    pub level: Level,
    pub kind: Kind,
}

/// Reads the level from the first few tokens after the timestamp (`ERROR`, `[ERROR]`,
/// `<WARN>`, `level=warn` is not covered): at most 6 tokens within 100 bytes.
pub(crate) fn scan_level(rest: &[u8]) -> Level {
    let rest = &rest[..rest.len().min(100)];
    let mut tokens = 0;
    for tok in rest.split(|b| *b == b' ' || *b == b'\t') {
        if tok.is_empty() {
            continue;
        }
        let w = trim_punct(tok);
        if let Some(l) = Level::from_word(w) {
            return l;
        }
        tokens += 1;
        if tokens == 6 {
            break;
        }
    }
    Level::Other
}

fn trim_punct(mut w: &[u8]) -> &[u8] {
    while let [b'[' | b'<' | b'(' | b'|' | b'{', rest @ ..] = w {
        w = rest;
    }
    while let [rest @ .., b']' | b'>' | b')' | b'|' | b':' | b',' | b'}'] = w {
        w = rest;
    }
    w
}

/// jul's second line: `SEVERE: message`. Only java.util.logging's own level names count, so
/// that a message line such as `ERROR: duplicate key` inside a trace starts nothing.
pub(crate) fn jul_level_line(line: &[u8]) -> Option<Level> {
    let colon = memchr::memchr(b':', &line[..line.len().min(8)])?;
    if line.get(colon + 1) != Some(&b' ') && colon + 1 != line.len() {
        return None;
    }
    Some(match &line[..colon] {
        b"SEVERE" => Level::Error,
        b"WARNING" => Level::Warn,
        b"INFO" | b"CONFIG" => Level::Info,
        b"FINE" | b"FINER" | b"FINEST" => Level::Other,
        _ => return None,
    })
}

/// A JSON object line that is a log record: it names a time or level field (a JSON body
/// quoted on its own line inside a message does not, as a rule, and starts nothing).
fn is_json_record(line: &[u8]) -> bool {
    json::looks_like_json(line)
        && [
            &b"\"@timestamp\""[..],
            b"\"timestamp\"",
            b"\"time\"",
            b"\"level\"",
            b"\"log.level\"",
        ]
        .iter()
        .any(|k| memchr::memmem::find(line, k).is_some())
}

/// Does `line` start a record, and what does its first line say?
pub(crate) fn record_start(an: &Analyzer, line: &[u8]) -> Option<RecordStart> {
    if let Some(re) = &an.config.event_start {
        if !re.is_match(line) {
            return None;
        }
        // The override decides; read what else the line offers.
        return Some(builtin(line).unwrap_or(RecordStart {
            civil: None,
            time_of_day: None,
            level: scan_level(line),
            kind: Kind::Text,
        }));
    }
    builtin(line)
}

fn builtin(line: &[u8]) -> Option<RecordStart> {
    let first = *line.first()?;
    match first {
        b'0'..=b'9' | b'[' => {
            let parsed = time::parse_iso(line).or_else(|| time::parse_tomcat(line));
            if let Some((civil, n)) = parsed {
                return Some(RecordStart {
                    civil: Some(civil),
                    time_of_day: None,
                    level: scan_level(&line[n..]),
                    kind: Kind::Text,
                });
            }
            if let Some(tod) = time::time_of_day(line) {
                return Some(RecordStart {
                    civil: None,
                    time_of_day: Some(tod),
                    level: scan_level(&line[12..]),
                    kind: Kind::Text,
                });
            }
            None
        }
        b'{' if is_json_record(line) => Some(RecordStart {
            civil: None,
            time_of_day: None,
            level: Level::Other,
            kind: Kind::Json,
        }),
        b'A'..=b'Z' => {
            if let Some((civil, _)) = time::parse_jul(line) {
                return Some(RecordStart {
                    civil: Some(civil),
                    time_of_day: None,
                    level: Level::Other,
                    kind: Kind::JulHeader,
                });
            }
            // A jul level line on its own (a one-line SimpleFormatter format).
            jul_level_line(line).map(|level| RecordStart {
                civil: None,
                time_of_day: None,
                level,
                kind: Kind::Text,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::java::AnalyzerConfig;

    #[test]
    fn levels_in_common_layouts() {
        let cases: &[(&str, Level)] = &[
            (" INFO [main] a.B - x", Level::Info),
            (" ERROR [main] a.B - x", Level::Error),
            (
                "Z WARN  [http-nio-8080-exec-1] s.h.OrderService - x",
                Level::Warn,
            ),
            (" [main thread] ERROR a.B - x", Level::Error),
            (" SEVERE shop.host-a.OrderService - x", Level::Error),
            (" WARNING shop.OrderService - x", Level::Warn),
            (" [ERROR] x", Level::Error),
            (" | FATAL | x", Level::Error),
            (" DEBUG x", Level::Other),
            (" [main] c.x.Y - a b c d e f ERROR", Level::Other),
        ];
        for (s, l) in cases {
            assert_eq!(scan_level(s.as_bytes()), *l, "{s}");
        }
    }

    #[test]
    fn starts() {
        let an = Analyzer::new(AnalyzerConfig::default()).expect("analyzer");
        let yes = [
            "2026-11-23 18:44:43.568 INFO x",
            "2026-11-23T18:44:44.423Z INFO  [x] y",
            "[2026-11-23 18:44:43,568] INFO x",
            "18:44:43.568 [main] INFO x",
            "23-Nov-2026 18:44:43.568 SEVERE [main] x",
            "Nov 23, 2026 6:44:43 PM shop.OrderService tick",
            "{\"@timestamp\":\"2026-11-23T18:44:43Z\"}",
            "SEVERE: Failed",
            "WARNING: Slow",
        ];
        for s in yes {
            assert!(record_start(&an, s.as_bytes()).is_some(), "{s}");
        }
        let no = [
            "\tat a.B.c(B.java:1)",
            "Caused by: x.Y: z",
            "java.lang.IllegalStateException: boom",
            "\t... 4 more",
            "",
            "12345 not a time",
            "{ partial",
            "{\"error\":\"bad request\"}",
            "ERROR: duplicate key value violates unique constraint",
        ];
        for s in no {
            assert!(record_start(&an, s.as_bytes()).is_none(), "{s}");
        }
    }
}
