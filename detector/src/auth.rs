//! Bearer-token checks shared by the gRPC and HTTP ports. On HTTP, tools send the token
//! as a bearer header and browsers, once signed in on the pages, as the [`TOKEN_COOKIE`].

use axum::http::{HeaderMap, header};
use tonic::{Request, Status};

/// The name of the cookie holding the token of a signed-in browser.
pub const TOKEN_COOKIE: &str = "vigil_token";

/// The token as the value of [`TOKEN_COOKIE`] (form-encoded: a cookie value holds no
/// spaces, commas or semicolons).
pub fn cookie_value(token: &str) -> String {
    form_urlencoded::byte_serialize(token.as_bytes()).collect()
}

/// Whether an HTTP request carries `expected`, as a bearer header or the sign-in cookie.
pub fn http_token_presented(headers: &HeaderMap, expected: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|p| token_matches(p, expected)) {
        return true;
    }
    let encoded = cookie_value(expected);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == TOKEN_COOKIE && token_matches(value, &encoded))
}

/// Compares a presented token with the expected one in time independent of where they
/// differ.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(p) if token_matches(p, expected) => Ok(request),
            Some(_) => {
                tracing::warn!(peer = ?request.remote_addr(), "agent refused: wrong bearer token");
                Err(Status::unauthenticated("wrong bearer token"))
            }
            None => {
                tracing::warn!(peer = ?request.remote_addr(), "agent refused: no bearer token");
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
    fn http_callers_present_the_token_as_a_bearer_header_or_the_cookie() {
        let mut headers = HeaderMap::new();
        assert!(!http_token_presented(&headers, "s3 cret;"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; vigil_token=s3+cret%3B"),
        );
        assert!(http_token_presented(&headers, "s3 cret;"));
        assert!(!http_token_presented(&headers, "other"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer other"),
        );
        assert!(http_token_presented(&headers, "other"));
        assert!(!http_token_presented(&headers, "another"));
    }

    #[test]
    fn tokens_match_only_exactly() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("s3creT", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }
}
