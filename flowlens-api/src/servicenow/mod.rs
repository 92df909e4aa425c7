//! The ServiceNow CMDB export: the graph read from PostgreSQL, made into IRE payloads
//! ([`payload`]), and pushed to an instance's `POST /api/now/identifyreconcile` on a
//! schedule (one API instance at a time, through an advisory lock) or when an admin
//! asks.
//!
//! Every record is accounted for in `flowlens_api_servicenow_records_total{kind,
//! outcome}`: accepted (the IRE answered without an error for it), rejected (it named
//! an error), or unsent (its request failed after every attempt).

pub mod payload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{Mutex, Notify};

use crate::config::ServiceNowConfig;
use crate::telemetry;
use payload::{CiSource, Mapping, Payload, RelSource};

/// The IRE endpoint, under the instance URL.
pub const IRE_PATH: &str = "/api/now/identifyreconcile";
/// ServiceNow's OAuth token endpoint, under the instance URL.
pub const TOKEN_PATH: &str = "/oauth_token.do";

/// `pg_try_advisory_lock` key of the pushing instance (`FLServN`).
const LEADER_LOCK: i64 = 0x464c_5365_7276_4e00;

/// Longest wait between two attempts of one request.
const MAX_BACKOFF: Duration = Duration::from_mins(1);

/// Which part of the graph to export.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub include_external: bool,
    pub include_stale: bool,
    /// Only assets of this environment (and relations between them).
    pub environment: Option<String>,
}

/// Reads the part of the graph `scope` names, in a stable order (by id), so two
/// exports of an unchanged graph are the same bytes.
pub async fn load(
    pool: &PgPool,
    scope: &Scope,
) -> Result<(Vec<CiSource>, Vec<RelSource>), sqlx::Error> {
    let assets: Vec<CiSource> = sqlx::query_as(
        "SELECT a.id, a.name, a.fqdn, a.asset_type,
            ARRAY(SELECT host(x) FROM unnest(a.ip_addresses) WITH ORDINALITY AS u(x, n)
                  ORDER BY n) AS ip_addresses,
            COALESCE(a.mac_addresses::text[], '{}') AS mac_addresses,
            a.os_family, a.os_version, a.environment, a.cloud_instance_id,
            a.discovery_source, a.last_seen
         FROM assets a
         WHERE ($1 OR a.is_internal IS NOT FALSE)
           AND ($2 OR NOT a.stale)
           AND ($3::text IS NULL OR a.environment = $3)
         ORDER BY a.id",
    )
    .bind(scope.include_external)
    .bind(scope.include_stale)
    .bind(scope.environment.as_deref())
    .fetch_all(pool)
    .await?;
    // Dependencies on assets left out are dropped when the payload is built.
    let deps: Vec<RelSource> = sqlx::query_as(
        "SELECT DISTINCT source_asset_id, target_asset_id FROM dependencies
         WHERE ($1 OR NOT stale) ORDER BY source_asset_id, target_asset_id",
    )
    .bind(scope.include_stale)
    .fetch_all(pool)
    .await?;
    Ok((assets, deps))
}

/// The export as one payload.
pub async fn export(
    pool: &PgPool,
    config: &ServiceNowConfig,
    scope: &Scope,
) -> Result<Payload, sqlx::Error> {
    let (assets, deps) = load(pool, scope).await?;
    Ok(mapping(config).payload(&assets, &deps))
}

fn mapping(config: &ServiceNowConfig) -> Mapping<'_> {
    Mapping {
        source_name: &config.data_source,
        classes: &config.classes,
    }
}

/// What a push did, as `GET /api/v1/integrations/servicenow/status` shows it.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct PushReport {
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `ok`, `partial` (some records rejected or unsent) or `failed`.
    pub outcome: &'static str,
    /// Requests sent (each within `batch_size` items).
    pub requests: usize,
    /// Of which failed after every attempt.
    pub failed_requests: usize,
    /// CIs and relations in the export.
    pub items: usize,
    pub relations: usize,
    /// Records the IRE answered with an error for.
    pub rejected: usize,
    /// Records whose request failed.
    pub unsent: usize,
    /// Why the push failed, or the first error the IRE named.
    pub error: Option<String>,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("reading the graph: {0}")]
    Database(#[from] sqlx::Error),
    /// The instance refused the credentials: no later request would do better.
    #[error("the instance refused the credentials ({0})")]
    Auth(String),
    /// An answer that says retrying the same request is useless (4xx).
    #[error("the instance refused the request: HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    /// Every attempt failed with something that might pass later.
    #[error("no attempt succeeded: {0}")]
    Exhausted(String),
}

/// Pushes exports to one instance; holds its OAuth token between requests.
pub struct Pusher {
    http: reqwest::Client,
    config: ServiceNowConfig,
    token: Mutex<Option<(String, tokio::time::Instant)>>,
}

impl Pusher {
    /// A pusher for `config` (validated: an instance URL and credentials).
    ///
    /// # Errors
    /// When the TLS backend cannot start.
    pub fn new(config: ServiceNowConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_seconds))
            .connect_timeout(Duration::from_secs(config.timeout_seconds.min(10)))
            // A redirect would carry the credentials to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("FlowLens/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            config,
            token: Mutex::new(None),
        })
    }

    /// Exports the graph and sends it in requests of at most `batch_size` items.
    /// A request that fails is counted and the next one is sent, unless the instance
    /// refused the credentials (then the push stops: the rest would fail too).
    pub async fn push(&self, pool: &PgPool) -> PushReport {
        let mut report = PushReport {
            started_at: Some(Utc::now()),
            ..PushReport::default()
        };
        let scope = Scope {
            include_external: self.config.include_external,
            include_stale: self.config.include_stale,
            environment: None,
        };
        let full = match export(pool, &self.config, &scope).await {
            Ok(p) => p,
            Err(e) => {
                report.error = Some(PushError::from(e).to_string());
                return Self::finish(report);
            }
        };
        report.items = full.items.len();
        report.relations = full.relations.len();
        let records = |kind: &'static str, outcome: &'static str, n: usize| {
            metrics::counter!(telemetry::SERVICENOW_RECORDS, "kind" => kind, "outcome" => outcome)
                .increment(n as u64);
        };
        let batches = payload::batches(&full, self.config.batch_size);
        let mut left = batches.iter();
        for batch in left.by_ref() {
            report.requests += 1;
            match self.send(batch).await {
                Ok(answer) => {
                    let (items_rejected, relations_rejected, first) = rejected(&answer);
                    records(
                        "ci",
                        "accepted",
                        batch.items.len() - items_rejected.min(batch.items.len()),
                    );
                    records("ci", "rejected", items_rejected);
                    records(
                        "relation",
                        "accepted",
                        batch.relations.len() - relations_rejected.min(batch.relations.len()),
                    );
                    records("relation", "rejected", relations_rejected);
                    report.rejected += items_rejected + relations_rejected;
                    if report.error.is_none() {
                        report.error = first;
                    }
                }
                Err(e) => {
                    report.failed_requests += 1;
                    report.unsent += batch.items.len() + batch.relations.len();
                    records("ci", "unsent", batch.items.len());
                    records("relation", "unsent", batch.relations.len());
                    let stop = matches!(e, PushError::Auth(_));
                    tracing::warn!(error = %e, "a ServiceNow request failed");
                    report.error.get_or_insert_with(|| e.to_string());
                    if stop {
                        break;
                    }
                }
            }
        }
        // What an authentication failure left unsent.
        for batch in left {
            report.unsent += batch.items.len() + batch.relations.len();
            records("ci", "unsent", batch.items.len());
            records("relation", "unsent", batch.relations.len());
        }
        Self::finish(report)
    }

    fn finish(mut report: PushReport) -> PushReport {
        report.finished_at = Some(Utc::now());
        let failed = report.error.is_some() && report.requests == report.failed_requests;
        report.outcome = if failed {
            "failed"
        } else if report.failed_requests > 0 || report.rejected > 0 {
            "partial"
        } else {
            "ok"
        };
        metrics::counter!(telemetry::SERVICENOW_PUSHES, "outcome" => report.outcome).increment(1);
        if report.outcome != "failed" {
            #[expect(clippy::cast_precision_loss, reason = "seconds since 1970 fit")]
            metrics::gauge!(telemetry::SERVICENOW_LAST_SUCCESS).set(Utc::now().timestamp() as f64);
        }
        tracing::info!(
            outcome = %report.outcome,
            requests = report.requests,
            items = report.items,
            relations = report.relations,
            rejected = report.rejected,
            unsent = report.unsent,
            "pushed the graph to ServiceNow"
        );
        report
    }

    /// One request, with its retries: 429, 5xx and network errors are retried with
    /// exponential backoff (or the server's `Retry-After`, bounded); a 401 under OAuth
    /// fetches a new token once.
    async fn send(&self, batch: &Payload) -> Result<serde_json::Value, PushError> {
        let url = format!("{}{IRE_PATH}", self.config.instance_url);
        let mut last = String::new();
        let mut renewed = false;
        let mut attempt = 0;
        while attempt < self.config.max_attempts {
            attempt += 1;
            let request = self
                .http
                .post(&url)
                .query(&[("sysparm_data_source", self.config.data_source.as_str())])
                .header(reqwest::header::ACCEPT, "application/json")
                .json(batch);
            let request = match self.authorize(request).await {
                Ok(r) => r,
                Err(PushError::Exhausted(e)) => {
                    last = e;
                    self.pause(attempt, None).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = without_url(&e);
                    self.pause(attempt, None).await;
                    continue;
                }
            };
            let status = response.status();
            if status.is_success() {
                let body = read_bounded(response, 16 << 20).await;
                return Ok(serde_json::from_str(&body).unwrap_or(serde_json::Value::Null));
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = read_bounded(response, 1024).await;
            match status.as_u16() {
                401 if self.config.auth == "oauth" && !renewed => {
                    // The token may have expired early (revoked, instance restarted).
                    renewed = true;
                    *self.token.lock().await = None;
                    attempt -= 1;
                }
                401 | 403 => return Err(PushError::Auth(format!("HTTP {status}: {body}"))),
                429 | 500..=599 => {
                    last = format!("HTTP {status}: {body}");
                    self.pause(attempt, retry_after).await;
                }
                code => return Err(PushError::Refused { status: code, body }),
            }
        }
        Err(PushError::Exhausted(last))
    }

    async fn pause(&self, attempt: u32, retry_after: Option<Duration>) {
        if attempt >= self.config.max_attempts {
            return;
        }
        let backoff = Duration::from_secs(1 << (attempt - 1).min(6));
        tokio::time::sleep(retry_after.unwrap_or(backoff).min(MAX_BACKOFF)).await;
    }

    /// Adds the credentials: basic, or a bearer token from `/oauth_token.do`, kept
    /// until a minute before it expires.
    async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, PushError> {
        let c = &self.config;
        if c.auth == "basic" {
            return Ok(request.basic_auth(&c.username, Some(&c.password)));
        }
        let mut token = self.token.lock().await;
        if let Some((t, until)) = token.as_ref()
            && tokio::time::Instant::now() < *until
        {
            return Ok(request.bearer_auth(t));
        }
        let mut form = vec![
            ("grant_type", c.oauth_grant_type.as_str()),
            ("client_id", c.client_id.as_str()),
            ("client_secret", c.client_secret.as_str()),
        ];
        if c.oauth_grant_type == "password" {
            form.push(("username", c.username.as_str()));
            form.push(("password", c.password.as_str()));
        }
        let response = self
            .http
            .post(format!("{}{TOKEN_PATH}", c.instance_url))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| PushError::Exhausted(format!("OAuth token: {}", without_url(&e))))?;
        let status = response.status();
        let body = read_bounded(response, 64 << 10).await;
        if matches!(status.as_u16(), 400 | 401 | 403) {
            return Err(PushError::Auth(format!(
                "OAuth token: HTTP {status}: {}",
                body.chars().take(200).collect::<String>()
            )));
        }
        if !status.is_success() {
            return Err(PushError::Exhausted(format!("OAuth token: HTTP {status}")));
        }
        let granted: Granted = serde_json::from_str(&body)
            .map_err(|e| PushError::Auth(format!("OAuth token: unreadable answer: {e}")))?;
        let life = Duration::from_secs(granted.expires_in.unwrap_or(1800).saturating_sub(60));
        let request = request.bearer_auth(&granted.access_token);
        *token = Some((granted.access_token, tokio::time::Instant::now() + life));
        Ok(request)
    }
}

/// The answer of `/oauth_token.do`.
#[derive(serde::Deserialize)]
struct Granted {
    access_token: String,
    expires_in: Option<u64>,
}

/// How many items and relations an IRE answer names errors for, and the first one.
/// The answer is `{"result": {"items": [...], "relations": [...]}}` (REST) or the
/// same without `result`; an entry with a non-empty `errors` array was rejected.
fn rejected(answer: &serde_json::Value) -> (usize, usize, Option<String>) {
    let result = answer.get("result").unwrap_or(answer);
    let mut first = None;
    let mut count = |key: &str| {
        result
            .get(key)
            .and_then(serde_json::Value::as_array)
            .map_or(0, |entries| {
                entries
                    .iter()
                    .filter(|e| {
                        let errors = e.get("errors").and_then(serde_json::Value::as_array);
                        let bad = errors.is_some_and(|e| !e.is_empty());
                        if bad && first.is_none() {
                            first = errors.and_then(|e| e.first()).map(|e| {
                                let text = e
                                    .get("message")
                                    .and_then(serde_json::Value::as_str)
                                    .map_or_else(|| e.to_string(), str::to_owned);
                                let kind = if key == "items" { "CI" } else { "relation" };
                                format!(
                                    "the IRE rejected a {kind}: {}",
                                    text.chars().take(300).collect::<String>()
                                )
                            });
                        }
                        bad
                    })
                    .count()
            })
    };
    let items = count("items");
    let relations = count("relations");
    (items, relations, first)
}

/// A transport error without the URL (it names the instance, which is fine, but the
/// error text goes to status answers and logs: keep it short and uniform).
fn without_url(e: &reqwest::Error) -> String {
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
    match last {
        Some(c) => format!("{kind}: {c}"),
        None => kind.to_owned(),
    }
}

/// At most `limit` bytes of a body, as text.
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> String {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The scheduled push of this instance, and what it last did.
pub struct Schedule {
    /// Wakes the loop for a push now (`POST .../push`).
    pub now: Notify,
    /// The last push's report (this instance's), and whether a push is running.
    pub last: std::sync::Mutex<(Option<PushReport>, bool)>,
    /// This instance holds the pushing lock.
    pub leader: AtomicBool,
    /// Pushes this instance has made.
    pub pushes: AtomicU64,
    /// Scheduled turns taken (pushing or finding another instance leading).
    ticks: AtomicU64,
}

impl Schedule {
    /// Scheduled turns taken so far: the first is taken at start.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Acquire)
    }
}

/// Starts the push loop: it pushes at start and every `interval_seconds` while it
/// holds the advisory lock (one instance among several), and whenever
/// [`Schedule::now`] is notified (on any instance: an admin asked).
///
/// # Errors
/// When the HTTP client cannot start.
pub fn spawn(pool: PgPool, config: ServiceNowConfig) -> Result<Arc<Schedule>, reqwest::Error> {
    let interval = Duration::from_secs(config.interval_seconds);
    let pusher = Pusher::new(config)?;
    let schedule = Arc::new(Schedule {
        now: Notify::new(),
        last: std::sync::Mutex::new((None, false)),
        leader: AtomicBool::new(false),
        pushes: AtomicU64::new(0),
        ticks: AtomicU64::new(0),
    });
    let shared = schedule.clone();
    tokio::spawn(async move {
        let mut leader: Option<sqlx::PgConnection> = None;
        let mut next = tokio::time::Instant::now();
        loop {
            let asked = tokio::select! {
                () = tokio::time::sleep_until(next) => false,
                () = shared.now.notified() => true,
            };
            if !asked {
                next = tokio::time::Instant::now() + interval;
                leader = lead(&pool, leader).await;
                let leads = leader.is_some();
                shared.leader.store(leads, Ordering::Relaxed);
                metrics::gauge!(telemetry::SERVICENOW_LEADER).set(f64::from(u8::from(leads)));
                shared.ticks.fetch_add(1, Ordering::AcqRel);
                if !leads {
                    continue;
                }
            }
            if let Ok(mut last) = shared.last.lock() {
                last.1 = true;
            }
            let report = pusher.push(&pool).await;
            if let Ok(mut last) = shared.last.lock() {
                *last = (Some(report), false);
                shared.pushes.fetch_add(1, Ordering::AcqRel);
            }
        }
    });
    Ok(schedule)
}

/// Keeps or takes the pushing lock: the connection that holds it, or none when
/// another instance does (or PostgreSQL does not answer; the next tick tries again).
async fn lead(pool: &PgPool, held: Option<sqlx::PgConnection>) -> Option<sqlx::PgConnection> {
    if let Some(mut conn) = held {
        if sqlx::query("SELECT 1").execute(&mut conn).await.is_ok() {
            return Some(conn);
        }
        tracing::warn!("lost the ServiceNow push lock's connection; trying again");
    }
    let mut conn = pool.acquire().await.ok()?.detach();
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LEADER_LOCK)
        .fetch_one(&mut conn)
        .await
        .ok()?;
    got.then_some(conn)
}
