use axum::http::{Method, StatusCode};
use flowlens_api::auth::Role;
use serde_json::{Value, json};

use crate::support::TestApi;

#[tokio::test]
async fn config_is_redacted_and_metrics_count_routes() {
    let api = TestApi::with("admin_cfg", |c| {
        let url = c.database.url.clone().unwrap();
        // A password in the URL must not come back.
        c.database.url = Some(url.replace("postgres@", "postgres:hunter2@"));
    })
    .await;
    let cfg = api
        .get_as(Role::Admin, "/api/v1/admin/config", StatusCode::OK)
        .await;
    assert_eq!(cfg["api"]["auth"]["jwt_secret"], "<redacted>");
    assert_eq!(cfg["api"]["pagination"]["max_page_size"], 1000);
    let text = cfg.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains(crate::support::SECRET),
        "{text}"
    );

    let web = api.asset("web", &["10.0.1.1"]).await;
    api.get(&format!("/api/v1/assets/{web}")).await;
    let m = api
        .get_as(Role::Viewer, "/api/v1/admin/metrics", StatusCode::OK)
        .await;
    let m = m.as_str().unwrap();
    // Labelled by route template, not by the id asked for.
    assert!(
        m.lines()
            .any(|l| l.starts_with("flowlens_api_requests_total")
                && l.contains("route=\"/api/v1/assets/{id}\"")
                && l.contains("status=\"200\"")),
        "{m}"
    );
    assert!(!m.contains(&web), "ids never become labels");
    assert!(
        m.contains("flowlens_api_request_duration_seconds_bucket"),
        "{m}"
    );
    // Every metric has its help text and a name Prometheus's linter accepts.
    crate::support::promtool_accepts(m);
}

#[tokio::test]
async fn health_says_unhealthy_when_postgres_is_gone() {
    let api = TestApi::new("admin_health").await;
    api.state.pool.close().await;
    let (s, _, v) = api
        .call(Method::GET, "/api/v1/admin/health", None, None)
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["status"], "unhealthy");
    assert!(
        v["checks"]["postgresql"]
            .as_str()
            .unwrap()
            .starts_with("error"),
        "{v}"
    );
}

/// Follows `$ref`s in the document.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// Checks `value` against an OpenAPI 3.1 schema (the subset utoipa emits: $ref,
/// type lists with null, object properties/required, arrays, allOf, oneOf), and that
/// no property is undocumented.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) {
    let schema = resolve(doc, schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        // The union of the parts' properties; each part checked on its own keys.
        let mut known = Vec::new();
        for part in all {
            let part = resolve(doc, part);
            if let Some(props) = part.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    known.push(k.clone());
                    if let Some(v) = value.get(k) {
                        check(doc, s, v, &format!("{at}.{k}"));
                    }
                }
            }
            for r in part
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                assert!(
                    value.get(r.as_str().unwrap()).is_some(),
                    "{at}: missing {r}"
                );
            }
        }
        for k in value.as_object().unwrap().keys() {
            assert!(known.contains(k), "{at}: undocumented property {k}");
        }
        return;
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        if value.is_null() && one.iter().any(|s| s["type"] == "null") {
            return;
        }
        let non_null: Vec<&Value> = one.iter().filter(|s| s["type"] != "null").collect();
        assert_eq!(non_null.len(), 1, "{at}: oneOf with several alternatives");
        return check(doc, non_null[0], value, at);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return, // `{}` or a free-form value
    };
    let actual = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    assert!(
        types.contains(&actual) || (actual == "integer" && types.contains(&"number")),
        "{at}: {actual} where the document says {types:?}"
    );
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in map {
                    let s = props
                        .get(k)
                        .unwrap_or_else(|| panic!("{at}: undocumented property {k}"));
                    check(doc, s, v, &format!("{at}.{k}"));
                }
                for r in schema
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    assert!(map.contains_key(r.as_str().unwrap()), "{at}: missing {r}");
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check(doc, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

/// The answer's content type is one the document lists for its status, and a JSON
/// body matches the schema given for it.
fn conforms(
    doc: &Value,
    documented: &Value,
    headers: &axum::http::HeaderMap,
    body: &Value,
    at: &str,
) {
    let Some(content) = documented.get("content").and_then(Value::as_object) else {
        return;
    };
    let media = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    let Some(entry) = content.get(&media) else {
        panic!(
            "{at}: served as {media:?}, documented as {:?}",
            content.keys().collect::<Vec<_>>()
        );
    };
    if media.ends_with("json")
        && let Some(schema) = entry.get("schema")
    {
        check(doc, schema, body, at);
    }
}

#[tokio::test]
async fn openapi_document_matches_the_server() {
    let api = TestApi::new("openapi").await;
    let web = api.asset("web", &["10.0.1.1"]).await;
    let db = api.asset("db", &["10.0.3.1"]).await;
    let dep = api.dependency(&web, &db, 5432).await;
    let change: String = sqlx::query_scalar("SELECT id::text FROM change_events LIMIT 1")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    let alert: String = sqlx::query_scalar(
        "INSERT INTO alerts (severity, title) VALUES ('info', 't') RETURNING id::text",
    )
    .fetch_one(&api.pool)
    .await
    .unwrap();
    let scan: String = sqlx::query_scalar(
        "INSERT INTO discovery_scans (cidr, ports, requested_by, hosts_total)
         VALUES ('127.0.0.0/30', '{80}', 't', 2) RETURNING id::text",
    )
    .fetch_one(&api.pool)
    .await
    .unwrap();
    let doc = api.get("/api/v1/openapi.json").await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();

    let mut seen = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            seen.push(format!("{m} {path}"));
            let id = if path.starts_with("/api/v1/assets/") {
                web.clone()
            } else if path.starts_with("/api/v1/dependencies/") {
                dep.clone()
            } else if path.starts_with("/api/v1/changes/") {
                change.clone()
            } else if path.starts_with("/api/v1/alerts/") {
                alert.clone()
            } else if path.starts_with("/api/v1/discovery/scans/") {
                scan.clone()
            } else {
                uuid::Uuid::new_v4().to_string()
            };
            let uri = path.replace("{id}", &id);
            // Every documented route exists: never the fallback, never 405.
            if m != Method::GET {
                let (s, h, v) = api
                    .call(
                        m.clone(),
                        &uri,
                        Some(&TestApi::token(Role::Viewer)),
                        Some(json!({})),
                    )
                    .await;
                assert!(
                    s != StatusCode::METHOD_NOT_ALLOWED
                        && !(s == StatusCode::NOT_FOUND
                            && v["detail"].as_str().unwrap_or("").contains("route")),
                    "{m} {path}: {s} {v}"
                );
                let documented = &op["responses"][s.as_str()];
                if documented.is_object() {
                    conforms(&doc, documented, &h, &v, &format!("{m} {path}"));
                }
                continue;
            }
            let (s, h, v) = api
                .call(m, &uri, Some(&TestApi::token(Role::Admin)), None)
                .await;
            let documented = &op["responses"][s.as_str()];
            assert!(
                documented.is_object(),
                "GET {path} answered {s}, not documented"
            );
            conforms(&doc, documented, &h, &v, &format!("GET {path}"));
        }
    }
    // Successful writes and analyses answer what their documents say.
    let editor = TestApi::token(Role::Editor);
    let successes = [
        (
            Method::POST,
            "/api/v1/assets".to_owned(),
            json!({"name": "n", "ip_addresses": ["10.9.0.1"]}),
            "/api/v1/assets",
            "post",
        ),
        (
            Method::PATCH,
            format!("/api/v1/assets/{web}"),
            json!({"environment": "prod"}),
            "/api/v1/assets/{id}",
            "patch",
        ),
        (
            Method::POST,
            "/api/v1/dependencies".to_owned(),
            json!({"source_asset_id": db, "target_asset_id": web, "protocol": 6, "port": 22}),
            "/api/v1/dependencies",
            "post",
        ),
        (
            Method::PATCH,
            format!("/api/v1/dependencies/{dep}"),
            json!({"notes": "n"}),
            "/api/v1/dependencies/{id}",
            "patch",
        ),
        (
            Method::PATCH,
            format!("/api/v1/alerts/{alert}"),
            json!({"status": "resolved"}),
            "/api/v1/alerts/{id}",
            "patch",
        ),
        (
            Method::POST,
            "/api/v1/analysis/impact".to_owned(),
            json!({"asset_id": db}),
            "/api/v1/analysis/impact",
            "post",
        ),
        (
            Method::POST,
            "/api/v1/analysis/path".to_owned(),
            json!({"from": web, "to": db}),
            "/api/v1/analysis/path",
            "post",
        ),
        (
            Method::POST,
            "/api/v1/analysis/blast-radius".to_owned(),
            json!({"asset_id": db}),
            "/api/v1/analysis/blast-radius",
            "post",
        ),
    ];
    for (m, uri, body, path, method) in successes {
        let (s, h, v) = api.call(m, &uri, Some(&editor), Some(body)).await;
        assert!(s.is_success(), "{uri}: {s} {v}");
        let documented = &doc["paths"][path][method]["responses"][s.as_str()];
        assert!(
            documented.is_object(),
            "{method} {path} answered {s}, not documented"
        );
        conforms(&doc, documented, &h, &v, &format!("{method} {path}"));
    }
    seen.sort();
    let want = [
        "DELETE /api/v1/admin/api-keys/{id}",
        "DELETE /api/v1/assets/{id}",
        "DELETE /api/v1/dependencies/{id}",
        "DELETE /api/v1/discovery/scans/{id}",
        "GET /api/v1/admin/api-keys",
        "GET /api/v1/admin/config",
        "GET /api/v1/admin/health",
        "GET /api/v1/admin/metrics",
        "GET /api/v1/alerts",
        "GET /api/v1/alerts/{id}",
        "GET /api/v1/analysis/spof",
        "GET /api/v1/assets",
        "GET /api/v1/assets/{id}",
        "GET /api/v1/assets/{id}/dependencies",
        "GET /api/v1/assets/{id}/traffic",
        "GET /api/v1/changes",
        "GET /api/v1/changes/{id}",
        "GET /api/v1/dependencies",
        "GET /api/v1/dependencies/{id}",
        "GET /api/v1/discovery/scans",
        "GET /api/v1/discovery/scans/{id}",
        "GET /api/v1/integrations/servicenow/payload",
        "GET /api/v1/integrations/servicenow/status",
        "GET /api/v1/openapi.json",
        "GET /api/v1/session",
        "GET /api/v1/topology",
        "GET /api/v1/topology/export",
        "GET /api/v1/topology/groups",
        "GET /api/v1/topology/ws",
        "PATCH /api/v1/alerts/{id}",
        "PATCH /api/v1/assets/{id}",
        "PATCH /api/v1/dependencies/{id}",
        "POST /api/v1/admin/api-keys",
        "POST /api/v1/analysis/blast-radius",
        "POST /api/v1/analysis/impact",
        "POST /api/v1/analysis/path",
        "POST /api/v1/assets",
        "POST /api/v1/dependencies",
        "POST /api/v1/discovery/scans",
        "POST /api/v1/integrations/servicenow/push",
    ];
    assert_eq!(seen, want);
    // Error answers have the documented problem shape.
    let (s, _, v) = api
        .call(
            Method::GET,
            "/api/v1/assets/nope",
            Some(&TestApi::token(Role::Viewer)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    check(
        &doc,
        &json!({"$ref": "#/components/schemas/Problem"}),
        &v,
        "problem",
    );
    let documented = &doc["paths"]["/api/v1/assets/{id}"]["get"]["responses"]["404"];
    assert!(
        documented["content"]["application/problem+json"].is_object(),
        "{documented}"
    );
}

/// Any token is a valid HTTP method: fifty made-up methods on fifty unknown paths, over
/// a real socket and without credentials, add no series of their own to the request
/// metrics ("other" and "unmatched" take them all).
#[tokio::test]
async fn made_up_methods_and_paths_share_one_metric_series() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = TestApi::new("metric_methods").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = api.app.clone();
    tokio::spawn(async move { axum::serve(listener, app).await });
    for i in 0..50 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req =
            format!("ZQMETHOD{i} /zq-path-{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 "), "{answer:?}");
    }
    let m = api
        .get_as(Role::Viewer, "/api/v1/admin/metrics", StatusCode::OK)
        .await;
    let m = m.as_str().unwrap();
    assert!(!m.contains("ZQMETHOD") && !m.contains("zq-path"), "{m}");
    assert!(
        m.lines()
            .any(|l| l.starts_with("flowlens_api_requests_total")
                && l.contains("method=\"other\"")
                && l.contains("route=\"unmatched\"")),
        "{m}"
    );
}
