use std::time::Duration;

use flowlens_api::auth::Role;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::TestApi;

/// Serves the app on 127.0.0.1 at a port the OS picks.
async fn serve(api: &TestApi) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = api.app.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The next text message, as JSON, within 10 s.
async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test]
async fn pushes_change_events_and_limits_connections() {
    let api = TestApi::with("ws", |c| {
        c.api.websocket.max_connections = 1;
        c.api.websocket.ping_interval_seconds = 1;
    })
    .await;
    let addr = serve(&api).await;
    let token = TestApi::token(Role::Viewer);
    let url = format!("ws://{addr}/api/v1/topology/ws?token={token}");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    // The first message after LISTEN may be the feed's own resync; skip it.

    // A change event written the way the daemon writes it.
    let entity = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO change_events (change_type, entity_type, entity_id, after_state)
         VALUES ('new_dependency', 'dependency', $1, '{}')",
    )
    .bind(entity)
    .execute(&api.pool)
    .await
    .unwrap();
    let change = loop {
        let m = next_json(&mut ws).await;
        if m["type"] == "change" {
            break m;
        }
        assert_eq!(m["type"], "resync", "{m}");
    };
    assert_eq!(change["event"]["entity_id"], entity.to_string());
    assert_eq!(change["event"]["change_type"], "new_dependency");
    // An API edit is pushed too.
    let id = api.asset("pushed", &["10.1.1.1"]).await;
    let m = next_json(&mut ws).await;
    assert_eq!(
        (
            m["event"]["entity_id"].as_str(),
            m["event"]["change_type"].as_str()
        ),
        (Some(id.as_str()), Some("new_asset"))
    );

    // One connection is the limit here.
    let err = tokio_tungstenite::connect_async(&url).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 503),
        other => panic!("{other}"),
    }
    // The server pings every second; the client answers (tungstenite does while we
    // read), so after three seconds the socket still delivers.
    let mut pinged = false;
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(msg) = tokio::time::timeout_at(until, ws.next()).await {
        if let Message::Ping(_) = msg.unwrap().unwrap() {
            pinged = true;
        }
    }
    let entity = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO change_events (change_type, entity_type, entity_id) VALUES ('asset_changed', 'asset', $1)",
    )
    .bind(entity)
    .execute(&api.pool)
    .await
    .unwrap();
    let m = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match msg {
            Message::Ping(_) => pinged = true,
            Message::Text(t) => break serde_json::from_str::<Value>(&t).unwrap(),
            _ => {}
        }
    };
    assert!(pinged, "the server pings");
    assert_eq!(m["event"]["entity_id"], entity.to_string());
    ws.send(Message::Close(None)).await.unwrap();
    // The slot is given back: a new connection is accepted.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok(_) => break,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the slot was not released: {e}"),
        }
    }
    // Without a token: 401.
    let err = tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/topology/ws"))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 401),
        other => panic!("{other}"),
    }
}

/// A handshake request for `url` with extra headers.
fn handshake(
    url: &str,
    headers: &[(&str, &str)],
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut r = url.into_client_request().unwrap();
    for (k, v) in headers {
        r.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    r
}

fn http_status(e: tokio_tungstenite::tungstenite::Error) -> u16 {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => r.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// Reads until the server's close frame (10 s at most) and returns its code.
async fn close_code<S>(ws: &mut S) -> u16
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the server closes within 10 s");
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(Message::Close(None))) | None => panic!("closed without a code"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn clients_may_not_send_data_hold_every_slot_or_come_from_another_origin() {
    let api = TestApi::with("ws_limits", |c| {
        c.api.websocket.max_connections = 10;
        c.api.websocket.max_connections_per_caller = 2;
    })
    .await;
    let addr = serve(&api).await;
    let alice = TestApi::token_for("alice", Role::Viewer);
    let url = format!("ws://{addr}/api/v1/topology/ws?token={alice}");
    let (mut a1, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut a2, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    // A third socket of the same caller is refused; another caller still gets one.
    let e = tokio_tungstenite::connect_async(&url).await.unwrap_err();
    assert_eq!(http_status(e), 429);
    let bob = TestApi::token_for("bob", Role::Viewer);
    let bob_url = format!("ws://{addr}/api/v1/topology/ws?token={bob}");
    let (mut b1, _) = tokio_tungstenite::connect_async(&bob_url).await.unwrap();

    // Data from a client closes its socket with 1008 (policy).
    assert_eq!(next_json(&mut a1).await["type"], "hello");
    a1.send(Message::Text("hello server".into())).await.unwrap();
    assert_eq!(close_code(&mut a1).await, 1008);
    // A frame over the limit: 1009 (too big), or the connection is dropped before the
    // close frame is read; either way the socket ends.
    assert_eq!(next_json(&mut a2).await["type"], "hello");
    let big = vec![0_u8; 64 * 1024];
    let _ = a2.send(Message::Binary(big.into())).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match a2.next().await {
                Some(Ok(Message::Close(Some(f)))) => break Some(u16::from(f.code)),
                Some(Err(_) | Ok(Message::Close(None))) | None => break None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the oversized socket ends");
    assert!(matches!(ended, Some(1009) | None), "{ended:?}");
    // Both of alice's slots are given back.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut reopened = Vec::new();
    while reopened.len() < 2 {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((s, _)) => reopened.push(s),
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("alice's slots were not released: {e}"),
        }
    }

    // A page of another origin is refused; the API's own origin is not.
    let e = tokio_tungstenite::connect_async(handshake(
        &bob_url,
        &[("origin", "https://evil.example")],
    ))
    .await
    .unwrap_err();
    assert_eq!(http_status(e), 403);
    let own = format!("http://{addr}");
    let (mut b2, _) =
        tokio_tungstenite::connect_async(handshake(&bob_url, &[("origin", own.as_str())]))
            .await
            .unwrap();
    assert_eq!(next_json(&mut b2).await["type"], "hello");
    assert_eq!(next_json(&mut b1).await["type"], "hello");

    let metrics = api
        .get_as(
            Role::Viewer,
            "/api/v1/admin/metrics",
            axum::http::StatusCode::OK,
        )
        .await;
    let text = metrics.as_str().unwrap();
    for needle in [
        r#"flowlens_api_websocket_refused_total{reason="per_caller"}"#,
        r#"flowlens_api_websocket_refused_total{reason="origin"}"#,
        r#"flowlens_api_websocket_closed_total{reason="client_data"}"#,
    ] {
        assert!(text.contains(needle), "{needle}");
    }
}

#[tokio::test]
async fn a_socket_lives_no_longer_than_its_credential() {
    let api = TestApi::new("ws_credentials").await;
    let addr = serve(&api).await;
    // A token that expires in two seconds.
    let short = flowlens_api::auth::issue_token(
        crate::support::SECRET,
        "brief",
        Role::Viewer,
        std::time::SystemTime::now(),
        Duration::from_secs(2),
    )
    .unwrap();
    let (mut brief, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/topology/ws?token={short}"))
            .await
            .unwrap();
    // An API key, revoked while its socket is open.
    let admin = TestApi::token(Role::Admin);
    let (_, _, created) = api
        .call(
            axum::http::Method::POST,
            "/api/v1/admin/api-keys",
            Some(&admin),
            Some(serde_json::json!({"name": "dash", "role": "viewer"})),
        )
        .await;
    let key = created["key"].as_str().unwrap();
    let url = format!("ws://{addr}/api/v1/topology/ws");
    let (mut keyed, _) = tokio_tungstenite::connect_async(handshake(&url, &[("x-api-key", key)]))
        .await
        .unwrap();
    assert_eq!(next_json(&mut keyed).await["type"], "hello");
    let started = std::time::Instant::now();
    assert_eq!(close_code(&mut brief).await, 1008);
    assert!(started.elapsed() < Duration::from_secs(5));
    let id = created["id"].as_str().unwrap();
    let (s, _, _) = api
        .call(
            axum::http::Method::DELETE,
            &format!("/api/v1/admin/api-keys/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, axum::http::StatusCode::NO_CONTENT);
    let revoked = std::time::Instant::now();
    assert_eq!(close_code(&mut keyed).await, 1008);
    assert!(
        revoked.elapsed() < Duration::from_secs(1),
        "{:?}",
        revoked.elapsed()
    );
    // And the key opens nothing any more.
    let e = tokio_tungstenite::connect_async(handshake(&url, &[("x-api-key", key)]))
        .await
        .unwrap_err();
    assert_eq!(http_status(e), 401);
}
