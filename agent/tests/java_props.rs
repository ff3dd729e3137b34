//! Property tests of the Java analysis: no input makes it panic or lose lines, and the
//! fingerprint of a trace does not depend on what is logged around it.

// Inside `mod java` so that `cargo test -p vigil-agent java` selects these tests.
mod java {
    use proptest::prelude::*;
    use vigil_agent::java::{Analyzer, AnalyzerConfig, EventAssembler, Fingerprint, Tz};

    fn analyzer(cap: usize) -> Analyzer {
        Analyzer::new(AnalyzerConfig {
            timezone: Tz::Utc,
            max_event_bytes: cap,
            ..AnalyzerConfig::default()
        })
        .expect("builds")
    }

    /// Pieces that real logs are made of, to steer random lines towards interesting states.
    fn fragment() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
        Just(b"2026-11-23 18:45:02.461 ERROR [main] a.B - ".to_vec()),
        Just(b"2026-11-23T18:45:02Z WARN ".to_vec()),
        Just(b"\tat ".to_vec()),
        Just(b"java.lang.IllegalStateException: ".to_vec()),
        Just(b"Caused by: ".to_vec()),
        Just(b"\tSuppressed: ".to_vec()),
        Just(b"\t... 3 more".to_vec()),
        Just(b"Nov 23, 2026 6:44:43 PM a.B c".to_vec()),
        Just(b"SEVERE: ".to_vec()),
        Just(b"{\"@timestamp\":\"2026-11-23T18:45:02Z\",\"stack_trace\":\"x.YException\\n\\tat a.b(C.java:1)\"}".to_vec()),
        Just(b"Exception".to_vec()),
        Just(b"$$Lambda$1/0x0".to_vec()),
        Just(b"app//".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
    }

    fn line() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(fragment(), 0..5).prop_map(|parts| {
            let mut l: Vec<u8> = parts.concat();
            l.retain(|b| *b != b'\n');
            l
        })
    }

    /// Runs lines through an assembler; returns (total lines in events, events, fingerprints).
    fn run(an: &Analyzer, lines: &[Vec<u8>]) -> (u64, usize, Vec<Fingerprint>) {
        let mut asm = EventAssembler::new(an);
        let (mut total, mut events, mut fps) = (0u64, 0usize, Vec::new());
        let mut off = 0u64;
        let mut last_committed = None;
        for l in lines {
            off += l.len() as u64 + 1;
            asm.push_line(an, l, off, 0, &mut |e| {
                total += u64::from(e.lines);
                events += 1;
                fps.extend(e.exception.map(|x| x.fingerprint));
                assert!(e.first_line.len() <= e.text.len());
            });
            // The checkpoint only moves forward, and never past the current line.
            let c = asm.committed_offset();
            assert!(c >= last_committed && c.unwrap_or(0) <= off);
            last_committed = c;
        }
        asm.flush(an, &mut |e| {
            total += u64::from(e.lines);
            events += 1;
            fps.extend(e.exception.map(|x| x.fingerprint));
        });
        if !lines.is_empty() {
            assert_eq!(asm.committed_offset(), Some(off));
        }
        (total, events, fps)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any bytes: no panic, every line in exactly one event.
        #[test]
        fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096), cap in 0usize..3000) {
            let an = analyzer(cap);
            let lines: Vec<Vec<u8>> = data.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
            let (total, _, _) = run(&an, &lines);
            prop_assert_eq!(total, lines.len() as u64);
        }

        /// Log-shaped random lines: no panic, every line in exactly one event.
        #[test]
        fn log_shaped_lines(lines in proptest::collection::vec(line(), 0..60), cap in 1000usize..4000) {
            let an = analyzer(cap);
            let (total, events, _) = run(&an, &lines);
            prop_assert_eq!(total, lines.len() as u64);
            prop_assert!(events <= lines.len());
        }

        /// Reordering unrelated lines (other records logged between the traces) changes no
        /// fingerprint, nor their order.
        #[test]
        fn unrelated_lines_do_not_change_fingerprints(
            seed in any::<u64>(),
            noise in proptest::collection::vec((0u32..1000, 0usize..4), 0..40),
            line_no in 1u32..5000,
        ) {
            let an = analyzer(64 * 1024);
            let traces = [
                format!("2026-11-23 18:45:02.461 ERROR [main] shop.Orders - failed {seed}\n\
                         java.lang.IllegalStateException: order {seed}\n\
                         \tat com.example.Orders.place(Orders.java:{line_no})\n\
                         \tat com.example.Web$$Lambda$12/0x000000080012a000.handle(Unknown Source)\n\
                         \tat java.base/java.lang.Thread.run(Thread.java:840)"),
                format!("2026-11-23 18:45:03.000 ERROR [main] shop.Pay - failed\n\
                         shop.PayException: declined {seed}\n\
                         \tat app//com.example.Pay.charge(Pay.java:{line_no})\n\
                         Caused by: java.net.SocketTimeoutException: Read timed out\n\
                         \tat com.example.Http.post(Http.java:{line_no})\n\
                         \t... 1 more"),
            ];
            let noise_lines = [
                "2026-11-23 18:45:04.000 INFO [main] shop.Cart - GET /api/cart 200",
                "2026-11-23 18:45:05.000 WARN [main] shop.Db - slow query",
                "2026-11-23 18:45:06.000 DEBUG [main] shop.Cache - refreshed",
                "2026-11-23 18:45:07.000 INFO [main] shop.Cart - Error budget fine",
            ];
            let build = |noise: &[(u32, usize)]| -> Vec<Vec<u8>> {
                // Noise goes before, between and after the traces, as its keys say.
                let mut slots: Vec<(u32, String)> = noise
                    .iter()
                    .map(|(k, i)| (*k, noise_lines[*i].to_owned()))
                    .collect();
                slots.push((333, traces[0].clone()));
                slots.push((666, traces[1].clone()));
                slots.sort_by_key(|s| s.0);
                slots
                    .iter()
                    .flat_map(|(_, s)| s.lines().map(|l| l.as_bytes().to_vec()).collect::<Vec<_>>())
                    .collect()
            };
            let (_, _, alone) = run(&an, &build(&[]));
            prop_assert_eq!(alone.len(), 2);
            let (_, _, mixed) = run(&an, &build(&noise));
            prop_assert_eq!(&alone, &mixed);
            let mut reversed = noise.clone();
            reversed.reverse();
            for (k, _) in reversed.iter_mut() {
                *k = 999 - *k;
            }
            let (_, _, again) = run(&an, &build(&reversed));
            prop_assert_eq!(&alone, &again);
        }
    }
}
