use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use flowlens_api::auth::Role;
use serde_json::Value;

use crate::graph_fixture::{Fixture, build};
use crate::support::TestApi;

/// The topology's edges as `source->target:port` names, sorted, and its node names.
fn shape(f: &Fixture, t: &Value) -> (Vec<String>, Vec<&'static str>) {
    let mut edges: Vec<String> = t["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}->{}:{}",
                f.name(e["source"].as_str().unwrap()),
                f.name(e["target"].as_str().unwrap()),
                e["port"]
            )
        })
        .collect();
    edges.sort();
    let mut nodes: Vec<&'static str> = t["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| f.name(n["id"].as_str().unwrap()))
        .collect();
    nodes.sort_unstable();
    (edges, nodes)
}

#[tokio::test]
async fn views_and_filters() {
    let api = TestApi::new("topo_views").await;
    let f = build(&api).await;
    let get = |q: String| {
        let api = &api;
        async move { api.get(&format!("/api/v1/topology?{q}")).await }
    };
    let (edges, nodes) = shape(&f, &get(String::new()).await);
    assert_eq!(
        edges,
        [
            "app->db:5432",
            "app->ext:443",
            "client1->web:443",
            "client2->web:443",
            "stage->db:5432",
            "web->app:8080"
        ]
    );
    assert_eq!(
        nodes,
        ["app", "client1", "client2", "db", "ext", "stage", "web"]
    );

    let web = f.id("web");
    let (edges, nodes) = shape(&f, &get(format!("asset_id={web}&depth=1")).await);
    assert_eq!(
        edges,
        ["client1->web:443", "client2->web:443", "web->app:8080"]
    );
    assert_eq!(nodes, ["app", "client1", "client2", "web"]);
    let (edges, _) = shape(&f, &get(format!("asset_id={web}")).await);
    assert_eq!(
        edges.len(),
        5,
        "depth 2 by default reaches db and ext: {edges:?}"
    );
    let (edges, nodes) = shape(
        &f,
        &get(format!("asset_id={}&depth=0", f.id("lonely"))).await,
    );
    assert_eq!((edges.len(), nodes), (0, vec!["lonely"]));

    let cases: [(&str, &[&str]); 6] = [
        (
            "include_external=false",
            &[
                "app->db:5432",
                "client1->web:443",
                "client2->web:443",
                "stage->db:5432",
                "web->app:8080",
            ],
        ),
        ("environment=staging", &["stage->db:5432"]),
        ("service=postgresql", &["app->db:5432", "stage->db:5432"]),
        (
            "min_bytes=5000000",
            &["app->db:5432", "stage->db:5432", "web->app:8080"],
        ),
        ("since=2099-01-01T00:00:00Z", &[]),
        ("include_stale=true&service=http", &["web->old:80"]),
    ];
    for (q, want) in cases {
        assert_eq!(shape(&f, &get(q.to_owned()).await).0, want.to_vec(), "{q}");
    }
    for (q, status) in [
        ("depth=2".to_owned(), StatusCode::BAD_REQUEST),
        (format!("asset_id={web}&depth=51"), StatusCode::BAD_REQUEST),
        (
            format!("asset_id={}", uuid::Uuid::new_v4()),
            StatusCode::NOT_FOUND,
        ),
        ("format=dot".to_owned(), StatusCode::BAD_REQUEST),
        ("hops=2".to_owned(), StatusCode::BAD_REQUEST),
    ] {
        api.get_as(Role::Viewer, &format!("/api/v1/topology?{q}"), status)
            .await;
    }
}

/// Runs a validator binary on `text`; skipped (with a note) where it is not installed,
/// except in CI, which installs it.
fn validate_with(program: &str, args: &[&str], text: &str) {
    use std::io::Write as _;
    let child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping the {program} check: {e}");
            return;
        }
        Err(e) => panic!("{program}: {e} (CI installs it)"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} rejects the export: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn exports_render_in_their_tools() {
    let api = TestApi::new("topo_export").await;
    let f = build(&api).await;
    // A name that needs escaping in every format.
    api.write(
        Method::PATCH,
        &format!("/api/v1/assets/{}", f.id("web")),
        Some(serde_json::json!({"name": "web \"front\" <a&b> \\ {x}"})),
        StatusCode::OK,
    )
    .await;
    let token = TestApi::token(Role::Viewer);
    let export = |format: &'static str| {
        let api = &api;
        let token = token.clone();
        async move {
            let req = axum::http::Request::get(format!("/api/v1/topology/export?format={format}"))
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::empty())
                .unwrap();
            let res = tower::ServiceExt::oneshot(api.app.clone(), req)
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{format}");
            let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
            let cd = res.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .to_owned();
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            (ct, cd, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    let (ct, cd, dot) = export("dot").await;
    assert!(ct.starts_with("text/vnd.graphviz") && cd.contains("flowlens-topology.dot"));
    assert_eq!(dot.matches(" -> ").count(), 6, "{dot}");
    validate_with("dot", &["-Tsvg"], &dot);
    let (ct, _, xml) = export("graphml").await;
    assert_eq!(ct, "application/graphml+xml");
    assert_eq!(xml.matches("<edge ").count(), 6);
    assert!(
        xml.contains("web &quot;front&quot; &lt;a&amp;b&gt;"),
        "{xml}"
    );
    validate_with("xmllint", &["--noout", "-"], &xml);
    let (_, _, mermaid) = export("mermaid").await;
    assert!(mermaid.starts_with("flowchart LR\n"));
    assert_eq!(mermaid.matches(" --> ").count(), 6, "{mermaid}");
    assert!(mermaid.contains("#quot;front#quot;"), "{mermaid}");
    let (ct, _, json) = export("json").await;
    assert_eq!(ct, "application/json");
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["edges"].as_array().unwrap().len(), 6);
    api.get_as(
        Role::Viewer,
        "/api/v1/topology/export?format=png",
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn cached_until_the_graph_changes() {
    let api = TestApi::new("topo_cache").await;
    let f = build(&api).await;
    let edges = |t: &Value| t["edges"].as_array().unwrap().len();
    assert_eq!(edges(&api.get("/api/v1/topology").await), 6);
    // A change that announces nothing is not seen: the answer is cached.
    sqlx::query("UPDATE dependencies SET stale = true WHERE id = $1::uuid")
        .bind(&f.d["stage->db:5432"])
        .execute(&api.pool)
        .await
        .unwrap();
    assert_eq!(edges(&api.get("/api/v1/topology").await), 6);
    // The daemon's change event (its NOTIFY) drops the cache.
    sqlx::query(
        "INSERT INTO change_events (change_type, entity_type, entity_id, after_state)
         VALUES ('removed_dependency', 'dependency', $1::uuid, '{\"stale\": true}')",
    )
    .bind(&f.d["stage->db:5432"])
    .execute(&api.pool)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if edges(&api.get("/api/v1/topology").await) == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the notification never invalidated the cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A write through the API is seen by the very next read.
    api.dependency(f.id("client1"), f.id("db"), 5432).await;
    assert_eq!(edges(&api.get("/api/v1/topology").await), 6);
    // Searches are cached the same way (once the write's own notification is heard:
    // it would drop the answer cached meanwhile).
    api.settle().await;
    let q = "/api/v1/assets?q=lonely";
    assert_eq!(api.get(q).await["total"], 1);
    sqlx::query("UPDATE assets SET name = 'crowded' WHERE name = 'lonely'")
        .execute(&api.pool)
        .await
        .unwrap();
    assert_eq!(api.get(q).await["total"], 1, "served from the search cache");
    api.asset("another", &["10.9.9.9"]).await;
    assert_eq!(
        api.get(q).await["total"],
        0,
        "a write drops the search cache"
    );
    let m = api
        .get_as(Role::Viewer, "/api/v1/admin/metrics", StatusCode::OK)
        .await;
    let m = m.as_str().unwrap();
    assert!(
        m.lines()
            .any(|l| l.starts_with("flowlens_api_cache_lookups_total")
                && l.contains("cache=\"topology\"")
                && l.contains("result=\"hit\"")),
        "{m}"
    );
}

/// The topology folded by where assets run: a group per VPC (and the assets the
/// inventory does not place), an edge per pair of groups with the dependencies summed.
#[tokio::test]
async fn the_topology_groups_by_where_assets_run() {
    let api = TestApi::new("topo_groups").await;
    let web1 = api.asset("web-1", &["10.0.1.1"]).await;
    let web2 = api.asset("web-2", &["10.0.1.2"]).await;
    let db = api.asset("db", &["10.0.2.1"]).await;
    let ext = api.asset("partner", &["198.51.100.9"]).await;
    for (id, vpc, account) in [
        (&web1, "front-vpc", "proj-a"),
        (&web2, "front-vpc", "proj-a"),
        (&db, "data-vpc", "proj-a"),
    ] {
        sqlx::query("UPDATE assets SET vpc = $2, cloud_account = $3 WHERE id = $1::uuid")
            .bind(id)
            .bind(vpc)
            .bind(account)
            .execute(&api.pool)
            .await
            .unwrap();
    }
    api.dependency(&web1, &db, 5432).await;
    api.dependency(&web2, &db, 5432).await;
    api.dependency(&web2, &db, 6379).await;
    api.dependency(&db, &ext, 443).await;
    api.settle().await;

    let g = api.get("/api/v1/topology/groups?by=vpc").await;
    assert_eq!(g["by"], "vpc");
    assert_eq!(
        g["groups"],
        serde_json::json!([
            {"key": "data-vpc", "assets": 1},
            {"key": "front-vpc", "assets": 2},
            {"key": null, "assets": 1}
        ])
    );
    let edges: Vec<(Value, Value, u64)> = g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"].clone(),
                e["target"].clone(),
                e["dependencies"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        edges,
        vec![
            ("data-vpc".into(), Value::Null, 1),
            ("front-vpc".into(), "data-vpc".into(), 3),
        ]
    );
    let by_account = api.get("/api/v1/topology/groups?by=cloud_account").await;
    assert_eq!(
        by_account["groups"][0],
        serde_json::json!({"key": "proj-a", "assets": 3})
    );
    // The nodes of the plain topology say where they run too.
    let t = api.get("/api/v1/topology").await;
    let node = t["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == db.as_str())
        .unwrap();
    assert_eq!(
        (&node["vpc"], &node["cloud_account"]),
        (&"data-vpc".into(), &"proj-a".into())
    );
    api.get_as(
        Role::Viewer,
        "/api/v1/topology/groups?by=password",
        StatusCode::BAD_REQUEST,
    )
    .await;
    api.get_as(
        Role::Viewer,
        "/api/v1/topology/groups",
        StatusCode::BAD_REQUEST,
    )
    .await;
    let (s, _, _) = api
        .call(Method::GET, "/api/v1/topology/groups?by=vpc", None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
