//! `/api/v1/topology/ws`: change events pushed as they happen, under the limits a
//! socket open to the world needs. The client never has to send data, so what it may
//! send is tiny (control frames; a data frame closes the socket), one caller holds at
//! most `max_connections_per_caller` of the `max_connections` slots, a browser page of
//! another origin is refused, and a socket lives no longer than its credential: it is
//! closed when its token expires or its API key is revoked on any instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code,
    rejection::WebSocketUpgradeRejection,
};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::auth::{Caller, Viewer};
use crate::error::{ApiError, Problem};
use crate::slots::{KeyCounts, KeySlot};
use crate::state::AppState;
use crate::telemetry::{WEBSOCKET_CLOSED, WEBSOCKET_CONNECTIONS, WEBSOCKET_REFUSED};

/// Largest message or frame a client may send. Clients send only control frames (a
/// pong echoes our empty ping; a close carries at most 125 bytes), so this is generous;
/// tungstenite's defaults (64 mebibyte messages, 16 mebibyte frames) would let every socket make
/// the server buffer megabytes.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4096;

/// The close reason when the socket's token expires (clients tell it from other
/// closes: log in again rather than reconnect).
pub const CLOSE_TOKEN_EXPIRED: &str = "token expired";
/// The close reason when the socket's API key is revoked.
pub const CLOSE_KEY_REVOKED: &str = "API key revoked";

/// Per-socket read buffer (tungstenite's default is 128 kibibytes per socket).
const READ_BUFFER_BYTES: usize = 4096;

type Callers = KeyCounts;

/// Holds one of `api.websocket.max_connections` slots, and one of its caller's
/// `max_connections_per_caller`, while a socket is open.
pub struct WsSlot {
    open: Arc<AtomicUsize>,
    _caller: KeySlot,
}

#[derive(Debug, Clone, Copy)]
enum Refusal {
    Full,
    PerCaller,
}

impl WsSlot {
    fn take(
        open: &Arc<AtomicUsize>,
        callers: &Callers,
        caller: &str,
        max: usize,
        per_caller: usize,
    ) -> Result<Self, Refusal> {
        // Dropped again (the caller's count given back) if the server is full.
        let caller = KeySlot::take(callers, caller, per_caller).ok_or(Refusal::PerCaller)?;
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .map_err(|_| Refusal::Full)?;
        metrics::gauge!(WEBSOCKET_CONNECTIONS).increment(1.0);
        Ok(Self {
            open: open.clone(),
            _caller: caller,
        })
    }
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(WEBSOCKET_CONNECTIONS).decrement(1.0);
    }
}

/// Whether a handshake's `Origin` may open the socket: absent (not a browser), the
/// API's own origin (its authority is the `Host` the browser sent), or one of
/// `allowed`.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

/// Change events as they happen: a WebSocket sending one JSON text message per event,
/// `{"type": "change", "event": {"id", "change_type", "entity_type", "entity_id",
/// "detected_at"}}`, and `{"type": "resync"}` when events may have been missed (refetch
/// then). The server pings every `api.websocket.ping_interval_seconds` and closes a
/// connection that has not answered the previous ping. Browsers may pass a token as
/// `?token=`, or (a token or an API key) as the subprotocol `bearer.<credential>`
/// beside `flowlens.v1`, which the answer then selects. Clients must not send data: a
/// text or binary message closes the socket (1008), as does one over 4096 bytes (1009).
/// The socket is closed (1008) when its token expires or its API key is revoked.
#[utoipa::path(get, path = "/topology/ws", tag = "topology",
    responses((status = 101, description = "Switching to the WebSocket protocol"),
              (status = 400, body = Problem, description = "Not a WebSocket handshake"),
              (status = 403, body = Problem, description = "A page of another origin"),
              (status = 429, body = Problem, description = "This caller's connection limit"),
              (status = 503, body = Problem, description = "Connection limit reached")))]
pub async fn topology_ws(
    State(state): State<AppState>,
    Viewer(caller): Viewer,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let cfg = &state.config.api.websocket;
    if !cfg.enabled {
        return Err(ApiError::Unavailable(
            "WebSockets are disabled (api.websocket.enabled)".to_owned(),
        ));
    }
    let ws = ws.map_err(|e| ApiError::BadRequest(format!("WebSocket handshake: {e}")))?;
    if !origin_allowed(&headers, &cfg.allowed_origins) {
        metrics::counter!(WEBSOCKET_REFUSED, "reason" => "origin").increment(1);
        return Err(ApiError::Forbidden(
            "the page's Origin is neither this API's nor in api.websocket.allowed_origins"
                .to_owned(),
        ));
    }
    let slot = WsSlot::take(
        &state.ws_open,
        &state.ws_callers,
        &caller.limit_key,
        cfg.max_connections,
        cfg.max_connections_per_caller,
    )
    .map_err(|refusal| match refusal {
        Refusal::Full => {
            metrics::counter!(WEBSOCKET_REFUSED, "reason" => "max_connections").increment(1);
            ApiError::Unavailable(format!(
                "{} WebSocket connections are open, the most api.websocket.max_connections \
                 allows",
                cfg.max_connections
            ))
        }
        Refusal::PerCaller => {
            metrics::counter!(WEBSOCKET_REFUSED, "reason" => "per_caller").increment(1);
            ApiError::RateLimitedWith {
                retry_after_seconds: 10,
                detail: format!(
                    "{} has {} WebSocket connections open, the most \
                     api.websocket.max_connections_per_caller allows",
                    caller.subject, cfg.max_connections_per_caller
                ),
            }
        }
    })?;
    let session = Session {
        ping_every: Duration::from_secs(cfg.ping_interval_seconds),
        rx: state.feed.subscribe(),
        revoked: state.revoked.subscribe(),
        pool: state.pool.clone(),
        caller,
        _slot: slot,
    };
    // A client that offered the console's protocol gets it back (a browser fails a
    // handshake whose answer names none of the protocols it offered); the credential
    // it may have offered beside it is never echoed.
    Ok(ws
        .protocols([crate::auth::WS_PROTOCOL])
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| session.run(socket)))
}

/// One open socket.
struct Session {
    ping_every: Duration,
    rx: tokio::sync::broadcast::Receiver<Arc<str>>,
    revoked: tokio::sync::broadcast::Receiver<Option<Uuid>>,
    pool: sqlx::PgPool,
    caller: Caller,
    _slot: WsSlot,
}

/// Why the server ended a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed, went away, or stopped reading: nothing to say.
    Gone,
    Closed(u16, &'static str, &'static str),
}

/// Sends one frame, giving up after `limit`: a client that stops reading must not hold
/// its connection slot (and this task) forever.
async fn send(socket: &mut WebSocket, msg: Message, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, socket.send(msg)).await,
        Ok(Ok(()))
    )
}

impl Session {
    async fn run(mut self, mut socket: WebSocket) {
        let end = self.serve(&mut socket).await;
        if let End::Closed(code, reason, label) = end {
            metrics::counter!(WEBSOCKET_CLOSED, "reason" => label).increment(1);
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = send(&mut socket, Message::Close(Some(frame)), self.ping_every).await;
        }
    }

    /// Whether the caller's API key is still active (after the feed lost notifications).
    async fn key_active(&self, id: Uuid) -> bool {
        sqlx::query_scalar::<_, bool>("SELECT revoked_at IS NULL FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            // A database error is not a revocation: the socket stays until it is known.
            .map_or(true, |active| active.unwrap_or(false))
    }

    async fn serve(&mut self, socket: &mut WebSocket) -> End {
        let ping_every = self.ping_every;
        let hello =
            serde_json::json!({"type": "hello", "ping_interval_seconds": ping_every.as_secs()});
        if !send(socket, Message::Text(hello.to_string().into()), ping_every).await {
            return End::Gone;
        }
        let expired = Box::pin(until_expiry(self.caller.expires_at));
        tokio::pin!(expired);
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut awaiting_pong = false;
        loop {
            tokio::select! {
                msg = self.rx.recv() => {
                    let text = match msg {
                        Ok(text) => text.to_string(),
                        Err(RecvError::Lagged(missed)) => {
                            serde_json::json!({"type": "resync", "missed": missed}).to_string()
                        }
                        Err(RecvError::Closed) => return End::Gone,
                    };
                    if !send(socket, Message::Text(text.into()), ping_every).await {
                        return End::Gone;
                    }
                }
                revoked = self.revoked.recv(), if self.caller.key_id.is_some() => {
                    let mine = self.caller.key_id;
                    let gone = match revoked {
                        Ok(Some(id)) => Some(id) == mine,
                        // Lost revocations: ask the database.
                        Ok(None) | Err(RecvError::Lagged(_)) => match mine {
                            Some(id) => !self.key_active(id).await,
                            None => false,
                        },
                        Err(RecvError::Closed) => false,
                    };
                    if gone {
                        return End::Closed(close_code::POLICY, CLOSE_KEY_REVOKED, "revoked");
                    }
                }
                () = &mut expired => {
                    return End::Closed(close_code::POLICY, CLOSE_TOKEN_EXPIRED, "expired");
                }
                _ = ping.tick() => {
                    if awaiting_pong {
                        tracing::debug!("WebSocket client missed a ping; closing");
                        metrics::counter!(WEBSOCKET_CLOSED, "reason" => "unresponsive")
                            .increment(1);
                        return End::Gone;
                    }
                    if !send(socket, Message::Ping(bytes::Bytes::new()), ping_every).await {
                        return End::Gone;
                    }
                    awaiting_pong = true;
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | None => return End::Gone,
                    Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                        return End::Closed(
                            close_code::POLICY,
                            "this socket only sends; clients send no data",
                            "client_data",
                        );
                    }
                    // A pong (or a ping, which tungstenite answers) shows the client is alive.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => awaiting_pong = false,
                    Some(Err(e)) => {
                        return if is_capacity(&e) {
                            End::Closed(close_code::SIZE, "message too large", "too_large")
                        } else {
                            End::Gone
                        };
                    }
                },
            }
        }
    }
}

/// Whether a read failed on a size limit (axum wraps tungstenite's error).
fn is_capacity(e: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if text.contains("Space limit exceeded") || text.contains("too long") {
            return true;
        }
        source = s.source();
    }
    let text = e.to_string();
    text.contains("Space limit exceeded") || text.contains("too long")
}

/// Resolves when a credential expiring at `exp` (seconds since the epoch) has expired;
/// never when there is none.
async fn until_expiry(exp: Option<u64>) {
    let Some(exp) = exp else {
        return std::future::pending().await;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    tokio::time::sleep(Duration::from_secs(exp.saturating_sub(now))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins_are_same_origin_or_listed() {
        let none: Vec<String> = Vec::new();
        assert!(origin_allowed(&headers(&[]), &none), "not a browser");
        let own = headers(&[
            (header::HOST, "flowlens.example:8000"),
            (header::ORIGIN, "https://flowlens.example:8000"),
        ]);
        assert!(origin_allowed(&own, &none));
        let evil = headers(&[
            (header::HOST, "flowlens.example:8000"),
            (header::ORIGIN, "https://evil.example"),
        ]);
        assert!(!origin_allowed(&evil, &none));
        assert!(origin_allowed(&evil, &["https://evil.example".to_owned()]));
        let null = headers(&[(header::HOST, "a"), (header::ORIGIN, "null")]);
        assert!(!origin_allowed(&null, &none));
    }

    #[test]
    fn slots_are_bounded_per_caller_and_in_total() {
        let open = Arc::new(AtomicUsize::new(0));
        let callers = Callers::default();
        let a1 = WsSlot::take(&open, &callers, "a", 3, 2).unwrap();
        let a2 = WsSlot::take(&open, &callers, "a", 3, 2).unwrap();
        assert!(matches!(
            WsSlot::take(&open, &callers, "a", 3, 2),
            Err(Refusal::PerCaller)
        ));
        let b1 = WsSlot::take(&open, &callers, "b", 3, 2).unwrap();
        assert!(matches!(
            WsSlot::take(&open, &callers, "c", 3, 2),
            Err(Refusal::Full)
        ));
        // A refusal for a full server gives the caller's count back.
        assert!(!callers.lock().unwrap().contains_key("c"));
        drop(a1);
        let a3 = WsSlot::take(&open, &callers, "a", 3, 2).unwrap();
        drop((a2, a3, b1));
        assert_eq!(open.load(Ordering::Acquire), 0);
        assert!(callers.lock().unwrap().is_empty());
    }
}
