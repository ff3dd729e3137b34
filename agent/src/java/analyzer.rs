//! Configuration of the analysis and the matchers compiled from it once per `[[logs]]` entry.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::Regex;

use super::time::{Tz, Zone};

/// The dangerous exception classes of DESIGN §3, matched anywhere in the cause chain.
const BUILTIN_DANGEROUS: &[&str] = &[
    "ClassNotFoundException",
    "NoClassDefFoundError",
    "NoSuchMethodError",
    "NoSuchFieldError",
    "AbstractMethodError",
    "IncompatibleClassChangeError",
    "LinkageError",
    "UnsatisfiedLinkError",
    "ExceptionInInitializerError",
    "ClassCastException",
    "OutOfMemoryError",
    "StackOverflowError",
];

/// The built-in list of dangerous exception classes (simple names), DESIGN §3.
pub fn builtin_dangerous() -> &'static [&'static str] {
    BUILTIN_DANGEROUS
}

/// The dangerous list after configuration (DESIGN §3 `[java]`): `dangerous` replaces the
/// built-in list when set, `extra_dangerous` is added; duplicates are dropped, order kept.
pub fn configured_dangerous(
    dangerous: Option<&[String]>,
    extra_dangerous: &[String],
) -> Vec<String> {
    let base: Vec<String> = match dangerous {
        Some(d) => d.to_vec(),
        None => BUILTIN_DANGEROUS.iter().map(|s| (*s).to_owned()).collect(),
    };
    let mut out: Vec<String> = Vec::with_capacity(base.len() + extra_dangerous.len());
    for d in base.into_iter().chain(extra_dangerous.iter().cloned()) {
        let d = d.trim().to_owned();
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// Default cap on the bytes kept of one event ([`AnalyzerConfig::max_event_bytes`]).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 128 * 1024;

/// What the analysis of one `[[logs]]` entry is configured with.
#[derive(Debug, Clone)]
pub struct AnalyzerConfig {
    /// A line matching this starts a record (replaces the built-in record-start detection).
    pub event_start: Option<Regex>,
    /// Packages of the app's own code (`com.example`); their frames weigh more in
    /// fingerprints. Empty: every frame outside well-known library packages counts as the
    /// app's.
    pub app_packages: Vec<String>,
    /// Dangerous exception classes, the full list after configuration. An entry is a simple
    /// name (`OutOfMemoryError`, matches any package) or a fully qualified name.
    pub dangerous: Vec<String>,
    /// Zone of timestamps that carry none.
    pub timezone: Tz,
    /// Bytes kept of one event; beyond it the event is truncated (flagged), never split.
    /// At least 1 KiB is used whatever is set.
    pub max_event_bytes: usize,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        AnalyzerConfig {
            event_start: None,
            app_packages: Vec::new(),
            dangerous: BUILTIN_DANGEROUS.iter().map(|s| (*s).to_owned()).collect(),
            timezone: Tz::Local,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

/// A configuration that cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzerError {
    /// The dangerous-class automaton could not be built.
    #[error("cannot build the dangerous-class matcher: {0}")]
    Dangerous(#[from] aho_corasick::BuildError),
    /// A dangerous class name is empty or not a Java class name.
    #[error("invalid dangerous class name {0:?}")]
    BadClassName(String),
}

/// The compiled form of an [`AnalyzerConfig`]: built once per `[[logs]]` entry and shared
/// (read-only) by the [`EventAssembler`](super::EventAssembler)s of its files.
#[derive(Debug)]
pub struct Analyzer {
    pub(crate) config: AnalyzerConfig,
    /// Words that make a line worth a closer look for an exception.
    pub(crate) hints: AhoCorasick,
    /// Dangerous class names.
    pub(crate) dangerous: AhoCorasick,
    /// For each dangerous pattern: is it fully qualified (must match the whole name)?
    pub(crate) dangerous_qualified: Vec<bool>,
    pub(crate) zone: Zone,
    pub(crate) max_event_bytes: usize,
}

impl Analyzer {
    /// Compiles the matchers of `config`.
    ///
    /// # Errors
    /// [`AnalyzerError`] when a dangerous class name is not a class name.
    pub fn new(config: AnalyzerConfig) -> Result<Analyzer, AnalyzerError> {
        for d in &config.dangerous {
            let ok = !d.is_empty()
                && d.split('.').all(|seg| {
                    !seg.is_empty()
                        && seg
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
                });
            if !ok {
                return Err(AnalyzerError::BadClassName(d.clone()));
            }
        }
        let hints = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostFirst)
            .build(["Exception", "Error", "Throwable"])?;
        let dangerous = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(&config.dangerous)?;
        let dangerous_qualified = config.dangerous.iter().map(|d| d.contains('.')).collect();
        let zone = Zone::resolve(&config.timezone);
        let max_event_bytes = config.max_event_bytes.max(1024);
        Ok(Analyzer {
            config,
            hints,
            dangerous,
            dangerous_qualified,
            zone,
            max_event_bytes,
        })
    }

    /// The configuration this analyzer was built from.
    pub fn config(&self) -> &AnalyzerConfig {
        &self.config
    }

    /// Is any class of `chain` (one class name per line, `\n`-separated) dangerous? Names
    /// match whole: `LinkageError` does not match `MyLinkageErrorWrapper`.
    pub(crate) fn chain_is_dangerous(&self, chain: &str) -> bool {
        let b = chain.as_bytes();
        self.dangerous.find_overlapping_iter(chain).any(|m| {
            let before = if m.start() == 0 {
                None
            } else {
                Some(b[m.start() - 1])
            };
            let after = b.get(m.end()).copied();
            let qualified = self
                .dangerous_qualified
                .get(m.pattern().as_usize())
                .copied()
                .unwrap_or(false);
            let start_ok = match before {
                None | Some(b'\n') => true,
                Some(b'.' | b'$') => !qualified,
                _ => false,
            };
            start_ok && matches!(after, None | Some(b'\n'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_matches_whole_names() {
        let mut cfg = AnalyzerConfig::default();
        cfg.dangerous.push("com.example.FatalThing".to_owned());
        let a = Analyzer::new(cfg).expect("builds");
        assert!(a.chain_is_dangerous("java.lang.ClassNotFoundException"));
        assert!(a.chain_is_dangerous("shop.X\njava.lang.OutOfMemoryError"));
        assert!(a.chain_is_dangerous("LinkageError"));
        assert!(!a.chain_is_dangerous("shop.MyLinkageErrorWrapper"));
        assert!(!a.chain_is_dangerous("shop.LinkageErrorWrapper"));
        assert!(!a.chain_is_dangerous("shop.NotALinkageError"));
        assert!(a.chain_is_dangerous("com.example.FatalThing"));
        assert!(!a.chain_is_dangerous("org.other.com.example.FatalThing"));
        assert!(!a.chain_is_dangerous("java.io.IOException"));
    }

    #[test]
    fn shareable_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Analyzer>();
        send::<crate::java::EventAssembler>();
    }

    #[test]
    fn dangerous_configuration() {
        let all = configured_dangerous(None, &["com.x.Boom".to_owned(), "LinkageError".to_owned()]);
        assert_eq!(all.len(), BUILTIN_DANGEROUS.len() + 1);
        assert_eq!(all.last().map(String::as_str), Some("com.x.Boom"));
        let only = configured_dangerous(Some(&["OutOfMemoryError".to_owned()]), &[]);
        assert_eq!(only, ["OutOfMemoryError"]);
    }

    #[test]
    fn rejects_bad_names() {
        let cfg = AnalyzerConfig {
            dangerous: vec!["Foo Bar".to_owned()],
            ..AnalyzerConfig::default()
        };
        assert!(matches!(
            Analyzer::new(cfg),
            Err(AnalyzerError::BadClassName(_))
        ));
    }
}
