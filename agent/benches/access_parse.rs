//! Throughput of the access-log parser on one core: realistic nginx lines (`combined` plus
//! `$request_time`) and Tomcat lines (`%h %l %u %t "%r" %s %b %D`).
//!
//! `cargo bench -p vigil-agent --bench access_parse`
//!
//! Generates `VIGIL_BENCH_BYTES` bytes (default 256 MiB) of each kind in memory (varied
//! client addresses, paths and query strings, referers, real browser and tool user agents,
//! statuses mostly 200 with 3xx/4xx/5xx, response times from under a millisecond to
//! seconds, timestamps advancing through the minutes), then for each, on this thread:
//!
//! 1. **parse**: split the buffer into lines (`memchr`) and read every line with
//!    `AccessFormat::parse` (timestamp, status, response time);
//! 2. **parse + count**: the same, each request also counted into the agent's per-minute
//!    counters (`MinuteCounters::record_request`: status class and latency bucket).
//!
//! Each pass runs 4 times over the buffer. It prints MB/s per core: the bytes read (line
//! ends included) over the CPU time (user + system) of this process spent in those passes. File reading and the tailer are not
//! in it (`tail_throughput` measures those).

use std::fmt::Write as _;
use std::time::Instant;

use vigil_agent::access::AccessFormat;
use vigil_agent::minute::MinuteCounters;

/// 2026-11-23T18:45:00Z.
const START: i64 = 1_795_459_500;

const NGINX: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status \
                     $body_bytes_sent \"$http_referer\" \"$http_user_agent\" $request_time";
const TOMCAT: &str = "%h %l %u %t \"%r\" %s %b %D";

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    "curl/8.5.0",
    "okhttp/4.12.0",
    "Apache-HttpClient/5.3.1 (Java/17.0.10)",
    "kube-probe/1.29",
];
const PATHS: &[&str] = &[
    "/",
    "/api/v1/cart",
    "/api/v1/orders/7f3a9c21-5b8e-4c1d-9a2f-0e6b7d8c9a10",
    "/api/v1/products?category=shoes&size=42&sort=price_asc&page=3",
    "/static/js/app.3f9a1c.min.js",
    "/actuator/health",
    "/checkout/payment?session=Zm9vYmFyYmF6cXV4&step=2",
    "/images/products/sku-102938/large.webp",
];
const REFERERS: &[&str] = &[
    "-",
    "https://shop.example.com/",
    "https://shop.example.com/api/v1/products?category=shoes",
    "https://www.google.com/",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "GET", "DELETE", "GET"];

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn status(rng: &mut Rng) -> u16 {
    match rng.next() % 100 {
        0..=84 => 200,
        85..=89 => 304,
        90..=93 => 302,
        94..=97 => 404,
        98 => 500,
        _ => 503,
    }
}

/// Response time in microseconds: mostly milliseconds, a tail to seconds.
fn latency_us(rng: &mut Rng) -> u64 {
    match rng.next() % 100 {
        0..=59 => 200 + rng.next() % 5_000,
        60..=94 => 5_000 + rng.next() % 120_000,
        _ => 125_000 + rng.next() % 3_000_000,
    }
}

/// `dd/MMM/yyyy:HH:mm:ss +0100` of Unix time `t`.
fn clf(t: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let local = t + 3600;
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    // Civil date from days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0100",
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn generate(size: usize, tomcat: bool) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = String::with_capacity(size + 1024);
    let mut n: i64 = 0;
    while out.len() < size {
        // About 2,000 requests a second.
        let t = START + n / 2000;
        n += 1;
        let ip = format!(
            "10.{}.{}.{}",
            rng.next() % 256,
            rng.next() % 256,
            1 + rng.next() % 254
        );
        let method = rng.pick(METHODS);
        let path = rng.pick(PATHS);
        let status = status(&mut rng);
        let bytes = if status == 304 {
            "-".to_owned()
        } else {
            (100 + rng.next() % 40_000).to_string()
        };
        let us = latency_us(&mut rng);
        let _ = if tomcat {
            writeln!(
                out,
                "{ip} - - [{}] \"{method} {path} HTTP/1.1\" {status} {bytes} {us}",
                clf(t)
            )
        } else {
            writeln!(
                out,
                "{ip} - - [{}] \"{method} {path} HTTP/1.1\" {status} {bytes} \"{}\" \"{}\" {}.{:03}",
                clf(t),
                rng.pick(REFERERS),
                rng.pick(AGENTS),
                us / 1_000_000,
                us / 1000 % 1000
            )
        };
    }
    out.into_bytes()
}

/// CPU time of this process in seconds (user + system).
fn cpu_seconds() -> f64 {
    // /proc/self/stat fields 14 and 15 (utime, stime) in clock ticks (100 Hz on Linux).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return f64::NAN;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// Every line of `buf`, without its `\n`.
fn lines(buf: &[u8], mut each: impl FnMut(&[u8])) {
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', buf) {
        each(&buf[start..end]);
        start = end + 1;
    }
}

/// Passes over the buffer per measurement: CPU time is read in 10 ms ticks.
const ROUNDS: usize = 4;

/// Runs `pass` over the buffer [`ROUNDS`] times and prints its rate.
fn measure(label: &str, buf: &[u8], mut pass: impl FnMut(&[u8]) -> (u64, u64)) {
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let (mut requests, mut malformed) = (0, 0);
    for _ in 0..ROUNDS {
        let (ok, bad) = pass(buf);
        requests += ok;
        malformed += bad;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let mb = (buf.len() * ROUNDS) as f64 / 1e6;
    println!(
        "{label}: {requests} requests, {malformed} malformed; wall {wall:.2}s ({:.0} MB/s), \
         cpu {cpu:.2}s => {:.0} MB/s per core, {:.0} ns per line",
        mb / wall,
        mb / cpu,
        cpu * 1e9 / (requests + malformed).max(1) as f64
    );
    assert_eq!(malformed, 0, "{label}: the generated lines must all parse");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let size: usize = std::env::var("VIGIL_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256 << 20);
    println!(
        "machine: {} ({} cores)",
        cpu_model(),
        std::thread::available_parallelism()?.get()
    );
    for (name, format_text, tomcat) in [
        ("nginx combined + $request_time", NGINX, false),
        ("tomcat %h %l %u %t \"%r\" %s %b %D", TOMCAT, true),
    ] {
        let t = Instant::now();
        let buf = generate(size, tomcat);
        let lines_in = memchr::memchr_iter(b'\n', &buf).count();
        println!(
            "\n{name}: {:.1} MB, {lines_in} lines ({:.0} bytes a line), generated in {:.1}s",
            buf.len() as f64 / 1e6,
            buf.len() as f64 / lines_in as f64,
            t.elapsed().as_secs_f64()
        );
        let format = AccessFormat::compile(format_text, None)?;
        measure("  parse", &buf, |buf| {
            let (mut ok, mut bad, mut statuses) = (0u64, 0u64, 0u64);
            lines(buf, |line| match format.parse(line) {
                Ok(r) => {
                    ok += 1;
                    statuses += u64::from(r.status);
                }
                Err(_) => bad += 1,
            });
            std::hint::black_box(statuses);
            (ok, bad)
        });
        measure("  parse + count", &buf, |buf| {
            let mut counters = MinuteCounters::new(&["shop"], START).with_requests([0]);
            let (mut ok, mut bad) = (0u64, 0u64);
            lines(buf, |line| match format.parse(line) {
                Ok(r) => {
                    ok += 1;
                    counters.record_request(0, r.time.unwrap_or(START), r.status, r.latency_ms);
                }
                Err(_) => {
                    bad += 1;
                    counters.record_malformed(0, START);
                }
            });
            let reports = counters.take(START + 86_400, false);
            let counted: u64 = reports
                .iter()
                .flat_map(|r| &r.apps)
                .filter_map(|a| a.requests.as_ref())
                .map(|r| r.count)
                .sum();
            assert_eq!(counted, ok, "every request in one minute report");
            (ok, bad)
        });
    }
    Ok(())
}
