//! The `flowlens` command line's client: the API over HTTP with a saved login, errors
//! mapped to exit codes scripts can rely on, and the change feed over WebSocket. The
//! command-line parsing and printing live in `src/bin/flowlens.rs`.

pub mod credentials;
pub mod table;

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

pub use credentials::Credentials;

/// Why a command failed, and the exit code that says so.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Exit 3: no login, or the API refused the credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Exit 4: the role does not allow this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Exit 5: no such asset, dependency, alert... (404, or a name matching nothing).
    #[error("{0}")]
    NotFound(String),
    /// Exit 6: the request is wrong (400, 409, 413, 415, 422, an ambiguous name).
    #[error("{0}")]
    Invalid(String),
    /// Exit 7: try again later (cannot connect, timeout, 429, 5xx, a socket dropped).
    #[error("{0}")]
    Unavailable(String),
    /// Exit 1: anything else (local files, an answer that is not what the API sends).
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    /// The process exit code (2 is clap's, for usage errors).
    pub const fn exit_code(&self) -> u8 {
        match self {
            Self::Other(_) => 1,
            Self::Unauthorized(_) => 3,
            Self::Forbidden(_) => 4,
            Self::NotFound(_) => 5,
            Self::Invalid(_) => 6,
            Self::Unavailable(_) => 7,
        }
    }

    /// The error of an answer with `status` and a problem+json (or other) body.
    fn from_status(status: u16, body: &[u8]) -> Self {
        let problem: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let detail = problem
            .get("detail")
            .or_else(|| problem.get("title"))
            .and_then(Value::as_str)
            .map_or_else(
                || table::cell(String::from_utf8_lossy(body).trim()),
                table::cell,
            );
        let text = format!("{detail} (HTTP {status})");
        match status {
            401 => Self::Unauthorized(format!(
                "{text}: the credentials were refused; run `flowlens login`"
            )),
            403 => Self::Forbidden(text),
            404 => Self::NotFound(text),
            400 | 405 | 409 | 411 | 413 | 415 | 422 => Self::Invalid(text),
            429 | 500..=599 => Self::Unavailable(text),
            _ => Self::Other(text),
        }
    }
}

/// A connection to one API with one credential.
pub struct Client {
    http: reqwest::Client,
    credentials: Credentials,
}

/// An answer's body and its content type.
pub struct Body {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl Client {
    /// A client for `credentials`.
    ///
    /// # Errors
    /// When the URL is not `http(s)://host[:port]` or TLS cannot start.
    pub fn new(credentials: Credentials) -> Result<Self, ClientError> {
        let url = credentials.url.trim_end_matches('/').to_owned();
        check_url(&url)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_mins(1))
            .connect_timeout(Duration::from_secs(10))
            // A redirect would carry the credentials wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("flowlens-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Other(e.to_string()))?;
        Ok(Self {
            http,
            credentials: Credentials { url, ..credentials },
        })
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    fn authorize(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match (&self.credentials.token, &self.credentials.api_key) {
            (Some(t), _) => r.bearer_auth(t),
            (None, Some(k)) => r.header("X-API-Key", k),
            (None, None) => r,
        }
    }

    /// Sends `method path?query` with an optional JSON body; the answer's body when
    /// it is a success, else the error its status says.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Body, ClientError> {
        let url = format!("{}{path}", self.credentials.url);
        let mut request = self
            .authorize(self.http.request(method, &url))
            .query(query)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            request = request.json(b);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&self.credentials.url, &e))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(&self.credentials.url, &e))?
            .to_vec();
        if status.is_success() {
            Ok(Body {
                content_type,
                bytes,
            })
        } else {
            Err(ClientError::from_status(status.as_u16(), &bytes))
        }
    }

    /// As [`Client::send`], the answer parsed as JSON.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let answer = self.send(method, path, query, body).await?;
        if answer.bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&answer.bytes)
            .map_err(|e| ClientError::Other(format!("the answer is not JSON: {e}")))
    }

    /// GET as JSON.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.json(reqwest::Method::GET, path, query, None).await
    }

    /// The id of the asset `what` names: a UUID as it is; else the one asset whose
    /// name, FQDN or address is exactly `what` (an address through the `ip` filter,
    /// anything else through the search).
    ///
    /// # Errors
    /// [`ClientError::NotFound`] when none matches, [`ClientError::Invalid`] when
    /// several do.
    pub async fn resolve_asset(&self, what: &str) -> Result<String, ClientError> {
        if uuid::Uuid::parse_str(what).is_ok() {
            return Ok(what.to_owned());
        }
        let ip = what.parse::<std::net::IpAddr>().is_ok();
        // The server's default page size (within any max_page_size it sets).
        let query = if ip {
            vec![("ip", what.to_owned())]
        } else {
            vec![("q", what.to_owned())]
        };
        let page = self.get("/api/v1/assets", &query).await?;
        let exact: Vec<&Value> = page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| {
                ip || a["name"].as_str() == Some(what)
                    || a["fqdn"].as_str().is_some_and(|f| {
                        f.trim_end_matches('.')
                            .eq_ignore_ascii_case(what.trim_end_matches('.'))
                    })
                    || a["ip_addresses"]
                        .as_array()
                        .is_some_and(|ips| ips.iter().any(|i| i.as_str() == Some(what)))
            })
            .collect();
        match exact.as_slice() {
            [one] => one["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ClientError::Other("an asset without an id".to_owned())),
            [] => Err(ClientError::NotFound(format!(
                "no asset is named {} (give its id, name, FQDN or address)",
                table::cell(what)
            ))),
            several => Err(ClientError::Invalid(format!(
                "{} names {} assets: {}; give an id",
                table::cell(what),
                several.len(),
                several
                    .iter()
                    .take(5)
                    .filter_map(|a| a["id"].as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Opens the change feed (`/api/v1/topology/ws`) with the saved credential.
    ///
    /// # Errors
    /// As [`Client::send`] for a refused upgrade.
    pub async fn change_feed(
        &self,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        ClientError,
    > {
        use tokio_tungstenite::tungstenite::Error as WsError;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let url = format!(
            "{}/api/v1/topology/ws",
            self.credentials
                .url
                .replacen("https://", "wss://", 1)
                .replacen("http://", "ws://", 1)
        );
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::Invalid(format!("the change feed's URL: {e}")))?;
        let headers = request.headers_mut();
        let value = match (&self.credentials.token, &self.credentials.api_key) {
            (Some(t), _) => Some(("authorization", format!("Bearer {t}"))),
            (None, Some(k)) => Some(("x-api-key", k.clone())),
            (None, None) => None,
        };
        if let Some((name, value)) = value {
            headers.insert(
                name,
                value.parse().map_err(|_| {
                    ClientError::Invalid("the credential is not a header value".to_owned())
                })?,
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(ws),
            Err(WsError::Http(response)) => {
                let body = response.body().clone().unwrap_or_default();
                Err(ClientError::from_status(response.status().as_u16(), &body))
            }
            Err(e @ WsError::Url(_)) => Err(ClientError::Invalid(format!("{url}: {e}"))),
            // A certificate the system does not trust will not be trusted on retry.
            Err(e @ WsError::Tls(_)) => Err(ClientError::Other(format!("{url}: {e}"))),
            Err(e) => Err(ClientError::Unavailable(format!("{url}: {e}"))),
        }
    }
}

/// What a JWT says about its holder (read, not verified: the server verifies), for
/// `login` and `status` to show.
pub fn token_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The API's URL as the client accepts it: http or https, a host, maybe a port and a
/// path prefix (a reverse proxy's); no user, password, query or fragment (a password
/// in a URL ends up in shell history and process lists).
fn check_url(url: &str) -> Result<(), ClientError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ClientError::Invalid(format!("{}: {e}", table::cell(url))))?;
    let bad = !matches!(parsed.scheme(), "http" | "https")
        || parsed.host().is_none()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.query().is_some()
        || parsed.fragment().is_some();
    if bad {
        return Err(ClientError::Invalid(format!(
            "{}: give http(s)://host[:port][/prefix], without user, query or fragment",
            table::cell(url)
        )));
    }
    Ok(())
}

/// The exit code a transport error deserves: a request that could not even be built
/// (a header value a credential cannot be) or a certificate the system does not
/// trust will fail the same way again; the rest may pass later.
fn transport_error(url: &str, e: &reqwest::Error) -> ClientError {
    let text = format!("{url}: {}", crate::error::transport_error(e));
    let certificate = text.contains("certificate") || text.contains("UnknownIssuer");
    if e.is_builder() {
        ClientError::Invalid(text)
    } else if certificate {
        ClientError::Other(text)
    } else {
        ClientError::Unavailable(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_the_documented_exit_codes() {
        let problem = br#"{"type":"about:blank","title":"Not Found","status":404,"detail":"asset x not found"}"#;
        let e = ClientError::from_status(404, problem);
        assert_eq!(
            (e.exit_code(), e.to_string().as_str()),
            (5, "asset x not found (HTTP 404)")
        );
        for (status, code) in [
            (401, 3),
            (403, 4),
            (409, 6),
            (422, 6),
            (400, 6),
            (429, 7),
            (503, 7),
            (418, 1),
        ] {
            assert_eq!(
                ClientError::from_status(status, b"").exit_code(),
                code,
                "{status}"
            );
        }
        // A body from something that is not the API, cut and made printable.
        let e =
            ClientError::from_status(502, format!("<html>\u{1b}{}", "x".repeat(500)).as_bytes());
        assert!(e.to_string().len() < 100 && !e.to_string().contains('\u{1b}'));
    }

    #[test]
    fn urls_with_secrets_or_without_a_host_are_refused() {
        for bad in [
            "ftp://h",
            "http://user:pw@h:8000",
            "http://h:8000?x=1",
            "http://a b",
            "localhost:8000",
        ] {
            let e = check_url(bad).err().map(|e| e.exit_code());
            assert_eq!(e, Some(6), "{bad}");
        }
        for good in [
            "http://127.0.0.1:8000",
            "https://flowlens.example.com/api-proxy",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_token_says_who_holds_it() {
        let token = crate::auth::issue_token(
            "0123456789abcdef0123456789abcdef",
            "alice",
            crate::auth::Role::Editor,
            std::time::SystemTime::now(),
            Duration::from_mins(1),
        )
        .unwrap_or_default();
        let claims = token_claims(&token).unwrap_or_default();
        assert_eq!(
            (&claims["sub"], &claims["role"]),
            (&"alice".into(), &"editor".into())
        );
        assert!(token_claims("not-a-jwt").is_none());
    }
}
