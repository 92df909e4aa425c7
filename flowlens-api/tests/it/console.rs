//! What the web console needs from the server: its files at `/` with their headers
//! (CSP, caching, gzip, content types), `/session`, an asset's hourly traffic, and the
//! WebSocket credential carried as a subprotocol.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use flowlens_api::auth::Role;
use flowlens_api::console::CONTENT_SECURITY_POLICY;

use crate::support::TestApi;

async fn fetch(
    api: &TestApi,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = api
        .app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let h = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, h, body)
}

/// A new viewer API key named `name`.
async fn viewer_key(api: &TestApi, name: &str) -> String {
    api.call(
        Method::POST,
        "/api/v1/admin/api-keys",
        Some(&TestApi::token(Role::Admin)),
        Some(json!({"name": name, "role": "viewer"})),
    )
    .await
    .2["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_console_is_served_with_its_headers_and_no_credential() {
    let api = TestApi::new("console_files").await;
    let (s, h, body) = fetch(&api, "/", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    let page = String::from_utf8(body).unwrap();
    // No inline script: every <script> names its file.
    for tag in page.split("<script").skip(1) {
        let head = tag.split('>').next().unwrap_or("");
        assert!(head.contains("src=\"/"), "an inline script: {page}");
    }
    assert!(!page.contains(" style=\""), "no inline style: {page}");
    if !flowlens_api::console::embedded() {
        // Built without Node: the page says how to get the console.
        assert!(page.contains("cargo xtask build-console"), "{page}");
        return;
    }
    // The page names its hashed script and stylesheet; both are served, kept a
    // year, with their types, and gzipped for clients that take it.
    let script = page
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let style = page
        .split("rel=\"stylesheet\"")
        .nth(1)
        .and_then(|s| s.split("href=\"").nth(1))
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    assert!(script.starts_with("/assets/main-"), "{script}");
    let (s, h, plain) = fetch(&api, &script, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    assert_eq!(
        h[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(h[header::VARY], "Accept-Encoding");
    assert!(h.get(header::CONTENT_ENCODING).is_none());
    let plain_etag = h[header::ETAG].to_str().unwrap().to_owned();
    let (s, h, gz) = fetch(&api, &script, &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_ENCODING], "gzip");
    // Other bytes, another strong tag; each revalidates, weakly compared too.
    let gz_etag = h[header::ETAG].to_str().unwrap().to_owned();
    assert_ne!(gz_etag, plain_etag);
    let weak = format!("W/{gz_etag}");
    let (s, _, _) = fetch(
        &api,
        &script,
        &[("accept-encoding", "gzip"), ("if-none-match", &weak)],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    let (s, _, _) = fetch(&api, &script, &[("if-none-match", &gz_etag)]).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the gzip tag does not match the plain bytes"
    );
    assert!(
        gz.len() * 2 < plain.len(),
        "{} vs {}",
        gz.len(),
        plain.len()
    );
    let (_, h, _) = fetch(&api, &script, &[("accept-encoding", "gzip;q=0")]).await;
    assert!(
        h.get(header::CONTENT_ENCODING).is_none(),
        "q=0 refuses gzip"
    );
    let (s, h, _) = fetch(&api, &style, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "text/css; charset=utf-8");
    // The page revalidates: its ETag answers 304.
    let (_, h, _) = fetch(&api, "/", &[]).await;
    let etag = h[header::ETAG].to_str().unwrap().to_owned();
    let (s, _, body) = fetch(&api, "/", &[("if-none-match", &etag)]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    // Unknown files are 404, and nothing outside the bundle is reachable.
    for uri in [
        "/assets/nope.js",
        "/assets/../../Cargo.toml",
        "/assets/%2e%2e/index.html",
    ] {
        let (s, _, _) = fetch(&api, uri, &[]).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
    }
    // HEAD works for the page.
    let res = api
        .app
        .clone()
        .oneshot(
            Request::builder()
                .method(Method::HEAD)
                .uri("/")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn session_says_who_the_caller_is() {
    let api = TestApi::new("console_session").await;
    let v = api
        .get_as(Role::Editor, "/api/v1/session", StatusCode::OK)
        .await;
    assert_eq!(v["role"], "editor");
    assert_eq!(v["credential"], "token");
    assert!(v["expires_at"].as_str().is_some(), "{v}");
    let key = viewer_key(&api, "console").await;
    let (s, _, v) = api
        .send(
            Request::builder()
                .uri("/api/v1/session")
                .header("x-api-key", &key)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            v["subject"].as_str(),
            v["role"].as_str(),
            v["credential"].as_str()
        ),
        (Some("key:console"), Some("viewer"), Some("api_key"))
    );
    assert!(v["expires_at"].is_null());
    let (s, _, _) = api
        .call(Method::GET, "/api/v1/session", Some("not-a-token"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn asset_traffic_is_hourly_per_direction_and_dependency() {
    let api = TestApi::new("console_traffic").await;
    let web = api.asset("web", &["10.8.0.1"]).await;
    let db = api.asset("db", &["10.8.0.2"]).await;
    let client = api.asset("client", &["10.8.0.3"]).await;
    let to_db = api.dependency(&web, &db, 5432).await;
    let from_client = api.dependency(&client, &web, 443).await;
    // flow_stats as the daemon writes it (5-minute windows), placed relative to the
    // first bucket the API will use (the UTC hour 23 hours back): two windows in the
    // current hour, one five hours before it, one two days ago (outside), and an
    // inbound one an hour before. Should the hour turn between here and the request,
    // the whole thing is done again.
    let v = loop {
        sqlx::query("DELETE FROM flow_stats")
            .execute(&api.pool)
            .await
            .unwrap();
        let now = chrono::Utc::now();
        let hour = now.timestamp() - now.timestamp().rem_euclid(3600);
        let start = chrono::DateTime::from_timestamp(hour - 23 * 3600, 0).unwrap();
        let at = |h: i64, m: i64| start + chrono::Duration::minutes(h * 60 + m);
        for (time, s, t, port, flows, bytes) in [
            (at(23, 0), &web, &db, 5432, 2, 1000),
            (at(23, 5), &web, &db, 5432, 1, 500),
            (at(18, 0), &web, &db, 5432, 1, 300),
            (at(-25, 0), &web, &db, 5432, 1, 99_999),
            (at(22, 0), &client, &web, 443, 3, 7000),
        ] {
            sqlx::query(
                "INSERT INTO flow_stats (time, source_asset_id, target_asset_id, protocol,
                                         port, flow_count, byte_count, packet_count)
                 VALUES ($1, $2::uuid, $3::uuid, 6, $4, $5, $6, 1)",
            )
            .bind(time)
            .bind(s)
            .bind(t)
            .bind(port)
            .bind(flows)
            .bind(i64::from(bytes))
            .execute(&api.pool)
            .await
            .unwrap();
        }
        let v = api.get(&format!("/api/v1/assets/{web}/traffic")).await;
        if v["start"]
            .as_str()
            .and_then(|s| s.parse::<chrono::DateTime<chrono::Utc>>().ok())
            == Some(start)
        {
            break v;
        }
    };
    let series = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    let out = series(&v["outbound_bytes"]);
    let inn = series(&v["inbound_bytes"]);
    assert_eq!(out.len(), 24);
    assert_eq!(
        (out[23], out[18], out.iter().sum::<i64>()),
        (1500, 300, 1800)
    );
    assert_eq!((inn[22], inn.iter().sum::<i64>()), (7000, 7000));
    assert_eq!(v["bucket_seconds"], 3600);
    let deps = v["dependencies"].as_array().unwrap();
    assert_eq!(deps.len(), 2);
    // Busiest first.
    assert_eq!(deps[0]["dependency_id"], from_client);
    assert_eq!(deps[0]["outbound"], false);
    assert_eq!(deps[1]["dependency_id"], to_db);
    assert_eq!(deps[1]["outbound"], true);
    assert_eq!(series(&deps[1]["flows"])[23], 3);
    // Unknown asset: 404.
    let (s, _, _) = api
        .call(
            Method::GET,
            &format!("/api/v1/assets/{}/traffic", uuid::Uuid::new_v4()),
            Some(&TestApi::token(Role::Viewer)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_websocket_takes_its_credential_as_a_subprotocol() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let api = TestApi::new("console_ws").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = api.app.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let key = viewer_key(&api, "ws").await;
    let url = format!("ws://{addr}/api/v1/topology/ws");
    for credential in [key.clone(), TestApi::token(Role::Viewer)] {
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("flowlens.v1, bearer.{credential}").parse().unwrap(),
        );
        let (mut ws, res) = tokio_tungstenite::connect_async(req).await.unwrap();
        // The console's protocol is selected; the credential is never echoed.
        assert_eq!(res.headers()["sec-websocket-protocol"], "flowlens.v1");
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let hello: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
        assert_eq!(hello["type"], "hello");
    }
    // Without flowlens.v1 the bearer.* protocol is not read as a credential, and it is
    // read on no other path.
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("bearer.{key}").parse().unwrap(),
    );
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let (s, _, _) = api
        .send(
            Request::builder()
                .uri("/api/v1/assets")
                .header(
                    "sec-websocket-protocol",
                    format!("flowlens.v1, bearer.{key}"),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
