//! The Java analysis on output that a real JVM writes while the test runs: a small program is
//! compiled with `javac` and run with `java`, and prints one failure in the shapes HotSpot
//! really uses —
//!
//! - a `NoClassDefFoundError` (a class deleted after compilation), printed three times by
//!   `printStackTrace()` and three times through java.util.logging: the first shows its
//!   `ClassNotFoundException` cause with the class loader's frames, the later ones (HotSpot's
//!   cached resolution error) only `... 2 more`;
//! - a `NullPointerException` thrown at one site in a hot loop: the first ones with the
//!   helpful message and frames, then (`-XX:+OmitStackTraceInFastThrow`, HotSpot's default)
//!   the JIT's preallocated one, with neither;
//!
//! all on one stream with `System.out` lines between, as in `catalina.out`.
//!
//! Needs `javac` and `java` on `PATH` (Debian: `openjdk-17-jdk-headless`). Without them the
//! test says so and passes, unless `CI` is set: then it fails.

// Inside `mod java` so that `cargo test -p vigil-agent java` selects these tests.
mod java {
    use std::collections::HashSet;
    use std::fs::File;
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use vigil_agent::java::{
        Analyzer, AnalyzerConfig, EventAssembler, Fingerprint, Level, Tz, read_lines,
    };

    const MISSING: &str = r#"public class Missing {
    static int value() {
        return 42;
    }
}
"#;

    const SHAPES: &str = r#"import java.util.logging.Level;
import java.util.logging.Logger;

public class Shapes {
    static int useMissing() {
        return Missing.value();
    }

    static int length(String s) {
        return s.length();
    }

    public static void main(String[] args) {
        Logger log = Logger.getLogger("shop.Shapes");
        for (int i = 0; i < 3; i++) {
            try {
                useMissing();
            } catch (NoClassDefFoundError e) {
                e.printStackTrace();
                System.out.println("Processing order " + i);
                log.log(Level.SEVERE, "Pricing failed", e);
            }
        }
        // One site throws a NullPointerException every other iteration until the JIT has
        // replaced it with its preallocated, frameless one (bounded in iterations and time).
        String[] values = {"sku-1", null};
        long sum = 0;
        int full = 0, frameless = 0;
        long start = System.nanoTime();
        for (int i = 0; i < 50_000_000 && frameless < 2; i++) {
            try {
                sum += length(values[i & 1]);
            } catch (NullPointerException e) {
                if (e.getStackTrace().length == 0) {
                    frameless++;
                    e.printStackTrace();
                } else if (full < 2) {
                    full++;
                    e.printStackTrace();
                }
            }
            if ((i & 0xffff) == 0 && System.nanoTime() - start > 10_000_000_000L) {
                break;
            }
        }
        System.out.println("done " + sum + " full=" + full + " frameless=" + frameless);
    }
}
"#;

    /// Is `tool` runnable? Without it: `false` after a message, or a panic under CI.
    fn have(tool: &str) -> bool {
        let ok = Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(
                !ci,
                "`{tool}` is not on PATH; CI must install a JDK (Debian: openjdk-17-jdk-headless)"
            );
            eprintln!(
                "SKIPPED: `{tool}` is not on PATH (Debian: openjdk-17-jdk-headless); the real-JVM \
                 test did not run"
            );
        }
        ok
    }

    /// Runs `cmd` to completion within `limit`, killing it past that.
    fn run_bounded(mut cmd: Command, what: &str, limit: Duration) {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let deadline = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    assert!(status.success(), "{what} failed: {status}");
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{what} did not finish within {limit:?}: killed");
                }
                Err(e) => panic!("waiting for {what}: {e}"),
            }
        }
    }

    fn java_command(tool: &str, dir: &Path) -> Command {
        let mut cmd = Command::new(tool);
        cmd.current_dir(dir)
            .env_remove("JAVA_TOOL_OPTIONS")
            .env_remove("_JAVA_OPTIONS")
            .env_remove("JDK_JAVA_OPTIONS")
            .stdin(Stdio::null());
        cmd
    }

    /// Compiles and runs the program; returns what it wrote to stdout and stderr, in order.
    fn jvm_output(dir: &Path) -> Vec<u8> {
        std::fs::write(dir.join("Shapes.java"), SHAPES).expect("write Shapes.java");
        std::fs::write(dir.join("Missing.java"), MISSING).expect("write Missing.java");
        let mut javac = java_command("javac", dir);
        javac.args(["-d", ".", "Shapes.java", "Missing.java"]);
        run_bounded(javac, "javac", Duration::from_secs(120));
        // The class is there at compile time and gone at run time.
        std::fs::remove_file(dir.join("Missing.class")).expect("remove Missing.class");

        let out_path = dir.join("out.log");
        let out = File::create(&out_path).expect("create out.log");
        let err = out.try_clone().expect("clone out.log");
        let mut java = java_command("java", dir);
        java.args([
            "-XX:+OmitStackTraceInFastThrow", // HotSpot's default, said out loud
            "-XX:-UsePerfData",
            "-Duser.language=en",
            "-Duser.country=US",
            "-cp",
            ".",
            "Shapes",
        ])
        .stdout(out)
        .stderr(err);
        run_bounded(java, "java Shapes", Duration::from_secs(60));
        std::fs::read(&out_path).expect("read out.log")
    }

    /// What the test keeps of an event.
    #[derive(Debug)]
    struct Ev {
        first_line: String,
        lines: u32,
        level: Level,
        class: Option<String>,
        causes: Vec<String>,
        frame_count: u32,
        frames: Vec<String>,
        message: String,
        fingerprint: Fingerprint,
        family: Fingerprint,
        dangerous: bool,
    }

    fn events(data: &[u8]) -> Vec<Ev> {
        let an = Analyzer::new(AnalyzerConfig {
            timezone: Tz::Utc,
            ..AnalyzerConfig::default()
        })
        .expect("default config builds");
        let mut asm = EventAssembler::new(&an);
        let mut evs = Vec::new();
        let mut keep = |e: vigil_agent::java::Event<'_>| {
            let x = e.exception;
            evs.push(Ev {
                first_line: String::from_utf8_lossy(e.first_line).into_owned(),
                lines: e.lines,
                level: e.level,
                class: x.map(|x| x.class.clone()),
                causes: x.map(|x| x.causes.clone()).unwrap_or_default(),
                frame_count: x.map_or(0, |x| x.frame_count),
                frames: x.map(|x| x.frames.clone()).unwrap_or_default(),
                message: x.map(|x| x.message.clone()).unwrap_or_default(),
                fingerprint: x.map(|x| x.fingerprint).unwrap_or_default(),
                family: x.map(|x| x.family).unwrap_or_default(),
                dangerous: x.is_some_and(|x| x.dangerous),
            });
        };
        read_lines(data, 1 << 20, |line, end| {
            asm.push_line(&an, line, end, 0, &mut keep);
        })
        .expect("reading from memory cannot fail");
        asm.flush(&an, &mut keep);
        evs
    }

    #[test]
    fn real_jvm_shapes_of_one_failure() {
        if !have("javac") || !have("java") {
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let out = jvm_output(dir.path());
        let text = String::from_utf8_lossy(&out);
        let evs = events(&out);

        // Events: each trace, each JUL record, each plain line its own.
        let plain: Vec<&str> = evs
            .iter()
            .filter(|e| e.class.is_none())
            .map(|e| e.first_line.as_str())
            .collect();
        assert_eq!(plain.len(), 4, "{plain:?}\n{text}");
        assert!(
            plain[..3]
                .iter()
                .all(|l| l.starts_with("Processing order "))
        );
        assert!(
            plain[3].ends_with("full=2 frameless=2"),
            "the JIT never made the NullPointerException frameless: {}",
            plain[3]
        );
        let lines: u64 = evs.iter().map(|e| u64::from(e.lines)).sum();
        assert_eq!(lines, out.iter().filter(|b| **b == b'\n').count() as u64);

        // (a) NoClassDefFoundError: printed with its cause's frames and, once cached, without;
        // by printStackTrace and by java.util.logging. One failure, one fingerprint.
        let ncdfe: Vec<&Ev> = evs
            .iter()
            .filter(|e| e.class.as_deref() == Some("java.lang.NoClassDefFoundError"))
            .collect();
        assert_eq!(ncdfe.len(), 6, "{text}");
        let jul = ncdfe.iter().filter(|e| e.level == Level::Error).count();
        assert_eq!(jul, 3, "three through java.util.logging (SEVERE)");
        let shapes: HashSet<u32> = ncdfe.iter().map(|e| e.frame_count).collect();
        assert!(
            shapes.len() == 2,
            "the cause printed with and without the class loader's frames: {shapes:?}\n{text}"
        );
        for e in &ncdfe {
            assert_eq!(e.causes, ["java.lang.ClassNotFoundException"]);
            assert!(e.dangerous);
            assert_eq!(e.frames, ["Shapes.useMissing", "Shapes.main"]);
        }
        let fps: HashSet<Fingerprint> = ncdfe.iter().map(|e| e.fingerprint).collect();
        assert_eq!(fps.len(), 1, "{ncdfe:#?}");

        // (b) Fast throw: full traces share one fingerprint, frameless ones another, and the
        // frameless one is the family of the full one (the class chain alone).
        let npe: Vec<&Ev> = evs
            .iter()
            .filter(|e| e.class.as_deref() == Some("java.lang.NullPointerException"))
            .collect();
        assert_eq!(npe.len(), 4, "{text}");
        let (full, bare) = npe.split_at(2);
        for e in full {
            assert_eq!(e.frames, ["Shapes.length", "Shapes.main"]);
            assert!(e.message.starts_with("Cannot invoke \"String.length()\""));
        }
        for e in bare {
            assert_eq!((e.lines, e.frame_count), (1, 0));
            assert!(e.frames.is_empty() && e.message.is_empty());
            assert_eq!(e.fingerprint, e.family);
        }
        let full_fps: HashSet<Fingerprint> = full.iter().map(|e| e.fingerprint).collect();
        let bare_fps: HashSet<Fingerprint> = bare.iter().map(|e| e.fingerprint).collect();
        let families: HashSet<Fingerprint> = npe.iter().map(|e| e.family).collect();
        assert_eq!((full_fps.len(), bare_fps.len()), (1, 1), "{npe:#?}");
        assert_eq!(families, bare_fps, "one family for both shapes");
        assert!(full_fps.is_disjoint(&bare_fps));

        // The command line agrees: 14 events, 10 exceptions, 3 fingerprints, 6 dangerous.
        let parse = Command::new(env!("CARGO_BIN_EXE_vigil-agent"))
            .args(["parse", "--json"])
            .arg(dir.path().join("out.log"))
            .output()
            .expect("run vigil-agent parse");
        assert!(parse.status.success(), "{parse:?}");
        let stdout = String::from_utf8(parse.stdout).expect("utf-8");
        let last: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON");
        assert_eq!(
            last,
            serde_json::json!({"summary": {"events": 14, "exceptions": 10,
                                            "fingerprints": 3, "dangerous": 6}})
        );
    }
}
