//! Vigil detector: ingests agents' per-minute counters into an embedded store and judges
//! releases.
