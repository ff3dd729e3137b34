//! Torture runs from outside, with the real binaries: a writer appending numbered Java log
//! lines fast, real `logrotate -f` rotating under it, the agent killed with SIGKILL at
//! random moments and restarted, the detector killed and restarted. Each ends with the same
//! assertion: every line on disk is counted exactly once in the detector.
//!
//! Each run ends whatever the speed of the machine: the writer writes at a capped rate and
//! at most [`MAX_LINES`] lines; the run is a fixed number of rotations (and so of SIGKILLs
//! and detector restarts), not a stretch of time that a slow machine fills with fewer; every
//! wait has a deadline and says what it waited for; a failing run stops its writer.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{DetectorProcess, eventually, lines_on_disk, spawn, write};

/// Rotations per run; every second one is followed by a SIGKILL of the agent, the ninth by
/// a restart of the detector.
const ROTATIONS: u32 = 24;
/// The most lines one run writes (about 80 bytes each: at most some 25 MB on disk).
const MAX_LINES: u64 = 300_000;
/// Records per burst (a burst is about 510 lines: one record in 50 has a 3-line trace);
/// the writer sleeps [`PAUSE`] after each, so it writes at most some 25,000 lines a second.
const BURST: u64 = 500;
const PAUSE: Duration = Duration::from_millis(20);
/// The longest the rotations, kills and restarts of a run may take (about 10 s idle).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Sets `stop` when dropped: a failing run stops its writer.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Whether real `logrotate` is here; under CI it must be (`.ci/run` installs it).
fn logrotate_available() -> bool {
    let found = Command::new("logrotate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "logrotate is missing under CI: .ci/run must install it"
        );
        eprintln!("SKIPPED: logrotate is not installed (apt-get install logrotate)");
    }
    found
}

/// Appends numbered logback-style lines to `path` in bursts until `stop` or [`MAX_LINES`],
/// reopening the path for each burst (as a logger that reopens after `create` rotation
/// does), pausing [`PAUSE`] after each. A burst is written while holding `turn`.
fn writer(path: PathBuf, stop: Arc<AtomicBool>, written: Arc<AtomicU64>, turn: Arc<Mutex<()>>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && written.load(Ordering::Relaxed) < MAX_LINES {
        let mut text = String::with_capacity(200 * BURST as usize);
        for _ in 0..BURST {
            n += 1;
            // One record in 50 carries a stack trace (3 physical lines).
            if n.is_multiple_of(50) {
                text.push_str(&format!(
                    "2026-11-23 18:44:43.651 ERROR [exec-1] shop.OrderService - order {n} failed\n\
                     java.lang.IllegalStateException: stock {n}\n\
                     \tat shop.Stock.take(Stock.java:{})\n",
                    n % 90
                ));
            } else {
                text.push_str(&format!(
                    "2026-11-23 18:44:43.651 INFO  [exec-1] shop.OrderService - order {n} placed\n"
                ));
            }
        }
        let lines = text.bytes().filter(|b| *b == b'\n').count() as u64;
        {
            let _turn = turn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // The directory is always there while the run goes on: a failure here is the
            // test's, and must not turn into a loop that spins without writing.
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            file.write_all(text.as_bytes())
                .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
            written.fetch_add(lines, Ordering::Relaxed);
        }
        std::thread::sleep(PAUSE);
    }
}

/// Which files the agent tails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Glob {
    /// `logs/app.log` only; rotated files are not compressed.
    Live,
    /// `logs/app.log*` with `exclude = ["*.gz"]`: the rotated files match the glob too, and
    /// logrotate compresses them a rotation later (`compress`, `delaycompress`,
    /// `rotate 40`).
    Rotated,
}

fn logrotate(dir: &Path, mode: &str, glob: Glob) -> (PathBuf, PathBuf) {
    let conf = dir.join(format!("logrotate-{mode}.conf"));
    let state = dir.join("logrotate.state");
    let keep = match glob {
        Glob::Live => "rotate 1000\n  nocompress",
        Glob::Rotated => "rotate 40\n  compress\n  delaycompress",
    };
    write(
        &conf,
        &format!(
            "{}/app.log {{\n  {keep}\n  {mode}\n  missingok\n  notifempty\n}}\n",
            dir.join("logs").display()
        ),
    );
    (conf, state)
}

/// Lines in the files of `dir` whose name starts with `prefix`, `.gz` files decompressed
/// (with `gzip -dc`, under a deadline).
fn lines_on_disk_gz(dir: &Path, prefix: &str) -> u64 {
    let mut lines = 0;
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let bytes = if name.ends_with(".gz") {
            let out = common::output_within(
                Command::new("gzip").arg("-dc").arg(entry.path()),
                None,
                Duration::from_secs(60),
            );
            assert!(out.status.success(), "gzip -dc {name} failed");
            out.stdout
        } else {
            std::fs::read(entry.path()).unwrap_or_default()
        };
        lines += bytes.iter().filter(|b| **b == b'\n').count() as u64;
    }
    lines
}

fn rotate(conf: &Path, state: &Path) {
    let out = common::output_within(
        Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(state)
            .arg(conf),
        None,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "logrotate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One torture run in `mode` (`create`, `copytruncate`, or `alternate`: the two in turn).
///
/// With copytruncate, lines written between logrotate's copy and its truncate exist nowhere
/// on disk (a limit of copytruncate itself), so the writer holds still while logrotate runs;
/// lines written before the copy and not yet read by the agent must then be found in the
/// copy, which is what this exercises. In create mode the writer never stops.
///
/// With [`Glob::Rotated`] the agent's glob matches the rotated files as well: a renamed file
/// (create) or a copy (copytruncate) is data already counted and must not be counted again.
fn torture(mode: &str, glob: Glob) {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs dir");
    let log = logs.join("app.log");
    // `alternate`: create and copytruncate in turn, on one state file.
    let (create, state) = logrotate(dir.path(), "create", glob);
    let (copytruncate, _) = logrotate(dir.path(), "copytruncate", glob);
    let mut detector = DetectorProcess::start(dir.path());
    let pattern = match glob {
        Glob::Live => log.display().to_string(),
        Glob::Rotated => format!("{}*", log.display()),
    };
    let config = common::AgentSetup {
        logs_extra: if glob == Glob::Rotated {
            "exclude = [\"*.gz\"]"
        } else {
            ""
        },
        ..common::AgentSetup::new(&detector.grpc, "torture", "shop", &pattern)
    }
    .write(dir.path());
    let agent_log = dir.path().join("agent.log");
    let mut agent = spawn("vigil-agent", &config, &agent_log);

    let stop = Arc::new(AtomicBool::new(false));
    let stop_on_failure = StopOnDrop(Arc::clone(&stop));
    let written = Arc::new(AtomicU64::new(0));
    let turn = Arc::new(Mutex::new(()));
    let writer = {
        let (log, stop, written, turn) = (
            log.clone(),
            Arc::clone(&stop),
            Arc::clone(&written),
            Arc::clone(&turn),
        );
        std::thread::spawn(move || writer(log, stop, written, turn))
    };
    let started = Instant::now();
    let mut kills = 0;
    let mut rotations = 0;
    let mut detector_restarts = 0;
    while rotations < ROTATIONS {
        assert!(
            started.elapsed() < RUN_TIMEOUT,
            "{mode} ({glob:?}): timed out after {RUN_TIMEOUT:?} waiting for {ROTATIONS} rotations: \
             {rotations} rotations, {kills} kills, {detector_restarts} detector restarts, {} \
             lines written",
            written.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(100 + fastrand_ms(300)));
        let copy = match mode {
            "copytruncate" => true,
            "alternate" => rotations % 2 == 1,
            _ => false,
        };
        if copy {
            let _still = turn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            rotate(&copytruncate, &state);
        } else {
            rotate(&create, &state);
        }
        rotations += 1;
        if rotations % 2 == 0 {
            // A crash at a random moment, then a restart.
            std::thread::sleep(Duration::from_millis(fastrand_ms(150)));
            agent.kill();
            kills += 1;
            agent = spawn("vigil-agent", &config, &agent_log);
        }
        if rotations == 9 {
            detector.restart(dir.path());
            detector_restarts += 1;
        }
    }
    drop(stop_on_failure);
    writer
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert_eq!(kills, ROTATIONS / 2, "SIGKILLs");
    assert_eq!(detector_restarts, 1, "detector restarts");
    let on_disk = match glob {
        Glob::Live => lines_on_disk(&logs, "app.log"),
        Glob::Rotated => lines_on_disk_gz(&logs, "app.log"),
    };
    let written = written.load(Ordering::Relaxed);
    assert_eq!(on_disk, written, "every line written is on disk");
    let arrived = eventually(Duration::from_secs(60), || {
        detector.lines("shop", "torture") >= on_disk
    });
    let counted = detector.lines("shop", "torture");
    if !arrived {
        keep_evidence(dir.path(), &logs, &agent_log, mode, glob);
    }
    assert!(
        arrived,
        "{mode} ({glob:?}): {counted} of {on_disk} lines on disk counted ({written} written, {kills} kills, {rotations} rotations)"
    );
    // A window of a few flushes (every 200 ms) for a double count to show.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        detector.lines("shop", "torture"),
        on_disk,
        "{mode} ({glob:?}): counted exactly once ({written} written, {kills} kills, {rotations} rotations, {detector_restarts} detector restarts)"
    );
    eprintln!(
        "{mode} ({glob:?}): {on_disk} lines on disk of {written} written, all counted once; {kills} SIGKILLs, {rotations} rotations, {detector_restarts} detector restart; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// After a shortfall: copies the agent's log to `target/tmp/torture-{mode}-{glob}/` and writes
/// there, for each generation on disk, its name, inode, lines and first and last record
/// numbers, so the lost generation can be told from the agent's account of the files.
fn keep_evidence(dir: &Path, logs: &Path, agent_log: &Path, mode: &str, glob: Glob) {
    use std::os::unix::fs::MetadataExt;
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("torture-{mode}-{glob:?}"));
    let _ = std::fs::remove_dir_all(&out);
    if std::fs::create_dir_all(&out).is_err() {
        return;
    }
    let _ = std::fs::copy(agent_log, out.join("agent.log"));
    let _ = std::fs::copy(dir.join("detector.log"), out.join("detector.log"));
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let (Ok(meta), Ok(text)) = (entry.metadata(), std::fs::read_to_string(entry.path())) else {
            continue;
        };
        let numbers: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split(" order ").nth(1))
            .filter_map(|rest| rest.split(' ').next())
            .collect();
        rows.push(format!(
            "{} ino {} lines {} first {} last {}",
            entry.file_name().to_string_lossy(),
            meta.ino(),
            text.lines().count(),
            numbers.first().unwrap_or(&"-"),
            numbers.last().unwrap_or(&"-")
        ));
    }
    rows.sort();
    let _ = std::fs::write(out.join("generations.txt"), rows.join("\n"));
    eprintln!("evidence kept in {}", out.display());
}

/// A pseudo-random number of milliseconds below `max` (the clock's nanoseconds).
fn fastrand_ms(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    nanos % max.max(1)
}

#[test]
fn rename_and_create_rotation_with_sigkills_counts_every_line_once() {
    if logrotate_available() {
        torture("create", Glob::Live);
    }
}

#[test]
fn copytruncate_rotation_with_sigkills_counts_every_line_on_disk_once() {
    if logrotate_available() {
        torture("copytruncate", Glob::Live);
    }
}

/// `app.log*` minus `*.gz`: every rotated generation matches the glob, renamed by `create`.
#[test]
fn glob_matching_rotated_files_create_counts_every_line_once() {
    if logrotate_available() {
        torture("create", Glob::Rotated);
    }
}

/// `app.log*` minus `*.gz`: every copytruncate copy matches the glob; it holds lines already
/// read from `app.log` and only those after the agent's position are counted from it.
#[test]
fn glob_matching_rotated_files_copytruncate_counts_every_line_once() {
    if logrotate_available() {
        torture("copytruncate", Glob::Rotated);
    }
}

/// `app.log*` minus `*.gz`, `create` and `copytruncate` in turn: a renamed generation, then
/// a copy, then a renamed one, all matching the glob, compressed a rotation later.
#[test]
fn glob_matching_rotated_files_alternating_create_and_copytruncate_counts_every_line_once() {
    if logrotate_available() {
        torture("alternate", Glob::Rotated);
    }
}
