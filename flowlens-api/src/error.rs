//! One error type for every route, answered as RFC 7807 `application/problem+json`.
//!
//! Bad input is the caller's to fix, so it gets a 4xx with a message that says what was
//! wrong; database and internal failures are logged with the detail and answered with a
//! generic body (a 500 must not leak SQL). Constraint violations from PostgreSQL are the
//! caller's too (a duplicate, a missing referenced asset) and are mapped here once.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Every way a request can fail, each documented by the status it returns.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed request (bad UUID, unknown query parameter, bad filter value,
    /// page size over the maximum, JSON syntax).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no credentials, or a token that is invalid or expired.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but the role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// 409: a duplicate, or a state transition that is not allowed.
    #[error("{0}")]
    Conflict(String),
    /// 413: a body over the size limit (axum's default, 2 MB).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: a body that is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed JSON with invalid content (unknown field, wrong type, value out
    /// of range, a reference to a missing asset).
    #[error("{0}")]
    Unprocessable(String),
    /// 429, with `Retry-After`.
    #[error("rate limit exceeded; retry in {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    /// 429, with `Retry-After` and a reason (a per-caller limit other than the rate).
    #[error("{detail}")]
    RateLimitedWith {
        retry_after_seconds: u64,
        detail: String,
    },
    /// 503: a limit on concurrent use (WebSocket connections) or a feature turned off.
    #[error("{0}")]
    Unavailable(String),
    /// 500: logged; the caller sees a generic message.
    #[error("database: {0}")]
    Database(sqlx::Error),
    /// 500: a computation task panicked or was cancelled; logged.
    #[error("analysis task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// 500: an answer could not be encoded; logged.
    #[error("encoding the answer: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The problem+json body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` when the status says it all).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } | Self::RateLimitedWith { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) | Self::Task(_) | Self::Encode(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    pub fn not_found(what: &'static str, id: impl std::fmt::Display) -> Self {
        Self::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    /// Constraint violations are the caller's mistake; the rest are ours. The caller
    /// is told which kind of rule the request broke, in our words: PostgreSQL's own
    /// message names tables, constraints and the offending values (schema details, and
    /// text another caller wrote), so it goes to the log only.
    fn from(e: sqlx::Error) -> Self {
        if let Some(db) = e.as_database_error() {
            let said = match db.code().as_deref() {
                Some("23505") => Some((true, "a record with these unique values already exists")),
                Some("23503") => Some((false, "a referenced asset or dependency does not exist")),
                Some("23514") => Some((false, "a value is outside what the schema allows")),
                Some("23502") => Some((false, "a required value is missing")),
                Some("22P02") => Some((false, "a value has an invalid format")),
                Some("22001") => Some((false, "a value is longer than the schema allows")),
                Some("22003") => Some((false, "a number is out of range")),
                Some("22023") => Some((false, "a parameter value is invalid")),
                // statement_timeout (api.limits.statement_timeout_seconds).
                Some("57014") => {
                    return Self::Unavailable(
                        "the database did not answer in time (api.limits.\
                         statement_timeout_seconds); retry later"
                            .to_owned(),
                    );
                }
                _ => None,
            };
            if let Some((conflict, detail)) = said {
                tracing::debug!(
                    error = %db.message(),
                    constraint = db.constraint().unwrap_or(""),
                    "request refused by the schema"
                );
                return if conflict {
                    Self::Conflict(detail.to_owned())
                } else {
                    Self::Unprocessable(detail.to_owned())
                };
            }
        }
        if matches!(e, sqlx::Error::PoolTimedOut) {
            return Self::Unavailable("every database connection is busy; retry later".to_owned());
        }
        Self::Database(e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => Self::Unprocessable(e.body_text()),
            JsonRejection::MissingJsonContentType(e) => Self::UnsupportedMediaType(e.body_text()),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge(other.body_text())
            }
            other => Self::BadRequest(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::BadRequest(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::BadRequest(r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            Self::Database(e) => {
                tracing::error!(error = %e, "database error");
                "internal error; see the API log".to_owned()
            }
            Self::Task(e) => {
                tracing::error!(error = %e, "analysis task failed");
                "internal error; see the API log".to_owned()
            }
            Self::Encode(e) => {
                tracing::error!(error = %e, "encoding an answer");
                "internal error; see the API log".to_owned()
            }
            other => other.to_string(),
        };
        let body = Problem {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            Self::RateLimited {
                retry_after_seconds,
            }
            | Self::RateLimitedWith {
                retry_after_seconds,
                ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
            }
            Self::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"flowlens\""),
                );
            }
            _ => {}
        }
        response
    }
}

/// A transport error of an outgoing request in a few words and its root cause, with
/// no URL (errors go to status answers, logs and terminals): "could not connect:
/// Connection refused (os error 111)".
pub(crate) fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "transport error"
    };
    let mut cause = std::error::Error::source(e);
    let mut last = None;
    while let Some(c) = cause {
        last = Some(c.to_string());
        cause = c.source();
    }
    last.map_or_else(|| kind.to_owned(), |c| format!("{kind}: {c}"))
}
