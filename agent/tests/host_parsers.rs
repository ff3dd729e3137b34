//! Host-metrics parsers and deltas on fixture text (`tests/fixtures/host/`).
// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use vigil_agent::host::cpu_busy_pct;
use vigil_agent::host::disk::{DiskFilter, DiskIo, DiskTracker, counter_delta, excluded_by_name};
use vigil_agent::host::procfs::{
    CpuTimes, parse_diskstats, parse_diskstats_line, parse_loadavg, parse_meminfo, parse_stat,
};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("fixtures/host/", $name))
    };
}

const TEN_S: Option<Duration> = Some(Duration::from_secs(10));

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn stat_aggregate_line() {
    let cpu = parse_stat(fixture!("stat.1")).unwrap();
    assert_eq!(
        cpu,
        CpuTimes {
            user: 10000,
            nice: 500,
            system: 3000,
            idle: 80000,
            iowait: 1000,
            irq: 0,
            softirq: 200,
            steal: 100,
            guest: 400,
            guest_nice: 0,
        }
    );
    assert_eq!(cpu.busy(), 10000 + 500 + 3000 + 200 + 100);
    assert_eq!(cpu.idle_all(), 81000);
}

#[test]
fn stat_old_kernel_has_fewer_columns() {
    let cpu = parse_stat(fixture!("stat.old-kernel")).unwrap();
    assert_eq!(cpu.softirq, 200);
    assert_eq!(cpu.steal, 0);
    assert_eq!(cpu.guest, 0);
}

#[test]
fn stat_rejects_garbage() {
    assert!(parse_stat("").is_err());
    assert!(parse_stat("cpu0 1 2 3 4\n").is_err(), "no aggregate line");
    assert!(parse_stat("cpu  1 2 3\n").is_err(), "too few columns");
    let err = parse_stat("cpu  1 2 x 4\n").unwrap_err();
    assert!(err.to_string().contains("\"x\""), "{err}");
}

#[test]
fn cpu_busy_excludes_idle_and_iowait_and_does_not_double_count_guest() {
    let a = parse_stat(fixture!("stat.1")).unwrap();
    let b = parse_stat(fixture!("stat.2")).unwrap();
    // Deltas: user 600 (guest 100 inside), nice 50, system 250, idle 800, iowait 200,
    // softirq 50, steal 50: busy 1000 of 2000 ticks. Counting iowait as busy would give 60,
    // adding guest again 55.
    let pct = cpu_busy_pct(&a, &b).unwrap();
    assert!(close(pct, 50.0), "{pct}");
}

#[test]
fn cpu_busy_survives_counters_going_back() {
    let a = parse_stat(fixture!("stat.1")).unwrap();
    let mut b = a;
    b.user += 100;
    b.iowait -= 50; // some kernels let iowait go back a little
    let pct = cpu_busy_pct(&a, &b).unwrap();
    assert!(close(pct, 100.0), "{pct}");
    assert_eq!(cpu_busy_pct(&a, &a), None, "no tick elapsed");
    // After a reboot everything is smaller: never negative, never above 100.
    let reboot = CpuTimes {
        user: 5,
        idle: 10,
        ..CpuTimes::default()
    };
    if let Some(pct) = cpu_busy_pct(&a, &reboot) {
        assert!((0.0..=100.0).contains(&pct));
    }
}

#[test]
fn meminfo_used_from_mem_available() {
    let m = parse_meminfo(fixture!("meminfo")).unwrap();
    assert_eq!(m.mem_total_kb, 16_000_000);
    assert_eq!(m.mem_available_kb, Some(4_000_000));
    assert!(close(m.mem_used_pct().unwrap(), 75.0));
    assert!(close(m.swap_used_pct().unwrap(), 25.0));
}

#[test]
fn meminfo_without_swap_has_no_swap_figure() {
    let m = parse_meminfo(fixture!("meminfo.no-swap")).unwrap();
    assert_eq!(m.swap_used_pct(), None);
    let used = m.mem_used_pct().unwrap();
    assert!(
        close(used, 100.0 * (1.0 - 24_306_020.0 / 24_684_100.0)),
        "{used}"
    );
}

#[test]
fn meminfo_old_kernel_falls_back_to_free_buffers_cached() {
    let m = parse_meminfo(fixture!("meminfo.old-kernel")).unwrap();
    assert_eq!(m.mem_available_kb, None);
    // available = 1000000 + 500000 + 2500000 = 4000000 of 8000000.
    assert!(close(m.mem_used_pct().unwrap(), 50.0));
    assert!(close(m.swap_used_pct().unwrap(), 0.0));
}

#[test]
fn meminfo_errors() {
    assert!(parse_meminfo("MemFree: 1 kB\n").is_err(), "no MemTotal");
    assert!(parse_meminfo("MemTotal: lots kB\n").is_err());
    // Available above total (never from a kernel) still stays within 0..=100.
    let m = parse_meminfo("MemTotal: 100 kB\nMemAvailable: 200 kB\n").unwrap();
    assert!(close(m.mem_used_pct().unwrap(), 0.0));
    assert_eq!(
        parse_meminfo("MemTotal: 0 kB\n").unwrap().mem_used_pct(),
        None
    );
}

#[test]
fn loadavg() {
    let l = parse_loadavg(fixture!("loadavg")).unwrap();
    assert!(close(l.load1, 1.5) && close(l.load5, 0.75) && close(l.load15, 0.25));
    assert!(parse_loadavg("1.0 2.0\n").is_err());
    assert!(parse_loadavg("1.0 -2.0 3.0 1/2 3\n").is_err());
    assert!(parse_loadavg("NaN 1 1 1/2 3\n").is_err());
}

#[test]
fn diskstats_lines_of_every_kernel_generation() {
    // 14 fields (up to 4.17), 18 (discards, 4.18), 20 (flushes, 5.5).
    for line in [
        "   8       0 sda 300 5 24000 100 400 3 32000 200 0 250 300",
        "   8       0 sda 300 5 24000 100 400 3 32000 200 0 250 300 0 0 0 0",
        "   8       0 sda 300 5 24000 100 400 3 32000 200 0 250 300 0 0 0 0 7 8",
    ] {
        let d = parse_diskstats_line(line).unwrap();
        assert_eq!((d.major, d.minor, d.name), (8, 0, "sda"));
        assert_eq!(
            (d.reads, d.sectors_read, d.writes, d.sectors_written),
            (300, 24000, 400, 32000)
        );
        assert_eq!(d.io_ms, 250);
    }
    assert!(parse_diskstats_line("   8       0 sda 300 5 24000").is_err());
    assert!(
        parse_diskstats_line("   8       0 sda 300 5 x 100 400 3 32000 200 0 250 300").is_err()
    );
    let all: Vec<_> = parse_diskstats(fixture!("diskstats.1"))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(all.len(), 22);
}

#[test]
fn physical_disks_by_name() {
    for name in [
        "sda",
        "sdaa",
        "vda",
        "xvda",
        "hda",
        "nvme0n1",
        "nvme12n3",
        "mmcblk0",
        "nbd0",
        "rbd0",
        "cciss/c0d0",
    ] {
        assert!(!excluded_by_name(name), "{name} is a disk");
    }
    for name in [
        "sda1",
        "sdaa12",
        "vdb2",
        "xvda1",
        "hda3",
        "nvme0n1p1",
        "nvme12n3p15",
        "mmcblk0p1",
        "mmcblk0boot0",
        "mmcblk1rpmb",
        "loop0",
        "loop12",
        "ram0",
        "zram0",
        "fd0",
        "sr0",
        "dm-0",
        "dm-12",
        "md0",
        "md127",
        "md_d0",
    ] {
        assert!(excluded_by_name(name), "{name} is not a physical disk");
    }
}

#[test]
fn physical_disks_by_sysfs() {
    let sys = tempfile::tempdir().unwrap();
    let block = sys.path().join("block");
    // Whole disks with a `device` link, virtual ones without, and no partitions (they live
    // under their disk in sysfs).
    for (name, hardware) in [
        ("sda", true),
        ("nvme0n1", true),
        ("cciss!c0d0", true),
        ("loop0", false),
        ("dm-0", false),
        ("nbd0", false),
        ("zram0", false),
    ] {
        std::fs::create_dir_all(block.join(name)).unwrap();
        if hardware {
            std::fs::create_dir_all(block.join(name).join("device")).unwrap();
        }
    }
    let mut filter = DiskFilter::new(Some(sys.path()));
    assert!(filter.is_physical("sda"));
    assert!(filter.is_physical("nvme0n1"));
    assert!(filter.is_physical("cciss/c0d0"));
    assert!(!filter.is_physical("sda1"), "partition: not in /sys/block");
    assert!(!filter.is_physical("nbd0"), "no device link");
    assert!(!filter.is_physical("loop0"));
    assert!(!filter.is_physical("sdq"), "not in this sysfs");
    // Cached: removing sysfs does not change an answer already given.
    drop(sys);
    assert!(filter.is_physical("sda"));
}

#[test]
fn counter_deltas() {
    assert_eq!(counter_delta(10, 15), Some(5));
    assert_eq!(counter_delta(10, 10), Some(0));
    // 32-bit wrap: from the top quarter to the bottom quarter.
    assert_eq!(counter_delta(4_294_967_000, 200), Some(496));
    // Anything else that goes back is a reset.
    assert_eq!(counter_delta(5_000_000, 3), None);
    assert_eq!(
        counter_delta(1 << 40, 3),
        None,
        "64-bit counters do not wrap at 2^32"
    );
    assert_eq!(counter_delta(4_294_967_000, 2_000_000_000), None);
}

fn tracker() -> DiskTracker {
    DiskTracker::new(DiskFilter::new(None))
}

#[test]
fn disk_io_over_physical_disks_with_wrap_reset_hotplug_and_removal() {
    let mut t = tracker();
    assert_eq!(
        t.update(fixture!("diskstats.1"), None).unwrap(),
        DiskIo::default()
    );
    let io = t.update(fixture!("diskstats.2"), TEN_S).unwrap();
    // nvme0n1 (+8000/+16000 sectors, +100/+200 ops, 25 % busy), sda (+80/+160 sectors,
    // +10/+20 ops, 90 % busy), sdb (+8 sectors, +1 read, io_ticks wrapped: 496 ms).
    // nvme1n1 reset, mmcblk0 gone, sdc new: nothing from them; dm, md, loop, zram,
    // partitions never.
    assert_eq!(io.read_bytes, (8000 + 80 + 8) * 512);
    assert_eq!(io.write_bytes, (16000 + 160) * 512);
    assert_eq!(io.reads, 111);
    assert_eq!(io.writes, 220);
    assert!(close(io.busy_pct, 90.0), "{}", io.busy_pct);
    assert_eq!(io.disks, 3);

    // The re-plugged and the new device are measured from their new values.
    let io = t.update(fixture!("diskstats.3"), TEN_S).unwrap();
    assert_eq!(io.read_bytes, (40 + 56) * 512);
    assert_eq!(io.reads, 12);
    assert_eq!(io.write_bytes, 0);
    assert!(close(io.busy_pct, 0.1), "{}", io.busy_pct);
    assert_eq!(io.disks, 5);
}

#[test]
fn disk_busy_is_capped_and_impossible_jumps_are_dropped() {
    let mut t = tracker();
    t.update(
        "8 0 sda 0 0 0 0 0 0 0 0 0 0 0\n8 16 sdb 0 0 0 0 0 0 0 0 0 0 0\n",
        None,
    )
    .unwrap();
    // sda: io_ticks a little over the elapsed time (jiffies rounding). sdb: 2^50 sectors in
    // ten seconds, which no disk does: a counter that restarted high, dropped.
    let io = t
        .update(
            "8 0 sda 1 0 8 0 0 0 0 0 0 10400 0\n8 16 sdb 1 0 1125899906842624 0 0 0 0 0 0 10 0\n",
            TEN_S,
        )
        .unwrap();
    assert!(close(io.busy_pct, 100.0));
    assert_eq!(io.read_bytes, 8 * 512);
    assert_eq!(io.disks, 1);
}

#[test]
fn disk_with_new_device_number_is_a_new_device() {
    let mut t = tracker();
    t.update("8 0 sda 100 0 800 0 0 0 0 0 0 0 0\n", None)
        .unwrap();
    // Same name, different major:minor: another device took the name; prime again.
    let io = t
        .update("8 32 sda 500 0 4000 0 0 0 0 0 0 0 0\n", TEN_S)
        .unwrap();
    assert_eq!(io.disks, 0);
    let io = t
        .update("8 32 sda 501 0 4008 0 0 0 0 0 0 0 0\n", TEN_S)
        .unwrap();
    assert_eq!((io.reads, io.read_bytes, io.disks), (1, 8 * 512, 1));
}

#[test]
fn disk_parse_error_forgets_previous_counters() {
    let mut t = tracker();
    t.update("8 0 sda 100 0 800 0 0 0 0 0 0 0 0\n", None)
        .unwrap();
    assert!(t.update("8 0 sda 100 0 garbage\n", TEN_S).is_err());
    let io = t
        .update("8 0 sda 900 0 9000 0 0 0 0 0 0 0 0\n", TEN_S)
        .unwrap();
    assert_eq!(
        io.disks, 0,
        "primes again after an error instead of a huge delta"
    );
}
