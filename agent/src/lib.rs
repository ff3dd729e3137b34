//! Vigil agent: tails Java log files, turns stack traces into stable fingerprints, samples
//! host metrics and streams compact per-minute counters to the detector over gRPC.
pub mod tail;
