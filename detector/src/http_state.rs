//! What every handler of the HTTP port can reach, the API's and the pages' alike: the
//! store, the releases, and who may call.

use std::sync::Arc;

use axum::extract::Request;

use crate::release::Releases;

/// What every handler can reach.
#[derive(Debug)]
pub struct ApiState<S> {
    pub store: Arc<S>,
    /// Releases and their judgement.
    pub releases: Arc<Releases<S>>,
    /// Bearer token required on `/api/*`, when configured.
    pub token: Option<String>,
    /// Signed-in browsers.
    pub sessions: crate::auth::Sessions,
}

impl<S> ApiState<S> {
    /// The state of a detector serving `store` and `releases`, requiring `token` when set.
    pub fn new(store: Arc<S>, releases: Arc<Releases<S>>, token: Option<String>) -> Self {
        Self {
            store,
            releases,
            token,
            sessions: crate::auth::Sessions::default(),
        }
    }

    /// What `request` presents, when a token is configured (`None`: nothing is required).
    pub fn presented(&self, request: &Request) -> Option<crate::auth::Presented> {
        let expected = self.token.as_deref()?;
        let client = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or(crate::auth::UNKNOWN_CLIENT, |c| c.0.ip());
        Some(crate::auth::http_presented(
            request.headers(),
            expected,
            &self.sessions,
            client,
        ))
    }
}
