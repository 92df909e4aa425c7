use std::time::{Duration, SystemTime};

use axum::http::{Method, Request, StatusCode, header};
use flowlens_api::auth::{Role, issue_token};
use serde_json::json;

use crate::support::{SECRET, TestApi};

#[tokio::test]
async fn only_health_is_open_and_tokens_are_checked() {
    let api = TestApi::new("auth_tokens").await;
    let (s, _, v) = api
        .call(Method::GET, "/api/v1/admin/health", None, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["checks"]["postgresql"], "ok");
    assert_eq!(v["checks"]["kafka"], "not_configured");

    let expired = issue_token(
        SECRET,
        "old",
        Role::Admin,
        SystemTime::now() - Duration::from_secs(7200),
        Duration::from_secs(3600),
    )
    .unwrap();
    let forged = issue_token(
        "someone-elses-secret-123",
        "m",
        Role::Admin,
        SystemTime::now(),
        Duration::from_secs(60),
    )
    .unwrap();
    // Every route the document lists, health aside.
    let doc = api.get("/api/v1/openapi.json").await;
    let mut routes: Vec<(Method, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if path == "/api/v1/admin/health" {
                continue;
            }
            let uri = path.replace("{id}", &uuid::Uuid::new_v4().to_string());
            routes.push((method.to_uppercase().parse().unwrap(), uri));
        }
    }
    assert!(routes.len() > 30, "{routes:?}");
    for (method, uri) in &routes {
        for (token, needle) in [
            (None, "missing credentials"),
            (Some(expired.as_str()), "expired"),
            (Some(forged.as_str()), "invalid token"),
            (Some("garbage"), "invalid token"),
        ] {
            let body = (*method != Method::GET).then(|| json!({}));
            let (s, h, v) = api.call(method.clone(), uri, token, body).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri} {token:?}");
            assert!(h.contains_key(header::WWW_AUTHENTICATE));
            assert!(v["detail"].as_str().unwrap().contains(needle), "{uri}: {v}");
        }
    }
}

#[tokio::test]
async fn role_boundaries() {
    let api = TestApi::new("auth_roles").await;
    let web = api.asset("web", &["10.0.1.1"]).await;
    let viewer = TestApi::token(Role::Viewer);
    let editor = TestApi::token(Role::Editor);
    let admin = TestApi::token(Role::Admin);
    let new_asset = || Some(json!({"name": "x", "ip_addresses": []}));
    let cases: Vec<(Method, String, Option<serde_json::Value>, &str, StatusCode)> = vec![
        (
            Method::GET,
            "/api/v1/assets".into(),
            None,
            &viewer,
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/assets".into(),
            new_asset(),
            &viewer,
            StatusCode::FORBIDDEN,
        ),
        (
            Method::PATCH,
            format!("/api/v1/assets/{web}"),
            Some(json!({"name": "y"})),
            &viewer,
            StatusCode::FORBIDDEN,
        ),
        (
            Method::DELETE,
            format!("/api/v1/assets/{web}"),
            None,
            &viewer,
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/api/v1/dependencies".into(),
            Some(json!({})),
            &viewer,
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            "/api/v1/admin/metrics".into(),
            None,
            &viewer,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/admin/config".into(),
            None,
            &viewer,
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            "/api/v1/admin/config".into(),
            None,
            &editor,
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            "/api/v1/admin/api-keys".into(),
            None,
            &editor,
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/api/v1/assets".into(),
            new_asset(),
            &editor,
            StatusCode::CREATED,
        ),
        (
            Method::GET,
            "/api/v1/admin/config".into(),
            None,
            &admin,
            StatusCode::OK,
        ),
        (
            Method::PATCH,
            format!("/api/v1/assets/{web}"),
            Some(json!({"name": "z"})),
            &admin,
            StatusCode::OK,
        ),
    ];
    for (method, uri, body, token, want) in cases {
        let (s, _, v) = api.call(method.clone(), &uri, Some(token), body).await;
        assert_eq!(s, want, "{method} {uri}: {v}");
        if s == StatusCode::FORBIDDEN {
            assert!(v["detail"].as_str().unwrap().contains("role"), "{v}");
        }
    }
    // The admin's patch is recorded under the admin's name.
    let actor: String = sqlx::query_scalar(
        "SELECT actor FROM audit_logs WHERE action = 'update' AND entity_id = $1::uuid",
    )
    .bind(&web)
    .fetch_one(&api.pool)
    .await
    .unwrap();
    assert_eq!(actor, "admin");
}

#[tokio::test]
async fn api_keys_work_until_revoked() {
    let api = TestApi::new("auth_keys").await;
    let admin = TestApi::token(Role::Admin);
    let (s, _, created) = api
        .call(
            Method::POST,
            "/api/v1/admin/api-keys",
            Some(&admin),
            Some(json!({"name": "ci", "role": "editor"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("flk_"));
    let with_key = |method: Method, uri: &str, body: Option<serde_json::Value>| {
        let mut r = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-api-key", &key);
        if body.is_some() {
            r = r.header(header::CONTENT_TYPE, "application/json");
        }
        r.body(axum::body::Body::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        ))
        .unwrap()
    };
    let (s, _, v) = api
        .send(with_key(
            Method::POST,
            "/api/v1/assets",
            Some(json!({"name": "from-ci"})),
        ))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // An editor key is not an admin.
    assert_eq!(
        api.send(with_key(Method::GET, "/api/v1/admin/config", None))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // Bearer works too.
    let (s, _, _) = api
        .call(Method::GET, "/api/v1/assets", Some(&key), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let listed = api
        .get_as(Role::Admin, "/api/v1/admin/api-keys", StatusCode::OK)
        .await;
    assert_eq!(listed[0]["name"], "ci");
    assert!(listed[0]["last_used_at"].is_string());
    assert!(
        !listed.to_string().contains(&key),
        "the key is never listed"
    );
    let actor: String =
        sqlx::query_scalar("SELECT actor FROM audit_logs WHERE entity_type = 'asset'")
            .fetch_one(&api.pool)
            .await
            .unwrap();
    assert_eq!(actor, "key:ci");

    let id = created["id"].as_str().unwrap();
    let (s, _, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/admin/api-keys/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, v) = api
        .send(with_key(Method::GET, "/api/v1/assets", None))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, _, v) = api.call(Method::GET, "/api/v1/assets", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, _, _) = api
        .call(
            Method::POST,
            "/api/v1/admin/api-keys",
            Some(&admin),
            Some(json!({"name": "x", "role": "root"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn rate_limits_per_caller_with_retry_after() {
    let api = TestApi::with("auth_rate", |c| {
        c.api.rate_limiting.enabled = true;
        c.api.rate_limiting.default_limit = "5/minute".into();
        c.api.rate_limiting.burst_limit = "3/second".into();
    })
    .await;
    let alice = TestApi::token_for("alice", Role::Viewer);
    let bob = TestApi::token_for("bob", Role::Viewer);
    for _ in 0..3 {
        let (s, _, _) = api
            .call(Method::GET, "/api/v1/assets", Some(&alice), None)
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, h, v) = api
        .call(Method::GET, "/api/v1/assets", Some(&alice), None)
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    let retry: u64 = h[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Bob has his own budget; health is never limited.
    let (s, _, _) = api
        .call(Method::GET, "/api/v1/assets", Some(&bob), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    for _ in 0..10 {
        let (s, _, _) = api
            .call(Method::GET, "/api/v1/admin/health", None, None)
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    // After the burst window, alice gets the rest of her 5/minute, then waits.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..2 {
        let (s, _, _) = api
            .call(Method::GET, "/api/v1/assets", Some(&alice), None)
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, h, _) = api
        .call(Method::GET, "/api/v1/assets", Some(&alice), None)
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = h[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!(retry > 1 && retry <= 12, "sustained wait {retry}");
    let metrics = api
        .get_as(Role::Admin, "/api/v1/admin/metrics", StatusCode::OK)
        .await;
    let text = metrics.as_str().unwrap();
    assert!(text.contains("flowlens_api_rate_limited_total"), "{text}");
}

/// A key's audit actor is `key:<name>`: the longest name allowed still fits
/// `audit_logs.actor`, so every write it makes is recorded; a longer name is refused
/// at creation (it used to make every write of the key fail).
#[tokio::test]
async fn the_longest_key_name_still_writes() {
    let api = TestApi::new("key_name_bound").await;
    let admin = TestApi::token(Role::Admin);
    let name = |n: usize| "\u{e9}".repeat(n);
    let max = flowlens_api::auth::MAX_KEY_NAME_CHARS;
    let (s, _, v) = api
        .call(
            Method::POST,
            "/api/v1/admin/api-keys",
            Some(&admin),
            Some(json!({"name": name(max + 1), "role": "editor"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, _, created) = api
        .call(
            Method::POST,
            "/api/v1/admin/api-keys",
            Some(&admin),
            Some(json!({"name": name(max), "role": "editor"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap();
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/assets")
        .header("x-api-key", key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(
            json!({"name": "by-key", "ip_addresses": ["10.7.0.1"]}).to_string(),
        ))
        .unwrap();
    let (s, _, v) = api.send(req).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// Every answer says nosniff and, unless cacheable on purpose, no-store (a new key's
/// secret must not sit in a proxy or browser cache); a `?token=` opens only the
/// WebSocket route, never an ordinary one (URLs end up in logs and histories).
#[tokio::test]
async fn secrets_are_never_cached_and_query_tokens_open_only_the_websocket() {
    let api = TestApi::new("auth_headers").await;
    let admin = TestApi::token(Role::Admin);
    let (s, h, created) = api
        .call(
            Method::POST,
            "/api/v1/admin/api-keys",
            Some(&admin),
            Some(json!({"name": "ci", "role": "viewer"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    for (uri, token, expect) in [
        ("/api/v1/admin/health", None, StatusCode::OK),
        ("/no/such/route", None, StatusCode::NOT_FOUND),
        ("/api/v1/assets", None, StatusCode::UNAUTHORIZED),
        ("/api/v1/admin/config", Some(admin.as_str()), StatusCode::OK),
        (
            "/api/v1/topology/export?format=mermaid",
            Some(admin.as_str()),
            StatusCode::OK,
        ),
    ] {
        let (s, h, v) = api.call(Method::GET, uri, token, None).await;
        assert_eq!(s, expect, "{uri}: {v}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
        assert_eq!(h[header::CACHE_CONTROL], "no-store", "{uri}");
    }
    let viewer = TestApi::token(Role::Viewer);
    for uri in [
        format!("/api/v1/assets?token={viewer}"),
        format!("/api/v1/admin/api-keys?token={admin}"),
        format!("/api/v1/topology?token={viewer}"),
    ] {
        let (s, _, v) = api.call(Method::GET, &uri, None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}: {v}");
        assert!(
            v["detail"].as_str().unwrap().contains("only on"),
            "{uri}: {v}"
        );
    }
}

/// Unauthenticated (a lab API on loopback), a request naming another host is refused:
/// a web page reaching 127.0.0.1 through DNS rebinding sends its own name in Host.
#[tokio::test]
async fn unauthenticated_apis_answer_only_requests_naming_a_local_host() {
    let api = TestApi::with("auth_off_rebinding", |c| {
        c.api.auth.enabled = false;
        c.api.host = "127.0.0.1".to_owned();
    })
    .await;
    let get = |host: &str| {
        Request::builder()
            .uri("/api/v1/assets")
            .header(header::HOST, host)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let (s, _, v) = api.send(get("rebind.evil.example:8000")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    for host in ["127.0.0.1:8000", "localhost:8000", "[::1]:8000"] {
        let (s, _, v) = api.send(get(host)).await;
        assert_eq!(s, StatusCode::OK, "{host}: {v}");
    }
}
