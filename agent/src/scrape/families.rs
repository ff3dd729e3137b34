//! The other metric families a `[[scrape]]` entry names in `families` (JVM, connection
//! pools, ...), turned into per-minute [`ScrapedValue`]s:
//!
//! - a **gauge** (or a family without a `# TYPE`): the sum over its label sets of the last
//!   value read in the minute (summed, not maxed: heap used over the pools of `area="heap"`
//!   and pending connections over the pools are totals);
//! - a **counter**: its growth since the last good scrape, summed over label sets (a value
//!   below the last one is a reset: the new value is the growth since);
//! - a **summary** or **histogram**: the growth of `_count` and `_sum`, sent as
//!   `name_count` and `name_sum` (counters).
//!
//! A family may carry a label selector, `jvm_memory_used_bytes{area="heap"}`: only the
//! series with those labels count, and the value is named as written. As for the requests,
//! the first good scrape only sets the baseline of the counters, and a series that appears
//! later counts from zero. NaN and infinite values are left out; a family absent from the
//! page gives no value (missing, not zero).

use foldhash::{HashMap, HashMapExt};
use xxhash_rust::xxh3::Xxh3;

use vigil_proto::v1::{ScrapedKind, ScrapedValue};

use super::exposition::{Kind, Page, Sample, is_metric_name};

/// Most families one `[[scrape]]` entry may name (each may give two values).
pub const MAX_FAMILIES: usize = 32;
/// Longest family entry, selector included (leaves room for `_count`/`_sum` within the
/// 128 bytes of a value's name).
pub const MAX_FAMILY_BYTES: usize = 120;

/// One entry of `families`: a family name and an optional label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilySpec {
    /// The entry as written (trimmed): the name of its values.
    pub text: String,
    /// The family's name.
    pub family: String,
    /// Labels a series must have, `(name, value)`.
    pub selector: Vec<(String, String)>,
}

impl FamilySpec {
    /// Reads `name` or `name{label="value",...}`.
    ///
    /// # Errors
    /// Why the entry is not a family name with an optional selector.
    pub fn parse(text: &str) -> Result<FamilySpec, String> {
        let text = text.trim();
        if text.len() > MAX_FAMILY_BYTES {
            return Err(format!("{text:?} is longer than {MAX_FAMILY_BYTES} bytes"));
        }
        // The name goes into reports, whose names the detector refuses with them.
        if text.chars().any(char::is_control) {
            return Err(format!("{text:?} holds control characters"));
        }
        let (family, selector) = match text.find('{') {
            Some(open) => (&text[..open], Some(&text[open..])),
            None => (text, None),
        };
        if !is_metric_name(family) {
            return Err(format!(
                "{text:?} is not a metric family name (like \"jvm_gc_pause_seconds\"), \
                 optionally with labels (like 'jvm_memory_used_bytes{{area=\"heap\"}}')"
            ));
        }
        let mut labels = Vec::new();
        if let Some(selector) = selector {
            if !selector.ends_with('}') {
                return Err(format!(
                    "{text:?}: the labels are not like {{area=\"heap\"}}: text after '}}'"
                ));
            }
            // Read as a sample would be: `family{...} 0`.
            let line = format!("{family}{selector} 0");
            let page = Page::parse(&line).map_err(|e| {
                format!(
                    "{text:?}: the labels are not like {{area=\"heap\"}}: {}",
                    e.reason
                )
            })?;
            let Some(sample) = page.samples.first() else {
                return Err(format!(
                    "{text:?}: the labels are not like {{area=\"heap\"}}"
                ));
            };
            labels = sample
                .labels()
                .map(|(n, v)| (n.to_owned(), v.into_owned()))
                .collect();
        }
        Ok(FamilySpec {
            text: text.to_owned(),
            family: family.to_owned(),
            selector: labels,
        })
    }

    /// The name of a part (`_count`, `_sum`) of the family: the suffix goes before the
    /// selector.
    fn part(&self, suffix: &str) -> String {
        match self.text.find('{') {
            Some(open) => format!("{}{suffix}{}", &self.text[..open], &self.text[open..]),
            None => format!("{}{suffix}", self.text),
        }
    }

    /// Whether `sample` is of this family (its `# TYPE` name, the counter's with or without
    /// `_total`, or for an untyped sample its own name) and has the selector's labels.
    fn matches(&self, sample: &Sample<'_>) -> bool {
        let family = sample.family;
        let named = family == self.family
            || (sample.kind == Kind::Counter
                && (family.strip_suffix("_total") == Some(self.family.as_str())
                    || self.family.strip_suffix("_total") == Some(family)));
        named
            && self.selector.iter().all(|(name, value)| {
                sample
                    .labels()
                    .any(|(n, v)| n == name.as_str() && v == value.as_str())
            })
    }
}

/// The configured families of one target, from scrape to scrape.
/// Pages a counter sample may be absent from and keep its last value.
const MAX_MISSED_PAGES: u32 = 10;

#[derive(Debug)]
pub struct Families {
    specs: Vec<FamilySpec>,
    /// Counters' last values, by sample (a hash of the spec, the name and the labels), and
    /// the pages in a row each was absent from.
    seen: HashMap<u64, (f64, u32)>,
    baselined: bool,
}

impl Families {
    /// Follows `specs`.
    pub fn new(specs: Vec<FamilySpec>) -> Self {
        Self {
            specs,
            seen: HashMap::new(),
            baselined: false,
        }
    }

    /// Reads the families of a good scrape: gauges' values, and counters' growth since the
    /// last good scrape (none at the first). The page's counters become the baseline.
    pub fn observe(&mut self, page: &Page<'_>) -> Vec<ScrapedValue> {
        let mut out = Vec::new();
        if self.specs.is_empty() {
            return out;
        }
        let mut seen = HashMap::with_capacity(self.seen.len());
        for (i, spec) in self.specs.iter().enumerate() {
            // (name, value, kind) of this spec's values, in a fixed order.
            let mut gauge: Option<f64> = None;
            let mut counter: Option<f64> = None;
            let mut count: Option<f64> = None;
            let mut sum: Option<f64> = None;
            for sample in page.samples.iter().filter(|s| spec.matches(s)) {
                if !sample.value.is_finite() {
                    continue;
                }
                let slot = match (sample.kind, sample.suffix()) {
                    (Kind::Gauge | Kind::Untyped, "") => {
                        *gauge.get_or_insert(0.0) += sample.value;
                        continue;
                    }
                    (Kind::Counter, "" | "_total") => &mut counter,
                    (Kind::Summary | Kind::Histogram, "_count") => &mut count,
                    (Kind::Summary | Kind::Histogram, "_sum") => &mut sum,
                    _ => continue,
                };
                let mut hash = Xxh3::new();
                hash.update(&(i as u64).to_le_bytes());
                hash.update(sample.name.as_bytes());
                hash.update(b"{");
                hash.update(sample.label_text().as_bytes());
                let key = hash.digest();
                seen.insert(key, (sample.value, 0));
                if !self.baselined {
                    continue;
                }
                let before = self.seen.get(&key).map_or(0.0, |s| s.0);
                let growth = if sample.value < before {
                    sample.value
                } else {
                    sample.value - before
                };
                // A counter never shrinks: a negative sample (a summary of negative
                // observations, a broken page) adds nothing, and a quiet one adds 0.
                let growth = if growth.is_finite() {
                    growth.max(0.0)
                } else {
                    0.0
                };
                *slot.get_or_insert(0.0) += growth;
            }
            let values = [
                (gauge, ScrapedKind::Gauge, None),
                (counter, ScrapedKind::Counter, None),
                (count, ScrapedKind::Counter, Some("_count")),
                (sum, ScrapedKind::Counter, Some("_sum")),
            ];
            for (value, kind, suffix) in values {
                let Some(value) = value.filter(|v| v.is_finite()) else {
                    continue;
                };
                out.push(ScrapedValue {
                    name: suffix.map_or_else(|| spec.text.clone(), |s| spec.part(s)),
                    value,
                    kind: kind as i32,
                });
            }
        }
        // A sample absent from a page keeps its last value for a while: when it comes
        // back, only its growth counts, not its whole count again.
        for (key, (value, missed)) in std::mem::take(&mut self.seen) {
            if missed < MAX_MISSED_PAGES && !seen.contains_key(&key) {
                seen.insert(key, (value, missed + 1));
            }
        }
        self.seen = seen;
        self.baselined = true;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(list: &[&str]) -> Families {
        Families::new(
            list.iter()
                .map(|s| FamilySpec::parse(s).expect("spec"))
                .collect(),
        )
    }

    fn page(gc_count: f64, gc_sum: f64, eden: f64, old: f64, pending: f64, alloc: f64) -> String {
        format!(
            "# HELP jvm_gc_pause_seconds Time spent in GC pause\n\
             # TYPE jvm_gc_pause_seconds summary\n\
             jvm_gc_pause_seconds_count{{action=\"end of minor GC\",cause=\"G1 Evacuation Pause\",gc=\"G1 Young Generation\",}} {gc_count}\n\
             jvm_gc_pause_seconds_sum{{action=\"end of minor GC\",cause=\"G1 Evacuation Pause\",gc=\"G1 Young Generation\",}} {gc_sum}\n\
             # HELP jvm_gc_pause_seconds_max Time spent in GC pause\n\
             # TYPE jvm_gc_pause_seconds_max gauge\n\
             jvm_gc_pause_seconds_max{{action=\"end of minor GC\",cause=\"G1 Evacuation Pause\",gc=\"G1 Young Generation\",}} 0.003\n\
             # TYPE jvm_memory_used_bytes gauge\n\
             jvm_memory_used_bytes{{area=\"heap\",id=\"G1 Eden Space\",}} {eden}\n\
             jvm_memory_used_bytes{{area=\"heap\",id=\"G1 Old Gen\",}} {old}\n\
             jvm_memory_used_bytes{{area=\"nonheap\",id=\"Metaspace\",}} 3.4763144E7\n\
             # TYPE hikaricp_connections_pending gauge\n\
             hikaricp_connections_pending{{pool=\"HikariPool-1\",}} {pending}\n\
             # TYPE process_cpu_usage gauge\n\
             process_cpu_usage NaN\n\
             # TYPE jvm_gc_memory_allocated_bytes_total counter\n\
             jvm_gc_memory_allocated_bytes_total {alloc}\n"
        )
    }

    fn values(f: &mut Families, text: &str) -> Vec<(String, f64, ScrapedKind)> {
        f.observe(&Page::parse(text).expect("page"))
            .into_iter()
            .map(|v| {
                let kind = ScrapedKind::try_from(v.kind).unwrap_or(ScrapedKind::Unspecified);
                (v.name, v.value, kind)
            })
            .collect()
    }

    #[test]
    fn gauges_counters_and_summaries() {
        let mut f = specs(&[
            "jvm_gc_pause_seconds",
            "jvm_memory_used_bytes{area=\"heap\"}",
            "hikaricp_connections_pending",
            "process_cpu_usage",
            "jvm_gc_memory_allocated_bytes",
            "not_on_the_page",
        ]);
        let first = values(&mut f, &page(5.0, 0.05, 100.0, 200.0, 2.0, 1000.0));
        assert_eq!(
            first,
            [
                (
                    "jvm_memory_used_bytes{area=\"heap\"}".to_owned(),
                    300.0,
                    ScrapedKind::Gauge
                ),
                (
                    "hikaricp_connections_pending".to_owned(),
                    2.0,
                    ScrapedKind::Gauge
                ),
            ],
            "the first scrape: gauges only (NaN left out), counters set their baseline"
        );
        let second = values(&mut f, &page(8.0, 0.08, 50.0, 210.0, 0.0, 1500.0));
        let by_name = |name: &str| {
            second
                .iter()
                .find(|v| v.0 == name)
                .map(|v| (v.1, v.2))
                .unwrap_or_else(|| panic!("{name} in {second:?}"))
        };
        let (count, kind) = by_name("jvm_gc_pause_seconds_count");
        assert_eq!((count, kind), (3.0, ScrapedKind::Counter));
        assert!((by_name("jvm_gc_pause_seconds_sum").0 - 0.03).abs() < 1e-12);
        assert_eq!(by_name("jvm_memory_used_bytes{area=\"heap\"}").0, 260.0);
        assert_eq!(by_name("hikaricp_connections_pending").0, 0.0);
        assert_eq!(by_name("jvm_gc_memory_allocated_bytes").0, 500.0);
        assert_eq!(second.len(), 5, "{second:?}");
        // A restart: the counters drop, the new values are the growth.
        let third = values(&mut f, &page(1.0, 0.01, 1.0, 1.0, 0.0, 40.0));
        assert!(third.contains(&(
            "jvm_gc_pause_seconds_count".to_owned(),
            1.0,
            ScrapedKind::Counter
        )));
        assert!(third.contains(&(
            "jvm_gc_memory_allocated_bytes".to_owned(),
            40.0,
            ScrapedKind::Counter
        )));
    }

    #[test]
    fn counter_names_with_or_without_total_and_openmetrics() {
        let mut f = specs(&["jvm_gc_memory_allocated_bytes_total", "tasks"]);
        let text = |n: f64| {
            format!(
                "# TYPE jvm_gc_memory_allocated_bytes counter\n\
                 jvm_gc_memory_allocated_bytes_total {n}\n\
                 jvm_gc_memory_allocated_bytes_created 1.7E9\n\
                 # TYPE tasks_total counter\ntasks_total{{name=\"a\"}} {n}\ntasks_total{{name=\"b\"}} {n}\n# EOF\n"
            )
        };
        assert!(values(&mut f, &text(10.0)).is_empty());
        assert_eq!(
            values(&mut f, &text(15.0)),
            [
                (
                    "jvm_gc_memory_allocated_bytes_total".to_owned(),
                    5.0,
                    ScrapedKind::Counter
                ),
                ("tasks".to_owned(), 10.0, ScrapedKind::Counter)
            ]
        );
    }

    #[test]
    fn a_counter_absent_from_a_page_counts_its_growth_when_back() {
        let mut f = specs(&["jvm_gc_memory_allocated_bytes"]);
        let _ = values(&mut f, &page(5.0, 0.05, 100.0, 200.0, 2.0, 1000.0));
        // A page without the family, then it is back, 40 bytes on.
        let _ = values(&mut f, "# HELP up Up\n# TYPE up gauge\nup 1.0\n");
        let back = values(&mut f, &page(5.0, 0.05, 100.0, 200.0, 2.0, 1040.0));
        assert_eq!(
            back,
            [(
                "jvm_gc_memory_allocated_bytes".to_owned(),
                40.0,
                ScrapedKind::Counter
            )],
            "not its whole count again"
        );
    }

    #[test]
    fn specs_are_checked_and_parts_named_before_the_selector() {
        let spec =
            FamilySpec::parse(" jvm_gc_pause_seconds{gc=\"G1 Young Generation\"} ").expect("spec");
        assert_eq!(spec.family, "jvm_gc_pause_seconds");
        assert_eq!(
            spec.selector,
            [("gc".to_owned(), "G1 Young Generation".to_owned())]
        );
        assert_eq!(
            spec.part("_count"),
            "jvm_gc_pause_seconds_count{gc=\"G1 Young Generation\"}"
        );
        assert!(FamilySpec::parse("jvm.gc.pause").is_err());
        assert!(FamilySpec::parse("x{area=heap}").is_err());
        assert!(FamilySpec::parse("x{area=\"heap\"} 5").is_err());
        assert!(FamilySpec::parse(&"x".repeat(121)).is_err());
    }
}
