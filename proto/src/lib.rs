//! Vigil's wire protocol: the `vigil.v1.Collector` service and its messages, generated from
//! `vigil/v1/collector.proto` at build time.
//!
//! An agent opens one bidirectional stream and sends [`v1::Report`]s with a `seq` that grows
//! by one per report; the detector answers each with an [`v1::Ack`] once the report is
//! durably stored. Delivery is at-least-once and the detector stores each
//! `(instance, seq)` once.
//!
//! ```
//! use vigil_proto::v1::{Report, MinuteReport, AppCounters, report::Body};
//!
//! let report = Report {
//!     protocol_version: vigil_proto::PROTOCOL_VERSION,
//!     host: "web-17".into(),
//!     seq: 1,
//!     body: Some(Body::Minute(MinuteReport {
//!         minute: 1_763_880_000,
//!         apps: vec![AppCounters { app: "shop".into(), lines: 1200, ..Default::default() }],
//!         host_metrics: None,
//!     })),
//!     ..Default::default()
//! };
//! assert_eq!(report.seq, 1);
//! ```

pub mod latency;

/// Version of the wire protocol this crate speaks, carried in every report.
pub const PROTOCOL_VERSION: u32 = 1;

/// The `vigil.v1` package.
#[allow(missing_debug_implementations, clippy::all, unreachable_pub)]
pub mod v1 {
    tonic::include_proto!("vigil.v1");

    /// Encoded file descriptor set of `vigil.v1`, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("vigil_v1_descriptor");
}
