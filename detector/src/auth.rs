//! Who may call the detector. Agents (gRPC) and tools (HTTP) send the bearer token; a
//! browser signs in once on the pages with the token and gets a [`SESSION_COOKIE`]: a
//! random session id kept on the server for [`SESSION_TTL`], never the token itself (a
//! cookie is not scoped by port, so other services on the same host may see it).
//!
//! Tokens are compared in time that does not depend on the expected token, and failed
//! checks are limited per client address ([`Failures`]): past
//! [`MAX_FAILURES_PER_WINDOW`] failures in [`FAILURE_WINDOW`], that address is refused
//! without a check until the window ends, and the failures are logged as one summary a
//! minute rather than a line each.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// The name of the cookie holding a signed-in browser's session id.
pub const SESSION_COOKIE: &str = "vigil_session";
/// How long a sign-in lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept; the oldest goes when a new one would pass it.
pub const MAX_SESSIONS: usize = 10_000;
/// Failed token checks allowed per client address in one [`FAILURE_WINDOW`].
pub const MAX_FAILURES_PER_WINDOW: u32 = 20;
/// The window of [`MAX_FAILURES_PER_WINDOW`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(10);
/// Client addresses tracked at most; past it, the stalest are forgotten.
const MAX_TRACKED_CLIENTS: usize = 10_000;
/// How often failures are summarised in the log.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Whether a presented token is the expected one. The time taken depends on the
/// presented token's length only, never on the expected token or where they differ.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (p, e) = (presented.as_bytes(), expected.as_bytes());
    if e.is_empty() {
        return false;
    }
    // Compare against the expected bytes repeated to the presented length, and the
    // lengths, without branching on either.
    let same_bytes = p
        .iter()
        .zip(e.iter().cycle())
        .fold(subtle::Choice::from(1), |same, (a, b)| same & a.ct_eq(b));
    let same_len = (p.len() as u64).ct_eq(&(e.len() as u64));
    bool::from(same_bytes & same_len)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; go on with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Signed-in browsers' sessions, kept in memory (a restart signs everybody out).
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    /// Opens a session; returns its id (244 random bits, hex).
    pub fn open(&self) -> String {
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let now = Instant::now();
        let mut open = lock(&self.open);
        open.retain(|_, started| now.duration_since(*started) < SESSION_TTL);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone())
        {
            open.remove(&oldest);
        }
        open.insert(id.clone(), now);
        id
    }

    /// Whether `id` is a session that has not expired.
    pub fn valid(&self, id: &str) -> bool {
        lock(&self.open)
            .get(id)
            .is_some_and(|started| started.elapsed() < SESSION_TTL)
    }

    /// The `Set-Cookie` value for session `id`.
    pub fn cookie(id: &str) -> String {
        format!(
            "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            SESSION_TTL.as_secs()
        )
    }
}

/// Failed token checks per client address.
#[derive(Debug)]
pub struct Failures {
    state: Mutex<FailureState>,
}

#[derive(Debug)]
struct FailureState {
    clients: HashMap<IpAddr, (Instant, u32)>,
    since_summary: u64,
    refused_since_summary: u64,
    last_summary: Instant,
}

impl Default for Failures {
    fn default() -> Self {
        Self {
            state: Mutex::new(FailureState {
                clients: HashMap::new(),
                since_summary: 0,
                refused_since_summary: 0,
                last_summary: Instant::now(),
            }),
        }
    }
}

impl Failures {
    /// Whether a check from `client` may be made now; `false` when it failed too often
    /// lately (the caller answers "too many attempts" without checking).
    pub fn allow(&self, client: IpAddr) -> bool {
        let mut s = lock(&self.state);
        let allowed = s.clients.get(&client).is_none_or(|(start, n)| {
            start.elapsed() >= FAILURE_WINDOW || *n < MAX_FAILURES_PER_WINDOW
        });
        if !allowed {
            s.refused_since_summary += 1;
            s.summarise();
        }
        allowed
    }

    /// Counts a failed check from `client`.
    pub fn failed(&self, client: IpAddr) {
        let mut s = lock(&self.state);
        let now = Instant::now();
        if s.clients.len() >= MAX_TRACKED_CLIENTS && !s.clients.contains_key(&client) {
            s.clients
                .retain(|_, (start, _)| now.duration_since(*start) < FAILURE_WINDOW);
            if s.clients.len() >= MAX_TRACKED_CLIENTS {
                s.clients.clear();
            }
        }
        let entry = s.clients.entry(client).or_insert((now, 0));
        if now.duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        s.since_summary += 1;
        s.summarise();
    }
}

impl FailureState {
    fn summarise(&mut self) {
        if self.last_summary.elapsed() < SUMMARY_EVERY {
            return;
        }
        if self.since_summary > 0 || self.refused_since_summary > 0 {
            tracing::warn!(
                failed = self.since_summary,
                refused_unchecked = self.refused_since_summary,
                clients = self.clients.len(),
                "token checks failed in the last minute"
            );
        }
        self.since_summary = 0;
        self.refused_since_summary = 0;
        self.last_summary = Instant::now();
    }
}

/// The process's failure counts, shared by the gRPC and HTTP ports.
pub fn failures() -> &'static Failures {
    static FAILURES: LazyLock<Failures> = LazyLock::new(Failures::default);
    &FAILURES
}

/// The client address used when a request carries none (in-process tests).
pub const UNKNOWN_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// What an HTTP request presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    /// The right bearer token or a valid session.
    Valid,
    /// Nothing, or something wrong.
    Invalid,
    /// The client failed too often lately; nothing was checked.
    Limited,
}

/// Checks an HTTP request from `client` for the bearer token `expected` or a session of
/// `sessions`, counting failures.
pub fn http_presented(
    headers: &HeaderMap,
    expected: &str,
    sessions: &Sessions,
    client: IpAddr,
) -> Presented {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let session = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value);
    if bearer.is_none() && session.is_none() {
        return Presented::Invalid;
    }
    if !failures().allow(client) {
        return Presented::Limited;
    }
    let valid = bearer.is_some_and(|p| token_matches(p, expected))
        || session.is_some_and(|s| sessions.valid(s));
    if valid {
        Presented::Valid
    } else {
        failures().failed(client);
        Presented::Invalid
    }
}

/// A gRPC interceptor that refuses calls without the configured bearer token.
#[derive(Debug, Clone)]
pub struct TokenCheck {
    token: Option<String>,
}

impl TokenCheck {
    /// Checks for `token` when it is set; lets everything through otherwise.
    pub fn new(token: Option<String>) -> Self {
        Self { token }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        let client = request.remote_addr().map_or(UNKNOWN_CLIENT, |a| a.ip());
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !failures().allow(client) {
            return Err(Status::resource_exhausted(
                "too many failed token checks from this address; try again later",
            ));
        }
        match presented {
            Some(p) if token_matches(p, expected) => Ok(request),
            Some(_) => {
                failures().failed(client);
                Err(Status::unauthenticated("wrong bearer token"))
            }
            None => {
                failures().failed(client);
                Err(Status::unauthenticated("a bearer token is required"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn http_callers_present_the_token_as_a_bearer_header_or_a_session() {
        let sessions = Sessions::default();
        let client = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10));
        let check = |h: &HeaderMap| http_presented(h, "s3 cret;", &sessions, client);
        assert_eq!(check(&HeaderMap::new()), Presented::Invalid);
        let id = sessions.open();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; vigil_session={id}")).expect("header"),
        );
        assert_eq!(check(&headers), Presented::Valid);
        // The token itself is no session.
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("vigil_session=s3+cret%3B"),
        );
        assert_eq!(check(&headers), Presented::Invalid);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3 cret;"),
        );
        assert_eq!(check(&headers), Presented::Valid);
        assert!(Sessions::cookie(&id).contains("HttpOnly; SameSite=Strict"));
        assert!(!Sessions::cookie(&id).contains("s3"));
    }

    #[test]
    fn tokens_match_only_exactly() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("s3cret-and-more", "s3cret"));
        assert!(!token_matches("s3cre ts3cret", "s3cret"));
        assert!(!token_matches("s3creT", "s3cret"));
        assert!(!token_matches("", "s3cret"));
        assert!(!token_matches("", ""));
    }

    #[test]
    fn a_client_that_fails_too_often_is_refused_unchecked_and_others_are_not() {
        let failures = Failures::default();
        let guesser = IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7));
        let other = IpAddr::V4(Ipv4Addr::new(10, 9, 8, 6));
        for _ in 0..MAX_FAILURES_PER_WINDOW {
            assert!(failures.allow(guesser));
            failures.failed(guesser);
        }
        assert!(!failures.allow(guesser));
        assert!(failures.allow(other));
    }
}
