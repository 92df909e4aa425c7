//! EDGE: alert notifications (issue 18): Slack, PagerDuty and signed webhooks.
//!
//! The `alerts` table is an outbox (migration 16): every alert row carries its writing
//! transaction and a sequence, bumped when its state changes (acknowledged, resolved).
//! The notifier reads it past its own cursor (`notification_cursors`), the way the
//! Kafka relay does: only rows of transactions older than the oldest still running, so
//! a late commit is never passed over. Each alert state becomes one delivery per target
//! it is routed to (`rules`, `min_severity`, and what the target's kind hears of), all
//! inserted in the transaction that moves the cursor: a state is queued exactly once,
//! and `UNIQUE (alert_id, target, action)` keeps a re-read state from being queued
//! twice. The deliveries table is the queue and the record (migration 17): bounded by
//! `notifications.max_pending` (past it, `dropped`), retried with exponential backoff
//! until `max_attempts` (then `failed`), every answer written down.
//!
//! One daemon notifies at a time, the one holding an advisory lock; nothing on the graph
//! writer's path waits for it: it only reads what the writer committed.
//!
//! [`payload`] is the pure part (the services' formats and the signature).

pub mod config;
pub mod payload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};
use uuid::Uuid;

use self::config::{NotificationTarget, NotificationsConfig, TargetKind, resolve};
use self::payload::{Action, Alert};
use crate::graph::config::Severity;
use crate::store::outbox::{self, Cursors, sleep_unless};

/// Alert rows read per pass.
const BATCH: i64 = 500;
/// Deliveries sent per pass (concurrently).
const SEND_BATCH: i64 = 64;
/// Deliveries of one target per pass.
const PER_TARGET: i64 = 16;
/// What is kept of an error answer's body.
const ERROR_BODY_BYTES: usize = 1024;
/// The pause between passes that found nothing to do.
const IDLE: Duration = Duration::from_millis(250);
/// The pause after a database failure, and between two tries to lead.
const RETRY: Duration = Duration::from_secs(2);
const LOCK: &str = "SELECT pg_try_advisory_lock(hashtext('flowlens.notifications'))";
/// How often the sending instance deletes deliveries past `retention_days`.
const PRUNE_EVERY: Duration = Duration::from_hours(1);

/// The cursor's name in `notification_cursors`.
const CURSOR: &str = "alerts";

/// Delivers alerts to the configured targets.
pub struct Notifier {
    config: NotificationsConfig,
    connect: PgConnectOptions,
    http: reqwest::Client,
}

impl std::fmt::Debug for Notifier {
    /// The targets (themselves without secrets), not the database's connect options
    /// (they hold its password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("targets", &self.config.targets)
            .finish_non_exhaustive()
    }
}

/// Why a notifier could not start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("database URL: {0}")]
    Url(String),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// One delivery taken from the queue, with its alert.
#[derive(sqlx::FromRow)]
struct Due {
    delivery_id: i64,
    target: String,
    action: String,
    attempts: i32,
    id: Uuid,
    rule_name: Option<String>,
    severity: String,
    title: String,
    description: Option<String>,
    status: Option<String>,
    created_at: Option<DateTime<Utc>>,
    acknowledged_by: Option<String>,
    resolved_by: Option<String>,
    change_type: Option<String>,
    change_event_id: Option<Uuid>,
}

/// An alert state in the outbox: id, rule, severity, status, position.
type OutboxRow = (Uuid, Option<String>, String, Option<String>, String, i64);

/// How one attempt ended.
#[derive(Debug)]
enum Outcome {
    Delivered(u16),
    /// Worth another attempt (network, timeout, 408, 429, 5xx).
    Retry(Option<u16>, String),
    /// Never going to work as it is (other 4xx, a target no longer configured).
    Fail(Option<u16>, String),
}

impl Notifier {
    /// # Errors
    /// A database URL that does not parse, or an HTTP client that cannot be built (no
    /// TLS roots).
    pub fn new(config: NotificationsConfig, database_url: &str) -> Result<Self, NotifyError> {
        let connect = database_url
            .parse::<PgConnectOptions>()
            .map_err(|e| NotifyError::Url(e.to_string()))?
            .application_name("flowlens-notifier");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms.max(1)))
            .user_agent(concat!("FlowLens/", env!("CARGO_PKG_VERSION")))
            // A redirect would turn the POST into a GET (and take the signature to
            // another host): an answer to fix in the configuration, not to follow.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            config,
            connect,
            http,
        })
    }

    /// Runs until `stop` (checked between passes). Failures are counted, logged and
    /// retried; it never gives up.
    pub async fn run(self, stop: Arc<AtomicBool>) {
        let mut warned = false;
        while !stop.load(Ordering::Relaxed) {
            match self.lead().await {
                Ok(Some(conn)) => {
                    warned = false;
                    metrics::gauge!("flowlens_notifications_leader").set(1.0);
                    tracing::info!(targets = self.config.targets.len(), "notifying alerts");
                    let why = self.serve(conn, &stop).await;
                    metrics::gauge!("flowlens_notifications_leader").set(0.0);
                    match why {
                        Ok(()) => return,
                        Err(e) => {
                            metrics::counter!("flowlens_notifications_errors_total").increment(1);
                            tracing::warn!("notifier: PostgreSQL: {e}; retrying in {RETRY:?}");
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    metrics::counter!("flowlens_notifications_errors_total").increment(1);
                    if !warned {
                        tracing::warn!("notifier: PostgreSQL: {e}; retrying");
                        warned = true;
                    }
                }
            }
            sleep_unless(&stop, RETRY).await;
        }
    }

    async fn lead(&self) -> Result<Option<PgConnection>, sqlx::Error> {
        outbox::lead(&self.connect, LOCK).await
    }

    /// Queues and sends until `stop`; an error ends it (and the lock with the
    /// connection).
    async fn serve(&self, mut conn: PgConnection, stop: &AtomicBool) -> Result<(), sqlx::Error> {
        let mut at = outbox::cursor(&mut conn, Cursors::Notifications, CURSOR).await?;
        let mut pruned_at: Option<std::time::Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            if pruned_at.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                self.prune(&mut conn).await?;
                pruned_at = Some(std::time::Instant::now());
            }
            let queued = self.enqueue(&mut conn, &mut at).await?;
            let sent = self.send_due(&mut conn).await?;
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM notification_deliveries WHERE status = 'pending'",
            )
            .fetch_one(&mut conn)
            .await?;
            #[expect(clippy::cast_precision_loss, reason = "a gauge")]
            metrics::gauge!("flowlens_notifications_pending").set(pending as f64);
            if queued < usize::try_from(BATCH).unwrap_or(usize::MAX) && sent == 0 {
                sleep_unless(stop, IDLE).await;
            }
        }
        Ok(())
    }

    /// Deletes finished deliveries older than `retention_days` (the queue's record must
    /// not grow for ever; pending ones are never touched).
    async fn prune(&self, conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
        let gone = sqlx::query(
            "DELETE FROM notification_deliveries
             WHERE status <> 'pending'
               AND COALESCE(delivered_at, next_attempt_at, created_at)
                   < now() - make_interval(days => $1)",
        )
        .bind(i32::try_from(self.config.retention_days).unwrap_or(i32::MAX))
        .execute(conn)
        .await?
        .rows_affected();
        if gone > 0 {
            tracing::info!(
                deliveries = gone,
                "notifier: pruned finished deliveries past retention"
            );
        }
        Ok(gone)
    }

    /// Turns the alert states past the cursor into deliveries, and moves the cursor, in
    /// one transaction. The alert rows read.
    async fn enqueue(
        &self,
        conn: &mut PgConnection,
        at: &mut (String, i64),
    ) -> Result<usize, sqlx::Error> {
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, rule_name, severity, COALESCE(status, 'open'), relay_tx::text, relay_seq
                 FROM alerts
                 WHERE relay_tx IS NOT NULL
                   AND (relay_tx, relay_seq) > ($1::text::xid8, $2)
                   AND relay_tx < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY relay_tx, relay_seq
                 LIMIT $3",
        )
        .bind(&at.0)
        .bind(at.1)
        .bind(BATCH)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(0);
        };
        let position = (last.4.clone(), last.5);
        let mut tx = conn.begin().await?;
        let mut pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notification_deliveries WHERE status = 'pending'",
        )
        .fetch_one(&mut *tx)
        .await?;
        let mut dropped = Vec::new();
        for (id, rule, severity, status, _, _) in &rows {
            let Some(action) = status.as_deref().and_then(Action::for_status) else {
                // Not a status the API writes (open, acknowledged, resolved).
                tracing::warn!(alert = %id, ?status, "alert state not notified: unknown status");
                continue;
            };
            for target in self.routed(rule.as_deref(), severity, action) {
                let status = if pending < i64::from(self.config.max_pending) {
                    "pending"
                } else {
                    "dropped"
                };
                let inserted = sqlx::query(
                    "INSERT INTO notification_deliveries (alert_id, target, kind, action, status)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (alert_id, target, action) DO NOTHING",
                )
                .bind(id)
                .bind(&target.name)
                .bind(target.kind.as_str())
                .bind(action.as_str())
                .bind(status)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    continue;
                }
                if status == "pending" {
                    pending += 1;
                } else {
                    dropped.push(target.name.as_str());
                }
            }
        }
        outbox::advance(&mut tx, Cursors::Notifications, CURSOR, &position).await?;
        tx.commit().await?;
        *at = position;
        // Counted once committed: a rolled-back pass is queued again, and counted then.
        for target in dropped {
            metrics::counter!("flowlens_notifications_total",
                "target" => target.to_owned(), "outcome" => "dropped")
            .increment(1);
        }
        Ok(rows.len())
    }

    /// The targets an alert state goes to.
    fn routed<'a>(
        &'a self,
        rule: Option<&'a str>,
        severity: &'a str,
        action: Action,
    ) -> impl Iterator<Item = &'a NotificationTarget> + 'a {
        let severity = Severity::parse(severity).unwrap_or(Severity::Critical);
        self.config.targets.iter().filter(move |t| {
            action.wanted_by(t.kind)
                && severity >= t.min_severity
                && (t.rules.is_empty() || rule.is_some_and(|r| t.rules.iter().any(|x| x == r)))
        })
    }

    /// Sends the deliveries that are due, at the same time, and records each answer.
    /// How many were tried.
    async fn send_due(&self, conn: &mut PgConnection) -> Result<usize, sqlx::Error> {
        // Per alert and target, only the oldest waiting delivery: a resolve must not
        // overtake its trigger still backing off (PagerDuty would drop the resolve and
        // open the incident late, for good). Per target at most PER_TARGET, so one
        // target that times out delays the others by one pass at most.
        let due: Vec<Due> = sqlx::query_as(
            "SELECT d.id AS delivery_id, d.target, d.action, d.attempts,
                    a.id, a.rule_name, a.severity, a.title, a.description, a.status,
                    a.created_at, a.acknowledged_by, a.resolved_by,
                    c.change_type, a.change_event_id
             FROM (SELECT d.*, row_number() OVER (PARTITION BY d.target
                                                  ORDER BY d.next_attempt_at, d.id) AS n
                   FROM notification_deliveries d
                   WHERE d.status = 'pending' AND d.next_attempt_at <= now()
                     AND NOT EXISTS (
                         SELECT 1 FROM notification_deliveries e
                         WHERE e.alert_id = d.alert_id AND e.target = d.target
                           AND e.status = 'pending' AND e.id < d.id)) d
             JOIN alerts a ON a.id = d.alert_id
             LEFT JOIN change_events c ON c.id = a.change_event_id
             WHERE d.n <= $2
             ORDER BY d.next_attempt_at, d.id
             LIMIT $1",
        )
        .bind(SEND_BATCH)
        .bind(PER_TARGET)
        .fetch_all(&mut *conn)
        .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut attempts = tokio::task::JoinSet::new();
        for d in due {
            let target = self
                .config
                .targets
                .iter()
                .find(|t| t.name == d.target)
                .cloned();
            let http = self.http.clone();
            attempts.spawn(async move {
                let outcome = attempt(&http, target.as_ref(), &d).await;
                (d, outcome)
            });
        }
        let mut tried = 0;
        while let Some(done) = attempts.join_next().await {
            let Ok((d, outcome)) = done else { continue };
            tried += 1;
            self.record(conn, &d, &outcome).await?;
        }
        Ok(tried)
    }

    /// Writes an attempt's outcome, and counts it.
    async fn record(
        &self,
        conn: &mut PgConnection,
        d: &Due,
        outcome: &Outcome,
    ) -> Result<(), sqlx::Error> {
        let attempts = d.attempts.saturating_add(1);
        let (status, code, error, label) = match outcome {
            Outcome::Delivered(code) => ("delivered", Some(*code), None, "delivered"),
            Outcome::Retry(code, e)
                if u32::try_from(attempts).unwrap_or(u32::MAX) < self.config.max_attempts =>
            {
                ("pending", *code, Some(e.as_str()), "retried")
            }
            Outcome::Retry(code, e) | Outcome::Fail(code, e) => {
                ("failed", *code, Some(e.as_str()), "failed")
            }
        };
        if status == "failed" {
            tracing::warn!(
                target = %d.target,
                alert = %d.id,
                action = %d.action,
                attempts,
                error = error.unwrap_or_default(),
                "notification not delivered"
            );
        }
        let backoff = self.backoff(u32::try_from(attempts).unwrap_or(u32::MAX), d.delivery_id);
        sqlx::query(
            "UPDATE notification_deliveries
             SET status = $2, attempts = $3, http_status = $4, last_error = $5,
                 delivered_at = CASE WHEN $2 = 'delivered' THEN now() END,
                 next_attempt_at = now() + $6 * interval '1 millisecond'
             WHERE id = $1",
        )
        .bind(d.delivery_id)
        .bind(status)
        .bind(attempts)
        .bind(code.map(i32::from))
        .bind(error.map(|e| e.chars().take(1000).collect::<String>()))
        .bind(i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX))
        .execute(&mut *conn)
        .await?;
        metrics::counter!("flowlens_notifications_total",
            "target" => d.target.clone(), "outcome" => label)
        .increment(1);
        Ok(())
    }

    /// The wait before attempt `attempts + 1`: `initial_backoff_ms` doubled per
    /// attempt, at most `max_backoff_seconds`, less up to a fifth (spread by the
    /// delivery's id, so retries of many deliveries do not land together).
    fn backoff(&self, attempts: u32, delivery: i64) -> Duration {
        let base = self
            .config
            .initial_backoff_ms
            .saturating_mul(1_u64 << attempts.saturating_sub(1).min(30))
            .min(self.config.max_backoff_seconds.saturating_mul(1000));
        // 0..=199 thousandths of the wait, by a multiplicative hash of the id.
        let spread = u128::from(delivery.unsigned_abs().wrapping_mul(2_654_435_761) % 200);
        let less = u64::try_from(u128::from(base) * spread / 1000).unwrap_or(0);
        Duration::from_millis(base - less)
    }
}

/// One attempt at one delivery.
async fn attempt(http: &reqwest::Client, target: Option<&NotificationTarget>, d: &Due) -> Outcome {
    let Some(target) = target else {
        return Outcome::Fail(None, format!("target {} is no longer configured", d.target));
    };
    let Some(action) = Action::parse(&d.action) else {
        return Outcome::Fail(None, format!("unknown action {}", d.action));
    };
    let alert = Alert {
        id: d.id,
        rule_name: d.rule_name.clone(),
        severity: d.severity.clone(),
        title: d.title.clone(),
        description: d.description.clone(),
        status: d.status.clone().unwrap_or_default(),
        created_at: d.created_at,
        acknowledged_by: d.acknowledged_by.clone(),
        resolved_by: d.resolved_by.clone(),
        change_type: d.change_type.clone(),
        change_event_id: d.change_event_id,
    };
    let url = match target.endpoint() {
        Ok(u) => u,
        Err(e) => return Outcome::Fail(None, e),
    };
    let request = match target.kind {
        TargetKind::Slack => http.post(&url).json(&payload::slack(&alert, action)),
        TargetKind::Pagerduty => match resolve(&target.routing_key) {
            Ok(key) => http
                .post(&url)
                .json(&payload::pagerduty(&alert, action, &key)),
            Err(e) => return Outcome::Fail(None, e),
        },
        TargetKind::Webhook => {
            let now = Utc::now();
            let body = payload::webhook(&alert, action, now).to_string();
            let mut r = http
                .post(&url)
                .header("content-type", "application/json")
                .header("x-flowlens-event", action.webhook_event())
                .header("x-flowlens-delivery", d.delivery_id.to_string())
                .header("x-flowlens-timestamp", now.timestamp().to_string());
            match resolve(&target.secret) {
                Ok(secret) if !secret.is_empty() => {
                    r = r.header(
                        "x-flowlens-signature",
                        payload::signature(secret.as_bytes(), now.timestamp(), body.as_bytes()),
                    );
                }
                Ok(_) => {}
                Err(e) => return Outcome::Fail(None, e),
            }
            r.body(body)
        }
    };
    match request.send().await {
        Ok(mut resp) => {
            let code = resp.status();
            if code.is_success() {
                return Outcome::Delivered(code.as_u16());
            }
            // The start of the answer, however much a receiver sends.
            let mut body = Vec::new();
            while body.len() < ERROR_BODY_BYTES {
                match resp.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    Ok(None) | Err(_) => break,
                }
            }
            body.truncate(ERROR_BODY_BYTES);
            let e = format!("HTTP {code}: {}", String::from_utf8_lossy(&body));
            if code.is_server_error() || code.as_u16() == 408 || code.as_u16() == 429 {
                Outcome::Retry(Some(code.as_u16()), e)
            } else {
                Outcome::Fail(Some(code.as_u16()), e)
            }
        }
        // A request that cannot be built (a malformed URL) never will be.
        Err(e) if e.is_builder() => Outcome::Fail(None, describe(e)),
        Err(e) => Outcome::Retry(None, describe(e)),
    }
}

/// An HTTP error without its URL (a Slack webhook's URL is its secret) and with its
/// causes (reqwest's message alone says "error sending request", not why).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
