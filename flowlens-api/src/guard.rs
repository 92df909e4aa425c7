//! What every request passes before any route, credential check or query: a rate
//! limit per client address (so an anonymous caller cannot make the server look up
//! keys or run health checks without bound), a cap on requests in progress, and a
//! deadline per request. The per-caller limits (`rate_limit`) come after
//! authentication; these come first because they cost nothing to check.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use ipnetwork::IpNetwork;
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::rate_limit::RateLimiter;
use crate::telemetry::{REQUEST_TIMEOUTS, REQUESTS_SHED};

/// The limits, built once from config. The middleware's state is this alone (one
/// `Arc` cloned per request): with the whole `AppState`, two dozen reference counts
/// were touched per request, which `cargo xtask bench api` saw as 10% of a GET.
pub struct Guard {
    in_progress: Arc<Semaphore>,
    timeout: Duration,
    trusted_proxies: Vec<IpNetwork>,
    /// Every request by client address (`api.rate_limiting.per_address_*`).
    address_limiter: RateLimiter,
    /// Unauthenticated and not forced remote: only requests naming a local host.
    local_only: bool,
}

impl Guard {
    pub fn new(config: &crate::config::ApiConfig, address_limiter: RateLimiter) -> Self {
        Self {
            in_progress: Arc::new(Semaphore::new(config.limits.max_concurrent_requests)),
            timeout: Duration::from_secs(config.limits.request_timeout_seconds),
            trusted_proxies: config
                .rate_limiting
                .trusted_proxies
                .iter()
                .filter_map(|r| r.parse().ok())
                .collect(),
            address_limiter,
            local_only: !config.auth.enabled && !config.auth.allow_unauthenticated_remote,
        }
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the
    /// right-most address in `X-Forwarded-For` that is not one (each proxy appends the
    /// address it heard from, so what is left of the trusted ones a client may forge).
    pub fn client_address(&self, request: &Request) -> Option<IpAddr> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| canonical(c.0.ip()))?;
        if !self.trusted(peer) {
            return Some(peer);
        }
        let entries: Vec<&str> = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        // From the right: our proxies' own entries are skipped; the first other one is
        // the client. One that does not parse stops the walk (skipping it would let the
        // client's own, forged, entry to its left be believed): the peer it is then.
        for entry in entries.iter().rev() {
            match forwarded_address(entry) {
                Some(a) if self.trusted(a) => {}
                Some(a) => return Some(a),
                None => return Some(peer),
            }
        }
        Some(peer)
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(ip))
    }
}

/// An `X-Forwarded-For` entry as proxies write it: an address, `a.b.c.d:port`, or
/// `[v6]` / `[v6]:port`.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    let bare = if let Some(rest) = e.strip_prefix('[') {
        rest.split(']').next()?
    } else if e.matches(':').count() == 1 {
        e.split(':').next()?
    } else {
        e
    };
    bare.parse().ok().map(canonical)
}

/// What the per-address limits count against: an IPv4 address, or an IPv6 client's
/// /64 (one host is given a whole /64 and can pick a new address per request).
pub fn address_key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & !((1_u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(net))
        }
    }
}

/// Whether the request's `Host` is a loopback address or `localhost` (any port).
fn local_host(request: &Request) -> bool {
    let Some(host) = request
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
    else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|ip| canonical(ip).is_loopback())
}

/// IPv4-mapped IPv6 (a dual-stack listener's view of an IPv4 client) as IPv4, so one
/// client has one key.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The middleware: per-address limit, then a slot among `max_concurrent_requests`
/// (health needs none: a load balancer must still hear from a busy instance), then the
/// request under `request_timeout_seconds`. Every answer, this middleware's refusals
/// included, then gets the security headers (see [`security_headers`]).
pub async fn admit(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let mut response = admitted(&guard, request, next).await;
    security_headers(&mut response);
    response
}

async fn admitted(guard: &Guard, request: Request, next: Next) -> Response {
    // Unauthenticated (loopback only, see config): a web page could still reach the
    // API through DNS rebinding, a name of the attacker's that resolves to 127.0.0.1.
    // Such a request names that host; a local client names a loopback address or
    // `localhost`.
    if guard.local_only && !local_host(&request) {
        return ApiError::Forbidden(
            "with api.auth.enabled false, requests must name a loopback address or \
             localhost in Host"
                .to_owned(),
        )
        .into_response();
    }
    if guard.address_limiter.enabled()
        && let Some(ip) = guard.client_address(&request)
        && let Err(e) = guard.address_limiter.check(&address_key(ip))
    {
        return e.into_response();
    }
    let health = request.uri().path() == crate::routes::admin::HEALTH_PATH;
    let _permit = if health {
        None
    } else if let Ok(p) = guard.in_progress.clone().try_acquire_owned() {
        Some(p)
    } else {
        metrics::counter!(REQUESTS_SHED).increment(1);
        return ApiError::RateLimitedWith {
            retry_after_seconds: 1,
            detail: "the server is at api.limits.max_concurrent_requests; retry shortly".to_owned(),
        }
        .into_response();
    };
    if let Ok(response) = tokio::time::timeout(guard.timeout, next.run(request)).await {
        response
    } else {
        metrics::counter!(REQUEST_TIMEOUTS).increment(1);
        ApiError::Unavailable(format!(
            "the request took longer than api.limits.request_timeout_seconds ({} s)",
            guard.timeout.as_secs()
        ))
        .into_response()
    }
}

/// `X-Content-Type-Options: nosniff` (a browser must not run an export or an error
/// body as the script or page it could be sniffed as), and `Cache-Control: no-store`
/// unless the handler chose otherwise: API answers carry secrets (a new API key), the
/// graph of a private network, and what one caller may see, none of which a shared or
/// browser cache should keep.
fn security_headers(response: &mut Response) {
    use axum::http::{HeaderValue, header};
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, xff: &[&str]) -> Request {
        let mut r = Request::builder().uri("/");
        for v in xff {
            r = r.header("x-forwarded-for", *v);
        }
        let mut r = r.body(axum::body::Body::empty()).unwrap();
        r.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        r
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let k = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_eq!(k("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("192.0.2.1"), "192.0.2.1");
        assert_eq!(k("::ffff:192.0.2.1"), "192.0.2.1");
    }

    #[test]
    fn local_hosts_are_loopback_literals_and_localhost() {
        let with_host = |h: &str| {
            Request::builder()
                .uri("/")
                .header("host", h)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        for h in [
            "127.0.0.1:8000",
            "localhost",
            "LOCALHOST:80",
            "[::1]:8000",
            "127.3.4.5",
        ] {
            assert!(local_host(&with_host(h)), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:8000",
            "10.0.0.1",
            "[2001:db8::1]:80",
            "",
        ] {
            assert!(!local_host(&with_host(h)), "{h}");
        }
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let mut cfg = crate::config::ApiConfig::default();
        cfg.rate_limiting.trusted_proxies = vec!["10.0.0.0/8".to_owned()];
        let rate = |s: &str| s.parse().unwrap();
        let g = Guard::new(
            &cfg,
            RateLimiter::new(false, rate("1/second"), rate("1/second")),
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // A client's own header is ignored.
        assert_eq!(
            g.client_address(&request("192.0.2.7:5000", &["203.0.113.9"])),
            Some(ip("192.0.2.7"))
        );
        // Through the balancer: the right-most untrusted address; what the client
        // prepended itself is not believed.
        assert_eq!(
            g.client_address(&request(
                "10.1.1.1:5000",
                &["6.6.6.6, 198.51.100.4", "10.2.2.2"]
            )),
            Some(ip("198.51.100.4"))
        );
        assert_eq!(
            g.client_address(&request("[::ffff:192.0.2.8]:1", &[])),
            Some(ip("192.0.2.8"))
        );
        // Proxies that append ports or brackets.
        assert_eq!(
            g.client_address(&request("10.1.1.1:5000", &["6.6.6.6, 198.51.100.4:5123"])),
            Some(ip("198.51.100.4"))
        );
        assert_eq!(
            g.client_address(&request("10.1.1.1:5000", &["6.6.6.6, [2001:db8::9]:443"])),
            Some(ip("2001:db8::9"))
        );
        // An entry that cannot be read is not skipped (the forged one left of it would
        // be believed): the proxy itself is the key then.
        assert_eq!(
            g.client_address(&request("10.1.1.1:5000", &["6.6.6.6, unknown"])),
            Some(ip("10.1.1.1"))
        );
        let mut r = Request::new(axum::body::Body::empty());
        assert_eq!(g.client_address(&r), None, "no peer (in-process calls)");
        r.extensions_mut()
            .insert(ConnectInfo("10.1.1.1:1".parse::<SocketAddr>().unwrap()));
        assert_eq!(g.client_address(&r), Some(ip("10.1.1.1")));
    }
}
