//! Shape checks of host metrics on the machine the tests run on.
// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use vigil_agent::host::{HostSampler, MinuteHostMetrics, sample_command};

fn pct(name: &str, v: Option<f64>) {
    if let Some(v) = v {
        assert!((0.0..=100.0).contains(&v), "{name} = {v}");
    }
}

#[test]
fn real_proc_samples_have_sane_shapes() {
    let mut sampler = HostSampler::new("/proc");
    let t0 = Instant::now();
    assert_eq!(sampler.sample(t0).unwrap(), None);
    let mut agg = MinuteHostMetrics::new();
    for i in 1..=3 {
        std::thread::sleep(Duration::from_millis(150));
        let s = sampler.sample(Instant::now()).unwrap().unwrap();
        assert!(s.interval >= Duration::from_millis(150));
        pct("cpu", s.cpu_busy_pct);
        assert!(s.cpu_busy_pct.is_some(), "some CPU time passes in 150 ms");
        pct("mem", s.mem_used_pct);
        assert!(s.mem_used_pct.unwrap() > 0.0);
        pct("swap", s.swap_used_pct);
        for load in [s.load1, s.load5, s.load15] {
            assert!(load.is_finite() && load >= 0.0);
        }
        if let Some(d) = s.disk {
            assert!(d.disks >= 1);
            assert!((0.0..=100.0).contains(&d.busy_pct));
            assert_eq!(d.read_bytes % 512, 0);
            assert_eq!(d.write_bytes % 512, 0);
        }
        agg.add(1_763_880_000 + i, &s);
    }
    let (_, m) = agg.take_all().pop().unwrap();
    assert_eq!(m.samples, 3);
    assert!(m.partial);
    assert!(m.cpu_pct.unwrap() <= m.cpu_pct_max.unwrap() + 1e-9);
}

#[test]
fn sample_command_prints_replay_case_keys() {
    let mut out = Vec::new();
    sample_command("/proc".as_ref(), true, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "cpu_pct",
        "cpu_pct_max",
        "mem_used_pct",
        "load1",
        "load5",
        "load15",
    ] {
        assert!(v[key].is_number(), "{key} in {text}");
    }
    let disk_keys = [
        "disk_read_bytes",
        "disk_write_bytes",
        "disk_reads",
        "disk_writes",
        "disk_busy_pct",
    ];
    let present = disk_keys.iter().filter(|k| v.get(**k).is_some()).count();
    assert!(present == 0 || present == disk_keys.len(), "{text}");
    let known = [
        "cpu_pct",
        "cpu_pct_max",
        "mem_used_pct",
        "swap_used_pct",
        "load1",
        "load5",
        "load15",
        "disk_read_bytes",
        "disk_write_bytes",
        "disk_reads",
        "disk_writes",
        "disk_busy_pct",
    ];
    for key in v.as_object().unwrap().keys() {
        assert!(known.contains(&key.as_str()), "unexpected key {key}");
    }

    let mut out = Vec::new();
    sample_command("/proc".as_ref(), false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("host metrics over "), "{text}");
    assert!(text.contains("mem_used_pct"), "{text}");
}

#[test]
fn sample_command_on_a_missing_procfs_fails_naming_the_file() {
    let err = sample_command("/nonexistent/proc".as_ref(), true, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/proc/stat"), "{err}");
}
