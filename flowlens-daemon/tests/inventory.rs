//! The inventory stage against loopback servers that answer as Google's and Azure's
//! APIs document (token endpoints included, pagination included) and check the
//! requests made; then the graph: assets get their identity from the inventory, a
//! name a person set stays, a provider that fails keeps its last snapshot, and a
//! restart starts from the saved one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap is the failure message"
)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use flowlens_daemon::generate::Topology;
use flowlens_daemon::graph::sink::{GraphHealth, GraphSink};
use flowlens_daemon::inventory::config::{AzureConfig, GcpConfig};
use flowlens_daemon::inventory::{self, Inventory, Provider, azure::Azure, gcp::Gcp};
use flowlens_daemon::testing::postgres::scratch;
use serde_json::{Value, json};

/// `application/x-www-form-urlencoded` or a query string, decoded.
fn form(s: &str) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let b = s.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && i + 2 < b.len()
                && let Ok(v) =
                    u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16)
            {
                out.push(v);
                i += 3;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    s.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// What the loopback clouds serve and saw.
#[derive(Default)]
struct Cloud {
    /// The GCP instances, as the API's `Instance` resources.
    instances: Vec<Value>,
    /// Azure rows of the Resource Graph query.
    rows: Vec<Value>,
    /// Answer every API call with this status instead.
    fail: Option<u16>,
    /// Resource Graph: say the result is truncated, with no way on.
    truncate: bool,
    problems: Vec<String>,
    tokens_issued: usize,
    pages_served: usize,
    /// Answer the GCP listing this late (a hung API).
    delay: Option<Duration>,
    public_key: String,
}

type Shared = Arc<Mutex<Cloud>>;

async fn serve(cloud: Shared) -> String {
    let app = Router::new()
        .route("/token", post(gcp_token))
        .route(
            "/compute/v1/projects/{project}/aggregated/instances",
            get(gcp_list),
        )
        .route("/{tenant}/oauth2/v2.0/token", post(azure_token))
        .route(
            "/metadata/identity/oauth2/token",
            get(azure_managed_identity),
        )
        .route(
            "/providers/Microsoft.ResourceGraph/resources",
            post(azure_query),
        )
        .with_state(cloud);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Google's token endpoint: a JWT-bearer grant whose assertion is signed by the key
/// (checked with its public half) and names the scope and audience.
async fn gcp_token(State(c): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(std::str::from_utf8(&body).unwrap());
    let mut c = c.lock().unwrap();
    if f.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        c.problems.push(format!("grant_type {f:?}"));
    }
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(c.public_key.as_bytes()).unwrap();
    // The audience is the token endpoint itself, as the key file names it.
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[format!("http://{host}/token")]);
    v.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    match jsonwebtoken::decode::<Value>(f.get("assertion").map_or("", String::as_str), &key, &v) {
        Ok(t) => {
            if t.claims["scope"] != "https://www.googleapis.com/auth/compute.readonly"
                || t.claims["iss"] != "flowlens@proj-123456.iam.gserviceaccount.com"
                // Google accepts assertions valid for an hour at most.
                || !(1..=3600).contains(
                    &(t.claims["exp"].as_i64().unwrap_or(0) - t.claims["iat"].as_i64().unwrap_or(0)),
                )
            {
                c.problems.push(format!("claims {}", t.claims));
            }
        }
        Err(e) => {
            c.problems.push(format!("assertion: {e}"));
            return StatusCode::BAD_REQUEST.into_response();
        }
    }
    c.tokens_issued += 1;
    axum::Json(json!({"access_token": "ya29.test", "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

/// `instances.aggregatedList`, two instances a page, zones without instances as
/// warnings, `nextPageToken` until the last page.
async fn gcp_list(State(c): State<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    let delay = c.lock().unwrap().delay;
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut c = c.lock().unwrap();
    if let Some(status) = c.fail {
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer ya29.test") {
        c.problems.push("no bearer token".into());
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if !uri.path().contains("/projects/proj-123456/") {
        c.problems.push(format!("project in {uri}"));
    }
    let q = form(uri.query().unwrap_or(""));
    if q.get("maxResults").map(String::as_str) != Some("500") {
        c.problems.push(format!("maxResults {q:?}"));
    }
    let start: usize = q.get("pageToken").map_or(0, |t| t.parse().unwrap());
    let page: Vec<Value> = c.instances.iter().skip(start).take(2).cloned().collect();
    c.pages_served += 1;
    let mut items = serde_json::Map::new();
    let mut by_zone: HashMap<String, Vec<Value>> = HashMap::new();
    for i in page {
        let zone = i["zone"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        by_zone.entry(format!("zones/{zone}")).or_default().push(i);
    }
    for (k, v) in by_zone {
        items.insert(k, json!({"instances": v}));
    }
    items.insert(
        "zones/asia-east1-a".into(),
        json!({"warning": {"code": "NO_RESULTS_ON_PAGE", "message": "There are no results for scope 'zones/asia-east1-a' on this page."}}),
    );
    let mut answer = json!({"kind": "compute#instanceAggregatedList", "id": "projects/proj-123456/aggregated/instances", "items": items});
    if start + 2 < c.instances.len() {
        answer["nextPageToken"] = (start + 2).to_string().into();
    }
    axum::Json(answer).into_response()
}

async fn azure_token(State(c): State<Shared>, uri: Uri, body: Bytes) -> Response {
    let f = form(std::str::from_utf8(&body).unwrap());
    let mut c = c.lock().unwrap();
    // A client secret, or a federated token as a client assertion (workload identity).
    let credential = f.get("client_secret").map(String::as_str) == Some("app-secret")
        || (f.get("client_assertion_type").map(String::as_str)
            == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            && f.get("client_assertion").map(String::as_str) == Some("eyJ.federated.sig"));
    let ok = uri
        .path()
        .starts_with("/00000000-0000-0000-0000-0000000000aa/")
        && f.get("grant_type").map(String::as_str) == Some("client_credentials")
        && f.get("client_id").map(String::as_str) == Some("app-id")
        && credential
        && f.get("scope").is_some_and(|s| s.ends_with("/.default"));
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client", "error_description": format!("AADSTS7000215: Invalid client secret {f:?}")})),
        )
            .into_response();
    }
    c.tokens_issued += 1;
    axum::Json(json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "eyJ.azure"}))
        .into_response()
}

/// The instance metadata service's managed-identity token, as Azure documents it:
/// `Metadata: true` required, the resource named, `expires_in` as a string.
async fn azure_managed_identity(State(c): State<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    let q = form(uri.query().unwrap_or(""));
    let mut c = c.lock().unwrap();
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true")
        || q.get("api-version").map(String::as_str) != Some("2018-02-01")
        || !q.get("resource").is_some_and(|r| r.ends_with('/'))
    {
        c.problems.push(format!("managed identity request {uri}"));
        return StatusCode::BAD_REQUEST.into_response();
    }
    c.tokens_issued += 1;
    axum::Json(json!({"access_token": "eyJ.azure", "expires_in": "86399",
                      "token_type": "Bearer", "resource": q["resource"]}))
    .into_response()
}

/// Resource Graph: `$top` rows a page, `$skipToken` to go on.
async fn azure_query(
    State(c): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut c = c.lock().unwrap();
    if let Some(status) = c.fail {
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer eyJ.azure") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if form(uri.query().unwrap_or(""))
        .get("api-version")
        .map(String::as_str)
        != Some("2022-10-01")
    {
        c.problems.push(format!("api-version in {uri}"));
    }
    let req: Value = serde_json::from_slice(&body).unwrap();
    let query = req["query"].as_str().unwrap_or("");
    if !(query.contains("microsoft.network/networkinterfaces")
        && query.contains("microsoft.compute/virtualmachines")
        && query.contains("microsoft.network/publicipaddresses"))
    {
        c.problems
            .push("the query does not join NICs, VMs and public IPs".into());
    }
    if req["subscriptions"] != json!(["00000000-0000-0000-0000-000000000001"]) {
        c.problems
            .push(format!("subscriptions {}", req["subscriptions"]));
    }
    if req["options"]["resultFormat"] != "objectArray" || req["options"]["$top"] != 1000 {
        c.problems.push(format!("options {}", req["options"]));
    }
    // Two rows a page here, whatever `$top` says, to make it page.
    let start: usize = req["options"]["$skipToken"]
        .as_str()
        .map_or(0, |t| t.trim_start_matches("ew0K").parse().unwrap());
    let rows: Vec<Value> = c.rows.iter().skip(start).take(2).cloned().collect();
    c.pages_served += 1;
    let mut answer = json!({"totalRecords": c.rows.len(), "count": rows.len(),
        "resultTruncated": if c.truncate { "true" } else { "false" }, "facets": [], "data": rows});
    if start + 2 < c.rows.len() && !c.truncate {
        answer["$skipToken"] = format!("ew0K{}", start + 2).into();
    }
    axum::Json(answer).into_response()
}

/// A GCP instance resource as the API documents it.
fn gcp_instance(id: u64, name: &str, zone: &str, ip: &str, nat: Option<&str>) -> Value {
    let base = "https://www.googleapis.com/compute/v1/projects/proj-123456";
    let mut nic = json!({
        "kind": "compute#networkInterface",
        "network": format!("{base}/global/networks/prod-vpc"),
        "subnetwork": format!("{base}/regions/europe-west1/subnetworks/prod-backend"),
        "networkIP": ip, "name": "nic0", "stackType": "IPV4_ONLY",
        "fingerprint": "zLWUWwBtbJc="
    });
    if let Some(nat) = nat {
        nic["accessConfigs"] = json!([{"kind": "compute#accessConfig", "type": "ONE_TO_ONE_NAT",
            "name": "External NAT", "natIP": nat, "networkTier": "PREMIUM"}]);
    }
    json!({
        "kind": "compute#instance", "id": id.to_string(), "name": name,
        "zone": format!("{base}/zones/{zone}"),
        "machineType": format!("{base}/zones/{zone}/machineTypes/e2-standard-4"),
        "status": "RUNNING", "networkInterfaces": [nic],
        "labels": {"team": "payments", "env": "prod"},
        "selfLink": format!("{base}/zones/{zone}/instances/{name}")
    })
}

/// A service-account key file whose token endpoint is `url`, and its public key.
fn service_account(dir: &std::path::Path, url: &str) -> (std::path::PathBuf, String) {
    let private = dir.join("key.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey");
    let public = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .output()
        .unwrap()
        .stdout;
    let key = json!({
        "type": "service_account", "project_id": "proj-123456",
        "private_key_id": "0123456789abcdef",
        "private_key": std::fs::read_to_string(&private).unwrap(),
        "client_email": "flowlens@proj-123456.iam.gserviceaccount.com",
        "client_id": "1234567890", "token_uri": format!("{url}/token"),
    });
    let path = dir.join("sa.json");
    std::fs::write(&path, key.to_string()).unwrap();
    (path, String::from_utf8(public).unwrap())
}

fn tempdir(label: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "flowlens-inventory-{label}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gcp_config(url: &str, key: &std::path::Path) -> GcpConfig {
    GcpConfig {
        enabled: true,
        projects: vec!["proj-123456".into()],
        refresh_interval_seconds: 1,
        credentials_file: key.display().to_string(),
        compute_endpoint: url.to_owned(),
        ..GcpConfig::default()
    }
}

#[tokio::test]
async fn gcp_instances_come_from_every_page_with_a_signed_token() {
    let cloud = Shared::default();
    let url = serve(cloud.clone()).await;
    let dir = tempdir("gcp");
    let (key, public) = service_account(&dir, &url);
    {
        let mut c = cloud.lock().unwrap();
        c.public_key = public;
        c.instances = vec![
            gcp_instance(
                1001,
                "web-1",
                "europe-west1-b",
                "10.20.0.2",
                Some("34.76.1.2"),
            ),
            gcp_instance(1002, "web-2", "europe-west1-c", "10.20.0.3", None),
            gcp_instance(1003, "db-1", "europe-west1-b", "10.20.1.2", None),
        ];
    }
    let provider = Provider::Gcp(Gcp::new(gcp_config(&url, &key)).unwrap());
    let got = provider.snapshot().await.unwrap();
    let c = cloud.lock().unwrap();
    assert_eq!(c.problems, Vec::<String>::new());
    assert_eq!(
        (c.tokens_issued, c.pages_served),
        (1, 2),
        "two pages, one token"
    );
    let by_ip: HashMap<IpAddr, inventory::Item> = got.into_iter().collect();
    assert_eq!(
        by_ip.len(),
        4,
        "three internal addresses and one NAT address"
    );
    let web = &by_ip[&"34.76.1.2".parse::<IpAddr>().unwrap()];
    assert_eq!(web, &by_ip[&"10.20.0.2".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        (
            web.provider.as_str(),
            web.id.as_str(),
            web.name.as_deref(),
            web.account.as_deref(),
            web.region.as_deref(),
            web.zone.as_deref(),
            web.instance_type.as_deref(),
            web.vpc.as_deref(),
            web.subnet.as_deref(),
        ),
        (
            "gcp",
            "1001",
            Some("web-1"),
            Some("proj-123456"),
            Some("europe-west1"),
            Some("europe-west1-b"),
            Some("e2-standard-4"),
            Some("prod-vpc"),
            Some("prod-backend"),
        )
    );
    assert_eq!(web.tags["team"], "payments");
    let _ = std::fs::remove_dir_all(dir);
}

fn azure_config(url: &str) -> AzureConfig {
    AzureConfig {
        enabled: true,
        subscriptions: vec!["00000000-0000-0000-0000-000000000001".into()],
        refresh_interval_seconds: 1,
        tenant_id: "00000000-0000-0000-0000-0000000000aa".into(),
        client_id: "app-id".into(),
        client_secret: "app-secret".into(),
        authority_host: url.to_owned(),
        management_endpoint: url.to_owned(),
        ..AzureConfig::default()
    }
}

fn azure_row(vm: Option<(&str, &str)>, nic: &str, private: &str, public: Option<&str>) -> Value {
    let sub = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/prod-rg";
    json!({
        "nicId": format!("{sub}/providers/Microsoft.Network/networkInterfaces/{nic}"),
        "nicName": nic, "subscriptionId": "00000000-0000-0000-0000-000000000001",
        "location": "westeurope", "tags": {"costcenter": "42"},
        "vmId": vm.map_or(String::new(), |(_, n)| format!("{sub}/providers/microsoft.compute/virtualmachines/{n}").to_lowercase()),
        "vmName": vm.map(|(_, n)| n), "vmSize": vm.map(|(s, _)| s),
        "zones": if vm.is_some() { json!(["2"]) } else { Value::Null },
        "vmTags": {"app": "orders"},
        "privateIp": private, "publicIp": public.unwrap_or(""),
        "subnetId": format!("{sub}/providers/Microsoft.Network/virtualNetworks/prod-vnet/subnets/backend"),
    })
}

#[tokio::test]
async fn azure_nics_vms_and_public_ips_come_from_one_paged_query() {
    let cloud = Shared::default();
    let url = serve(cloud.clone()).await;
    cloud.lock().unwrap().rows = vec![
        azure_row(
            Some(("Standard_D4s_v5", "orders-vm-1")),
            "orders-vm-1-nic",
            "10.1.0.4",
            Some("20.50.1.9"),
        ),
        azure_row(
            Some(("Standard_D4s_v5", "orders-vm-2")),
            "orders-vm-2-nic",
            "10.1.0.5",
            None,
        ),
        azure_row(None, "pe-sql-nic", "10.1.2.7", None),
    ];
    let provider = Provider::Azure(Azure::new(azure_config(&url)).unwrap());
    let got: HashMap<IpAddr, inventory::Item> =
        provider.snapshot().await.unwrap().into_iter().collect();
    let (problems, pages) = {
        let c = cloud.lock().unwrap();
        (c.problems.clone(), c.pages_served)
    };
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(pages, 2, "followed $skipToken");
    assert_eq!(got.len(), 4);
    let vm = &got[&"20.50.1.9".parse::<IpAddr>().unwrap()];
    assert_eq!(vm, &got[&"10.1.0.4".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        (
            vm.kind.as_str(),
            vm.name.as_deref(),
            vm.account.as_deref(),
            vm.region.as_deref(),
            vm.zone.as_deref(),
            vm.instance_type.as_deref(),
            vm.vpc.as_deref(),
            vm.subnet.as_deref(),
        ),
        (
            "instance",
            Some("orders-vm-1"),
            Some("00000000-0000-0000-0000-000000000001"),
            Some("westeurope"),
            Some("2"),
            Some("Standard_D4s_v5"),
            Some("prod-vnet"),
            Some("backend"),
        )
    );
    assert!(vm.id.ends_with("/virtualmachines/orders-vm-1"), "{}", vm.id);
    assert_eq!(
        (vm.tags["costcenter"].as_str(), vm.tags["app"].as_str()),
        ("42", "orders")
    );
    let pe = &got[&"10.1.2.7".parse::<IpAddr>().unwrap()];
    assert_eq!(
        (pe.kind.as_str(), pe.name.as_deref()),
        ("nic", Some("pe-sql-nic"))
    );

    // A truncated answer with no way on is not installed as a whole inventory.
    cloud.lock().unwrap().truncate = true;
    let e = provider.snapshot().await.unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
    cloud.lock().unwrap().truncate = false;

    // A wrong secret: a credentials error that repeats neither the secret nor what
    // the token endpoint echoed.
    let mut bad = azure_config(&url);
    bad.client_secret = "not-the-secret".into();
    let e = Provider::Azure(Azure::new(bad).unwrap())
        .snapshot()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 401"), "{e}");
    assert!(
        !e.contains("not-the-secret") && !e.contains("AADSTS"),
        "{e}"
    );
}

#[tokio::test]
async fn a_failing_provider_keeps_its_last_snapshot_and_a_restart_starts_from_the_saved_one() {
    let cloud = Shared::default();
    let url = serve(cloud.clone()).await;
    let dir = tempdir("keep");
    let (key, public) = service_account(&dir, &url);
    {
        let mut c = cloud.lock().unwrap();
        c.public_key = public;
        c.instances = vec![gcp_instance(7, "api-1", "us-central1-a", "10.9.0.7", None)];
    }
    let ip: IpAddr = "10.9.0.7".parse().unwrap();
    let inv = Arc::new(Inventory::default());
    let provider = Provider::Gcp(Gcp::new(gcp_config(&url, &key)).unwrap());
    let mut failing = inventory::Streak::default();
    assert!(inventory::refresh_once(&inv, &provider, Some(&dir), &mut failing).await);
    // Saved for the next start, readable by the daemon's user only.
    let saved = inventory::snapshot_path(&dir, "gcp");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&saved).unwrap().permissions())
            & 0o777,
        0o600
    );
    assert_eq!(inv.lookup(ip).unwrap().item.name.as_deref(), Some("api-1"));
    let version = inv.version();
    for status in [500, 503, 401] {
        cloud.lock().unwrap().fail = Some(status);
        assert!(!inventory::refresh_once(&inv, &provider, Some(&dir), &mut failing).await);
        assert!(failing.failing);
        assert_eq!(
            inv.lookup(ip).unwrap().item.name.as_deref(),
            Some("api-1"),
            "kept after {status}"
        );
    }
    // An API that hangs past the provider's timeout: the same.
    cloud.lock().unwrap().fail = None;
    cloud.lock().unwrap().delay = Some(Duration::from_secs(3));
    let impatient = Provider::Gcp(
        Gcp::new(GcpConfig {
            timeout_seconds: 1,
            ..gcp_config(&url, &key)
        })
        .unwrap(),
    );
    let mut waiting = inventory::Streak::default();
    assert!(!inventory::refresh_once(&inv, &impatient, Some(&dir), &mut waiting).await);
    assert_eq!(inv.lookup(ip).unwrap().item.name.as_deref(), Some("api-1"));
    cloud.lock().unwrap().delay = None;
    assert_eq!(inv.version(), version, "nothing swapped in");
    // The API answers again: the token it refused (401) is not used again.
    cloud.lock().unwrap().fail = None;
    assert!(inventory::refresh_once(&inv, &provider, Some(&dir), &mut failing).await);
    assert!(!failing.failing);
    // The first token, the impatient provider's own, and a new one after the 401.
    assert_eq!(
        cloud.lock().unwrap().tokens_issued,
        3,
        "a new token after the 401"
    );
    // A restart with the API still down starts from the saved snapshot.
    let warm = Arc::new(Inventory::default());
    inventory::spawn(
        &warm,
        vec![(
            Provider::Gcp(Gcp::new(gcp_config(&url, &key)).unwrap()),
            Duration::from_hours(1),
        )],
        Some(&dir),
    );
    assert_eq!(warm.lookup(ip).unwrap().item.id, "7");
    let _ = std::fs::remove_dir_all(dir);
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// An asset's name and cloud identity.
type Identity = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The enterprise topology's flows with the GCP inventory describing two of its hosts:
/// their assets get the cloud identity and the instance names; a name a person set
/// is kept when the instance is renamed, while the rest follows the inventory.
#[test]
fn assets_take_their_identity_from_the_inventory_and_keep_a_persons_name() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cloud = Shared::default();
    let url = rt.block_on(serve(cloud.clone()));
    let dir = tempdir("graph");
    let (key, public) = service_account(&dir, &url);
    {
        let mut c = cloud.lock().unwrap();
        c.public_key = public;
        c.instances = vec![
            gcp_instance(3010, "app-server-1", "europe-west1-b", "10.3.0.10", None),
            gcp_instance(4010, "orders-db-1", "europe-west1-c", "10.4.0.10", None),
        ];
    }
    let db = rt.block_on(scratch("inventory"));
    let mut s = flowlens_daemon::testing::postgres::graph_settings(db.url.clone());
    s.enrichment.cloud.gcp = gcp_config(&url, &key);
    s.state_dir = Some(dir.clone());
    let mut sink = GraphSink::open(&s, GraphHealth::default()).unwrap();
    let topology = Topology::enterprise();
    let exporter: IpAddr = "192.0.2.1".parse().unwrap();
    let now = now_ms();
    for round in 0..4 {
        sink.write(&topology.round(round, now - 1000, exporter, true));
    }
    let identity = |ip: &str| -> Option<Identity> {
        rt.block_on(
            sqlx::query_as(
                "SELECT a.name, a.cloud_provider, a.cloud_instance_id, a.cloud_account,
                        a.cloud_region, a.cloud_zone, a.instance_type, a.vpc
                 FROM assets a JOIN asset_addresses aa ON aa.asset_id = a.id
                 WHERE aa.ip = $1::inet",
            )
            .bind(ip)
            .fetch_optional(&db.pool),
        )
        .unwrap()
    };
    // The first snapshot signs a JWT with a 2048-bit key: seconds in a debug build.
    let mut described = None;
    for _ in 0..600 {
        assert!(sink.flush_now());
        described = identity("10.4.0.10").filter(|r| r.1.is_some());
        if described.is_some() {
            break;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
    assert_eq!(
        described.unwrap(),
        (
            "orders-db-1".to_owned(),
            Some("gcp".to_owned()),
            Some("4010".to_owned()),
            Some("proj-123456".to_owned()),
            Some("europe-west1".to_owned()),
            Some("europe-west1-c".to_owned()),
            Some("e2-standard-4".to_owned()),
            Some("prod-vpc".to_owned()),
        )
    );
    let app = identity("10.3.0.10").unwrap();
    assert_eq!(
        (app.0.as_str(), app.2.as_deref()),
        ("app-server-1", Some("3010"))
    );
    let tags: Value = rt
        .block_on(
            sqlx::query_scalar(
                "SELECT a.tags FROM assets a JOIN asset_addresses aa ON aa.asset_id = a.id
                 WHERE aa.ip = '10.4.0.10'",
            )
            .fetch_one(&db.pool),
        )
        .unwrap();
    assert_eq!(tags["cloud"], json!({"env": "prod", "team": "payments"}));
    let other = identity("10.1.0.10");
    assert!(
        other.is_none_or(|r| r.1.is_none()),
        "hosts the inventory does not know stay as they were"
    );

    // A person names the database; the cloud renames and moves it: the person's name
    // stays, the rest follows, and the change is recorded.
    rt.block_on(
        sqlx::query(
            "UPDATE assets SET name = 'orders primary' FROM asset_addresses aa
             WHERE aa.asset_id = assets.id AND aa.ip = '10.4.0.10'",
        )
        .execute(&db.pool),
    )
    .unwrap();
    cloud.lock().unwrap().instances[1] =
        gcp_instance(4010, "orders-db-1b", "europe-west1-d", "10.4.0.10", None);
    let mut moved = None;
    for _ in 0..300 {
        std::thread::park_timeout(Duration::from_millis(100));
        assert!(sink.flush_now());
        moved = identity("10.4.0.10").filter(|r| r.5.as_deref() == Some("europe-west1-d"));
        if moved.is_some() {
            break;
        }
    }
    assert_eq!(moved.expect("the move arrives").0, "orders primary");
    let events: Vec<(Value, Value)> = rt
        .block_on(
            sqlx::query_as(
                "SELECT before_state, after_state FROM change_events
                 WHERE change_type = 'asset_changed' AND after_state ? 'cloud_zone'
                 ORDER BY detected_at",
            )
            .fetch_all(&db.pool),
        )
        .unwrap();
    let last = events.last().expect("asset_changed events");
    assert_eq!(last.0["cloud_zone"], "europe-west1-c");
    assert_eq!(last.1["cloud_zone"], "europe-west1-d");
    assert!(
        last.1.get("name").is_none(),
        "the name did not change: {}",
        last.1
    );
    assert!(
        events
            .iter()
            .any(|(b, a)| b["cloud_provider"].is_null() && a["cloud_provider"] == "gcp"),
        "{events:?}"
    );
    // Tags someone set to something that is not an object do not stop the flush:
    // they make way for the inventory's.
    rt.block_on(
        sqlx::query(
            "UPDATE assets SET tags = '\"hand-made\"'::jsonb FROM asset_addresses aa
             WHERE aa.asset_id = assets.id AND aa.ip = '10.3.0.10'",
        )
        .execute(&db.pool),
    )
    .unwrap();
    let mut relabelled = gcp_instance(3010, "app-server-1", "europe-west1-b", "10.3.0.10", None);
    relabelled["labels"] = json!({"team": "checkout"});
    cloud.lock().unwrap().instances[0] = relabelled;
    let mut tags = Value::Null;
    for _ in 0..300 {
        std::thread::park_timeout(Duration::from_millis(100));
        assert!(sink.flush_now());
        tags = rt
            .block_on(
                sqlx::query_scalar(
                    "SELECT a.tags FROM assets a JOIN asset_addresses aa ON aa.asset_id = a.id
                     WHERE aa.ip = '10.3.0.10'",
                )
                .fetch_one(&db.pool),
            )
            .unwrap();
        if tags["cloud"]["team"] == "checkout" {
            break;
        }
    }
    assert_eq!(tags, json!({"cloud": {"team": "checkout"}}));
    // Saved for the next start.
    assert!(inventory::snapshot_path(&dir, "gcp").is_file());
    drop(sink);
    let _ = std::fs::remove_dir_all(dir);
}

/// `enrichment.cache.backend: redis`: of two daemons, the first to refresh calls the
/// cloud's API and shares its snapshot; the second takes it with no call of its own.
/// With Redis down, each calls the API itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_a_providers_snapshot_through_redis() {
    use flowlens_daemon::config::CacheConfig;
    use flowlens_daemon::enrich::shared::SharedCache;

    let cloud = Shared::default();
    let url = serve(cloud.clone()).await;
    let dir = tempdir("shared");
    let (key, public) = service_account(&dir, &url);
    {
        let mut c = cloud.lock().unwrap();
        c.public_key = public;
        c.instances = vec![gcp_instance(7, "api-1", "us-central1-a", "10.9.0.7", None)];
    }
    let mut redis = flowlens_redis::testing::RedisServer::start().await;
    let through_redis = || {
        Arc::new(Inventory::shared_through(Arc::new(
            SharedCache::new(&CacheConfig {
                backend: "redis".into(),
                redis_url: redis.url(0),
                ..CacheConfig::default()
            })
            .unwrap()
            .unwrap(),
        )))
    };
    let ip: IpAddr = "10.9.0.7".parse().unwrap();
    let provider = || {
        (
            Provider::Gcp(Gcp::new(gcp_config(&url, &key)).unwrap()),
            Duration::from_hours(1),
        )
    };
    let wait = async |inv: &Inventory| {
        for _ in 0..200 {
            if inv.lookup(ip).is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no snapshot installed");
    };
    let first = through_redis();
    let _a = inventory::spawn(&first, vec![provider()], None);
    wait(&first).await;
    let served = cloud.lock().unwrap().pages_served;
    assert!(served >= 1);
    let second = through_redis();
    let _b = inventory::spawn(&second, vec![provider()], None);
    wait(&second).await;
    assert_eq!(
        second.lookup(ip).unwrap().item.name.as_deref(),
        Some("api-1")
    );
    assert_eq!(
        cloud.lock().unwrap().pages_served,
        served,
        "the second instance took the shared snapshot"
    );
    // Redis down: the next refresh calls the API itself, and succeeds.
    redis.stop();
    let own = Provider::Gcp(Gcp::new(gcp_config(&url, &key)).unwrap());
    let mut streak = inventory::Streak::default();
    assert!(inventory::refresh_once(&second, &own, None, &mut streak).await);
    assert!(cloud.lock().unwrap().pages_served > served);
    let _ = std::fs::remove_dir_all(dir);
}

/// An asset's name, type, discovery source, addresses, instance id and staleness.
type Created = (String, String, String, Vec<String>, Option<String>, bool);

/// `enrichment.cloud.create_assets`: instances no flow has shown become assets
/// (`discovery_source: cloud_api`, every address of the instance, described at once);
/// one that leaves the inventory loses its description and goes stale.
#[test]
fn instances_without_flows_become_assets_when_asked_and_go_stale_when_gone() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cloud = Shared::default();
    let url = rt.block_on(serve(cloud.clone()));
    let dir = tempdir("create");
    let (key, public) = service_account(&dir, &url);
    {
        let mut c = cloud.lock().unwrap();
        c.public_key = public;
        c.instances = vec![
            gcp_instance(
                51,
                "batch-1",
                "europe-west1-b",
                "10.50.0.1",
                Some("203.0.113.51"),
            ),
            gcp_instance(52, "batch-2", "europe-west1-b", "10.50.0.2", None),
        ];
    }
    let db = rt.block_on(scratch("inventory_create"));
    let mut s = flowlens_daemon::testing::postgres::graph_settings(db.url.clone());
    s.enrichment.cloud.gcp = gcp_config(&url, &key);
    s.enrichment.cloud.create_assets = true;
    let mut sink = GraphSink::open(&s, GraphHealth::default()).unwrap();
    let assets = || -> Vec<Created> {
        rt.block_on(
            sqlx::query_as(
                "SELECT name, asset_type, discovery_source,
                        (SELECT array_agg(host(ip) ORDER BY ip) FROM asset_addresses
                         WHERE asset_id = a.id),
                        cloud_instance_id, stale
                 FROM assets a ORDER BY name",
            )
            .fetch_all(&db.pool),
        )
        .unwrap()
    };
    let mut created = Vec::new();
    for _ in 0..600 {
        assert!(sink.flush_now());
        created = assets();
        if created.len() == 2 && created.iter().all(|a| a.4.is_some()) {
            break;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
    assert_eq!(
        created,
        [
            (
                "batch-1".to_owned(),
                "vm".to_owned(),
                "cloud_api".to_owned(),
                vec!["10.50.0.1".to_owned(), "203.0.113.51".to_owned()],
                Some("51".to_owned()),
                false
            ),
            (
                "batch-2".to_owned(),
                "vm".to_owned(),
                "cloud_api".to_owned(),
                vec!["10.50.0.2".to_owned()],
                Some("52".to_owned()),
                false
            ),
        ]
    );
    let events: i64 = rt
        .block_on(
            sqlx::query_scalar(
                "SELECT count(*) FROM change_events WHERE change_type = 'new_asset'
                 AND after_state ->> 'discovery_source' = 'cloud_api'",
            )
            .fetch_one(&db.pool),
        )
        .unwrap();
    assert_eq!(events, 2);
    // batch-2 is deleted in the cloud.
    cloud.lock().unwrap().instances.truncate(1);
    let mut gone = None;
    for _ in 0..300 {
        std::thread::park_timeout(Duration::from_millis(100));
        assert!(sink.flush_now());
        gone = assets().into_iter().find(|a| a.0 == "10.50.0.2" && a.5);
        if gone.is_some() {
            break;
        }
    }
    let gone = gone.expect("batch-2's asset cleared and stale");
    assert_eq!((gone.2.as_str(), gone.4), ("cloud_api", None));
    let kept = assets().into_iter().find(|a| a.0 == "batch-1").unwrap();
    assert!(!kept.5 && kept.4.is_some(), "batch-1 stays: {kept:?}");
    drop(sink);
    let _ = std::fs::remove_dir_all(dir);
}

/// Azure's other standard credential sources: a federated token file (AKS workload
/// identity) exchanged as a client assertion, and the managed identity from the
/// instance metadata service; with none, the error says so.
#[tokio::test]
async fn azure_tokens_come_from_a_federated_token_or_the_managed_identity() {
    let cloud = Shared::default();
    cloud.lock().unwrap().rows = vec![azure_row(
        Some(("Standard_D2s_v5", "vm-fed")),
        "nic-fed",
        "10.60.0.4",
        None,
    )];
    let url = serve(cloud.clone()).await;
    let dir = tempdir("azure-sources");
    let token = dir.join("azure-identity-token");
    std::fs::write(&token, "eyJ.federated.sig\n").unwrap();
    let federated = AzureConfig {
        client_secret: String::new(),
        federated_token_file: token.display().to_string(),
        ..azure_config(&url)
    };
    let ip: IpAddr = "10.60.0.4".parse().unwrap();
    let got = Azure::new(federated).unwrap().snapshot().await.unwrap();
    assert_eq!(
        got.iter()
            .find(|(a, _)| *a == ip)
            .unwrap()
            .1
            .name
            .as_deref(),
        Some("vm-fed")
    );
    let managed = AzureConfig {
        client_secret: String::new(),
        federated_token_file: String::new(),
        client_id: String::new(),
        metadata_endpoint: url.clone(),
        ..azure_config(&url)
    };
    let got = Azure::new(managed).unwrap().snapshot().await.unwrap();
    assert!(got.iter().any(|(a, _)| *a == ip));
    {
        let c = cloud.lock().unwrap();
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(c.tokens_issued, 2);
    }
    let nothing = AzureConfig {
        client_secret: "${FLOWLENS_TEST_UNSET_AZURE_SECRET}".into(),
        federated_token_file: "${FLOWLENS_TEST_UNSET_AZURE_TOKEN}".into(),
        metadata_endpoint: format!("http://127.0.0.1:{}", free_tcp_port()),
        timeout_seconds: 2,
        ..azure_config(&url)
    };
    let e = Azure::new(nothing).unwrap().snapshot().await.unwrap_err();
    assert!(e.to_string().contains("no Azure credentials"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
