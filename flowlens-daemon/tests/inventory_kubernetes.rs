//! The Kubernetes inventory against a loopback API server that serves lists and
//! watches as the Kubernetes API does (resource versions, newline-delimited watch
//! events, metadata-only answers when asked for `PartialObjectMetadata`, bearer
//! tokens): pods resolved to their `Deployment` through their `ReplicaSet`, services and
//! nodes, a pod created and changed, a pod deleted and its address reused by another
//! (never the old identity), failing watches keeping the last snapshot, and the graph
//! writing cluster, namespace and workload onto assets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests: a failed unwrap is the failure message"
)]

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flowlens_daemon::generate::Topology;
use flowlens_daemon::graph::sink::{GraphHealth, GraphSink};
use flowlens_daemon::inventory::config::KubernetesConfig;
use flowlens_daemon::inventory::kubernetes::Kubernetes;
use flowlens_daemon::inventory::{self, Inventory, Provider};
use flowlens_daemon::testing::postgres::scratch;
use serde_json::{Value, json};

const TOKEN: &str = "flowlens-reader-token";

/// The resources the provider watches: (path, list kind).
const RESOURCES: [(&str, &str); 5] = [
    ("api/v1/pods", "PodList"),
    ("api/v1/services", "ServiceList"),
    ("api/v1/nodes", "NodeList"),
    ("apis/apps/v1/replicasets", "ReplicaSetList"),
    ("apis/batch/v1/jobs", "JobList"),
];

/// The cluster the fixture serves.
#[derive(Default)]
struct Cluster {
    rv: u64,
    /// resource -> (namespace/name -> object)
    objects: HashMap<String, BTreeMap<String, Value>>,
    /// (resource version, resource, event type, object)
    log: Vec<(u64, String, &'static str, Value)>,
    /// Every request fails with this status (and open watches end).
    fail: Option<u16>,
    /// resource -> Accept headers received
    accepts: HashMap<String, Vec<String>>,
    unauthorized: usize,
}

#[derive(Clone, Default)]
struct Api {
    cluster: Arc<Mutex<Cluster>>,
    changed: Arc<tokio::sync::Notify>,
}

impl Api {
    fn key(object: &Value) -> String {
        format!(
            "{}/{}",
            object["metadata"]["namespace"].as_str().unwrap_or(""),
            object["metadata"]["name"].as_str().unwrap()
        )
    }

    /// Creates or replaces an object (an ADDED or MODIFIED event).
    fn apply(&self, resource: &str, mut object: Value) {
        let mut c = self.cluster.lock().unwrap();
        c.rv += 1;
        let rv = c.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        object["metadata"]["uid"] = json!(format!("uid-{}", Self::key(&object)));
        let key = Self::key(&object);
        let kind = if c
            .objects
            .entry(resource.to_owned())
            .or_default()
            .insert(key, object.clone())
            .is_some()
        {
            "MODIFIED"
        } else {
            "ADDED"
        };
        c.log.push((rv, resource.to_owned(), kind, object));
        drop(c);
        self.changed.notify_waiters();
    }

    fn delete(&self, resource: &str, key: &str) {
        let mut c = self.cluster.lock().unwrap();
        let mut object = c
            .objects
            .get_mut(resource)
            .and_then(|m| m.remove(key))
            .unwrap();
        c.rv += 1;
        let rv = c.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        c.log.push((rv, resource.to_owned(), "DELETED", object));
        drop(c);
        self.changed.notify_waiters();
    }

    fn fail(&self, status: Option<u16>) {
        self.cluster.lock().unwrap().fail = status;
        self.changed.notify_waiters();
    }
}

/// Metadata only, as the API answers `as=PartialObjectMetadata`.
fn partial(object: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": object["metadata"],
    })
}

async fn serve(api: Api) -> String {
    let app = Router::new()
        .route("/api/v1/{resource}", get(handle_core))
        .route("/apis/{group}/{version}/{resource}", get(handle_group))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn handle_core(
    State(api): State<Api>,
    Path(resource): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    handle(api, format!("api/v1/{resource}"), &query(&uri), &headers)
}

async fn handle_group(
    State(api): State<Api>,
    Path((group, version, resource)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    handle(
        api,
        format!("apis/{group}/{version}/{resource}"),
        &query(&uri),
        &headers,
    )
}

/// The query's parameters (the values the watcher sends need no decoding).
fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn status(code: u16, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        axum::Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "code": code
        })),
    )
        .into_response()
}

fn handle(
    api: Api,
    resource: String,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let Some((_, list_kind)) = RESOURCES.iter().find(|(r, _)| *r == resource) else {
        return status(404, "no such resource");
    };
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let metadata_only = accept.contains("as=PartialObjectMetadata");
    {
        let mut c = api.cluster.lock().unwrap();
        c.accepts
            .entry(resource.clone())
            .or_default()
            .push(accept.clone());
        if headers.get("authorization").and_then(|v| v.to_str().ok())
            != Some(&format!("Bearer {TOKEN}"))
        {
            c.unauthorized += 1;
            return status(401, "Unauthorized");
        }
        if let Some(code) = c.fail {
            return status(code, "the API server is failing");
        }
    }
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let from: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let timeout: u64 = q
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(60)
            .min(60);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let stream = futures::stream::unfold(
            (api, from, resource, deadline),
            move |(api, mut last, resource, deadline)| async move {
                loop {
                    let changed = api.changed.clone();
                    let notified = changed.notified();
                    {
                        let c = api.cluster.lock().unwrap();
                        if c.fail.is_some() {
                            return None;
                        }
                        let mut lines = String::new();
                        for (_, _, kind, object) in c
                            .log
                            .iter()
                            .filter(|(rv, r, _, _)| *rv > last && *r == resource)
                        {
                            let object = if metadata_only {
                                partial(object)
                            } else {
                                object.clone()
                            };
                            lines.push_str(&json!({"type": kind, "object": object}).to_string());
                            lines.push('\n');
                        }
                        if let Some((rv, ..)) = c.log.last() {
                            last = last.max(*rv);
                        }
                        if !lines.is_empty() {
                            drop(c);
                            return Some((
                                Ok::<Bytes, std::io::Error>(Bytes::from(lines)),
                                (api, last, resource, deadline),
                            ));
                        }
                    }
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return None;
                    }
                }
            },
        );
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let c = api.cluster.lock().unwrap();
    let items: Vec<Value> = c
        .objects
        .get(&resource)
        .into_iter()
        .flat_map(BTreeMap::values)
        .map(|o| if metadata_only { partial(o) } else { o.clone() })
        .collect();
    let (api_version, kind) = if metadata_only {
        ("meta.k8s.io/v1", "PartialObjectMetadataList")
    } else if resource.starts_with("apis/apps") {
        ("apps/v1", *list_kind)
    } else if resource.starts_with("apis/batch") {
        ("batch/v1", *list_kind)
    } else {
        ("v1", *list_kind)
    };
    axum::Json(json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"resourceVersion": c.rv.to_string()},
        "items": items,
    }))
    .into_response()
}

fn pod(name: &str, rs: &str, hash: &str, ip: &str, labels: Value) -> Value {
    let mut labels = labels;
    labels["pod-template-hash"] = json!(hash);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "prod", "labels": labels,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                                 "uid": format!("uid-prod/{rs}"), "controller": true}]},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    })
}

fn replicaset(name: &str, deployment: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "prod",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
                                 "uid": format!("uid-prod/{deployment}"), "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": deployment}}}
    })
}

fn seed(api: &Api, pod_ips: [&str; 2]) {
    api.apply(
        "api/v1/nodes",
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-a", "labels": {
                "topology.kubernetes.io/region": "eu-west-1",
                "topology.kubernetes.io/zone": "eu-west-1b",
                "node.kubernetes.io/instance-type": "m5.large"}},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.50.10"},
                                     {"type": "Hostname", "address": "node-a"}]}
        }),
    );
    api.apply(
        "api/v1/services",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "payments", "namespace": "prod", "labels": {"app": "payments"}},
            "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "type": "ClusterIP",
                     "ports": [{"port": 443}]}
        }),
    );
    api.apply(
        "apis/apps/v1/replicasets",
        replicaset("payments-7d4b9c", "payments"),
    );
    api.apply(
        "apis/apps/v1/replicasets",
        replicaset("orders-5f6a", "orders"),
    );
    api.apply(
        "api/v1/pods",
        pod(
            "payments-7d4b9c-aaaaa",
            "payments-7d4b9c",
            "7d4b9c",
            pod_ips[0],
            json!({"app": "payments"}),
        ),
    );
    api.apply(
        "api/v1/pods",
        pod(
            "orders-5f6a-ccccc",
            "orders-5f6a",
            "5f6a",
            pod_ips[1],
            json!({"app": "orders"}),
        ),
    );
}

fn tempdir(label: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "flowlens-k8s-{label}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A kubeconfig for the fixture (bearer token, plain HTTP on loopback).
fn kubeconfig(dir: &std::path::Path, url: &str, token: &str) -> String {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fixture\n  cluster:\n    \
             server: {url}\ncontexts:\n- name: fixture\n  context:\n    cluster: fixture\n    \
             user: reader\ncurrent-context: fixture\nusers:\n- name: reader\n  user:\n    \
             token: {token}\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn config(kubeconfig: String) -> KubernetesConfig {
    KubernetesConfig {
        enabled: true,
        cluster: "prod-eu".into(),
        kubeconfig,
        timeout_seconds: 10,
        ..KubernetesConfig::default()
    }
}

/// Polls `inv` until `ok` holds for the entry of `ip` (or its absence), for 10 s.
async fn eventually(
    inv: &Inventory,
    ip: &str,
    what: &str,
    ok: impl Fn(Option<&inventory::Item>) -> bool,
) {
    let ip: IpAddr = ip.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entry = inv.lookup(ip);
        if ok(entry.as_ref().map(|e| &e.item)) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {entry:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_services_and_nodes_are_watched_and_a_reused_address_never_keeps_the_old_pod() {
    let api = Api::default();
    seed(&api, ["10.42.0.10", "10.42.0.12"]);
    let url = serve(api.clone()).await;
    let dir = tempdir("watch");
    let inv = Arc::new(Inventory::default());
    let provider = Provider::Kubernetes(Box::new(Kubernetes::new(config(kubeconfig(
        &dir, &url, TOKEN,
    )))));
    let loops = inventory::spawn(&inv, vec![(provider, Duration::from_hours(1))], Some(&dir));

    eventually(&inv, "10.42.0.10", "the first pod", |i| {
        i.is_some_and(|i| i.id == "prod/payments-7d4b9c-aaaaa")
    })
    .await;
    let p = inv
        .lookup("10.42.0.10".parse().unwrap())
        .unwrap()
        .item
        .clone();
    assert_eq!(
        (
            p.provider.as_str(),
            p.kind.as_str(),
            p.name.as_deref(),
            p.cluster.as_deref(),
            p.namespace.as_deref(),
            p.workload_kind.as_deref(),
            p.workload.as_deref(),
        ),
        (
            "kubernetes",
            "pod",
            Some("payments-7d4b9c-aaaaa"),
            Some("prod-eu"),
            Some("prod"),
            Some("Deployment"),
            Some("payments")
        )
    );
    assert_eq!(
        (
            p.region.as_deref(),
            p.zone.as_deref(),
            p.instance_type.as_deref()
        ),
        (Some("eu-west-1"), Some("eu-west-1b"), Some("m5.large"))
    );
    assert_eq!(p.tags, BTreeMap::from([("app".into(), "payments".into())]));
    let svc = inv
        .lookup("10.96.0.20".parse().unwrap())
        .unwrap()
        .item
        .clone();
    assert_eq!(
        (svc.kind.as_str(), svc.id.as_str()),
        ("service", "prod/payments")
    );
    let node = inv
        .lookup("192.168.50.10".parse().unwrap())
        .unwrap()
        .item
        .clone();
    assert_eq!((node.kind.as_str(), node.id.as_str()), ("node", "node-a"));
    // ReplicaSets and Jobs were asked for as metadata only; pods in full.
    {
        let c = api.cluster.lock().unwrap();
        for r in ["apis/apps/v1/replicasets", "apis/batch/v1/jobs"] {
            assert!(
                c.accepts[r]
                    .iter()
                    .all(|a| a.contains("as=PartialObjectMetadata")),
                "{r}: {:?}",
                c.accepts[r]
            );
        }
        assert!(
            c.accepts["api/v1/pods"]
                .iter()
                .all(|a| !a.contains("PartialObjectMetadata"))
        );
    }

    // A new replica appears, and a label change reaches the item, through the watch.
    api.apply(
        "api/v1/pods",
        pod(
            "payments-7d4b9c-bbbbb",
            "payments-7d4b9c",
            "7d4b9c",
            "10.42.0.11",
            json!({"app": "payments"}),
        ),
    );
    eventually(&inv, "10.42.0.11", "the new replica", |i| {
        i.is_some_and(|i| i.workload.as_deref() == Some("payments"))
    })
    .await;
    api.apply(
        "api/v1/pods",
        pod(
            "payments-7d4b9c-bbbbb",
            "payments-7d4b9c",
            "7d4b9c",
            "10.42.0.11",
            json!({"app": "payments", "track": "canary"}),
        ),
    );
    eventually(&inv, "10.42.0.11", "the relabelled replica", |i| {
        i.is_some_and(|i| i.tags.get("track").map(String::as_str) == Some("canary"))
    })
    .await;

    // The first pod is deleted: its address leaves the map; an orders pod then gets
    // the same address: the address is the orders pod, never the deleted one.
    api.delete("api/v1/pods", "prod/payments-7d4b9c-aaaaa");
    eventually(&inv, "10.42.0.10", "the deleted pod gone", |i| i.is_none()).await;
    api.apply(
        "api/v1/pods",
        pod(
            "orders-5f6a-ddddd",
            "orders-5f6a",
            "5f6a",
            "10.42.0.10",
            json!({"app": "orders"}),
        ),
    );
    eventually(&inv, "10.42.0.10", "the reused address", |i| {
        i.is_some_and(|i| {
            i.id == "prod/orders-5f6a-ddddd" && i.workload.as_deref() == Some("orders")
        })
    })
    .await;

    // The API server fails: open watches end and every request gets a 500. The
    // refresh fails and the last snapshot stays.
    api.fail(Some(500));
    let quick = |token: &str| KubernetesConfig {
        timeout_seconds: 2,
        ..config(kubeconfig(&dir, &url, token))
    };
    let failing = Provider::Kubernetes(Box::new(Kubernetes::new(quick(TOKEN))));
    let mut streak = inventory::Streak::default();
    assert!(!inventory::refresh_once(&inv, &failing, Some(&dir), &mut streak).await);
    assert!(streak.failing);
    assert_eq!(
        inv.lookup("10.42.0.10".parse().unwrap()).unwrap().item.id,
        "prod/orders-5f6a-ddddd"
    );
    api.fail(None);
    // A token the API refuses: the refresh fails, and says so.
    let refused = Provider::Kubernetes(Box::new(Kubernetes::new(quick("stolen"))));
    assert!(!inventory::refresh_once(&inv, &refused, None, &mut streak).await);
    assert!(api.cluster.lock().unwrap().unauthorized > 0);
    assert!(inventory::snapshot_path(&dir, "kubernetes").is_file());
    for l in loops {
        l.abort();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// An asset's name, provider, cluster, namespace, workload kind and workload.
type Row = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The enterprise topology's app server and database run as pods: their assets get
/// the cluster, namespace and workload, and the pod's name.
#[test]
fn assets_take_their_cluster_namespace_and_workload() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = Api::default();
    seed(&api, ["10.3.0.10", "10.4.0.10"]);
    let url = rt.block_on(serve(api.clone()));
    let dir = tempdir("graph");
    let db = rt.block_on(scratch("inventory_k8s"));
    let mut s = flowlens_daemon::testing::postgres::graph_settings(db.url.clone());
    s.enrichment.cloud.kubernetes = config(kubeconfig(&dir, &url, TOKEN));
    s.state_dir = Some(dir.clone());
    let mut sink = GraphSink::open(&s, GraphHealth::default()).unwrap();
    let topology = Topology::enterprise();
    let exporter: IpAddr = "192.0.2.1".parse().unwrap();
    let now = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    for round in 0..4 {
        sink.write(&topology.round(round, now - 1000, exporter, true));
    }
    let identity = |ip: &str| -> Option<Row> {
        rt.block_on(
            sqlx::query_as(
                "SELECT a.name, a.cloud_provider, a.cluster, a.namespace, a.workload_kind,
                        a.workload
                 FROM assets a JOIN asset_addresses aa ON aa.asset_id = a.id
                 WHERE aa.ip = $1::inet",
            )
            .bind(ip)
            .fetch_optional(&db.pool),
        )
        .unwrap()
    };
    let mut described = None;
    for _ in 0..300 {
        assert!(sink.flush_now());
        described = identity("10.4.0.10").filter(|r| r.1.is_some());
        if described.is_some() {
            break;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
    assert_eq!(
        described.expect("the database pod's identity"),
        (
            "orders-5f6a-ccccc".to_owned(),
            Some("kubernetes".to_owned()),
            Some("prod-eu".to_owned()),
            Some("prod".to_owned()),
            Some("Deployment".to_owned()),
            Some("orders".to_owned()),
        )
    );
    assert_eq!(
        identity("10.3.0.10").unwrap().5.as_deref(),
        Some("payments")
    );

    // The database pod is deleted: its asset no longer claims to be it (the name goes
    // back to the address), and the change is recorded.
    api.delete("api/v1/pods", "prod/orders-5f6a-ccccc");
    let mut cleared = None;
    for _ in 0..300 {
        std::thread::park_timeout(Duration::from_millis(100));
        assert!(sink.flush_now());
        cleared = identity("10.4.0.10").filter(|r| r.1.is_none());
        if cleared.is_some() {
            break;
        }
    }
    assert_eq!(
        cleared.expect("the deleted pod's identity cleared"),
        ("10.4.0.10".to_owned(), None, None, None, None, None)
    );
    let (before, after): (Value, Value) = rt
        .block_on(
            sqlx::query_as(
                "SELECT before_state, after_state FROM change_events
                 WHERE change_type = 'asset_changed' AND after_state ? 'cluster'
                   AND after_state -> 'cluster' = 'null'::jsonb",
            )
            .fetch_one(&db.pool),
        )
        .unwrap();
    assert_eq!(before["workload"], "orders");
    assert_eq!(after["name"], "10.4.0.10");
    // Another pod gets the address: the asset is that pod.
    api.apply(
        "api/v1/pods",
        pod(
            "payments-7d4b9c-eeeee",
            "payments-7d4b9c",
            "7d4b9c",
            "10.4.0.10",
            json!({"app": "payments"}),
        ),
    );
    let mut reused = None;
    for _ in 0..300 {
        std::thread::park_timeout(Duration::from_millis(100));
        assert!(sink.flush_now());
        reused = identity("10.4.0.10").filter(|r| r.1.is_some());
        if reused.is_some() {
            break;
        }
    }
    let reused = reused.expect("the new pod's identity");
    assert_eq!(
        (reused.0.as_str(), reused.5.as_deref()),
        ("payments-7d4b9c-eeeee", Some("payments"))
    );
    drop(sink);
    let _ = std::fs::remove_dir_all(dir);
}

/// `group_pods_by_workload`: the enterprise topology's two web servers are two pods
/// of one Deployment: one asset holds both addresses, so the web tier is one node
/// with one dependency on the app server. When one pod ends and another workload's
/// pod gets its address, the address leaves the web asset and, seen again in flows,
/// becomes the other workload's.
#[test]
fn grouped_pods_make_one_asset_per_workload() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = Api::default();
    seed(&api, ["10.3.0.10", "10.4.0.10"]);
    api.apply("apis/apps/v1/replicasets", replicaset("web-6c8f", "web"));
    for (pod_name, ip) in [
        ("web-6c8f-aaaaa", "10.2.0.10"),
        ("web-6c8f-bbbbb", "10.2.0.11"),
    ] {
        api.apply(
            "api/v1/pods",
            pod(pod_name, "web-6c8f", "6c8f", ip, json!({"app": "web"})),
        );
    }
    let url = rt.block_on(serve(api.clone()));
    let dir = tempdir("grouped");
    let db = rt.block_on(scratch("inventory_k8s_grouped"));
    let mut s = flowlens_daemon::testing::postgres::graph_settings(db.url.clone());
    s.enrichment.cloud.kubernetes = KubernetesConfig {
        group_pods_by_workload: true,
        ..config(kubeconfig(&dir, &url, TOKEN))
    };
    let mut sink = GraphSink::open(&s, GraphHealth::default()).unwrap();
    // The first publication before the first flows: the watches are open.
    let deadline = Instant::now() + Duration::from_secs(10);
    while api
        .cluster
        .lock()
        .unwrap()
        .accepts
        .values()
        .map(Vec::len)
        .sum::<usize>()
        < 10
    {
        assert!(Instant::now() < deadline, "the watches never started");
        std::thread::park_timeout(Duration::from_millis(20));
    }
    std::thread::park_timeout(Duration::from_millis(500));
    let topology = Topology::enterprise();
    let exporter: IpAddr = "192.0.2.1".parse().unwrap();
    let now = || {
        u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
    };
    for round in 0..4 {
        sink.write(&topology.round(round, now() - 1000, exporter, true));
    }
    let asset_of = |ip: &str| -> Option<(uuid::Uuid, String, Option<String>)> {
        rt.block_on(
            sqlx::query_as(
                "SELECT a.id, a.name, a.cloud_instance_id FROM assets a
                 JOIN asset_addresses aa ON aa.asset_id = a.id WHERE aa.ip = $1::inet",
            )
            .bind(ip)
            .fetch_optional(&db.pool),
        )
        .unwrap()
    };
    let mut web = None;
    for _ in 0..300 {
        assert!(sink.flush_now());
        web = asset_of("10.2.0.10").filter(|w| w.2.is_some());
        if web.is_some() {
            break;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
    let web = web.expect("the web workload's asset");
    assert_eq!(
        (web.1.as_str(), web.2.as_deref()),
        ("web", Some("prod/Deployment/web"))
    );
    assert_eq!(
        asset_of("10.2.0.11").unwrap().0,
        web.0,
        "one asset, two pods"
    );
    let to_app: i64 = rt
        .block_on(
            sqlx::query_scalar(
                "SELECT count(*) FROM dependencies d JOIN asset_addresses aa
                   ON aa.asset_id = d.target_asset_id AND aa.ip = '10.3.0.10'
                 WHERE d.source_asset_id = $1 AND d.port = 8080",
            )
            .bind(web.0)
            .fetch_one(&db.pool),
        )
        .unwrap();
    assert_eq!(to_app, 1, "the web tier's one dependency on the app server");

    // One web pod ends; an orders pod gets its address.
    api.delete("api/v1/pods", "prod/web-6c8f-bbbbb");
    api.apply(
        "api/v1/pods",
        pod(
            "orders-5f6a-zzzzz",
            "orders-5f6a",
            "5f6a",
            "10.2.0.11",
            json!({"app": "orders"}),
        ),
    );
    let mut moved = None;
    for round in 4..300 {
        std::thread::park_timeout(Duration::from_millis(100));
        sink.write(&topology.round(round, now() - 1000, exporter, true));
        assert!(sink.flush_now());
        moved = asset_of("10.2.0.11").filter(|a| a.0 != web.0 && a.2.is_some());
        if moved.is_some() {
            break;
        }
    }
    let moved = moved.expect("the address left the web asset for the orders workload");
    assert_eq!(moved.2.as_deref(), Some("prod/Deployment/orders"));
    assert_eq!(asset_of("10.2.0.10").unwrap().0, web.0);
    drop(sink);
    let _ = std::fs::remove_dir_all(dir);
}

/// A watch that fails and recovers on a quiet resource (no Jobs here: nothing is
/// delivered after the watch resumes to say it is well): while it fails, refreshes
/// fail and keep the last snapshot; once its last error is older than the window
/// (75 s in production, 2 s here), refreshes succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_recovers_on_a_quiet_resource_stops_failing_refreshes() {
    let api = Api::default();
    seed(&api, ["10.42.0.10", "10.42.0.12"]);
    let url = serve(api.clone()).await;
    let dir = tempdir("recover");
    let inv = Arc::new(Inventory::default());
    let provider = Provider::Kubernetes(Box::new(
        Kubernetes::new(config(kubeconfig(&dir, &url, TOKEN)))
            .with_failing_window(Duration::from_secs(2)),
    ));
    let mut streak = inventory::Streak::default();
    assert!(inventory::refresh_once(&inv, &provider, None, &mut streak).await);
    // The API server fails: the open watches end, and every watch's restart is
    // refused until it answers again.
    api.fail(Some(500));
    let deadline = Instant::now() + Duration::from_secs(10);
    while inventory::refresh_once(&inv, &provider, None, &mut streak).await {
        assert!(
            Instant::now() < deadline,
            "the failing watches were never noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(streak.failing);
    assert!(inv.lookup("10.42.0.10".parse().unwrap()).is_some(), "kept");
    // It answers again; nothing changes in the cluster, so no event says so.
    api.fail(None);
    let deadline = Instant::now() + Duration::from_secs(40);
    while !inventory::refresh_once(&inv, &provider, None, &mut streak).await {
        assert!(
            Instant::now() < deadline,
            "refreshes kept failing after the watches recovered"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!streak.failing);
    let _ = std::fs::remove_dir_all(dir);
}
