//! Design §8: several `flowlens-api serve` processes on one database behind a load
//! balancer, with Redis for what they share. Real processes, a real Redis, real
//! sockets: rate limits hold across instances, a revoked key stops working on every
//! instance within a second (its WebSockets too), caches follow changes made through
//! another instance, a scan is not failed by an instance that starts while it runs
//! (but is once its own instance dies), and Redis going away degrades to memory
//! without failing a request.

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowlens_api::auth::Role;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{RedisServer, SECRET, TestApi, scratch_db};

const BIN: &str = env!("CARGO_BIN_EXE_flowlens-api");

/// One `flowlens-api serve`, killed when dropped.
struct Instance {
    child: Child,
    port: u16,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts an instance on `database` sharing `redis`, and waits for its health.
async fn start(database: &str, redis: &RedisServer, closed_port: u16) -> Instance {
    let port = free_port();
    let child = Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", database)
        .env("JWT_SECRET", SECRET)
        .env("FLOWLENS_LOG", "warn")
        .env("FLOWLENS_API__HOST", "127.0.0.1")
        .env("FLOWLENS_API__PORT", port.to_string())
        .env("FLOWLENS_API__WORKERS", "1")
        .env("FLOWLENS_API__RATE_LIMITING__BACKEND", "redis")
        .env("FLOWLENS_API__RATE_LIMITING__REDIS_URL", redis.url(2))
        .env("FLOWLENS_API__RATE_LIMITING__DEFAULT_LIMIT", "40/minute")
        .env("FLOWLENS_API__RATE_LIMITING__BURST_LIMIT", "100/second")
        .env("FLOWLENS_API__CACHE__BACKEND", "redis")
        .env("FLOWLENS_API__CACHE__REDIS_URL", redis.url(3))
        .env("FLOWLENS_API__DISCOVERY__ALLOWED_RANGES", "[127.0.0.0/29]")
        .env("FLOWLENS_API__DISCOVERY__PORTS", format!("[{closed_port}]"))
        .env("FLOWLENS_API__DISCOVERY__RATE_PER_SECOND", "1")
        .env("FLOWLENS_API__DISCOVERY__CONCURRENCY", "1")
        .env("FLOWLENS_API__DISCOVERY__ORPHANED_AFTER_SECONDS", "3")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let instance = Instance { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, _)) = http(port, "GET", "/api/v1/admin/health", &[], None).await {
            return instance;
        }
        assert!(
            Instant::now() < deadline,
            "instance on {port} never healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One HTTP/1.1 request: status and body (None when the connection fails).
async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    if !body.is_empty() {
        let _ = write!(
            head,
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.ok()?;
    s.write_all(body.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_owned()))
}

fn bearer(subject: &str, role: Role) -> String {
    format!("Bearer {}", TestApi::token_for(subject, role))
}

async fn call(
    i: &Instance,
    method: &str,
    path: &str,
    auth: (&str, &str),
    body: Option<Value>,
) -> (u16, Value) {
    let (s, b) = http(i.port, method, path, &[auth], body.as_ref())
        .await
        .unwrap_or_else(|| panic!("{method} {path} on {}: no answer", i.port));
    (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

/// Polls `done` every 50 ms; the time it took, or a panic after `limit`.
async fn within<F: AsyncFnMut() -> bool>(limit: Duration, what: &str, mut done: F) -> Duration {
    let start = Instant::now();
    loop {
        if done().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_instances_share_limits_revocations_caches_and_scans() {
    let mut redis = RedisServer::start().await;
    let (pool, url) = scratch_db("instances").await;
    let closed = free_port();
    let first = start(&url, &redis, closed).await;
    let second = start(&url, &redis, closed).await;

    // Rate limits: one caller's 40/minute is spent across both instances.
    let limited = bearer("limited", Role::Viewer);
    let auth = ("Authorization", limited.as_str());
    for n in 0..40 {
        let i = if n % 2 == 0 { &first } else { &second };
        let (s, v) = call(i, "GET", "/api/v1/assets", auth, None).await;
        assert_eq!(s, 200, "request {n}: {v}");
    }
    for i in [&first, &second] {
        let (s, v) = call(i, "GET", "/api/v1/assets", auth, None).await;
        assert_eq!(s, 429, "{v}");
    }

    // Revocation: a key used (and cached) on B, revoked through A.
    let admin = bearer("admin-keys", Role::Admin);
    let admin = ("Authorization", admin.as_str());
    let (s, created) = call(
        &first,
        "POST",
        "/api/v1/admin/api-keys",
        admin,
        Some(json!({"name": "dashboard", "role": "viewer"})),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let with_key = ("X-API-Key", key.as_str());
    assert_eq!(
        call(&second, "GET", "/api/v1/assets", with_key, None)
            .await
            .0,
        200
    );
    let ws_request = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut r = format!("ws://127.0.0.1:{}/api/v1/topology/ws", second.port)
            .into_client_request()
            .unwrap();
        r.headers_mut().insert("x-api-key", key.parse().unwrap());
        r
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request).await.unwrap();
    let id = created["id"].as_str().unwrap();
    let (s, _) = call(
        &first,
        "DELETE",
        &format!("/api/v1/admin/api-keys/{id}"),
        admin,
        None,
    )
    .await;
    assert_eq!(s, 204);
    let took = within(
        Duration::from_secs(1),
        "B refuses the revoked key",
        async || {
            call(&second, "GET", "/api/v1/assets", with_key, None)
                .await
                .0
                == 401
        },
    )
    .await;
    eprintln!("revocation reached the other instance in {took:?}");
    let closed_with = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => break Some(u16::from(f.code)),
                Some(Ok(_)) => {}
                _ => break None,
            }
        }
    })
    .await
    .expect("B closes the revoked key's WebSocket within a second");
    assert_eq!(closed_with, Some(1008));

    // Caches: B's topology (cached in Redis, shared) follows a write through A.
    let viewer = bearer("viewer-cache", Role::Viewer);
    let viewer = ("Authorization", viewer.as_str());
    let edges = async |i: &Instance| {
        let (s, v) = call(i, "GET", "/api/v1/topology", viewer, None).await;
        assert_eq!(s, 200, "{v}");
        v["edges"].as_array().unwrap().len()
    };
    assert_eq!(edges(&second).await, 0);
    let client = redis::Client::open(redis.url(3)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("flowlens:cache:*:topology:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the topology answer is in Redis");
    assert_eq!(
        edges(&first).await,
        0,
        "A answers from the shared entry too"
    );
    let editor = bearer("editor-cache", Role::Editor);
    let editor = ("Authorization", editor.as_str());
    let mut ids = Vec::new();
    for (name, ip) in [("web", "10.8.0.1"), ("db", "10.8.0.2")] {
        let (s, v) = call(
            &first,
            "POST",
            "/api/v1/assets",
            editor,
            Some(json!({"name": name, "ip_addresses": [ip]})),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let (s, v) = call(
        &first,
        "POST",
        "/api/v1/dependencies",
        editor,
        Some(json!({"source_asset_id": ids[0], "target_asset_id": ids[1], "protocol": 6, "port": 5432})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(edges(&first).await, 1, "A reads its own write at once");
    within(
        Duration::from_secs(1),
        "B shows A's new dependency",
        async || edges(&second).await == 1,
    )
    .await;

    // Scans: one running on A survives C starting; one whose instance dies is failed.
    let scanner = bearer("admin-scans", Role::Admin);
    let scanner = ("Authorization", scanner.as_str());
    let start_scan = async |on: &Instance| -> String {
        let (s, scan) = call(
            on,
            "POST",
            "/api/v1/discovery/scans",
            scanner,
            Some(json!({"cidr": "127.0.0.0/29"})),
        )
        .await;
        assert_eq!(s, 202, "{scan}");
        scan["id"].as_str().unwrap().to_owned()
    };
    let scan_id = start_scan(&first).await;
    let status = async |i: &Instance, id: &str| {
        let (s, v) = call(
            i,
            "GET",
            &format!("/api/v1/discovery/scans/{id}"),
            scanner,
            None,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        v["status"].as_str().unwrap().to_owned()
    };
    // (Polled in the database: the callers' rate limit is small here.)
    let in_db = async |id: &str| -> String {
        sqlx::query_scalar("SELECT status FROM discovery_scans WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let third = start(&url, &redis, closed).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(status(&third, &scan_id).await, "running");
    within(Duration::from_secs(20), "A's scan completes", async || {
        in_db(&scan_id).await == "completed"
    })
    .await;
    assert_eq!(status(&second, &scan_id).await, "completed");
    let doomed = start_scan(&first).await;
    drop(first);
    within(
        Duration::from_secs(10),
        "the dead instance's scan is failed",
        async || in_db(&doomed).await == "failed",
    )
    .await;
    let error: Option<String> =
        sqlx::query_scalar("SELECT error FROM discovery_scans WHERE id = $1::uuid")
            .bind(&doomed)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(error.unwrap().contains("stopped"));

    // Redis goes away: requests still succeed from memory, health says so, and the
    // fallback is counted; when it is back, health is healthy again.
    redis.stop();
    let reader = bearer("reader-outage", Role::Viewer);
    let reader = ("Authorization", reader.as_str());
    for _ in 0..5 {
        assert_eq!(
            call(&second, "GET", "/api/v1/topology", reader, None)
                .await
                .0,
            200
        );
        assert_eq!(
            call(&second, "GET", "/api/v1/assets?q=web", reader, None)
                .await
                .0,
            200
        );
    }
    let health = async |i: &Instance| {
        let (_, v) = http(i.port, "GET", "/api/v1/admin/health", &[], None)
            .await
            .unwrap();
        serde_json::from_str::<Value>(&v).unwrap()
    };
    within(
        Duration::from_secs(5),
        "health reports the outage",
        async || {
            let h = health(&second).await;
            h["checks"]["redis"] == "unavailable: using memory" && h["status"] == "degraded"
        },
    )
    .await;
    let (s, metrics) = call(&second, "GET", "/api/v1/admin/metrics", reader, None).await;
    assert_eq!(s, 200);
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains(r#"flowlens_api_redis_fallbacks_total{use="rate_limit"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"flowlens_api_redis_fallbacks_total{use="cache"}"#));
    redis.restart().await;
    within(
        Duration::from_secs(10),
        "health sees Redis back",
        async || health(&second).await["checks"]["redis"] == "ok",
    )
    .await;
    drop((second, third));
}
