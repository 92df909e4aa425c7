//! Kubernetes: pods, services and nodes kept current by `kube`'s reflectors (a list,
//! then a watch, resumed or relisted by the runtime), with `ReplicaSets` and `Jobs`
//! watched as metadata only to resolve a pod's owner: pod -> `ReplicaSet` ->
//! `Deployment`, pod -> `Job` -> `CronJob`, or the `StatefulSet` or `DaemonSet`
//! directly.
//!
//! The stores change continuously; the refresh loop publishes a snapshot of them
//! shortly after each change (see [`Kubernetes::changes`]) and on the usual timer. A
//! pod that ended leaves the stores, so its address, when the next pod gets it,
//! carries the new pod's identity and never the old one's.
//!
//! The mapping ([`items`]) is pure, over the API's objects.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};

use super::{Item, ProviderError};
use crate::inventory::config::KubernetesConfig;

/// Labels that change with every rollout: kept out of the tags, or every pod's
/// description would change with each new `ReplicaSet`.
const CHURNING_LABELS: [&str; 3] = [
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
];

/// How long a watch's last error counts: longer than the runtime's longest backoff
/// (30 s), so a watch still failing has always erred more recently.
const FAILING_FOR: Duration = Duration::from_secs(75);

/// An error from the client or a watch, fit for a log line: control characters
/// removed, cut short (an exec plugin's output, which can hold credentials, is not
/// repeated whole).
fn sanitize(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    if text.contains("exec") || text.contains("Exec") {
        return "the kubeconfig's exec credential plugin failed".to_owned();
    }
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// What the stores keep of each object: the fields the mapping reads. Everything
/// else (managed fields, annotations, container specs and statuses, a node's image
/// list) would multiply the memory a large cluster takes.
trait Trim {
    fn trim(&mut self);
}

fn trim_meta(m: &mut ObjectMeta) {
    m.managed_fields = None;
    m.annotations = None;
    m.finalizers = None;
}

impl Trim for Pod {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        if let Some(spec) = &mut self.spec {
            *spec = k8s_openapi::api::core::v1::PodSpec {
                node_name: spec.node_name.take(),
                host_network: spec.host_network,
                ..Default::default()
            };
        }
        if let Some(status) = &mut self.status {
            *status = k8s_openapi::api::core::v1::PodStatus {
                phase: status.phase.take(),
                pod_ip: status.pod_ip.take(),
                pod_ips: status.pod_ips.take(),
                ..Default::default()
            };
        }
    }
}

impl Trim for Service {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        if let Some(spec) = &mut self.spec {
            *spec = k8s_openapi::api::core::v1::ServiceSpec {
                cluster_ip: spec.cluster_ip.take(),
                cluster_ips: spec.cluster_ips.take(),
                external_ips: spec.external_ips.take(),
                ..Default::default()
            };
        }
    }
}

impl Trim for Node {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.spec = None;
        if let Some(status) = &mut self.status {
            *status = k8s_openapi::api::core::v1::NodeStatus {
                addresses: status.addresses.take(),
                ..Default::default()
            };
        }
    }
}

impl<K> Trim for PartialObjectMeta<K> {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.metadata.labels = None;
    }
}

/// The stores, once the reflectors run.
struct Stores {
    pods: Store<Pod>,
    services: Store<Service>,
    nodes: Store<Node>,
    replicasets: Store<PartialObjectMeta<ReplicaSet>>,
    jobs: Store<PartialObjectMeta<Job>>,
}

/// The Kubernetes provider.
pub struct Kubernetes {
    config: KubernetesConfig,
    stores: tokio::sync::OnceCell<Stores>,
    /// Each watch's last error and when it happened: cleared when the watch delivers
    /// again, and no longer counted once older than [`FAILING_FOR`] (a watch that
    /// recovers on a quiet resource delivers nothing to clear it with).
    errors: Arc<Mutex<BTreeMap<&'static str, (std::time::Instant, String)>>>,
    changed: Arc<tokio::sync::Notify>,
    /// How long an error counts ([`FAILING_FOR`]; shorter in tests).
    failing_for: Duration,
}

impl Kubernetes {
    /// A provider for `config`; the client and the watches start with the first
    /// snapshot (on the runtime that takes it).
    #[must_use]
    pub fn new(config: KubernetesConfig) -> Self {
        Self {
            config,
            stores: tokio::sync::OnceCell::new(),
            errors: Arc::default(),
            changed: Arc::default(),
            failing_for: FAILING_FOR,
        }
    }

    /// How long a watch's last error counts (tests do not wait 75 s).
    #[doc(hidden)]
    #[must_use]
    pub fn with_failing_window(mut self, window: Duration) -> Self {
        self.failing_for = window;
        self
    }

    /// What this provider watches, for the shared cache's key (Kubernetes is not
    /// shared: each daemon watches).
    #[must_use]
    pub fn scope(&self) -> String {
        self.config.cluster.clone()
    }

    /// Signalled when a store changed: the refresh loop publishes soon after.
    #[must_use]
    pub fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    async fn client(&self) -> Result<Client, ProviderError> {
        let c = &self.config;
        let credentials = |e: &dyn std::fmt::Display| ProviderError::Credentials(sanitize(e));
        let options = kube::config::KubeConfigOptions {
            context: Some(c.context.clone()).filter(|s| !s.is_empty()),
            ..kube::config::KubeConfigOptions::default()
        };
        let config = if !c.kubeconfig.is_empty() {
            let file = kube::config::Kubeconfig::read_from(&c.kubeconfig)
                .map_err(|e| credentials(&format!("{}: {e}", c.kubeconfig)))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| credentials(&e))?
        } else if options.context.is_some() {
            kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| credentials(&e))?
        } else {
            // In the cluster (the service account's token), else KUBECONFIG or
            // ~/.kube/config: what kubectl and the client libraries do.
            kube::Config::infer().await.map_err(|e| credentials(&e))?
        };
        Client::try_from(config).map_err(|e| credentials(&e))
    }

    async fn start(&self) -> Result<Stores, ProviderError> {
        let client = self.client().await?;
        let config = watcher::Config::default();
        Ok(Stores {
            pods: self.reflect("pods", Api::all(client.clone()), config.clone()),
            services: self.reflect("services", Api::all(client.clone()), config.clone()),
            nodes: self.reflect("nodes", Api::all(client.clone()), config.clone()),
            // Metadata only: owners are all that is needed of them.
            replicasets: self.reflect(
                "replicasets",
                Api::<PartialObjectMeta<ReplicaSet>>::all(client.clone()),
                config.clone(),
            ),
            jobs: self.reflect("jobs", Api::<PartialObjectMeta<Job>>::all(client), config),
        })
    }

    fn reflect<K>(&self, what: &'static str, api: Api<K>, config: watcher::Config) -> Store<K>
    where
        K: kube::Resource
            + Trim
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let (reader, writer) = reflector::store();
        let stream =
            reflector::reflector(writer, watcher(api, config).modify(Trim::trim)).default_backoff();
        self.drive(what, stream);
        reader
    }

    /// Polls a reflector's stream for ever: each event updates its store (the
    /// reflector does that) and signals a change; each error is kept for the next
    /// snapshot to report (the runtime backs off and resumes or relists).
    fn drive<S, K>(&self, what: &'static str, stream: S)
    where
        S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let errors = self.errors.clone();
        let changed = self.changed.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => {
                        errors
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .remove(what);
                        if matches!(
                            event,
                            watcher::Event::Apply(_)
                                | watcher::Event::Delete(_)
                                | watcher::Event::InitDone
                        ) {
                            changed.notify_one();
                        }
                    }
                    Err(e) => {
                        errors
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(what, (std::time::Instant::now(), sanitize(&e)));
                    }
                }
            }
        });
    }

    /// The stores' current state as items. The first call starts the watches and
    /// waits (up to `timeout_seconds`) for their first lists.
    ///
    /// # Errors
    /// The client cannot be configured, the first lists did not arrive, or a watch is
    /// failing (the stores may be stale: the last snapshot is kept instead).
    pub async fn snapshot(&self) -> Result<Vec<(IpAddr, Item)>, ProviderError> {
        let wait = Duration::from_secs(self.config.timeout_seconds);
        // Starting runs the kubeconfig's credential plugin, if any: bounded too.
        let stores = tokio::time::timeout(wait, self.stores.get_or_try_init(|| self.start()))
            .await
            .map_err(|_| {
                ProviderError::Credentials(format!(
                    "the Kubernetes client did not start within {wait:?}"
                ))
            })??;
        let ready = async {
            stores.pods.wait_until_ready().await?;
            stores.services.wait_until_ready().await?;
            stores.nodes.wait_until_ready().await?;
            stores.replicasets.wait_until_ready().await?;
            stores.jobs.wait_until_ready().await
        };
        let failing = || {
            self.errors
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .filter(|(_, (at, _))| at.elapsed() < self.failing_for)
                .map(|(k, (_, v))| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        match tokio::time::timeout(wait, ready).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(ProviderError::Transport {
                    what: "the Kubernetes API".into(),
                    message: e.to_string(),
                });
            }
            Err(_) => {
                return Err(ProviderError::Transport {
                    what: "the Kubernetes API".into(),
                    message: format!("the first lists did not complete: {}", failing()),
                });
            }
        }
        let failing = failing();
        if !failing.is_empty() {
            return Err(ProviderError::Transport {
                what: "the Kubernetes API's watches".into(),
                message: failing,
            });
        }
        Ok(items(
            &self.config.cluster,
            &Objects {
                pods: &stores.pods.state(),
                services: &stores.services.state(),
                nodes: &stores.nodes.state(),
                replicasets: &stores.replicasets.state(),
                jobs: &stores.jobs.state(),
            },
            self.config.group_pods_by_workload,
        ))
    }
}

/// What the stores hold at one time.
pub struct Objects<'a> {
    pub pods: &'a [Arc<Pod>],
    pub services: &'a [Arc<Service>],
    pub nodes: &'a [Arc<Node>],
    pub replicasets: &'a [Arc<PartialObjectMeta<ReplicaSet>>],
    pub jobs: &'a [Arc<PartialObjectMeta<Job>>],
}

/// The controller among an object's owners, as (kind, name). Kinds of the built-in
/// API groups keep their name; a custom resource's kind is qualified by its group
/// (`Job.batch.volcano.sh`), so it is not taken for the built-in one.
fn controller(meta: &ObjectMeta) -> Option<(String, &str)> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| {
            let group = o.api_version.rsplit_once('/').map_or("", |(g, _)| g);
            let kind = if matches!(group, "" | "apps" | "batch") {
                o.kind.clone()
            } else {
                format!("{}.{group}", o.kind)
            };
            (kind, o.name.as_str())
        })
}

fn name_and_namespace(meta: &ObjectMeta) -> Option<(&str, &str)> {
    Some((
        meta.name.as_deref()?,
        meta.namespace.as_deref().unwrap_or(""),
    ))
}

/// Objects' metadata by (namespace, name).
pub type ByName<'a> = HashMap<(&'a str, &'a str), &'a ObjectMeta>;

/// The workload a pod belongs to: (kind, name), following `ReplicaSets` to their
/// `Deployment` and `Jobs` to their `CronJob`. A `ReplicaSet` not (yet) in the store is
/// resolved from the pod's `pod-template-hash` label, which its name ends with.
#[must_use]
pub fn workload(
    pod: &ObjectMeta,
    replicasets: &ByName<'_>,
    jobs: &ByName<'_>,
) -> Option<(String, String)> {
    let namespace = pod.namespace.as_deref().unwrap_or("");
    let (kind, name) = controller(pod)?;
    match kind.as_str() {
        // A static pod's mirror: the kubelet's, not a workload's.
        "Node" => None,
        "ReplicaSet" => {
            if let Some(rs) = replicasets.get(&(namespace, name)) {
                return Some(controller(rs).map_or_else(
                    || ("ReplicaSet".to_owned(), name.to_owned()),
                    |(k, n)| (k, n.to_owned()),
                ));
            }
            let hash = pod.labels.as_ref().and_then(|l| l.get("pod-template-hash"));
            Some(
                hash.and_then(|h| name.strip_suffix(h.as_str())?.strip_suffix('-'))
                    .map_or_else(
                        || ("ReplicaSet".to_owned(), name.to_owned()),
                        |deployment| ("Deployment".to_owned(), deployment.to_owned()),
                    ),
            )
        }
        "Job" => Some(
            jobs.get(&(namespace, name))
                .and_then(|j| controller(j))
                .map_or_else(
                    || ("Job".to_owned(), name.to_owned()),
                    |(k, n)| (k, n.to_owned()),
                ),
        ),
        _ => Some((kind, name.to_owned())),
    }
}

/// Labels as tags, without the ones that change at every rollout.
fn tags(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels
        .iter()
        .flatten()
        .filter(|(k, _)| !CHURNING_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Where a node runs, from its well-known labels: (region, zone, instance type).
fn placement(node: &Node) -> (Option<String>, Option<String>, Option<String>) {
    let label = |k: &str| {
        node.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(k))
            .cloned()
    };
    (
        label("topology.kubernetes.io/region"),
        label("topology.kubernetes.io/zone"),
        label("node.kubernetes.io/instance-type"),
    )
}

/// The items of the stores' objects:
/// - each running pod's addresses (`podIPs`, not host-network pods, whose address is
///   the node's), as the pod, with its workload; or, with `group`, as the workload
///   itself (one item for all its replicas);
/// - each service's cluster IPs, external IPs and load balancer addresses, as the
///   service;
/// - each node's internal and external addresses, as the node.
///
/// Pods and nodes carry the node's region, zone and instance type.
#[must_use]
pub fn items(cluster: &str, objects: &Objects<'_>, group: bool) -> Vec<(IpAddr, Item)> {
    let cluster = Some(cluster.to_owned()).filter(|c| !c.is_empty());
    let replicasets: HashMap<(&str, &str), &ObjectMeta> = objects
        .replicasets
        .iter()
        .filter_map(|r| {
            Some((
                name_and_namespace(&r.metadata).map(|(n, ns)| (ns, n))?,
                &r.metadata,
            ))
        })
        .collect();
    let jobs: HashMap<(&str, &str), &ObjectMeta> = objects
        .jobs
        .iter()
        .filter_map(|j| {
            Some((
                name_and_namespace(&j.metadata).map(|(n, ns)| (ns, n))?,
                &j.metadata,
            ))
        })
        .collect();
    let nodes: HashMap<&str, &Node> = objects
        .nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n.as_ref())))
        .collect();
    let base = |kind: &str, id: String, name: &str| Item {
        provider: "kubernetes".into(),
        kind: kind.into(),
        id,
        name: Some(name.to_owned()),
        cluster: cluster.clone(),
        ..Item::default()
    };
    // Candidates with their rank (lowest wins an address): a running pod, then a
    // terminating one (its address may already be the next pod's), then a node, then
    // a service's external or load-balancer address (which may be a node's); among
    // pods, the newest.
    let mut out: Vec<(IpAddr, (u8, std::cmp::Reverse<i64>), Item)> = Vec::new();
    for pod in objects.pods {
        let Some((name, namespace)) = name_and_namespace(&pod.metadata) else {
            continue;
        };
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        if spec.and_then(|s| s.host_network) == Some(true)
            || matches!(
                status.and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        {
            continue;
        }
        let mut addresses: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| p.ip.parse().ok())
            .collect();
        if let Some(ip) = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
            && !addresses.contains(&ip)
        {
            addresses.push(ip);
        }
        if addresses.is_empty() {
            continue;
        }
        let owner = workload(&pod.metadata, &replicasets, &jobs);
        let (region, zone, instance_type) = spec
            .and_then(|s| s.node_name.as_deref())
            .and_then(|n| nodes.get(n))
            .map(|n| placement(n))
            .unwrap_or_default();
        let mut item = match (&owner, group) {
            (Some((kind, workload)), true) => base(
                "workload",
                format!("{namespace}/{kind}/{workload}"),
                workload,
            ),
            _ => base("pod", format!("{namespace}/{name}"), name),
        };
        item.namespace = Some(namespace.to_owned());
        item.workload_kind = owner.as_ref().map(|(k, _)| k.clone());
        item.workload = owner.map(|(_, w)| w);
        item.region = region;
        item.zone = zone;
        item.instance_type = instance_type;
        item.tags = tags(&pod.metadata);
        let class = u8::from(pod.metadata.deletion_timestamp.is_some());
        let created = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_millisecond());
        let rank = (class, std::cmp::Reverse(created));
        out.extend(addresses.into_iter().map(|ip| (ip, rank, item.clone())));
    }
    for service in objects.services {
        let Some((name, namespace)) = name_and_namespace(&service.metadata) else {
            continue;
        };
        let spec = service.spec.as_ref();
        let mut addresses: Vec<&str> = Vec::new();
        if let Some(s) = spec {
            addresses.extend(s.cluster_ip.as_deref());
            addresses.extend(s.cluster_ips.iter().flatten().map(String::as_str));
            addresses.extend(s.external_ips.iter().flatten().map(String::as_str));
        }
        addresses.extend(
            service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()),
        );
        let mut ips: Vec<IpAddr> = addresses.iter().filter_map(|a| a.parse().ok()).collect();
        ips.sort();
        ips.dedup();
        let mut item = base("service", format!("{namespace}/{name}"), name);
        item.namespace = Some(namespace.to_owned());
        item.tags = tags(&service.metadata);
        out.extend(
            ips.into_iter()
                .map(|ip| (ip, (3, std::cmp::Reverse(0)), item.clone())),
        );
    }
    for node in objects.nodes {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        let mut ips: Vec<IpAddr> = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| matches!(a.type_.as_str(), "InternalIP" | "ExternalIP"))
            .filter_map(|a| a.address.parse().ok())
            .collect();
        ips.sort();
        ips.dedup();
        let (region, zone, instance_type) = placement(node);
        let mut item = base("node", name.to_owned(), name);
        item.region = region;
        item.zone = zone;
        item.instance_type = instance_type;
        item.tags = tags(&node.metadata);
        out.extend(
            ips.into_iter()
                .map(|ip| (ip, (2, std::cmp::Reverse(0)), item.clone())),
        );
    }
    let mut best: HashMap<IpAddr, ((u8, std::cmp::Reverse<i64>), Item)> = HashMap::new();
    for (ip, rank, item) in out {
        match best.get(&ip) {
            Some((r, _)) if *r <= rank => {}
            _ => {
                best.insert(ip, (rank, item));
            }
        }
    }
    best.into_iter().map(|(ip, (_, item))| (ip, item)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(
        name: &str,
        owner: Option<(&str, &str)>,
        ip: &str,
        labels: &serde_json::Value,
    ) -> Arc<Pod> {
        let owners = owner.map(|(kind, name)| {
            json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "u", "controller": true}])
        });
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "prod", "labels": labels, "ownerReferences": owners},
                "spec": {"nodeName": "node-a", "containers": []},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
            }))
            .unwrap(),
        )
    }

    fn meta<K>(name: &str, owner: Option<(&str, &str)>) -> Arc<PartialObjectMeta<K>> {
        let owners = owner.map(|(kind, name)| {
            json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "u", "controller": true}])
        });
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": {"name": name, "namespace": "prod", "ownerReferences": owners}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn pods_resolve_to_their_workloads_services_and_nodes_to_themselves() {
        let pods = [
            pod(
                "payments-7d4b9c-x2x",
                Some(("ReplicaSet", "payments-7d4b9c")),
                "10.42.0.10",
                &json!({"app": "payments", "pod-template-hash": "7d4b9c"}),
            ),
            // Its ReplicaSet not listed yet: the hash names the Deployment.
            pod(
                "checkout-5f6a-abc",
                Some(("ReplicaSet", "checkout-5f6a")),
                "10.42.0.11",
                &json!({"pod-template-hash": "5f6a"}),
            ),
            pod(
                "db-0",
                Some(("StatefulSet", "db")),
                "10.42.0.12",
                &json!({}),
            ),
            pod(
                "report-28-xyz",
                Some(("Job", "report-28")),
                "10.42.0.13",
                &json!({}),
            ),
            pod("debug", None, "10.42.0.14", &json!({})),
        ];
        let host: Arc<Pod> = Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "kube-proxy-1", "namespace": "kube-system"},
                "spec": {"hostNetwork": true, "containers": []},
                "status": {"phase": "Running", "podIP": "192.168.1.10"}
            }))
            .unwrap(),
        );
        let done: Arc<Pod> = Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "old", "namespace": "prod"},
                "spec": {"containers": []},
                "status": {"phase": "Succeeded", "podIP": "10.42.0.99"}
            }))
            .unwrap(),
        );
        // Terminating, its address already given to a newer pod: the newer pod wins.
        let leaving: Arc<Pod> = Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "db-old", "namespace": "prod",
                             "creationTimestamp": "2026-01-01T00:00:00Z",
                             "deletionTimestamp": "2026-12-01T00:00:00Z",
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                  "name": "node-a", "uid": "n", "controller": true}]},
                "spec": {"containers": []},
                "status": {"phase": "Running", "podIP": "10.42.0.12"}
            }))
            .unwrap(),
        );
        // A custom resource's Job is not batch's.
        let volcano: Arc<Pod> = Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "train-0", "namespace": "ml",
                             "ownerReferences": [{"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job",
                                                  "name": "train", "uid": "v", "controller": true}]},
                "spec": {"containers": []},
                "status": {"phase": "Running", "podIP": "10.42.0.15"}
            }))
            .unwrap(),
        );
        let all_pods: Vec<Arc<Pod>> = pods
            .iter()
            .cloned()
            .chain([host, done, leaving, volcano])
            .collect();
        let services: Vec<Arc<Service>> = vec![Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "payments", "namespace": "prod"},
                "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00::20"],
                         "type": "LoadBalancer"},
                "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}
            }))
            .unwrap(),
        )];
        let nodes: Vec<Arc<Node>> = vec![Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "node-a", "labels": {
                    "topology.kubernetes.io/region": "eu-west-1",
                    "topology.kubernetes.io/zone": "eu-west-1b",
                    "node.kubernetes.io/instance-type": "m5.large"}},
                "status": {"addresses": [
                    {"type": "InternalIP", "address": "192.168.1.10"},
                    {"type": "Hostname", "address": "node-a"}]}
            }))
            .unwrap(),
        )];
        let replicasets = [meta("payments-7d4b9c", Some(("Deployment", "payments")))];
        let jobs = [meta("report-28", Some(("CronJob", "report")))];
        let objects = Objects {
            pods: &all_pods,
            services: &services,
            nodes: &nodes,
            replicasets: &replicasets,
            jobs: &jobs,
        };
        let by_ip = |group: bool| -> HashMap<IpAddr, Item> {
            items("prod-eu", &objects, group).into_iter().collect()
        };
        let m = by_ip(false);
        let at = |s: &str| &m[&s.parse::<IpAddr>().unwrap()];
        let p = at("10.42.0.10");
        assert_eq!(
            (p.kind.as_str(), p.id.as_str(), p.name.as_deref()),
            (
                "pod",
                "prod/payments-7d4b9c-x2x",
                Some("payments-7d4b9c-x2x")
            )
        );
        assert_eq!(
            (p.workload_kind.as_deref(), p.workload.as_deref()),
            (Some("Deployment"), Some("payments"))
        );
        assert_eq!(
            (
                p.cluster.as_deref(),
                p.namespace.as_deref(),
                p.zone.as_deref()
            ),
            (Some("prod-eu"), Some("prod"), Some("eu-west-1b"))
        );
        assert_eq!(p.instance_type.as_deref(), Some("m5.large"));
        assert_eq!(p.tags, BTreeMap::from([("app".into(), "payments".into())]));
        let w = |ip: &str| {
            let i = at(ip);
            (
                i.workload_kind.clone().unwrap_or_default(),
                i.workload.clone().unwrap_or_default(),
            )
        };
        assert_eq!(w("10.42.0.11"), ("Deployment".into(), "checkout".into()));
        assert_eq!(w("10.42.0.12"), ("StatefulSet".into(), "db".into()));
        assert_eq!(w("10.42.0.13"), ("CronJob".into(), "report".into()));
        assert_eq!(w("10.42.0.14"), (String::new(), String::new()));
        assert_eq!(at("10.42.0.12").id, "prod/db-0");
        assert_eq!(
            w("10.42.0.15"),
            ("Job.batch.volcano.sh".into(), "train".into())
        );
        // The host-network pod's address is the node's; an ended pod has none.
        assert_eq!(at("192.168.1.10").kind, "node");
        assert!(!m.contains_key(&"10.42.0.99".parse::<IpAddr>().unwrap()));
        for ip in ["10.96.0.20", "fd00::20", "203.0.113.9"] {
            assert_eq!(
                (at(ip).kind.as_str(), at(ip).id.as_str()),
                ("service", "prod/payments")
            );
        }
        assert_eq!(m.len(), 6 + 3 + 1);
        // Grouped: the pod is its workload.
        let g = by_ip(true);
        let p = &g[&"10.42.0.10".parse::<IpAddr>().unwrap()];
        assert_eq!(
            (p.kind.as_str(), p.id.as_str(), p.name.as_deref()),
            ("workload", "prod/Deployment/payments", Some("payments"))
        );
        let debug = &g[&"10.42.0.14".parse::<IpAddr>().unwrap()];
        assert_eq!(debug.kind, "pod", "a pod of no workload stays a pod");
    }
}
