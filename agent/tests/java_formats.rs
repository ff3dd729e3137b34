//! Table tests of the event assembler: one table per log format, input lines and the events
//! expected.

// Inside `mod java` so that `cargo test -p vigil-agent java` selects these tests.
mod java {
    use std::time::{Duration, Instant};

    use regex::bytes::Regex;
    use vigil_agent::java::{Analyzer, AnalyzerConfig, Event, EventAssembler, Level, Tz};

    /// What a test expects of an event.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Got {
        time: i64,
        level: Level,
        lines: u32,
        class: Option<String>,
        causes: Vec<String>,
        truncated: bool,
    }

    fn got(ev: &Event<'_>) -> Got {
        Got {
            time: ev.time,
            level: ev.level,
            lines: ev.lines,
            class: ev.exception.map(|x| x.class.clone()),
            causes: ev.exception.map(|x| x.causes.clone()).unwrap_or_default(),
            truncated: ev.truncated,
        }
    }

    fn analyzer() -> Analyzer {
        Analyzer::new(AnalyzerConfig {
            timezone: Tz::Utc,
            ..AnalyzerConfig::default()
        })
        .expect("builds")
    }

    const READ_AT: i64 = 2_000_000_000;

    fn run(an: &Analyzer, text: &str) -> Vec<Got> {
        let mut asm = EventAssembler::new(an);
        let mut out = Vec::new();
        let mut off = 0;
        for line in text.split('\n') {
            off += line.len() as u64 + 1;
            asm.push_line(an, line.as_bytes(), off, READ_AT, &mut |e| {
                out.push(got(&e))
            });
        }
        asm.flush(an, &mut |e| out.push(got(&e)));
        out
    }

    fn ev(time: i64, level: Level, lines: u32, class: Option<&str>, causes: &[&str]) -> Got {
        Got {
            time,
            level,
            lines,
            class: class.map(str::to_owned),
            causes: causes.iter().map(|s| (*s).to_owned()).collect(),
            truncated: false,
        }
    }

    /// 2026-11-23T18:45:02Z
    const T: i64 = 1_795_459_502;

    #[test]
    fn formats() {
        use Level::*;
        let table: &[(&str, &str, Vec<Got>)] = &[
            (
                "logback with common frames omitted",
                "2026-11-23 18:45:02.461 ERROR [http-nio-8080-exec-1] shop.OrderService - Order checkout failed\n\
             shop.svc.RemoteCallException: inventory call failed\n\
             \tat lib-v1//shop.svc.ServicesImpl.remoteCall(ServicesImpl.java:14)\n\
             Caused by: java.net.SocketTimeoutException: Read timed out\n\
             \tat lib-v1//shop.svc.InventoryClient.readReply(InventoryClient.java:13)\n\
             \t... 4 common frames omitted\n\
             2026-11-23 18:45:03.562 INFO  [http-nio-8080-exec-1] shop.OrderService - GET /api/cart 200",
                vec![
                    ev(
                        T,
                        Error,
                        6,
                        Some("shop.svc.RemoteCallException"),
                        &["java.net.SocketTimeoutException"],
                    ),
                    ev(T + 1, Info, 1, None, &[]),
                ],
            ),
            (
                "log4j2 %xEx with zone and packaging data",
                "2026-11-23T20:45:02.033+02:00 ERROR [main] s.h.OrderService - Cart total failed\n\
             java.lang.NullPointerException: Cannot invoke \"String.length()\" because \"cartId\" is null\n\
             \tat shop.svc.CartMath.sum(CartMath.java:6) ~[?:?]\n\
             \tat shop.ShopApp.tick(ShopApp.java:129) ~[app/:?]\n\
             2026-11-23T18:45:09.813Z WARN  [main] s.h.OrderService - Slow query on orders took 1309 ms",
                vec![
                    ev(T, Error, 4, Some("java.lang.NullPointerException"), &[]),
                    ev(T + 7, Warn, 1, None, &[]),
                ],
            ),
            (
                "java.util.logging default two-line format",
                "Nov 23, 2026 6:45:02 PM shop.OrderService tick\n\
             SEVERE: Failed to load promotion engine\n\
             java.lang.ClassNotFoundException: shop.svc.PromoEngineV2\n\
             \tat java.base/java.net.URLClassLoader.findClass(URLClassLoader.java:445)\n\
             \n\
             Nov 23, 2026 6:45:03 PM shop.OrderService tick\n\
             WARNING: Slow query\n\
             Nov 23, 2026 6:45:04 PM shop.OrderService tick\n\
             INFO: fine",
                vec![
                    ev(T, Error, 5, Some("java.lang.ClassNotFoundException"), &[]),
                    ev(T + 1, Warn, 2, None, &[]),
                    ev(T + 2, Info, 2, None, &[]),
                ],
            ),
            (
                "java.util.logging one-line format with a blank line after the trace",
                "2026-11-23 18:45:02.955 SEVERE shop.host-a.OrderService - Failed\n\
             java.lang.ClassNotFoundException: shop.svc.PromoEngineV2\n\
             \tat java.base/java.lang.Class.forName(Class.java:467)\n\
             \n\
             2026-11-23 18:45:03.058 INFO shop.host-a.OrderService - ok",
                vec![
                    ev(T, Error, 4, Some("java.lang.ClassNotFoundException"), &[]),
                    ev(T + 1, Info, 1, None, &[]),
                ],
            ),
            (
                "printStackTrace with ... N more and a comma before the millis",
                "2026-11-23 18:45:02,539 ERROR [main] Failed\n\
             java.lang.RuntimeException: wrapper\n\
             \tat shop.A.a(A.java:1)\n\
             Caused by: java.lang.IllegalStateException: inner\n\
             \tat shop.B.b(B.java:2)\n\
             \t... 1 more\n\
             Caused by: java.lang.OutOfMemoryError: Java heap space\n\
             \t... 2 more",
                vec![ev(
                    T,
                    Error,
                    8,
                    Some("java.lang.RuntimeException"),
                    &[
                        "java.lang.IllegalStateException",
                        "java.lang.OutOfMemoryError",
                    ],
                )],
            ),
            (
                "Suppressed at any indent, blank lines inside a trace",
                "2026-11-23 18:45:02.000 ERROR [main] x - close failed\n\
             java.io.IOException: outer\n\
             \tat shop.A.a(A.java:1)\n\
             \n\
             \tSuppressed: java.lang.IllegalStateException: s\n\
             \t\tat shop.B.b(B.java:2)\n\
             \t\tCaused by: java.lang.LinkageError: nested\n\
             \t\t\t... 3 more\n\
             Caused by: java.net.ConnectException: refused\n\
             \tat shop.C.c(C.java:3)",
                vec![ev(
                    T,
                    Error,
                    10,
                    Some("java.io.IOException"),
                    &["java.net.ConnectException"],
                )],
            ),
            (
                "exception quoted in a message line",
                "2026-11-23 18:45:02.000 WARN  [main] shop.Client - call to inventory failed: java.net.ConnectException: Connection refused\n\
             2026-11-23 18:45:02.100 INFO  [main] shop.GlobalExceptionHandler - registered\n\
             2026-11-23 18:45:02.200 ERROR [main] shop.Client - Error while saving order 17",
                vec![
                    ev(T, Warn, 1, Some("java.net.ConnectException"), &[]),
                    ev(T, Info, 1, None, &[]),
                    ev(T, Error, 1, None, &[]),
                ],
            ),
            (
                "logback default layout: thread before level, no date",
                "18:45:02.461 [main] ERROR shop.OrderService - failed\n\
             java.lang.IllegalArgumentException: bad\n\
             \tat shop.A.a(A.java:1)\n\
             18:45:02.562 [main] DEBUG shop.OrderService - next",
                vec![
                    // The day it was read, or the day before (2033-05-17, read at 03:33 UTC).
                    ev(
                        1_999_968_302,
                        Error,
                        3,
                        Some("java.lang.IllegalArgumentException"),
                        &[],
                    ),
                    ev(1_999_968_302, Other, 1, None, &[]),
                ],
            ),
            (
                "Tomcat catalina",
                "23-Nov-2026 18:45:02.123 SEVERE [main] org.apache.catalina.core.StandardContext.startInternal Error\n\
             java.lang.NoClassDefFoundError: shop/Missing\n\
             \tat shop.Boot.start(Boot.java:3)",
                vec![ev(T, Error, 3, Some("java.lang.NoClassDefFoundError"), &[])],
            ),
            (
                "lines before the first record, then an uncaught exception",
                "\tat shop.Orphan.run(Orphan.java:1)\n\
             2026-11-23 18:45:02.000 INFO [main] x - start\n\
             Exception in thread \"main\" java.lang.IllegalStateException: boom\n\
             \tat shop.Main.main(Main.java:5)",
                vec![
                    ev(READ_AT, Other, 1, None, &[]),
                    ev(T, Info, 3, Some("java.lang.IllegalStateException"), &[]),
                ],
            ),
            (
                "logstash-logback-encoder JSON lines",
                "{\"@timestamp\":\"2026-11-23T18:45:02.461Z\",\"@version\":\"1\",\"message\":\"checkout failed\",\"logger_name\":\"shop.OrderService\",\"thread_name\":\"main\",\"level\":\"ERROR\",\"level_value\":40000,\"stack_trace\":\"shop.svc.RemoteCallException: inventory call failed\\n\\tat shop.svc.ServicesImpl.remoteCall(ServicesImpl.java:14)\\nCaused by: java.net.SocketTimeoutException: Read timed out\\n\\tat shop.svc.InventoryClient.readReply(InventoryClient.java:13)\\n\\t... 4 common frames omitted\\n\"}\n\
             {\"@timestamp\":\"2026-11-23T18:45:03.000Z\",\"message\":\"ok\",\"level\":\"INFO\"}\n\
             {\"@timestamp\":\"2026-11-23T18:45:04.000Z\",\"message\":\"retry after java.net.ConnectException: refused\",\"level\":\"WARN\"}\n\
             {\"msg\":\"no time, no level: still its own record\"}",
                vec![
                    ev(
                        T,
                        Error,
                        1,
                        Some("shop.svc.RemoteCallException"),
                        &["java.net.SocketTimeoutException"],
                    ),
                    ev(T + 1, Info, 1, None, &[]),
                    ev(T + 2, Warn, 1, Some("java.net.ConnectException"), &[]),
                    ev(READ_AT, Other, 1, None, &[]),
                ],
            ),
            (
                "ECS JSON lines, flat and nested keys",
                "{\"@timestamp\":\"2026-11-23T18:45:02.461Z\",\"log.level\":\"ERROR\",\"message\":\"boom\",\"ecs.version\":\"1.2.0\",\"error.type\":\"java.lang.IllegalStateException\",\"error.stack_trace\":\"java.lang.IllegalStateException: x\\n\\tat shop.A.a(A.java:1)\\n\"}\n\
             {\"@timestamp\":\"2026-11-23T18:45:03.461Z\",\"log\":{\"level\":\"WARN\",\"logger\":\"shop.A\"},\"message\":\"m\",\"error\":{\"type\":\"java.lang.StackOverflowError\",\"stack_trace\":\"java.lang.StackOverflowError\\n\\tat shop.A.r(A.java:1)\\n\\tat shop.A.r(A.java:1)\"}}\n\
             {\"@timestamp\":\"2026-11-23T18:45:04Z\",\"log.level\":\"ERROR\",\"message\":\"read failed\",\"error.type\":\"java.io.UncheckedIOException\",\"error.message\":\"disk full\"}",
                vec![
                    ev(T, Error, 1, Some("java.lang.IllegalStateException"), &[]),
                    ev(T + 1, Warn, 1, Some("java.lang.StackOverflowError"), &[]),
                    ev(T + 2, Error, 1, Some("java.io.UncheckedIOException"), &[]),
                ],
            ),
        ];
        let an = analyzer();
        for (name, text, want) in table {
            assert_eq!(&run(&an, text), want, "{name}");
        }
    }

    #[test]
    fn traces_without_record_starts() {
        // printStackTrace() to stderr (catalina.out, nohup.out): no line starts a record.
        use Level::*;
        const R: i64 = READ_AT;
        let npe = "java.lang.NullPointerException";
        let table: &[(&str, &str, Vec<Got>)] = &[
            (
                "traces back to back with a plain line between (issue 14)",
                "java.lang.NullPointerException\n\
                 \tat com.a.B.c(B.java:1)\n\
                 \tat com.a.B.d(B.java:2)\n\
                 Processing order 17\n\
                 java.lang.IllegalStateException: boom\n\
                 \tat com.a.C.d(C.java:2)\n\
                 Caused by: java.io.IOException: x\n\
                 \tat com.a.D.e(D.java:3)\n\
                 \t... 1 more\n\
                 java.lang.ClassNotFoundException: com.x.Y\n\
                 \tat java.net.URLClassLoader.findClass(URLClassLoader.java:387)",
                vec![
                    ev(R, Other, 3, Some(npe), &[]),
                    ev(R, Other, 1, None, &[]),
                    ev(
                        R,
                        Other,
                        5,
                        Some("java.lang.IllegalStateException"),
                        &["java.io.IOException"],
                    ),
                    ev(R, Other, 2, Some("java.lang.ClassNotFoundException"), &[]),
                ],
            ),
            (
                "a multi-line message stays with its trace, plain lines stay together",
                "--- com.x.FooTest::testBar\n\
                 junit.framework.ComparisonFailure: expected:</**\n\
                 \x20* @return {undefined}\n\
                 \x20*/\n\
                 java.lang.String x;> but was:<...>\n\
                 \n\
                 \tat junit.framework.Assert.assertEquals(Assert.java:100)\n\
                 \n\
                 --- com.x.FooTest::testBaz\n\
                 second plain line",
                vec![
                    ev(R, Other, 1, None, &[]),
                    ev(R, Other, 7, Some("junit.framework.ComparisonFailure"), &[]),
                    ev(R, Other, 2, None, &[]),
                ],
            ),
            (
                "frameless fast-throw exceptions, one event each",
                "java.lang.NullPointerException\n\
                 java.lang.NullPointerException\n\
                 Processing order 18\n\
                 java.lang.ArithmeticException\n\
                 Exception in thread \"main\" java.lang.ArrayIndexOutOfBoundsException",
                vec![
                    ev(R, Other, 1, Some(npe), &[]),
                    ev(R, Other, 1, Some(npe), &[]),
                    ev(R, Other, 1, None, &[]),
                    ev(R, Other, 1, Some("java.lang.ArithmeticException"), &[]),
                    ev(
                        R,
                        Other,
                        1,
                        Some("java.lang.ArrayIndexOutOfBoundsException"),
                        &[],
                    ),
                ],
            ),
            (
                "message lines that look like frames or headers, indented",
                "com.fasterxml.jackson.databind.JsonMappingException: Unexpected token\n\
                 \x20at [Source: {\n\
                 \x20 \"id\" : 1\n\
                 }; line: 3, column: 5]\n\
                 \tat com.fasterxml.jackson.databind.X.y(X.java:1)\n\
                 org.opentest4j.MultipleFailuresError: Multiple Failures (2 failures)\n\
                 \torg.opentest4j.AssertionFailedError: expected: <1> but was: <2>\n\
                 \tjava.lang.AssertionError: no\n\
                 \tat org.junit.jupiter.api.AssertAll.assertAll(AssertAll.java:80)\n\
                 \tSuppressed: org.opentest4j.AssertionFailedError: expected: <1> but was: <2>\n\
                 \t\tat shop.T.a(T.java:1)\n\
                 \t\t... 2 more\n\
                 \t[CIRCULAR REFERENCE: java.lang.AssertionError: no]",
                vec![
                    ev(
                        R,
                        Other,
                        5,
                        Some("com.fasterxml.jackson.databind.JsonMappingException"),
                        &[],
                    ),
                    ev(
                        R,
                        Other,
                        8,
                        Some("org.opentest4j.MultipleFailuresError"),
                        &[],
                    ),
                ],
            ),
            (
                "catalina.out: a record, then the app's traces on stderr",
                "23-Nov-2026 18:45:02.123 INFO [main] org.apache.catalina.startup.Catalina.start Server startup in [812] milliseconds\n\
                 java.lang.IllegalStateException: first\n\
                 \tat shop.A.a(A.java:1)\n\
                 java.lang.NoClassDefFoundError: shop/Missing\n\
                 \tat shop.B.b(B.java:2)\n\
                 Caused by: java.lang.ClassNotFoundException: shop.Missing\n\
                 \t... 1 more\n\
                 \n\
                 23-Nov-2026 18:45:03.000 INFO [main] x - next",
                vec![
                    ev(T, Info, 3, Some("java.lang.IllegalStateException"), &[]),
                    ev(
                        R,
                        Other,
                        5,
                        Some("java.lang.NoClassDefFoundError"),
                        &["java.lang.ClassNotFoundException"],
                    ),
                    ev(T + 1, Info, 1, None, &[]),
                ],
            ),
            (
                "a thread dump: lock lines stay with their frames",
                "\"main\" #1 prio=5 os_prio=0 tid=0x1 nid=0x2 waiting on condition\n\
                 \x20  java.lang.Thread.State: TIMED_WAITING (sleeping)\n\
                 \tat java.lang.Thread.sleep(Native Method)\n\
                 \t- locked <0x000000076b5bb0a8> (a java.lang.Object)\n\
                 \n\
                 \"GC Thread#0\" os_prio=0 tid=0x3 nid=0x4 runnable",
                vec![ev(R, Other, 5, None, &[]), ev(R, Other, 1, None, &[])],
            ),
        ];
        let an = analyzer();
        for (name, text, want) in table {
            assert_eq!(&run(&an, text), want, "{name}");
        }
        // With `event_start` configured, the pattern alone decides where events start.
        let an = Analyzer::new(AnalyzerConfig {
            timezone: Tz::Utc,
            event_start: Some(Regex::new("^--- ").expect("valid")),
            ..AnalyzerConfig::default()
        })
        .expect("builds");
        assert_eq!(
            run(
                &an,
                "--- a\njava.lang.NullPointerException\n\tat a.B.c(B.java:1)\nplain\njava.lang.ArithmeticException"
            ),
            vec![ev(R, Other, 5, Some(npe), &[])]
        );
    }

    #[test]
    fn event_start_override() {
        let an = Analyzer::new(AnalyzerConfig {
            timezone: Tz::Utc,
            event_start: Some(Regex::new(r"^\[req ").expect("valid")),
            ..AnalyzerConfig::default()
        })
        .expect("builds");
        let got = run(
            &an,
            "[req 1] 2026-11-23 18:45:02 ERROR failed\n\
         2026-11-23 18:45:02.000 this date line does not start a record here\n\
         java.lang.IllegalStateException: x\n\
         \tat shop.A.a(A.java:1)\n\
         [req 2] WARN ok",
        );
        assert_eq!(
            got,
            vec![
                ev(
                    READ_AT,
                    Level::Error,
                    4,
                    Some("java.lang.IllegalStateException"),
                    &[]
                ),
                ev(READ_AT, Level::Warn, 1, None, &[]),
            ]
        );
    }

    #[test]
    fn size_cap_truncates_but_never_splits() {
        let an = Analyzer::new(AnalyzerConfig {
            timezone: Tz::Utc,
            max_event_bytes: 2048,
            ..AnalyzerConfig::default()
        })
        .expect("builds");
        let mut text = String::from(
            "2026-11-23 18:45:02.000 ERROR [main] x - failed\njava.lang.RuntimeException: outer\n",
        );
        for i in 0..500 {
            text.push_str(&format!(
                "\tat org.framework.Layer{i}.call(Layer.java:{i})\n"
            ));
        }
        text.push_str("Caused by: java.lang.OutOfMemoryError: Java heap space\n");
        text.push_str("\tat shop.Cache.grow(Cache.java:9)\n\t... 500 more\n");
        text.push_str(&"x".repeat(100_000));
        text.push_str("\n2026-11-23 18:45:03.000 INFO [main] x - next");
        let got = run(&an, &text);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].lines, 2 + 500 + 3);
        assert!(got[0].truncated);
        // The cause chain past the cap is still known.
        assert_eq!(got[0].causes, vec!["java.lang.OutOfMemoryError"]);
        // A line that is no part of a trace ends it; over the cap alone, it is cut, still one
        // event.
        assert_eq!(
            got[1],
            Got {
                truncated: true,
                ..ev(READ_AT, Level::Other, 1, None, &[])
            }
        );
        assert_eq!(got[2], ev(T + 1, Level::Info, 1, None, &[]));
    }

    #[test]
    fn flush_idle_and_committed_offset() {
        let an = analyzer();
        let mut asm = EventAssembler::new(&an);
        let mut n = 0;
        let l1 = b"2026-11-23 18:45:02.000 ERROR [main] x - failed";
        let l2 = b"java.lang.IllegalStateException: x";
        let l3 = b"\tat shop.A.a(A.java:1)";
        let mut off = 0;
        for l in [&l1[..], &l2[..], &l3[..]] {
            off += l.len() as u64 + 1;
            asm.push_line(&an, l, off, READ_AT, &mut |_| n += 1);
        }
        assert_eq!((n, asm.committed_offset()), (0, None));
        let t0 = Instant::now();
        let idle = Duration::from_secs(2);
        asm.flush_idle(&an, t0, idle, &mut |_| n += 1);
        asm.flush_idle(&an, t0 + Duration::from_secs(1), idle, &mut |_| n += 1);
        assert_eq!(n, 0, "not idle long enough");
        let mut class = None;
        asm.flush_idle(&an, t0 + Duration::from_secs(3), idle, &mut |e| {
            n += 1;
            class = e.exception.map(|x| x.class.clone());
        });
        assert_eq!(n, 1);
        assert_eq!(class.as_deref(), Some("java.lang.IllegalStateException"));
        assert_eq!(asm.committed_offset(), Some(off));
        assert!(!asm.has_pending());

        // A line arriving between two idle checks restarts the wait.
        let l4 = b"2026-11-23 18:45:04.000 INFO [main] x - later";
        let before = off;
        off += l4.len() as u64 + 1;
        asm.push_line(&an, l4, off, READ_AT, &mut |_| n += 1);
        asm.flush_idle(&an, t0 + Duration::from_secs(4), idle, &mut |_| n += 1);
        asm.push_line(&an, b"continued", off + 10, READ_AT, &mut |_| n += 1);
        asm.flush_idle(&an, t0 + Duration::from_secs(7), idle, &mut |_| n += 1);
        assert_eq!((n, asm.committed_offset()), (1, Some(before)));
        asm.flush(&an, &mut |e| {
            n += 1;
            assert_eq!(e.lines, 2);
        });
        assert_eq!((n, asm.committed_offset()), (2, Some(off + 10)));
    }

    #[test]
    fn app_packages_weigh_in_fingerprints() {
        let trace = |app_line: u32, helper: &str| {
            format!(
                "2026-11-23 18:45:02.000 ERROR [main] x - failed\n\
             java.lang.IllegalStateException: boom {app_line}\n\
             \tat com.example.shop.{helper}(Util.java:{app_line})\n\
             \tat org.springframework.aop.Proxy.invoke(Proxy.java:1)\n\
             \tat com.example.shop.Orders.place(Orders.java:{app_line})"
            )
        };
        let fp = |an: &Analyzer, t: &str| {
            let mut asm = EventAssembler::new(an);
            let mut fp = None;
            for (i, l) in t.lines().enumerate() {
                asm.push_line(an, l.as_bytes(), i as u64, 0, &mut |_| {});
            }
            asm.flush(an, &mut |e| fp = e.exception.map(|x| x.fingerprint));
            fp.expect("an exception")
        };
        let an = Analyzer::new(AnalyzerConfig {
            app_packages: vec!["com.example".to_owned()],
            ..AnalyzerConfig::default()
        })
        .expect("builds");
        // Same code, other lines and message: same fingerprint.
        assert_eq!(
            fp(&an, &trace(10, "Util.check")),
            fp(&an, &trace(99, "Util.check"))
        );
        // Another throwing method: another fingerprint.
        assert_ne!(
            fp(&an, &trace(10, "Util.check")),
            fp(&an, &trace(10, "Util.verify"))
        );
        // Another root cause: another fingerprint.
        let with_cause = format!(
            "{}\nCaused by: java.io.IOException: disk\n\t... 3 more",
            trace(10, "Util.check")
        );
        assert_ne!(fp(&an, &trace(10, "Util.check")), fp(&an, &with_cause));
    }
}
