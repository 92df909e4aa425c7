//! `/api/v1/session`: who the caller is, as the API sees the credential it sent.
//!
//! The console needs the role to decide which controls to show (a viewer sees no edit
//! buttons), and an API key says nothing about its role by itself; a JWT's claims are
//! readable, but only the server knows whether it still accepts them. This answers
//! both the same way, for any role.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Viewer;
use crate::error::Problem;
use crate::extract::ApiJson;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_session))
}

/// The caller's identity and role.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Session {
    /// The token's subject, or `key:<name>` for an API key (as audit logs record it).
    pub subject: String,
    /// `viewer`, `editor` or `admin`.
    pub role: String,
    /// `token` (a JWT) or `api_key`.
    pub credential: String,
    /// When the credential stops working (a token's `exp`); null for API keys and
    /// with authentication off.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The caller's identity and role.
#[utoipa::path(get, path = "/session", tag = "admin",
    responses((status = 200, body = Session), (status = 401, body = Problem)))]
async fn get_session(Viewer(caller): Viewer) -> ApiJson<Session> {
    ApiJson(Session {
        subject: caller.subject,
        role: caller.role.as_str().to_owned(),
        credential: if caller.key_id.is_some() {
            "api_key"
        } else {
            "token"
        }
        .to_owned(),
        expires_at: caller
            .expires_at
            .and_then(|s| i64::try_from(s).ok())
            .and_then(|s| DateTime::from_timestamp(s, 0)),
    })
}
