//! The tailing engine against the real `logrotate -f` (create and copytruncate, with and
//! without compress / delaycompress), a writer appending numbered lines at full speed, and
//! the tailer restarting from stored checkpoints (clean stops and crashes that forget the
//! lines delivered since the last store) while rotations happen.
//!
//! Every numbered line found on disk afterwards (current and rotated files, `.gz`
//! decompressed) must have been delivered exactly once; in create mode every line written
//! must have been delivered. (copytruncate loses, on disk, the lines written between
//! logrotate's copy and its truncate; the tailer may or may not have read those.)
//!
//! Needs the `logrotate` program (Debian package `logrotate`). Without it the test is
//! skipped with a message, unless `CI` is set: then it fails.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use vigil_agent::tail::{
    Checkpoints, FileKey, LineSink, SourceConfig, StartAt, Tailer, TailerOptions,
};

fn logrotate() -> Option<PathBuf> {
    for p in [
        "/usr/sbin/logrotate",
        "/sbin/logrotate",
        "/usr/bin/logrotate",
    ] {
        if Path::new(p).exists() {
            return Some(p.into());
        }
    }
    Command::new("logrotate")
        .arg("--version")
        .output()
        .ok()
        .map(|_| "logrotate".into())
}

#[derive(Default)]
struct Sink {
    lines: Vec<u64>,
    fragments: u64,
}

impl LineSink for Sink {
    fn line(&mut self, _: usize, _: FileKey, line: &[u8], _: u64, truncated: bool) {
        assert!(!truncated);
        match number(line) {
            Some(n) => self.lines.push(n),
            None => self.fragments += 1,
        }
    }
    fn file_done(&mut self, _: usize, _: FileKey) {}
}

/// The number of a complete line. The unterminated last line of a file that is finished
/// (a copytruncate whose copy does not hold it) is handed on as the fragment it is; it must
/// not count as the line whose number is a prefix of its own.
fn number(line: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(line).ok()?;
    let n: u64 = s.strip_prefix("n=")?.split(' ').next()?.parse().ok()?;
    s.ends_with(&format!(" message number {n}")).then_some(n)
}

/// Appends numbered lines as fast as it can, reopening the file when its path holds a new
/// inode (what an application does on logrotate's postrotate signal).
fn writer(path: PathBuf, stop: Arc<AtomicBool>, written: Arc<AtomicU64>) {
    let open = |p: &Path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap()
    };
    let mut f = open(&path);
    let mut ino = f.metadata().unwrap().ino();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..50 {
            let line =
                format!("n={n} 2026-11-23T10:00:00.000Z INFO some.Logger - message number {n}\n");
            f.write_all(line.as_bytes()).unwrap();
            n += 1;
        }
        written.store(n, Ordering::Relaxed);
        match fs::metadata(&path) {
            Ok(m) if m.ino() == ino => {}
            _ => {
                f = open(&path);
                ino = f.metadata().unwrap().ino();
            }
        }
    }
    written.store(n, Ordering::Relaxed);
}

fn on_disk(dir: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("app.log") {
            continue;
        }
        let mut data = Vec::new();
        if name.ends_with(".gz") {
            flate2::read::MultiGzDecoder::new(fs::File::open(&p).unwrap())
                .read_to_end(&mut data)
                .unwrap();
        } else {
            data = fs::read(&p).unwrap();
        }
        out.extend(data.split(|&b| b == b'\n').filter_map(number));
    }
    out
}

fn scenario(logrotate: &Path, mode: &str, compress: bool, delay: bool) {
    // `RUST_LOG=vigil_agent=debug` shows what the tailer did.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let conf = dir.path().join("rotate.conf");
    let state = dir.path().join("rotate.state");
    let mut opts = vec![mode, "rotate 100", "missingok", "nomail"];
    if compress {
        opts.push("compress");
    }
    if delay {
        opts.push("delaycompress");
    }
    fs::write(
        &conf,
        format!("{} {{\n    {}\n}}\n", log.display(), opts.join("\n    ")),
    )
    .unwrap();
    fs::write(&log, b"").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let w = {
        let (log, stop, written) = (log.clone(), stop.clone(), written.clone());
        thread::spawn(move || writer(log, stop, written))
    };
    let rotator = {
        let (lr, conf, state) = (logrotate.to_path_buf(), conf.clone(), state.clone());
        thread::spawn(move || {
            for _ in 0..3 {
                thread::sleep(Duration::from_millis(300));
                let out = Command::new(&lr)
                    .arg("-f")
                    .arg("-s")
                    .arg(&state)
                    .arg(&conf)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "logrotate failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            thread::sleep(Duration::from_millis(200));
        })
    };

    let cfg = SourceConfig {
        start_at: StartAt::Beginning,
        ..SourceConfig::new([log.display().to_string()])
    };
    let topts = TailerOptions {
        rotated_idle: Duration::from_millis(300),
        deleted_idle: Duration::from_millis(300),
        deleted_max: Duration::from_secs(30),
    };
    let new = |cp: Checkpoints| Tailer::with_options(vec![cfg.clone()], cp, topts).unwrap();
    let mut tailer = new(Checkpoints::empty());
    let mut sink = Sink::default();
    let mut committed = 0;
    let mut restarts = 0;
    let mut last_restart = Instant::now();
    let mut writer_done_at: Option<Instant> = None;
    loop {
        tailer.scan().unwrap();
        while tailer.read(1 << 20, &mut sink).more {}
        if rotator.is_finished() && writer_done_at.is_none() {
            stop.store(true, Ordering::Relaxed);
            writer_done_at = Some(Instant::now());
        }
        if writer_done_at.is_some_and(|t| t.elapsed() > Duration::from_millis(800))
            && tailer.files().len() == 1
        {
            break;
        }
        if writer_done_at.is_none() && last_restart.elapsed() > Duration::from_millis(120) {
            last_restart = Instant::now();
            restarts += 1;
            let cp = tailer.checkpoints();
            cp.store(data.path()).unwrap();
            committed = sink.lines.len();
            if restarts % 3 == 0 {
                // Crash: lines delivered after the store are forgotten (never acknowledged).
                while tailer.read(1 << 16, &mut sink).more {}
                sink.lines.truncate(committed);
            }
            drop(tailer);
            tailer = new(Checkpoints::load(data.path()).unwrap());
        }
        thread::sleep(Duration::from_millis(5));
    }
    let _ = committed;
    rotator.join().unwrap();
    w.join().unwrap();
    let total = written.load(Ordering::Relaxed);

    let mut delivered: HashMap<u64, u32> = HashMap::new();
    for n in &sink.lines {
        *delivered.entry(*n).or_default() += 1;
    }
    let dups: Vec<_> = delivered
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .take(10)
        .collect();
    let disk = on_disk(dir.path());
    let missing: Vec<_> = disk
        .iter()
        .filter(|n| !delivered.contains_key(n))
        .take(10)
        .collect();
    let label = format!("{mode} compress={compress} delaycompress={delay}");
    eprintln!(
        "{label}: written {total}, on disk {}, delivered {} (+{} fragments), restarts {restarts}",
        disk.len(),
        sink.lines.len(),
        sink.fragments
    );
    assert!(
        total > 1000,
        "{label}: the writer wrote too little ({total})"
    );
    assert!(dups.is_empty(), "{label}: delivered twice: {dups:?}");
    assert!(
        missing.is_empty(),
        "{label}: on disk but not delivered: {missing:?}"
    );
    if mode == "create" {
        let lost: Vec<_> = (0..total)
            .filter(|n| !delivered.contains_key(n))
            .take(10)
            .collect();
        assert!(
            lost.is_empty(),
            "{label}: written but not delivered: {lost:?}"
        );
    }
}

fn with_logrotate(f: impl Fn(&Path)) {
    match logrotate() {
        Some(lr) => f(&lr),
        None if std::env::var_os("CI").is_some() => {
            panic!("logrotate is not installed (Debian package `logrotate`); CI must install it")
        }
        None => eprintln!("SKIPPED: logrotate is not installed (apt-get install logrotate)"),
    }
}

#[test]
fn logrotate_create() {
    with_logrotate(|lr| {
        scenario(lr, "create", false, false);
        scenario(lr, "create", true, false);
        scenario(lr, "create", true, true);
    });
}

#[test]
fn logrotate_copytruncate() {
    with_logrotate(|lr| {
        scenario(lr, "copytruncate", false, false);
        scenario(lr, "copytruncate", true, false);
        scenario(lr, "copytruncate", true, true);
    });
}
