//! Finding a Java exception in an event's text, and its fingerprint.
//!
//! Runs only on events that look like they may hold one (a frame line, or the words
//! `Exception`, `Error` or `Throwable`), so it may take its time a little; it still reuses
//! every buffer so that a steady stream of exceptions does not allocate.

use std::fmt;
use std::str::FromStr;

use super::analyzer::Analyzer;
use super::frame;
use super::trace::{
    class_token, frame_body, header_syntax, is_frame, simple_name, strip_thread_prefix,
    throwable_by_name, trim_start,
};

/// Version of the fingerprint algorithm; travels with every report. Bump it whenever the
/// same trace could get a different fingerprint.
pub const FINGERPRINT_VERSION: u32 = 2;

/// Seed of the fingerprint hash: fixed, so fingerprints are stable across runs and hosts.
const SEED: u64 = 0x5669_6769_6c46_5031; // "VigilFP1"

/// Most app frames (or, without app frames, top frames) that enter a fingerprint besides
/// the top frame.
const TOP_FRAMES: usize = 4;
/// Most classes kept of a cause chain.
const MAX_CHAIN: usize = 16;
/// Most frames of the throw-site section that are looked at.
const MAX_SECTION_FRAMES: usize = 256;
/// Bytes kept of a message sample.
const MESSAGE_CAP: usize = 256;
/// Bytes kept of the trace sample.
const SAMPLE_CAP: usize = 4096;

/// A 64-bit exception fingerprint; shown as 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Text that is not 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fingerprint {0:?}: expected 16 hex digits")]
pub struct FingerprintError(pub String);

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FingerprintError(s.to_owned()));
        }
        u64::from_str_radix(s, 16)
            .map(Fingerprint)
            .map_err(|_| FingerprintError(s.to_owned()))
    }
}

/// The exception of an event: what the detector keeps as the fingerprint's definition.
///
/// Owned strings, but the [`EventAssembler`](super::EventAssembler) reuses one value for all
/// its events: clone it to keep it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExceptionInfo {
    /// The fingerprint (algorithm [`FINGERPRINT_VERSION`]).
    pub fingerprint: Fingerprint,
    /// The outermost exception class, normalised (`java.lang.IllegalStateException`).
    pub class: String,
    /// The `Caused by:` classes, outermost to root cause, normalised.
    pub causes: Vec<String>,
    /// The outermost exception's message (first line, at most 256 bytes).
    pub message: String,
    /// The top frames that entered the fingerprint, normalised `class.method`; empty when
    /// the exception was printed without frames.
    pub frames: Vec<String>,
    /// The fingerprint of the class chain alone: what the same failure fingerprints as when
    /// printed without frames (HotSpot's fast throw, `-XX:+OmitStackTraceInFastThrow`). Equal
    /// to `fingerprint` when `frames` is empty. Fingerprints with the same family are the
    /// same class chain from different code.
    pub family: Fingerprint,
    /// Number of frame lines (`at …`) in the trace, all sections.
    pub frame_count: u32,
    /// Is any class of the cause chain dangerous?
    pub dangerous: bool,
    /// The trace text from its header line, at most 4 KiB.
    pub sample: String,
}

impl ExceptionInfo {
    /// The innermost class of the chain (the root cause, or the class itself).
    pub fn root_class(&self) -> &str {
        self.causes.last().unwrap_or(&self.class)
    }
}

/// One exception of the cause chain: its class (a range of the text) and its frames.
#[derive(Debug, Clone, Copy)]
struct Section {
    class: (usize, usize),
    frames: usize,
}

/// Buffers reused from event to event.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    lines: Vec<(usize, usize)>,
    chain: Vec<Section>,
    /// `(section, start, end)` of every frame body of the chain's sections.
    frames: Vec<(u32, usize, usize)>,
    norm: String,
    /// `(start, end, class_len, app)` of normalised frames in `norm`.
    norm_frames: Vec<(usize, usize, usize, bool)>,
    chain_text: String,
    hash: Vec<u8>,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// A class name quoted inside a message line (`… failed: java.net.ConnectException: …`):
/// `(start, end, message_start)` within `line`. Only names ending in `Exception`, `Error` or
/// `Throwable` count here, since no frames confirm them.
fn quoted_exception(an: &Analyzer, line: &[u8]) -> Option<(usize, usize, Option<usize>)> {
    for m in an.hints.find_iter(line) {
        // The name must end here (an inner-class suffix `$6` may follow).
        let mut end = m.end();
        if line.get(end) == Some(&b'$') {
            end += 1;
            while line.get(end).is_some_and(|b| is_ident(*b)) {
                end += 1;
            }
        } else if line.get(end).is_some_and(|b| is_ident(*b)) {
            continue;
        }
        // `FooException.java`, `FooException.class`: a file or a member, not the class.
        if line.get(end) == Some(&b'.') && line.get(end + 1).is_some_and(|b| is_ident(*b)) {
            continue;
        }
        let mut start = m.start();
        while start > 0 && (is_ident(line[start - 1]) || line[start - 1] == b'.') {
            start -= 1;
        }
        while start < end && line[start] == b'.' {
            start += 1;
        }
        let Some(n) = class_token(&line[start..end]) else {
            continue;
        };
        if start + n != end || !simple_name(&line[start..end])[0].is_ascii_uppercase() {
            continue;
        }
        let msg = match line.get(end) {
            Some(b':') => {
                let skip = line[end + 1..].iter().take_while(|b| **b == b' ').count();
                Some(end + 1 + skip)
            }
            _ => None,
        };
        return Some((start, end, msg));
    }
    None
}

/// Cuts `s` to at most `cap` bytes at a character boundary.
fn push_cut(out: &mut String, s: &[u8], cap: usize) {
    let s = &s[..s.len().min(cap)];
    match std::str::from_utf8(s) {
        Ok(v) => out.push_str(v),
        Err(e) => {
            let valid = e.valid_up_to();
            // A cut through the last character: keep what is valid; anything else: lossy.
            if e.error_len().is_none() {
                out.push_str(std::str::from_utf8(&s[..valid]).unwrap_or_default());
            } else {
                out.push_str(&String::from_utf8_lossy(s));
            }
        }
    }
}

fn set_string(v: &mut Vec<String>, i: usize, s: &str) {
    if let Some(x) = v.get_mut(i) {
        x.clear();
        x.push_str(s);
    } else {
        v.push(s.to_owned());
    }
}

/// Normalises the frames of section `site` (none: no frames) into `sc.norm_frames`
/// (reflection plumbing left out), stopping once the top frame and [`TOP_FRAMES`] frames of
/// the app's own code are known.
fn site_frames(an: &Analyzer, text: &[u8], sc: &mut Scratch, site: Option<usize>) {
    sc.norm.clear();
    sc.norm_frames.clear();
    let Some(site) = site else {
        return;
    };
    let app_packages = &an.config.app_packages;
    let mut apps = 0;
    for &(sec, fs, fe) in &sc.frames {
        if sec as usize != site {
            continue;
        }
        let body = String::from_utf8_lossy(&text[fs..fe]);
        let start = sc.norm.len();
        let class_len = frame::push_frame(&body, &mut sc.norm);
        let f = &sc.norm[start..];
        if frame::is_plumbing(f) {
            sc.norm.truncate(start);
            continue;
        }
        let app = frame::is_app_class(&f[..class_len], app_packages)
            && !frame::is_class_loading(&f[(class_len + 1).min(f.len())..]);
        sc.norm_frames.push((start, sc.norm.len(), class_len, app));
        apps += usize::from(app);
        // Enough seen: later frames cannot change the selection.
        if apps == TOP_FRAMES {
            break;
        }
    }
}

/// Finds the exception of an event's `text` (lines separated by `\n`) and fills `out`.
/// Returns `false` when the text holds none (then `out` is unspecified).
pub(crate) fn analyze(
    an: &Analyzer,
    text: &[u8],
    sc: &mut Scratch,
    out: &mut ExceptionInfo,
) -> bool {
    sc.lines.clear();
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', text) {
        sc.lines.push((start, nl));
        start = nl + 1;
    }
    sc.lines.push((start, text.len()));
    for l in sc.lines.iter_mut() {
        if l.1 > l.0 && text[l.1 - 1] == b'\r' {
            l.1 -= 1;
        }
    }

    // 1. The first header line: `pkg.Class[: msg]` at a line start that is a throwable by
    //    name or directly followed by a frame.
    let mut found: Option<(usize, usize, usize, Option<usize>, usize)> = None; // line, cs, ce, msg, indent
    for (i, &(s, e)) in sc.lines.iter().enumerate() {
        let line = &text[s..e];
        let t = trim_start(line);
        let indent = line.len() - t.len();
        let t = strip_thread_prefix(t);
        let Some((n, msg)) = header_syntax(t) else {
            continue;
        };
        let cs = e - t.len();
        let class = &t[..n];
        let followed_by_frame = sc
            .lines
            .get(i + 1)
            .is_some_and(|&(s2, e2)| is_frame(trim_start(&text[s2..e2])));
        let upper = simple_name(class)
            .first()
            .is_some_and(|b| b.is_ascii_uppercase() || *b == b'$');
        // A thread dump's `java.lang.Thread.State: RUNNABLE` is also followed by frames.
        if class == b"java.lang.Thread.State" {
            continue;
        }
        if throwable_by_name(class) || (followed_by_frame && upper) {
            found = Some((i, cs, cs + n, msg.map(|m| cs + m), indent));
            break;
        }
    }
    // 2. Else a name quoted in the first line (or the second: jul's `SEVERE: …` line).
    if found.is_none() {
        for (i, &(s, e)) in sc.lines.iter().take(2).enumerate() {
            if i == 1 && is_frame(trim_start(&text[s..e])) {
                break;
            }
            if let Some((qs, qe, msg)) = quoted_exception(an, &text[s..e]) {
                found = Some((i, s + qs, s + qe, msg.map(|m| s + m), usize::MAX));
                break;
            }
        }
    }
    let Some((h, cs, ce, msg, base_indent)) = found else {
        return false;
    };

    // 3. The chain and frames.
    sc.chain.clear();
    sc.frames.clear();
    sc.chain.push(Section {
        class: (cs, ce),
        frames: 0,
    });
    let mut frame_count = 0u32;
    let mut in_suppressed = false;
    let mut wrapped = false;
    for &(s, e) in &sc.lines[h + 1..] {
        let line = &text[s..e];
        let t = trim_start(line);
        let indent = line.len() - t.len();
        if is_frame(t) {
            frame_count = frame_count.saturating_add(1);
            if !in_suppressed {
                let idx = sc.chain.len() - 1;
                if sc.chain[idx].frames < MAX_SECTION_FRAMES {
                    sc.chain[idx].frames += 1;
                    let body = frame_body(t);
                    let bs = e - t.len() + 3;
                    sc.frames.push((idx as u32, bs, bs + body.len()));
                }
            }
        } else if let Some(rest) = t
            .strip_prefix(b"Caused by: ")
            .or_else(|| t.strip_prefix(b"Wrapped by: "))
        {
            // log4j2's `%rEx` prints the root cause first, then `Wrapped by:` its wrappers.
            wrapped |= t.starts_with(b"W");
            if base_indent != usize::MAX && indent > base_indent {
                continue; // a cause of a suppressed exception
            }
            in_suppressed = false;
            if let Some((n, _)) = header_syntax(trim_start(rest))
                && sc.chain.len() < MAX_CHAIN
            {
                let rs = e - trim_start(rest).len();
                sc.chain.push(Section {
                    class: (rs, rs + n),
                    frames: 0,
                });
            }
        } else if t.starts_with(b"Suppressed: ") {
            in_suppressed = true;
        }
    }

    if wrapped {
        // Back to the usual order: outermost first, root cause last.
        let n = sc.chain.len() as u32;
        sc.chain.reverse();
        for f in &mut sc.frames {
            f.0 = n - 1 - f.0;
        }
    }
    let (cs, ce) = sc.chain[0].class;

    // 4. Names, message, sample.
    out.frame_count = frame_count;
    out.class.clear();
    frame::push_class(&String::from_utf8_lossy(&text[cs..ce]), &mut out.class);
    let mut ncauses = 0;
    sc.chain_text.clear();
    sc.chain_text.push_str(&out.class);
    for sec in &sc.chain[1..] {
        let raw = String::from_utf8_lossy(&text[sec.class.0..sec.class.1]);
        let mark = sc.chain_text.len();
        sc.chain_text.push('\n');
        frame::push_class(&raw, &mut sc.chain_text);
        set_string(&mut out.causes, ncauses, &sc.chain_text[mark + 1..]);
        ncauses += 1;
    }
    out.causes.truncate(ncauses);
    out.message.clear();
    if let Some(m) = msg {
        let line_end = sc.lines[h].1;
        push_cut(
            &mut out.message,
            &text[m.min(line_end)..line_end],
            MESSAGE_CAP,
        );
    }
    out.sample.clear();
    let sample_start = if base_indent == usize::MAX {
        cs
    } else {
        sc.lines[h].0
    };
    push_cut(&mut out.sample, &text[sample_start..], SAMPLE_CAP);
    out.dangerous = an.chain_is_dangerous(&sc.chain_text);

    // 5. Frames of the failure's site: the deepest section of the chain with a frame of the
    //    app's own code, else the outermost section with frames. A cause's own frames may
    //    be missing from one print of a failure and not another (HotSpot re-throws a cached
    //    class-resolution error with its `ClassNotFoundException` cause as `... N more`),
    //    but such a cause holds only class-loading frames, which never count as the app's;
    //    the outermost exception always has its frames.
    let app_packages = &an.config.app_packages;
    let has_app = |sec: usize| {
        sc.frames.iter().any(|&(s, fs, fe)| {
            s as usize == sec
                && match std::str::from_utf8(&text[fs..fe]) {
                    Ok(body) => frame::is_app_frame(body, app_packages),
                    Err(_) => {
                        frame::is_app_frame(&String::from_utf8_lossy(&text[fs..fe]), app_packages)
                    }
                }
        })
    };
    let site = (0..sc.chain.len())
        .rev()
        .find(|&sec| sc.chain[sec].frames > 0 && has_app(sec))
        .or_else(|| sc.chain.iter().position(|s| s.frames > 0));
    site_frames(an, text, sc, site);
    // The throw point (top frame) always; then the app's frames when it has any (they say
    // which of the app's code paths failed, and survive library upgrades), else the next
    // top frames.
    let any_app = sc.norm_frames.iter().any(|f| f.3);
    let top_is_app = sc.norm_frames.first().is_some_and(|f| f.3);
    let limit = if top_is_app {
        TOP_FRAMES
    } else {
        TOP_FRAMES + 1
    };
    let mut nframes = 0;
    for (i, &(s, e, _, app)) in sc.norm_frames.iter().enumerate() {
        if nframes == limit {
            break;
        }
        if i > 0 && any_app && !app {
            continue;
        }
        set_string(&mut out.frames, nframes, &sc.norm[s..e]);
        nframes += 1;
    }
    out.frames.truncate(nframes);

    // 6. The fingerprint: chain of classes, then the selected frames. The chain alone is the
    //    family (what an exception printed without frames fingerprints as).
    sc.hash.clear();
    sc.hash.extend_from_slice(b"vigil-fingerprint\x00");
    sc.hash.extend_from_slice(sc.chain_text.as_bytes());
    sc.hash.push(0x01);
    out.family = Fingerprint(xxhash_rust::xxh3::xxh3_64_with_seed(&sc.hash, SEED));
    for f in &out.frames {
        sc.hash.extend_from_slice(f.as_bytes());
        sc.hash.push(0);
    }
    out.fingerprint = Fingerprint(xxhash_rust::xxh3::xxh3_64_with_seed(&sc.hash, SEED));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::java::AnalyzerConfig;

    fn run(text: &str) -> Option<ExceptionInfo> {
        let an = Analyzer::new(AnalyzerConfig::default()).expect("analyzer");
        let mut sc = Scratch::default();
        let mut out = ExceptionInfo::default();
        analyze(&an, text.as_bytes(), &mut sc, &mut out).then_some(out)
    }

    #[test]
    fn fingerprint_text_roundtrip() {
        let f = Fingerprint(0x0b5e_3c1d_2a4f_6e88);
        assert_eq!(f.to_string(), "0b5e3c1d2a4f6e88");
        assert_eq!("0b5e3c1d2a4f6e88".parse::<Fingerprint>(), Ok(f));
        assert!("0b5e3c1d2a4f6e8".parse::<Fingerprint>().is_err());
        assert!("+b5e3c1d2a4f6e88".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn chain_frames_and_message() {
        let t = "2026-11-23 18:45:02.461 ERROR [main] shop.OrderService - Order checkout failed\n\
                 shop.svc.RemoteCallException: inventory call failed after 3 retries\n\
                 \tat lib-v1//shop.svc.ServicesImpl.remoteCall(ServicesImpl.java:14)\n\
                 \tat shop.ShopApp.tick(ShopApp.java:121)\n\
                 \tat java.base/java.lang.Thread.run(Thread.java:840)\n\
                 Caused by: java.net.SocketTimeoutException: Read timed out after 2000 ms\n\
                 \tat java.base/java.net.SocketInputStream.read(SocketInputStream.java:1)\n\
                 \tat lib-v1//shop.svc.InventoryClient.readReply(InventoryClient.java:13)\n\
                 \t... 4 common frames omitted";
        let e = run(t).expect("exception");
        assert_eq!(e.class, "shop.svc.RemoteCallException");
        assert_eq!(e.causes, vec!["java.net.SocketTimeoutException"]);
        assert_eq!(e.message, "inventory call failed after 3 retries");
        assert_eq!(
            e.frames,
            vec![
                "java.net.SocketInputStream.read",
                "shop.svc.InventoryClient.readReply"
            ]
        );
        assert_eq!(e.frame_count, 5);
        assert!(!e.dangerous);
        assert!(e.sample.starts_with("shop.svc.RemoteCallException"));
    }

    #[test]
    fn quoted_in_message() {
        let e = run("2026-11-23 18:45:02.461 WARN [main] shop.Client - call failed: java.net.ConnectException: Connection refused")
            .expect("exception");
        assert_eq!(e.class, "java.net.ConnectException");
        assert_eq!(e.message, "Connection refused");
        assert!(
            run("2026-11-23 18:45:02.461 INFO [main] com.x.GlobalExceptionHandler - ok").is_none()
        );
        assert!(run("2026-11-23 18:45:02.461 INFO [main] shop.A - Exception count 0").is_none());
        assert!(
            run("2026-11-23 18:45:02.461 INFO [main] shop.A - loading shop.svc.PromoEngineV2")
                .is_none()
        );
        assert!(
            run("2026-11-23 18:45:02.461 INFO [main] shop.A - built shop/x/MyException.java")
                .is_none()
        );
        assert!(run("2026-11-23 18:45:02.461 WARN [main] shop.A - stack follows\n\tat shop.MyException.<init>(MyException.java:3)").is_none());
        let e = run("2026-11-23 18:45:02.461 WARN [main] shop.A - caught java.io.IOException.")
            .expect("exception");
        assert_eq!(e.class, "java.io.IOException");
    }

    #[test]
    fn header_by_frames_only() {
        let e = run("--- T::m\norg.apache.commons.math.MathRuntimeException$6: map modified\n\tat org.apache.commons.math.MathRuntimeException.createX(MathRuntimeException.java:373)")
            .expect("exception");
        assert_eq!(e.class, "org.apache.commons.math.MathRuntimeException$6");
        let e = run("com.fasterxml.jackson.databind.deser.UnresolvedForwardReference: x\n\tat a.B.c(B.java:1)")
            .expect("exception");
        assert_eq!(
            e.class,
            "com.fasterxml.jackson.databind.deser.UnresolvedForwardReference"
        );
        assert!(run("some.config.value: 12\nnext line").is_none());
        assert!(run("2026-11-23 18:45:02.000 WARN [main] x - thread dump\n\"main\" #1 prio=5\n   java.lang.Thread.State: WAITING\n\tat java.lang.Object.wait(Native Method)").is_none());
    }

    #[test]
    fn suppressed_is_not_in_chain() {
        let t = "java.io.IOException: outer\n\tat shop.A.a(A.java:1)\n\tSuppressed: java.lang.OutOfMemoryError: x\n\t\tat shop.B.b(B.java:2)\n\tCaused by: java.lang.LinkageError: y\n\t\t... 1 more\nCaused by: java.lang.IllegalStateException: root\n\tat shop.C.c(C.java:3)";
        let e = run(t).expect("exception");
        assert_eq!(e.causes, vec!["java.lang.IllegalStateException"]);
        assert_eq!(e.frames, vec!["shop.C.c"]);
        assert!(!e.dangerous);
    }

    #[test]
    fn log4j2_root_cause_first() {
        let normal = "shop.RemoteCallException: failed\n\tat shop.Svc.call(Svc.java:14)\n\tat shop.App.tick(App.java:1)\nCaused by: java.net.SocketTimeoutException: Read timed out\n\tat shop.Client.read(Client.java:13)\n\tat shop.Svc.call(Svc.java:12)\n\t... 1 more";
        let reversed = "java.net.SocketTimeoutException: Read timed out\n\tat shop.Client.read(Client.java:13)\n\tat shop.Svc.call(Svc.java:12)\nWrapped by: shop.RemoteCallException: failed\n\tat shop.Svc.call(Svc.java:14)\n\tat shop.App.tick(App.java:1)";
        let a = run(normal).expect("exception");
        let b = run(reversed).expect("exception");
        assert_eq!(b.class, "shop.RemoteCallException");
        assert_eq!(b.causes, vec!["java.net.SocketTimeoutException"]);
        assert_eq!(a.frames, b.frames);
        assert_eq!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn cached_resolution_error_one_fingerprint() {
        let first = "java.lang.NoClassDefFoundError: shop/svc/TaxTable\n\
                     \tat lib-v2//shop.svc.ServicesImpl.tax(ServicesImpl.java:40)\n\
                     \tat shop.ShopApp.tick(ShopApp.java:155)\n\
                     \tat java.base/java.lang.Thread.run(Thread.java:840)\n\
                     Caused by: java.lang.ClassNotFoundException: shop.svc.TaxTable\n\
                     \tat java.base/java.net.URLClassLoader.findClass(URLClassLoader.java:445)\n\
                     \tat java.base/java.lang.ClassLoader.loadClass(ClassLoader.java:592)\n\
                     \t... 3 common frames omitted";
        let cached = "java.lang.NoClassDefFoundError: shop/svc/TaxTable\n\
                      \tat lib-v2//shop.svc.ServicesImpl.tax(ServicesImpl.java:40)\n\
                      \tat shop.ShopApp.tick(ShopApp.java:155)\n\
                      \tat java.base/java.lang.Thread.run(Thread.java:840)\n\
                      Caused by: java.lang.ClassNotFoundException: shop.svc.TaxTable\n\
                      \t... 3 more";
        // A class loader of the app's own packages: its lookups are still not the app's code.
        let own_loader = first.replace(
            "java.base/java.net.URLClassLoader.findClass",
            "shop.plugins.PluginLoader.findClass",
        );
        let a = run(first).expect("exception");
        assert_eq!(a.frames, ["shop.svc.ServicesImpl.tax", "shop.ShopApp.tick"]);
        for t in [cached, own_loader.as_str()] {
            let b = run(t).expect("exception");
            assert_eq!(
                (&b.frames, b.fingerprint),
                (&a.frames, a.fingerprint),
                "{t}"
            );
        }
        // Without any app frame (a library's missing class), the outermost exception's frames.
        let lib = |t: &str| {
            t.replace("shop.svc.", "org.apache.x.")
                .replace("shop.ShopApp", "org.apache.App")
        };
        let (c, d) = (run(&lib(first)).expect("e"), run(&lib(cached)).expect("e"));
        assert_eq!(c.frames[0], "org.apache.x.ServicesImpl.tax");
        assert_eq!(c.fingerprint, d.fingerprint);
    }

    #[test]
    fn site_is_the_deepest_with_app_frames() {
        // A wrapper thrown by the framework: the NPE's own code tells failures apart.
        let wrapped = |m: &str| {
            format!(
                "org.springframework.web.util.NestedServletException: Request processing failed\n\
                 \tat org.springframework.web.servlet.FrameworkServlet.processRequest(FrameworkServlet.java:1014)\n\
                 \tat javax.servlet.http.HttpServlet.service(HttpServlet.java:655)\n\
                 Caused by: java.lang.NullPointerException: x\n\
                 \tat shop.web.CartController.{m}(CartController.java:12)\n\
                 \tat java.base/jdk.internal.reflect.NativeMethodAccessorImpl.invoke0(Native Method)\n\
                 \t... 2 more"
            )
        };
        let a = run(&wrapped("add")).expect("exception");
        let b = run(&wrapped("remove")).expect("exception");
        assert_eq!(a.frames, ["shop.web.CartController.add"]);
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_eq!(a.family, b.family);
        // A root cause deep in library code: the app's frames of the wrapper name the failure.
        let t = "shop.svc.RemoteCallException: failed\n\
                 \tat shop.svc.Client.call(Client.java:3)\n\
                 Caused by: java.net.ConnectException: Connection refused\n\
                 \tat java.base/sun.nio.ch.Net.connect0(Native Method)\n\
                 \t... 1 more";
        assert_eq!(run(t).expect("exception").frames, ["shop.svc.Client.call"]);
    }

    #[test]
    fn frameless_is_the_family() {
        let full = run(
            "java.lang.NullPointerException: Cannot invoke \"String.length()\"\n\
                        \tat shop.A.length(A.java:10)\n\tat shop.A.main(A.java:30)",
        )
        .expect("exception");
        let bare = run("java.lang.NullPointerException").expect("exception");
        assert!(bare.frames.is_empty());
        assert_eq!(bare.fingerprint, bare.family);
        assert_eq!(full.family, bare.fingerprint);
        assert_ne!(full.fingerprint, bare.fingerprint);
        // Another class chain, another family.
        let other = run("java.lang.ArithmeticException").expect("exception");
        assert_ne!(other.family, bare.family);
    }

    #[test]
    fn message_lines_are_not_frames() {
        let t = "com.fasterxml.jackson.databind.JsonMappingException: Unexpected token\n \
                 at [Source: {\"a\":1}; line: 1, column: 2]\n\
                 \tat com.fasterxml.jackson.databind.X.y(X.java:1)";
        let e = run(t).expect("exception");
        assert_eq!(e.frame_count, 1);
        assert_eq!(e.frames, ["com.fasterxml.jackson.databind.X.y"]);
    }

    #[test]
    fn dangerous_in_cause() {
        let t = "java.lang.RuntimeException: boom\n\tat shop.A.a(A.java:1)\nCaused by: java.lang.NoClassDefFoundError: shop/X\n\t... 1 more";
        let e = run(t).expect("exception");
        assert!(e.dangerous);
        assert_eq!(e.root_class(), "java.lang.NoClassDefFoundError");
        // No frames under the root cause: the throw site is the outer section.
        assert_eq!(e.frames, vec!["shop.A.a"]);
    }
}
