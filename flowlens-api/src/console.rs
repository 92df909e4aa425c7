//! EDGE: the web console, the static files of `console/` that `build.rs` embedded.
//!
//! `/` is the page and `/assets/*` its script, styles and images; everything the page
//! does afterwards goes through `/api/v1` with the credential the user signed in with.
//! The files are public (they hold no data), so they need no credential, but they get
//! headers of their own:
//!
//! - a Content-Security-Policy that allows this origin only and no inline script or
//!   style, so a name an outsider chose (reverse DNS, an exporter's field) that reached
//!   the page cannot run as code there, and no third party can be loaded;
//! - `frame-ancestors 'none'` and `X-Frame-Options: DENY` (no clickjacking of the edit
//!   controls), `Referrer-Policy: no-referrer`;
//! - caching: the page is revalidated each time (`no-cache`, with an `ETag`), the
//!   assets, whose names carry a hash of their contents, are kept a year (`immutable`);
//! - a `.gz` twin is sent to clients that accept gzip.
//!
//! Built without the bundle (no Node on the build machine), `/` is a page saying how
//! to build it.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// What the console's pages may load and connect to: this origin, nothing inline.
/// (`'self'` in `connect-src` covers the same origin's `ws:`/`wss:` in CSP 3.)
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Served at `/` when the binary was built without the bundle.
const NOT_BUILT: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>FlowLens</title></head>
<body><h1>FlowLens</h1>
<p>This <code>flowlens-api</code> was built without its web console.</p>
<p>Build the console (it needs Node.js and npm), then the API again:</p>
<pre>cargo xtask build-console
cargo build --release -p flowlens-api</pre>
<p><code>cargo xtask run</code> does both. The API itself is under
<a href=\"/api/v1/openapi.json\"><code>/api/v1</code></a>.</p>
</body></html>
";

/// Whether this binary carries the console.
pub fn embedded() -> bool {
    !ASSETS.is_empty()
}

/// The console's routes (no credential needed: the files hold no data).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/{*file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    if !embedded() {
        return with_page_headers(
            (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                NOT_BUILT,
            )
                .into_response(),
            "no-cache",
        );
    }
    serve("index.html", &headers, "no-cache")
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(
        &format!("assets/{file}"),
        &headers,
        "public, max-age=31536000, immutable",
    )
}

/// The file at `path` (or its gzip twin when the client takes gzip), 304 when the
/// client's `If-None-Match` names it, 404 when there is no such file.
fn serve(path: &str, request: &HeaderMap, cache_control: &'static str) -> Response {
    let Some(index) = ASSETS.iter().position(|(p, _)| *p == path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such file in the console\n",
        )
            .into_response();
    };
    let gzip_twin = ASSETS
        .iter()
        .find(|(p, _)| p.strip_suffix(".gz") == Some(path))
        .map(|(_, body)| *body);
    let accepts_gzip = request
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    let send_gzip = gzip_twin.is_some() && accepts_gzip;
    // The two encodings are different bytes: different strong tags.
    let etag = if send_gzip {
        format!("{}-gz\"", etags()[index].trim_end_matches('"'))
    } else {
        etags()[index].clone()
    };
    let etag = etag.as_str();
    // If-None-Match compares weakly (RFC 9110 13.1.2): W/"x" matches "x".
    let not_modified = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
        });
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else if let (Some(gz), true) = (gzip_twin, send_gzip) {
        let mut r = gz.into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        ASSETS[index].1.into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if gzip_twin.is_some() {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    with_page_headers(response, cache_control)
}

/// Whether an `Accept-Encoding` value takes gzip (and does not refuse it with `q=0`).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|part| {
        let mut pieces = part.split(';').map(str::trim);
        let coding = pieces.next().unwrap_or("");
        let refused = pieces.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// A strong `ETag` per file, from a hash of its contents (computed once).
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, body)| format!("\"{}\"", &crate::auth::sha256_hex(body)[..24]))
            .collect()
    })
}

fn with_page_headers(mut response: Response, cache_control: &'static str) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    response
}

/// The content type of a console file, by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_taken_unless_refused() {
        assert!(accepts_gzip("gzip, deflate, br"));
        assert!(accepts_gzip("br;q=1.0, gzip;q=0.8"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip("br"));
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("assets/main-ABC.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("assets/style-X.css"),
            "text/css; charset=utf-8"
        );
        assert_eq!(content_type("assets/x.js.gz"), "application/octet-stream");
    }
}
