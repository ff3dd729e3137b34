//! The HTTP API (DESIGN §5, a contract): JSON under `/api/v1`, liveness on `/healthz`.
//! Bad requests get a `4xx` with `{"error": "..."}` saying what is wrong.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

pub use crate::http_state::ApiState;
use crate::release::{AddBatch, CreateRelease, FinishRelease, GiveFeedback, ReleaseError};
use crate::store::{ExceptionQuery, ReleaseFilter, ReleaseState, SeriesQuery, Store};

/// An API error: a status and a message for the caller.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "API request failed in the store");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: e.to_string(),
        }
    }
}

/// The router of the HTTP port.
pub fn router<S: Store>(state: Arc<ApiState<S>>) -> Router {
    let api = Router::new()
        .route("/series", get(series::<S>))
        .route("/apps", get(apps::<S>))
        .route("/apps/{app}/exceptions", get(exceptions::<S>))
        .route(
            "/releases",
            post(create_release::<S>).get(list_releases::<S>),
        )
        .route("/releases/{id}", get(get_release::<S>))
        .route("/releases/{id}/batches", post(add_batch::<S>))
        .route("/releases/{id}/finish", post(finish_release::<S>))
        .route("/releases/{id}/feedback", post(release_feedback::<S>))
        .route("/releases/{id}/case", get(release_case::<S>))
        .route("/releases/{id}/verdict", get(release_verdict::<S>))
        .route("/releases/{id}/decisions", get(release_decisions::<S>))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                message: "no such API endpoint".into(),
            }
        })
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_token::<S>,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(crate::metrics::serve))
        .nest("/api/v1", api)
        .merge(crate::pages::router(Arc::clone(&state)))
        .fallback(crate::pages::not_found)
        .with_state(state)
}

async fn require_token<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    request: Request,
    next: Next,
) -> Response {
    // Tools send the bearer header; the pages' buttons send the session cookie.
    match state.presented(&request) {
        None | Some(crate::auth::Presented::Valid) => next.run(request).await,
        Some(crate::auth::Presented::Invalid) => ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or wrong bearer token".into(),
        }
        .into_response(),
        Some(crate::auth::Presented::Limited) => ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "too many failed token checks from this address; try again later".into(),
        }
        .into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesParams {
    app: Option<String>,
    host: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    resolution: Option<String>,
}

/// Most rows one `GET /api/v1/series` answers (a 14-day series of one app on one host is
/// 20,160 minutes); a query matching more is refused with `422` and asked to narrow.
pub const MAX_SERIES_ROWS: usize = 50_000;

async fn series<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    params: Result<Query<SeriesParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let (Some(from), Some(to)) = (params.from, params.to)
        && from > to
    {
        return Err(ApiError::bad_request(format!(
            "from ({from}) is after to ({to})"
        )));
    }
    let query = SeriesQuery {
        app: params.app.filter(|s| !s.is_empty()),
        host: params.host.filter(|s| !s.is_empty()),
        from: params.from,
        to: params.to,
        limit: Some(MAX_SERIES_ROWS),
    };
    let answer = match params
        .resolution
        .as_deref()
        .filter(|r| !r.is_empty())
        .unwrap_or("minute")
    {
        "minute" => state
            .store
            .series(&query)
            .await
            .map(|m| json!({ "minutes": m })),
        "hour" => state
            .store
            .hours(&query)
            .await
            .map(|h| json!({ "hours": h })),
        other => {
            return Err(ApiError::bad_request(format!(
                "resolution {other:?} is not \"minute\" or \"hour\""
            )));
        }
    };
    match answer {
        Ok(body) => Ok(Json(body).into_response()),
        Err(e @ crate::store::StoreError::TooManyRows { .. }) => Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: e.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

async fn apps<S: Store>(State(state): State<Arc<ApiState<S>>>) -> Result<Response, ApiError> {
    let apps = state.store.apps().await?;
    Ok(Json(json!({ "apps": apps })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionParams {
    limit: Option<usize>,
    offset: Option<usize>,
}

/// Most fingerprints one `GET /api/v1/apps/{app}/exceptions` answers, the most recently
/// seen (a definition holds up to 64 KiB); `truncated` says there are more, and
/// `next_offset` is the `?offset=` of the next page.
pub const MAX_EXCEPTIONS: usize = 1_000;

/// Fingerprints answered without `?limit=`.
pub const DEFAULT_EXCEPTIONS: usize = 100;

async fn exceptions<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Path(app): Path<String>,
    params: Result<Query<ExceptionParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = params.limit.unwrap_or(DEFAULT_EXCEPTIONS);
    if !(1..=MAX_EXCEPTIONS).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is not between 1 and {MAX_EXCEPTIONS}"
        )));
    }
    let offset = params.offset.unwrap_or(0);
    let query = ExceptionQuery {
        offset,
        ..ExceptionQuery::latest(limit + 1)
    };
    let mut exceptions = state.store.exceptions(&app, &query).await?;
    if exceptions.is_empty()
        && offset == 0
        && !state.store.apps().await?.iter().any(|a| a.app == app)
    {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no app {app:?} has reported"),
        });
    }
    let truncated = exceptions.len() > limit;
    exceptions.truncate(limit);
    // The next page, in the order of the last sighting (which reports move along).
    let next_offset = truncated.then_some(offset + limit);
    Ok(Json(json!({
        "app": app,
        "exceptions": exceptions,
        "truncated": truncated,
        "next_offset": next_offset,
    }))
    .into_response())
}

impl From<ReleaseError> for ApiError {
    fn from(e: ReleaseError) -> Self {
        match e {
            ReleaseError::Store(e) => e.into(),
            ReleaseError::NotFound(_) => Self {
                status: StatusCode::NOT_FOUND,
                message: e.to_string(),
            },
            ReleaseError::Invalid(message) => Self::bad_request(message),
            ReleaseError::OutOfLimits(message) => Self {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message,
            },
            ReleaseError::Conflict(message) => Self {
                status: StatusCode::CONFLICT,
                message,
            },
            ReleaseError::Judgement(_) => Self {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: e.to_string(),
            },
        }
    }
}

/// A JSON body, or the 4xx that says what is wrong with it.
fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|e| ApiError {
        status: e.status(),
        message: e.body_text(),
    })
}

/// A release id from the path, or a 400.
fn release_id(
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<i64, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    crate::release::parse_release_id(&id).ok_or_else(|| {
        ApiError::bad_request(format!("release id {id:?} is not a positive integer"))
    })
}

async fn create_release<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    req: Result<Json<CreateRelease>, JsonRejection>,
) -> Result<Response, ApiError> {
    let release = state
        .releases
        .create(body(req)?, state.releases.clock().now())
        .await?;
    Ok((StatusCode::CREATED, Json(release)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseListParams {
    app: Option<String>,
    state: Option<ReleaseState>,
}

async fn list_releases<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    params: Result<Query<ReleaseListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let releases = state
        .releases
        .list(&ReleaseFilter {
            app: params.app.filter(|s| !s.is_empty()),
            state: params.state,
        })
        .await?;
    Ok(Json(json!({ "releases": releases })).into_response())
}

async fn get_release<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let release = state.releases.get(release_id(id)?).await?;
    Ok(Json(release).into_response())
}

async fn release_verdict<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let verdict = state.releases.verdict(release_id(id)?).await?;
    Ok(Json(verdict).into_response())
}

async fn add_batch<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    req: Result<Json<AddBatch>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = release_id(id)?;
    let release = state
        .releases
        .add_batch(id, body(req)?, state.releases.clock().now())
        .await?;
    Ok(Json(release).into_response())
}

async fn finish_release<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    req: Result<Json<FinishRelease>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = release_id(id)?;
    let release = state
        .releases
        .finish(id, body(req)?, state.releases.clock().now())
        .await?;
    Ok(Json(release).into_response())
}

async fn release_feedback<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    req: Result<Json<GiveFeedback>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = release_id(id)?;
    let release = state
        .releases
        .feedback(id, body(req)?, state.releases.clock().now())
        .await?;
    Ok(Json(release).into_response())
}

async fn release_case<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let case = state
        .releases
        .case(release_id(id)?, state.releases.clock().now())
        .await?;
    Ok(Json(case).into_response())
}

/// Most decision changes answered for one release.
const MAX_DECISIONS: usize = 1000;

async fn release_decisions<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let id = release_id(id)?;
    // A 404 for an unknown release, not an empty log.
    state.releases.get(id).await?;
    let decisions = state.store.decisions(Some(id), MAX_DECISIONS).await?;
    Ok(Json(json!({ "id": id, "decisions": decisions })).into_response())
}
