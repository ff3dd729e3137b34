//! The Prometheus text exposition format (version 0.0.4) and the OpenMetrics text format,
//! read into samples that borrow from the page.
//!
//! A page is lines: `# TYPE name kind` (and `# HELP`, `# UNIT`, other comments, ignored),
//! samples `name{label="value",...} value [timestamp] [# exemplar]`, empty lines, and in
//! OpenMetrics a closing `# EOF`. Label values keep their escapes (`\\`, `\"`, `\n`) until
//! read with [`Sample::labels`]. Both shapes Micrometer writes are read: the simpleclient
//! one of Spring Boot 2 (`{...,uri="/",}` with a trailing comma, counts as `1.0`) and the
//! Prometheus-metrics one of Spring Boot 3.3+ (`# TYPE x_total counter`, counts as `1`).
//!
//! A line that is neither is an error for the whole page, as for Prometheus: a page cut or
//! garbled in the middle must not be read as counters that went down.
//!
//! Why not a crate: `prometheus-parse` 0.2.5 (the most used) reads labels with a regex that
//! stops at the first `}` and splits values on `,` and `=`: it drops every sample of a
//! templated Spring route (`uri="/api/items/{id}"`) and mangles values holding a comma;
//! `openmetrics-parser` is LGPL-3.0; `prom_text_format_parser` has had one release (0.1.0)
//! on older parser crates and keeps values as strings. The format is line-based and small;
//! this reader allocates one vector per page and nothing per sample.

use std::borrow::Cow;

/// The type a `# TYPE` line gives a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Summary,
    Histogram,
    /// `untyped`, `unknown`, OpenMetrics' other types, or no `# TYPE` line.
    Untyped,
}

impl Kind {
    fn parse(text: &str) -> Kind {
        match text {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "summary" => Kind::Summary,
            "histogram" => Kind::Histogram,
            _ => Kind::Untyped,
        }
    }

    /// Whether a sample named `family` + `suffix` belongs to a family of this kind.
    fn has_suffix(self, suffix: &str) -> bool {
        match self {
            Kind::Counter => matches!(suffix, "_total" | "_created"),
            Kind::Summary => matches!(suffix, "_count" | "_sum" | "_created"),
            Kind::Histogram => matches!(suffix, "_bucket" | "_count" | "_sum" | "_created"),
            Kind::Gauge | Kind::Untyped => false,
        }
    }
}

/// One sample of a page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    /// The sample's name (`http_server_requests_seconds_count`).
    pub name: &'a str,
    /// The family it belongs to: the `# TYPE` line before it when the name is the family's
    /// or the family's plus a suffix of its kind (`_count`, `_bucket`, ...), else its own
    /// name.
    pub family: &'a str,
    /// The family's kind ([`Kind::Untyped`] without a `# TYPE` line).
    pub kind: Kind,
    /// The text between the braces, checked: escapes are still in the values.
    labels: &'a str,
    /// The value (NaN and infinities included).
    pub value: f64,
}

impl<'a> Sample<'a> {
    /// The sample's labels in page order, values unescaped.
    pub fn labels(&self) -> Labels<'a> {
        Labels { rest: self.labels }
    }

    /// The raw value of label `name` (escapes kept; Micrometer's tag values rarely hold any).
    pub fn label(&self, name: &str) -> Option<Cow<'a, str>> {
        self.labels().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The text between the braces as on the page: with the name, what tells two series of
    /// one page apart (exposition libraries write a series' labels in a fixed order).
    pub fn label_text(&self) -> &'a str {
        self.labels
    }

    /// The part of the name after the family's (`_count`, `_bucket`, `""`).
    pub fn suffix(&self) -> &'a str {
        self.name.get(self.family.len()..).unwrap_or("")
    }
}

/// The labels of a [`Sample`]: `(name, value)` pairs.
#[derive(Debug, Clone)]
pub struct Labels<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Labels<'a> {
    type Item = (&'a str, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        // The text was checked when the page was read.
        let (name, raw, rest) = next_label(self.rest).ok()??;
        self.rest = rest;
        Some((name, unescape(raw)))
    }
}

/// Why a page could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub reason: &'static str,
}

/// Most samples read from one page: a page with more is refused (a real Spring Boot page
/// with every percentile histogram on holds a few thousand; this bounds the memory a page
/// of tiny lines can take, about 64 bytes a sample).
pub const MAX_SAMPLES: usize = 200_000;

/// A page read: its samples in page order.
#[derive(Debug, Clone, Default)]
pub struct Page<'a> {
    pub samples: Vec<Sample<'a>>,
}

impl<'a> Page<'a> {
    /// Reads a whole page.
    ///
    /// # Errors
    /// [`ParseError`] at the first line that is neither a comment nor a sample.
    pub fn parse(text: &'a str) -> Result<Page<'a>, ParseError> {
        let mut samples = Vec::with_capacity((text.len() / 96).min(MAX_SAMPLES));
        let mut family: Option<(&'a str, Kind)> = None;
        for (i, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let err = |reason| ParseError {
                line: i + 1,
                reason,
            };
            let trimmed = line.trim_start_matches([' ', '\t']);
            if trimmed.is_empty() {
                continue;
            }
            if let Some(comment) = trimmed.strip_prefix('#') {
                let mut words = comment.split_ascii_whitespace();
                match words.next() {
                    Some("EOF") => break,
                    Some("TYPE") => {
                        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                            return Err(err("a TYPE line needs a name and a type"));
                        };
                        if !is_metric_name(name) {
                            return Err(err("a TYPE line names no metric"));
                        }
                        family = Some((name, Kind::parse(kind)));
                    }
                    _ => {}
                }
                continue;
            }
            let sample = sample(trimmed, family).map_err(err)?;
            if samples.len() >= MAX_SAMPLES {
                return Err(err("more samples than a page may hold (200000)"));
            }
            samples.push(sample);
        }
        Ok(Page { samples })
    }
}

/// Reads one sample line (leading white space removed).
fn sample<'a>(line: &'a str, family: Option<(&'a str, Kind)>) -> Result<Sample<'a>, &'static str> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let (name, mut rest) = line.split_at(name_end);
    if !is_metric_name(name) {
        return Err("not a sample: no metric name");
    }
    let mut labels = "";
    if let Some(inner) = rest.strip_prefix('{') {
        let mut cursor = inner;
        while let Some((_, _, after)) = next_label(cursor)? {
            cursor = after;
        }
        // `next_label` stops at the closing brace, white space and a trailing comma skipped.
        let close = cursor.find('}').ok_or("labels not closed with '}'")?;
        labels = inner
            .get(..inner.len() - cursor.len() + close)
            .unwrap_or("");
        rest = cursor.get(close + 1..).unwrap_or("");
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or("a sample without a value")?;
    let value = parse_value(value).ok_or("a sample value that is not a number")?;
    match fields.next() {
        None => {}
        Some(exemplar) if exemplar.starts_with('#') => {}
        Some(timestamp) => {
            if timestamp.parse::<f64>().is_err() {
                return Err("a timestamp that is not a number");
            }
            if let Some(more) = fields.next()
                && !more.starts_with('#')
            {
                return Err("text after the timestamp");
            }
        }
    }
    let (family, kind) = match family {
        Some((fam, kind))
            if name == fam
                || name
                    .strip_prefix(fam)
                    .is_some_and(|suffix| kind.has_suffix(suffix)) =>
        {
            (fam, kind)
        }
        _ => (name, Kind::Untyped),
    };
    Ok(Sample {
        name,
        family,
        kind,
        labels,
        value,
    })
}

/// The next label of a label block: `(name, raw value, rest)`, or `None` at the closing
/// brace (the rest then starts with it).
#[allow(clippy::type_complexity)]
fn next_label(text: &str) -> Result<Option<(&str, &str, &str)>, &'static str> {
    let text = text.trim_start_matches([' ', '\t']);
    if text.is_empty() || text.starts_with('}') {
        return if text.is_empty() {
            Err("labels not closed with '}'")
        } else {
            Ok(None)
        };
    }
    let name_end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    let (name, rest) = text.split_at(name_end);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("a label without a name");
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = rest.strip_prefix('=').ok_or("a label without '='")?;
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = rest
        .strip_prefix('"')
        .ok_or("a label value not in quotes")?;
    let bytes = rest.as_bytes();
    let mut i = 0;
    let end = loop {
        match bytes.get(i) {
            None => return Err("a label value not closed"),
            Some(b'\\') => i += 2,
            Some(b'"') => break i,
            Some(b'\n') => return Err("a label value not closed"),
            Some(_) => i += 1,
        }
    };
    let value = rest.get(..end).ok_or("a label value cut in a character")?;
    let after = rest.get(end + 1..).unwrap_or("");
    let after = after.trim_start_matches([' ', '\t']);
    let after = match after.strip_prefix(',') {
        Some(after) => after,
        // The closing brace, or the end of a label block already cut at it.
        None if after.is_empty() || after.starts_with('}') => after,
        None => return Err("labels not separated by ','"),
    };
    Ok(Some((name, value, after)))
}

/// A label value with its escapes (`\\`, `\"`, `\n`) resolved.
fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// A value as the formats write it: Go and Java float syntax, `NaN`, `+Inf`, `-Inf`.
pub fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => {
            // Rust also reads "infinity" and "nan" spelled otherwise: only digits here.
            if !text
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
            {
                return None;
            }
            text.parse().ok()
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Sample<'_> {
        let page = Page::parse(line).expect("a sample");
        assert_eq!(page.samples.len(), 1);
        page.samples[0]
    }

    #[test]
    fn micrometer_shapes_of_both_client_libraries() {
        let page = Page::parse(
            "# HELP http_server_requests_seconds  \n\
             # TYPE http_server_requests_seconds histogram\n\
             http_server_requests_seconds_bucket{error=\"none\",exception=\"none\",method=\"GET\",outcome=\"SUCCESS\",status=\"200\",uri=\"/api/items/{id}\",le=\"0.001048576\",} 0.0\n\
             http_server_requests_seconds_bucket{error=\"none\",exception=\"none\",method=\"GET\",outcome=\"SUCCESS\",status=\"200\",uri=\"/api/items/{id}\",le=\"+Inf\",} 3.0\n\
             http_server_requests_seconds_count{error=\"none\",exception=\"none\",method=\"GET\",outcome=\"SUCCESS\",status=\"200\",uri=\"/api/items/{id}\",} 3.0\n\
             http_server_requests_seconds_sum{error=\"none\",exception=\"none\",method=\"GET\",outcome=\"SUCCESS\",status=\"200\",uri=\"/api/items/{id}\",} 0.118981562\n\
             # HELP http_server_requests_seconds_max  \n\
             # TYPE http_server_requests_seconds_max gauge\n\
             http_server_requests_seconds_max{error=\"none\",exception=\"none\",method=\"GET\",outcome=\"SUCCESS\",status=\"200\",uri=\"/api/items/{id}\",} 0.05\n\
             # HELP executor_completed_tasks_total The approximate total number of tasks that have completed execution\n\
             # TYPE executor_completed_tasks_total counter\n\
             executor_completed_tasks_total{name=\"applicationTaskExecutor\"} 12\n\
             jvm_buffer_count_buffers{id=\"mapped - 'non-volatile memory'\"} 0.0\n\
             executor_pool_max_threads{name=\"applicationTaskExecutor\"} 2.147483647E9\n",
        )
        .expect("the page");
        let s = &page.samples;
        assert_eq!(s.len(), 8);
        assert_eq!(s[0].family, "http_server_requests_seconds");
        assert_eq!(s[0].kind, Kind::Histogram);
        assert_eq!(s[0].suffix(), "_bucket");
        assert_eq!(s[0].label("uri").as_deref(), Some("/api/items/{id}"));
        assert_eq!(s[0].label("le").as_deref(), Some("0.001048576"));
        assert_eq!(s[1].label("le").as_deref(), Some("+Inf"));
        assert_eq!(s[2].suffix(), "_count");
        assert!((s[3].value - 0.118981562).abs() < 1e-15);
        assert_eq!(s[4].family, "http_server_requests_seconds_max");
        assert_eq!(s[4].kind, Kind::Gauge);
        assert_eq!(
            (s[5].family, s[5].kind, s[5].value),
            ("executor_completed_tasks_total", Kind::Counter, 12.0)
        );
        assert_eq!(
            s[6].family, "jvm_buffer_count_buffers",
            "no TYPE line: its own"
        );
        assert_eq!(s[6].kind, Kind::Untyped);
        assert_eq!(s[7].value, 2_147_483_647.0);
        let labels: Vec<(&str, String)> = s[2].labels().map(|(n, v)| (n, v.into_owned())).collect();
        assert_eq!(labels.len(), 6);
        assert_eq!(labels[5], ("uri", "/api/items/{id}".to_owned()));
    }

    #[test]
    fn openmetrics_counters_exemplars_timestamps_and_eof() {
        let page = Page::parse(
            "# TYPE jvm_gc_memory_allocated_bytes counter\n\
             # UNIT jvm_gc_memory_allocated_bytes bytes\n\
             jvm_gc_memory_allocated_bytes_total 2.9360128E7\n\
             jvm_gc_memory_allocated_bytes_created 1.718561761441E9\n\
             # TYPE http_server_requests_seconds histogram\n\
             http_server_requests_seconds_bucket{uri=\"/a\",le=\"2.0\"} 18 # {trace_id=\"4bf9\"} 1.83 1758535331.2\n\
             up 1 1758535331000\n\
             # EOF\n\
             this is after the end\n",
        )
        .expect("the page");
        let s = &page.samples;
        assert_eq!(s.len(), 4);
        assert_eq!(
            (s[0].family, s[0].kind, s[0].suffix()),
            ("jvm_gc_memory_allocated_bytes", Kind::Counter, "_total")
        );
        assert_eq!(s[1].suffix(), "_created");
        assert_eq!(s[2].value, 18.0);
        assert_eq!((s[3].name, s[3].family, s[3].value), ("up", "up", 1.0));
    }

    #[test]
    fn escapes_special_values_and_white_space() {
        let s = one("m{path=\"C:\\\\x\",msg=\"say \\\"hi\\\"\\n\",  b = \"}\" } NaN\r\n");
        let labels: Vec<(&str, String)> = s.labels().map(|(n, v)| (n, v.into_owned())).collect();
        assert_eq!(
            labels,
            [
                ("path", "C:\\x".to_owned()),
                ("msg", "say \"hi\"\n".to_owned()),
                ("b", "}".to_owned())
            ]
        );
        assert!(s.value.is_nan());
        assert_eq!(one("m +Inf").value, f64::INFINITY);
        assert_eq!(one("m -Inf").value, f64::NEG_INFINITY);
        assert_eq!(one("m{} -1.5e-3").value, -0.0015);
        assert_eq!(one("  m\t7").value, 7.0);
        assert_eq!(one("m{a=\"1\",} 7").label("a").as_deref(), Some("1"));
    }

    #[test]
    fn garbage_is_an_error_with_its_line() {
        for (text, line) in [
            ("<html><body>Whitelabel Error Page</body></html>", 1),
            ("ok 1\n{json: true}", 2),
            ("m{a=\"1\" 2", 1),
            ("m{a=\"1\"", 1),
            ("m{a=1} 2", 1),
            ("m{=\"1\"} 2", 1),
            ("m{a=\"1\"b=\"2\"} 2", 1),
            ("m", 1),
            ("m infinity", 1),
            ("m 1 2 3", 1),
            ("m 1 x", 1),
            ("# TYPE\n", 1),
            ("m{a=\"unclosed\n", 1),
        ] {
            let e = Page::parse(text).expect_err(text);
            assert_eq!(e.line, line, "{text}: {e}");
        }
        let huge = "m 1\n".repeat(MAX_SAMPLES + 1);
        let e = Page::parse(&huge).expect_err("too many samples");
        assert_eq!(e.line, MAX_SAMPLES + 1);
        assert!(Page::parse("").expect("empty").samples.is_empty());
        assert!(
            Page::parse("# only a comment\n\n")
                .expect("comments")
                .samples
                .is_empty()
        );
    }

    proptest::proptest! {
        /// Any text, and any cut or splice of a real page, is read or refused: never a
        /// panic, and the labels of what is read can be iterated.
        #[test]
        fn any_text_is_read_or_refused(
            noise in ".{0,300}",
            cut in 0usize..2000,
            at in 0usize..2000,
        ) {
            let page = "# TYPE http_server_requests_seconds histogram\n\
                http_server_requests_seconds_bucket{exception=\"none\",method=\"GET\",outcome=\"SUCCESS\",status=\"200\",uri=\"/api/items/{id}\",le=\"0.001\",} 0.0\n\
                http_server_requests_seconds_count{method=\"GET\",msg=\"a \\\"b\\\" c\",uri=\"/\"} 3 1700000000\n# EOF\n";
            let mut spliced = page.to_owned();
            let at = at.min(spliced.len());
            if spliced.is_char_boundary(at) {
                spliced.insert_str(at, &noise);
            }
            let cut = cut.min(spliced.len());
            for text in [noise.as_str(), spliced.get(..cut).unwrap_or(""), spliced.as_str()] {
                if let Ok(page) = Page::parse(text) {
                    for sample in &page.samples {
                        let _ = sample.labels().count();
                        let _ = sample.suffix();
                    }
                }
            }
        }
    }

    #[test]
    fn a_family_claims_only_the_suffixes_of_its_kind() {
        let page = Page::parse(
            "# TYPE a summary\na_count 1\na_bucket{le=\"1\"} 1\na_total 2\n\
             # TYPE b gauge\nb_count 3\n",
        )
        .expect("page");
        let families: Vec<(&str, Kind)> = page.samples.iter().map(|s| (s.family, s.kind)).collect();
        assert_eq!(
            families,
            [
                ("a", Kind::Summary),
                ("a_bucket", Kind::Untyped),
                ("a_total", Kind::Untyped),
                ("b_count", Kind::Untyped)
            ]
        );
    }
}
