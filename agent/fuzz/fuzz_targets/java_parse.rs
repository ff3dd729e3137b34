//! Fuzzes the Java event assembler and exception parser with arbitrary bytes:
//! `cargo +nightly fuzz run java_parse` (seeds: `../shared/corpus/defects4j-traces`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_agent::java::{Analyzer, AnalyzerConfig, EventAssembler, Tz};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the size cap, so that truncation paths are reached too.
    let (cap, body) = match data.split_first() {
        Some((c, rest)) => (usize::from(*c) * 64, rest),
        None => (0, data),
    };
    let Ok(an) = Analyzer::new(AnalyzerConfig {
        timezone: Tz::Utc,
        max_event_bytes: cap,
        ..AnalyzerConfig::default()
    }) else {
        return;
    };
    let mut asm = EventAssembler::new(&an);
    let mut lines = 0u64;
    let mut in_events = 0u64;
    let mut off = 0u64;
    for line in body.split(|b| *b == b'\n') {
        lines += 1;
        off += line.len() as u64 + 1;
        asm.push_line(&an, line, off, 0, &mut |e| {
            in_events += u64::from(e.lines);
            if let Some(x) = e.exception {
                assert!(!x.class.is_empty());
                assert_eq!(x.fingerprint.to_string().len(), 16);
            }
        });
    }
    asm.flush(&an, &mut |e| in_events += u64::from(e.lines));
    assert_eq!(lines, in_events, "every line in exactly one event");
});
