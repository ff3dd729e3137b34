//! Property tests: the parsers never panic, disk deltas against a model of counters that
//! grow, wrap, reset and vanish, and the minute aggregator's bookkeeping.
// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;
use vigil_agent::host::disk::{DiskFilter, DiskIo, DiskTracker};
use vigil_agent::host::procfs::{parse_diskstats, parse_loadavg, parse_meminfo, parse_stat};
use vigil_agent::host::{MinuteHostMetrics, Sample};

proptest! {
    #[test]
    fn parsers_never_panic(text in "(cpu |MemTotal:|[0-9 ]{0,12}|[a-z]{0,4}|-|\\.|\n|\t){0,40}") {
        let _ = parse_stat(&text);
        let _ = parse_meminfo(&text);
        let _ = parse_loadavg(&text);
        let _ = parse_diskstats(&text).count();
    }

    #[test]
    fn parsers_never_panic_on_any_text(text in any::<String>()) {
        let _ = parse_stat(&text);
        let _ = parse_meminfo(&text);
        if let Ok(l) = parse_loadavg(&text) {
            prop_assert!(l.load1 >= 0.0 && l.load1.is_finite());
        }
        let _ = parse_diskstats(&text).count();
    }

    #[test]
    fn meminfo_percentages_stay_in_range(total in 0u64..1 << 40, avail in 0u64..1 << 41,
                                         swap in 0u64..1 << 40, free in 0u64..1 << 41) {
        let m = parse_meminfo(&format!(
            "MemTotal: {total} kB\nMemAvailable: {avail} kB\nSwapTotal: {swap} kB\nSwapFree: {free} kB\n"
        )).unwrap();
        for v in [m.mem_used_pct(), m.swap_used_pct()].into_iter().flatten() {
            prop_assert!((0.0..=100.0).contains(&v));
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// All counters grow; io_ticks may cross 2^32.
    Grow {
        reads: u32,
        sectors: u32,
        io_ms: u16,
    },
    /// The device restarts its counters (hot-plug, driver reload) at half their values.
    Reset,
    /// The device is absent from one reading.
    Vanish,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u32>(), any::<u32>(), any::<u16>())
            .prop_map(|(reads, sectors, io_ms)| Op::Grow { reads: reads % 1_000_000, sectors: sectors % 50_000_000, io_ms }),
        1 => Just(Op::Reset),
        1 => Just(Op::Vanish),
    ]
}

fn line(reads: u64, sectors: u64, io_ms: u64) -> String {
    format!("8 0 sda {reads} 0 {sectors} 0 {reads} 0 {sectors} 0 0 {io_ms} 0\n")
}

proptest! {
    #[test]
    fn disk_deltas_follow_the_model(start_io in prop_oneof![Just(0u64), (1u64 << 32) - 70_000..1u64 << 32],
                                   ops in proptest::collection::vec(op(), 1..40)) {
        let ten = Some(Duration::from_secs(10));
        let mut tracker = DiskTracker::new(DiskFilter::new(None));
        let (mut reads, mut sectors, mut io) = (1_000u64, 80_000u64, start_io);
        tracker.update(&line(reads, sectors, io), None).unwrap();
        let mut present = true;
        for op in ops {
            let got = tracker_io(&mut tracker, &op, &mut reads, &mut sectors, &mut io, ten, present);
            present = !matches!(op, Op::Vanish);
            prop_assert!((0.0..=100.0).contains(&got.busy_pct));
            prop_assert!(got.disks <= 1);
            prop_assert!(got.reads <= 10 << 24 && got.read_bytes <= (10 << 26) * 512);
        }
    }
}

/// Apply one op to the model counters, feed the tracker and check the exact expectation.
fn tracker_io(
    tracker: &mut DiskTracker,
    op: &Op,
    reads: &mut u64,
    sectors: &mut u64,
    io: &mut u64,
    elapsed: Option<Duration>,
    was_present: bool,
) -> DiskIo {
    match *op {
        Op::Vanish => {
            let got = tracker.update("", elapsed).unwrap();
            assert_eq!(got, DiskIo::default());
            got
        }
        Op::Reset => {
            let (old_reads, old_sectors) = (*reads, *sectors);
            *reads /= 2;
            *sectors /= 2;
            let got = tracker
                .update(&line(*reads, *sectors, *io), elapsed)
                .unwrap();
            let went_back = *reads < old_reads || *sectors < old_sectors;
            if went_back || !was_present {
                assert_eq!(got.disks, 0, "a reset or a returning device only primes");
            } else {
                assert_eq!((got.disks, got.reads, got.read_bytes), (1, 0, 0));
            }
            got
        }
        Op::Grow {
            reads: dr,
            sectors: ds,
            io_ms,
        } => {
            *reads += u64::from(dr);
            *sectors += u64::from(ds);
            *io = (*io + u64::from(io_ms)) % (1 << 32);
            let got = tracker
                .update(&line(*reads, *sectors, *io), elapsed)
                .unwrap();
            if was_present {
                assert_eq!(got.disks, 1, "{op:?}");
                assert_eq!(got.reads, u64::from(dr));
                assert_eq!(got.writes, u64::from(dr));
                assert_eq!(got.read_bytes, u64::from(ds) * 512);
                assert_eq!(got.write_bytes, u64::from(ds) * 512);
                let busy = f64::from(io_ms).min(10_000.0) / 100.0;
                assert!(
                    (got.busy_pct - busy).abs() < 1e-9,
                    "{} vs {busy}",
                    got.busy_pct
                );
            } else {
                assert_eq!(got.disks, 0);
            }
            got
        }
    }
}

fn sample(interval: u64, cpu: f64, bytes: u64) -> Sample {
    Sample {
        interval: Duration::from_secs(interval),
        cpu_busy_pct: Some(cpu),
        mem_used_pct: Some(cpu / 2.0),
        swap_used_pct: None,
        load1: 1.0,
        load5: 1.0,
        load15: 1.0,
        disk: Some(DiskIo {
            read_bytes: bytes,
            write_bytes: 0,
            reads: 1,
            writes: 0,
            busy_pct: cpu,
            disks: 1,
        }),
    }
}

proptest! {
    #[test]
    fn minutes_are_handed_out_once_in_order_and_lose_nothing(
        steps in proptest::collection::vec((1u64..=60, 0.0f64..=100.0, 0u64..1 << 30, 0i64..90, any::<bool>()), 1..80)
    ) {
        let mut agg = MinuteHostMetrics::new();
        let mut t = 1_763_880_000i64 + 17;
        let mut handed = Vec::new();
        let (mut added, mut bytes) = (0u32, 0u64);
        for (gap, cpu, b, lag, take) in steps {
            t += gap as i64;
            agg.add(t, &sample(gap, cpu, b));
            added += 1;
            bytes += b;
            if take {
                let now = t + lag;
                for (minute, m) in agg.take_completed(now) {
                    prop_assert!(minute + 60 <= now, "{minute} handed out at {now}");
                    handed.push((minute, m));
                }
            }
        }
        handed.extend(agg.take_all());
        let minutes: Vec<i64> = handed.iter().map(|(m, _)| *m).collect();
        let unique: BTreeSet<i64> = minutes.iter().copied().collect();
        prop_assert_eq!(unique.len(), minutes.len(), "each minute once");
        prop_assert!(minutes.windows(2).all(|w| w[0] < w[1]), "oldest first");
        prop_assert!(handed[0].1.partial, "the first minute is partial");
        prop_assert_eq!(handed.iter().map(|(_, m)| m.samples).sum::<u32>(), added);
        prop_assert_eq!(handed.iter().map(|(_, m)| m.disk_read_bytes.unwrap()).sum::<u64>(), bytes);
        for (minute, m) in &handed {
            prop_assert_eq!(minute % 60, 0);
            prop_assert!(m.samples > 0);
            let cpu = m.cpu_pct.unwrap();
            prop_assert!((0.0..=100.0).contains(&cpu) && cpu <= m.cpu_pct_max.unwrap() + 1e-9);
            prop_assert!((0.0..=100.0).contains(&m.disk_busy_pct.unwrap()));
        }
    }
}
