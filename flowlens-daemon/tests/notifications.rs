//! Alert notifications against a real PostgreSQL and real HTTP receivers on 127.0.0.1
//! that check what they get against the services' documented formats: Slack incoming
//! webhooks, PagerDuty Events API v2, and the signed generic webhook. Alerts are written
//! as the graph writer and the API write them (rows in `alerts`, state changes by
//! UPDATE), and the notifier turns each state into deliveries, retries what fails with
//! backoff, gives up when retrying cannot help, and drops past its bound, recording and
//! counting every outcome.

#![allow(
    clippy::unwrap_used,
    clippy::float_cmp,
    clippy::type_complexity,
    reason = "tests: counts compared exactly, rows as tuples"
)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use flowlens_daemon::graph::config::Severity;
use flowlens_daemon::notify::Notifier;
use flowlens_daemon::notify::config::{NotificationTarget, NotificationsConfig, TargetKind};
use flowlens_daemon::notify::payload::signature;
use flowlens_daemon::testing::postgres::scratch;
use hmac::Mac as _;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// A request a receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: HeaderMap,
    body: Value,
    raw: Bytes,
}

/// Receivers on one loopback port: `/<name>` records the request and answers with the
/// next status of its script (the last one repeats; none: 200).
#[derive(Clone, Default)]
struct Receivers {
    got: Arc<Mutex<Vec<Got>>>,
    scripts: Arc<Mutex<HashMap<String, Vec<u16>>>>,
    calls: Arc<Mutex<HashMap<String, usize>>>,
}

async fn receive(
    State(r): State<Receivers>,
    Path(name): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> (StatusCode, String) {
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    r.got.lock().unwrap().push(Got {
        path: name.clone(),
        headers,
        body,
        raw,
    });
    let n = {
        let mut calls = r.calls.lock().unwrap();
        let c = calls.entry(name.clone()).or_default();
        *c += 1;
        *c
    };
    let code = r
        .scripts
        .lock()
        .unwrap()
        .get(&name)
        .map_or(200, |s| *s.get(n - 1).or(s.last()).unwrap_or(&200));
    // PagerDuty answers 202 with a small JSON body.
    let code = if name.starts_with("pd") && code == 200 {
        202
    } else {
        code
    };
    (
        StatusCode::from_u16(code).unwrap(),
        "{\"status\":\"success\"}".into(),
    )
}

impl Receivers {
    async fn start() -> (Self, SocketAddr) {
        let r = Self::default();
        let app = Router::new()
            .route("/{name}", post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, addr)
    }

    fn script(&self, name: &str, codes: &[u16]) {
        self.scripts
            .lock()
            .unwrap()
            .insert(name.to_owned(), codes.to_vec());
    }

    fn at(&self, name: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == name)
            .cloned()
            .collect()
    }

    async fn wait(&self, name: &str, n: usize) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.at(name);
            if got.len() >= n {
                // Nothing more should come.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let got = self.at(name);
                assert_eq!(got.len(), n, "{name}: {got:#?}");
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {} of {n}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn target(name: &str, kind: TargetKind, url: String) -> NotificationTarget {
    NotificationTarget {
        name: name.into(),
        kind,
        url,
        routing_key: String::new(),
        secret: String::new(),
        rules: Vec::new(),
        min_severity: Severity::Info,
    }
}

fn only_new_assets(mut t: NotificationTarget) -> NotificationTarget {
    t.rules = vec!["new-asset".into()];
    t
}

/// The Prometheus text of this process's metrics (one recorder for the binary).
fn metrics() -> String {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .unwrap()
        })
        .render()
}

fn counted(target: &str, outcome: &str) -> f64 {
    let want = format!("flowlens_notifications_total{{target=\"{target}\",outcome=\"{outcome}\"}}");
    metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Waits until the counter shows `want` (it is incremented right after the row is
/// written).
async fn counted_eventually(target: &str, outcome: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while counted(target, outcome) != want {
        assert!(
            Instant::now() < deadline,
            "{target} {outcome}: {} counted, want {want}",
            counted(target, outcome)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a notifier and waits until it leads (its cursor exists).
async fn notifier(
    config: NotificationsConfig,
    url: &str,
    pool: &PgPool,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(Notifier::new(config, url).unwrap().run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leading: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'flowlens-notifier' AND datname = current_database()",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        let cursor: i64 = sqlx::query_scalar("SELECT count(*) FROM notification_cursors")
            .fetch_one(pool)
            .await
            .unwrap();
        if leading > 0 && cursor > 0 {
            return (stop, task);
        }
        assert!(Instant::now() < deadline, "the notifier did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(n: (Arc<AtomicBool>, tokio::task::JoinHandle<()>)) {
    n.0.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(10), n.1)
        .await
        .unwrap()
        .unwrap();
}

/// A change event and its alert, as the graph writer writes them.
async fn alert(pool: &PgPool, rule: &str, severity: &str, title: &str) -> Uuid {
    let event: Uuid = sqlx::query_scalar(
        "INSERT INTO change_events (change_type, entity_type, entity_id, after_state)
         VALUES ('new_dependency', 'dependency', gen_random_uuid(), '{}') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query_scalar(
        "INSERT INTO alerts (change_event_id, severity, title, description, rule_name)
         VALUES ($1, $2, $3, 'first seen in flows', $4) RETURNING id",
    )
    .bind(event)
    .bind(severity)
    .bind(title)
    .bind(rule)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// As the API's acknowledge and resolve do.
async fn set_status(pool: &PgPool, id: Uuid, status: &str) {
    let by = "ops@example.com";
    sqlx::query(
        "UPDATE alerts SET status = $2,
             acknowledged_by = CASE WHEN $2 = 'acknowledged' THEN $3 ELSE acknowledged_by END,
             acknowledged_at = CASE WHEN $2 = 'acknowledged' THEN now() ELSE acknowledged_at END,
             resolved_by = CASE WHEN $2 = 'resolved' THEN $3 ELSE resolved_by END,
             resolved_at = CASE WHEN $2 = 'resolved' THEN now() ELSE resolved_at END
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(by)
    .execute(pool)
    .await
    .unwrap();
}

/// Slack's incoming webhook format: `text` (required as the fallback when there are
/// blocks), Block Kit blocks within their limits.
fn check_slack(m: &Value) {
    let text = m["text"].as_str().expect("text");
    assert!(!text.is_empty() && text.chars().count() <= 3000, "{m}");
    let blocks = m["blocks"].as_array().expect("blocks");
    assert!(blocks.len() <= 50);
    for b in blocks {
        match b["type"].as_str().unwrap() {
            "header" => {
                assert_eq!(b["text"]["type"], "plain_text");
                assert!(b["text"]["text"].as_str().unwrap().chars().count() <= 150);
            }
            "section" => {
                assert!(["mrkdwn", "plain_text"].contains(&b["text"]["type"].as_str().unwrap()));
                assert!(b["text"]["text"].as_str().unwrap().chars().count() <= 3000);
            }
            "context" => assert!(!b["elements"].as_array().unwrap().is_empty()),
            other => panic!("unexpected block {other}"),
        }
    }
}

/// PagerDuty Events API v2: the routing key, an action, a dedup key; a trigger's
/// payload with summary (<= 1024), source and one of the four severities.
fn check_pagerduty(e: &Value, key: &str, alert: Uuid, action: &str) {
    assert_eq!(e["routing_key"], key);
    assert_eq!(e["event_action"], action);
    assert_eq!(e["dedup_key"], alert.to_string());
    if action == "trigger" {
        let p = &e["payload"];
        let summary = p["summary"].as_str().unwrap();
        assert!(!summary.is_empty() && summary.chars().count() <= 1024);
        assert!(!p["source"].as_str().unwrap().is_empty());
        assert!(
            ["critical", "error", "warning", "info"].contains(&p["severity"].as_str().unwrap())
        );
        if let Some(t) = p["timestamp"].as_str() {
            chrono::DateTime::parse_from_rfc3339(t).unwrap();
        }
    } else {
        assert!(e.get("payload").is_none(), "{e}");
    }
}

/// The webhook's signature, checked as a receiver would: HMAC-SHA256 of
/// "<timestamp>.<body>" with the shared secret, and a fresh timestamp.
fn check_signed(g: &Got, secret: &str) {
    let ts: i64 = g.headers["x-flowlens-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 300);
    let got = g.headers["x-flowlens-signature"].to_str().unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&g.raw);
    assert_eq!(
        got,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    assert_eq!(got, signature(secret.as_bytes(), ts, &g.raw));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_slack_pagerduty_and_a_signed_webhook_and_follow_their_state() {
    metrics(); // the recorder, before anything is counted
    let db = scratch("notify").await;
    let pool = db.pool.clone();
    let (r, addr) = Receivers::start().await;
    let key = "R0UT1NGKEY0123456789abcdefABCDEF";
    let mut pd = target("oncall", TargetKind::Pagerduty, format!("http://{addr}/pd"));
    pd.routing_key = key.into();
    pd.min_severity = Severity::Warning;
    let mut hook = target("siem", TargetKind::Webhook, format!("http://{addr}/hook"));
    hook.secret = "webhook-shared-secret".into();
    hook.rules = vec!["new-egress-dependency".into()];
    let config = NotificationsConfig {
        targets: vec![
            target(
                "ops-slack",
                TargetKind::Slack,
                format!("http://{addr}/slack"),
            ),
            pd,
            hook,
        ],
        ..NotificationsConfig::default()
    };
    let n = notifier(config, &db.url, &pool).await;

    // An egress alert (warning): all three; an info alert of another rule: Slack only.
    let egress = alert(
        &pool,
        "new-egress-dependency",
        "warning",
        "New egress dependency: 10.3.0.10 -> 203.0.113.10 tcp/443",
    )
    .await;
    let internal = alert(
        &pool,
        "new-internal-dependency",
        "info",
        "New internal dependency",
    )
    .await;
    let slack = r.wait("slack", 2).await;
    for m in &slack {
        check_slack(&m.body);
    }
    let texts: Vec<&str> = slack
        .iter()
        .map(|g| g.body["text"].as_str().unwrap())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("[WARNING] New egress dependency")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("[INFO] New internal dependency")),
        "{texts:?}"
    );
    let pd = r.wait("pd", 1).await;
    check_pagerduty(&pd[0].body, key, egress, "trigger");
    assert_eq!(pd[0].body["payload"]["severity"], "warning");
    let hooks = r.wait("hook", 1).await;
    check_signed(&hooks[0], "webhook-shared-secret");
    assert_eq!(hooks[0].body["event"], "alert.opened");
    assert_eq!(hooks[0].body["alert"]["id"], egress.to_string());
    assert_eq!(hooks[0].headers["x-flowlens-event"], "alert.opened");

    // Acknowledged: PagerDuty and the webhook hear of it, Slack does not.
    set_status(&pool, egress, "acknowledged").await;
    let pd = r.wait("pd", 2).await;
    check_pagerduty(&pd[1].body, key, egress, "acknowledge");
    let hooks = r.wait("hook", 2).await;
    check_signed(&hooks[1], "webhook-shared-secret");
    assert_eq!(hooks[1].body["event"], "alert.acknowledged");
    assert_eq!(hooks[1].body["alert"]["acknowledged_by"], "ops@example.com");

    // Resolved: everyone; the info alert's resolution goes to Slack alone.
    set_status(&pool, egress, "resolved").await;
    set_status(&pool, internal, "resolved").await;
    let pd = r.wait("pd", 3).await;
    check_pagerduty(&pd[2].body, key, egress, "resolve");
    let hooks = r.wait("hook", 3).await;
    assert_eq!(hooks[2].body["event"], "alert.resolved");
    let slack = r.wait("slack", 4).await;
    let resolved: Vec<&str> = slack[2..]
        .iter()
        .map(|g| g.body["text"].as_str().unwrap())
        .collect();
    assert!(
        resolved
            .iter()
            .all(|t| t.starts_with("[RESOLVED]") && t.contains("by ops@example.com")),
        "{resolved:?}"
    );

    // A retitle re-relays the alert, but its state was notified already: nothing new
    // (a later alert's message shows the notifier got past it).
    sqlx::query("UPDATE alerts SET title = title || ' (edited)' WHERE id = $1")
        .bind(egress)
        .execute(&pool)
        .await
        .unwrap();
    alert(&pool, "new-internal-dependency", "info", "Later").await;
    let slack = r.wait("slack", 5).await;
    assert!(slack[4].body["text"].as_str().unwrap().contains("Later"));
    assert_eq!(r.at("pd").len(), 3);
    assert_eq!(r.at("hook").len(), 3);

    // Every delivery recorded, once.
    let rows: Vec<(String, String, String, i32, Option<i32>)> = sqlx::query_as(
        "SELECT target, action, status, attempts, http_status FROM notification_deliveries
         ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 11, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.2 == "delivered" && r.3 == 1),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .filter(|r| r.0 == "oncall")
            .all(|r| r.4 == Some(202))
    );
    counted_eventually("oncall", "delivered", 3.0).await;
    counted_eventually("ops-slack", "delivered", 5.0).await;
    stop(n).await;
}

/// Finished deliveries past `retention_days` are deleted by the sending instance;
/// recent ones and pending ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_deliveries_are_kept_for_their_retention_then_deleted() {
    let db = scratch("notifyprune").await;
    let pool = db.pool.clone();
    let (_r, addr) = Receivers::start().await;
    let a = alert(&pool, "new-asset", "warning", "old").await;
    for (target, status, age_days) in [
        ("old-delivered", "delivered", 40),
        ("old-failed", "failed", 31),
        ("recent", "delivered", 5),
        ("old-pending", "pending", 40),
    ] {
        sqlx::query(
            "INSERT INTO notification_deliveries
                 (alert_id, target, kind, action, status, created_at, next_attempt_at, delivered_at)
             VALUES ($1, $2, 'webhook', 'trigger', $3, now() - make_interval(days => $4),
                     CASE WHEN $3 = 'pending' THEN now() + interval '1 day'
                          ELSE now() - make_interval(days => $4) END,
                     CASE WHEN $3 = 'delivered' THEN now() - make_interval(days => $4) END)",
        )
        .bind(a)
        .bind(target)
        .bind(status)
        .bind(age_days)
        .execute(&pool)
        .await
        .unwrap();
    }
    let config = NotificationsConfig {
        targets: vec![target(
            "recent",
            TargetKind::Webhook,
            format!("http://{addr}/recent"),
        )],
        retention_days: 30,
        ..NotificationsConfig::default()
    };
    let n = notifier(config, &db.url, &pool).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = loop {
        let left: Vec<String> =
            sqlx::query_scalar("SELECT target FROM notification_deliveries ORDER BY target")
                .fetch_all(&pool)
                .await
                .unwrap();
        if left.len() == 2 || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(left, ["old-pending", "recent"]);
    stop(n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_backoff_given_up_when_hopeless_and_dropped_past_the_bound() {
    metrics(); // the recorder, before anything is counted
    let db = scratch("notifyfail").await;
    let pool = db.pool.clone();
    let (r, addr) = Receivers::start().await;
    // Twice unavailable, then fine; a request the service refuses; a port nobody serves.
    r.script("flaky", &[503, 503, 200]);
    r.script("refused", &[400]);
    r.script("pd-order", &[503, 503, 200]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let config = NotificationsConfig {
        targets: vec![
            only_new_assets(target(
                "flaky",
                TargetKind::Webhook,
                format!("http://{addr}/flaky"),
            )),
            only_new_assets(target(
                "refused",
                TargetKind::Webhook,
                format!("http://{addr}/refused"),
            )),
            only_new_assets(target(
                "down",
                TargetKind::Webhook,
                format!("http://{dead}/down"),
            )),
            {
                let mut pd = target(
                    "pd-order",
                    TargetKind::Pagerduty,
                    format!("http://{addr}/pd-order"),
                );
                pd.routing_key = "R0UT1NGKEY0123456789abcdefABCDEF".into();
                pd.rules = vec!["ordered".into()];
                pd
            },
        ],
        max_attempts: 3,
        initial_backoff_ms: 200,
        timeout_ms: 2_000,
        ..NotificationsConfig::default()
    };
    let n = notifier(config.clone(), &db.url, &pool).await;
    let id = alert(&pool, "new-asset", "critical", "New asset").await;
    r.wait("flaky", 3).await;
    r.wait("refused", 1).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let rows = loop {
        let rows: Vec<(String, String, i32, Option<i32>, Option<String>, f64)> = sqlx::query_as(
            "SELECT target, status, attempts, http_status, last_error,
                    extract(epoch FROM coalesce(delivered_at, now()) - created_at)::float8
             FROM notification_deliveries WHERE alert_id = $1 ORDER BY target",
        )
        .bind(id)
        .fetch_all(&pool)
        .await
        .unwrap();
        if rows.iter().all(|r| r.1 != "pending") {
            break rows;
        }
        assert!(Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let by: HashMap<&str, _> = rows.iter().map(|r| (r.0.as_str(), r)).collect();
    // Delivered on the third attempt, after waits of ~200 and ~400 ms (less a fifth).
    let flaky = by["flaky"];
    assert_eq!(
        (flaky.1.as_str(), flaky.2, flaky.3),
        ("delivered", 3, Some(200)),
        "{flaky:?}"
    );
    assert!(flaky.5 >= 0.48, "backoff: delivered after {} s", flaky.5);
    // A 400 is not retried.
    let refused = by["refused"];
    assert_eq!(
        (refused.1.as_str(), refused.2, refused.3),
        ("failed", 1, Some(400)),
        "{refused:?}"
    );
    assert!(refused.4.as_deref().unwrap().contains("400"));
    // Nobody there: retried up to max_attempts, then failed with the error kept.
    let down = by["down"];
    assert_eq!(
        (down.1.as_str(), down.2, down.3),
        ("failed", 3, None),
        "{down:?}"
    );
    assert!(!down.4.as_deref().unwrap().is_empty());
    // The error says why, without the URL (a Slack webhook's URL is its secret).
    let error = down.4.as_deref().unwrap();
    assert!(
        !error.contains(&dead.to_string()) && !error.contains("/down"),
        "{error}"
    );
    assert!(error.to_lowercase().contains("connect"), "{error}");
    for (target, outcome, want) in [
        ("flaky", "retried", 2.0),
        ("flaky", "delivered", 1.0),
        ("refused", "failed", 1.0),
        ("down", "retried", 2.0),
        ("down", "failed", 1.0),
    ] {
        counted_eventually(target, outcome, want).await;
    }
    // A resolve waits for its trigger: PagerDuty away at first, the alert resolved
    // meanwhile; the incident is opened, then resolved, never the other way round.
    let ordered = alert(&pool, "ordered", "critical", "Ordered").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.at("pd-order").is_empty() {
        assert!(Instant::now() < deadline, "no trigger attempt");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    set_status(&pool, ordered, "resolved").await;
    let got = r.wait("pd-order", 4).await;
    let actions: Vec<&str> = got
        .iter()
        .map(|g| g.body["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "trigger", "trigger", "resolve"]);
    stop(n).await;

    // A bound of one waiting delivery while the target is away: the first alert's
    // delivery waits, the second's is recorded as dropped and counted.
    r.script("slow", &[503]);
    let bounded = NotificationsConfig {
        targets: vec![target(
            "slow",
            TargetKind::Webhook,
            format!("http://{addr}/slow"),
        )],
        max_pending: 1,
        max_attempts: 100,
        initial_backoff_ms: 60_000,
        ..config
    };
    let n = notifier(bounded, &db.url, &pool).await;
    let first = alert(&pool, "new-asset", "warning", "First").await;
    let second = alert(&pool, "new-asset", "warning", "Second").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT alert_id, status FROM notification_deliveries WHERE target = 'slow'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        if rows.len() == 2 {
            let status = |a: Uuid| rows.iter().find(|r| r.0 == a).unwrap().1.clone();
            assert_eq!(status(first), "pending");
            assert_eq!(status(second), "dropped");
            break;
        }
        assert!(Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    counted_eventually("slow", "dropped", 1.0).await;
    // One attempt, the next a minute away.
    r.wait("slow", 1).await;
    stop(n).await;
}

/// The whole path: the daemon, configured in YAML, maps the generator's enterprise
/// topology, its graph writer raises the egress alert (the default rules), and its
/// notifier sends it to Slack and PagerDuty, counting the deliveries in `/metrics`.
#[test]
fn the_daemon_notifies_the_alerts_its_graph_raises() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("notifye2e"));
    let (r, addr) = rt.block_on(Receivers::start());
    let yaml = format!(
        "notifications:\n  targets:\n\
         \x20   - name: ops-slack\n      kind: slack\n      url: http://{addr}/slack\n\
         \x20   - name: oncall\n      kind: pagerduty\n      url: http://{addr}/pd\n\
         \x20     routing_key: ${{TEST_PD_KEY}}\n      min_severity: warning\n"
    );
    let d = support::Daemon::start_with(
        "notify-e2e",
        &[
            ("DATABASE_URL", db.url.as_str()),
            (
                "FLOWLENS_DEPENDENCY_RESOLUTION__AGGREGATION__FLUSH_INTERVAL_SECONDS",
                "1",
            ),
            ("TEST_PD_KEY", "R0UT1NGKEY0123456789abcdefABCDEF"),
        ],
        "postgres",
        &[],
        &yaml,
    );
    let sent = support::graph::generate(d.ipfix, 6, 5000);
    // Every flow in the graph: every alert it raises is written.
    d.wait_until("every generated flow in the graph", |_| {
        rt.block_on(support::graph::total_flows(&db.pool)) == i64::try_from(sent).unwrap()
    });
    let pd = rt.block_on(r.wait("pd", 1));
    // The one warning the rules raise for this topology: the egress dependency.
    let egress: Uuid = rt
        .block_on(
            sqlx::query_scalar("SELECT id FROM alerts WHERE severity = 'warning'")
                .fetch_one(&db.pool),
        )
        .unwrap();
    check_pagerduty(
        &pd[0].body,
        "R0UT1NGKEY0123456789abcdefABCDEF",
        egress,
        "trigger",
    );
    assert!(
        pd[0].body["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("203.0.113.10"),
        "{}",
        pd[0].body
    );
    // Slack hears of every alert the rules raised (info ones too).
    let alerts: i64 = rt
        .block_on(sqlx::query_scalar("SELECT count(*) FROM alerts").fetch_one(&db.pool))
        .unwrap();
    let slack = rt.block_on(r.wait("slack", usize::try_from(alerts).unwrap()));
    for m in &slack {
        check_slack(&m.body);
    }
    d.wait_until("the deliveries counted", |d| {
        d.metric(
            "flowlens_notifications_total",
            &["target=\"oncall\"", "outcome=\"delivered\""],
        ) == 1.0
    });
    let shown = d.get("/health").unwrap();
    assert!(shown.contains("\"ready\":true"), "{shown}");
    d.stop();
}
