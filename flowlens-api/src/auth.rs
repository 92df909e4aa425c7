//! Who is calling, and what they may do.
//!
//! Two credentials: JWT bearer tokens (HS256, signed with `api.auth.jwt_secret`,
//! issued by `flowlens-api token create`) for people and short-lived automation, and
//! API keys (`X-API-Key: flk_...`, created by an admin, stored as SHA-256 hashes,
//! revocable) for long-lived integrations. Roles are ordered: viewer reads, editor also
//! writes assets, dependencies and alerts, admin also runs scans, reads the config and
//! manages keys. Only `/api/v1/admin/health` is open.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// What a caller may do; later roles include the earlier ones.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Editor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Editor => "editor",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "editor" => Ok(Self::Editor),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown role {other:?} (viewer, editor or admin)")),
        }
    }
}

/// Clock skew allowed on `exp` and `iat`, in seconds.
const JWT_LEEWAY_SECS: u64 = 5;

/// Longest caller subject (`audit_logs.actor` is `VARCHAR(100)`).
pub const MAX_SUBJECT_CHARS: usize = 100;

/// Longest API key name: its subject is `key:<name>`.
pub const MAX_KEY_NAME_CHARS: usize = MAX_SUBJECT_CHARS - 4;

/// The claims FlowLens tokens carry.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
    /// `api.auth.issuer`, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// `api.auth.audience`, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// An authenticated caller, put in the request's extensions by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who, as audit logs and alerts record it: the token's subject, or `key:<name>`.
    pub subject: String,
    pub role: Role,
    /// What the rate limiter counts against.
    pub limit_key: String,
    /// When the credential stops working (a token's `exp`, seconds since the epoch):
    /// an open WebSocket is closed then.
    pub expires_at: Option<u64>,
    /// The API key, for callers that used one: an open WebSocket is closed when it is
    /// revoked.
    pub key_id: Option<Uuid>,
}

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the {} role; {} has {}",
                role.as_str(),
                self.subject,
                self.role.as_str()
            )))
        }
    }
}

/// Signs a token for `subject` with `role`, valid for `ttl` from `now`, with neither
/// `iss` nor `aud`.
pub fn issue_token(
    secret: &str,
    subject: &str,
    role: Role,
    now: SystemTime,
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    sign(secret, &claims_at(subject, role, now, ttl))
}

/// Signs a token as the API configured by `auth` accepts it (its secret, and its
/// `issuer` and `audience` when set).
pub fn issue_token_for(
    auth: &crate::config::AuthConfig,
    subject: &str,
    role: Role,
    now: SystemTime,
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let mut claims = claims_at(subject, role, now, ttl);
    claims.iss.clone_from(&auth.issuer);
    claims.aud.clone_from(&auth.audience);
    sign(&auth.jwt_secret, &claims)
}

fn claims_at(subject: &str, role: Role, now: SystemTime, ttl: Duration) -> Claims {
    let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Claims {
        sub: subject.to_owned(),
        role,
        iat,
        exp: iat.saturating_add(ttl.as_secs()),
        iss: None,
        aud: None,
    }
}

fn sign(secret: &str, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// Checks credentials: JWTs locally, API keys against `api_keys` (cached briefly so a
/// busy integration does not cost a query per request; revocation clears the cache).
pub struct Authenticator {
    enabled: bool,
    decoding: DecodingKey,
    validation: Validation,
    /// Longest token lifetime accepted (`api.auth.token_expiry_hours`).
    max_lifetime_secs: u64,
    keys: moka::sync::Cache<String, Caller>,
    /// Unknown keys, apart from the valid ones so that guessing cannot evict those.
    unknown_keys: moka::sync::Cache<String, ()>,
    /// Bumped by every [`Authenticator::forget_keys`]: a lookup that began before a
    /// revocation must not put the key back into the cache after it.
    key_generation: std::sync::atomic::AtomicU64,
    /// Whether this process hears revocations (the change feed listens). While it does
    /// not, keys are looked up on every request: another instance may have revoked one.
    revocations_heard: std::sync::atomic::AtomicBool,
}

/// The one route that takes a token in its query: browsers cannot set headers on a
/// WebSocket handshake.
pub const WS_PATH: &str = "/api/v1/topology/ws";

/// The WebSocket subprotocol the console speaks; a handshake offering it may carry its
/// credential (JWT or API key) as a second offered protocol, `bearer.<credential>`,
/// which keeps it out of the URL (and so out of proxies' logs), and works for API
/// keys, which `?token=` does not take.
pub const WS_PROTOCOL: &str = "flowlens.v1";

/// The prefix of the offered subprotocol that carries a credential.
pub const WS_BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// The credential a WebSocket handshake offers as a subprotocol, when it also offers
/// [`WS_PROTOCOL`].
fn subprotocol_credential(headers: &axum::http::HeaderMap) -> Option<&str> {
    let offered: Vec<&str> = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !offered.contains(&WS_PROTOCOL) {
        return None;
    }
    offered
        .iter()
        .find_map(|p| p.strip_prefix(WS_BEARER_PROTOCOL_PREFIX))
}

/// Prefix of every API key, so a leaked key is recognisable in logs and scanners.
pub const API_KEY_PREFIX: &str = "flk_";

impl Authenticator {
    pub fn new(enabled: bool, secret: &str, max_lifetime: Duration) -> Self {
        Self::with_scope(enabled, secret, max_lifetime, None, None)
    }

    /// As [`Authenticator::new`], and tokens must carry `issuer` and `audience` when
    /// those are given. With no audience configured, a token's `aud` is not checked:
    /// services sharing one secret should each set `api.auth.audience`.
    pub fn with_scope(
        enabled: bool,
        secret: &str,
        max_lifetime: Duration,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = JWT_LEEWAY_SECS;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if let Some(aud) = audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        } else {
            validation.validate_aud = false;
        }
        validation.set_required_spec_claims(&required);
        Self {
            enabled,
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            max_lifetime_secs: max_lifetime.as_secs(),
            keys: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
            unknown_keys: moka::sync::Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
            key_generation: std::sync::atomic::AtomicU64::new(0),
            revocations_heard: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Forgets cached API keys (after a revocation, here or on another instance).
    pub fn forget_keys(&self) {
        self.key_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.keys.invalidate_all();
        self.unknown_keys.invalidate_all();
    }

    /// Says whether revocations reach this process now (set by the change feed);
    /// caching keys is only safe while they do.
    pub fn set_revocations_heard(&self, heard: bool) {
        if !heard {
            self.forget_keys();
        }
        self.revocations_heard
            .store(heard, std::sync::atomic::Ordering::Release);
    }

    async fn caller(&self, parts: &Parts, pool: &PgPool) -> Result<Caller, ApiError> {
        if !self.enabled {
            return Ok(Caller {
                subject: "anonymous".to_owned(),
                role: Role::Admin,
                limit_key: "anonymous".to_owned(),
                expires_at: None,
                key_id: None,
            });
        }
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let api_key = parts
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        // Browsers cannot set headers on a WebSocket handshake: accept ?token= there.
        let query_token = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .map(str::to_owned)
        });
        let on_ws_path = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or(parts.uri.path(), |o| o.path())
            == WS_PATH;
        // Browsers cannot set headers on a WebSocket handshake; the console offers its
        // credential as a subprotocol instead.
        let bearer = bearer.or_else(|| {
            on_ws_path
                .then(|| subprotocol_credential(&parts.headers))
                .flatten()
        });
        match (api_key, bearer) {
            (Some(key), _) => self.api_key(key, pool).await,
            (None, Some(token)) if token.starts_with(API_KEY_PREFIX) => {
                self.api_key(token, pool).await
            }
            (None, Some(token)) => self.jwt(token),
            (None, None) => match query_token {
                // Routes are nested under /api/v1, which strips the prefix from `uri`.
                Some(t) if on_ws_path => self.jwt(&t),
                Some(_) => Err(ApiError::Unauthorized(format!(
                    "?token= is accepted only on {WS_PATH} (a URL ends up in logs and \
                     histories): send Authorization: Bearer <token> or X-API-Key"
                ))),
                _ => Err(ApiError::Unauthorized(
                    "missing credentials: send Authorization: Bearer <token> or X-API-Key"
                        .to_owned(),
                )),
            },
        }
    }

    fn jwt(&self, token: &str) -> Result<Caller, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::Unauthorized("token expired".to_owned())
                }
                _ => ApiError::Unauthorized(format!("invalid token: {e}")),
            })?;
        // Expiry comes from config: a token minted for longer (another secret holder's
        // tool, an old default) is refused rather than trusted for its own claim. Its
        // `iat` is a claim too: one in the future would stretch `exp - iat`'s window, so
        // `exp` is also bounded from now.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if data.claims.iat > now + JWT_LEEWAY_SECS {
            return Err(ApiError::Unauthorized(
                "token issued in the future (iat)".to_owned(),
            ));
        }
        if data.claims.exp.saturating_sub(data.claims.iat) > self.max_lifetime_secs
            || data.claims.exp > now + self.max_lifetime_secs + JWT_LEEWAY_SECS
        {
            return Err(ApiError::Unauthorized(
                "token lifetime exceeds api.auth.token_expiry_hours".to_owned(),
            ));
        }
        // The subject is the audit trail's actor (at most 100 characters): a longer one
        // would make every write of this caller fail.
        if data.claims.sub.is_empty() || data.claims.sub.chars().count() > MAX_SUBJECT_CHARS {
            return Err(ApiError::Unauthorized(format!(
                "token subject must have 1 to {MAX_SUBJECT_CHARS} characters"
            )));
        }
        Ok(Caller {
            limit_key: format!("user:{}", data.claims.sub),
            subject: data.claims.sub,
            role: data.claims.role,
            expires_at: Some(data.claims.exp),
            key_id: None,
        })
    }

    async fn api_key(&self, key: &str, pool: &PgPool) -> Result<Caller, ApiError> {
        let unknown = || ApiError::Unauthorized("unknown API key".to_owned());
        // Anything not shaped like a key of ours never reaches the database.
        let well_formed = key.len() == API_KEY_PREFIX.len() + 64
            && key.starts_with(API_KEY_PREFIX)
            && key[API_KEY_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit());
        if !well_formed {
            return Err(ApiError::Unauthorized("malformed API key".to_owned()));
        }
        let hash = hash_api_key(key);
        let heard = self
            .revocations_heard
            .load(std::sync::atomic::Ordering::Acquire);
        if heard {
            if let Some(caller) = self.keys.get(&hash) {
                return Ok(caller);
            }
            if self.unknown_keys.contains_key(&hash) {
                return Err(unknown());
            }
        }
        let generation = self
            .key_generation
            .load(std::sync::atomic::Ordering::Acquire);
        let row: Option<(Uuid, String, String)> = sqlx::query_as(
            "UPDATE api_keys SET last_used_at = now() \
             WHERE key_hash = $1 AND revoked_at IS NULL RETURNING id, name, role",
        )
        .bind(&hash)
        .fetch_optional(pool)
        .await?;
        // Cached only if no revocation was heard while the query ran (and re-checked
        // after the insert, which may race one).
        let still = || {
            heard
                && self
                    .key_generation
                    .load(std::sync::atomic::Ordering::Acquire)
                    == generation
        };
        let Some((id, name, role)) = row else {
            if still() {
                self.unknown_keys.insert(hash, ());
            }
            return Err(unknown());
        };
        let caller = Caller {
            // Keys named before the bound (up to 100 characters) still fit the actor.
            subject: format!(
                "key:{}",
                name.chars().take(MAX_KEY_NAME_CHARS).collect::<String>()
            ),
            role: role.parse().map_err(ApiError::Unauthorized)?,
            limit_key: format!("key:{id}"),
            expires_at: None,
            key_id: Some(id),
        };
        if still() {
            self.keys.insert(hash.clone(), caller.clone());
            if !still() {
                self.keys.invalidate(&hash);
            }
        }
        Ok(caller)
    }
}

/// Hex SHA-256 of an API key: what `api_keys.key_hash` stores.
pub fn hash_api_key(key: &str) -> String {
    sha256_hex(key.as_bytes())
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(64);
    for b in Sha256::digest(bytes) {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// A fresh API key: the prefix and 32 random bytes in hex (two v4 UUIDs' worth of
/// randomness from the OS generator).
pub fn new_api_key() -> String {
    format!(
        "{API_KEY_PREFIX}{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

/// Middleware on every route but health: authenticate, then rate-limit the caller.
pub async fn authenticate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let caller = state.auth.caller(&parts, &state.pool).await?;
    state.limiter.check(&caller.limit_key).await?;
    parts.extensions.insert(caller);
    Ok(next.run(Request::from_parts(parts, body)).await)
}

macro_rules! role_extractor {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        pub struct $name(pub Caller);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
                let caller = parts
                    .extensions
                    .get::<Caller>()
                    .cloned()
                    .ok_or_else(|| ApiError::Unauthorized("missing credentials".to_owned()))?;
                caller.require($role)?;
                Ok(Self(caller))
            }
        }
    };
}

role_extractor!(Viewer, Role::Viewer, "A caller allowed to read.");
role_extractor!(
    Editor,
    Role::Editor,
    "A caller allowed to change assets, dependencies and alerts."
);
role_extractor!(
    Admin,
    Role::Admin,
    "A caller allowed to scan, read the config and manage API keys."
);

/// Shared so handlers can hold it cheaply.
pub type SharedAuthenticator = Arc<Authenticator>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_expire() {
        let auth = Authenticator::new(
            true,
            "0123456789abcdef0123456789abcdef",
            Duration::from_hours(24),
        );
        let now = SystemTime::now();
        let t = issue_token(
            "0123456789abcdef0123456789abcdef",
            "alice",
            Role::Editor,
            now,
            Duration::from_mins(1),
        )
        .unwrap();
        let c = auth.jwt(&t).unwrap();
        assert_eq!((c.subject.as_str(), c.role), ("alice", Role::Editor));
        let old = issue_token(
            "0123456789abcdef0123456789abcdef",
            "alice",
            Role::Editor,
            now - Duration::from_hours(2),
            Duration::from_hours(1),
        )
        .unwrap();
        assert!(auth.jwt(&old).unwrap_err().to_string().contains("expired"));
        let forged = issue_token(
            "another-secret-xyz",
            "mallory",
            Role::Admin,
            now,
            Duration::from_mins(1),
        )
        .unwrap();
        assert!(
            auth.jwt(&forged)
                .unwrap_err()
                .to_string()
                .contains("invalid token")
        );
        let long = issue_token(
            "0123456789abcdef0123456789abcdef",
            "alice",
            Role::Editor,
            now,
            Duration::from_hours(25),
        )
        .unwrap();
        assert!(
            auth.jwt(&long)
                .unwrap_err()
                .to_string()
                .contains("lifetime")
        );
    }

    #[test]
    fn future_iat_and_long_subjects_are_refused() {
        let secret = "0123456789abcdef0123456789abcdef";
        let auth = Authenticator::new(true, secret, Duration::from_hours(24));
        let now = SystemTime::now();
        // Minted "an hour from now" for a minute: exp - iat is small, yet it would be
        // valid for an hour and a minute.
        let future = issue_token(
            secret,
            "alice",
            Role::Admin,
            now + Duration::from_hours(1),
            Duration::from_mins(1),
        )
        .unwrap();
        assert!(
            auth.jwt(&future)
                .unwrap_err()
                .to_string()
                .contains("future")
        );
        let long = "a".repeat(MAX_SUBJECT_CHARS + 1);
        let t = issue_token(secret, &long, Role::Viewer, now, Duration::from_mins(1)).unwrap();
        assert!(auth.jwt(&t).unwrap_err().to_string().contains("subject"));
        let fits = "a".repeat(MAX_SUBJECT_CHARS);
        let t = issue_token(secret, &fits, Role::Viewer, now, Duration::from_mins(1)).unwrap();
        assert!(auth.jwt(&t).is_ok());
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let secret = "0123456789abcdef0123456789abcdef";
        let scoped = Authenticator::with_scope(
            true,
            secret,
            Duration::from_hours(24),
            Some("flowlens"),
            Some("flowlens-api"),
        );
        let now = SystemTime::now();
        let ttl = Duration::from_mins(1);
        let bare = issue_token(secret, "alice", Role::Viewer, now, ttl).unwrap();
        assert!(scoped.jwt(&bare).is_err(), "a token without iss/aud");
        let mut cfg = crate::config::AuthConfig {
            jwt_secret: secret.to_owned(),
            issuer: Some("flowlens".to_owned()),
            audience: Some("flowlens-api".to_owned()),
            ..Default::default()
        };
        let good = issue_token_for(&cfg, "alice", Role::Viewer, now, ttl).unwrap();
        assert_eq!(scoped.jwt(&good).unwrap().subject, "alice");
        cfg.audience = Some("grafana".to_owned());
        let other = issue_token_for(&cfg, "alice", Role::Viewer, now, ttl).unwrap();
        assert!(scoped.jwt(&other).is_err(), "another audience");
        cfg.audience = Some("flowlens-api".to_owned());
        cfg.issuer = Some("someone-else".to_owned());
        let other = issue_token_for(&cfg, "alice", Role::Viewer, now, ttl).unwrap();
        assert!(scoped.jwt(&other).is_err(), "another issuer");
        // Unconfigured, the claims are not required (and not refused).
        let open = Authenticator::new(true, secret, Duration::from_hours(24));
        assert!(open.jwt(&good).is_ok() && open.jwt(&bare).is_ok());
    }

    #[test]
    fn roles_are_ordered() {
        let c = Caller {
            subject: "v".into(),
            role: Role::Viewer,
            limit_key: "v".into(),
            expires_at: None,
            key_id: None,
        };
        assert!(c.require(Role::Viewer).is_ok());
        assert!(c.require(Role::Editor).is_err());
        assert_eq!("admin".parse::<Role>().unwrap(), Role::Admin);
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn api_keys_hash_to_hex() {
        let k = new_api_key();
        assert!(k.starts_with("flk_") && k.len() == 4 + 64);
        assert_eq!(hash_api_key("abc").len(), 64);
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
