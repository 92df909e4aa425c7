use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::TestApi;

fn ports(page: &Value) -> Vec<i64> {
    let mut p: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["port"].as_i64().unwrap())
        .collect();
    p.sort_unstable();
    p
}

#[tokio::test]
async fn declare_read_patch_delete_and_asset_view() {
    let api = TestApi::new("deps_crud").await;
    let web = api.asset("web", &["10.0.1.1"]).await;
    let db = api.asset("db", &["10.0.3.1"]).await;
    let dep = api
        .write(
            Method::POST,
            "/api/v1/dependencies",
            Some(
                json!({"source_asset_id": web, "target_asset_id": db, "protocol": 6,
                        "port": 5432, "inferred_service": "postgresql",
                        "notes": "primary", "tags": {"critical": true}}),
            ),
            StatusCode::CREATED,
        )
        .await;
    let id = dep["id"].as_str().unwrap().to_owned();
    assert_eq!(dep["source_name"], "web");
    assert_eq!(dep["target_name"], "db");
    assert_eq!(dep["discovery_source"], "manual");
    assert_eq!(dep["is_internal"], true);
    assert_eq!(dep["bytes_24h"], 0);

    // Duplicates, self-dependencies, missing assets, out-of-range ports.
    let body = |s: &str, t: &str, port: Value| {
        Some(json!({"source_asset_id": s, "target_asset_id": t, "protocol": 6, "port": port}))
    };
    let v = api
        .write(
            Method::POST,
            "/api/v1/dependencies",
            body(&web, &db, json!(5432)),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(v["detail"].as_str().unwrap().contains(&id), "{v}");
    api.write(
        Method::POST,
        "/api/v1/dependencies",
        body(&web, &web, json!(80)),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let ghost = uuid::Uuid::new_v4().to_string();
    let v = api
        .write(
            Method::POST,
            "/api/v1/dependencies",
            body(&web, &ghost, json!(80)),
            StatusCode::NOT_FOUND,
        )
        .await;
    assert!(v["detail"].as_str().unwrap().contains(&ghost), "{v}");
    api.write(
        Method::POST,
        "/api/v1/dependencies",
        body(&web, &db, json!(70000)),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    // Traffic in flow_stats shows in the last-24-hours figures.
    sqlx::query(
        "INSERT INTO flow_stats (time, source_asset_id, target_asset_id, protocol, port,
                                 flow_count, byte_count, packet_count)
         VALUES (date_trunc('hour', now()), $1::uuid, $2::uuid, 6, 5432, 7, 7000, 70),
                (now() - interval '3 days', $1::uuid, $2::uuid, 6, 5432, 1, 999, 9)",
    )
    .bind(&web)
    .bind(&db)
    .execute(&api.pool)
    .await
    .unwrap();
    let view = api.get(&format!("/api/v1/assets/{web}/dependencies")).await;
    assert_eq!(view["outbound"].as_array().unwrap().len(), 1);
    assert_eq!(view["inbound"].as_array().unwrap().len(), 0);
    assert_eq!(view["outbound"][0]["bytes_24h"], 7000);
    assert_eq!(view["outbound"][0]["flows_24h"], 7);
    let view = api.get(&format!("/api/v1/assets/{db}/dependencies")).await;
    assert_eq!(view["inbound"][0]["id"], id.as_str());

    // Patch only the human parts; flow facts are refused.
    let p = api
        .write(
            Method::PATCH,
            &format!("/api/v1/dependencies/{id}"),
            Some(json!({"notes": null, "confidence": 0.9, "tags": {"owner": "dba"}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(p["notes"], Value::Null);
    assert!((p["confidence"].as_f64().unwrap() - 0.9).abs() < 1e-6);
    assert_eq!(p["tags"], json!({"owner": "dba"}));
    api.write(
        Method::PATCH,
        &format!("/api/v1/dependencies/{id}"),
        Some(json!({"port": 1})),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT change_type FROM change_events WHERE entity_id = $1::uuid ORDER BY change_type",
    )
    .bind(&id)
    .fetch_all(&api.pool)
    .await
    .unwrap();
    assert_eq!(kinds, vec!["dependency_changed", "new_dependency"]);

    api.write(
        Method::DELETE,
        &format!("/api/v1/dependencies/{id}"),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    api.write(
        Method::DELETE,
        &format!("/api/v1/dependencies/{id}"),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    // Deleting an asset takes its dependencies with it.
    let d2 = api.dependency(&web, &db, 6379).await;
    api.write(
        Method::DELETE,
        &format!("/api/v1/assets/{db}"),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    api.write(
        Method::GET,
        &format!("/api/v1/dependencies/{d2}"),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
}

/// What an editor sets is theirs (`user_fields`, which the daemon's flushes respect):
/// a patched confidence is owned until `null` hands it back; a deleted dependency is
/// suppressed until declared again; deleting an asset records a removal per dependency.
#[tokio::test]
async fn edits_are_owned_and_deletions_are_kept() {
    let api = TestApi::new("deps_owned").await;
    let web = api.asset("web", &["10.0.1.1"]).await;
    let db = api.asset("db", &["10.0.3.1"]).await;
    // As the daemon creates one from flows.
    let flow_dep: String = sqlx::query_scalar(
        "INSERT INTO dependencies (source_asset_id, target_asset_id, protocol, port,
                                   first_seen, last_seen, confidence)
         VALUES ($1::uuid, $2::uuid, 6, 5432, now(), now(), 0.9) RETURNING id::text",
    )
    .bind(&web)
    .bind(&db)
    .fetch_one(&api.pool)
    .await
    .unwrap();
    let got = api.get(&format!("/api/v1/dependencies/{flow_dep}")).await;
    assert_eq!(
        got["user_fields"],
        json!([]),
        "flows own a discovered dependency"
    );
    let path = format!("/api/v1/dependencies/{flow_dep}");
    let p = api
        .write(
            Method::PATCH,
            &path,
            Some(json!({"confidence": 0.2})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(p["user_fields"], json!(["confidence"]));
    let p = api
        .write(
            Method::PATCH,
            &path,
            Some(json!({"notes": "checked"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(p["user_fields"], json!(["confidence", "notes"]));
    let p = api
        .write(
            Method::PATCH,
            &path,
            Some(json!({"confidence": null})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        p["user_fields"],
        json!(["notes"]),
        "null hands confidence back"
    );
    assert!((p["confidence"].as_f64().unwrap() - 0.2).abs() < 1e-6);

    // Deleted: suppressed, with who did it.
    api.write(Method::DELETE, &path, None, StatusCode::NO_CONTENT)
        .await;
    let by: String = sqlx::query_scalar(
        "SELECT deleted_by FROM dependency_suppressions
         WHERE source_asset_id = $1::uuid AND target_asset_id = $2::uuid AND port = 5432",
    )
    .bind(&web)
    .bind(&db)
    .fetch_one(&api.pool)
    .await
    .unwrap();
    assert!(!by.is_empty());
    // Declared again: the suppression is lifted and every field is the person's.
    let declared = api
        .write(
            Method::POST,
            "/api/v1/dependencies",
            Some(
                json!({"source_asset_id": web, "target_asset_id": db, "protocol": 6,
                        "port": 5432}),
            ),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(
        declared["user_fields"],
        json!(["confidence", "notes", "tags"])
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM dependency_suppressions")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);

    // Deleting an asset: one removed_dependency per dependency it had.
    let d2 = api.dependency(&web, &db, 6379).await;
    api.write(
        Method::DELETE,
        &format!("/api/v1/assets/{db}"),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    let mut removed: Vec<String> = sqlx::query_scalar(
        "SELECT entity_id::text FROM change_events
         WHERE change_type = 'removed_dependency' AND after_state IS NULL
           AND before_state->>'target_asset_id' = $1 AND entity_id <> $2::uuid",
    )
    .bind(&db)
    .bind(&flow_dep)
    .fetch_all(&api.pool)
    .await
    .unwrap();
    removed.sort();
    let mut want = vec![declared["id"].as_str().unwrap().to_owned(), d2];
    want.sort();
    assert_eq!(removed, want);
}

#[tokio::test]
async fn list_filters() {
    let api = TestApi::new("deps_list").await;
    let client = api.asset("client", &["10.0.0.5"]).await;
    let web = api.asset("web", &["10.0.1.1"]).await;
    let db = api.asset("db", &["10.0.3.1"]).await;
    let ext = api.asset("api.example", &["203.0.113.7"]).await;
    sqlx::query("UPDATE assets SET is_internal = (name <> 'api.example')")
        .execute(&api.pool)
        .await
        .unwrap();
    let d443 = api.dependency(&client, &web, 443).await;
    api.dependency(&web, &db, 5432).await;
    let ext_dep = api.dependency(&web, &ext, 8443).await;
    // Flow facts the daemon would have written.
    sqlx::query(
        "UPDATE dependencies SET inferred_service = 'https', total_bytes = 5000000,
             last_seen = now() - interval '10 days', stale = true WHERE id = $1::uuid",
    )
    .bind(&d443)
    .execute(&api.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE dependencies SET protocol = 17, is_internal = false WHERE id = $1::uuid")
        .bind(&ext_dep)
        .execute(&api.pool)
        .await
        .unwrap();
    let cases: Vec<(String, Vec<i64>)> = vec![
        (format!("source_asset_id={web}"), vec![5432, 8443]),
        (format!("target_asset_id={web}"), vec![443]),
        (format!("asset_id={web}"), vec![443, 5432, 8443]),
        ("port=5432".into(), vec![5432]),
        ("protocol=17".into(), vec![8443]),
        ("service=https".into(), vec![443]),
        ("internal=false".into(), vec![8443]),
        ("internal=true".into(), vec![443, 5432]),
        ("stale=true".into(), vec![443]),
        ("min_bytes=1000".into(), vec![443]),
        ("since=2099-01-01T00:00:00Z".into(), vec![]),
        ("discovery_source=manual".into(), vec![443, 5432, 8443]),
    ];
    for (query, want) in cases {
        let page = api.get(&format!("/api/v1/dependencies?{query}")).await;
        assert_eq!(ports(&page), want, "{query}");
    }
    let recent = api
        .get(&format!(
            "/api/v1/dependencies?since={}",
            (chrono::Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ")
        ))
        .await;
    assert_eq!(ports(&recent), vec![5432, 8443]);
    for bad in [
        "port=99999",
        "protocol=tcp",
        "source_asset_id=nope",
        "min_bytes=lots",
        "hops=2",
    ] {
        api.write(
            Method::GET,
            &format!("/api/v1/dependencies?{bad}"),
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
}

/// Waits until `n` sessions of this database wait on a row lock.
async fn until_waiting_on_locks(pool: &sqlx::PgPool, n: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{waiting} of {n} requests wait on the lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Runs `requests` at once while the test holds `lock_sql` in a transaction of its
/// own, releases it once they all wait, and returns their answers.
async fn while_locked(
    api: &TestApi,
    lock_sql: &str,
    id: &str,
    requests: Vec<(Method, String, Option<Value>)>,
) -> Vec<(StatusCode, Value)> {
    let mut holder = api.pool.begin().await.unwrap();
    sqlx::query(lock_sql)
        .bind(id.parse::<uuid::Uuid>().unwrap())
        .execute(&mut *holder)
        .await
        .unwrap();
    let n = i64::try_from(requests.len()).unwrap();
    let token = TestApi::token(flowlens_api::auth::Role::Editor);
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(method, uri, body)| {
            let app = api.app.clone();
            let token = token.clone();
            tokio::spawn(async move {
                use http_body_util::BodyExt as _;
                use tower::ServiceExt as _;
                let mut r = axum::http::Request::builder()
                    .method(method)
                    .uri(uri)
                    .header("authorization", format!("Bearer {token}"));
                if body.is_some() {
                    r = r.header("content-type", "application/json");
                }
                let r = r
                    .body(axum::body::Body::from(
                        body.map(|b| b.to_string()).unwrap_or_default(),
                    ))
                    .unwrap();
                let res = app.oneshot(r).await.unwrap();
                let status = res.status();
                let bytes = res.into_body().collect().await.unwrap().to_bytes();
                let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                (status, v)
            })
        })
        .collect();
    until_waiting_on_locks(&api.pool, n).await;
    holder.commit().await.unwrap();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out.sort_by_key(|(s, _)| s.as_u16());
    out
}

async fn count(pool: &sqlx::PgPool, sql: &str, id: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id.parse::<uuid::Uuid>().unwrap())
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Two deletes of one dependency at once: one 204, one 404, and one removal in the
/// change feed and the audit log, not two.
#[tokio::test]
async fn concurrent_deletes_and_patches_take_turns() {
    let api = TestApi::new("deps_races").await;
    let a = api.asset("a", &["10.9.0.1"]).await;
    let b = api.asset("b", &["10.9.0.2"]).await;
    let dep = api.dependency(&a, &b, 443).await;
    let uri = format!("/api/v1/dependencies/{dep}");
    // Row lock held by "another writer" while both requests start.
    let lock = "SELECT 1 FROM dependencies WHERE id = $1 FOR UPDATE";
    let patches = while_locked(
        &api,
        lock,
        &dep,
        vec![
            (Method::PATCH, uri.clone(), Some(json!({"notes": "first"}))),
            (Method::PATCH, uri.clone(), Some(json!({"notes": "second"}))),
        ],
    )
    .await;
    assert!(
        patches.iter().all(|(s, _)| *s == StatusCode::OK),
        "{patches:?}"
    );
    // Each change event's before-state is what the other patch left (or the original).
    let befores: Vec<Value> = sqlx::query_scalar(
        "SELECT before_state->'notes' FROM change_events
         WHERE entity_id = $1 AND change_type = 'dependency_changed' ORDER BY detected_at",
    )
    .bind(dep.parse::<uuid::Uuid>().unwrap())
    .fetch_all(&api.pool)
    .await
    .unwrap();
    // (Both transactions began before either wrote, so their timestamps say nothing
    // about which went first: one saw the original, the other the first's notes.)
    assert_eq!(befores.len(), 2);
    let nulls = befores.iter().filter(|b| b.is_null()).count();
    assert_eq!(nulls, 1, "the second patch saw the first: {befores:?}");
    assert!(
        befores.contains(&json!("first")) || befores.contains(&json!("second")),
        "{befores:?}"
    );

    let deletes = while_locked(
        &api,
        lock,
        &dep,
        vec![
            (Method::DELETE, uri.clone(), None),
            (Method::DELETE, uri, None),
        ],
    )
    .await;
    let statuses: Vec<StatusCode> = deletes.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND],
        "{deletes:?}"
    );
    let removals = count(
        &api.pool,
        "SELECT count(*) FROM change_events WHERE entity_id = $1
           AND change_type = 'removed_dependency'",
        &dep,
    )
    .await;
    let audits = count(
        &api.pool,
        "SELECT count(*) FROM audit_logs WHERE entity_id = $1 AND action = 'delete'",
        &dep,
    )
    .await;
    assert_eq!((removals, audits), (1, 1));
}

/// A dependency declared while one of its assets is being deleted: 404 (the asset is
/// gone), never a 500 or a dependency on a missing asset.
#[tokio::test]
async fn declaring_onto_an_asset_being_deleted_is_a_404() {
    let api = TestApi::new("deps_race_asset").await;
    let a = api.asset("a", &["10.9.1.1"]).await;
    let b = api.asset("b", &["10.9.1.2"]).await;
    let answers = while_locked(
        &api,
        "DELETE FROM assets WHERE id = $1",
        &b,
        vec![(
            Method::POST,
            "/api/v1/dependencies".to_owned(),
            Some(json!({"source_asset_id": a, "target_asset_id": b, "protocol": 6, "port": 5432})),
        )],
    )
    .await;
    assert_eq!(answers[0].0, StatusCode::NOT_FOUND, "{answers:?}");
    assert!(
        answers[0].1["detail"].as_str().unwrap().contains(&b),
        "{answers:?}"
    );
}
