//! `vigil-agent sample [--json]`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::{HostError, HostSampler, Sample};

/// Take one host-metrics sample over one second under `procfs` and print it to `out`:
/// human-readable, or with `json` one JSON object on one line with the `host_metrics` keys
/// of the replay case (`cpu_pct`, `cpu_pct_max`, `mem_used_pct`, `swap_used_pct`, `load1`,
/// `load5`, `load15`, `disk_read_bytes`, `disk_write_bytes`, `disk_reads`, `disk_writes`,
/// `disk_busy_pct`). Keys of figures not measured (no swap, no physical disk) are left out.
///
/// # Errors
/// When the counters cannot be read or parsed, or `out` cannot be written.
pub fn sample_command(procfs: &Path, json: bool, out: &mut dyn Write) -> Result<(), HostError> {
    let mut sampler = HostSampler::new(procfs);
    sampler.sample(Instant::now())?;
    let mut sample = None;
    // A second reading normally follows after one second; retry once should the clock not
    // have advanced (it always does, but a `None` must not become a panic).
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(1));
        sample = sampler.sample(Instant::now())?;
        if sample.is_some() {
            break;
        }
    }
    let Some(sample) = sample else {
        return Err(HostError::NoSample(
            "the clock did not advance in two seconds",
        ));
    };
    let fields = fields(&sample);
    if json {
        let object: Map<String, Value> = fields
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone()))
            .collect();
        writeln!(out, "{}", Value::Object(object)).map_err(HostError::Output)?;
    } else {
        writeln!(
            out,
            "host metrics over {:.3} s from {} (disks: {}):",
            sample.interval.as_secs_f64(),
            procfs.display(),
            match sampler.sysfs_block() {
                Some(block) => format!("physical disks listed in {}", block.display()),
                None => "physical disks told by name".to_owned(),
            }
        )
        .map_err(HostError::Output)?;
        for (key, value) in &fields {
            let unit = if key.ends_with("_pct") {
                " %"
            } else if key.ends_with("_bytes") {
                " bytes"
            } else {
                ""
            };
            writeln!(out, "  {key:<17} {value}{unit}").map_err(HostError::Output)?;
        }
        if sample.swap_used_pct.is_none() {
            writeln!(out, "  {:<17} - (no swap)", "swap_used_pct").map_err(HostError::Output)?;
        }
        if sample.disk.is_none() {
            writeln!(out, "  {:<17} - (no physical disk measured)", "disk_*")
                .map_err(HostError::Output)?;
        }
    }
    Ok(())
}

/// The sample as replay-case `host_metrics` keys, in a fixed order.
fn fields(s: &Sample) -> Vec<(&'static str, Value)> {
    let mut v = Vec::with_capacity(12);
    let mut pct = |key: &'static str, value: Option<f64>| {
        if let Some(x) = value {
            v.push((key, Value::from((x * 100.0).round() / 100.0)));
        }
    };
    pct("cpu_pct", s.cpu_busy_pct);
    pct("cpu_pct_max", s.cpu_busy_pct);
    pct("mem_used_pct", s.mem_used_pct);
    pct("swap_used_pct", s.swap_used_pct);
    pct("load1", Some(s.load1));
    pct("load5", Some(s.load5));
    pct("load15", Some(s.load15));
    if let Some(d) = &s.disk {
        v.push(("disk_read_bytes", Value::from(d.read_bytes)));
        v.push(("disk_write_bytes", Value::from(d.write_bytes)));
        v.push(("disk_reads", Value::from(d.reads)));
        v.push(("disk_writes", Value::from(d.writes)));
        v.push((
            "disk_busy_pct",
            Value::from((d.busy_pct * 100.0).round() / 100.0),
        ));
    }
    v
}
