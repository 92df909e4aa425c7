//! The ServiceNow CMDB export: the payload on demand and the push, against a loopback
//! instance that checks every request against the Identification and Reconciliation
//! API's documented payload format and keeps a CMDB the way the IRE does (a CI per
//! source name and native key, a relation per parent, child and type).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use flowlens_api::auth::Role;
use flowlens_api::state::AppState;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::{TestApi, test_config};

/// How the loopback instance checks credentials.
#[derive(Clone)]
enum Auth {
    Basic { user: String, password: String },
    OAuth { client_id: String, secret: String },
}

#[derive(Default)]
struct Cmdb {
    /// (source name, native key) -> (sys id, class, values).
    cis: HashMap<(String, String), (String, String, Value)>,
    /// (parent sys id, child sys id, type).
    relations: HashSet<(String, String, String)>,
    /// Bodies of the IRE requests, as sent.
    requests: Vec<Value>,
    /// What did not follow the documented format.
    problems: Vec<String>,
    /// Statuses to answer instead of serving, oldest first.
    fail_next: VecDeque<u16>,
    /// Items of this class are answered with an error.
    reject_class: Option<String>,
    /// Tokens handed out and still valid.
    tokens: HashSet<String>,
    token_requests: usize,
    /// Operations answered for the last request's items.
    operations: Vec<String>,
    /// Answer this many IRE requests with a 200 page that is not JSON (a proxy's).
    garbage_next: usize,
    /// `expires_in` of the tokens handed out.
    expires_in: u64,
    /// Answer 429 with `Retry-After: 1` to this many requests.
    throttle_next: usize,
}

#[derive(Clone)]
struct Instance {
    cmdb: Arc<Mutex<Cmdb>>,
    auth: Arc<Mutex<Auth>>,
    data_source: String,
}

impl Instance {
    async fn start(auth: Auth) -> (Self, String) {
        let instance = Self {
            cmdb: Arc::default(),
            auth: Arc::new(Mutex::new(auth)),
            data_source: "FlowLens".to_owned(),
        };
        let app = Router::new()
            .route("/api/now/identifyreconcile", post(identify_reconcile))
            .route("/oauth_token.do", post(oauth_token))
            .with_state(instance.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (instance, url)
    }

    fn cmdb(&self) -> std::sync::MutexGuard<'_, Cmdb> {
        self.cmdb.lock().unwrap()
    }
}

async fn oauth_token(State(i): State<Instance>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let mut cmdb = i.cmdb();
    cmdb.token_requests += 1;
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("application/x-www-form-urlencoded")
    {
        cmdb.problems.push("token request not form-encoded".into());
    }
    let Auth::OAuth { client_id, secret } = i.auth.lock().unwrap().clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let client =
        form.get("client_id") == Some(&client_id) && form.get("client_secret") == Some(&secret);
    let ok = match form.get("grant_type").map(String::as_str) {
        Some("password") => {
            client
                && form.get("username").map(String::as_str) == Some("flowlens.integration")
                && form.get("password").map(String::as_str) == Some("user-pass")
        }
        Some("client_credentials") => client && !form.contains_key("password"),
        _ => false,
    };
    if !ok {
        // As some servers do: the refused request echoed back.
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "access_denied",
                "error_description": format!("refused {form:?}")})),
        )
            .into_response();
    }
    let token = format!("tok-{}", cmdb.token_requests);
    cmdb.tokens.insert(token.clone());
    axum::Json(json!({
        "access_token": token, "refresh_token": "r", "scope": "useraccount",
        "token_type": "Bearer", "expires_in": if cmdb.expires_in == 0 { 1799 } else { cmdb.expires_in }
    }))
    .into_response()
}

async fn identify_reconcile(
    State(i): State<Instance>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorized = {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match &*i.auth.lock().unwrap() {
            Auth::Basic { user, password } => {
                let want =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                given == format!("Basic {want}")
            }
            Auth::OAuth { .. } => given
                .strip_prefix("Bearer ")
                .is_some_and(|t| i.cmdb().tokens.contains(t)),
        }
    };
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({"error": {"message": "User Not Authenticated"}, "status": "failure"}),
            ),
        )
            .into_response();
    }
    let mut cmdb = i.cmdb();
    if let Some(status) = cmdb.fail_next.pop_front() {
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    if cmdb.throttle_next > 0 {
        cmdb.throttle_next -= 1;
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response();
    }
    if cmdb.garbage_next > 0 {
        cmdb.garbage_next -= 1;
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>Your instance is hibernating</body></html>",
        )
            .into_response();
    }
    if query.get("sysparm_data_source") != Some(&i.data_source) {
        cmdb.problems.push(format!("sysparm_data_source {query:?}"));
    }
    for (h, want) in [
        (header::CONTENT_TYPE, "application/json"),
        (header::ACCEPT, "application/json"),
    ] {
        if headers.get(&h).and_then(|v| v.to_str().ok()) != Some(want) {
            cmdb.problems.push(format!("{h} is not {want}"));
        }
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            cmdb.problems.push(format!("body is not JSON: {e}"));
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    let problems = validate(&payload, &i.data_source);
    cmdb.problems.extend(problems);
    cmdb.requests.push(payload.clone());
    // Identification by source: the same native key is the same CI.
    let mut sys_ids = Vec::new();
    let mut answered = Vec::new();
    let mut operations = Vec::new();
    for item in payload["items"].as_array().into_iter().flatten() {
        let class = item["className"].as_str().unwrap_or("").to_owned();
        let info = &item["sys_object_source_info"];
        let key = (
            info["source_name"].as_str().unwrap_or("").to_owned(),
            info["source_native_key"].as_str().unwrap_or("").to_owned(),
        );
        if cmdb.reject_class.as_deref() == Some(&class) {
            sys_ids.push(String::new());
            answered.push(json!({"className": class, "operation": "NO_CHANGE",
                "errors": [{"error": "INVALID_INPUT_DATA",
                            "message": format!("No Identifying rule found for class {class}")}]}));
            continue;
        }
        let next = format!("{:032x}", cmdb.cis.len() + 1);
        let (operation, sys_id) = if let Some(ci) = cmdb.cis.get_mut(&key) {
            let op = if ci.2 == item["values"] {
                "NO_CHANGE"
            } else {
                "UPDATE"
            };
            ci.1.clone_from(&class);
            ci.2 = item["values"].clone();
            (op, ci.0.clone())
        } else {
            cmdb.cis
                .insert(key, (next.clone(), class.clone(), item["values"].clone()));
            ("INSERT", next)
        };
        operations.push(operation.to_owned());
        answered.push(
            json!({"className": class, "operation": operation, "sysId": sys_id,
            "identifierEntrySysId": "Unknown", "identificationAttempts": []}),
        );
        sys_ids.push(sys_id);
    }
    let mut relations = Vec::new();
    for r in payload["relations"].as_array().into_iter().flatten() {
        let at = |k: &str| {
            r[k].as_u64()
                .and_then(|i| sys_ids.get(usize::try_from(i).ok()?))
                .cloned()
                .unwrap_or_default()
        };
        let (parent, child) = (at("parent"), at("child"));
        if parent.is_empty() || child.is_empty() {
            relations.push(json!({"className": "cmdb_rel_ci",
                "errors": [{"error": "INVALID_INPUT_DATA", "message": "relation to a rejected item"}]}));
            continue;
        }
        let new =
            cmdb.relations
                .insert((parent, child, r["type"].as_str().unwrap_or("").to_owned()));
        relations.push(json!({"className": "cmdb_rel_ci",
            "operation": if new { "INSERT" } else { "NO_CHANGE" }}));
    }
    cmdb.operations = operations;
    axum::Json(json!({"result": {"items": answered, "relations": relations}})).into_response()
}

/// The IRE payload format: `items` of CIs (`className`, `values`, optionally
/// `lookup`, `related`, `internal_id`, `settings`, `sys_object_source_info` with its
/// four documented keys), `relations` of two indices into `items` and a
/// `cmdb_rel_type` name.
fn validate(p: &Value, data_source: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(top) = p.as_object() else {
        return vec!["the payload is not an object".into()];
    };
    for k in top.keys() {
        if !matches!(k.as_str(), "items" | "relations" | "referenceItems") {
            problems.push(format!("unknown top-level key {k}"));
        }
    }
    let items = p["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        problems.push("no items".into());
    }
    let class_ok = |c: &str| {
        c.starts_with("cmdb_ci")
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    for (n, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            problems.push(format!("item {n} is not an object"));
            continue;
        };
        for k in obj.keys() {
            if !matches!(
                k.as_str(),
                "className"
                    | "values"
                    | "lookup"
                    | "related"
                    | "internal_id"
                    | "settings"
                    | "sys_object_source_info"
            ) {
                problems.push(format!("item {n}: unknown key {k}"));
            }
        }
        if !item["className"].as_str().is_some_and(class_ok) {
            problems.push(format!("item {n}: className {}", item["className"]));
        }
        match item["values"].as_object() {
            Some(values) => {
                for (k, v) in values {
                    let fine = match v {
                        Value::String(s) => s.chars().count() <= 255,
                        Value::Bool(_) | Value::Number(_) => true,
                        _ => false,
                    };
                    if !fine {
                        problems.push(format!("item {n}: value {k} = {v}"));
                    }
                }
                if values
                    .get("name")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    problems.push(format!("item {n}: no name"));
                }
            }
            None => problems.push(format!("item {n}: values is not an object")),
        }
        let info = &item["sys_object_source_info"];
        if info["source_name"] != data_source {
            problems.push(format!("item {n}: source_name {}", info["source_name"]));
        }
        if !info["source_native_key"]
            .as_str()
            .is_some_and(|k| !k.is_empty() && k.len() <= 255)
        {
            problems.push(format!("item {n}: source_native_key"));
        }
        let ts = info["source_recency_timestamp"].as_str().unwrap_or("");
        if chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S").is_err() {
            problems.push(format!("item {n}: source_recency_timestamp {ts:?}"));
        }
        for k in info.as_object().into_iter().flat_map(|o| o.keys()) {
            if !matches!(
                k.as_str(),
                "source_name" | "source_native_key" | "source_recency_timestamp" | "source_feature"
            ) {
                problems.push(format!("item {n}: sys_object_source_info.{k}"));
            }
        }
    }
    for (n, r) in p["relations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let idx = |k: &str| {
            r[k].as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .filter(|i| *i < items.len())
        };
        match (idx("parent"), idx("child")) {
            (Some(a), Some(b)) if a != b => {}
            _ => problems.push(format!("relation {n}: parent/child {r}")),
        }
        if r["type"] != "Depends on::Used by" {
            problems.push(format!("relation {n}: type {}", r["type"]));
        }
        if r.as_object().is_some_and(|o| o.len() != 3) {
            problems.push(format!("relation {n}: keys {r}"));
        }
    }
    problems
}

/// The graph every test exports: web uses db twice (two ports) and an outside
/// address; the switch sends db its logs.
async fn graph(api: &TestApi) -> HashMap<&'static str, String> {
    let mut ids = HashMap::new();
    for (name, ips, kind, os) in [
        ("web", "10.0.1.1", "server", Some("linux")),
        ("db", "10.0.2.1", "vm", None),
        ("core-sw", "10.0.0.1", "network_device", None),
        ("cdn", "198.51.100.7", "unknown", None),
    ] {
        let v = api
            .write(
                Method::POST,
                "/api/v1/assets",
                Some(
                    json!({"name": name, "ip_addresses": [ips], "asset_type": kind,
                            "os_family": os, "environment": "prod",
                            "fqdn": format!("{name}.example.com")}),
                ),
                StatusCode::CREATED,
            )
            .await;
        ids.insert(name, v["id"].as_str().unwrap().to_owned());
    }
    sqlx::query("UPDATE assets SET is_internal = false WHERE name = 'cdn'")
        .execute(&api.pool)
        .await
        .unwrap();
    api.dependency(&ids["web"], &ids["db"], 5432).await;
    api.dependency(&ids["web"], &ids["db"], 6432).await;
    api.dependency(&ids["web"], &ids["cdn"], 443).await;
    // db in two relations: with two CIs a request, sent twice, counted once.
    api.dependency(&ids["core-sw"], &ids["db"], 514).await;
    ids
}

/// Every record of a push is accepted, rejected or unsent, once.
fn accounted(status: &Value) {
    let r = &status["last_push"];
    let sum = |keys: &[&str]| keys.iter().map(|k| r[*k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        sum(&["accepted", "rejected", "unsent"]),
        sum(&["items", "relations"]),
        "{status}"
    );
}

/// (parent key, child key) of a payload's relations.
fn pairs(p: &Value) -> HashSet<(String, String)> {
    let key = |i: &Value| {
        p["items"][usize::try_from(i.as_u64().unwrap()).unwrap()]["sys_object_source_info"]
            ["source_native_key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    p["relations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (key(&r["parent"]), key(&r["child"])))
        .collect()
}

#[tokio::test]
async fn the_payload_on_demand_is_an_ire_payload_of_the_graph() {
    const URI: &str = "/api/v1/integrations/servicenow/payload";
    const PUSH: &str = "/api/v1/integrations/servicenow/push";
    let api = TestApi::new("sn_payload").await;
    let ids = graph(&api).await;
    let p = api.get(URI).await;
    assert_eq!(validate(&p, "FlowLens"), Vec::<String>::new(), "{p}");
    let classes: HashMap<String, String> = p["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["values"]["name"].as_str().unwrap().to_owned(),
                i["className"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        classes,
        HashMap::from([
            ("web".into(), "cmdb_ci_linux_server".into()),
            ("db".into(), "cmdb_ci_server".into()),
            ("core-sw".into(), "cmdb_ci_netgear".into()),
        ]),
        "the outside address is not a CI by default"
    );
    assert_eq!(
        pairs(&p),
        HashSet::from([
            (ids["web"].clone(), ids["db"].clone()),
            (ids["core-sw"].clone(), ids["db"].clone())
        ]),
        "two dependencies between web and db are one relation"
    );
    let db = p["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["values"]["name"] == "db")
        .unwrap();
    assert_eq!(db["values"]["ip_address"], "10.0.2.1");
    assert_eq!(db["values"]["fqdn"], "db.example.com");
    assert_eq!(db["values"]["used_for"], "Production");
    assert_eq!(db["values"]["virtual"], true);
    // Stable: the same graph is the same bytes.
    assert_eq!(api.get(URI).await, p);

    let all = api.get(&format!("{URI}?include_external=true")).await;
    assert_eq!(validate(&all, "FlowLens"), Vec::<String>::new());
    assert_eq!(all["items"].as_array().unwrap().len(), 4);
    assert_eq!(
        pairs(&all),
        HashSet::from([
            (ids["web"].clone(), ids["db"].clone()),
            (ids["core-sw"].clone(), ids["db"].clone()),
            (ids["web"].clone(), ids["cdn"].clone())
        ])
    );
    let none = api.get(&format!("{URI}?environment=dev")).await;
    assert_eq!(none, json!({"items": [], "relations": []}));

    let (s, _, _) = api.call(Method::GET, URI, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    api.get_as(
        Role::Viewer,
        &format!("{URI}?format=csv"),
        StatusCode::BAD_REQUEST,
    )
    .await;
    // Pushing is an admin's, and only when configured.
    let (s, _, _) = api
        .call(
            Method::POST,
            PUSH,
            Some(&TestApi::token(Role::Editor)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, v) = api
        .call(Method::POST, PUSH, Some(&TestApi::token(Role::Admin)), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let status = api.get("/api/v1/integrations/servicenow/status").await;
    assert_eq!(status["enabled"], false);
}

/// A second API instance on `api`'s database with the push enabled towards `url`.
async fn pushing_instance(
    api: &TestApi,
    url: &str,
    tweak: impl FnOnce(&mut flowlens_api::config::ServiceNowConfig),
) -> (AppState, Router) {
    let mut config = test_config();
    config.database.url = api.state.config.database.url.clone();
    let sn = &mut config.api.integrations.servicenow;
    sn.enabled = true;
    url.clone_into(&mut sn.instance_url);
    sn.username = "flowlens.integration".into();
    sn.password = "user-pass".into();
    tweak(sn);
    config.validate().unwrap();
    let pool = flowlens_api::connect(config.database.url.as_deref().unwrap(), 4)
        .await
        .unwrap();
    let state = AppState::new(config, pool).unwrap();
    state.start_background();
    let app = flowlens_api::app(state.clone());
    (state, app)
}

/// Waits for push number `n` of `state` (counting from 1) to end, and returns its
/// report as the status endpoint shows it.
async fn wait_push(app: &Router, pushes: &mut usize) -> Value {
    *pushes += 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = get_json(app, "/api/v1/integrations/servicenow/status").await;
        if status["pushes"].as_u64() >= Some(*pushes as u64) && status["running"] == false {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "no push: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET `uri` of `app` as a viewer: the JSON answer, or the text as a string.
async fn get_json(app: &Router, uri: &str) -> Value {
    let req = axum::http::Request::get(uri)
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", TestApi::token(Role::Viewer)),
        )
        .body(axum::body::Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "GET {uri}");
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
}

async fn push_now(app: &Router) {
    let req = axum::http::Request::post("/api/v1/integrations/servicenow/push")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", TestApi::token(Role::Admin)),
        )
        .body(axum::body::Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn the_push_at_start_fills_the_cmdb_and_pushing_again_creates_nothing_new() {
    let api = TestApi::new("sn_push").await;
    let ids = graph(&api).await;
    let (sn, url) = Instance::start(Auth::Basic {
        user: "flowlens.integration".into(),
        password: "user-pass".into(),
    })
    .await;
    // Two CIs per request: each relation's pair in one (db in both).
    let (state, app) = pushing_instance(&api, &url, |c| c.batch_size = 2).await;
    let mut pushes = 0;
    let status = wait_push(&app, &mut pushes).await;
    assert_eq!(status["leader"], true, "{status}");
    let report = &status["last_push"];
    assert_eq!(report["outcome"], "ok", "{status}");
    assert_eq!(
        (&report["items"], &report["relations"], &report["requests"]),
        (&json!(3), &json!(2), &json!(2)),
        "{status}"
    );
    assert_eq!(
        report["accepted"], 5,
        "db sent twice, counted once: {status}"
    );
    accounted(&status);
    {
        let cmdb = sn.cmdb();
        assert_eq!(cmdb.problems, Vec::<String>::new());
        assert_eq!(cmdb.cis.len(), 3, "a CI per internal asset");
        let keys: HashSet<&str> = cmdb.cis.keys().map(|k| k.1.as_str()).collect();
        assert_eq!(
            keys,
            HashSet::from([
                ids["web"].as_str(),
                ids["db"].as_str(),
                ids["core-sw"].as_str()
            ])
        );
        assert_eq!(cmdb.relations.len(), 2);
        let web = &cmdb.cis[&("FlowLens".to_owned(), ids["web"].clone())];
        let db = &cmdb.cis[&("FlowLens".to_owned(), ids["db"].clone())];
        assert!(cmdb.relations.contains(&(
            web.0.clone(),
            db.0.clone(),
            "Depends on::Used by".to_owned()
        )));
        assert!(
            cmdb.requests
                .iter()
                .all(|r| r["items"].as_array().unwrap().len() <= 2)
        );
    }

    // Renamed and pushed again: the same CIs, updated; no new CI, no new relation.
    api.write(
        Method::PATCH,
        &format!("/api/v1/assets/{}", ids["db"]),
        Some(json!({"name": "orders-db"})),
        StatusCode::OK,
    )
    .await;
    push_now(&app).await;
    let status = wait_push(&app, &mut pushes).await;
    assert_eq!(status["last_push"]["outcome"], "ok", "{status}");
    {
        let cmdb = sn.cmdb();
        assert_eq!(cmdb.problems, Vec::<String>::new());
        assert_eq!(cmdb.cis.len(), 3, "identified by source key: nothing new");
        assert_eq!(cmdb.relations.len(), 2);
        assert_eq!(
            cmdb.cis[&("FlowLens".to_owned(), ids["db"].clone())].2["name"],
            "orders-db"
        );
    }
    // Another instance with the push enabled waits for the lock.
    let (other, other_app) = pushing_instance(&api, &url, |_| {}).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while other.servicenow.get().unwrap().ticks() == 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let req = sn.cmdb().requests.len();
    let s = get_json(&other_app, "/api/v1/integrations/servicenow/status").await;
    assert_eq!(
        (&s["leader"], &s["pushes"]),
        (&json!(false), &json!(0)),
        "{s}"
    );
    assert_eq!(sn.cmdb().requests.len(), req, "one instance pushes");
    drop(state);
}

#[tokio::test]
async fn oauth_tokens_are_fetched_once_and_renewed_when_refused() {
    let api = TestApi::new("sn_oauth").await;
    graph(&api).await;
    let (sn, url) = Instance::start(Auth::OAuth {
        client_id: "c1d".into(),
        secret: "client-secret".into(),
    })
    .await;
    let (_state, app) = pushing_instance(&api, &url, |c| {
        c.auth = "oauth".into();
        c.client_id = "c1d".into();
        c.client_secret = "client-secret".into();
        c.batch_size = 2;
    })
    .await;
    let mut pushes = 0;
    let status = wait_push(&app, &mut pushes).await;
    assert_eq!(status["last_push"]["outcome"], "ok", "{status}");
    assert_eq!(sn.cmdb().token_requests, 1, "one token for both requests");
    // The instance forgets its tokens (revoked, restarted): a new one is fetched.
    sn.cmdb().tokens.clear();
    push_now(&app).await;
    let status = wait_push(&app, &mut pushes).await;
    assert_eq!(status["last_push"]["outcome"], "ok", "{status}");
    assert_eq!(sn.cmdb().token_requests, 2);
    assert_eq!(sn.cmdb().cis.len(), 3);
    assert_eq!(sn.cmdb().problems, Vec::<String>::new());

    // The client-credentials grant, with a lifetime from outside that would overflow
    // a clock: bounded, and the token used.
    sn.cmdb().expires_in = u64::MAX;
    let (_cc, cc_app) = pushing_instance(&api, &url, |c| {
        c.auth = "oauth".into();
        c.oauth_grant_type = "client_credentials".into();
        c.client_id = "c1d".into();
        c.client_secret = "client-secret".into();
        c.username = String::new();
        c.password = String::new();
    })
    .await;
    push_now(&cc_app).await;
    let mut cc_pushes = 0;
    let status = wait_push(&cc_app, &mut cc_pushes).await;
    assert_eq!(status["last_push"]["outcome"], "ok", "{status}");
    accounted(&status);

    // A refused secret: failed, and the error does not repeat what the server echoed.
    let (_bad, bad_app) = pushing_instance(&api, &url, |c| {
        c.auth = "oauth".into();
        c.client_id = "c1d".into();
        c.client_secret = "wrong-secret-4711".into();
    })
    .await;
    push_now(&bad_app).await;
    let mut bad_pushes = 0;
    let status = wait_push(&bad_app, &mut bad_pushes).await;
    let report = &status["last_push"];
    assert_eq!(report["outcome"], "failed", "{status}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("access_denied"), "{error}");
    assert!(
        !error.contains("wrong-secret-4711") && !error.contains("user-pass"),
        "{error}"
    );
    accounted(&status);
}

#[tokio::test]
async fn failures_are_retried_reported_and_every_record_counted() {
    let api = TestApi::new("sn_fail").await;
    graph(&api).await;
    let (sn, url) = Instance::start(Auth::Basic {
        user: "flowlens.integration".into(),
        password: "user-pass".into(),
    })
    .await;
    // The first request meets a 503, then is served after the backoff.
    sn.cmdb().fail_next.push_back(503);
    let (_state, app) = pushing_instance(&api, &url, |c| c.batch_size = 2).await;
    let mut pushes = 0;
    let status = wait_push(&app, &mut pushes).await;
    assert_eq!(status["last_push"]["outcome"], "ok", "{status}");
    assert_eq!(status["last_push"]["accepted"], 5, "{status}");
    assert_eq!(sn.cmdb().cis.len(), 3);

    // Throttled: the server's Retry-After is waited out.
    sn.cmdb().throttle_next = 1;
    push_now(&app).await;
    let status = wait_push(&app, &mut pushes).await;
    assert_eq!(status["last_push"]["outcome"], "ok", "{status}");
    accounted(&status);

    // A class the instance has no rule for: that CI and its relation rejected, the
    // rest accepted.
    sn.cmdb().reject_class = Some("cmdb_ci_netgear".into());
    push_now(&app).await;
    let status = wait_push(&app, &mut pushes).await;
    let report = &status["last_push"];
    assert_eq!(report["outcome"], "partial", "{status}");
    assert_eq!(
        (&report["accepted"], &report["rejected"], &report["unsent"]),
        (&json!(3), &json!(2), &json!(0)),
        "{status}"
    );
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("No Identifying rule found for class cmdb_ci_netgear"),
        "{status}"
    );
    sn.cmdb().reject_class = None;

    // A 200 that is not the IRE's answer (a proxy's page), then a 400: each request
    // fails alone, the push goes on, and what only it carried is unsent.
    for trouble in ["garbage", "400"] {
        if trouble == "garbage" {
            sn.cmdb().garbage_next = 1;
        } else {
            sn.cmdb().fail_next.push_back(400);
        }
        push_now(&app).await;
        let status = wait_push(&app, &mut pushes).await;
        let report = &status["last_push"];
        assert_eq!(report["outcome"], "partial", "{trouble}: {status}");
        assert_eq!(
            (&report["requests"], &report["failed_requests"]),
            (&json!(2), &json!(1)),
            "{trouble}: {status}"
        );
        assert_eq!(
            (&report["accepted"], &report["unsent"]),
            (&json!(3), &json!(2)),
            "one CI and its relation; db went in the other request: {status}"
        );
        let error = report["error"].as_str().unwrap();
        assert!(
            error.contains(if trouble == "garbage" {
                "not the IRE's"
            } else {
                "HTTP 400"
            }),
            "{error}"
        );
    }

    // The password changed on the instance: the push stops at the first refusal and
    // counts everything unsent.
    *sn.auth.lock().unwrap() = Auth::Basic {
        user: "flowlens.integration".into(),
        password: "rotated".into(),
    };
    let before = sn.cmdb().requests.len();
    push_now(&app).await;
    let status = wait_push(&app, &mut pushes).await;
    let report = &status["last_push"];
    assert_eq!(report["outcome"], "failed", "{status}");
    assert_eq!(
        (&report["requests"], &report["failed_requests"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(
        report["unsent"],
        json!(5),
        "3 CIs and 2 relations: {status}"
    );
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("refused the credentials"),
        "{status}"
    );
    assert_eq!(sn.cmdb().requests.len(), before);

    // Nothing listening: retried, then given up after two requests in a row fail.
    let (_state2, app2) = pushing_instance(&api, "http://127.0.0.1:9", |c| {
        c.max_attempts = 2;
        c.timeout_seconds = 2;
        c.batch_size = 2;
    })
    .await;
    // The first instance holds the scheduling lock: this one pushes when asked.
    push_now(&app2).await;
    let mut pushes2 = 0;
    let status = wait_push(&app2, &mut pushes2).await;
    let report = &status["last_push"];
    assert_eq!(report["outcome"], "failed", "{status}");
    assert_eq!(report["unsent"], 5, "{status}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("could not connect"), "{error}");

    let m = get_json(&app, "/api/v1/admin/metrics").await;
    let m = m.as_str().unwrap();
    for series in [
        r#"flowlens_api_servicenow_pushes_total{outcome="partial"}"#,
        r#"flowlens_api_servicenow_pushes_total{outcome="failed"}"#,
        r#"flowlens_api_servicenow_records_total{kind="ci",outcome="rejected"}"#,
        r#"flowlens_api_servicenow_records_total{kind="relation",outcome="unsent"}"#,
        "flowlens_api_servicenow_last_success_timestamp_seconds",
    ] {
        assert!(m.contains(series), "{series} missing: {m}");
    }
}
