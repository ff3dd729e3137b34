//! Cost of host-metrics sampling: µs per sample and the share of one core a sampling-only
//! agent uses at the default 10 s interval.
//!
//! `cargo bench -p vigil-agent --bench host_sample` (set `VIGIL_BENCH_SAMPLES` to change
//! the number of samples per measurement, default 20000).
//!
//! Method: take N samples back to back on the real `/proc` after one priming sample, and
//! read this process's CPU time (`utime + stime` of `/proc/self/stat`, 10 ms ticks) and the
//! wall-clock time around them. CPU per sample = CPU time / N; the agent's share of one
//! core at interval T = CPU per sample / T. Back-to-back samples see hotter caches than
//! one every 10 s, so the wall-clock figure per sample (an upper bound of the CPU time of a
//! single-threaded loop) is printed beside it.
// A benchmark reports by printing; a failure to read /proc is a panic with the reason.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use vigil_agent::host::{HostSampler, MinuteHostMetrics, ProcessSampler};

fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    let mut fields = rest.split_ascii_whitespace();
    let utime: u64 = fields.nth(11).unwrap().parse().unwrap();
    let stime: u64 = fields.next().unwrap().parse().unwrap();
    utime + stime
}

struct Cost {
    cpu_us: f64,
    wall_us: f64,
}

fn measure(n: u32, mut f: impl FnMut()) -> Cost {
    let ticks = cpu_ticks();
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    let wall = start.elapsed();
    let cpu = Duration::from_millis((cpu_ticks() - ticks) * 10);
    Cost {
        cpu_us: cpu.as_secs_f64() * 1e6 / f64::from(n),
        wall_us: wall.as_secs_f64() * 1e6 / f64::from(n),
    }
}

fn report(what: &str, cost: &Cost) {
    let share = |us: f64| us / 10e6 * 100.0;
    println!(
        "{what:<44} {:>8.1} µs CPU/sample ({:>8.1} µs wall)  → {:.5} % of one core at 10 s \
         ({:.5} % by wall time)",
        cost.cpu_us,
        cost.wall_us,
        share(cpu_or_wall(cost)),
        share(cost.wall_us),
    );
}

/// Ticks are 10 ms: when fewer than a few elapsed, fall back on wall time (an upper bound).
fn cpu_or_wall(cost: &Cost) -> f64 {
    if cost.cpu_us > 0.0 {
        cost.cpu_us
    } else {
        cost.wall_us
    }
}

fn main() {
    let n: u32 = std::env::var("VIGIL_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let processes = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .count()
        })
        .unwrap_or(0);
    let disks = std::fs::read_to_string("/proc/diskstats").map_or(0, |d| d.lines().count());
    println!(
        "machine: nproc {}, CPU {model}, kernel {}, {processes} processes, {disks} diskstats lines",
        std::thread::available_parallelism().map_or(0, |p| p.get()),
        kernel.trim(),
    );
    println!(
        "method: {n} samples back to back on /proc after one priming sample; CPU time from /proc/self/stat utime+stime (10 ms ticks)"
    );

    let mut sampler = HostSampler::new("/proc");
    sampler.sample(Instant::now()).unwrap();
    let mut minutes = MinuteHostMetrics::new();
    let mut t = 1_763_880_000_i64;
    let host = measure(n, || {
        let sample = sampler.sample(Instant::now()).unwrap();
        if let Some(sample) = sample {
            t += 10;
            minutes.add(t, &sample);
            black_box(minutes.take_completed(t));
        }
    });
    report("HostSampler::sample + minute aggregation", &host);

    // Per-app process metrics: one pattern that matches this benchmark, one that matches
    // nothing (every other process is skipped from the cache, their command lines re-read
    // every sixth sample).
    let exe = std::env::current_exe().unwrap();
    let me = regex::escape(exe.file_name().unwrap().to_str().unwrap());
    let apps = [
        ("bench".to_owned(), me),
        ("none".to_owned(), r"java .*nothing-such\.jar".to_owned()),
    ];
    let mut processes = ProcessSampler::new("/proc", &apps).unwrap();
    processes.sample(Instant::now()).unwrap();
    let process = measure(n / 4, || {
        black_box(processes.sample(Instant::now()).unwrap());
    });
    report("ProcessSampler::sample (2 apps)", &process);

    let total = Cost {
        cpu_us: host.cpu_us + process.cpu_us,
        wall_us: host.wall_us + process.wall_us,
    };
    report("both (an agent sampling host and processes)", &total);
    println!("target: under 0.1 % of one core at the default 10 s interval");
}
