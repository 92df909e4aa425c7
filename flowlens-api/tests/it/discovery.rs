//! Discovery scans against real listeners on loopback. All of 127.0.0.0/8 is local on
//! Linux, so 127.0.0.1-3 can hold listeners while the other addresses of a small
//! range answer every connection with RST: those hosts are up with no open port. Only
//! 127.0.0.0/8 is ever scanned.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode, header};
use flowlens_api::auth::Role;
use flowlens_api::config::Config;
use flowlens_api::discovery::store::{self, AssetWrite, ScanRef};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};

use crate::support::TestApi;

const SCANS: &str = "/api/v1/discovery/scans";

/// Ports on loopback: `both` listens on 127.0.0.1, .2 and .3; `one` on 127.0.0.1
/// only; `closed` is bound on 127.0.0.2 without listening (so nobody else can take it
/// and connections to it are refused). Dropped with the test.
struct Targets {
    both: u16,
    one: u16,
    closed: u16,
    _listeners: Vec<TcpListener>,
    _closed: TcpSocket,
}

async fn targets() -> Targets {
    // The OS picks a port free on 127.0.0.1; take it on .2 and .3 too, or try another.
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let both = first.local_addr().unwrap().port();
        let (Ok(second), Ok(third)) = (
            TcpListener::bind(("127.0.0.2", both)).await,
            TcpListener::bind(("127.0.0.3", both)).await,
        ) else {
            continue;
        };
        let only = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let one = only.local_addr().unwrap().port();
        let closed = TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        return Targets {
            both,
            one,
            closed: closed.local_addr().unwrap().port(),
            _listeners: vec![first, second, third, only],
            _closed: closed,
        };
    }
    panic!("no port free on 127.0.0.1, .2 and .3 at once after 50 tries");
}

/// Scans allowed in 127.0.0.0/29 and 127.1.0.0/16, at most 16 hosts, quickly.
fn allow_loopback(c: &mut Config) {
    let d = &mut c.api.discovery;
    d.allowed_ranges = vec!["127.0.0.0/29".into(), "127.1.0.0/16".into()];
    d.max_hosts = 16;
    d.concurrency = 4;
    d.rate_per_second = 1000;
    d.connect_timeout_ms = 2000;
}

/// POSTs a scan as `role`, asserting `expect` and, for errors, the problem shape.
async fn start_as(api: &TestApi, role: Role, body: Value, expect: StatusCode) -> Value {
    let (s, h, v) = api
        .call(Method::POST, SCANS, Some(&TestApi::token(role)), Some(body))
        .await;
    assert_eq!(s, expect, "POST {SCANS}: {v}");
    if s.is_client_error() || s.is_server_error() {
        assert_eq!(
            h.get(header::CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
        assert_eq!(v["status"], s.as_u16(), "{v}");
    }
    v
}

async fn start(api: &TestApi, body: Value, expect: StatusCode) -> Value {
    start_as(api, Role::Admin, body, expect).await
}

/// Polls the scan until it ends (a deadline, never a fixed sleep).
async fn finished(api: &TestApi, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = api.get(&format!("{SCANS}/{id}")).await;
        if v["status"] == "completed" || v["status"] == "failed" {
            return v;
        }
        assert!(Instant::now() < deadline, "scan {id} still going: {v}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn sorted(mut ports: Vec<u16>) -> Value {
    ports.sort_unstable();
    json!(ports)
}

#[tokio::test]
async fn scans_create_scan_assets_and_refresh_owned_ones() {
    let t = targets().await;
    let api = TestApi::with("disc_scan", |c| {
        allow_loopback(c);
        c.api.discovery.ports = vec![t.closed, t.one, t.both, t.one];
    })
    .await;
    // 127.0.0.2 already belongs to a person's asset, which says 9 and `closed` are open.
    let db = api
        .write(
            Method::POST,
            "/api/v1/assets",
            Some(json!({"name": "db", "ip_addresses": ["127.0.0.2"],
                        "tags": {"team": "db", "open_ports": [9, t.closed]}})),
            StatusCode::CREATED,
        )
        .await;
    let db_id = db["id"].as_str().unwrap().to_owned();

    // No ports in the request: the configured ones, sorted and de-duplicated.
    let accepted = start(&api, json!({"cidr": "127.0.0.0/29"}), StatusCode::ACCEPTED).await;
    let id = accepted["id"].as_str().unwrap().to_owned();
    assert!(
        ["queued", "running"].contains(&accepted["status"].as_str().unwrap()),
        "{accepted}"
    );
    assert_eq!(accepted["cidr"], "127.0.0.0/29");
    assert_eq!(accepted["ports"], sorted(vec![t.closed, t.one, t.both]));
    assert_eq!(accepted["requested_by"], "admin");
    // A /29 without its network and broadcast addresses: 127.0.0.1 to .6.
    assert_eq!(accepted["hosts_total"], 6);

    let done = finished(&api, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["error"], Value::Null);
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    // Every host accounted for; loopback refuses what it does not serve, so all are up.
    assert_eq!(done["hosts_scanned"], 6, "{done}");
    assert_eq!(done["hosts_up"], 6, "{done}");
    assert_eq!(done["progress"], 1.0);
    assert_eq!(
        (
            done["assets_created"].clone(),
            done["assets_updated"].clone()
        ),
        (json!(2), json!(1)),
        "{done}"
    );
    assert_eq!(
        done["open_ports"],
        json!({
            "127.0.0.1": sorted(vec![t.both, t.one]),
            "127.0.0.2": [t.both],
            "127.0.0.3": [t.both],
        })
    );

    // New assets only for unowned addresses with an open port.
    let made = api.get("/api/v1/assets?discovery_source=scan").await;
    let mut made = made["items"].as_array().unwrap().clone();
    made.sort_by_key(|a| a["name"].as_str().unwrap().to_owned());
    assert_eq!(made.len(), 2, "{made:?}");
    for (asset, (ip, ports)) in made.iter().zip([
        ("127.0.0.1", sorted(vec![t.both, t.one])),
        ("127.0.0.3", json!([t.both])),
    ]) {
        assert_eq!(asset["name"], ip);
        assert_eq!(asset["ip_addresses"], json!([ip]));
        assert_eq!(asset["asset_type"], "unknown");
        assert_eq!(asset["confidence"], 0.6);
        assert_eq!(asset["tags"], json!({"open_ports": ports}));
    }
    // The person's asset is refreshed, not duplicated: still theirs, same name, the
    // probed ports as seen now (closed gone, both new), the unprobed 9 kept.
    let db_now = api.get(&format!("/api/v1/assets/{db_id}")).await;
    assert_eq!(db_now["discovery_source"], "manual");
    assert_eq!(db_now["name"], "db");
    assert_eq!(
        db_now["tags"],
        json!({"team": "db", "open_ports": sorted(vec![9, t.both])})
    );
    let seen =
        |a: &Value| chrono::DateTime::parse_from_rfc3339(a["last_seen"].as_str().unwrap()).unwrap();
    assert!(seen(&db_now) > seen(&db), "{db_now}");
    assert_eq!(api.get("/api/v1/assets?ip=127.0.0.2").await["total"], 1);
    assert_eq!(api.get("/api/v1/assets").await["total"], 3);

    // Change events: one new_asset per created asset, one asset_changed for db.
    let events: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT change_type, after_state->>'discovery_source' FROM change_events
         WHERE change_type IN ('new_asset', 'asset_changed') ORDER BY 1, 2",
    )
    .fetch_all(&api.pool)
    .await
    .unwrap();
    assert_eq!(
        events,
        vec![
            ("asset_changed".to_owned(), None),
            ("new_asset".to_owned(), Some("manual".to_owned())),
            ("new_asset".to_owned(), Some("scan".to_owned())),
            ("new_asset".to_owned(), Some("scan".to_owned())),
        ]
    );
    // The request is in the audit log, by whom, with what.
    let audit: (String, String, String, Value) = sqlx::query_as(
        "SELECT actor, action, entity_type, details FROM audit_logs WHERE entity_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&api.pool)
    .await
    .unwrap();
    assert_eq!(
        (audit.0.as_str(), audit.1.as_str(), audit.2.as_str()),
        ("admin", "create", "discovery_scan")
    );
    assert_eq!(audit.3["cidr"], "127.0.0.0/29");
    assert_eq!(audit.3["hosts"], 6);
    // And every asset the scan wrote, as the admin who asked, naming the scan and the
    // open ports it found there.
    let asset_audits = |scan: String| {
        let pool = api.pool.clone();
        async move {
            sqlx::query_as::<_, (String, String, String, String, Value)>(
                "SELECT l.actor, l.action, l.entity_type, a.name, l.details
                 FROM audit_logs l JOIN assets a ON a.id = l.entity_id
                 WHERE l.details->>'scan_id' = $1 ORDER BY a.name",
            )
            .bind(scan)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let row = |action: &str, name: &str, open: Value| {
        (
            "admin".to_owned(),
            action.to_owned(),
            "asset".to_owned(),
            name.to_owned(),
            json!({"scan_id": id, "open_ports": open}),
        )
    };
    assert_eq!(
        asset_audits(id.clone()).await,
        vec![
            row("create", "127.0.0.1", sorted(vec![t.both, t.one])),
            row("create", "127.0.0.3", json!([t.both])),
            row("update", "db", json!([t.both])),
        ]
    );

    // A narrower second scan updates what the first created; it creates nothing, and
    // leaves the port it did not probe in the tag.
    let again = start(
        &api,
        json!({"cidr": "127.0.0.0/30", "ports": [t.both]}),
        StatusCode::ACCEPTED,
    )
    .await;
    let again_id = again["id"].as_str().unwrap().to_owned();
    let again = finished(&api, &again_id).await;
    assert_eq!(again["status"], "completed", "{again}");
    assert_eq!(
        (again["hosts_total"].clone(), again["hosts_up"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(
        (
            again["assets_created"].clone(),
            again["assets_updated"].clone()
        ),
        (json!(0), json!(2)),
        "{again}"
    );
    assert_eq!(api.get("/api/v1/assets").await["total"], 3);
    let first = api.get("/api/v1/assets?ip=127.0.0.1").await;
    assert_eq!(
        first["items"][0]["tags"]["open_ports"],
        sorted(vec![t.both, t.one])
    );
    let updates: Vec<(String, String)> = asset_audits(again_id.clone())
        .await
        .into_iter()
        .map(|(_, action, _, name, _)| (action, name))
        .collect();
    assert_eq!(
        updates,
        [
            ("update".to_owned(), "127.0.0.1".to_owned()),
            ("update".to_owned(), "db".to_owned())
        ]
    );

    // Both scans listed, newest first.
    let list = api.get(SCANS).await;
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"][0]["id"], again_id.as_str());
    assert_eq!(list["items"][1]["id"], id.as_str());
}

#[tokio::test]
async fn refusals_say_why_and_write_nothing() {
    let api = TestApi::with("disc_refuse", allow_loopback).await;
    let cases = [
        (
            json!({"cidr": "127.0.1.0/30"}),
            StatusCode::FORBIDDEN,
            "not inside an allowed range",
        ),
        // Overlapping an allowed range is not enough: the whole CIDR must be inside.
        (
            json!({"cidr": "127.0.0.0/28"}),
            StatusCode::FORBIDDEN,
            "not inside an allowed range",
        ),
        (
            json!({"cidr": "10.0.0.1"}),
            StatusCode::FORBIDDEN,
            "not inside an allowed range",
        ),
        (
            json!({"cidr": "127.1.0.0/24"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "at most 16",
        ),
        (
            json!({"cidr": "127.0.0.0/33"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a CIDR",
        ),
        (
            json!({"cidr": "everything"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a CIDR",
        ),
        (
            json!({"cidr": "127.0.0.1/29"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "host bits",
        ),
        (
            json!({"cidr": "127.0.0.1", "ports": [0]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "port 0",
        ),
        (
            json!({"cidr": "127.0.0.1", "ports": [70000]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "70000",
        ),
        (
            json!({"cidr": "127.0.0.1", "ports": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no ports",
        ),
        // Only configured ports (allow_loopback keeps the default list, with 22 and
        // 80 but not these) may be probed; the refusal names the others.
        (
            json!({"cidr": "127.0.0.1", "ports": [22, 4321, 80, 1234]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ports 1234, 4321 are not in api.discovery.ports",
        ),
        // An IPv4 target spelt as IPv4-mapped IPv6 is judged as IPv4.
        (
            json!({"cidr": "::ffff:10.0.0.1"}),
            StatusCode::FORBIDDEN,
            "10.0.0.1/32 is not inside an allowed range",
        ),
        (
            json!({"cidr": "127.0.0.1", "speed": 9}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field",
        ),
        (
            json!({"cidr": 127}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "cidr",
        ),
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY, "cidr"),
    ];
    for (body, status, needle) in cases {
        let v = start(&api, body.clone(), status).await;
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.contains(needle),
            "{body}: {detail:?} lacks {needle:?}"
        );
    }
    // Scans are an admin's: viewers and editors get 403, strangers 401.
    let ok = json!({"cidr": "127.0.0.0/30"});
    for role in [Role::Viewer, Role::Editor] {
        let v = start_as(&api, role, ok.clone(), StatusCode::FORBIDDEN).await;
        assert!(v["detail"].as_str().unwrap().contains("admin role"), "{v}");
    }
    let (s, _, _) = api.call(Method::POST, SCANS, None, Some(ok.clone())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let scans: i64 = sqlx::query_scalar("SELECT count(*) FROM discovery_scans")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    let audits: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE entity_type = 'discovery_scan'")
            .fetch_one(&api.pool)
            .await
            .unwrap();
    assert_eq!((scans, audits), (0, 0));

    // With no allowed ranges (the default) scanning is off, whatever the target.
    let off = TestApi::new("disc_off").await;
    for cidr in ["127.0.0.0/30", "not a cidr"] {
        let v = start(&off, json!({"cidr": cidr}), StatusCode::FORBIDDEN).await;
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("allowed_ranges is empty"),
            "{v}"
        );
    }
}

#[tokio::test]
async fn list_filters_pages_and_gets() {
    let api = TestApi::new("disc_list").await;
    let ids: Vec<String> = sqlx::query_scalar(
        "INSERT INTO discovery_scans (cidr, ports, status, requested_by, created_at,
             hosts_total, hosts_scanned, error)
         VALUES ('127.0.0.0/30', '{80}', 'completed', 'a', now() - interval '3 hours', 2, 2, NULL),
                ('127.0.0.4/30', '{22,80}', 'failed', 'b', now() - interval '2 hours', 2, 1, 'boom'),
                ('127.0.0.8/30', '{443}', 'completed', 'c', now() - interval '1 hour', 2, 2, NULL)
         RETURNING id::text",
    )
    .fetch_all(&api.pool)
    .await
    .unwrap();
    let listed = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = api.get(SCANS).await;
    assert_eq!(all["total"], 3);
    assert_eq!(
        listed(&all),
        [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()],
        "newest first"
    );
    let done = api.get(&format!("{SCANS}?status=completed")).await;
    assert_eq!(listed(&done), [ids[2].as_str(), ids[0].as_str()]);
    let failed = api.get(&format!("{SCANS}?status=failed")).await;
    assert_eq!(failed["total"], 1);
    assert_eq!(failed["items"][0]["error"], "boom");
    assert_eq!(failed["items"][0]["progress"], 0.5);
    assert_eq!(failed["items"][0]["ports"], json!([22, 80]));
    assert_eq!(
        api.get(&format!("{SCANS}?status=running")).await["total"],
        0
    );
    let p1 = api.get(&format!("{SCANS}?page_size=2")).await;
    let p2 = api.get(&format!("{SCANS}?page_size=2&page=2")).await;
    assert_eq!((listed(&p1).len(), listed(&p2).len()), (2, 1));
    assert_eq!(listed(&p2), [ids[0].as_str()]);

    let one = api.get(&format!("{SCANS}/{}", ids[1])).await;
    assert_eq!(one, failed["items"][0]);
    assert_eq!(one["cidr"], "127.0.0.4/30");
    assert_eq!(one["requested_by"], "b");

    for (uri, status, needle) in [
        (
            format!("{SCANS}/{}", uuid::Uuid::new_v4()),
            StatusCode::NOT_FOUND,
            "not found",
        ),
        (format!("{SCANS}/nope"), StatusCode::BAD_REQUEST, "UUID"),
        (
            format!("{SCANS}?status=lost"),
            StatusCode::BAD_REQUEST,
            "must be one of",
        ),
        (
            format!("{SCANS}?colour=red"),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            format!("{SCANS}?page_size=1001"),
            StatusCode::BAD_REQUEST,
            "page_size",
        ),
    ] {
        let v = api.get_as(Role::Viewer, &uri, status).await;
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.contains(needle),
            "{uri}: {detail:?} lacks {needle:?}"
        );
    }
    let (s, _, _) = api.call(Method::GET, SCANS, None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn running_scans_are_capped() {
    let t = targets().await;
    let api = TestApi::with("disc_cap", |c| {
        allow_loopback(c);
        c.api.discovery.max_running_scans = 1;
        // Six probes at one a second: the first scan outlives the second request.
        c.api.discovery.rate_per_second = 1;
        c.api.discovery.ports = vec![t.both];
    })
    .await;
    let body = json!({"cidr": "127.0.0.0/29", "ports": [t.both]});
    let first = start(&api, body.clone(), StatusCode::ACCEPTED).await;
    let v = start(&api, body, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        v["detail"].as_str().unwrap().contains("max_running_scans"),
        "{v}"
    );
    let list = api.get(SCANS).await;
    assert_eq!(list["total"], 1, "a refused scan leaves no row");
    assert_eq!(list["items"][0]["id"], first["id"]);
    assert!(
        ["queued", "running"].contains(&list["items"][0]["status"].as_str().unwrap()),
        "{list}"
    );
    // Progress reaches the row while the scan runs (written each second, not at the
    // end), and the rate holds: six probes at one a second are not done within it.
    let id = first["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let running = loop {
        let v = api.get(&format!("{SCANS}/{id}")).await;
        if v["hosts_scanned"].as_i64().unwrap() > 0 {
            break v;
        }
        assert!(Instant::now() < deadline, "no progress written: {v}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(running["status"], "running", "{running}");
    assert!(running["started_at"].is_string());
    assert!(running["hosts_scanned"].as_i64().unwrap() < 6, "{running}");
    let progress = running["progress"].as_f64().unwrap();
    assert!(progress > 0.0 && progress < 1.0, "{running}");
}

#[tokio::test]
async fn concurrent_writers_create_one_asset_per_address() {
    let api = TestApi::new("disc_race").await;
    let ip: std::net::IpAddr = "127.0.0.9".parse().unwrap();
    let scan_id = uuid::Uuid::new_v4();
    let writers: Vec<_> = (0..6)
        .map(|_| {
            let pool = api.pool.clone();
            tokio::spawn(async move {
                let scan = ScanRef {
                    id: scan_id,
                    requested_by: "ops",
                };
                store::record_host(&pool, scan, ip, &[80, 443], &[80]).await
            })
        })
        .collect();
    let mut created = Vec::new();
    let mut updated = Vec::new();
    for w in writers {
        match w.await.unwrap().unwrap() {
            AssetWrite::Created(id) => created.push(id),
            AssetWrite::Updated(id) => updated.push(id),
        }
    }
    assert_eq!(
        (created.len(), updated.len()),
        (1, 5),
        "{created:?} {updated:?}"
    );
    assert!(updated.iter().all(|id| *id == created[0]));
    let assets: i64 = sqlx::query_scalar("SELECT count(*) FROM assets")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(assets, 1);
    // One audit row per write that happened, none for the rolled-back attempts.
    let audits: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT actor, action, entity_id::text FROM audit_logs
         WHERE entity_type = 'asset' ORDER BY action",
    )
    .fetch_all(&api.pool)
    .await
    .unwrap();
    let mut want = vec![(
        "ops".to_owned(),
        "create".to_owned(),
        created[0].to_string(),
    )];
    want.extend((0..5).map(|_| {
        (
            "ops".to_owned(),
            "update".to_owned(),
            created[0].to_string(),
        )
    }));
    assert_eq!(audits, want);

    // An address a person's asset owns is always an update of that asset.
    let owner = api.asset("web", &["127.0.0.10"]).await;
    let scan = ScanRef {
        id: scan_id,
        requested_by: "ops",
    };
    let w = store::record_host(&api.pool, scan, "127.0.0.10".parse().unwrap(), &[80], &[80])
        .await
        .unwrap();
    assert_eq!(w, AssetWrite::Updated(owner.parse().unwrap()));
}

#[tokio::test]
async fn scans_can_be_cancelled() {
    let t = targets().await;
    let api = TestApi::with("disc_cancel", |c| {
        allow_loopback(c);
        c.api.discovery.max_running_scans = 1;
        // Six probes at one a second: plenty of time to cancel.
        c.api.discovery.rate_per_second = 1;
        c.api.discovery.ports = vec![t.both];
    })
    .await;
    let delete = |role: Role, id: String, expect: StatusCode| {
        let api = &api;
        async move {
            let (s, h, v) = api
                .call(
                    Method::DELETE,
                    &format!("{SCANS}/{id}"),
                    Some(&TestApi::token(role)),
                    None,
                )
                .await;
            assert_eq!(s, expect, "DELETE {id}: {v}");
            if s.is_client_error() {
                assert_eq!(
                    h.get(header::CONTENT_TYPE).unwrap(),
                    "application/problem+json"
                );
            }
            v
        }
    };
    let slow = start(&api, json!({"cidr": "127.0.0.0/29"}), StatusCode::ACCEPTED).await;
    let id = slow["id"].as_str().unwrap().to_owned();
    assert_eq!(slow["hosts_total"], 6);
    // Running, with some progress written.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = api.get(&format!("{SCANS}/{id}")).await;
        if v["hosts_scanned"].as_i64().unwrap() > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress written: {v}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Admins only.
    for role in [Role::Viewer, Role::Editor] {
        let v = delete(role, id.clone(), StatusCode::FORBIDDEN).await;
        assert!(v["detail"].as_str().unwrap().contains("admin role"), "{v}");
    }
    let cancelled = delete(Role::Admin, id.clone(), StatusCode::OK).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(cancelled["finished_at"].is_string(), "{cancelled}");
    assert_eq!(cancelled["error"], Value::Null);

    // The task ends and gives its slot back: a scan is accepted again (with one slot,
    // a running one would make this 503).
    let deadline = Instant::now() + Duration::from_secs(10);
    let next = loop {
        let (s, _, v) = api
            .call(
                Method::POST,
                SCANS,
                Some(&TestApi::token(Role::Admin)),
                Some(json!({"cidr": "127.0.0.1"})),
            )
            .await;
        if s == StatusCode::ACCEPTED {
            break v;
        }
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert!(
            Instant::now() < deadline,
            "the cancelled scan kept its slot"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let stopped = api.get(&format!("{SCANS}/{id}")).await;
    // Probing has stopped: at one probe a second, the rest of the six would show in
    // the counters by now if it went on.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = api.get(&format!("{SCANS}/{id}")).await;
    assert_eq!(later, stopped, "the scan went on after it was cancelled");
    assert_eq!(later["status"], "cancelled");
    assert_eq!(later["finished_at"], cancelled["finished_at"]);
    let scanned = later["hosts_scanned"].as_i64().unwrap();
    assert!(scanned > 0 && scanned < 6, "{later}");
    // The other scan was not disturbed.
    let next = finished(&api, next["id"].as_str().unwrap()).await;
    assert_eq!(next["status"], "completed", "{next}");

    // Ended scans cannot be cancelled; unknown ones are not found.
    for done in [id.clone(), next["id"].as_str().unwrap().to_owned()] {
        let v = delete(Role::Admin, done, StatusCode::CONFLICT).await;
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("only a queued or running scan"),
            "{v}"
        );
    }
    delete(
        Role::Admin,
        uuid::Uuid::new_v4().to_string(),
        StatusCode::NOT_FOUND,
    )
    .await;
    delete(Role::Admin, "nope".to_owned(), StatusCode::BAD_REQUEST).await;
    // A queued scan no task holds (yet) is cancelled all the same.
    let queued: String = sqlx::query_scalar(
        "INSERT INTO discovery_scans (cidr, ports, requested_by, hosts_total)
         VALUES ('127.0.0.0/30', '{80}', 'a', 2) RETURNING id::text",
    )
    .fetch_one(&api.pool)
    .await
    .unwrap();
    let v = delete(Role::Admin, queued.clone(), StatusCode::OK).await;
    assert_eq!(v["status"], "cancelled");

    // Each cancellation is audited, with the state it interrupted.
    let audits: Vec<(String, String, Value)> = sqlx::query_as(
        "SELECT actor, entity_id::text, details FROM audit_logs
         WHERE entity_type = 'discovery_scan' AND action = 'cancel' ORDER BY at, id",
    )
    .fetch_all(&api.pool)
    .await
    .unwrap();
    assert_eq!(
        audits,
        vec![
            ("admin".to_owned(), id, json!({"status": "running"})),
            ("admin".to_owned(), queued, json!({"status": "queued"})),
        ]
    );
    let listed = api.get(&format!("{SCANS}?status=cancelled")).await;
    assert_eq!(listed["total"], 2);
}

/// A broad allowed range does not open loopback, link-local (the cloud metadata
/// address), multicast or their NAT64 images: 403, and no scan row.
#[tokio::test]
async fn reserved_addresses_are_refused_inside_broad_ranges() {
    let api = TestApi::with("disc_reserved", |c| {
        c.api.discovery.allowed_ranges = vec!["0.0.0.0/0".into(), "::/0".into()];
        c.api.discovery.max_hosts = 256;
    })
    .await;
    for cidr in [
        "169.254.169.254/32",
        "127.0.0.1/32",
        "224.0.0.0/24",
        "64:ff9b::a9fe:a9fe/128",
        "fe80::/120",
    ] {
        let v = start(&api, json!({"cidr": cidr}), StatusCode::FORBIDDEN).await;
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("allowed_ranges lies inside it"),
            "{cidr}: {v}"
        );
    }
    let scans: i64 = sqlx::query_scalar("SELECT count(*) FROM discovery_scans")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(scans, 0);
}

/// A scan whose row another instance has failed as orphaned (its heartbeat stalled)
/// stops probing at its next progress write and gives its slot back, leaving the row
/// as the other instance wrote it.
#[tokio::test]
async fn a_scan_failed_elsewhere_stops() {
    let api = TestApi::with("disc_abandoned", |c| {
        allow_loopback(c);
        c.api.discovery.rate_per_second = 1;
        c.api.discovery.max_running_scans = 1;
    })
    .await;
    let v = start(&api, json!({"cidr": "127.0.0.0/29"}), StatusCode::ACCEPTED).await;
    let id: uuid::Uuid = v["id"].as_str().unwrap().parse().unwrap();
    let status = async || -> (String, i64) {
        sqlx::query_as("SELECT status, hosts_scanned FROM discovery_scans WHERE id = $1")
            .bind(id)
            .fetch_one(&api.pool)
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while status().await.0 != "running" {
        assert!(Instant::now() < deadline, "the scan never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sqlx::query(
        "UPDATE discovery_scans SET status = 'failed', finished_at = now(),
             error = 'the API instance running it stopped' WHERE id = $1",
    )
    .bind(id)
    .execute(&api.pool)
    .await
    .unwrap();
    // Its slot comes back (max_running_scans is 1) once it has noticed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, _, v) = api
            .call(
                Method::POST,
                SCANS,
                Some(&TestApi::token(Role::Admin)),
                Some(json!({"cidr": "127.0.0.0/30"})),
            )
            .await;
        if s == StatusCode::ACCEPTED {
            break;
        }
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (state, scanned) = status().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        status().await,
        (state.clone(), scanned),
        "it stopped writing"
    );
    assert_eq!(state, "failed");
}
