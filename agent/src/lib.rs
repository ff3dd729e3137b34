//! Vigil agent: tails Java log files, turns stack traces into stable fingerprints, reads HTTP
//! access logs (requests by status class and response time), scrapes the service's
//! Prometheus/OpenMetrics endpoint, samples host metrics and streams compact per-minute
//! counters to the detector over gRPC.
//!
//! The agent never links the detector's store, web or judgement code: it depends only on
//! the protocol crate.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use vigil_agent::config::AgentConfig;
//!
//! let config = AgentConfig::load("/etc/vigil/agent.toml".as_ref())?;
//! vigil_agent::run(config, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod access;
pub mod admin;
pub mod analysis;
pub mod config;
pub mod fsutil;
pub mod host;
pub mod identity;
pub mod java;
pub mod minute;
pub mod pipeline;
pub mod scrape;
pub mod ship;
pub mod spool;
pub mod tail;
pub mod task;

pub use pipeline::{AgentError, Stop, run, run_until};
