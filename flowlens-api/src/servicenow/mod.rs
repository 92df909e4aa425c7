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
use payload::{Batch, CiSource, Mapping, Payload, RelSource};

/// The IRE endpoint, under the instance URL.
pub const IRE_PATH: &str = "/api/now/identifyreconcile";
/// ServiceNow's OAuth token endpoint, under the instance URL.
pub const TOKEN_PATH: &str = "/oauth_token.do";

/// `pg_try_advisory_lock` key of the instance that pushes on schedule (`FLServN`).
const LEADER_LOCK: i64 = 0x464c_5365_7276_4e00;
/// Held during every push, scheduled or asked for, on whichever instance: two pushes
/// at once could make the IRE create one CI twice (`FLServP`).
pub const PUSH_LOCK: i64 = 0x464c_5365_7276_5000;

/// How often the leader checks that its lock's connection is alive (a connection idle
/// for an hour may be dropped by a firewall, and nobody would push until PostgreSQL
/// noticed).
const LOCK_CHECK: Duration = Duration::from_secs(30);
/// Longest a lock query may take.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests failing in a row (after their retries) before a push gives up: the
/// instance is down, and the rest would only fail slower.
const MAX_FAILURES_IN_A_ROW: usize = 2;

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
    /// `ok`, `partial` (some records rejected or unsent), `failed`, or `skipped`
    /// (another push was running).
    pub outcome: &'static str,
    /// Requests sent (each within `batch_size` items).
    pub requests: usize,
    /// Of which failed after every attempt.
    pub failed_requests: usize,
    /// CIs and relations in the export.
    pub items: usize,
    pub relations: usize,
    /// Records (CIs and relations, each counted once) the IRE took.
    pub accepted: usize,
    /// Records the IRE answered with an error for.
    pub rejected: usize,
    /// Records no request delivered (their requests failed, or were not sent after
    /// the push gave up). `accepted + rejected + unsent = items + relations`.
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
    /// A success status with a body that is not the IRE's answer (a proxy's or a
    /// hibernating instance's page): nothing says the records were taken.
    #[error("the answer is not the IRE's: {0}")]
    Unreadable(String),
}

/// What became of one record over a push: a CI sent in several requests counts once,
/// as accepted if any request had it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    Unsent,
    Rejected,
    Accepted,
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

    /// One push under the push lock; `skipped` when another push holds it.
    pub async fn push(&self, pool: &PgPool) -> PushReport {
        let started = Utc::now();
        let lock = async {
            let mut conn = pool.acquire().await.ok()?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(PUSH_LOCK)
                .fetch_one(&mut *conn)
                .await
                .ok()?;
            Some((got, conn))
        };
        let Ok(Some((got, mut conn))) = tokio::time::timeout(LOCK_TIMEOUT, lock).await else {
            let report = PushReport {
                started_at: Some(started),
                error: Some("PostgreSQL did not answer for the push lock".to_owned()),
                ..PushReport::default()
            };
            return Self::finish(report);
        };
        if !got {
            let report = PushReport {
                started_at: Some(started),
                outcome: "skipped",
                error: Some("another push was running".to_owned()),
                ..PushReport::default()
            };
            return Self::finish(report);
        }
        let report = self.push_locked(pool, started).await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(PUSH_LOCK)
            .execute(&mut *conn)
            .await;
        if unlocked.is_err() {
            // The lock is the connection's: closed, it is released.
            let _ = conn.close().await;
        }
        Self::finish(report)
    }

    /// Exports the graph and sends it in requests of at most `batch_size` items.
    /// A request that fails is counted and the next one is sent, unless the instance
    /// refused the credentials or requests keep failing (then the push stops: the rest
    /// would fail too, slower).
    async fn push_locked(&self, pool: &PgPool, started: DateTime<Utc>) -> PushReport {
        let mut report = PushReport {
            started_at: Some(started),
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
                return report;
            }
        };
        report.items = full.items.len();
        report.relations = full.relations.len();
        let mut items = vec![Fate::Unsent; full.items.len()];
        let mut relations = vec![Fate::Unsent; full.relations.len()];
        let mut failures_in_a_row = 0;
        for batch in payload::batches(&full, self.config.batch_size) {
            report.requests += 1;
            let answer = match self.send(&batch.payload).await {
                Ok(answer) => answer,
                Err(e) => {
                    report.failed_requests += 1;
                    tracing::warn!(error = %e, "a ServiceNow request failed");
                    let stop = matches!(e, PushError::Auth(_));
                    report.error.get_or_insert_with(|| e.to_string());
                    failures_in_a_row += 1;
                    if stop || failures_in_a_row >= MAX_FAILURES_IN_A_ROW {
                        break;
                    }
                    continue;
                }
            };
            failures_in_a_row = 0;
            let judged = judge(&batch, &answer);
            for (whole, ok) in batch.items.iter().zip(&judged.items) {
                let fate = &mut items[*whole];
                *fate = if *ok {
                    Fate::Accepted
                } else {
                    (*fate).max(Fate::Rejected)
                };
            }
            for (whole, ok) in batch.relations.iter().zip(&judged.relations) {
                let fate = &mut relations[*whole];
                *fate = if *ok {
                    Fate::Accepted
                } else {
                    (*fate).max(Fate::Rejected)
                };
            }
            if report.error.is_none() {
                report.error = judged.first_error;
            }
        }
        for (kind, fates) in [("ci", &items), ("relation", &relations)] {
            for (fate, outcome) in [
                (Fate::Accepted, "accepted"),
                (Fate::Rejected, "rejected"),
                (Fate::Unsent, "unsent"),
            ] {
                let n = fates.iter().filter(|f| **f == fate).count();
                metrics::counter!(telemetry::SERVICENOW_RECORDS, "kind" => kind, "outcome" => outcome)
                    .increment(n as u64);
                match fate {
                    Fate::Accepted => report.accepted += n,
                    Fate::Rejected => report.rejected += n,
                    Fate::Unsent => report.unsent += n,
                }
            }
        }
        report
    }

    fn finish(mut report: PushReport) -> PushReport {
        report.finished_at = Some(Utc::now());
        if report.outcome.is_empty() {
            let nothing = report.items + report.relations > 0 && report.accepted == 0;
            report.outcome = if report.error.is_some() && (nothing || report.requests == 0) {
                "failed"
            } else if report.rejected > 0 || report.unsent > 0 {
                "partial"
            } else {
                "ok"
            };
        }
        metrics::counter!(telemetry::SERVICENOW_PUSHES, "outcome" => report.outcome).increment(1);
        if report.outcome == "ok" {
            #[expect(clippy::cast_precision_loss, reason = "seconds since 1970 fit")]
            metrics::gauge!(telemetry::SERVICENOW_LAST_SUCCESS).set(Utc::now().timestamp() as f64);
        }
        tracing::info!(
            outcome = report.outcome,
            requests = report.requests,
            items = report.items,
            relations = report.relations,
            accepted = report.accepted,
            rejected = report.rejected,
            unsent = report.unsent,
            error = report.error.as_deref().unwrap_or(""),
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
                    last = crate::error::transport_error(&e);
                    self.pause(attempt, None).await;
                    continue;
                }
            };
            let status = response.status();
            if status.is_success() {
                let body = read_bounded(response, 16 << 20)
                    .await
                    .map_err(|e| PushError::Unreadable(format!("reading it: {e}")))?;
                return serde_json::from_slice(&body).map_err(|_| {
                    PushError::Unreadable(format!(
                        "HTTP {status} with {} bytes that are not JSON",
                        body.len()
                    ))
                });
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = read_bounded(response, 1024).await.unwrap_or_default();
            let body = printable(&String::from_utf8_lossy(&body), 300);
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
            .map_err(|e| {
                PushError::Exhausted(format!(
                    "OAuth token: {}",
                    crate::error::transport_error(&e)
                ))
            })?;
        let status = response.status();
        let body = read_bounded(response, 64 << 10).await.unwrap_or_default();
        // Only the OAuth error code: a server may echo what it was sent.
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .filter(|e| e.len() <= 40 && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .unwrap_or_default();
        match status.as_u16() {
            // 404: no OAuth endpoint there (plugin off, wrong URL): a configuration
            // problem, as a refusal is.
            400 | 401 | 403 | 404 => {
                return Err(PushError::Auth(format!(
                    "OAuth token: HTTP {status} {code}"
                )));
            }
            _ if !status.is_success() => {
                return Err(PushError::Exhausted(format!(
                    "OAuth token: HTTP {status} {code}"
                )));
            }
            _ => {}
        }
        let granted: Granted = serde_json::from_slice(&body).map_err(|_| {
            PushError::Auth("OAuth token: the answer has no access_token".to_owned())
        })?;
        // A lifetime from outside, bounded: a day at most, a minute kept in reserve.
        let life = Duration::from_secs(granted.expires_in.unwrap_or(1800).clamp(120, 86_400) - 60);
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

/// Which records of a request the IRE took.
struct Judged {
    items: Vec<bool>,
    relations: Vec<bool>,
    first_error: Option<String>,
}

/// Reads an IRE answer (`{"result": {"items": [...], "relations": [...]}}`, or the
/// same without `result`): an entry with a non-empty `errors` array was rejected.
/// Items are answered one for one, in order; an answer without a list of the right
/// length leaves the request's records unjudged, i.e. rejected (nothing says they
/// were taken). Relations the answer does not list one for one are taken when both
/// their CIs were.
fn judge(batch: &Batch, answer: &serde_json::Value) -> Judged {
    let result = answer.get("result").unwrap_or(answer);
    let mut first_error = None;
    let mut read = |key: &str, expected: usize| -> Option<Vec<bool>> {
        let entries = result.get(key)?.as_array()?;
        if entries.len() != expected {
            return None;
        }
        Some(
            entries
                .iter()
                .map(|e| {
                    let errors = e.get("errors").and_then(serde_json::Value::as_array);
                    let bad = errors.is_some_and(|e| !e.is_empty());
                    if bad && first_error.is_none() {
                        let text = errors
                            .and_then(|e| e.first())
                            .map(|e| {
                                e.get("message")
                                    .and_then(serde_json::Value::as_str)
                                    .map_or_else(|| e.to_string(), str::to_owned)
                            })
                            .unwrap_or_default();
                        let kind = if key == "items" { "CI" } else { "relation" };
                        first_error = Some(format!(
                            "the IRE rejected a {kind}: {}",
                            printable(&text, 300)
                        ));
                    }
                    !bad
                })
                .collect(),
        )
    };
    let items = read("items", batch.items.len());
    let listed = read("relations", batch.relations.len());
    let items = items.unwrap_or_else(|| {
        first_error.get_or_insert_with(|| {
            "the IRE's answer does not list the request's CIs one for one".to_owned()
        });
        vec![false; batch.items.len()]
    });
    let relations = listed.unwrap_or_else(|| {
        batch
            .payload
            .relations
            .iter()
            .map(|r| items.get(r.parent) == Some(&true) && items.get(r.child) == Some(&true))
            .collect()
    });
    Judged {
        items,
        relations,
        first_error,
    }
}

/// `s` without control characters, at most `max` characters.
fn printable(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// At most `limit` bytes of a body; an error when the body breaks off.
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit.saturating_sub(out.len());
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(crate::error::transport_error(&e)),
        }
    }
}

/// The scheduled push of this instance, and what it last did.
pub struct Schedule {
    /// Wakes the loop for a push now (`POST .../push`).
    pub now: Notify,
    /// The last push's report (this instance's), and whether a push is running.
    pub last: std::sync::Mutex<(Option<PushReport>, bool)>,
    /// This instance holds the scheduling lock.
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
/// holds the scheduling lock (one instance among several), and whenever
/// [`Schedule::now`] is notified (on any instance: an admin asked). Each push runs in
/// a task of its own, so a panic in one is reported as a failed push and the loop
/// goes on.
///
/// # Errors
/// When the HTTP client cannot start.
pub fn spawn(pool: PgPool, config: ServiceNowConfig) -> Result<Arc<Schedule>, reqwest::Error> {
    let interval = Duration::from_secs(config.interval_seconds);
    let pusher = Arc::new(Pusher::new(config)?);
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
            let wake = next.min(tokio::time::Instant::now() + LOCK_CHECK);
            let asked = tokio::select! {
                () = tokio::time::sleep_until(wake) => false,
                () = shared.now.notified() => true,
            };
            if !asked {
                leader = lead(&pool, leader).await;
                let leads = leader.is_some();
                shared.leader.store(leads, Ordering::Relaxed);
                metrics::gauge!(telemetry::SERVICENOW_LEADER).set(f64::from(u8::from(leads)));
                if tokio::time::Instant::now() < next {
                    continue;
                }
                next = tokio::time::Instant::now() + interval;
                shared.ticks.fetch_add(1, Ordering::AcqRel);
                if !leads {
                    continue;
                }
            }
            if let Ok(mut last) = shared.last.lock() {
                last.1 = true;
            }
            let (pusher, pool) = (pusher.clone(), pool.clone());
            let started = Utc::now();
            let report = match tokio::spawn(async move { pusher.push(&pool).await }).await {
                Ok(report) => report,
                Err(e) => {
                    tracing::error!(error = %e, "a ServiceNow push panicked");
                    Pusher::finish(PushReport {
                        started_at: Some(started),
                        error: Some(format!("the push stopped: {e}")),
                        ..PushReport::default()
                    })
                }
            };
            if let Ok(mut last) = shared.last.lock() {
                *last = (Some(report), false);
            }
            shared.pushes.fetch_add(1, Ordering::AcqRel);
        }
    });
    Ok(schedule)
}

/// Keeps or takes the scheduling lock: the connection that holds it, or none when
/// another instance does (or PostgreSQL does not answer within [`LOCK_TIMEOUT`]; the
/// next check tries again).
async fn lead(pool: &PgPool, held: Option<sqlx::PgConnection>) -> Option<sqlx::PgConnection> {
    if let Some(mut conn) = held {
        let alive = tokio::time::timeout(LOCK_TIMEOUT, sqlx::query("SELECT 1").execute(&mut conn))
            .await
            .is_ok_and(|r| r.is_ok());
        if alive {
            return Some(conn);
        }
        tracing::warn!("lost the ServiceNow scheduling lock's connection; trying again");
    }
    let take = async {
        let mut conn = pool.acquire().await.ok()?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut *conn)
            .await
            .ok()?;
        // Only a connection holding the lock leaves the pool.
        got.then(|| conn.detach())
    };
    tokio::time::timeout(LOCK_TIMEOUT, take)
        .await
        .ok()
        .flatten()
}
