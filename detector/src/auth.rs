//! Bearer-token checks shared by the gRPC and HTTP ports.

use tonic::{Request, Status};

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
    use super::token_matches;

    #[test]
    fn tokens_match_only_exactly() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("s3creT", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }
}
