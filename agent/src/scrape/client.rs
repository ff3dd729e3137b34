//! One bounded `GET` of a metrics page: a fresh HTTP/1.1 connection (hyper's client
//! connection, already in the agent through tonic and axum), the whole exchange under one
//! timeout, the body read up to `max_bytes` and no further. A target that hangs costs a
//! timeout, one that sends an endless body `max_bytes` of memory; neither blocks the
//! agent's runtime thread (everything here awaits).

use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::Request;
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONNECTION, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The `Accept` header: the classic text format first (no OpenMetrics `_created` series).
const ACCEPT_TEXT: &str =
    "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1";

/// Where to scrape: an `http://` URL, read once when the configuration is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as configured.
    pub url: String,
    /// Host name or address to connect to (no brackets around an IPv6 address).
    pub host: String,
    pub port: u16,
    /// The `Host` header.
    pub authority: String,
    /// Path and query, `/` at least.
    pub path: String,
}

impl Endpoint {
    /// Reads `http://host[:port]/path[?query]`.
    ///
    /// # Errors
    /// Why the URL cannot be scraped.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{url:?}: https is not supported; scrape the service's management port \
                     over plain http on the host (e.g. http://127.0.0.1:8080/actuator/prometheus)"
                ));
            }
            _ => {
                return Err(format!(
                    "{url:?} must look like http://127.0.0.1:8080/actuator/prometheus"
                ));
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{url:?}: user and password in the URL are not supported"
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Endpoint {
            url: url.to_owned(),
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path: if path.is_empty() { "/".into() } else { path },
        })
    }
}

/// Why a scrape failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No connection (refused, unreachable, the name not resolved).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No whole answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An answer other than 200.
    #[error("HTTP status {0}")]
    Status(u16),
    /// A body longer than `max_bytes`.
    #[error("the page is longer than {0} bytes")]
    TooBig(usize),
    /// The HTTP exchange broke off or was not HTTP.
    #[error("{0}")]
    Read(String),
    /// The page is not in the exposition format.
    #[error("not a metrics page: {0}")]
    Parse(String),
}

impl Failure {
    /// Every reason, as `/metrics` labels it.
    pub const REASONS: [&'static str; 6] =
        ["connect", "timeout", "status", "too_big", "read", "parse"];

    /// This failure's index in [`REASONS`](Self::REASONS).
    pub fn reason_index(&self) -> usize {
        match self {
            Failure::Connect(_) => 0,
            Failure::Timeout(_) => 1,
            Failure::Status(_) => 2,
            Failure::TooBig(_) => 3,
            Failure::Read(_) => 4,
            Failure::Parse(_) => 5,
        }
    }

    /// The reason as `/metrics` labels it.
    pub fn reason(&self) -> &'static str {
        Self::REASONS
            .get(self.reason_index())
            .copied()
            .unwrap_or("read")
    }
}

/// Aborts a task when dropped (the connection's driver, when the exchange is given up).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `GET`s the page: its body, at most `max_bytes`, within `timeout`.
///
/// # Errors
/// [`Failure`] saying why there is no page.
pub async fn fetch(
    endpoint: &Endpoint,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Bytes, Failure> {
    match tokio::time::timeout(timeout, exchange(endpoint, max_bytes)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Timeout(timeout)),
    }
}

async fn exchange(endpoint: &Endpoint, max_bytes: usize) -> Result<Bytes, Failure> {
    let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| Failure::Connect(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Read(e.to_string()))?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let request = Request::get(endpoint.path.as_str())
        .header(HOST, endpoint.authority.as_str())
        .header(ACCEPT, ACCEPT_TEXT)
        .header(
            USER_AGENT,
            concat!("vigil-agent/", env!("CARGO_PKG_VERSION")),
        )
        .header(CONNECTION, "close")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| Failure::Read(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| Failure::Read(e.to_string()))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(Failure::Status(status));
    }
    let announced = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max_bytes as u64) {
        return Err(Failure::TooBig(max_bytes));
    }
    let body = Limited::new(response.into_body(), max_bytes)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Failure::TooBig(max_bytes)
            } else {
                Failure::Read(e.to_string())
            }
        })?;
    Ok(body.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_read_and_refused_with_reasons() {
        let e = Endpoint::parse("http://127.0.0.1:8080/actuator/prometheus").expect("valid");
        assert_eq!(
            (
                e.host.as_str(),
                e.port,
                e.path.as_str(),
                e.authority.as_str()
            ),
            ("127.0.0.1", 8080, "/actuator/prometheus", "127.0.0.1:8080")
        );
        let e = Endpoint::parse("http://[::1]/metrics?x=1").expect("valid");
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("::1", 80, "/metrics?x=1")
        );
        assert_eq!(
            Endpoint::parse("http://localhost:9090")
                .expect("valid")
                .path,
            "/"
        );
        assert!(
            Endpoint::parse("https://127.0.0.1:8443/actuator/prometheus")
                .expect_err("https")
                .contains("https is not supported")
        );
        assert!(Endpoint::parse("127.0.0.1:8080/metrics").is_err());
        assert!(Endpoint::parse("ftp://host/metrics").is_err());
        assert!(Endpoint::parse("http://user:pw@host/metrics").is_err());
        assert!(Endpoint::parse("http:///metrics").is_err());
    }

    #[test]
    fn reasons_are_named() {
        let all = [
            Failure::Connect(String::new()),
            Failure::Timeout(Duration::from_secs(1)),
            Failure::Status(500),
            Failure::TooBig(1),
            Failure::Read(String::new()),
            Failure::Parse(String::new()),
        ];
        let names: Vec<&str> = all.iter().map(Failure::reason).collect();
        assert_eq!(names, Failure::REASONS);
    }
}
