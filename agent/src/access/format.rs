//! Access-log formats, compiled once (when the configuration is read) into matchers: the
//! literal text between fields, and for each field what it is — a timestamp, the status, a
//! response time, or something to step over.
//!
//! Three ways to write a format (see [`AccessFormat::compile`]):
//! - an alias: `"common"`, `"combined"` (no response time) or `"jetty"` (either of those,
//!   optionally followed by the response time in milliseconds, as Jetty 9's
//!   `NCSARequestLog` writes with `logLatency`);
//! - a `%`-pattern of Tomcat's `AccessLogValve`, Jetty's `CustomRequestLog` or Apache httpd's
//!   `LogFormat`;
//! - an nginx `log_format` string with `$variables`.

use std::fmt;

use crate::java::time::Zone;
use crate::java::{Tz, time};

/// The unit a response time is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyUnit {
    /// Microseconds (`"us"`).
    Micros,
    /// Milliseconds (`"ms"`).
    Millis,
    /// Seconds (`"s"`), fractions allowed.
    Seconds,
}

impl LatencyUnit {
    /// Reads `"us"` (or `"µs"`), `"ms"` or `"s"`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "us" | "µs" => Some(Self::Micros),
            "ms" => Some(Self::Millis),
            "s" => Some(Self::Seconds),
            _ => None,
        }
    }

    /// Milliseconds in one of this unit.
    fn to_ms(self) -> f64 {
        match self {
            Self::Micros => 1e-3,
            Self::Millis => 1.0,
            Self::Seconds => 1e3,
        }
    }
}

/// How a timestamp field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeKind {
    /// `10/Oct/2000:13:55:36 -0700`, optionally in `[…]`, optionally with `.SSS` seconds.
    Clf,
    /// `2000-10-10T13:55:36-07:00` (`yyyy-MM-dd[ T]HH:mm:ss[.SSS][zone]`; without a zone,
    /// the host's local time).
    Iso,
    /// Unix seconds, optionally with a fraction (`$msec`, `%{sec}t`).
    EpochSeconds,
    /// Unix milliseconds (`%{msec}t`).
    EpochMillis,
}

/// What one field of a line is, once compiled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Field {
    /// Anything up to the literal text that follows it.
    Skip,
    /// The HTTP status; `used` for the one that counts (the first).
    Status { used: bool },
    /// A timestamp; `used` for the one that counts (the first).
    Time { kind: TimeKind, used: bool },
    /// A response time (`-` for none), `to_ms` milliseconds per unit written; `list` for
    /// nginx's `$upstream_*_time` (`0.012, 0.003 : 0.001`, summed); `used` for the one that
    /// counts.
    Latency { to_ms: f64, list: bool, used: bool },
}

/// A field and the literal text right after it.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) field: Field,
    /// Empty only after the last field (which then runs to the end of the line).
    pub(crate) after: Box<[u8]>,
}

/// One shape of line: a literal prefix, then fields each followed by a literal.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    pub(crate) prefix: Box<[u8]>,
    pub(crate) steps: Box<[Step]>,
}

/// A compiled access-log format: what [`AccessFormat::parse`](super::AccessFormat::parse)
/// reads lines with.
#[derive(Debug, Clone)]
pub struct AccessFormat {
    text: String,
    /// Tried in order; the first that matches reads the line.
    pub(crate) matchers: Vec<Matcher>,
    /// The zone of timestamps written without one.
    pub(crate) zone: Zone,
    has_time: bool,
    has_latency: bool,
}

/// Why a format string was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// Position (1-based, in characters) of the directive or variable at fault.
    pub at: Option<usize>,
    /// The directive or variable at fault, as written.
    pub near: Option<String>,
    pub reason: String,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.at, &self.near) {
            (Some(at), Some(near)) => write!(f, "at character {at} ({near}): {}", self.reason),
            (Some(at), None) => write!(f, "at character {at}: {}", self.reason),
            _ => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for FormatError {}

/// The aliases, as Tomcat's `AccessLogValve` defines them (nginx's `combined` is the same
/// shape).
const COMMON: &str = "%h %l %u %t \"%r\" %s %b";
const COMBINED: &str = "%h %l %u %t \"%r\" %s %b \"%{Referer}i\" \"%{User-Agent}i\"";

/// The rank of a response-time field: where a format has several, the highest counts
/// (the first of equals); 0 never counts.
const RANK_FULL: u8 = 4;
const RANK_UPSTREAM: u8 = 3;
const RANK_FIRST_BYTE: u8 = 2;
const RANK_WHOLE_SECONDS: u8 = 1;

/// A field as tokenized, before the choice of the fields that count.
#[derive(Debug, Clone)]
enum Kind {
    Skip,
    Status,
    Time(TimeKind),
    Latency { to_ms: f64, list: bool, rank: u8 },
}

#[derive(Debug, Clone)]
enum Token {
    Literal(Vec<u8>),
    Field { kind: Kind, at: usize, text: String },
}

impl AccessFormat {
    /// Compiles `format`:
    ///
    /// - `"common"`, `"combined"`: the NCSA formats (no response time);
    /// - `"jetty"`: `combined` or `common`, each optionally followed by the response time in
    ///   milliseconds (Jetty 9's `NCSARequestLog` with `logLatency`);
    /// - a `%`-pattern (Tomcat `AccessLogValve`, Jetty `CustomRequestLog`, Apache httpd):
    ///   `%t` (and `%{sec}t`, `%{msec}t`, `%{begin:…}t`, `%{end:…}t`, Jetty's
    ///   `%{dd/MMM/yyyy:HH:mm:ss ZZZ|GMT}t`, `yyyy-MM-dd HH:mm:ss[.SSS][Z]` patterns) for the
    ///   time, `%s` (`%>s`) for the status, `%D` (microseconds), `%{us|ms|ns|s|fracsec}T`,
    ///   `%T` (whole seconds) or `%F` (milliseconds to the first byte) for the response time;
    ///   every other directive (`%a %A %b %B %h %H %I %l %m %p %q %r %u %U %v %O %S %X %k %R
    ///   %f %{…}i %{…}o %{…}c %{…}r %{…}s %{…}C %{…}e %{…}L %{…}ti %{…}to`, `%%`) is read over;
    /// - an nginx `log_format` string: `$time_local`, `$time_iso8601` or `$msec` for the time,
    ///   `$status`, `$request_time` (seconds) or else `$upstream_response_time` for the
    ///   response time; every other variable (`$remote_addr`, `$request`, `$http_*`, …) is
    ///   read over.
    ///
    /// A string with `$name` variables is an nginx format, else one with `%` directives a
    /// `%`-pattern. Where a format has several response times, `%D`/`%{…}T`/`$request_time`
    /// count before `$upstream_response_time`, `%F` and `%T`. `latency_unit` replaces the
    /// unit of the response time that counts; by default `%D` is read as microseconds
    /// (Tomcat 10 and later, Jetty, Apache httpd — Tomcat 9 and older write milliseconds:
    /// set `latency_unit = "ms"`).
    ///
    /// # Errors
    /// [`FormatError`] saying where: an unknown directive, a `{` without `}`, two fields
    /// with nothing between them, no status field, `latency_unit` without a response time.
    pub fn compile(format: &str, latency_unit: Option<LatencyUnit>) -> Result<Self, FormatError> {
        let shapes: Vec<Vec<Token>> = match format {
            "common" => vec![percent_tokens(COMMON)?],
            "combined" => vec![percent_tokens(COMBINED)?],
            "jetty" => [
                format!("{COMBINED} %{{ms}}T"),
                COMBINED.to_owned(),
                format!("{COMMON} %{{ms}}T"),
                COMMON.to_owned(),
            ]
            .iter()
            .map(|shape| percent_tokens(shape))
            .collect::<Result<_, _>>()?,
            _ if has_nginx_variable(format) => vec![nginx_tokens(format)],
            _ if format.contains('%') => vec![percent_tokens(format)?],
            _ => {
                return Err(FormatError {
                    at: None,
                    near: None,
                    reason: format!(
                        "{format:?} is neither \"common\", \"combined\", \"jetty\", a Tomcat/Jetty \
                         %-pattern nor an nginx log_format with $variables"
                    ),
                });
            }
        };
        let mut matchers = Vec::with_capacity(shapes.len());
        let (mut has_time, mut has_latency, mut has_iso) = (false, false, false);
        for tokens in shapes {
            let built = build(tokens, latency_unit)?;
            has_time |= built.has_time;
            has_latency |= built.has_latency;
            has_iso |= built.has_iso;
            matchers.push(built.matcher);
        }
        if latency_unit.is_some() && !has_latency {
            return Err(FormatError {
                at: None,
                near: None,
                reason: "latency_unit is set but the format has no response time (%D, %T, %F, \
                         $request_time, $upstream_response_time)"
                    .into(),
            });
        }
        // Only a zone-less time needs the host's zone (nginx and CLF times carry theirs).
        let zone = if has_iso {
            Zone::resolve(&Tz::Local)
        } else {
            Zone::Fixed(0)
        };
        Ok(Self {
            text: format.to_owned(),
            matchers,
            zone,
            has_time,
            has_latency,
        })
    }

    /// The format as configured.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether lines carry their own time (else requests count in the minute they are read).
    pub fn has_time(&self) -> bool {
        self.has_time
    }

    /// Whether lines carry a response time.
    pub fn has_latency(&self) -> bool {
        self.has_latency
    }
}

/// Whether `text` holds an nginx variable (`$name` or `${name}`).
fn has_nginx_variable(text: &str) -> bool {
    let b = text.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        c == b'$'
            && b.get(i + 1)
                .is_some_and(|&n| n == b'{' || n == b'_' || n.is_ascii_alphabetic())
    })
}

fn push_char(literal: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    literal.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

fn flush(tokens: &mut Vec<Token>, literal: &mut Vec<u8>) {
    if !literal.is_empty() {
        tokens.push(Token::Literal(std::mem::take(literal)));
    }
}

/// Tokenizes an nginx `log_format` string.
fn nginx_tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut literal = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c != '$' {
            push_char(&mut literal, c);
            i += 1;
            continue;
        }
        let start = i;
        let is_name = |c: &char| c.is_ascii_alphanumeric() || *c == '_';
        let (name, end) = if chars.get(i + 1) == Some(&'{') {
            match chars[i + 2..].iter().position(|&c| c == '}') {
                Some(len) => (
                    chars[i + 2..i + 2 + len].iter().collect::<String>(),
                    i + 3 + len,
                ),
                None => (String::new(), i + 1),
            }
        } else {
            let len = chars[i + 1..].iter().take_while(|c| is_name(c)).count();
            (chars[i + 1..i + 1 + len].iter().collect(), i + 1 + len)
        };
        if name.is_empty() {
            // A `$` that starts no variable is text.
            literal.push(b'$');
            i += 1;
            continue;
        }
        let kind = match name.as_str() {
            "status" => Kind::Status,
            "time_local" => Kind::Time(TimeKind::Clf),
            "time_iso8601" => Kind::Time(TimeKind::Iso),
            "msec" => Kind::Time(TimeKind::EpochSeconds),
            "request_time" => Kind::Latency {
                to_ms: 1e3,
                list: false,
                rank: RANK_FULL,
            },
            "upstream_response_time" => Kind::Latency {
                to_ms: 1e3,
                list: true,
                rank: RANK_UPSTREAM,
            },
            // Lists with spaces in them: read as such, never counted.
            "upstream_connect_time" | "upstream_header_time" => Kind::Latency {
                to_ms: 1e3,
                list: true,
                rank: 0,
            },
            _ => Kind::Skip,
        };
        flush(&mut tokens, &mut literal);
        tokens.push(Token::Field {
            kind,
            at: start + 1,
            text: chars[start..end].iter().collect(),
        });
        i = end;
    }
    flush(&mut tokens, &mut literal);
    tokens
}

/// Tokenizes a `%`-pattern (Tomcat, Jetty, Apache httpd).
fn percent_tokens(text: &str) -> Result<Vec<Token>, FormatError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut literal = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c != '%' {
            push_char(&mut literal, c);
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        if chars.get(i) == Some(&'%') {
            literal.push(b'%');
            i += 1;
            continue;
        }
        let near = |end: usize| {
            chars[start..end.min(chars.len())]
                .iter()
                .collect::<String>()
        };
        let error = |end: usize, reason: String| FormatError {
            at: Some(start + 1),
            near: Some(near(end)),
            reason,
        };
        // Apache/Jetty status modifiers (`%!200,304{…}i`) and Apache's `%>s` / `%<s`.
        if chars.get(i) == Some(&'!') {
            i += 1;
        }
        while chars
            .get(i)
            .is_some_and(|c| c.is_ascii_digit() || *c == ',')
        {
            i += 1;
        }
        if matches!(chars.get(i), Some('<' | '>')) {
            i += 1;
        }
        let arg = if chars.get(i) == Some(&'{') {
            let Some(len) = chars[i + 1..].iter().position(|&c| c == '}') else {
                return Err(error(i + 1, "`{` without its `}`".into()));
            };
            let arg: String = chars[i + 1..i + 1 + len].iter().collect();
            i += len + 2;
            Some(arg)
        } else {
            None
        };
        let Some(&code) = chars.get(i) else {
            return Err(error(i, "a `%` directive without its letter".into()));
        };
        i += 1;
        let kind = match (code, arg.as_deref()) {
            ('s', None) => Kind::Status,
            ('t', None) => Kind::Time(TimeKind::Clf),
            ('t', Some(arg)) => match time_arg(arg) {
                Some(kind) => kind,
                // Jetty's request and response trailers: `%{name}ti`, `%{name}to`.
                None if matches!(chars.get(i), Some('i' | 'o')) => {
                    i += 1;
                    Kind::Skip
                }
                None => {
                    return Err(error(
                        i,
                        format!(
                            "date format {arg:?} is not understood: use %t, %{{sec}}t, \
                             %{{msec}}t, %{{dd/MMM/yyyy:HH:mm:ss Z}}t or a \
                             yyyy-MM-dd HH:mm:ss[.SSS][Z] pattern"
                        ),
                    ));
                }
            },
            ('D', None) => Kind::Latency {
                to_ms: LatencyUnit::Micros.to_ms(),
                list: false,
                rank: RANK_FULL,
            },
            ('T', arg) => {
                let (to_ms, rank) = match arg {
                    None | Some("s") => (1e3, RANK_WHOLE_SECONDS),
                    Some("fracsec") => (1e3, RANK_FULL),
                    Some("ms") => (1.0, RANK_FULL),
                    Some("us") => (1e-3, RANK_FULL),
                    Some("ns") => (1e-6, RANK_FULL),
                    Some(other) => {
                        return Err(error(
                            i,
                            format!(
                                "unit {other:?} is not one of \"s\", \"fracsec\", \"ms\", \"us\", \"ns\""
                            ),
                        ));
                    }
                };
                Kind::Latency {
                    to_ms,
                    list: false,
                    rank,
                }
            }
            ('F', None) => Kind::Latency {
                to_ms: 1.0,
                list: false,
                rank: RANK_FIRST_BYTE,
            },
            (
                'a' | 'A' | 'b' | 'B' | 'c' | 'C' | 'e' | 'f' | 'h' | 'H' | 'i' | 'I' | 'k' | 'l'
                | 'L' | 'm' | 'o' | 'O' | 'p' | 'q' | 'r' | 'R' | 's' | 'S' | 'u' | 'U' | 'v' | 'X',
                _,
            ) => Kind::Skip,
            _ => {
                return Err(error(
                    i,
                    "unknown directive (see the access_logs formats in the README)".into(),
                ));
            }
        };
        flush(&mut tokens, &mut literal);
        tokens.push(Token::Field {
            kind,
            at: start + 1,
            text: near(i),
        });
    }
    flush(&mut tokens, &mut literal);
    Ok(tokens)
}

/// The kind of a `%{arg}t` time, if understood.
fn time_arg(arg: &str) -> Option<Kind> {
    let arg = arg
        .strip_prefix("begin:")
        .or_else(|| arg.strip_prefix("end:"))
        .unwrap_or(arg);
    // Jetty: `format|timeZone|locale`.
    let pattern = arg.split('|').next().unwrap_or(arg);
    let kind = match pattern {
        "" | "begin" | "end" => TimeKind::Clf,
        "sec" => TimeKind::EpochSeconds,
        "msec" => TimeKind::EpochMillis,
        // Fractions of the second alone: digits to read over.
        "msec_frac" | "usec_frac" => return Some(Kind::Skip),
        _ if is_clf_pattern(pattern) => TimeKind::Clf,
        _ if is_iso_pattern(pattern) => TimeKind::Iso,
        _ => return None,
    };
    Some(Kind::Time(kind))
}

/// `dd/MMM/yyyy:HH:mm:ss[.SSS] Z` in SimpleDateFormat or java.time letters.
fn is_clf_pattern(p: &str) -> bool {
    let Some(rest) = p.strip_prefix("dd/MMM/yyyy:HH:mm:ss") else {
        return false;
    };
    let rest = rest.strip_prefix(".SSS").unwrap_or(rest);
    matches!(
        rest,
        " Z" | " ZZ" | " ZZZ" | " xx" | " XX" | " xxxx" | " XXXX"
    )
}

/// `yyyy-MM-dd HH:mm:ss` or `yyyy-MM-dd'T'HH:mm:ss`, then optionally `.S…`/`,S…` and a zone.
fn is_iso_pattern(p: &str) -> bool {
    let Some(rest) = p.strip_prefix("yyyy-MM-dd") else {
        return false;
    };
    let Some(rest) = rest
        .strip_prefix(" HH:mm:ss")
        .or_else(|| rest.strip_prefix("'T'HH:mm:ss"))
    else {
        return false;
    };
    let rest = match rest.strip_prefix(['.', ',']) {
        Some(fraction) => fraction.trim_start_matches('S'),
        None => rest,
    };
    matches!(
        rest,
        "" | "Z" | "ZZ" | "ZZZ" | "X" | "XX" | "XXX" | "xx" | "xxx" | "'Z'"
    )
}

struct Built {
    matcher: Matcher,
    has_time: bool,
    has_latency: bool,
    has_iso: bool,
}

/// Chooses the fields that count and lays the tokens out as a [`Matcher`].
fn build(tokens: Vec<Token>, latency_unit: Option<LatencyUnit>) -> Result<Built, FormatError> {
    let mut prefix = Vec::new();
    let mut steps: Vec<Step> = Vec::new();
    let mut previous: Option<String> = None;
    let (mut status, mut time, mut has_iso) = (false, false, false);
    // The response time that counts: (index in steps, rank).
    let mut latency: Option<(usize, u8)> = None;
    for token in tokens {
        match token {
            Token::Literal(text) => match steps.last_mut() {
                Some(step) => step.after = text.into_boxed_slice(),
                None => prefix = text,
            },
            Token::Field { kind, at, text } => {
                if let (Some(before), Some(step)) = (&previous, steps.last())
                    && step.after.is_empty()
                {
                    return Err(FormatError {
                        at: Some(at),
                        near: Some(text),
                        reason: format!(
                            "follows {before} with nothing between them: where one ends and \
                             the other starts cannot be told"
                        ),
                    });
                }
                let field = match kind {
                    Kind::Skip => Field::Skip,
                    Kind::Status => {
                        let used = !status;
                        status = true;
                        Field::Status { used }
                    }
                    Kind::Time(kind) => {
                        let used = !time;
                        time = true;
                        has_iso |= kind == TimeKind::Iso;
                        Field::Time { kind, used }
                    }
                    Kind::Latency { to_ms, list, rank } => {
                        if rank > latency.map_or(0, |(_, best)| best) {
                            latency = Some((steps.len(), rank));
                        }
                        Field::Latency {
                            to_ms,
                            list,
                            used: false,
                        }
                    }
                };
                steps.push(Step {
                    field,
                    after: Box::default(),
                });
                previous = Some(text);
            }
        }
    }
    if !status {
        return Err(FormatError {
            at: None,
            near: None,
            reason: "the format has no status field (%s in Tomcat and Jetty patterns, $status \
                     in nginx formats): requests cannot be counted by status"
                .into(),
        });
    }
    if let Some((index, _)) = latency
        && let Some(Step {
            field: Field::Latency { to_ms, used, .. },
            ..
        }) = steps.get_mut(index)
    {
        *used = true;
        if let Some(unit) = latency_unit {
            *to_ms = unit.to_ms();
        }
    }
    Ok(Built {
        matcher: Matcher {
            prefix: prefix.into_boxed_slice(),
            steps: steps.into_boxed_slice(),
        },
        has_time: time,
        has_latency: latency.is_some(),
        has_iso,
    })
}

/// Unix seconds of a CLF time `dd/MMM/yyyy:HH:mm:ss[.SSS] ±hhmm` at the start of `b`,
/// optionally in `[…]`, and the bytes it takes.
pub(crate) fn parse_clf(b: &[u8]) -> Option<(i64, usize)> {
    let o = usize::from(b.first() == Some(&b'['));
    let d = b.get(o..o + 20)?;
    if d[2] != b'/' || d[6] != b'/' || d[11] != b':' || d[14] != b':' || d[17] != b':' {
        return None;
    }
    let day = num(d, 0, 2)?;
    let month = month(d[3], d[4], d[5])?;
    let year = num(d, 7, 4)?;
    let (hour, minute, second) = (num(d, 12, 2)?, num(d, 15, 2)?, num(d, 18, 2)?);
    if !time::valid(year, month, day, hour, minute, second) {
        return None;
    }
    let mut i = o + 20;
    if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    if b.get(i) != Some(&b' ') {
        return None;
    }
    let (offset, n) = time::parse_offset(b.get(i + 1..)?)?;
    i += 1 + n;
    if o == 1 {
        if b.get(i) != Some(&b']') {
            return None;
        }
        i += 1;
    }
    // In range of the conversions: `valid` bounds every field.
    let days = time::days_from_civil(year as i32, month as u8, day as u8);
    let t = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
        - i64::from(offset);
    Some((t, i))
}

/// The month (1 to 12) of an English three-letter abbreviation.
#[inline]
fn month(a: u8, b: u8, c: u8) -> Option<u32> {
    Some(match [a, b, c] {
        [b'J', b'a', b'n'] => 1,
        [b'F', b'e', b'b'] => 2,
        [b'M', b'a', b'r'] => 3,
        [b'A', b'p', b'r'] => 4,
        [b'M', b'a', b'y'] => 5,
        [b'J', b'u', b'n'] => 6,
        [b'J', b'u', b'l'] => 7,
        [b'A', b'u', b'g'] => 8,
        [b'S', b'e', b'p'] => 9,
        [b'O', b'c', b't'] => 10,
        [b'N', b'o', b'v'] => 11,
        [b'D', b'e', b'c'] => 12,
        _ => return None,
    })
}

/// The `len`-digit number at `b[i..]`.
fn num(b: &[u8], i: usize, len: usize) -> Option<u32> {
    let digits = b.get(i..i + len)?;
    digits.iter().try_fold(0u32, |v, &c| {
        c.is_ascii_digit().then(|| v * 10 + u32::from(c - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(format: &str) -> String {
        AccessFormat::compile(format, None)
            .expect_err("must be refused")
            .to_string()
    }

    fn used_latency(format: &AccessFormat) -> Vec<f64> {
        format
            .matchers
            .iter()
            .flat_map(|m| m.steps.iter())
            .filter_map(|s| match s.field {
                Field::Latency {
                    to_ms, used: true, ..
                } => Some(to_ms),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn aliases_compile_to_their_shapes() {
        for (alias, shapes, latency) in [
            ("common", 1, false),
            ("combined", 1, false),
            ("jetty", 4, true),
        ] {
            let f = AccessFormat::compile(alias, None).expect(alias);
            assert_eq!(f.matchers.len(), shapes, "{alias}");
            assert!(f.has_time(), "{alias}");
            assert_eq!(f.has_latency(), latency, "{alias}");
            assert_eq!(f.text(), alias);
        }
    }

    #[test]
    fn the_response_time_that_counts_and_its_unit() {
        let tomcat = AccessFormat::compile("%h %t \"%r\" %s %b %D", None).expect("tomcat");
        assert_eq!(
            used_latency(&tomcat),
            [1e-3],
            "%D is microseconds by default"
        );
        let tomcat9 = AccessFormat::compile("%h %t \"%r\" %s %b %D", Some(LatencyUnit::Millis))
            .expect("tomcat 9");
        assert_eq!(used_latency(&tomcat9), [1.0]);
        let both = AccessFormat::compile("%t %s %T %D", None).expect("both");
        assert_eq!(
            used_latency(&both),
            [1e-3],
            "%D counts before whole seconds"
        );
        let first_byte = AccessFormat::compile("%t %s %T %F", None).expect("F");
        assert_eq!(used_latency(&first_byte), [1.0]);
        let fractional = AccessFormat::compile("%t %s %{fracsec}T", None).expect("fracsec");
        assert_eq!(used_latency(&fractional), [1e3]);
        let nginx = AccessFormat::compile(
            "$time_local $status $upstream_response_time $request_time",
            None,
        )
        .expect("nginx");
        assert_eq!(used_latency(&nginx).len(), 1);
        let Field::Latency { list, .. } = nginx.matchers[0].steps[3].field else {
            panic!("request_time is a latency field");
        };
        assert!(!list, "$request_time counts before $upstream_response_time");
    }

    #[test]
    fn bad_formats_say_where() {
        assert_eq!(
            error("%h %t \"%r\" %s %Z"),
            "at character 15 (%Z): unknown directive (see the access_logs formats in the README)"
        );
        assert_eq!(
            error("%h %{Referer i"),
            "at character 4 (%{): `{` without its `}`"
        );
        assert_eq!(
            error("%h %t %s%b"),
            "at character 9 (%b): follows %s with nothing between them: where one ends and the \
             other starts cannot be told"
        );
        assert!(error("%h %t %b").contains("no status field"));
        assert!(error("$remote_addr [$time_local] $body_bytes_sent").contains("no status field"));
        assert!(error("%t %s %{fortnights}T").contains("unit \"fortnights\""));
        assert!(error("%{EEE MMM d}t %s").contains("date format \"EEE MMM d\""));
        assert!(error("plain text").contains("neither"));
        assert!(error("%t %s %").contains("without its letter"));
        assert!(
            AccessFormat::compile("combined", Some(LatencyUnit::Millis))
                .expect_err("no latency")
                .to_string()
                .contains("latency_unit is set but the format has no response time")
        );
    }

    #[test]
    fn time_patterns() {
        for (arg, kind) in [
            ("", TimeKind::Clf),
            ("begin", TimeKind::Clf),
            ("end:sec", TimeKind::EpochSeconds),
            ("begin:msec", TimeKind::EpochMillis),
            ("dd/MMM/yyyy:HH:mm:ss ZZZ|GMT", TimeKind::Clf),
            ("yyyy-MM-dd HH:mm:ss.SSS", TimeKind::Iso),
            ("yyyy-MM-dd'T'HH:mm:ssXXX", TimeKind::Iso),
        ] {
            match time_arg(arg) {
                Some(Kind::Time(k)) => assert_eq!(k, kind, "{arg:?}"),
                other => panic!("{arg:?}: {other:?}"),
            }
        }
        assert!(matches!(time_arg("msec_frac"), Some(Kind::Skip)));
        assert!(time_arg("HH:mm").is_none());
    }

    #[test]
    fn clf_times_with_offsets() {
        // 2000-10-10T20:55:36Z, written in three zones.
        let t = 971_211_336;
        assert_eq!(parse_clf(b"10/Oct/2000:13:55:36 -0700] x"), Some((t, 26)));
        assert_eq!(parse_clf(b"[10/Oct/2000:20:55:36 +0000]"), Some((t, 28)));
        assert_eq!(
            parse_clf(b"[11/Oct/2000:02:25:36 +0530]"),
            Some((t, 28)),
            "half-hour zones"
        );
        assert_eq!(
            parse_clf(b"[10/Oct/2000:20:55:36.123 +0000]"),
            Some((t, 32))
        );
        assert_eq!(parse_clf(b"[10/Oct/2000:20:55:36 +0000"), None, "unclosed");
        assert_eq!(parse_clf(b"10/Foo/2000:20:55:36 +0000"), None);
        assert_eq!(parse_clf(b"32/Oct/2000:20:55:36 +0000"), None);
        assert_eq!(parse_clf(b"10/Oct/2000:24:55:36 +0000"), None);
        assert_eq!(parse_clf(b"10/Oct/2000:20:55:36"), None, "no zone");
        assert_eq!(parse_clf(b"10/Oct/2000"), None);
    }
}
