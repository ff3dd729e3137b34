//! Tailing benchmarks (plain `fn main`, run with
//! `cargo bench -p vigil-agent --bench tail_throughput`):
//!
//! 1. throughput: one ~500 MB file read from its start, line splitting only, as MB/s of wall
//!    time and MB/s per core (CPU time of the reading thread), next to `cat FILE > /dev/null` on
//!    the same file in the same run;
//! 2. many files: 1,000 files each receiving about one line a second for ~30 s, with the
//!    tailer scanning every second and reading four times a second: CPU % of one core
//!    (tailer thread only) and RSS of the process.
//!
//! `VIGIL_BENCH_MB` (default 500) and `VIGIL_BENCH_SECS` (default 30) shorten the runs.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vigil_agent::tail::{Checkpoints, FileKey, LineSink, SourceConfig, StartAt, Tailer};

struct Count {
    lines: u64,
    bytes: u64,
}

impl LineSink for Count {
    fn line(&mut self, _: usize, _: FileKey, line: &[u8], _: u64, _: bool) {
        self.lines += 1;
        self.bytes += line.len() as u64;
    }
    fn file_done(&mut self, _: usize, _: FileKey) {}
}

/// CPU seconds (user + system) from a `/proc/.../stat` file.
fn cpu_seconds(stat: &str) -> f64 {
    let Ok(s) = fs::read_to_string(stat) else {
        return f64::NAN;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
        + f.get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
    ticks / 100.0 // CLK_TCK is 100 on Linux
}

/// CPU seconds of the calling thread in nanosecond resolution (`/proc/thread-self/schedstat`).
fn thread_cpu_seconds() -> f64 {
    fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(|| cpu_seconds("/proc/thread-self/stat"), |ns| ns / 1e9)
}

fn rss_mb() -> f64 {
    let s = fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("nproc {nproc}, CPU {cpu}")
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn throughput(dir: &Path) {
    let mb = env_num("VIGIL_BENCH_MB", 500);
    let path = dir.join("big.log");
    let mut f = fs::File::create(&path).expect("create bench file");
    let mut block = Vec::with_capacity(8 << 20);
    let mut n = 0u64;
    while block.len() < (8 << 20) - 200 {
        writeln!(
            block,
            "2026-11-23 10:00:00.{:03} ERROR [http-nio-8080-exec-{}] c.e.shop.OrderService - order {n} failed: timeout",
            n % 1000,
            n % 200
        )
        .expect("format");
        n += 1;
    }
    let mut written = 0u64;
    while written < mb << 20 {
        f.write_all(&block).expect("write bench file");
        written += block.len() as u64;
    }
    drop(f);

    let t = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("cat '{}' > /dev/null", path.display()))
        .status();
    let cat = t.elapsed().as_secs_f64();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("cat failed");
    }

    let cfg = SourceConfig {
        start_at: StartAt::Beginning,
        ..SourceConfig::new([path.display().to_string()])
    };
    let mut tailer = Tailer::new(vec![cfg], Checkpoints::empty()).expect("tailer");
    let mut sink = Count { lines: 0, bytes: 0 };
    let cpu0 = thread_cpu_seconds();
    let t = Instant::now();
    tailer.scan().expect("scan");
    while tailer.read(16 << 20, &mut sink).more {}
    let wall = t.elapsed().as_secs_f64();
    let cpu = thread_cpu_seconds() - cpu0;
    let mbs = written as f64 / (1 << 20) as f64;
    println!("throughput: file {mbs:.0} MiB, {} lines", sink.lines);
    println!(
        "  cat FILE > /dev/null : {cat:.3} s wall ({:.0} MiB/s)",
        mbs / cat
    );
    println!(
        "  vigil tail           : {wall:.3} s wall ({:.0} MiB/s), {cpu:.3} s CPU ({:.0} MiB/s per core)",
        mbs / wall,
        mbs / cpu
    );
    let _ = fs::remove_file(&path);
}

fn many_files(dir: &Path) {
    let secs = env_num("VIGIL_BENCH_SECS", 30);
    let files = 1000;
    let sub = dir.join("many");
    fs::create_dir_all(&sub).expect("mkdir");
    for i in 0..files {
        fs::write(sub.join(format!("app-{i:04}.log")), b"").expect("create");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (sub, stop) = (sub.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut handles: Vec<fs::File> = (0..files)
                .map(|i| {
                    OpenOptions::new()
                        .append(true)
                        .open(sub.join(format!("app-{i:04}.log")))
                        .expect("open")
                })
                .collect();
            let mut n = 0u64;
            // About one line per file per second, spread evenly.
            while !stop.load(Ordering::Relaxed) {
                for (i, h) in handles.iter_mut().enumerate() {
                    let _ = writeln!(
                        h,
                        "2026-11-23 10:00:00.000 INFO [main] c.e.App - file {i} line {n}"
                    );
                    n += 1;
                    if i % 10 == 9 {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        })
    };
    let cfg = SourceConfig::new([format!("{}/*.log", sub.display())]);
    let mut tailer = Tailer::new(vec![cfg], Checkpoints::empty()).expect("tailer");
    let mut sink = Count { lines: 0, bytes: 0 };
    tailer.scan().expect("scan");
    let cpu0 = thread_cpu_seconds();
    let t = Instant::now();
    let mut tick = 0u64;
    let mut peak_rss: f64 = 0.0;
    while t.elapsed() < Duration::from_secs(secs) {
        if tick.is_multiple_of(4) {
            tailer.scan().expect("scan");
        }
        while tailer.read(1 << 20, &mut sink).more {}
        tick += 1;
        peak_rss = peak_rss.max(rss_mb());
        std::thread::sleep(Duration::from_millis(250));
    }
    let wall = t.elapsed().as_secs_f64();
    let cpu = thread_cpu_seconds() - cpu0;
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    println!(
        "many files: {files} files, {wall:.0} s, {} lines read ({:.0}/s), tailer CPU {:.2}% of one core, RSS {:.1} MiB (peak {:.1} MiB)",
        sink.lines,
        sink.lines as f64 / wall,
        100.0 * cpu / wall,
        rss_mb(),
        peak_rss
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    println!("machine: {}", machine());
    let dir = tempfile::tempdir().expect("tempdir");
    throughput(dir.path());
    many_files(dir.path());
}
