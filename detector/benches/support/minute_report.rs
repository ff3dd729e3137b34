//! The minute report the round benchmarks fill their stores with: 1,200 lines, 5
//! fingerprints, host metrics. Included by `round_memory` and `rounds`.

use vigil_proto::PROTOCOL_VERSION;
use vigil_proto::v1::{
    AppCounters, ExceptionCount, HostMetrics, MinuteReport, Report, report::Body,
};

/// The report of `app` on `host` (agent `instance`) for `minute`, its `seq`.
pub fn minute_report(host: &str, instance: &str, app: &str, seq: u64, minute: i64) -> Report {
    Report {
        protocol_version: PROTOCOL_VERSION,
        host: host.into(),
        instance: instance.into(),
        agent_version: "bench".into(),
        fingerprint_version: 2,
        seq,
        sent_at: minute + 61,
        body: Some(Body::Minute(MinuteReport {
            minute,
            apps: vec![AppCounters {
                app: app.into(),
                lines: 1_200,
                events: 1_100,
                error_lines: 3,
                warn_lines: 5,
                exceptions: (0..5u64)
                    .map(|i| ExceptionCount {
                        fingerprint: 0x51ee_0000 + i,
                        count: 1 + (seq + i) % 3,
                    })
                    .collect(),
                ..Default::default()
            }],
            host_metrics: Some(HostMetrics {
                cpu_pct: Some(30.0),
                cpu_pct_max: Some(50.0),
                mem_used_pct: Some(60.0),
                load1: Some(1.0),
                disk_busy_pct: Some(2.0),
                samples: 6,
                ..Default::default()
            }),
        })),
    }
}
