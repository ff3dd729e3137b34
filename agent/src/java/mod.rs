//! Java log analysis: log lines in, events with levels, times and exception fingerprints out.
//!
//! Pure, synchronous code over `&[u8]` (no I/O except [`parse_files`]). The pieces:
//!
//! - [`Analyzer`]: built once per `[[logs]]` entry from an [`AnalyzerConfig`]; holds the
//!   compiled matchers (the dangerous-class Aho-Corasick automaton, the `event_start` regex)
//!   and is shared read-only by every file of the entry.
//! - [`EventAssembler`]: one per file; an explicit state machine that groups physical lines
//!   into [`Event`]s (a record's first line plus its continuation lines) and tells the
//!   checkpoint offset that is safe to persist ([`EventAssembler::committed_offset`]).
//! - [`ExceptionInfo`] and [`Fingerprint`]: the exception an event holds and its stable
//!   64-bit identity (algorithm [`FINGERPRINT_VERSION`]).
//!
//! ```
//! use vigil_agent::java::{Analyzer, AnalyzerConfig, EventAssembler, Level, Tz};
//!
//! let analyzer = Analyzer::new(AnalyzerConfig { timezone: Tz::Utc, ..Default::default() })?;
//! let mut file = EventAssembler::new(&analyzer);
//! let log = "2026-11-23 18:45:02.461 ERROR [main] shop.OrderService - checkout failed\n\
//!            java.lang.IllegalStateException: cart is empty\n\
//!            \tat shop.Cart.total(Cart.java:14)\n\
//!            2026-11-23 18:45:02.562 INFO  [main] shop.OrderService - next\n";
//! let mut offset = 0u64;
//! let mut seen = Vec::new();
//! for line in log.lines() {
//!     offset += line.len() as u64 + 1;
//!     file.push_line(&analyzer, line.as_bytes(), offset, 0, &mut |ev| {
//!         seen.push((ev.time, ev.level, ev.lines, ev.exception.map(|x| x.class.clone())));
//!     });
//! }
//! file.flush(&analyzer, &mut |ev| seen.push((ev.time, ev.level, ev.lines, None)));
//! assert_eq!(seen[0], (1_795_459_502, Level::Error, 3,
//!                      Some("java.lang.IllegalStateException".to_owned())));
//! assert_eq!(seen.len(), 2);
//! # Ok::<(), vigil_agent::java::AnalyzerError>(())
//! ```
//!
//! # Events
//! A record starts with a line that begins with a readable timestamp
//! (`yyyy-MM-dd[ T]HH:mm:ss[[.,]SSS][zone]`, optionally in `[…]`; Tomcat's
//! `dd-MMM-yyyy HH:mm:ss`; a bare `HH:mm:ss.SSS`, dated the day it is read or the day before;
//! java.util.logging's `MMM d, yyyy h:mm:ss AM|PM` header, whose next line `SEVERE: …` belongs
//! to it and gives the level), a JSON object line, a lone jul `LEVEL: ` line, or — when configured — a line
//! matching `event_start` (which then replaces all of the above). Other lines (frames,
//! `Caused by:`, `Suppressed:`, `... N more`, blank lines, message lines) attach to the
//! pending event, except where a printed trace ends: `printStackTrace()` output
//! (`catalina.out`, `nohup.out`) has no record starts, its traces follow each other and plain
//! `System.out` lines. So an exception header (`pkg.FooException[: msg]`, not `Caused by:` or
//! `Suppressed:`) that follows a trace's frames, a header without a message, or (in the first
//! column) a header with one opens a new event, and so does any other line after frames that
//! is not a frame, a cause, an elision (`... N more`, `... N common frames omitted`, a thread
//! dump's `- locked <0x…>`) or blank; in an event opened by a plain line, a header opens a
//! new event too. Lines between a header with a message and its first frame continue the
//! message (`junit.framework.ComparisonFailure: expected:<…` over several lines). With
//! `event_start` configured the pattern alone decides. Events are never split for size: text
//! over `max_event_bytes` is dropped (the event is flagged `truncated`), except that
//! `Caused by:` lines and their top frames are still kept within an eighth more.
//!
//! # Fingerprints
//! See [`FINGERPRINT_VERSION`]. Version 2 hashes (xxh3-64, fixed seed) two things:
//!
//! 1. the normalised cause chain, outermost class to root cause (`Caused by:` at the trace's
//!    own indent; log4j2's root-first `Wrapped by:` form is turned around; `Suppressed:`
//!    exceptions and their causes are left out);
//! 2. frames of the failure's *site*: the deepest exception of the chain with a frame of the
//!    app's own code — frames of `app_packages`, or, when none is configured, of any package
//!    outside well-known libraries (JDK, Spring, Apache, Netty, JUnit, …), and never a class
//!    loader's `loadClass`/`findClass` — or, when no exception has one, the outermost
//!    exception with frames. Its frames as `class.method`, reflection and method-handle
//!    plumbing skipped: the top frame (where it was thrown), then its first 4 frames of the
//!    app's own code, or, when it has none, its next 4 frames.
//!
//! Names are normalised first: no line numbers, messages, thread names, class-loader or
//! module prefixes (`app//`, `java.base@17.0.9/`, `lib-v1//`), `~[jar:ver]` suffixes,
//! hidden-class addresses, or numbers of generated classes and synthetic methods
//! (`$$Lambda$14/0x…`, `$Proxy12`, `GeneratedMethodAccessor7`, `$$EnhancerBySpringCGLIB$$…`,
//! `$$SpringCGLIB$$0`, `$MockitoMock$…`, `lambda$main$0`, `access$000`).
//!
//! A real JVM prints one failure in more than one shape:
//!
//! - HotSpot caches a failed class resolution: the first `NoClassDefFoundError` shows its
//!   `Caused by: java.lang.ClassNotFoundException` with the class loader's frames, later ones
//!   only `... N more` / `... N common frames omitted`. Those frames are never the app's, so
//!   the site is the `NoClassDefFoundError` in both shapes: **one fingerprint**.
//! - With `-XX:+OmitStackTraceInFastThrow` (the default), a site that has thrown a
//!   `NullPointerException`, `ArithmeticException`, `ArrayIndexOutOfBoundsException`,
//!   `ArrayStoreException` or `ClassCastException` often enough throws a preallocated one
//!   with no message and no frames. An exception without frames fingerprints by its class
//!   chain alone; that value is every exception's [`ExceptionInfo::family`]. So the frameless
//!   shape's fingerprint is the **family** of the full shape's: the same class chain, the site
//!   unknown. The detector relates them through the definitions (same class and causes, one
//!   of them without frames).
//!
//! An exception quoted in a message line without frames (`… failed:
//! java.net.ConnectException: …`) also fingerprints by its class chain alone.

mod analyzer;
mod assemble;
mod exception;
mod frame;
pub mod generate;
mod json;
mod parse_cmd;
mod record;
pub(crate) mod time;
mod trace;

pub use analyzer::{
    Analyzer, AnalyzerConfig, AnalyzerError, DEFAULT_MAX_EVENT_BYTES, builtin_dangerous,
    configured_dangerous,
};
pub use assemble::{Event, EventAssembler};
pub use exception::{ExceptionInfo, FINGERPRINT_VERSION, Fingerprint, FingerprintError};
pub use parse_cmd::{
    FingerprintSummary, MAX_LINE_BYTES, ParseError, Summary, parse_files, read_lines,
};
pub use record::Level;
pub use time::{Tz, TzError, format_utc};
