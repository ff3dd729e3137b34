//! Per-minute aggregation of host and process samples.
// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use vigil_agent::host::disk::DiskIo;
use vigil_agent::host::{
    AppProcessSample, MinuteHostMetrics, MinuteProcessMetrics, Sample, minute_of,
};

fn sample(secs: u64, cpu: f64, write_bytes: u64) -> Sample {
    Sample {
        interval: Duration::from_secs(secs),
        cpu_busy_pct: Some(cpu),
        mem_used_pct: Some(40.0),
        swap_used_pct: None,
        load1: 1.0,
        load5: 0.5,
        load15: 0.25,
        disk: Some(DiskIo {
            read_bytes: 0,
            write_bytes,
            reads: 0,
            writes: write_bytes / 4096,
            busy_pct: cpu / 10.0,
            disks: 1,
        }),
    }
}

const M: i64 = 1_763_880_000; // a minute

#[test]
fn minute_of_the_middle_of_the_interval() {
    let ten = Duration::from_secs(10);
    assert_eq!(
        minute_of(M + 60, ten),
        M,
        "a sample at :00 covers the minute that ended"
    );
    assert_eq!(minute_of(M + 59, ten), M);
    assert_eq!(minute_of(M + 66, ten), M + 60);
    assert_eq!(minute_of(M + 64, ten), M, "middle at :59");
    assert_eq!(
        minute_of(-1, Duration::ZERO),
        -60,
        "floor, also before 1970"
    );
}

#[test]
fn steady_minutes_first_one_partial() {
    let mut agg = MinuteHostMetrics::new();
    // Started at M+23 (primed), samples every 10 s until M+133; the integrator asks for
    // completed minutes after each sample.
    let mut handed = Vec::new();
    let mut t = M + 33;
    while t <= M + 133 {
        let cpu = if t < M + 60 {
            20.0
        } else {
            10.0 + (t - M - 60) as f64
        };
        agg.add(t, &sample(10, cpu, 40960));
        for (minute, m) in agg.take_completed(t) {
            handed.push((t, minute, m));
        }
        t += 10;
    }
    assert_eq!(handed.len(), 2);
    // Minute M is handed out with the first sample of the next minute (M+73), not at M+63
    // (whose sample still belongs to M).
    let (at, minute, first) = &handed[0];
    assert_eq!((*at, *minute), (M + 73, M));
    assert!(first.partial, "the first minute after start is partial");
    assert_eq!(first.samples, 4); // M+33, 43, 53, 63
    assert!((first.cpu_pct.unwrap() - 18.25).abs() < 1e-9);
    // Second minute: samples at M+73 .. M+123 (6), cpu 23, 33, .., 73.
    let (at, minute, m) = &handed[1];
    assert_eq!((*at, *minute), (M + 133, M + 60));
    assert!(!m.partial);
    assert_eq!(m.samples, 6);
    assert!((m.cpu_pct.unwrap() - 48.0).abs() < 1e-9, "{:?}", m.cpu_pct);
    assert_eq!(m.cpu_pct_max, Some(73.0));
    assert_eq!(m.mem_used_pct, Some(40.0));
    assert_eq!(m.swap_used_pct, None, "no swap measured: absent");
    assert_eq!(m.load1, Some(1.0));
    assert_eq!(m.disk_write_bytes, Some(6 * 40960));
    assert_eq!(m.disk_read_bytes, Some(0));
    assert_eq!(m.disk_writes, Some(60));
    assert!((m.disk_busy_pct.unwrap() - 4.8).abs() < 1e-9);
    // Without more samples, minute M+120 completes once no sample can belong to it.
    assert!(agg.take_completed(M + 183).is_empty());
    assert_eq!(agg.take_completed(M + 187).len(), 1);
    // Handed out once.
    assert!(agg.take_completed(M + 600).is_empty());
}

#[test]
fn cpu_mean_is_time_weighted() {
    let mut agg = MinuteHostMetrics::new();
    agg.add(M + 10, &sample(10, 0.0, 0)); // first minute partial, ignore
    agg.add(M + 70, &sample(20, 90.0, 0));
    agg.add(M + 110, &sample(40, 30.0, 0));
    agg.add(M + 130, &sample(20, 0.0, 0)); // mid M+120: next minute
    let done = agg.take_completed(M + 130);
    let (_, m) = done.iter().find(|(m, _)| *m == M + 60).unwrap();
    assert!(
        (m.cpu_pct.unwrap() - 50.0).abs() < 1e-9,
        "(90×20 + 30×40) / 60"
    );
    assert_eq!(m.cpu_pct_max, Some(90.0));
}

#[test]
fn late_samples_go_to_the_next_open_minute_never_twice() {
    let mut agg = MinuteHostMetrics::new();
    agg.add(M + 50, &sample(10, 10.0, 100));
    let done = agg.take_completed(M + 200);
    assert_eq!(done.len(), 1);
    agg.add(M + 55, &sample(5, 10.0, 100)); // the wall clock stepped back
    assert_eq!(agg.late_samples(), 1);
    let done = agg.take_completed(M + 400);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, M + 60);
    assert_eq!(done[0].1.disk_write_bytes, Some(100));
}

#[test]
fn interrupted_and_stopping_minutes_are_partial() {
    let mut agg = MinuteHostMetrics::new();
    for t in (M + 10..=M + 60).step_by(10) {
        agg.add(t, &sample(10, 5.0, 0));
    }
    // Minute M+60: only two samples (sampling stopped, then the agent stops).
    agg.add(M + 70, &sample(10, 5.0, 0));
    agg.add(M + 80, &sample(10, 5.0, 0));
    let done = agg.take_completed(M + 85);
    assert_eq!(done.len(), 1);
    let rest = agg.take_all();
    assert_eq!(rest.len(), 1);
    assert!(rest[0].1.partial);
    assert_eq!(rest[0].1.samples, 2);

    // A minute covered by two samples out of six, handed out after it ended.
    let mut agg = MinuteHostMetrics::new();
    agg.add(M + 10, &sample(10, 5.0, 0));
    agg.add(M + 130, &sample(10, 5.0, 0));
    agg.add(M + 140, &sample(10, 5.0, 0));
    let done = agg.take_completed(M + 200);
    assert_eq!(done.len(), 2);
    assert!(done[1].1.partial, "20 s of 60 covered");
}

#[test]
fn a_stall_never_lands_more_than_a_minute_of_io_in_one_minute() {
    let mut agg = MinuteHostMetrics::new();
    agg.add(M + 10, &sample(10, 5.0, 4096));
    // The host was suspended for an hour: one sample over 3600 s.
    agg.add(M + 3610, &sample(3600, 5.0, 3600 * 4096));
    let done = agg.take_all();
    let (minute, m) = done.last().unwrap();
    assert_eq!(*minute, M + 3540, "the last minute of the stall");
    assert_eq!(m.disk_write_bytes, Some(60 * 4096));
    assert_eq!(m.disk_writes, Some(60));
}

#[test]
fn missing_figures_stay_absent() {
    let mut agg = MinuteHostMetrics::new();
    let mut s = sample(10, 5.0, 0);
    s.disk = None;
    s.cpu_busy_pct = None;
    agg.add(M + 10, &s);
    let (_, m) = agg.take_all().pop().unwrap();
    assert_eq!(
        (m.cpu_pct, m.cpu_pct_max, m.disk_read_bytes, m.disk_busy_pct),
        (None, None, None, None)
    );
    assert_eq!(m.samples, 1);
}

fn app(interval: u64, cpu: Option<f64>, rss: u64, processes: u32) -> Vec<AppProcessSample> {
    vec![
        AppProcessSample {
            app: "shop".into(),
            interval: Duration::from_secs(interval),
            cpu_pct: cpu,
            rss_bytes: rss,
            processes,
        },
        AppProcessSample {
            app: "billing".into(),
            interval: Duration::from_secs(interval),
            cpu_pct: None,
            rss_bytes: 0,
            processes: 0,
        },
    ]
}

#[test]
fn process_minutes() {
    let mut agg = MinuteProcessMetrics::new();
    agg.add(M + 5, &app(0, None, 1000, 1)); // priming sample: not counted
    for (i, t) in (M + 15..M + 60).step_by(10).enumerate() {
        agg.add(
            t,
            &app(10, Some(100.0 + i as f64 * 10.0), 1000 * (i as u64 + 1), 1),
        );
    }
    for t in (M + 65..=M + 125).step_by(10) {
        agg.add(t, &app(10, Some(150.0), 2000, 2));
    }
    let done = agg.take_completed(M + 125);
    assert_eq!(done.len(), 2);
    let (minute, apps) = &done[0];
    assert_eq!(*minute, M);
    assert_eq!(apps.len(), 1, "billing matched no process");
    assert!(apps[0].partial);
    let (minute, apps) = &done[1];
    assert_eq!(*minute, M + 60);
    assert_eq!(apps[0].app, "shop");
    assert!(!apps[0].partial);
    assert_eq!(apps[0].cpu_pct, Some(150.0));
    assert_eq!(apps[0].rss_bytes, Some(2000));
    assert_eq!(apps[0].processes_max, 2);
}
