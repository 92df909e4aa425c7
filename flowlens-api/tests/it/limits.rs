//! What an anonymous or greedy client can hold of the server, over real sockets:
//! slow headers, connections, requests in progress, time, and requests per address.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use flowlens_api::auth::Role;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::TestApi;

/// Serves the app through the production listener on 127.0.0.1.
async fn serve(api: &TestApi) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = api.app.clone();
    let config = api.state.config.api.clone();
    tokio::spawn(async move {
        flowlens_api::server::serve(listener, app, &config, std::future::pending()).await;
    });
    addr
}

/// One HTTP/1.1 request on a fresh connection: status and body.
async fn request(addr: std::net::SocketAddr, head: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out))
        .await
        .expect("an answer within 15 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (
        status,
        text.split_once("\r\n\r\n")
            .map(|x| x.1.to_owned())
            .unwrap_or_default(),
    )
}

fn get(path: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n")
}

/// Reads until the server closes; how long that took.
async fn until_closed(s: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0_u8; 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the server closes the connection within 10 s");
        if matches!(read, Ok(0) | Err(_)) {
            return start.elapsed();
        }
    }
}

#[tokio::test]
async fn slow_headers_and_extra_connections_are_closed() {
    let api = TestApi::with("limits_conns", |c| {
        c.api.limits.header_read_timeout_seconds = 1;
        c.api.limits.max_connections = 3;
    })
    .await;
    let addr = serve(&api).await;
    // Half a request head, then nothing: closed at the header timeout.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /api/v1/admin/health HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let held = until_closed(&mut slow).await;
    assert!(held < Duration::from_secs(4), "{held:?}");

    // Three idle connections fill the server; a fourth is closed on arrival...
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let _ = extra
        .write_all(get("/api/v1/admin/health", None).as_bytes())
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut out)).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    // ...and the idle ones are closed at the header timeout too, which frees the slots.
    for s in &mut idle {
        let held = until_closed(s).await;
        assert!(held < Duration::from_secs(4), "{held:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(get("/api/v1/admin/health", None).as_bytes())
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        if String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the slots never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = api.get("/api/v1/admin/metrics").await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("flowlens_api_connections_refused_total")
    );
}

/// Anonymous requests are limited by address before any credential is looked at (a
/// flood of made-up API keys gets 429, not a query each), and health, open to all,
/// asks PostgreSQL at most once a second however often it is called.
#[tokio::test]
async fn anonymous_callers_are_limited_before_authentication() {
    let api = TestApi::with("limits_address", |c| {
        c.api.rate_limiting.enabled = true;
        c.api.rate_limiting.default_limit = "10000/minute".into();
        c.api.rate_limiting.burst_limit = "10000/second".into();
        c.api.rate_limiting.per_address_limit = "30/minute".into();
        c.api.rate_limiting.per_address_burst = "30/second".into();
    })
    .await;
    let addr = serve(&api).await;
    let mut statuses = Vec::new();
    for i in 0..40 {
        let key = format!("flk_{i:064x}");
        let head = format!(
            "GET /api/v1/assets HTTP/1.1\r\nHost: t\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
        );
        statuses.push(request(addr, &head).await.0);
    }
    assert!(statuses[..30].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[30..].iter().all(|s| *s == 429), "{statuses:?}");
    // Health is behind the same limit.
    assert_eq!(
        request(addr, &get("/api/v1/admin/health", None)).await.0,
        429
    );

    // In-process calls (no peer address) are not limited by address: health 200 times.
    let probes_before = api.state.health.lock().await.sent;
    let calls = (0..200).map(|_| api.get_as(Role::Viewer, "/api/v1/admin/health", StatusCode::OK));
    futures_util::future::join_all(calls).await;
    let probes = api.state.health.lock().await.sent - probes_before;
    assert!(probes <= 2, "{probes} probes for 200 health checks");
}

/// A PATCH of asset `a` (which the test keeps locked), answered in the background.
fn stuck_patch(
    addr: std::net::SocketAddr,
    a: &str,
) -> tokio::task::JoinHandle<((u16, String), Duration)> {
    let editor = TestApi::token(Role::Editor);
    let body = r#"{"name":"renamed"}"#;
    let patch = format!(
        "PATCH /api/v1/assets/{a} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {editor}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        let start = Instant::now();
        let answer = request(addr, &patch).await;
        (answer, start.elapsed())
    })
}

/// Locks asset `a` in a transaction of the test's own.
async fn hold(api: &TestApi, a: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = api.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM assets WHERE id = $1 FOR UPDATE")
        .bind(a.parse::<uuid::Uuid>().unwrap())
        .execute(&mut *holder)
        .await
        .unwrap();
    holder
}

#[tokio::test]
async fn a_request_over_its_deadline_is_answered_503() {
    let api = TestApi::with("limits_deadline", |c| {
        c.api.limits.statement_timeout_seconds = 60;
        c.api.limits.request_timeout_seconds = 1;
    })
    .await;
    let addr = serve(&api).await;
    let a = api.asset("a", &["10.7.1.1"]).await;
    let holder = hold(&api, &a).await;
    let ((status, body), took) = stuck_patch(addr, &a).await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("request_timeout_seconds"), "{body}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    holder.rollback().await.unwrap();
    // The abandoned request wrote nothing.
    let v = api.get(&format!("/api/v1/assets/{a}")).await;
    assert_eq!(v["name"], "a");
}

/// A request stuck behind a lock: the statement timeout ends its query (503, and the
/// pooled connection is free again), the request timeout ends requests that wait on
/// anything else, and requests over `max_concurrent_requests` are refused at once
/// while health still answers.
#[tokio::test]
async fn stuck_requests_time_out_and_excess_ones_are_shed() {
    let api = TestApi::with("limits_time", |c| {
        c.api.limits.statement_timeout_seconds = 1;
        c.api.limits.request_timeout_seconds = 3;
        c.api.limits.max_concurrent_requests = 1;
    })
    .await;
    let addr = serve(&api).await;
    let a = api.asset("a", &["10.7.0.1"]).await;
    let holder = hold(&api, &a).await;
    let stuck = stuck_patch(addr, &a);
    // While it waits, another request is shed; health is not.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let viewer = TestApi::token(Role::Viewer);
    let (s, body) = request(addr, &get("/api/v1/assets", Some(&viewer))).await;
    assert_eq!(s, 429, "{body}");
    assert!(body.contains("max_concurrent_requests"), "{body}");
    assert_eq!(
        request(addr, &get("/api/v1/admin/health", None)).await.0,
        200
    );
    let ((status, body), took) = stuck.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("statement_timeout"), "{body}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    holder.rollback().await.unwrap();
}

/// One client address holds at most `max_connections_per_address` connections, and a
/// client that stops reading loses its connection at the write deadline instead of
/// holding it (and its slot) forever.
#[tokio::test]
async fn one_address_cannot_hold_every_connection_or_stall_a_response() {
    let api = TestApi::with("limits_per_address", |c| {
        c.api.limits.max_connections = 100;
        c.api.limits.max_connections_per_address = 2;
        c.api.limits.write_timeout_seconds = 1;
    })
    .await;
    let addr = serve(&api).await;
    let first = TcpStream::connect(addr).await.unwrap();
    let second = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third
        .write_all(get("/api/v1/admin/health", None).as_bytes())
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut out)).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    drop((first, second));

    // A client asking for 200 copies of the OpenAPI document and reading nothing.
    let token = TestApi::token(Role::Viewer);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stalled = loop {
        // The two idle connections above may take a moment to be given back.
        match tokio::net::TcpSocket::new_v4()
            .and_then(|s| {
                s.set_recv_buffer_size(4096)?;
                Ok(s)
            })
            .unwrap()
            .connect(addr)
            .await
        {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let one = format!(
        "GET /api/v1/openapi.json HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let requests = one.repeat(200);
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        stalled.write_all(requests.as_bytes()),
    )
    .await;
    // Past the write deadline the server has given up on this client.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut got)).await;
    let answers = String::from_utf8_lossy(&got)
        .matches("HTTP/1.1 200")
        .count();
    assert!(
        answers < 200,
        "all {answers} answers were written to a client that stalled"
    );
}
