use axum::http::{Method, StatusCode};
use flowlens_api::auth::Role;
use serde_json::{Value, json};

use crate::support::TestApi;

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn create_get_patch_delete_with_audit_and_change_events() {
    let api = TestApi::new("assets_crud").await;
    let created = api
        .write(
            Method::POST,
            "/api/v1/assets",
            Some(json!({
                "name": "db-primary", "fqdn": "db1.corp.example", "asset_type": "server",
                "ip_addresses": ["10.0.3.10", "fd00::10"], "mac_addresses": ["00:11:22:33:44:55"],
                "environment": "prod", "tags": {"team": "payments", "tier": 1},
                "os_family": "linux"
            })),
            StatusCode::CREATED,
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["discovery_source"], "manual");
    assert_eq!(created["ip_addresses"], json!(["10.0.3.10", "fd00::10"]));
    assert_eq!(created["mac_addresses"], json!(["00:11:22:33:44:55"]));
    assert_eq!(created["confidence"], 1.0);
    assert_eq!(created["tags"]["team"], "payments");

    let got = api.get(&format!("/api/v1/assets/{id}")).await;
    assert_eq!(got, created);

    // Patch: change the name, clear the FQDN, leave the rest alone.
    let patched = api
        .write(
            Method::PATCH,
            &format!("/api/v1/assets/{id}"),
            Some(json!({"name": "db-main", "fqdn": null})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(patched["name"], "db-main");
    assert_eq!(patched["fqdn"], Value::Null);
    assert_eq!(patched["environment"], "prod");
    let change: (Value, Value) = sqlx::query_as(
        "SELECT before_state, after_state FROM change_events
         WHERE change_type = 'asset_changed' AND entity_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&api.pool)
    .await
    .unwrap();
    assert_eq!(
        change.0,
        json!({"name": "db-primary", "fqdn": "db1.corp.example"})
    );
    assert_eq!(change.1, json!({"name": "db-main", "fqdn": null}));

    let gone = api
        .write(
            Method::DELETE,
            &format!("/api/v1/assets/{id}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    assert_eq!(gone, Value::Null);
    api.get_as(
        Role::Viewer,
        &format!("/api/v1/assets/{id}"),
        StatusCode::NOT_FOUND,
    )
    .await;
    // Its addresses are free again.
    api.asset("db-reborn", &["10.0.3.10"]).await;

    let audit: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT actor, action, entity_type FROM audit_logs WHERE entity_id = $1::uuid ORDER BY id",
    )
    .bind(&id)
    .fetch_all(&api.pool)
    .await
    .unwrap();
    let editor = ("editor".to_owned(), String::new(), "asset".to_owned());
    assert_eq!(
        audit
            .iter()
            .map(|(a, act, e)| (a.clone(), act.as_str(), e.clone()))
            .collect::<Vec<_>>(),
        vec![
            (editor.0.clone(), "create", editor.2.clone()),
            (editor.0.clone(), "update", editor.2.clone()),
            (editor.0.clone(), "delete", editor.2.clone()),
        ]
    );
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT change_type FROM change_events WHERE entity_id = $1::uuid ORDER BY detected_at, change_type",
    )
    .bind(&id)
    .fetch_all(&api.pool)
    .await
    .unwrap();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    for k in ["new_asset", "asset_changed", "removed_asset"] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
}

#[tokio::test]
async fn bad_input_gets_4xx_problems_never_500() {
    let api = TestApi::new("assets_bad").await;
    let owner = api.asset("web-1", &["10.0.1.1"]).await;
    let cases: Vec<(Method, String, Option<Value>, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/api/v1/assets".into(),
            Some(json!({"name": "x", "ip_addresses": ["10.0.1.1"]})),
            StatusCode::CONFLICT,
            "belongs to asset",
        ),
        (
            Method::POST,
            "/api/v1/assets".into(),
            Some(json!({"name": "x", "asset_type": "toaster"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "asset_type",
        ),
        (
            Method::POST,
            "/api/v1/assets".into(),
            Some(json!({"name": "x", "colour": "red"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field",
        ),
        (
            Method::POST,
            "/api/v1/assets".into(),
            Some(json!({"name": "x", "ip_addresses": ["10.0.0.300"]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not an IP address",
        ),
        (
            Method::POST,
            "/api/v1/assets".into(),
            Some(json!({"name": "x", "confidence": 2})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "confidence",
        ),
        (
            Method::POST,
            "/api/v1/assets".into(),
            Some(json!({"name": "x", "mac_addresses": ["nope"]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "\"nope\" is not a MAC address",
        ),
        (
            Method::POST,
            "/api/v1/assets".into(),
            Some(json!({"name": ""})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            Method::GET,
            "/api/v1/assets/not-a-uuid".into(),
            None,
            StatusCode::BAD_REQUEST,
            "UUID",
        ),
        (
            Method::GET,
            format!("/api/v1/assets/{}", uuid::Uuid::new_v4()),
            None,
            StatusCode::NOT_FOUND,
            "not found",
        ),
        (
            Method::PATCH,
            format!("/api/v1/assets/{owner}"),
            Some(json!({})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "changes nothing",
        ),
        (
            Method::PATCH,
            format!("/api/v1/assets/{owner}"),
            Some(json!({"id": "x"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field",
        ),
        (
            Method::GET,
            "/api/v1/assets?page_size=1001".into(),
            None,
            StatusCode::BAD_REQUEST,
            "page_size",
        ),
        (
            Method::GET,
            "/api/v1/assets?page=0".into(),
            None,
            StatusCode::BAD_REQUEST,
            "page",
        ),
        (
            Method::GET,
            "/api/v1/assets?colour=red".into(),
            None,
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            Method::GET,
            "/api/v1/assets?ip=10.0.0.0/33".into(),
            None,
            StatusCode::BAD_REQUEST,
            "CIDR",
        ),
        (
            Method::GET,
            "/api/v1/assets?since=yesterday".into(),
            None,
            StatusCode::BAD_REQUEST,
            "since",
        ),
        (
            Method::GET,
            "/api/v1/assets?stale=maybe".into(),
            None,
            StatusCode::BAD_REQUEST,
            "stale",
        ),
        (
            Method::GET,
            "/api/v1/nowhere".into(),
            None,
            StatusCode::NOT_FOUND,
            "route",
        ),
    ];
    for (method, uri, body, status, needle) in cases {
        let v = api.write(method.clone(), &uri, body, status).await;
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(needle),
            "{method} {uri}: {detail:?} lacks {needle:?}"
        );
    }
    // A body that is not JSON at all, and one without a content type.
    let t = TestApi::token(Role::Editor);
    let req = axum::http::Request::post("/api/v1/assets")
        .header("authorization", format!("Bearer {t}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{not json"))
        .unwrap();
    assert_eq!(api.send(req).await.0, StatusCode::BAD_REQUEST);
    let req = axum::http::Request::post("/api/v1/assets")
        .header("authorization", format!("Bearer {t}"))
        .body(axum::body::Body::from("{}"))
        .unwrap();
    assert_eq!(api.send(req).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Over the body limit: 413, in our shape.
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(3 << 20));
    let req = axum::http::Request::post("/api/v1/assets")
        .header("authorization", format!("Bearer {t}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(huge))
        .unwrap();
    let (s, h, _) = api.send(req).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h["content-type"], "application/problem+json");
    // Moving an address onto another asset by PATCH is a conflict too.
    let other = api.asset("web-2", &["10.0.1.2"]).await;
    let v = api
        .write(
            Method::PATCH,
            &format!("/api/v1/assets/{other}"),
            Some(json!({"ip_addresses": ["10.0.1.2", "10.0.1.1"]})),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(v["detail"].as_str().unwrap().contains(&owner), "{v}");
}

#[tokio::test]
async fn list_filters_search_and_pages() {
    let api = TestApi::new("assets_list").await;
    let specs = [
        (
            "web-prod-01",
            "10.0.1.11",
            "server",
            "prod",
            json!({"team": "web"}),
            Some("aws"),
        ),
        (
            "web-prod-02",
            "10.0.1.12",
            "vm",
            "prod",
            json!({"team": "web"}),
            Some("aws"),
        ),
        (
            "db-prod-01",
            "10.0.3.10",
            "server",
            "prod",
            json!({"team": "data"}),
            None,
        ),
        (
            "cache-stage",
            "10.9.0.5",
            "container",
            "staging",
            json!({"pci": true}),
            Some("gcp"),
        ),
        (
            "dns",
            "192.168.1.53",
            "network_device",
            "prod",
            json!({}),
            None,
        ),
    ];
    for (name, ip, kind, env, tags, cloud) in &specs {
        api.write(
            Method::POST,
            "/api/v1/assets",
            Some(
                json!({"name": name, "ip_addresses": [ip], "asset_type": kind,
                        "environment": env, "tags": tags, "cloud_provider": cloud}),
            ),
            StatusCode::CREATED,
        )
        .await;
    }
    // One flow-discovered asset, seen long ago.
    sqlx::query(
        "INSERT INTO assets (name, asset_type, ip_addresses, first_seen, last_seen, discovery_source)
         VALUES ('203.0.113.9', 'unknown', '{203.0.113.9}', now() - interval '30 days',
                 now() - interval '20 days', 'flow')",
    )
    .execute(&api.pool)
    .await
    .unwrap();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let q = |query: &str| format!("/api/v1/assets?{query}");
    let cases: [(&str, &[&str]); 12] = [
        ("type=server", &["db-prod-01", "web-prod-01"]),
        ("environment=staging", &["cache-stage"]),
        ("tag=team", &["db-prod-01", "web-prod-01", "web-prod-02"]),
        ("tag=team:web", &["web-prod-01", "web-prod-02"]),
        ("cloud_provider=aws", &["web-prod-01", "web-prod-02"]),
        ("ip=10.0.1.0/24", &["web-prod-01", "web-prod-02"]),
        ("ip=10.0.3.10", &["db-prod-01"]),
        ("discovery_source=flow", &["203.0.113.9"]),
        (
            "since=2020-01-01T00:00:00Z&discovery_source=flow",
            &["203.0.113.9"],
        ),
        (
            "type=server&environment=prod&tag=team:data",
            &["db-prod-01"],
        ),
        ("q=192.168", &["dns"]),
        ("q=stage", &["cache-stage"]),
    ];
    for (query, want) in cases {
        let page = api.get(&q(query)).await;
        assert_eq!(sorted(names(&page)), want.to_vec(), "{query}");
        assert_eq!(page["total"], want.len(), "{query}");
    }
    // Stale and external (what the daemon marks), and the default for manual ones.
    sqlx::query(
        "UPDATE assets SET stale = (name = 'dns'), is_internal = (name <> '203.0.113.9')
         WHERE discovery_source = 'flow' OR name = 'dns'",
    )
    .execute(&api.pool)
    .await
    .unwrap();
    assert_eq!(sorted(names(&api.get(&q("stale=true")).await)), ["dns"]);
    assert_eq!(
        sorted(names(&api.get(&q("internal=false")).await)),
        ["203.0.113.9"]
    );
    assert_eq!(
        api.get(&q("internal=true")).await["total"],
        5,
        "NULL counts as internal"
    );
    let recent = api
        .get(&q(&format!(
            "since={}",
            (chrono::Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ")
        )))
        .await;
    assert_eq!(recent["total"], 5);
    // Search ranks the closest name first, typos included.
    let found = names(&api.get(&q("q=web-prod-01")).await);
    assert_eq!(found[0], "web-prod-01", "{found:?}");
    let fuzzy = names(&api.get(&q("q=web-prd-02")).await);
    assert_eq!(
        fuzzy.first().map(String::as_str),
        Some("web-prod-02"),
        "{fuzzy:?}"
    );
    // A search for a LIKE wildcard does not match everything.
    assert_eq!(api.get(&q("q=%25")).await["total"], 0);
    // Pages: 6 assets, 4 per page.
    let p1 = api.get(&q("page_size=4")).await;
    let p2 = api.get(&q("page_size=4&page=2")).await;
    assert_eq!(
        (p1["total"].clone(), p2["total"].clone()),
        (json!(6), json!(6))
    );
    assert_eq!((names(&p1).len(), names(&p2).len()), (4, 2));
    let mut all = names(&p1);
    all.extend(names(&p2));
    assert_eq!(sorted(all).len(), 6);
    assert_eq!(names(&api.get(&q("page_size=4&page=3")).await).len(), 0);
    // The default page size comes from config.
    assert_eq!(api.get(&q("")).await["page_size"], 50);
}

/// Address, MAC and tag lists are bounded (documented constants), duplicates go by a
/// set, and an IPv4-mapped IPv6 address is its IPv4 address, so one host cannot be in
/// two assets.
#[tokio::test]
async fn address_and_tag_lists_are_bounded_and_normalised() {
    use flowlens_api::routes::assets::{MAX_ADDRESSES, MAX_MAC_ADDRESSES, MAX_TAGS};
    let api = TestApi::new("assets_bounds").await;
    let too_many: Vec<String> = (0..=MAX_ADDRESSES)
        .map(|i| format!("10.9.{}.{}", i / 256, i % 256))
        .collect();
    let v = api
        .write(
            Method::POST,
            "/api/v1/assets",
            Some(json!({"name": "many", "ip_addresses": too_many})),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(v.to_string().contains("at most"), "{v}");
    let macs: Vec<String> = (0..=MAX_MAC_ADDRESSES)
        .map(|i| format!("00:11:22:33:44:{i:02x}"))
        .collect();
    let tags: serde_json::Map<String, Value> = (0..=MAX_TAGS)
        .map(|i| (format!("t{i}"), json!(i)))
        .collect();
    for body in [
        json!({"name": "macs", "mac_addresses": macs}),
        json!({"name": "tags", "tags": tags}),
    ] {
        api.write(
            Method::POST,
            "/api/v1/assets",
            Some(body),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    // The same host written three ways is one address.
    let dup = api
        .write(
            Method::POST,
            "/api/v1/assets",
            Some(json!({"name": "mapped",
                        "ip_addresses": ["::ffff:10.0.9.1", "10.0.9.1", "::FFFF:10.0.9.1"]})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(dup["ip_addresses"], json!(["10.0.9.1"]));
    api.write(
        Method::POST,
        "/api/v1/assets",
        Some(json!({"name": "other", "ip_addresses": ["10.0.9.1"]})),
        StatusCode::CONFLICT,
    )
    .await;
}

/// Every MAC form the API lets through is one PostgreSQL's `macaddr` takes (so a
/// well-formed MAC never meets the database's own refusal).
#[tokio::test]
async fn mac_address_forms_the_api_accepts_are_stored() {
    let api = TestApi::new("asset_macs").await;
    let v = api
        .write(
            Method::POST,
            "/api/v1/assets",
            Some(json!({"name": "m", "mac_addresses": [
                "08:00:2b:01:02:03", "08-00-2B-01-02-04", "08002b:010205",
                "0800.2b01.0206", "08002b010207", "0800-2b01-0208"
            ]})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(v["mac_addresses"].as_array().unwrap().len(), 6, "{v}");
    assert_eq!(v["mac_addresses"][3], "08:00:2b:01:02:06", "{v}");
}
