//! Reading one access-log line with a compiled [`AccessFormat`]: a hand-written scanner over
//! the bytes (no regex, no allocation). Literals are found with `memchr`; a field that is
//! read over ends at the first occurrence of the literal after it — inside `"…"` the first
//! one not escaped by a backslash — and when what follows does not match, at the next one
//! (a bounded number of times per line, so that a value holding its own separator, such as
//! a user name with a space, is still read).

use crate::java::time::{self, Zone};

use super::format::{AccessFormat, Field, Step, TimeKind, parse_clf};

/// How many other ends the read-over fields of one line may try in all before the line is
/// given up as not matching: bounds the work on a hostile line.
const RETRIES: u32 = 64;

/// What an access-log line says about one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// Unix seconds of the line's own timestamp; `None` when the format has none.
    pub time: Option<i64>,
    /// The HTTP status, 100 to 599.
    pub status: u16,
    /// The response time in milliseconds; `None` when the format has none or the line says
    /// `-`.
    pub latency_ms: Option<f64>,
}

/// Why a line was not read as a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The line does not have the format's shape (or a field holds what it cannot: a date
    /// that is no date, a response time that is no number).
    NoMatch,
    /// The line has the shape, but its status is outside 100..=599.
    Status(u32),
}

impl AccessFormat {
    /// Reads one line (without its line end).
    ///
    /// # Errors
    /// [`Malformed`] when the line is not a request in this format.
    pub fn parse(&self, line: &[u8]) -> Result<Request, Malformed> {
        let mut worst = Malformed::NoMatch;
        for matcher in &self.matchers {
            if !has_at(line, 0, &matcher.prefix) {
                continue;
            }
            let mut scan = Scan {
                line,
                zone: &self.zone,
                retries: RETRIES,
                time: None,
                status: None,
                latency: None,
            };
            if !scan.steps(&matcher.steps, matcher.prefix.len()) {
                continue;
            }
            match scan.status {
                Some(status @ 100..=599) => {
                    return Ok(Request {
                        time: scan.time,
                        // In range: 100..=599.
                        status: status as u16,
                        latency_ms: scan.latency,
                    });
                }
                other => worst = Malformed::Status(other.unwrap_or(0)),
            }
        }
        Err(worst)
    }
}

/// The state of reading one line with one matcher.
struct Scan<'a> {
    line: &'a [u8],
    zone: &'a Zone,
    retries: u32,
    time: Option<i64>,
    status: Option<u32>,
    latency: Option<f64>,
}

impl Scan<'_> {
    /// Whether `steps` match the line from `pos` to its end (trailing blanks allowed).
    fn steps(&mut self, steps: &[Step], pos: usize) -> bool {
        let Some((step, rest)) = steps.split_first() else {
            return self
                .line
                .get(pos..)
                .is_some_and(|t| t.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')));
        };
        if step.field == Field::Skip {
            if step.after.is_empty() {
                // The last field: the rest of the line.
                return rest.is_empty();
            }
            let mut from = pos;
            while let Some(at) = find(self.line, pos, from, &step.after) {
                if self.steps(rest, at + step.after.len()) {
                    return true;
                }
                if self.retries == 0 {
                    return false;
                }
                self.retries -= 1;
                from = at + 1;
            }
            return false;
        }
        let Some(len) = self.typed(step.field, pos) else {
            return false;
        };
        let end = pos + len;
        if !has_at(self.line, end, &step.after) {
            return false;
        }
        self.steps(rest, end + step.after.len())
    }

    /// Reads a typed field at `pos`; returns its length.
    fn typed(&mut self, field: Field, pos: usize) -> Option<usize> {
        let b = self.line.get(pos..)?;
        match field {
            Field::Skip => None,
            Field::Status { used } => {
                let len = b.iter().take(7).take_while(|c| c.is_ascii_digit()).count();
                if len == 0 || len > 6 {
                    return None;
                }
                if used {
                    self.status = Some(
                        b[..len]
                            .iter()
                            .fold(0, |v, &c| v * 10 + u32::from(c - b'0')),
                    );
                }
                Some(len)
            }
            Field::Time { kind, used } => {
                let (t, len) = match kind {
                    TimeKind::Clf => parse_clf(b)?,
                    TimeKind::Iso => {
                        let (civil, len) = time::parse_iso(b)?;
                        let offset = match (civil.offset, self.zone) {
                            (Some(offset), _) => offset,
                            (None, Zone::Fixed(offset)) => *offset,
                            (None, Zone::Named(tz)) => time::local_offset(tz, &civil).unwrap_or(0),
                        };
                        (civil.naive_seconds() - i64::from(offset), len)
                    }
                    TimeKind::EpochSeconds => {
                        let (whole, len) = decimal_whole(b)?;
                        (whole, len)
                    }
                    TimeKind::EpochMillis => {
                        let (ms, len) = decimal_whole(b)?;
                        (ms.div_euclid(1000), len)
                    }
                };
                if used {
                    self.time = Some(t);
                }
                Some(len)
            }
            Field::Latency { to_ms, list, used } => {
                let (value, len) = if list {
                    number_list(b)?
                } else if b.first() == Some(&b'-') {
                    (None, 1)
                } else {
                    let (v, len) = number(b)?;
                    (Some(v), len)
                };
                if used {
                    self.latency = value.map(|v| v * to_ms);
                }
                Some(len)
            }
        }
    }
}

/// The first occurrence at or after `from` of `literal` (not empty) in `line`. When the
/// literal starts with `"`, a quote escaped by a backslash in the field that began at
/// `field_start` does not count.
fn find(line: &[u8], field_start: usize, from: usize, literal: &[u8]) -> Option<usize> {
    let first = *literal.first()?;
    let mut i = from;
    loop {
        let at = i + memchr::memchr(first, line.get(i..)?)?;
        if has_at(line, at, literal) && !(first == b'"' && escaped(line, field_start, at)) {
            return Some(at);
        }
        i = at + 1;
    }
}

/// Whether `line` holds `literal` at `at`. Literals are a few bytes: a plain loop is much
/// cheaper than a call to `memcmp` for each.
#[inline]
fn has_at(line: &[u8], at: usize, literal: &[u8]) -> bool {
    match line.get(at..at.saturating_add(literal.len())) {
        Some(here) => here.iter().zip(literal).all(|(a, b)| a == b),
        None => false,
    }
}

/// Whether the byte at `at` follows an odd number of backslashes (after `start`).
fn escaped(line: &[u8], start: usize, at: usize) -> bool {
    let before = line.get(start..at).unwrap_or_default();
    before.iter().rev().take_while(|&&c| c == b'\\').count() % 2 == 1
}

/// Powers of ten exactly representable as `f64`.
const POW10: [f64; 19] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18,
];

/// A decimal number `digits[.digits]` at the start of `b`: its value and length. At most 18
/// significant digits are kept (further fraction digits are read over).
fn number(b: &[u8]) -> Option<(f64, usize)> {
    let mut mantissa: u64 = 0;
    let mut digits = 0usize;
    let mut i = 0;
    while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
        if digits == 18 {
            return None;
        }
        mantissa = mantissa * 10 + u64::from(c - b'0');
        digits += 1;
        i += 1;
    }
    if i == 0 {
        return None;
    }
    let mut fraction = 0usize;
    if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            if digits < 18 {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                digits += 1;
                fraction += 1;
            }
            i += 1;
        }
    }
    let scale = POW10.get(fraction).copied().unwrap_or(1e18);
    Some((mantissa as f64 / scale, i))
}

/// The whole part of `digits[.digits]` at the start of `b`, and the length of it all.
fn decimal_whole(b: &[u8]) -> Option<(i64, usize)> {
    let whole = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if whole == 0 || whole > 18 {
        return None;
    }
    let value = b[..whole]
        .iter()
        .fold(0i64, |v, &c| v * 10 + i64::from(c - b'0'));
    let mut len = whole;
    if b.get(len) == Some(&b'.') && b.get(len + 1).is_some_and(u8::is_ascii_digit) {
        len += 1 + b[len + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
    }
    Some((value, len))
}

/// nginx's `$upstream_*_time`: times or `-`, separated by `, ` (servers tried in turn) or
/// ` : ` (internal redirects). The sum of the times (`None` when all are `-`) and the length.
fn number_list(b: &[u8]) -> Option<(Option<f64>, usize)> {
    let mut sum: Option<f64> = None;
    let mut i = 0;
    loop {
        let rest = b.get(i..)?;
        if rest.first() == Some(&b'-') {
            i += 1;
        } else {
            let (v, len) = number(rest)?;
            sum = Some(sum.unwrap_or(0.0) + v);
            i += len;
        }
        let next = b.get(i..).unwrap_or_default();
        let sep = if next.starts_with(b", ") {
            2
        } else if next.starts_with(b" : ") {
            3
        } else {
            return Some((sum, i));
        };
        // Only a separator followed by another entry belongs to the list.
        match next.get(sep) {
            Some(c) if c.is_ascii_digit() || *c == b'-' => i += sep,
            _ => return Some((sum, i)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::LatencyUnit;

    fn format(text: &str) -> AccessFormat {
        AccessFormat::compile(text, None).expect(text)
    }

    const T: i64 = 971_211_336; // 2000-10-10T20:55:36Z

    fn ok(status: u16, latency_ms: Option<f64>) -> Result<Request, Malformed> {
        Ok(Request {
            time: Some(T),
            status,
            latency_ms,
        })
    }

    fn close(result: Result<Request, Malformed>, status: u16, ms: f64) {
        let r = result.expect("a request");
        assert_eq!(r.status, status);
        assert_eq!(r.time, Some(T));
        let got = r.latency_ms.expect("a latency");
        assert!(
            (got - ms).abs() < 1e-9 * ms.max(1.0),
            "{got} ms, expected {ms}"
        );
    }

    #[test]
    fn common_and_combined() {
        let common = format("common");
        assert_eq!(
            common.parse(b"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif HTTP/1.0\" 200 2326"),
            ok(200, None)
        );
        let combined = format("combined");
        let line = b"127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] \"GET /a?b=c HTTP/1.1\" 404 - \"http://example.com/start.html\" \"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101\"";
        assert_eq!(combined.parse(line), ok(404, None));
        assert_eq!(
            combined.parse(
                b"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.0\" 200 2326"
            ),
            Err(Malformed::NoMatch),
            "a common line is not combined"
        );
    }

    #[test]
    fn jetty_with_and_without_latency() {
        let jetty = format("jetty");
        let base = "10.0.0.7 - - [10/Oct/2000:20:55:36 +0000] \"GET /x HTTP/1.1\" 200 17";
        let full = format!("{base} \"-\" \"curl/8.0\"");
        assert_eq!(jetty.parse(base.as_bytes()), ok(200, None));
        assert_eq!(jetty.parse(full.as_bytes()), ok(200, None));
        close(jetty.parse(format!("{full} 231").as_bytes()), 200, 231.0);
        close(jetty.parse(format!("{base} 12").as_bytes()), 200, 12.0);
        // Jetty 10+'s NCSA_FORMAT, written as its %-pattern.
        let ncsa = format("%{client}a - %u %t \"%r\" %s %O \"%{Referer}i\" \"%{User-Agent}i\"");
        assert_eq!(ncsa.parse(full.as_bytes()), ok(200, None));
        let custom = format("%{client}a - %u %{dd/MMM/yyyy:HH:mm:ss ZZZ|GMT}t \"%r\" %s %O %{ms}T");
        close(custom.parse(format!("{base} 5").as_bytes()), 200, 5.0);
    }

    #[test]
    fn tomcat_patterns_and_units() {
        let line = b"192.168.1.5 - - [10/Oct/2000:22:55:36 +0200] \"POST /api/orders HTTP/1.1\" 500 1234 123456";
        close(
            format("%h %l %u %t \"%r\" %s %b %D").parse(line),
            500,
            123.456,
        );
        let ms = AccessFormat::compile("%h %l %u %t \"%r\" %s %b %D", Some(LatencyUnit::Millis))
            .expect("ms");
        close(ms.parse(line), 500, 123_456.0);
        let t = b"192.168.1.5 - - [10/Oct/2000:22:55:36 +0200] \"GET / HTTP/1.1\" 200 - 0 3";
        close(format("%h %l %u %t \"%r\" %s %b %T %F").parse(t), 200, 3.0);
        close(format("%h %l %u %t \"%r\" %s %b %F %T").parse(t), 200, 0.0);
        let all = format(
            "%a %A %b %B %h %H %l %m %p %q %r %s %t %u %U %v %D %T %F %I %{X-Id}i %{Server}o \
             %{JSESSIONID}c %{attr}r %{attr}s %{remote}p %S %X",
        );
        let line = b"10.0.0.1 10.0.0.2 5 5 10.0.0.1 HTTP/1.1 - GET 8080 ?q=1 GET /x?q=1 HTTP/1.1 \
            201 [10/Oct/2000:20:55:36 +0000] bob /x shop.example 2500 0 1 http-nio-8080-exec-7 \
            abc-1 Tomcat ABCDEF - - 51234 - +";
        close(all.parse(line), 201, 2.5);
        let sec = format("%{sec}t %s %{ms}T");
        close(sec.parse(b"971211336 200 7"), 200, 7.0);
        let msec = format("%{begin:msec}t %s %{us}T");
        close(msec.parse(b"971211336999 200 7000"), 200, 7.0);
        let apache = format("%h %l %u %t \"%r\" %>s %O %{us}T");
        close(
            apache.parse(b"::1 - - [10/Oct/2000:20:55:36 +0000] \"GET / HTTP/1.1\" 302 0 1500"),
            302,
            1.5,
        );
    }

    #[test]
    fn nginx_formats() {
        let timed = format(
            "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \
             \"$http_referer\" \"$http_user_agent\" $request_time",
        );
        close(
            timed.parse(b"10.1.2.3 - - [10/Oct/2000:20:55:36 +0000] \"GET /ok HTTP/1.1\" 200 3 \"-\" \"curl/7.88.1\" 0.123"),
            200,
            123.0,
        );
        let upstream = format(
            "$msec $time_iso8601 $status \"$request\" urt=\"$upstream_response_time\" uct=$upstream_connect_time",
        );
        let line = b"971211336.123 2000-10-10T22:55:36+02:00 502 \"GET /slow HTTP/1.1\" urt=\"0.012, 0.003 : 0.100\" uct=0.001, 0.000";
        close(upstream.parse(line), 502, 115.0);
        let none =
            b"971211336.123 2000-10-10T22:55:36+02:00 404 \"GET / HTTP/1.1\" urt=\"-\" uct=-";
        assert_eq!(upstream.parse(none), ok(404, None));
        let partly = b"971211336.123 2000-10-10T22:55:36+02:00 504 \"GET / HTTP/1.1\" urt=\"-, 0.250\" uct=-";
        close(upstream.parse(partly), 504, 250.0);
        let iso = format("${time_iso8601}|$status|$request_time");
        close(iso.parse(b"2000-10-10T20:55:36Z|200|1.5"), 200, 1500.0);
        assert_eq!(
            format("$remote_addr [$time_local] \"$request\" $status $request_time")
                .parse(b"1.2.3.4 [10/Oct/2000:20:55:36 +0000] \"GET / HTTP/1.1\" 499 -"),
            ok(499, None),
            "`-` is no latency, not a malformed line"
        );
    }

    #[test]
    fn quoted_fields_with_escapes_and_spaces() {
        let combined = format("combined");
        // Tomcat escapes `"` and `\` in header values; a quote inside stays in the field.
        let line = br#"1.2.3.4 - - [10/Oct/2000:20:55:36 +0000] "GET /q?x=\"a b\" HTTP/1.1" 200 5 "-" "Agent \"quoted\" \\ and\" more""#;
        assert_eq!(combined.parse(line), ok(200, None));
        let user_with_space = b"1.2.3.4 - John Smith [10/Oct/2000:20:55:36 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"x\"";
        assert_eq!(combined.parse(user_with_space), ok(200, None));
        // JSON logs (nginx escape=json): `\"` inside values.
        let json = format(
            r#"{"t":"$time_iso8601","ua":"$http_user_agent","s":$status,"rt":$request_time}"#,
        );
        close(
            json.parse(
                br#"{"t":"2000-10-10T20:55:36+00:00","ua":"say \"hi\", ok","s":201,"rt":0.004}"#,
            ),
            201,
            4.0,
        );
    }

    #[test]
    fn malformed_lines() {
        let f = format(
            "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \
             \"$http_referer\" \"$http_user_agent\" $request_time",
        );
        let good = b"10.1.2.3 - - [10/Oct/2000:20:55:36 +0000] \"GET /ok HTTP/1.1\" 200 3 \"-\" \"curl\" 0.123";
        assert!(f.parse(good).is_ok());
        for bad in [
            &b""[..],
            b"garbage",
            b"\x00\xff\xfe\x01\x02 [ ] \" \"",
            &good[..good.len() - 12],
            &good[..30],
            b"10.1.2.3 - - [10/Oct/2000:20:55:36 +0000] \"GET /ok HTTP/1.1\" 200 3 \"-\" \"curl\" fast",
            b"10.1.2.3 - - [31/Feb/2000:99:55:36 +0000] \"GET /ok HTTP/1.1\" 200 3 \"-\" \"curl\" 0.1",
            b"10.1.2.3 - - [10/Oct/2000:20:55:36] \"GET /ok HTTP/1.1\" 200 3 \"-\" \"curl\" 0.1",
            b"10.1.2.3 - - [10/Oct/2000:20:55:36 +0000] \"GET /ok HTTP/1.1\" OK 3 \"-\" \"curl\" 0.1",
        ] {
            assert_eq!(f.parse(bad), Err(Malformed::NoMatch), "{:?}", String::from_utf8_lossy(bad));
        }
        for (status, code) in [("099", 99), ("600", 600), ("0", 0), ("1000", 1000)] {
            let line = format!(
                "10.1.2.3 - - [10/Oct/2000:20:55:36 +0000] \"GET / HTTP/1.1\" {status} 3 \"-\" \"c\" 0.1"
            );
            assert_eq!(
                f.parse(line.as_bytes()),
                Err(Malformed::Status(code)),
                "{status}"
            );
        }
        for (status, code) in [("100", 100), ("599", 599)] {
            let line = format!(
                "10.1.2.3 - - [10/Oct/2000:20:55:36 +0000] \"GET / HTTP/1.1\" {status} 3 \"-\" \"c\" 0.1"
            );
            assert_eq!(f.parse(line.as_bytes()).map(|r| r.status), Ok(code));
        }
    }

    #[test]
    fn a_huge_hostile_line_is_refused_quickly() {
        // Many spaces and quotes: every read-over field has many candidate ends.
        let f = format("%h %l %u %t \"%r\" %s %b \"%{Referer}i\" \"%{User-Agent}i\" %D");
        let mut line = b"1.2.3.4 - - [10/Oct/2000:20:55:36 +0000] \"".to_vec();
        line.extend(std::iter::repeat_n(&b"a \" b \" "[..], 200_000).flatten());
        let started = std::time::Instant::now();
        assert_eq!(f.parse(&line), Err(Malformed::NoMatch));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn trailing_blanks_are_allowed_other_text_is_not() {
        let f = format("$status $request_time");
        assert!(f.parse(b"200 0.5 \r").is_ok());
        assert_eq!(f.parse(b"200 0.5 x"), Err(Malformed::NoMatch));
    }

    #[test]
    fn numbers() {
        assert_eq!(number(b"0.123 "), Some((0.123, 5)));
        assert_eq!(number(b"12"), Some((12.0, 2)));
        assert_eq!(number(b"12."), Some((12.0, 2)));
        assert_eq!(number(b".5"), None);
        assert_eq!(number(b"1234567890123456789"), None);
        let (sum, len) = number_list(b"0.012, 0.003 : 0.1 x").expect("a list");
        assert!((sum.expect("a sum") - 0.115).abs() < 1e-12);
        assert_eq!(len, 18);
        assert_eq!(number_list(b"-, -"), Some((None, 4)));
        assert_eq!(number_list(b"0.5, x"), Some((Some(0.5), 3)));
        assert_eq!(decimal_whole(b"971211336.123 "), Some((971_211_336, 13)));
    }
}
