use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::graph_fixture::{Fixture, build};
use crate::support::TestApi;

async fn post(api: &TestApi, path: &str, body: Value, expect: StatusCode) -> Value {
    let (s, _, v) = api
        .call(
            Method::POST,
            &format!("/api/v1/analysis/{path}"),
            Some(&TestApi::token(flowlens_api::auth::Role::Viewer)),
            Some(body),
        )
        .await;
    assert_eq!(s, expect, "{path}: {v}");
    v
}

/// `name@depth`, sorted.
fn affected(f: &Fixture, impact: &Value) -> Vec<String> {
    let mut v: Vec<String> = impact["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}@{}", f.name(a["asset"].as_str().unwrap()), a["depth"]))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn impact_path_spof_blast_on_a_known_graph() {
    let api = TestApi::new("analysis").await;
    let f = build(&api).await;
    let db = f.id("db");

    let v = post(&api, "impact", json!({"asset_id": db}), StatusCode::OK).await;
    assert_eq!(
        affected(&f, &v["impact"]),
        ["app@1", "client1@3", "client2@3", "stage@1", "web@2"]
    );
    assert_eq!(v["impact"]["by_depth"], json!([2, 1, 2]));
    assert_eq!(
        v["names"][db],
        Value::Null,
        "the failed asset is not among the affected"
    );
    assert_eq!(v["names"][f.id("app")], "app");
    assert_eq!(
        v["graph"]["dependencies"], 6,
        "the stale dependency is not in the snapshot"
    );
    let v = post(
        &api,
        "impact",
        json!({"asset_id": db, "max_depth": 1}),
        StatusCode::OK,
    )
    .await;
    assert_eq!(affected(&f, &v["impact"]), ["app@1", "stage@1"]);
    assert_eq!(v["impact"]["truncated"], true);
    let dep = &f.d["app->db:5432"];
    let v = post(
        &api,
        "impact",
        json!({"dependency_id": dep}),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        affected(&f, &v["impact"]),
        ["app@1", "client1@3", "client2@3", "web@2"]
    );

    let v = post(
        &api,
        "path",
        json!({"from": f.id("client1"), "to": db}),
        StatusCode::OK,
    )
    .await;
    let hops: Vec<&str> = v["shortest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| f.name(s["asset"].as_str().unwrap()))
        .collect();
    assert_eq!(hops, ["client1", "web", "app", "db"]);
    assert_eq!(v["shortest"][3]["dependency"], dep.as_str());
    assert_eq!(v["all"]["paths"].as_array().unwrap().len(), 1);
    // Against the direction there is no path, unless direction is ignored.
    let v = post(
        &api,
        "path",
        json!({"from": db, "to": f.id("client1")}),
        StatusCode::OK,
    )
    .await;
    assert_eq!(v["shortest"], Value::Null);
    let v = post(
        &api,
        "path",
        json!({"from": f.id("client1"), "to": f.id("stage"), "directed": false}),
        StatusCode::OK,
    )
    .await;
    assert_eq!(v["shortest"].as_array().unwrap().len(), 5);

    let v = api.get("/api/v1/analysis/spof").await;
    let mut points: Vec<&str> = v["spof"]["articulation_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| f.name(p["asset"].as_str().unwrap()))
        .collect();
    points.sort_unstable();
    assert_eq!(points, ["app", "db", "web"]);
    assert_eq!(
        v["spof"]["bridges"].as_array().unwrap().len(),
        6,
        "a tree: every link is a bridge"
    );
    let single: Vec<(i64, &str)> = v["spof"]["single_provider_services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["service"]["port"].as_i64().unwrap(),
                f.name(s["provider"].as_str().unwrap()),
            )
        })
        .collect();
    assert!(
        single.contains(&(5432, "db")) && single.contains(&(8080, "app")),
        "{single:?}"
    );

    let v = post(
        &api,
        "blast-radius",
        json!({"asset_id": db}),
        StatusCode::OK,
    )
    .await;
    let b = &v["blast_radius"];
    assert_eq!(affected(&f, &b["impact"]).len(), 5);
    let score = b["score"].as_f64().unwrap();
    // 100 * (1 + 1 + 1/2 + 1/3 + 1/3) / (9 assets in the snapshot - 1)
    assert!((score - 100.0 * (19.0 / 6.0) / 8.0).abs() < 0.01, "{score}");
    let lost: Vec<i64> = b["affected_services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"]["port"].as_i64().unwrap())
        .collect();
    assert!(lost.contains(&5432) && lost.contains(&8080), "{lost:?}");

    // Bad requests.
    let ghost = uuid::Uuid::new_v4();
    post(&api, "impact", json!({}), StatusCode::UNPROCESSABLE_ENTITY).await;
    post(
        &api,
        "impact",
        json!({"asset_id": db, "dependency_id": dep}),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    post(
        &api,
        "impact",
        json!({"asset_id": ghost}),
        StatusCode::NOT_FOUND,
    )
    .await;
    post(
        &api,
        "impact",
        json!({"asset_id": db, "max_depth": 51}),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    post(
        &api,
        "impact",
        json!({"asset_id": "db"}),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    post(
        &api,
        "path",
        json!({"from": db, "to": ghost}),
        StatusCode::NOT_FOUND,
    )
    .await;
    post(
        &api,
        "path",
        json!({"from": db, "to": db, "max_paths": 101}),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    post(
        &api,
        "blast-radius",
        json!({"asset_id": ghost}),
        StatusCode::NOT_FOUND,
    )
    .await;
    post(
        &api,
        "blast-radius",
        json!({"asset_id": db, "depth": 1}),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}

#[tokio::test]
async fn answers_follow_the_graph_as_it_changes() {
    let api = TestApi::new("analysis_live").await;
    let f = build(&api).await;
    let db = f.id("db");
    let first = post(
        &api,
        "impact",
        json!({"asset_id": db, "max_depth": 1}),
        StatusCode::OK,
    )
    .await;
    let v1 = first["graph"]["version"].as_u64().unwrap();
    // Unchanged graph: the same snapshot answers.
    let again = post(
        &api,
        "blast-radius",
        json!({"asset_id": db}),
        StatusCode::OK,
    )
    .await;
    assert_eq!(again["graph"]["version"].as_u64().unwrap(), v1);
    // An API write is seen by the next request.
    api.dependency(f.id("client1"), db, 5432).await;
    let v = post(
        &api,
        "impact",
        json!({"asset_id": db, "max_depth": 1}),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        affected(&f, &v["impact"]),
        ["app@1", "client1@1", "stage@1"]
    );
    assert!(v["graph"]["version"].as_u64().unwrap() > v1);
    // The daemon's write plus its change event (NOTIFY) is seen shortly after.
    sqlx::query(
        "WITH d AS (INSERT INTO dependencies (source_asset_id, target_asset_id, protocol, port,
                        first_seen, last_seen) VALUES ($1::uuid, $2::uuid, 6, 5432, now(), now())
                    RETURNING id)
         INSERT INTO change_events (change_type, entity_type, entity_id, after_state)
         SELECT 'new_dependency', 'dependency', id, '{}' FROM d",
    )
    .bind(f.id("lonely"))
    .bind(db)
    .execute(&api.pool)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = post(
            &api,
            "impact",
            json!({"asset_id": db, "max_depth": 1}),
            StatusCode::OK,
        )
        .await;
        if affected(&f, &v["impact"]).contains(&"lonely@1".to_owned()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the snapshot never saw the daemon's change"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SPOF, impact and blast radius are computed once per snapshot: a second asking is
/// answered from the snapshot's own cache, and a change computes afresh.
#[tokio::test]
async fn analyses_are_computed_once_per_snapshot() {
    let api = TestApi::new("analysis_cached").await;
    let f = build(&api).await;
    let first = api.get("/api/v1/analysis/spof").await;
    let snap = api.state.snapshot.get(&api.state.pool).await.unwrap();
    assert!(snap.answers.contains_key("spof"));
    let again = api.get("/api/v1/analysis/spof").await;
    assert_eq!(first, again);
    let body = json!({"asset_id": f.id("db"), "max_depth": 3});
    post(&api, "blast-radius", body.clone(), StatusCode::OK).await;
    assert!(
        snap.answers
            .contains_key(&format!("blast:{}:3", f.id("db")))
    );
    // A change: the next snapshot starts with no answers.
    api.asset("newcomer", &["10.99.0.1"]).await;
    let fresh = api.state.snapshot.get(&api.state.pool).await.unwrap();
    assert!(fresh.info.version > snap.info.version);
    assert!(!fresh.answers.contains_key("spof"));
}

/// A hub's dependencies come a page per direction with bounded totals, and lists
/// count up to `max_count` and refuse pages past `max_offset`.
#[tokio::test]
async fn long_lists_are_paged_and_counted_within_bounds() {
    let api = TestApi::with("analysis_pages", |c| {
        c.api.pagination.max_count = 5;
        c.api.pagination.max_offset = 20;
    })
    .await;
    let hub = api.asset("hub", &["10.50.0.1"]).await;
    for i in 0..7 {
        let client = api
            .asset(&format!("c{i}"), &[&format!("10.50.1.{i}")])
            .await;
        api.dependency(&client, &hub, 443).await;
    }
    let v = api
        .get(&format!("/api/v1/assets/{hub}/dependencies?page_size=3"))
        .await;
    assert_eq!(v["inbound"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(
        (v["inbound_total"].as_i64(), v["total_capped"].as_bool()),
        (Some(5), Some(true))
    );
    assert_eq!(v["outbound_total"], 0);
    let last = api
        .get(&format!(
            "/api/v1/assets/{hub}/dependencies?page_size=3&page=3"
        ))
        .await;
    assert_eq!(last["inbound"].as_array().unwrap().len(), 1, "{last}");
    let page = api.get("/api/v1/assets?page_size=2").await;
    assert_eq!(
        (page["total"].as_i64(), page["total_capped"].as_bool()),
        (Some(5), Some(true))
    );
    let deps = api.get("/api/v1/dependencies?page_size=2").await;
    assert_eq!(deps["total_capped"], true);
    let (s, _, v) = api
        .call(
            Method::GET,
            "/api/v1/assets?page_size=10&page=4",
            Some(&TestApi::token(flowlens_api::auth::Role::Viewer)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("max_offset"), "{v}");
}
