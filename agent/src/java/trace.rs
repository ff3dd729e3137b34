//! The shapes of a printed stack trace's lines: headers, frames, causes and the rest.
//!
//! Shared by the event assembler, which needs to know where a trace ends when lines carry no
//! record start, and by the exception parser, which reads the trace itself. Everything here
//! looks at one line and allocates nothing.

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// `l` without its leading spaces and tabs.
pub(crate) fn trim_start(l: &[u8]) -> &[u8] {
    let n = l.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    &l[n..]
}

/// A dotted class name at the start of `s`: its length, or `None`.
pub(crate) fn class_token(s: &[u8]) -> Option<usize> {
    if !s
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_' || *b == b'$')
    {
        return None;
    }
    let mut i = 0;
    let mut dots = 0;
    let mut seg_empty = true;
    while let Some(&b) = s.get(i) {
        if is_ident(b) {
            seg_empty = false;
        } else if b == b'.' && !seg_empty {
            dots += 1;
            seg_empty = true;
        } else {
            break;
        }
        i += 1;
    }
    (dots > 0 && !seg_empty).then_some(i)
}

/// A header `pkg.Class[: message]` at the start of `s` (already trimmed):
/// `(class_len, message_start)`.
pub(crate) fn header_syntax(s: &[u8]) -> Option<(usize, Option<usize>)> {
    let n = class_token(s)?;
    let rest = &s[n..];
    if rest.iter().all(|b| b.is_ascii_whitespace()) {
        return Some((n, None));
    }
    if rest[0] == b':' {
        let skip = rest[1..].iter().take_while(|b| **b == b' ').count();
        return Some((n, Some(n + 1 + skip)));
    }
    None
}

/// The simple name of a class name.
pub(crate) fn simple_name(class: &[u8]) -> &[u8] {
    match memchr::memrchr(b'.', class) {
        Some(i) => &class[i + 1..],
        None => class,
    }
}

/// Does the class name by itself say it is a throwable?
pub(crate) fn throwable_by_name(class: &[u8]) -> bool {
    const KNOWN: &[&[u8]] = &[
        b"ComparisonFailure",
        b"ThreadDeath",
        b"UnresolvedForwardReference",
        b"MultipleFailuresError",
    ];
    simple_name(class).split(|b| *b == b'$').any(|seg| {
        seg.ends_with(b"Exception")
            || seg.ends_with(b"Error")
            || seg.ends_with(b"Throwable")
            || KNOWN.contains(&seg)
    })
}

/// `t` (trimmed) without the `Exception in thread "name" ` that the JVM's default uncaught
/// exception handler puts before the header.
pub(crate) fn strip_thread_prefix(t: &[u8]) -> &[u8] {
    if let Some(rest) = t.strip_prefix(b"Exception in thread \"")
        && let Some(q) = memchr::memmem::find(rest, b"\" ")
    {
        return &rest[q + 2..];
    }
    t
}

/// Is this (trimmed) line a stack frame: `at ` and a dotted `class.method`, its first dot
/// before any space? Message lines that merely start with "at" are not: Jackson's
/// `at [Source: …; line: 1, column: 2]`, or prose such as `at startup (port 8080)`. Runs on
/// every continuation line, so it looks at as few bytes as it can: a frame's first dot comes
/// within its first few bytes (`java.base/`, `com.`, `Main.main`).
pub(crate) fn is_frame(t: &[u8]) -> bool {
    let Some(rest) = t.strip_prefix(b"at ") else {
        return false;
    };
    match rest.first() {
        // kotlinx.coroutines' `|b|b|b(Coroutine boundary…)`: the one frame without a dot.
        Some(b'|') => return true,
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' || *b == b'$' => {}
        _ => return false,
    }
    for (i, &b) in rest.iter().enumerate().skip(1) {
        match b {
            b'.' => return rest.get(i + 1).is_some_and(|c| !c.is_ascii_whitespace()),
            b' ' | b'\t' | b'(' | b':' | b'"' | b'[' => return false,
            _ => {}
        }
    }
    false
}

/// The body of a frame line: after `at `, before `(`.
pub(crate) fn frame_body(t: &[u8]) -> &[u8] {
    let b = &t[3..];
    let end = memchr::memchr(b'(', b).unwrap_or(b.len());
    let mut s = &b[..end];
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// What one physical line is, as far as the end of a trace is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineShape {
    /// Empty or only spaces and tabs.
    Blank,
    /// `at class.method(…)`.
    Frame,
    /// What follows frames within one trace: `... N more`, `... N common frames omitted`,
    /// log4j2's `... suppressed N lines`, a thread dump's `- locked <0x…>`,
    /// `[CIRCULAR REFERENCE: …]`.
    Elision,
    /// `Caused by: `, `Suppressed: ` or log4j2's `Wrapped by: ` and a header; `message`: the
    /// header has one (`Class: …`), so lines up to the next frame may continue it.
    Cause { message: bool },
    /// A header of a throwable by name (`pkg.Class[: message]`, simple name upper-case, ending
    /// in `Exception`, `Error` or `Throwable` or a known throwable), possibly after
    /// `Exception in thread "…" `; `margin`: it starts in the first column, as a trace
    /// printed by `printStackTrace()` does.
    Header { message: bool, margin: bool },
    /// Anything else.
    Other,
}

/// `... 5 more`, `... 5 common frames omitted`, log4j2's `... suppressed 2 lines` (not a
/// message line that merely starts with an ellipsis).
fn is_elision(t: &[u8]) -> bool {
    t.strip_prefix(b"... ")
        .is_some_and(|r| r.first().is_some_and(u8::is_ascii_digit) || r.starts_with(b"suppressed "))
}

/// Is `t` (trimmed) a header of a throwable by name? `Some(has_message)`.
fn strict_header(t: &[u8]) -> Option<bool> {
    let t = strip_thread_prefix(t);
    let (n, msg) = header_syntax(t)?;
    let class = &t[..n];
    let upper = simple_name(class)
        .first()
        .is_some_and(|b| b.is_ascii_uppercase() || *b == b'$');
    (upper && throwable_by_name(class)).then_some(msg.is_some())
}

/// The shape of one physical line (cheapest tests first: most lines are settled by their
/// first non-blank byte).
pub(crate) fn shape(line: &[u8]) -> LineShape {
    let t = trim_start(line);
    let Some(&first) = t.first() else {
        return LineShape::Blank;
    };
    let cause = |rest: &[u8]| LineShape::Cause {
        message: header_syntax(trim_start(rest)).is_some_and(|(_, m)| m.is_some()),
    };
    match first {
        b'a' if is_frame(t) => return LineShape::Frame,
        b'.' if is_elision(t) => return LineShape::Elision,
        b'-' if t.starts_with(b"- ") && memchr::memmem::find(t, b"<0x").is_some() => {
            return LineShape::Elision;
        }
        b'[' if t.starts_with(b"[CIRCULAR REFERENCE") => return LineShape::Elision,
        b'C' if t.starts_with(b"Caused by: ") => return cause(&t[11..]),
        b'S' if t.starts_with(b"Suppressed: ") => return cause(&t[12..]),
        b'W' if t.starts_with(b"Wrapped by: ") => return cause(&t[12..]),
        _ => {}
    }
    if t.iter().all(|b| b.is_ascii_whitespace()) {
        return LineShape::Blank;
    }
    match strict_header(t) {
        Some(message) => LineShape::Header {
            message,
            margin: t.len() == line.len(),
        },
        None => LineShape::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_not_frames() {
        for f in [
            "at shop.A.b(A.java:1)",
            "at java.base/java.lang.Thread.run(Thread.java:840)",
            "at java.base@17.0.9/java.lang.Thread.run(Thread.java:840)",
            "at app//shop.A.b(A.java:1) ~[app/:?]",
            "at Shapes.main(Shapes.java:15)",
            "at com.sun.proxy.$Proxy12.invoke(Unknown Source)",
            "at shop.Web$$Lambda$14/0x0000000800c3b040.apply(Unknown Source)",
            "at |b|b|b(Coroutine boundary.|b(|b)",
            "at shop.A.b",
        ] {
            assert!(is_frame(f.as_bytes()), "{f}");
        }
        for f in [
            "at [Source: (String)\"{\"a\":1}\"; line: 1, column: 2]",
            "at [Source: {",
            "at startup (port 8080)",
            "at noon",
            "at noon.",
            "at ",
            "attempt 3 failed",
        ] {
            assert!(!is_frame(f.as_bytes()), "{f}");
        }
    }

    #[test]
    fn shapes() {
        use LineShape::*;
        let cases: &[(&str, LineShape)] = &[
            ("", Blank),
            ("  \t ", Blank),
            ("\tat shop.A.b(A.java:1)", Frame),
            ("\t... 5 common frames omitted", Elision),
            ("\t... 1 more", Elision),
            (
                "\t- locked <0x000000076b5bb0a8> (a java.lang.Object)",
                Elision,
            ),
            (
                "\t[CIRCULAR REFERENCE: java.lang.IllegalStateException: x]",
                Elision,
            ),
            (
                "Caused by: java.lang.ClassNotFoundException: shop.svc.TaxTable",
                Cause { message: true },
            ),
            (
                "Caused by: java.lang.NullPointerException",
                Cause { message: false },
            ),
            (
                "\tSuppressed: java.io.IOException: x",
                Cause { message: true },
            ),
            (
                "Wrapped by: shop.RemoteCallException: failed",
                Cause { message: true },
            ),
            (
                "java.lang.NullPointerException",
                Header {
                    message: false,
                    margin: true,
                },
            ),
            (
                "java.lang.IllegalStateException: boom",
                Header {
                    message: true,
                    margin: true,
                },
            ),
            (
                "Exception in thread \"main\" java.lang.NoClassDefFoundError: shop/X",
                Header {
                    message: true,
                    margin: true,
                },
            ),
            (
                "\torg.opentest4j.AssertionFailedError: expected: <1> but was: <2>",
                Header {
                    message: true,
                    margin: false,
                },
            ),
            (
                "org.apache.commons.math.MathRuntimeException$6: map modified",
                Header {
                    message: true,
                    margin: true,
                },
            ),
            ("Processing order 17", Other),
            ("shop.App.onError: retry", Other),
            ("com.example.FooService", Other),
            ("java.lang.Thread.State: RUNNABLE", Other),
            ("--- com.x.FooTest::testBar", Other),
            ("- item", Other),
            ("\t... suppressed 2 lines", Elision),
            ("... and then it failed", Other),
        ];
        for (line, want) in cases {
            assert_eq!(shape(line.as_bytes()), *want, "{line:?}");
        }
    }
}
