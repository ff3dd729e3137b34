//! The Java analysis on real JVM output: `../shared/corpus` (see its README).

// Inside `mod java` so that `cargo test -p vigil-agent java` selects these tests.
mod java {
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::path::{Path, PathBuf};

    use vigil_agent::java::{
        Analyzer, AnalyzerConfig, Event, EventAssembler, Fingerprint, Level, Tz, read_lines,
    };

    fn corpus() -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
        assert!(
            dir.join("README.md").is_file(),
            "the shared corpus is missing: expected it at {} (../shared/corpus beside the \
         workspace root)",
            dir.display()
        );
        dir
    }

    /// What the tests keep of an event.
    #[derive(Debug, Clone)]
    struct Ev {
        line_number: u64,
        lines: u32,
        time: i64,
        level: Level,
        first_line: String,
        class: Option<String>,
        causes: Vec<String>,
        frames: Vec<String>,
        fingerprint: Option<Fingerprint>,
        family: Fingerprint,
        dangerous: bool,
    }

    fn keep(ev: &Event<'_>) -> Ev {
        Ev {
            line_number: ev.line_number,
            lines: ev.lines,
            time: ev.time,
            level: ev.level,
            first_line: String::from_utf8_lossy(ev.first_line).into_owned(),
            class: ev.exception.map(|x| x.class.clone()),
            causes: ev.exception.map(|x| x.causes.clone()).unwrap_or_default(),
            frames: ev.exception.map(|x| x.frames.clone()).unwrap_or_default(),
            fingerprint: ev.exception.map(|x| x.fingerprint),
            family: ev.exception.map(|x| x.family).unwrap_or_default(),
            dangerous: ev.exception.is_some_and(|x| x.dangerous),
        }
    }

    fn events_of(analyzer: &Analyzer, data: &[u8]) -> Vec<Ev> {
        let mut asm = EventAssembler::new(analyzer);
        let mut evs = Vec::new();
        read_lines(data, 1 << 20, |line, end| {
            asm.push_line(analyzer, line, end, 0, &mut |ev| evs.push(keep(&ev)));
        })
        .expect("reading from memory cannot fail");
        asm.flush(analyzer, &mut |ev| evs.push(keep(&ev)));
        evs
    }

    fn utc_analyzer() -> Analyzer {
        Analyzer::new(AnalyzerConfig {
            timezone: Tz::Utc,
            ..AnalyzerConfig::default()
        })
        .expect("default config builds")
    }

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    #[test]
    fn jvm_samples_exact_counts() {
        let dir = corpus().join("jvm-samples");
        let an = utc_analyzer();
        // (file, events, error events, warn events,
        //  [(class, causes, count)], dangerous events)
        type Want = (
            &'static str,
            usize,
            usize,
            usize,
            &'static [(&'static str, &'static [&'static str], usize)],
            usize,
        );
        const CNF: &str = "java.lang.ClassNotFoundException";
        const REMOTE: &str = "shop.svc.RemoteCallException";
        const TIMEOUT: &[&str] = &["java.net.SocketTimeoutException"];
        const WANT: &[Want] = &[
            (
                "jul.log",
                402,
                12,
                3,
                &[(CNF, &[], 10), (REMOTE, TIMEOUT, 2)],
                10,
            ),
            (
                "log4j2.log",
                398,
                12,
                6,
                &[
                    (CNF, &[], 8),
                    (REMOTE, TIMEOUT, 3),
                    ("java.lang.NullPointerException", &[], 1),
                ],
                8,
            ),
            (
                "logback.log",
                395,
                3,
                4,
                &[(CNF, &[], 2), (REMOTE, TIMEOUT, 1)],
                2,
            ),
            ("plain.log", 406, 12, 5, &[(CNF, &[], 12)], 12),
        ];
        let mut fp_by_class: HashMap<String, HashSet<Fingerprint>> = HashMap::new();
        for (file, events, errors, warns, classes, dangerous) in WANT {
            let evs = events_of(&an, &read(&dir.join(file)));
            assert_eq!(evs.len(), *events, "{file}: events");
            let errs = evs.iter().filter(|e| e.level == Level::Error).count();
            let wrns = evs.iter().filter(|e| e.level == Level::Warn).count();
            assert_eq!(
                (errs, wrns),
                (*errors, *warns),
                "{file}: error and warn events"
            );
            let mut got: BTreeMap<(String, Vec<String>), usize> = BTreeMap::new();
            for e in &evs {
                if let Some(c) = &e.class {
                    *got.entry((c.clone(), e.causes.clone())).or_default() += 1;
                    if let Some(fp) = e.fingerprint {
                        fp_by_class.entry(c.clone()).or_default().insert(fp);
                    }
                }
            }
            let want_map: BTreeMap<(String, Vec<String>), usize> = classes
                .iter()
                .map(|(c, causes, n)| {
                    (
                        (
                            (*c).to_owned(),
                            causes.iter().map(|s| (*s).to_owned()).collect(),
                        ),
                        *n,
                    )
                })
                .collect();
            assert_eq!(got, want_map, "{file}: exception events by chain");
            let d = evs.iter().filter(|e| e.dangerous).count();
            assert_eq!(d, *dangerous, "{file}: dangerous events");
            // Every exception event is an ERROR record; every ERROR record here holds one.
            for e in &evs {
                assert_eq!(
                    e.class.is_some(),
                    e.level == Level::Error,
                    "{file}:{} {}",
                    e.line_number,
                    e.first_line
                );
            }
            // Times are the records' own, in order, within the run of the sample.
            assert!(
                evs.iter()
                    .all(|e| (1_795_459_400..1_795_459_600).contains(&e.time))
            );
            assert!(
                evs.windows(2).all(|w| w[0].time <= w[1].time),
                "{file}: times"
            );
            // Lines add up: nothing lost, nothing counted twice.
            let lines: u64 = evs.iter().map(|e| u64::from(e.lines)).sum();
            let physical = read(&dir.join(file))
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            assert_eq!(lines, physical, "{file}: lines");
        }
        // The same failure from the same code has one fingerprint in every logging setup
        // (module prefixes, `~[app/:?]` packaging data, `... N more` vs `common frames omitted`).
        for (class, fps) in &fp_by_class {
            assert_eq!(fps.len(), 1, "{class}: {fps:?}");
        }
        let all: HashSet<_> = fp_by_class.values().flatten().collect();
        assert_eq!(all.len(), 3, "three different failures, three fingerprints");
        // Fingerprints travel to the detector and must not change silently: a change here
        // needs a new FINGERPRINT_VERSION. (Version 2 picks the site's section differently
        // and reads fewer message lines as frames; these three kept their version 1 values.)
        assert_eq!(vigil_agent::java::FINGERPRINT_VERSION, 2);
        for (class, fp) in [
            ("java.lang.ClassNotFoundException", "473dd02637e49090"),
            ("shop.svc.RemoteCallException", "d1e652b4343e60e0"),
            ("java.lang.NullPointerException", "576e03e534220422"),
        ] {
            let want: Fingerprint = fp.parse().expect("hex");
            assert_eq!(fp_by_class[class], HashSet::from([want]), "{class}");
        }
    }

    /// `(class, causes)` of an event's exception.
    fn chain(e: &Ev) -> (String, Vec<String>) {
        (e.class.clone().unwrap_or_default(), e.causes.clone())
    }

    #[test]
    fn jvm_stderr_traces_back_to_back() {
        // `System.out` lines and `printStackTrace()` output with no timestamps (catalina.out,
        // nohup.out): each trace is its own event, each plain line too.
        let dir = corpus().join("jvm-samples");
        let an = utc_analyzer();
        let data = read(&dir.join("stderr-printstacktrace.log"));
        let evs = events_of(&an, &data);
        let plain: Vec<&str> = evs
            .iter()
            .filter(|e| e.class.is_none())
            .map(|e| e.first_line.as_str())
            .collect();
        assert_eq!(
            plain,
            [
                "Processing order 17",
                "Processing order 18",
                "Processing order 19",
                "Shutting down"
            ]
        );
        assert!(evs.iter().all(|e| e.class.is_none() == (e.lines == 1)));
        let mut by_chain: BTreeMap<(String, Vec<String>), (usize, HashSet<Fingerprint>)> =
            BTreeMap::new();
        for e in evs.iter().filter(|e| e.class.is_some()) {
            let entry = by_chain.entry(chain(e)).or_default();
            entry.0 += 1;
            entry.1.extend(e.fingerprint);
        }
        let s = |v: &str| v.to_owned();
        let want: BTreeMap<(String, Vec<String>), usize> = [
            ((s("java.lang.ClassNotFoundException"), vec![]), 3),
            (
                (
                    s("java.lang.IllegalStateException"),
                    vec![s("java.lang.ArithmeticException")],
                ),
                3,
            ),
            ((s("java.lang.NullPointerException"), vec![]), 3),
        ]
        .into_iter()
        .collect();
        let got: BTreeMap<_, usize> = by_chain.iter().map(|(k, v)| (k.clone(), v.0)).collect();
        assert_eq!(got, want);
        // One failure, one fingerprint.
        assert!(by_chain.values().all(|v| v.1.len() == 1), "{by_chain:?}");
        let dangerous: Vec<&str> = evs
            .iter()
            .filter(|e| e.dangerous)
            .filter_map(|e| e.class.as_deref())
            .collect();
        assert_eq!(dangerous, ["java.lang.ClassNotFoundException"; 3]);
        let lines: u64 = evs.iter().map(|e| u64::from(e.lines)).sum();
        assert_eq!(lines, data.iter().filter(|b| **b == b'\n').count() as u64);
    }

    #[test]
    fn jvm_fast_throw_is_the_family_of_the_full_trace() {
        // -XX:+OmitStackTraceInFastThrow: the site's first NullPointerExceptions carry a
        // message and frames, the later ones (preallocated by the JIT) neither.
        let dir = corpus().join("jvm-samples");
        let an = utc_analyzer();
        let evs = events_of(&an, &read(&dir.join("fastthrow.log")));
        assert_eq!(evs.len(), 6);
        assert!(
            evs.iter()
                .all(|e| e.class.as_deref() == Some("java.lang.NullPointerException"))
        );
        let (full, bare) = evs.split_at(3);
        assert!(full.iter().all(|e| e.lines == 3 && !e.frames.is_empty()));
        assert!(bare.iter().all(|e| e.lines == 1 && e.frames.is_empty()));
        let full_fps: HashSet<_> = full.iter().map(|e| e.fingerprint).collect();
        let bare_fps: HashSet<_> = bare.iter().map(|e| e.fingerprint).collect();
        assert_eq!((full_fps.len(), bare_fps.len()), (1, 1));
        // The frameless shape fingerprints as the family of the full one: the class chain
        // alone, so the detector can tell it is the same failure.
        let family: HashSet<_> = full.iter().map(|e| Some(e.family)).collect();
        assert_eq!(family, bare_fps);
        assert!(bare.iter().all(|e| Some(e.family) == e.fingerprint));
    }

    #[test]
    fn jvm_cached_class_resolution_error_has_one_fingerprint() {
        // The first NoClassDefFoundError prints its ClassNotFoundException cause with the
        // class loader's frames, later ones (HotSpot's cached resolution error) only
        // `... 5 common frames omitted`: the same failure, one fingerprint.
        let dir = corpus().join("jvm-samples");
        let an = utc_analyzer();
        let evs = events_of(&an, &read(&dir.join("ncdfe-cached.log")));
        assert_eq!(evs.len(), 3);
        let fps: HashSet<_> = evs.iter().map(|e| e.fingerprint).collect();
        assert_eq!(fps.len(), 1, "{evs:#?}");
        for e in &evs {
            assert_eq!(
                chain(e),
                (
                    "java.lang.NoClassDefFoundError".to_owned(),
                    vec!["java.lang.ClassNotFoundException".to_owned()]
                )
            );
            assert!(e.dangerous);
            assert_eq!(e.frames[0], "shop.svc.ServicesImpl.tax");
        }
    }

    #[test]
    fn jvm_samples_definitions() {
        let dir = corpus().join("jvm-samples");
        let an = utc_analyzer();
        let evs = events_of(&an, &read(&dir.join("logback.log")));
        let cnf = evs
            .iter()
            .find(|e| e.class.as_deref() == Some("java.lang.ClassNotFoundException"))
            .expect("a ClassNotFoundException");
        assert_eq!(
            cnf.frames,
            [
                "java.net.URLClassLoader.findClass",
                "shop.svc.ServicesImpl.loadPromo",
                "shop.ShopApp.tick",
                "shop.ShopApp.runHost",
                "shop.ShopApp.lambda$main"
            ]
        );
        assert!(cnf.dangerous);
        let remote = evs
            .iter()
            .find(|e| e.class.as_deref() == Some("shop.svc.RemoteCallException"))
            .expect("a RemoteCallException");
        assert_eq!(remote.lines, 12);
        assert_eq!(
            remote.frames,
            [
                "shop.svc.InventoryClient.readReply",
                "shop.svc.InventoryClient.fetch",
                "shop.svc.ServicesImpl.remoteCall"
            ]
        );
        // `app_packages` restricts the app's frames to the listed packages.
        let an = Analyzer::new(AnalyzerConfig {
            timezone: Tz::Utc,
            app_packages: vec!["shop.svc".to_owned()],
            ..AnalyzerConfig::default()
        })
        .expect("builds");
        let evs = events_of(&an, &read(&dir.join("logback.log")));
        let cnf2 = evs
            .iter()
            .find(|e| e.class.as_deref() == Some("java.lang.ClassNotFoundException"))
            .expect("a ClassNotFoundException");
        assert_eq!(
            cnf2.frames,
            [
                "java.net.URLClassLoader.findClass",
                "shop.svc.ServicesImpl.loadPromo"
            ]
        );
    }

    /// One defects4j trace: the test it came from and its text.
    struct Trace {
        file: PathBuf,
        test: String,
        text: String,
    }

    fn defects4j() -> Vec<Trace> {
        let dir = corpus().join("defects4j-traces");
        let mut files = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let rd = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
            for entry in rd {
                let p = entry.expect("directory entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "txt") {
                    files.push(p);
                }
            }
        }
        files.sort();
        let mut traces = Vec::new();
        for f in files {
            let text = String::from_utf8_lossy(&read(&f)).into_owned();
            let mut cur: Option<Trace> = None;
            for line in text.split('\n') {
                if let Some(test) = line.strip_prefix("--- ") {
                    traces.extend(cur.take());
                    cur = Some(Trace {
                        file: f.clone(),
                        test: test.to_owned(),
                        text: String::new(),
                    });
                } else if let Some(t) = &mut cur {
                    t.text.push_str(line);
                    t.text.push('\n');
                }
            }
            traces.extend(cur.take());
        }
        traces
    }

    /// The class on a trace's header line, as the trace says it.
    fn header_class(t: &Trace) -> &str {
        let first = t.text.lines().next().unwrap_or_default();
        first.split(':').next().unwrap_or_default().trim()
    }

    fn d4j_analyzer() -> Analyzer {
        Analyzer::new(AnalyzerConfig {
            timezone: Tz::Utc,
            max_event_bytes: 1 << 20,
            ..AnalyzerConfig::default()
        })
        .expect("builds")
    }

    #[test]
    fn defects4j_every_trace_found_without_configuration() {
        // The files as they are, no `event_start`: no line starts a record, each trace follows
        // its `--- Class::method` line. Every trace must be its own event (a trace merged into
        // the one before it would hide its class), and only the `---` lines are left over.
        let traces = defects4j();
        assert_eq!(traces.len(), 1795, "traces in the corpus");
        let an = d4j_analyzer();
        let mut found = 0;
        let mut by_file: BTreeMap<&Path, Vec<&Trace>> = BTreeMap::new();
        for t in &traces {
            by_file.entry(&t.file).or_default().push(t);
        }
        for (file, ts) in by_file {
            let data = read(file);
            let evs = events_of(&an, &data);
            let (exc, plain): (Vec<&Ev>, Vec<&Ev>) = evs.iter().partition(|e| e.class.is_some());
            assert_eq!(exc.len(), ts.len(), "{}: exception events", file.display());
            for (e, t) in exc.iter().zip(&ts) {
                let header = t.text.lines().next().unwrap_or_default();
                assert_eq!(e.first_line, header, "{} {}", file.display(), t.test);
                assert_eq!(
                    e.class.as_deref(),
                    Some(header_class(t)),
                    "{} {}",
                    file.display(),
                    t.test
                );
                found += 1;
            }
            // Each trace runs up to the next `---` line: lines add up, nothing is lost.
            let physical = data.iter().filter(|b| **b == b'\n').count() as u64;
            let mut next = evs
                .iter()
                .skip(1)
                .map(|e| e.line_number)
                .chain([physical + 1]);
            for e in &evs {
                let end = next.next().unwrap_or(physical + 1);
                assert_eq!(
                    u64::from(e.lines),
                    end - e.line_number,
                    "{}",
                    file.display()
                );
            }
            for w in plain.windows(2) {
                let between: Vec<&&Ev> = exc
                    .iter()
                    .filter(|e| (w[0].line_number..w[1].line_number).contains(&e.line_number))
                    .collect();
                assert_eq!(between.len(), 1, "{}:{}", file.display(), w[0].line_number);
                assert_eq!(between[0].line_number, w[0].line_number + 1);
            }
            for (p, t) in plain.iter().zip(&ts) {
                assert_eq!(
                    p.first_line,
                    format!("--- {}", t.test),
                    "{}",
                    file.display()
                );
                assert_eq!(p.lines, 1, "{}", file.display());
            }
            assert_eq!(plain.len(), ts.len(), "{}: `---` lines", file.display());
        }
        assert_eq!(found, 1795);
    }

    #[test]
    fn defects4j_traces_inside_a_timestamped_log() {
        // The same traces as an application would log them: a timestamped ERROR line, then the
        // trace. Nothing inside any trace may start a record (no split), every record ends where
        // the next begins (no merge).
        let traces = defects4j();
        let mut log = String::new();
        for (i, t) in traces.iter().enumerate() {
            let s = i % 60;
            log.push_str(&format!(
                "2026-11-23 18:{:02}:{s:02}.123 ERROR [main] org.junit.Runner - {} failed\n",
                (i / 60) % 60,
                t.test
            ));
            log.push_str(&t.text);
            log.push_str(&format!(
                "2026-11-23 18:{:02}:{s:02}.456 INFO  [main] org.junit.Runner - next\n",
                (i / 60) % 60
            ));
        }
        let an = d4j_analyzer();
        let evs = events_of(&an, log.as_bytes());
        assert_eq!(evs.len(), 2 * traces.len(), "events");
        for (pair, t) in evs.chunks(2).zip(&traces) {
            assert!(pair[0].first_line.contains(&t.test));
            assert_eq!(pair[0].level, Level::Error);
            assert_eq!(
                pair[0].class.as_deref(),
                Some(header_class(t)),
                "{}",
                t.test
            );
            assert_eq!(pair[1].class, None, "{}", t.test);
        }
    }

    /// Renumbers what must not matter: line numbers, generated class numbers, proxy hashes.
    struct Renumber(Vec<(regex::Regex, &'static str)>);

    impl Renumber {
        fn new() -> Renumber {
            let rules = [
                (r"\.java:\d+\)", ".java:7)"),
                (r"GeneratedMethodAccessor\d+", "GeneratedMethodAccessor913"),
                (r"\$MockitoMock\$\d+", "$$MockitoMock$$12345"),
                (
                    r"\$\$(EnhancerBy\w*CGLIB|FastClassBy\w*CGLIB)\$\$[0-9a-f]+",
                    "$$$$${1}$$$$0badcafe",
                ),
                (
                    r"\$\$Lambda\$\d+/0x[0-9a-f]+",
                    "$$$$Lambda$$77/0x00000008000aa000",
                ),
            ];
            Renumber(
                rules
                    .into_iter()
                    .map(|(re, by)| (regex::Regex::new(re).expect("valid regex"), by))
                    .collect(),
            )
        }

        fn apply(&self, text: &str) -> String {
            let mut s = text.to_owned();
            for (re, by) in &self.0 {
                s = re.replace_all(&s, *by).into_owned();
            }
            s
        }
    }

    fn fingerprint_of(an: &Analyzer, text: &str) -> Option<(Fingerprint, String)> {
        let evs = events_of(an, text.as_bytes());
        let e = evs.into_iter().find(|e| e.fingerprint.is_some())?;
        Some((e.fingerprint?, e.class?))
    }

    #[test]
    fn defects4j_generated_names_share_a_fingerprint() {
        let traces = defects4j();
        let an = d4j_analyzer();
        let renumber = Renumber::new();
        let mut changed = 0;
        let mut class_of: HashMap<Fingerprint, String> = HashMap::new();
        let mut by_pkg: HashMap<String, Analyzer> = HashMap::new();
        let mut with_pkg = HashSet::new();
        for t in &traces {
            let (a, class) = fingerprint_of(&an, &t.text).expect("trace found");
            let renumbered = renumber.apply(&t.text);
            if renumbered != t.text {
                changed += 1;
            }
            let (b, _) = fingerprint_of(&an, &renumbered).expect("trace found");
            assert_eq!(a, b, "{} {}", t.file.display(), t.test);
            // A message change does not matter either.
            let mut lines: Vec<&str> = t.text.lines().collect();
            let header = format!("{class}: some other message");
            lines[0] = &header;
            let (c, _) = fingerprint_of(&an, &lines.join("\n")).expect("trace found");
            assert_eq!(a, c, "{} {}", t.file.display(), t.test);
            // Different exception classes never share a fingerprint.
            if let Some(prev) = class_of.insert(a, class.clone()) {
                assert_eq!(prev, class, "{a} shared by two classes");
            }
            // With the app's packages known (here: the project's, from the test's class).
            let pkg = t.test.split('.').take(3).collect::<Vec<_>>().join(".");
            let an_pkg = by_pkg.entry(pkg.clone()).or_insert_with(|| {
                Analyzer::new(AnalyzerConfig {
                    app_packages: vec![pkg],
                    ..AnalyzerConfig::default()
                })
                .expect("builds")
            });
            with_pkg.insert(fingerprint_of(an_pkg, &t.text).expect("trace found").0);
        }
        assert!(changed > 1700, "the renumbering touched {changed} traces");
        // Distinct failures stay distinct (1,426 traces differ in class, causes or top 8 frames).
        eprintln!(
            "defects4j: {} / {} distinct fingerprints without / with app_packages",
            class_of.len(),
            with_pkg.len()
        );
        assert!(
            class_of.len() > 1000,
            "{} distinct fingerprints",
            class_of.len()
        );
        assert!(
            with_pkg.len() > 1300,
            "{} distinct fingerprints",
            with_pkg.len()
        );
    }

    #[test]
    fn defects4j_accessor_variants_in_the_wild() {
        // Real pairs: the same trace (up to line numbers) recorded with `GeneratedMethodAccessor4`
        // and with `…16`.
        let traces = defects4j();
        let an = d4j_analyzer();
        let accessor = regex::Regex::new(r"GeneratedMethodAccessor\d+").expect("valid regex");
        let line_no = regex::Regex::new(r"\.java:\d+\)").expect("valid regex");
        let mut groups: HashMap<String, (HashSet<&str>, HashSet<Fingerprint>)> = HashMap::new();
        for t in traces
            .iter()
            .filter(|t| t.text.contains("GeneratedMethodAccessor"))
        {
            let key = line_no.replace_all(&t.text, ".java:N)");
            let key = accessor.replace_all(&key, "GMA").into_owned();
            let (fp, _) = fingerprint_of(&an, &t.text).expect("trace found");
            let g = groups.entry(key).or_default();
            g.0.extend(accessor.find_iter(&t.text).map(|m| m.as_str()));
            g.1.insert(fp);
        }
        let variants = groups.values().filter(|g| g.0.len() > 1).count();
        eprintln!("{variants} traces recorded with different accessor numbers");
        assert!(
            variants > 0,
            "the corpus holds traces differing only in accessor numbers"
        );
        for (k, (_, fps)) in groups {
            assert_eq!(fps.len(), 1, "{}", k.lines().next().unwrap_or_default());
        }
    }

    #[test]
    fn parse_command_json_and_text() {
        let dir = corpus().join("jvm-samples");
        let files: Vec<PathBuf> = ["jul.log", "log4j2.log", "logback.log", "plain.log"]
            .iter()
            .map(|f| dir.join(f))
            .collect();
        let mut out = Vec::new();
        let summary = vigil_agent::java::parse_files(&files, &[], true, &mut out).expect("parses");
        assert_eq!(
            (
                summary.events,
                summary.exceptions,
                summary.fingerprints,
                summary.dangerous
            ),
            (1601, 39, 3, 32)
        );
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 40);
        for v in &lines[..39] {
            let keys: Vec<&str> = v
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            assert_eq!(
                sorted,
                [
                    "causes",
                    "class",
                    "dangerous",
                    "file",
                    "fingerprint",
                    "frames",
                    "line",
                    "time"
                ]
            );
            let fp = v["fingerprint"].as_str().expect("fingerprint string");
            assert!(
                fp.len() == 16
                    && fp
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
        assert_eq!(lines[0]["line"], 25);
        assert_eq!(lines[0]["frames"], 10);
        assert_eq!(
            lines[39],
            serde_json::json!({"summary": {"events": 1601, "exceptions": 39, "fingerprints": 3, "dangerous": 32}})
        );

        let mut out = Vec::new();
        vigil_agent::java::parse_files(&files[1..2], &[], false, &mut out).expect("parses");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("summary: 398 events, 12 exceptions, 3 fingerprints, 8 dangerous"));
        assert!(text.contains("log4j2.log:284 2026-11-23T18:45:07Z"));

        let missing = dir.join("no-such.log");
        let err = vigil_agent::java::parse_files(&[missing], &[], true, &mut Vec::new())
            .expect_err("a missing file fails");
        assert!(err.to_string().contains("no-such.log"), "{err}");
    }
}
