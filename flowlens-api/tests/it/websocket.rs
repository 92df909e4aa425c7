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
