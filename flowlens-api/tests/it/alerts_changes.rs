use axum::http::{Method, StatusCode};
use flowlens_api::auth::Role;
use serde_json::{Value, json};

use crate::support::TestApi;

/// Inserts an alert the way the daemon does, returning its id.
async fn alert(api: &TestApi, severity: &str, title: &str, age_hours: i32) -> String {
    let change: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO change_events (change_type, entity_type, entity_id, after_state, detected_at)
         VALUES ('new_dependency', 'dependency', gen_random_uuid(), '{}',
                 now() - make_interval(hours => $1)) RETURNING id",
    )
    .bind(age_hours)
    .fetch_one(&api.pool)
    .await
    .unwrap();
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO alerts (change_event_id, severity, title, rule_name, created_at)
         VALUES ($1, $2, $3, 'new_egress', now() - make_interval(hours => $4)) RETURNING id",
    )
    .bind(change)
    .bind(severity)
    .bind(title)
    .bind(age_hours)
    .fetch_one(&api.pool)
    .await
    .unwrap();
    id.to_string()
}

fn titles(page: &Value) -> Vec<String> {
    let mut t: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["title"].as_str().unwrap().to_owned())
        .collect();
    t.sort();
    t
}

#[tokio::test]
async fn alert_lifecycle_and_filters() {
    let api = TestApi::new("alerts").await;
    let a = alert(&api, "warning", "egress to 203.0.113.7", 1).await;
    let b = alert(&api, "info", "new internal dependency", 2).await;
    let old = alert(&api, "critical", "old one", 72).await;

    assert_eq!(
        titles(&api.get("/api/v1/alerts?severity=warning").await),
        ["egress to 203.0.113.7"]
    );
    assert_eq!(
        titles(&api.get("/api/v1/alerts?status=open").await).len(),
        3
    );
    assert_eq!(
        titles(&api.get("/api/v1/alerts?rule=new_egress").await).len(),
        3
    );
    assert!(titles(&api.get("/api/v1/alerts?rule=other").await).is_empty());
    let since = (chrono::Utc::now() - chrono::Duration::hours(24)).format("%Y-%m-%dT%H:%M:%SZ");
    assert_eq!(
        titles(&api.get(&format!("/api/v1/alerts?since={since}")).await).len(),
        2
    );
    assert_eq!(
        api.get(&format!("/api/v1/alerts/{old}")).await["severity"],
        "critical"
    );
    api.write(
        Method::GET,
        "/api/v1/alerts?status=sleeping",
        None,
        StatusCode::BAD_REQUEST,
    )
    .await;

    // A viewer cannot touch alerts.
    let (s, _, _) = api
        .call(
            Method::PATCH,
            &format!("/api/v1/alerts/{a}"),
            Some(&TestApi::token(Role::Viewer)),
            Some(json!({"status": "acknowledged"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let acked = api
        .write(
            Method::PATCH,
            &format!("/api/v1/alerts/{a}"),
            Some(json!({"status": "acknowledged"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(acked["status"], "acknowledged");
    assert_eq!(acked["acknowledged_by"], "editor");
    assert!(acked["acknowledged_at"].is_string());
    let v = api
        .write(
            Method::PATCH,
            &format!("/api/v1/alerts/{a}"),
            Some(json!({"status": "acknowledged"})),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(
        v["detail"].as_str().unwrap().contains("acknowledged"),
        "{v}"
    );
    let resolved = api
        .write(
            Method::PATCH,
            &format!("/api/v1/alerts/{a}"),
            Some(json!({"status": "resolved"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(resolved["resolved_by"], "editor");
    api.write(
        Method::PATCH,
        &format!("/api/v1/alerts/{a}"),
        Some(json!({"status": "acknowledged"})),
        StatusCode::CONFLICT,
    )
    .await;
    // open -> resolved directly is allowed.
    api.write(
        Method::PATCH,
        &format!("/api/v1/alerts/{b}"),
        Some(json!({"status": "resolved"})),
        StatusCode::OK,
    )
    .await;
    api.write(
        Method::PATCH,
        &format!("/api/v1/alerts/{b}"),
        Some(json!({"status": "open"})),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    api.write(
        Method::PATCH,
        &format!("/api/v1/alerts/{}", uuid::Uuid::new_v4()),
        Some(json!({"status": "resolved"})),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(
        titles(&api.get("/api/v1/alerts?status=resolved").await).len(),
        2
    );
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_logs WHERE entity_type = 'alert' ORDER BY id")
            .fetch_all(&api.pool)
            .await
            .unwrap();
    assert_eq!(actions, ["acknowledge", "resolve", "resolve"]);
}

#[tokio::test]
async fn change_events_list_and_get() {
    let api = TestApi::new("changes").await;
    let web = api.asset("web", &["10.0.1.1"]).await;
    let db = api.asset("db", &["10.0.3.1"]).await;
    let dep = api.dependency(&web, &db, 5432).await;
    alert(&api, "info", "old", 48).await;

    let all = api.get("/api/v1/changes").await;
    assert_eq!(all["total"], 4);
    let deps = api
        .get("/api/v1/changes?entity=dependency&type=new_dependency")
        .await;
    assert_eq!(deps["total"], 2);
    let one = api.get(&format!("/api/v1/changes?entity_id={dep}")).await;
    assert_eq!(one["total"], 1);
    let item = &one["items"][0];
    assert_eq!(item["after_state"]["port"], 5432);
    let id = item["id"].as_str().unwrap();
    assert_eq!(api.get(&format!("/api/v1/changes/{id}")).await, *item);
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    assert_eq!(
        api.get(&format!("/api/v1/changes?since={since}")).await["total"],
        3
    );
    assert_eq!(
        api.get(&format!("/api/v1/changes?until={since}")).await["total"],
        1
    );
    api.get_as(
        Role::Viewer,
        &format!("/api/v1/changes/{}", uuid::Uuid::new_v4()),
        StatusCode::NOT_FOUND,
    )
    .await;
    api.get_as(
        Role::Viewer,
        "/api/v1/changes?entity_id=42",
        StatusCode::BAD_REQUEST,
    )
    .await;
}
