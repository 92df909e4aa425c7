//! A migrated scratch database per test (in the private cluster under
//! `target/test-pg`, shared with the daemon's tests, or on `DATABASE_URL`), an app built
//! on it, and tokens for each role.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use flowlens_api::auth::{Role, issue_token};
use flowlens_api::config::Config;
use flowlens_api::state::AppState;
use http_body_util::BodyExt as _;
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt as _;

pub(crate) const SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// A migrated database of its own, and its URL.
pub(crate) async fn scratch_db(label: &str) -> (PgPool, String) {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "a_{}_{}_{}",
        label
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(24)
            .collect::<String>()
            .to_lowercase(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let shared_server = std::env::var("DATABASE_URL").ok();
    let private = shared_server.is_none();
    let admin_url = if let Some(url) = shared_server {
        url
    } else {
        {
            let dir =
                std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-pg");
            let cluster =
                tokio::task::spawn_blocking(move || flowlens_pgcluster::Cluster::ensure(&dir))
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("private PostgreSQL cluster: {e}"));
            cluster.url("postgres")
        }
    };
    let admin = flowlens_api::connect(&admin_url, 1)
        .await
        .unwrap_or_else(|e| panic!("{admin_url}: {e}"));
    if private {
        drop_leftovers(&admin).await;
    }
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
    let pool = flowlens_api::connect(&url, 8).await.unwrap();
    flowlens_api::migrate(&pool).await.unwrap();
    (pool, url)
}

/// Drops, once per test process, the private cluster's scratch databases of test
/// processes that have ended and that nobody is connected to, so the cluster does not
/// grow run after run. Never on a `DATABASE_URL` server: other machines' tests may be
/// using it.
async fn drop_leftovers(admin: &PgPool) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, Ordering::AcqRel) {
        return;
    }
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database d WHERE datname LIKE 'a\\_%'
           AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
    )
    .fetch_all(admin)
    .await
    .unwrap_or_default();
    for name in names {
        if flowlens_pgcluster::is_dead_scratch_database(&name, "a") {
            // Without FORCE: a session that appeared meanwhile keeps it.
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                .execute(admin)
                .await;
        }
    }
}

/// The API over a scratch database.
pub(crate) struct TestApi {
    pub(crate) app: Router,
    pub(crate) pool: PgPool,
    pub(crate) state: AppState,
}

/// The test default: auth on, rate limits off (tests fire requests faster than any
/// person), everything else as the design says.
pub(crate) fn test_config() -> Config {
    let mut c = Config::load(None, [("JWT_SECRET".to_owned(), SECRET.to_owned())]).unwrap();
    c.api.rate_limiting.enabled = false;
    c
}

impl TestApi {
    pub(crate) async fn new(label: &str) -> Self {
        Self::with(label, |_| {}).await
    }

    pub(crate) async fn with(label: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let (pool, url) = scratch_db(label).await;
        let mut config = test_config();
        config.database.url = Some(url.clone());
        tweak(&mut config);
        // The server's pool, with its statement timeout; `pool` (none) is the test's.
        let served = flowlens_api::connect_with_timeout(
            &url,
            8,
            Duration::from_secs(config.api.limits.statement_timeout_seconds),
        )
        .await
        .unwrap();
        let state = AppState::new(config, served).unwrap();
        state.start_background();
        // Wait for LISTEN, so no test races the feed's first resync.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !state.feed_listening.load(Ordering::Acquire) {
            assert!(
                std::time::Instant::now() < deadline,
                "the change feed never listened"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Self {
            app: flowlens_api::app(state.clone()),
            pool,
            state,
        }
    }

    pub(crate) fn token(role: Role) -> String {
        Self::token_for(role.as_str(), role)
    }

    pub(crate) fn token_for(subject: &str, role: Role) -> String {
        issue_token(
            SECRET,
            subject,
            role,
            SystemTime::now(),
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    /// Waits until the change feed has heard every change event in the database, so
    /// no notification still in flight invalidates what a test reads next.
    pub(crate) async fn settle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let events: i64 = sqlx::query_scalar("SELECT count(*) FROM change_events")
                .fetch_one(&self.pool)
                .await
                .unwrap();
            let heard = self.state.feed_received.load(Ordering::Acquire);
            if heard >= u64::try_from(events).unwrap() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the feed heard {heard} of {events} change events"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends a request with optional bearer token and JSON body.
    pub(crate) async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        self.send(req).await
    }

    pub(crate) async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, headers, value)
    }

    /// GET as `role`, asserting `expect`.
    pub(crate) async fn get_as(&self, role: Role, uri: &str, expect: StatusCode) -> Value {
        let (s, _, v) = self
            .call(Method::GET, uri, Some(&Self::token(role)), None)
            .await;
        assert_eq!(s, expect, "GET {uri}: {v}");
        v
    }

    /// GET as a viewer, asserting 200.
    pub(crate) async fn get(&self, uri: &str) -> Value {
        self.get_as(Role::Viewer, uri, StatusCode::OK).await
    }

    /// A write as an editor, asserting `expect`.
    pub(crate) async fn write(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
        expect: StatusCode,
    ) -> Value {
        let (s, h, v) = self
            .call(method.clone(), uri, Some(&Self::token(Role::Editor)), body)
            .await;
        assert_eq!(s, expect, "{method} {uri}: {v}");
        if s.is_client_error() || s.is_server_error() {
            assert_eq!(
                h.get(header::CONTENT_TYPE).unwrap(),
                "application/problem+json",
                "errors are problem+json"
            );
            assert_eq!(v["status"], s.as_u16(), "{v}");
        }
        v
    }

    /// Creates a manual asset, returning its id.
    pub(crate) async fn asset(&self, name: &str, ips: &[&str]) -> String {
        let v = self
            .write(
                Method::POST,
                "/api/v1/assets",
                Some(
                    serde_json::json!({"name": name, "ip_addresses": ips, "asset_type": "server"}),
                ),
                StatusCode::CREATED,
            )
            .await;
        v["id"].as_str().unwrap().to_owned()
    }

    /// Creates a manual dependency, returning its id.
    pub(crate) async fn dependency(&self, source: &str, target: &str, port: u16) -> String {
        let v = self
            .write(
                Method::POST,
                "/api/v1/dependencies",
                Some(serde_json::json!({
                    "source_asset_id": source, "target_asset_id": target,
                    "protocol": 6, "port": port
                })),
                StatusCode::CREATED,
            )
            .await;
        v["id"].as_str().unwrap().to_owned()
    }
}

/// A private `redis-server` (Debian's) on 127.0.0.1 (shared with the daemon's tests).
pub(crate) use flowlens_redis::testing::RedisServer;

/// `promtool check metrics` (Debian's `prometheus` package) accepts `body`, a
/// `/metrics` page. Without promtool: fails where `CI` is set, skips elsewhere.
pub(crate) fn promtool_accepts(body: &str) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not installed"
        );
        eprintln!("skipping the promtool check: promtool is not installed");
        return;
    };
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(body.as_bytes())
        .expect("promtool reads its input");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
