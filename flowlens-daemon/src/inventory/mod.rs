//! Inventory: who an address is, from the clouds' and clusters' own APIs (DESIGN.md
//! §3.2, issue 16). An address in a dependency graph means little to a platform team;
//! "payments-api in eu-west-1, project 1234, network prod-vpc" does.
//!
//! Each provider takes a whole snapshot on a timer (jittered, so several daemons do
//! not call an API in step), and the merged address map is swapped atomically: the
//! flow path and the graph writer read a map that is never half-updated, and never
//! wait for a provider. The last good snapshot of each provider is saved in the state
//! directory and loaded at start, so a restart is warm; a provider that fails keeps
//! its last snapshot, says so once per failing streak in the log, and counts every
//! failure. Providers are translators over HTTP answers ([`aws`], [`gcp`], [`azure`]);
//! the refresh loop, persistence and the merged map live here.

pub mod aws;
pub mod azure;
pub mod config;
pub mod gcp;
pub mod kubernetes;
pub mod snmp;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use config::CloudConfig;

/// What an inventory says about one address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Item {
    /// `aws`, `azure`, `gcp` or `kubernetes`: the asset's `cloud_provider`.
    pub provider: String,
    /// What the address belongs to: `instance`, `nic`, `load_balancer`, `pod`, ...
    pub kind: String,
    /// The instance, NIC or pod: the asset's `cloud_instance_id`.
    pub id: String,
    pub name: Option<String>,
    /// AWS account, Azure subscription, GCP project.
    pub account: Option<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub instance_type: Option<String>,
    /// The VPC, `VNet` or network.
    pub vpc: Option<String>,
    pub subnet: Option<String>,
    /// The provider's labels or tags (bounded), under the asset's `tags.cloud`.
    pub tags: BTreeMap<String, String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub workload_kind: Option<String>,
    pub workload: Option<String>,
}

/// Most tags kept per item, and their key and value lengths: tags come from outside
/// and end up in every asset row and API answer.
pub const MAX_TAGS: usize = 64;
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;
/// Longest text field kept (an Azure resource id runs to a few hundred characters).
const MAX_FIELD: usize = 512;

impl Item {
    /// The item with every field bounded and stripped of control characters: names and
    /// tags are whatever the cloud's users typed.
    #[must_use]
    pub fn bounded(mut self) -> Self {
        let clean = |s: &str, max: usize| -> String {
            s.chars()
                .filter(|c| !c.is_control())
                .take(max)
                .collect::<String>()
                .trim()
                .to_owned()
        };
        let opt = |v: &mut Option<String>| {
            *v = v
                .as_deref()
                .map(|s| clean(s, MAX_FIELD))
                .filter(|s| !s.is_empty());
        };
        self.provider = clean(&self.provider, 32);
        self.kind = clean(&self.kind, 64);
        self.id = clean(&self.id, MAX_FIELD);
        // `assets.name` is 255 characters.
        self.name = self
            .name
            .as_deref()
            .map(|s| clean(s, 255))
            .filter(|s| !s.is_empty());
        for v in [
            &mut self.account,
            &mut self.region,
            &mut self.zone,
            &mut self.instance_type,
            &mut self.vpc,
            &mut self.subnet,
            &mut self.cluster,
            &mut self.namespace,
            &mut self.workload_kind,
            &mut self.workload,
        ] {
            opt(v);
        }
        self.tags = std::mem::take(&mut self.tags)
            .into_iter()
            .map(|(k, v)| (clean(&k, MAX_TAG_KEY), clean(&v, MAX_TAG_VALUE)))
            .filter(|(k, _)| !k.is_empty())
            .take(MAX_TAGS)
            .collect();
        self
    }
}

/// One provider's whole view at one time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub provider: String,
    pub taken_at: Option<DateTime<Utc>>,
    pub addresses: Vec<(IpAddr, Item)>,
}

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("HTTP {status} from {what}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: {message}")]
    Transport { what: String, message: String },
    #[error("{what}: the answer is not what the API documents: {message}")]
    Answer { what: String, message: String },
    #[error("more than {0} pages: refusing to go on (a paging loop?)")]
    TooManyPages(usize),
}

/// Providers in the order their answers win for one address: a pod's identity is
/// more specific than the node or VPC address it may share.
const PRECEDENCE: [&str; 4] = ["kubernetes", "aws", "azure", "gcp"];

/// An item and its fingerprint (computed once, when its snapshot is installed), so
/// the graph writer can tell at a glance whether what it wrote is still current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub item: Item,
    pub fingerprint: u64,
}

impl Entry {
    fn new(item: Item) -> Self {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        item.hash(&mut h);
        Self {
            fingerprint: h.finish(),
            item,
        }
    }
}

/// The merged address map.
pub type Map = HashMap<IpAddr, Arc<Entry>>;

/// One provider's entries, as installed.
type Entries = Arc<Vec<(IpAddr, Arc<Entry>)>>;

/// The merged address map every reader shares.
#[derive(Debug, Default)]
pub struct Inventory {
    map: RwLock<Arc<Map>>,
    snapshots: std::sync::Mutex<BTreeMap<String, Entries>>,
    version: AtomicU64,
    /// Providers that installed a snapshot they took in this process (not one
    /// loaded from disk): for them, an address missing from the map is one their
    /// inventory no longer has.
    live: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Other instances' snapshots (`enrichment.cache.backend: redis`), and each
    /// provider's refresh interval (how long a shared snapshot stays fresh).
    shared: Option<Arc<crate::enrich::shared::SharedCache>>,
    intervals: std::sync::Mutex<BTreeMap<String, Duration>>,
    /// `enrichment.cloud.create_assets`.
    create_assets: bool,
}

impl Inventory {
    /// An inventory that shares the listed providers' snapshots through `cache`: one
    /// instance calls a cloud's API per refresh interval, the others take its
    /// snapshot. (Kubernetes is watched by each instance: a watch is not a poll.)
    #[must_use]
    pub fn shared_through(cache: Arc<crate::enrich::shared::SharedCache>) -> Self {
        Self {
            shared: Some(cache),
            ..Self::default()
        }
    }

    /// Whether items no flow has shown become assets (`enrichment.cloud.create_assets`).
    #[must_use]
    pub fn with_asset_creation(mut self, create: bool) -> Self {
        self.create_assets = create;
        self
    }

    /// Whether items no flow has shown become assets.
    pub fn creates_assets(&self) -> bool {
        self.create_assets
    }

    /// What the inventories say about `ip`, if anything.
    pub fn lookup(&self, ip: IpAddr) -> Option<Arc<Entry>> {
        self.current().get(&ip).cloned()
    }

    /// The whole map as it is now (a cheap reference; never half-updated).
    pub fn current(&self) -> Arc<Map> {
        self.map
            .read()
            .map_or_else(|p| p.into_inner().clone(), |m| m.clone())
    }

    /// Bumped on every swap: a reader that applied version N has nothing new until
    /// this moves.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Replaces one provider's snapshot and swaps in the new merged map. The map is
    /// swapped under the snapshots' lock, so two installs cannot interleave and lose
    /// one; a poisoned lock (a panic elsewhere) is recovered, not a reason to stop.
    pub fn install(&self, snapshot: Snapshot) {
        let entries: Vec<(IpAddr, Arc<Entry>)> = snapshot
            .addresses
            .into_iter()
            .map(|(ip, item)| (ip, Arc::new(Entry::new(item))))
            .collect();
        let mut all = self
            .snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.insert(snapshot.provider, Arc::new(entries));
        let rank = |p: &str| {
            PRECEDENCE
                .iter()
                .position(|x| *x == p)
                .unwrap_or(PRECEDENCE.len())
        };
        // Lowest precedence first, so the more specific provider overwrites.
        let mut ordered: Vec<(&String, &Entries)> = all.iter().collect();
        ordered.sort_by_key(|(p, _)| std::cmp::Reverse(rank(p)));
        let mut merged: Map = HashMap::new();
        for (_, entries) in ordered {
            for (ip, e) in entries.iter() {
                merged.insert(*ip, e.clone());
            }
        }
        *self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(merged);
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Marks `provider` as answering in this process (see [`Self::live`]).
    pub fn mark_live(&self, provider: &str) {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(provider.to_owned());
    }

    /// Providers whose current snapshot was taken by this process: the ones whose
    /// departed addresses may be cleared from the graph.
    pub fn live(&self) -> Vec<String> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Addresses each provider's last snapshot holds.
    pub fn sizes(&self) -> BTreeMap<String, usize> {
        self.snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, s)| (k.clone(), s.len()))
            .collect()
    }
}

/// A provider the refresh loop can call.
pub enum Provider {
    Aws(Box<aws::Aws>),
    Gcp(gcp::Gcp),
    Kubernetes(Box<kubernetes::Kubernetes>),
    Azure(azure::Azure),
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Aws(_) => "aws",
            Self::Gcp(_) => "gcp",
            Self::Kubernetes(_) => "kubernetes",
            Self::Azure(_) => "azure",
        }
    }

    /// What the provider lists (regions, projects, subscriptions, cluster), without
    /// secrets: two daemons share a snapshot only when this is the same.
    pub fn scope(&self) -> String {
        match self {
            Self::Aws(p) => p.scope(),
            Self::Azure(p) => p.scope(),
            Self::Gcp(p) => p.scope(),
            Self::Kubernetes(p) => p.scope(),
        }
    }

    /// What signals a change worth publishing before the timer (the watched
    /// providers); `None` for the listed ones.
    pub fn changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        match self {
            Self::Kubernetes(p) => Some(p.changes()),
            _ => None,
        }
    }

    /// One whole snapshot, every field bounded.
    ///
    /// # Errors
    /// What the provider's API answered instead.
    pub async fn snapshot(&self) -> Result<Vec<(IpAddr, Item)>, ProviderError> {
        let raw = match self {
            Self::Aws(p) => p.snapshot().await?,
            Self::Gcp(p) => p.snapshot().await?,
            Self::Kubernetes(p) => p.snapshot().await?,
            Self::Azure(p) => p.snapshot().await?,
        };
        Ok(raw
            .into_iter()
            .map(|(ip, item)| (ip, item.bounded()))
            .collect())
    }
}

/// The file a provider's last good snapshot is kept in.
pub fn snapshot_path(state_dir: &std::path::Path, provider: &str) -> PathBuf {
    state_dir.join(format!("inventory-{provider}.json"))
}

/// Largest saved snapshot read back (a million addresses is well under it).
const MAX_SAVED_BYTES: u64 = 512 << 20;

/// Loads a saved snapshot, if there is a readable one, every item bounded again (the
/// file is outside data like the API's answers were).
pub fn load_saved(path: &std::path::Path) -> Option<Snapshot> {
    let size = std::fs::metadata(path).ok()?.len();
    if size > MAX_SAVED_BYTES {
        tracing::warn!(path = %path.display(), size, "ignoring an inventory snapshot this large");
        return None;
    }
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice::<Snapshot>(&text) {
        Ok(mut s) => {
            s.addresses = s
                .addresses
                .into_iter()
                .map(|(ip, item)| (ip, item.bounded()))
                .collect();
            Some(s)
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable inventory snapshot");
            None
        }
    }
}

/// Saves a snapshot: a new file (0600: names, tags and addresses of the estate)
/// beside the old one, synced, renamed over it, the directory synced.
///
/// # Errors
/// When the file cannot be written.
pub fn save(path: &std::path::Path, snapshot: &Snapshot) -> std::io::Result<()> {
    save_json(path, snapshot)
}

/// Saves `value` as JSON the way [`save`] does (0600, synced, renamed over).
///
/// # Errors
/// When the file cannot be written.
pub fn save_json<T: Serialize>(path: &std::path::Path, value: &T) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec(value)?;
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Metric names of the inventory stage.
pub mod metric {
    /// Snapshots taken, by `provider` and `outcome` (`ok`, `failed`).
    pub const REFRESHES: &str = "flowlens_inventory_refreshes_total";
    /// Addresses in each provider's current snapshot.
    pub const ADDRESSES: &str = "flowlens_inventory_addresses";
    /// When each provider's last good snapshot was taken (Unix seconds).
    pub const LAST_SUCCESS: &str = "flowlens_inventory_last_success_timestamp_seconds";
    /// Addresses the last snapshot left out because two items claimed them
    /// (networks whose ranges overlap).
    pub const AMBIGUOUS: &str = "flowlens_inventory_ambiguous_addresses";
}

/// Starts one refresh loop per provider: a snapshot at once (after the saved one was
/// installed), then every `interval` with up to a tenth of it added at random.
pub fn spawn(
    inventory: &Arc<Inventory>,
    providers: Vec<(Provider, Duration)>,
    state_dir: Option<&std::path::Path>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let state_dir: Option<PathBuf> = state_dir.map(std::path::Path::to_path_buf);
    providers
        .into_iter()
        .map(|(provider, interval)| {
            let inventory = inventory.clone();
            let state_dir = state_dir.clone();
            let name = provider.name();
            inventory
                .intervals
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(name.to_owned(), interval);
            if let Some(saved) = state_dir
                .as_deref()
                .map(|d| snapshot_path(d, name))
                .and_then(|p| load_saved(&p))
                .filter(|s| s.provider == name)
            {
                tracing::info!(
                    provider = name,
                    addresses = saved.addresses.len(),
                    "inventory: the saved snapshot installed"
                );
                metrics::gauge!(metric::ADDRESSES, "provider" => name)
                    .set(gauge(saved.addresses.len()));
                inventory.install(saved);
            }
            tokio::spawn(async move {
                let mut streak = Streak::default();
                let changes = provider.changes();
                let mut saved_at: Option<tokio::time::Instant> = None;
                loop {
                    // A watched provider publishes often: its snapshot is saved at
                    // most once a minute (a restart loses a minute of churn at most).
                    let save =
                        changes.is_none() || saved_at.is_none_or(|t| t.elapsed() >= SAVE_EVERY);
                    let dir = state_dir.as_deref().filter(|_| save);
                    if refresh_once(&inventory, &provider, dir, &mut streak).await && save {
                        saved_at = Some(tokio::time::Instant::now());
                    }
                    let jitter = interval.mul_f64(rand_fraction() * 0.1);
                    match &changes {
                        Some(notify) => {
                            tokio::select! {
                                () = tokio::time::sleep(interval + jitter) => {}
                                () = notify.notified() => {
                                    // Let a burst (a rollout) settle into one publication.
                                    tokio::time::sleep(SETTLE).await;
                                }
                            }
                        }
                        None => tokio::time::sleep(interval + jitter).await,
                    }
                }
            })
        })
        .collect()
}

/// How long a watched provider's changes settle before they are published (a
/// rollout, or every node's periodic status, is one publication, not hundreds).
const SETTLE: Duration = Duration::from_secs(1);
/// How often a watched provider's snapshot is saved at most.
const SAVE_EVERY: Duration = Duration::from_mins(1);

/// Where a refresh loop stands: failing (logged once per streak), whether the last
/// save failed (logged once per streak too), and the ambiguous addresses last
/// reported (logged when the count changes).
#[derive(Debug, Default)]
pub struct Streak {
    pub failing: bool,
    pub save_failing: bool,
    pub ambiguous: usize,
    /// A fingerprint of the last snapshot installed: an identical one is not
    /// installed again (no new version, no work for the graph writer).
    pub installed: Option<u64>,
    /// A fingerprint of the last snapshot saved.
    pub saved: Option<u64>,
}

/// The snapshot without the addresses that two different items claim (two VPCs or
/// networks with the same range, seen by one provider): which one a flow's address
/// is cannot be told from the address, and a wrong identity is worse than none.
/// Also the number of addresses left out.
#[must_use]
pub fn disambiguate(addresses: Vec<(IpAddr, Item)>) -> (Vec<(IpAddr, Item)>, usize) {
    let mut first: HashMap<IpAddr, (usize, bool)> = HashMap::new();
    for (i, (ip, item)) in addresses.iter().enumerate() {
        match first.get_mut(ip) {
            None => {
                first.insert(*ip, (i, false));
            }
            Some((at, clash)) => {
                if addresses[*at].1.id != item.id {
                    *clash = true;
                }
            }
        }
    }
    let ambiguous = first.values().filter(|(_, clash)| *clash).count();
    let kept = addresses
        .into_iter()
        .enumerate()
        .filter(|(i, (ip, _))| first.get(ip).is_some_and(|(at, clash)| at == i && !clash))
        .map(|(_, pair)| pair)
        .collect();
    (kept, ambiguous)
}

/// One refresh: a new snapshot installed and saved, or the last one kept. Saving and
/// building the merged map run on a blocking thread: the runtime's worker also drives
/// the graph's flushes and reverse DNS.
pub async fn refresh_once(
    inventory: &Arc<Inventory>,
    provider: &Provider,
    state_dir: Option<&std::path::Path>,
    streak: &mut Streak,
) -> bool {
    let name = provider.name();
    match take(inventory, provider).await {
        Ok(addresses) => {
            let (mut addresses, ambiguous) = disambiguate(addresses);
            metrics::gauge!(metric::AMBIGUOUS, "provider" => name).set(gauge(ambiguous));
            if ambiguous != streak.ambiguous {
                tracing::warn!(
                    provider = name,
                    ambiguous,
                    "inventory: addresses claimed by two items (overlapping networks) are \
                     left out"
                );
                streak.ambiguous = ambiguous;
            }
            if streak.failing {
                tracing::info!(provider = name, "inventory: the provider answers again");
            }
            streak.failing = false;
            addresses.sort_unstable_by_key(|(ip, _)| *ip);
            let fingerprint = {
                use std::hash::{Hash as _, Hasher as _};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                addresses.hash(&mut h);
                h.finish()
            };
            metrics::counter!(metric::REFRESHES, "provider" => name, "outcome" => "ok")
                .increment(1);
            #[expect(clippy::cast_precision_loss, reason = "seconds since 1970 fit")]
            metrics::gauge!(metric::LAST_SUCCESS, "provider" => name)
                .set(Utc::now().timestamp() as f64);
            // An unchanged snapshot is neither installed again (no new version, no
            // work for the graph writer) nor saved again.
            let install = streak.installed != Some(fingerprint);
            let save = state_dir.is_some() && streak.saved != Some(fingerprint);
            if !install && !save {
                inventory.mark_live(name);
                return true;
            }
            let snapshot = Snapshot {
                provider: name.to_owned(),
                taken_at: Some(Utc::now()),
                addresses,
            };
            metrics::gauge!(metric::ADDRESSES, "provider" => name)
                .set(gauge(snapshot.addresses.len()));
            let inventory = inventory.clone();
            let path = state_dir.filter(|_| save).map(|d| snapshot_path(d, name));
            let saved = tokio::task::spawn_blocking(move || {
                let saved = path.map(|p| save_json(&p, &snapshot));
                if install {
                    inventory.install(snapshot);
                }
                inventory.mark_live(name);
                saved
            })
            .await;
            if install {
                streak.installed = Some(fingerprint);
            }
            match saved {
                Ok(Some(Err(e))) => {
                    if !streak.save_failing {
                        tracing::warn!(provider = name, error = %e, "inventory: the snapshot could not be saved");
                    }
                    streak.save_failing = true;
                }
                Ok(Some(Ok(()))) => {
                    streak.save_failing = false;
                    streak.saved = Some(fingerprint);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(provider = name, error = %e, "inventory: installing a snapshot failed");
                }
            }
            true
        }
        Err(e) => {
            metrics::counter!(metric::REFRESHES, "provider" => name, "outcome" => "failed")
                .increment(1);
            if !streak.failing {
                tracing::warn!(provider = name, error = %e, "inventory: the refresh failed; keeping the last snapshot");
            }
            streak.failing = true;
            false
        }
    }
}

/// A provider's snapshot: another instance's from the shared cache while it is
/// fresher than the refresh interval, else the provider's own, then shared.
async fn take(
    inventory: &Inventory,
    provider: &Provider,
) -> Result<Vec<(IpAddr, Item)>, ProviderError> {
    let name = provider.name();
    let interval = inventory
        .intervals
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(name)
        .copied();
    let (Some(cache), Some(interval), None) = (&inventory.shared, interval, provider.changes())
    else {
        return provider.snapshot().await;
    };
    // The provider's scope is in the key: daemons listing other regions, projects or
    // subscriptions do not take each other's snapshots.
    let scope = {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        provider.scope().hash(&mut h);
        h.finish()
    };
    let key = format!("inventory:{name}:{scope:016x}");
    let fresh_after = Utc::now() - chrono::TimeDelta::from_std(interval).unwrap_or_default();
    if let Some(value) = cache
        .get_within("inventory", &key, crate::enrich::shared::LARGE)
        .await
    {
        // Decoding (and bounding: outside data like an API's answer) a large
        // snapshot is work for a blocking thread, not the runtime's.
        let shared = tokio::task::spawn_blocking(move || {
            serde_json::from_slice::<Snapshot>(&value).ok().map(|s| {
                let taken_at = s.taken_at;
                let provider = s.provider;
                let addresses: Vec<(IpAddr, Item)> = s
                    .addresses
                    .into_iter()
                    .map(|(ip, item)| (ip, item.bounded()))
                    .collect();
                (provider, taken_at, addresses)
            })
        })
        .await
        .ok()
        .flatten()
        .filter(|(p, t, _)| p == name && t.is_some_and(|t| t > fresh_after));
        if let Some((_, _, addresses)) = shared {
            metrics::counter!(crate::enrich::shared::metric::SHARED_HITS, "use" => "inventory")
                .increment(1);
            return Ok(addresses);
        }
    }
    let addresses = provider.snapshot().await?;
    let snapshot = Snapshot {
        provider: name.to_owned(),
        taken_at: Some(Utc::now()),
        addresses,
    };
    let (snapshot, value) = tokio::task::spawn_blocking(move || {
        let value = serde_json::to_vec(&snapshot).ok();
        (snapshot, value)
    })
    .await
    .map_err(|e| ProviderError::Transport {
        what: "the shared cache".into(),
        message: e.to_string(),
    })?;
    if let Some(value) = value {
        cache.set("inventory", &key, value, interval).await;
    }
    Ok(snapshot.addresses)
}

/// A count as a gauge value.
#[expect(
    clippy::cast_precision_loss,
    reason = "address counts are far below 2^52"
)]
fn gauge(n: usize) -> f64 {
    n as f64
}

/// A fraction in [0, 1) from the clock's low bits: enough to spread timers apart.
fn rand_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// `GET url` with a bearer token, the answer as JSON: the one HTTP shape the
/// REST providers share.
pub(crate) async fn get_json(
    what: &str,
    request: reqwest::RequestBuilder,
) -> Result<serde_json::Value, ProviderError> {
    // One page is a few megabytes at most; a body past this is not an API's page.
    const MAX_BODY: usize = 64 << 20;
    let transport = |e: &reqwest::Error| ProviderError::Transport {
        what: what.to_owned(),
        message: short_error(e),
    };
    let mut response = request.send().await.map_err(|e| transport(&e))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(&e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ProviderError::Answer {
                what: what.to_owned(),
                message: format!("more than {MAX_BODY} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        return Err(ProviderError::Status {
            what: what.to_owned(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body[..body.len().min(300)])
                .chars()
                .filter(|c| !c.is_control())
                .collect(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| ProviderError::Answer {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

/// A transport error and its root cause, without the URL's query.
pub(crate) fn short_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "transport error"
    };
    let mut cause = std::error::Error::source(e);
    let mut last = None;
    while let Some(c) = cause {
        last = Some(c.to_string());
        cause = c.source();
    }
    last.map_or_else(|| kind.to_owned(), |c| format!("{kind}: {c}"))
}

/// The last segment of a resource URL or id (`.../zones/europe-west1-b` ->
/// `europe-west1-b`).
pub(crate) fn last_segment(s: &str) -> String {
    s.rsplit('/').next().unwrap_or(s).to_owned()
}
