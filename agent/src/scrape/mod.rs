//! Scraping the service's Prometheus/OpenMetrics endpoint (DESIGN §3, business signals,
//! `[[scrape]]`): every `interval`, one bounded `GET` of the page, read into the app's
//! requests per minute (Micrometer's `http_server_requests_seconds`) and the values of the
//! families named in `families`.
//!
//! - [`client`]: the `GET` — a fresh HTTP/1.1 connection, one timeout over the whole
//!   exchange, the body read up to `max_bytes`.
//! - [`exposition`]: the page read into samples (text format 0.0.4 and OpenMetrics).
//! - [`micrometer`]: the request family → requests by status class and latency buckets.
//! - [`families`]: the other families → gauges' values and counters' growth.
//! - [`Scrapes`]: one task per target on the agent's runtime, handing each good scrape's
//!   [`Observation`] to the main loop, which adds it to the minute counters.
//!
//! **Deltas and minutes.** Counters are read as their growth between two good scrapes of
//! a target, attributed to the minute of the later scrape (its start). A target's first good
//! scrape only sets the baseline. A failed scrape (refused, timeout, status other than 200,
//! a page longer than `max_bytes`, not the exposition format) is *missing*: it yields
//! nothing, and the next good scrape's growth covers the gap, so counts are attributed
//! later, never lost nor made up; `/metrics` counts it by reason. A minute with no good
//! scrape carries no scraped requests and no scraped values (missing, not zero).
//!
//! **Timing.** Scrapes run at wall-clock multiples of `interval` less a tenth of it (at
//! most a second): with 10 s, at :09, :19, ..., :59, so the growth seen at :59 is the
//! minute's own and the one a minute boundary splits is attributed to the later minute.
//!
//! **Access logs first.** An app with an `[[access_logs]]` entry takes its requests from
//! the access log; its scrapes read the request family only to keep its baseline and send
//! none of it (the same requests would otherwise count twice). Other families are sent.

pub mod client;
pub mod exposition;
pub mod families;
pub mod micrometer;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vigil_proto::v1::ScrapedValue;

pub use client::{Endpoint, Failure};
pub use exposition::{Page, ParseError};
pub use families::{FamilySpec, MAX_FAMILIES};
pub use micrometer::{REQUEST_FAMILY, RequestDelta};

use crate::admin::{self, Metrics};
use crate::config::{AgentConfig, ScrapeConfig};
use crate::minute::MinuteCounters;

/// What one good scrape of a target observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The target's source index (see [`AgentConfig::scrape_sources`]).
    pub source: usize,
    /// When the scrape started (UTC Unix seconds): the minute its growth is counted in.
    pub at: i64,
    /// The requests since the last good scrape, when the app's requests come from here.
    pub requests: Option<RequestDelta>,
    /// The configured families' values.
    pub values: Vec<ScrapedValue>,
}

impl Observation {
    /// Adds the observation to the minute counters.
    pub fn record(self, counters: &mut MinuteCounters) {
        if let Some(requests) = &self.requests {
            counters.record_scraped_requests(self.source, self.at, requests);
        }
        if !self.values.is_empty() {
            counters.record_scraped(self.source, self.at, self.values);
        }
    }
}

/// One target's state from scrape to scrape: the baselines of its counters.
#[derive(Debug)]
pub struct Target {
    source: usize,
    /// Whether the requests are sent (no access log for the app).
    send_requests: bool,
    requests: micrometer::Requests,
    families: families::Families,
}

impl Target {
    /// A target for `config`, at source index `source`; `send_requests` when the app has no
    /// access log.
    pub fn new(config: &ScrapeConfig, source: usize, send_requests: bool) -> Self {
        Self {
            source,
            send_requests,
            requests: micrometer::Requests::default(),
            families: families::Families::new(config.families.clone()),
        }
    }

    /// Reads a page fetched at `at`: what it shows since the last good page.
    ///
    /// # Errors
    /// [`Failure::Parse`] when the page is not in the exposition format (the baselines
    /// stay as they were).
    pub fn observe(&mut self, body: &[u8], at: i64) -> Result<Observation, Failure> {
        let text = std::str::from_utf8(body)
            .map_err(|e| Failure::Parse(format!("not UTF-8 text: {e}")))?;
        let page = Page::parse(text).map_err(|e| Failure::Parse(e.to_string()))?;
        let requests = self.requests.observe(&page);
        let values = self.families.observe(&page);
        Ok(Observation {
            source: self.source,
            at,
            requests: requests.filter(|_| self.send_requests),
            values,
        })
    }
}

/// Counters of one target, for `/metrics`.
#[derive(Debug, Default)]
pub struct ScrapeMetrics {
    pub app: String,
    pub url: String,
    /// Scrapes tried.
    pub scrapes: std::sync::atomic::AtomicU64,
    /// Failed scrapes by reason ([`Failure::REASONS`]).
    pub failures: [std::sync::atomic::AtomicU64; Failure::REASONS.len()],
    /// Page bytes read by good scrapes.
    pub bytes: std::sync::atomic::AtomicU64,
    /// How long the last scrape took, ns.
    pub last_duration_nanos: std::sync::atomic::AtomicU64,
}

/// The scrape targets of a running agent: one task each, their observations on a channel.
#[derive(Debug)]
pub struct Scrapes {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    observations: mpsc::Receiver<Observation>,
    /// Kept so that the channel stays open (and [`next`](Self::next) pending) without
    /// targets.
    _open: mpsc::Sender<Observation>,
}

impl Scrapes {
    /// Starts one task per `[[scrape]]` entry of `config`; `metrics` holds their counters
    /// in the same order ([`Metrics::with_scrapes`]).
    pub fn start(config: &AgentConfig, metrics: &Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let with_access_log: Vec<&str> =
            config.access_logs.iter().map(|a| a.app.as_str()).collect();
        let tasks = config
            .scrape
            .iter()
            .zip(config.scrape_sources())
            .enumerate()
            .map(|(i, (scrape, source))| {
                let send_requests = !with_access_log.contains(&scrape.app.as_str());
                let target = Target::new(scrape, source, send_requests);
                tokio::spawn(run_target(
                    scrape.clone(),
                    target,
                    i,
                    Arc::clone(metrics),
                    tx.clone(),
                ))
            })
            .collect();
        Self {
            tasks,
            observations: rx,
            _open: tx,
        }
    }

    /// The next observation (pending forever without targets).
    pub async fn next(&mut self) -> Option<Observation> {
        self.observations.recv().await
    }

    /// Stops every target's task and waits for it (an exchange under way is dropped with
    /// its connection).
    pub async fn stop(mut self) {
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Scrapes {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The first scrape's delay: to the next wall-clock multiple of `interval` less a tenth of
/// it (at most 1 s).
fn first_delay(interval: Duration, now: Duration) -> Duration {
    let lead = (interval / 10).min(Duration::from_secs(1));
    let every = interval.as_millis().max(1);
    let phase = (now + lead).as_millis() % every;
    Duration::from_millis(u64::try_from(every - phase).unwrap_or(1000))
}

async fn run_target(
    config: ScrapeConfig,
    mut target: Target,
    index: usize,
    metrics: Arc<Metrics>,
    observations: mpsc::Sender<Observation>,
) {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + first_delay(config.interval, since_epoch),
        config.interval,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failing = false;
    loop {
        tick.tick().await;
        let at = crate::pipeline::unix_now();
        let started = Instant::now();
        let fetched = client::fetch(&config.endpoint, config.timeout, config.max_bytes).await;
        let result = fetched.and_then(|body| {
            if let Some(m) = metrics.scrape(index) {
                admin::add(&m.bytes, body.len() as u64);
            }
            target.observe(&body, at)
        });
        if let Some(m) = metrics.scrape(index) {
            admin::add(&m.scrapes, 1);
            m.last_duration_nanos.store(
                u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            if let Err(e) = &result
                && let Some(counter) = m.failures.get(e.reason_index())
            {
                admin::add(counter, 1);
            }
        }
        match result {
            Ok(observation) => {
                if failing {
                    tracing::info!(app = %config.app, url = %config.endpoint.url, "scraping works again");
                    failing = false;
                }
                if observations.send(observation).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // One line when scraping starts failing and one when it recovers.
                if !failing {
                    tracing::warn!(app = %config.app, url = %config.endpoint.url, error = %e, "scrape failed; the interval's counts wait for the next good scrape");
                    failing = true;
                }
            }
        }
    }
}

/// What `vigil-agent check` tells of a target after one scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Bytes of the page.
    pub bytes: usize,
    /// Samples on it.
    pub samples: usize,
    /// Series of the request family (`_count` samples), `/actuator` ones included.
    pub request_series: usize,
    /// The configured families found on the page.
    pub families_found: Vec<String>,
    /// The configured families not on the page.
    pub families_missing: Vec<String>,
}

/// Scrapes `config`'s target once and reads the page.
///
/// # Errors
/// [`Failure`] saying why there is no page.
pub async fn probe(config: &ScrapeConfig) -> Result<Probe, Failure> {
    let body = client::fetch(&config.endpoint, config.timeout, config.max_bytes).await?;
    let text =
        std::str::from_utf8(&body).map_err(|e| Failure::Parse(format!("not UTF-8 text: {e}")))?;
    let page = Page::parse(text).map_err(|e| Failure::Parse(e.to_string()))?;
    let request_series = page
        .samples
        .iter()
        .filter(|s| s.name.strip_prefix(REQUEST_FAMILY) == Some("_count"))
        .count();
    let mut families_found = Vec::new();
    let mut families_missing = Vec::new();
    for spec in &config.families {
        let found = !families::Families::new(vec![spec.clone()])
            .observe(&page)
            .is_empty()
            || page.samples.iter().any(|s| s.family == spec.family);
        if found {
            families_found.push(spec.text.clone());
        } else {
            families_missing.push(spec.text.clone());
        }
    }
    Ok(Probe {
        bytes: body.len(),
        samples: page.samples.len(),
        request_series,
        families_found,
        families_missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_run_a_little_before_the_interval_multiples() {
        let at = |now_ms: u64| {
            let now = Duration::from_millis(now_ms);
            now + first_delay(Duration::from_secs(10), now)
        };
        assert_eq!(at(1_000_000), Duration::from_millis(1_009_000));
        assert_eq!(at(1_009_500), Duration::from_millis(1_019_000));
        assert_eq!(at(1_008_999), Duration::from_millis(1_009_000));
        let one = Duration::from_secs(1);
        assert_eq!(
            first_delay(one, Duration::from_millis(5_000)),
            Duration::from_millis(900)
        );
        let five_min = Duration::from_secs(300);
        assert_eq!(
            first_delay(five_min, Duration::from_secs(600)),
            Duration::from_secs(299),
            "at most a second early"
        );
    }
}
