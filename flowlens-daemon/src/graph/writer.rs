//! EDGE: writes aggregated windows into the PostgreSQL graph, one transaction per flush.
//!
//! A flush takes the edges aggregated since the last one (plus whatever an earlier,
//! failed flush left) and, in one transaction:
//! 1. resolves every address to its asset (`asset_addresses`, cached), creating
//!    assets for addresses seen in at least `assets.min_flows_for_creation` flows;
//! 2. sums each edge per (client asset, server asset, protocol, port) and upserts
//!    `dependencies`: a new one once past `dependencies.min_flows_for_creation` flows
//!    and `confidence_threshold` (smaller ones wait in memory, adding up), an existing
//!    one with every flow (the thresholds decide creation only);
//! 3. upserts one `flow_stats` row per window and asset pair, adding to what is there
//!    (so late flows and partial windows simply top rows up);
//! 4. records `change_events` (new asset, new dependency, or one back after being
//!    stale or absent from the baseline) and the alerts the rules derive from them;
//! 5. optionally appends the raw flows to `flow_raw`.
//!
//! Caches and pending counts change only after a commit, so a failed flush (PostgreSQL
//! down) leaves everything as it was plus the new edges; the next flush retries all of
//! it. What is kept is bounded by `database.max_buffered_rows`: beyond it the oldest
//! windows are dropped and counted.
//!
//! Exactly once: each flush writes a fresh id into `graph_flushes` in its transaction.
//! When COMMIT fails without an answer (the reply was lost to a reset connection or a
//! failover, or the flush timed out while committing) the flush is *in doubt*: what it
//! wrote is kept aside, edges that arrive meanwhile wait apart, and the next flush first
//! asks PostgreSQL whether the id is there. Found: the flush landed and its rows are
//! forgotten as written; absent: they are written again. Adding counters twice is never
//! a possible outcome.
//!
//! A flush runs on a connection of its own, taken out of the pool, under
//! `database.flush_timeout_seconds`: a connection that hangs without a reset is closed
//! when the timeout drops it, instead of holding the writer (and a pool slot) forever.

use std::collections::HashMap;
use std::net::IpAddr;

use sqlx::postgres::{PgConnection, PgRow};
use sqlx::types::Uuid;
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::types::ipnetwork::IpNetwork;
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::config::{AlertRule, AlertsConfig, DependencyResolutionConfig, Scope};
use super::window::{EdgeKey, EdgeStats};
use crate::enrich::classify::Classifier;
use crate::enrich::geoip::GeoIp;
use crate::enrich::rdns::ReverseDns;
use crate::enrich::services;
use crate::kafka::positions;

/// A dependency's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DepKey {
    pub source: Uuid,
    pub target: Uuid,
    pub protocol: u8,
    pub port: u16,
}

/// What the writer has done (exported as metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterCounters {
    pub flushes: u64,
    pub flush_failures: u64,
    pub assets_created: u64,
    pub dependencies_created: u64,
    pub flow_stats_rows: u64,
    pub raw_rows: u64,
    /// Raw flows PostgreSQL refused as data (SQLSTATE classes 22 and 23), set aside so
    /// that they do not hold back the graph.
    pub raw_rows_rejected: u64,
    pub change_events: u64,
    pub alerts: u64,
    /// Edge rows dropped because the retry buffer was full.
    pub rows_dropped: u64,
    /// Edge rows given up because an end never became an asset.
    pub rows_without_asset: u64,
    /// Flushes whose COMMIT got no answer (lost reply, timeout), settled later.
    pub flushes_in_doubt: u64,
    /// Flushes in doubt that had landed (not written again).
    pub flushes_in_doubt_committed: u64,
    /// Flushes given up after `flush_timeout_seconds`.
    pub flush_timeouts: u64,
    /// Flows of dependencies a person deleted (`dependency_suppressions`): kept in
    /// `flow_stats`, not made a dependency again.
    pub flows_suppressed: u64,
    /// Cached asset ids forgotten because the asset was deleted (`deleted_assets`).
    pub deleted_assets_forgotten: u64,
    /// Learnt listeners not persisted because the queue to persist was full (they are
    /// still used; a later confirmation persists them).
    pub listeners_not_persisted: u64,
    /// Graph rows PostgreSQL refused as data (SQLSTATE class 22), set aside, per table
    /// (`assets`, `dependencies`, `flow_stats`).
    pub rows_refused: std::collections::BTreeMap<&'static str, u64>,
}

/// Why a flush did not complete; everything it held is kept for the next one.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("flush timed out after {0:?} (database.flush_timeout_seconds)")]
    TimedOut(std::time::Duration),
}

/// One raw flow for `flow_raw`.
#[derive(Debug, Clone)]
pub struct RawFlow {
    pub received_ms: u64,
    pub exporter: IpAddr,
    /// The exporter's `sysName`, when SNMP knows it.
    pub exporter_name: Option<std::sync::Arc<str>>,
    /// `ifIndex` of the interfaces the flow came in and went out by.
    pub input_interface: Option<u32>,
    pub output_interface: Option<u32>,
    /// Their `ifName`, when SNMP knows them.
    pub input_if_name: Option<std::sync::Arc<str>>,
    pub output_if_name: Option<std::sync::Arc<str>>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub bytes: u64,
    pub packets: u64,
    pub tcp_flags: Option<u16>,
    pub sampling_rate: u32,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
}

/// Stats of a dependency not yet created (below its thresholds).
#[derive(Debug, Clone, Copy)]
struct Pending {
    stats: EdgeStats,
    client: IpAddr,
    server: IpAddr,
}

/// Settings the writer needs.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub resolution: DependencyResolutionConfig,
    pub alerts: AlertsConfig,
    pub classifier: Classifier,
    pub max_buffered_rows: usize,
    pub write_raw_flows: bool,
    /// Partition retention (`database.raw_retention_days`, `stats_retention_days`).
    pub raw_retention_days: u32,
    pub stats_retention_days: u32,
    /// A flush still running after this is given up (its connection closed).
    pub flush_timeout: std::time::Duration,
}

/// The graph writer and its memory of what exists.
pub struct GraphWriter {
    pool: PgPool,
    settings: WriterSettings,
    asset_of: HashMap<IpAddr, Uuid>,
    /// Flows seen per address that has no asset yet.
    pending_ip_flows: HashMap<IpAddr, u64>,
    pending_deps: HashMap<DepKey, Pending>,
    /// Edges not written yet: new ones, ones waiting for an asset, ones of a failed
    /// flush.
    held: HashMap<EdgeKey, EdgeStats>,
    raw: Vec<RawFlow>,
    geoip: Option<GeoIp>,
    rdns: Option<ReverseDns>,
    /// Assets created from flows whose reverse-DNS name was asked for.
    awaiting_name: HashMap<IpAddr, Uuid>,
    /// The clouds' and clusters' inventories, when any provider is configured.
    inventory: Option<std::sync::Arc<crate::inventory::Inventory>>,
    /// What the inventory last wrote to each asset (a fingerprint of the item), so an
    /// unchanged item is not written again every flush.
    described: HashMap<Uuid, u64>,
    /// The inventory version the last landed flush applied: a newer one is a reason
    /// to flush even with no flows to write.
    inventory_applied: u64,
    /// The exporters' SNMP answers, and the version of them last written.
    devices: Option<std::sync::Arc<crate::inventory::snmp::Devices>>,
    devices_applied: u64,
    /// The flushes' own connection (out of the pool, so that a hung one can be closed).
    conn: Option<PgConnection>,
    /// A flush whose COMMIT got no answer, settled by the next flush.
    in_doubt: Option<InDoubt>,
    /// Edges and raw flows that arrived while a flush is in doubt: held apart so that
    /// settling it as landed forgets exactly what it wrote.
    incoming: HashMap<EdgeKey, EdgeStats>,
    incoming_raw: Vec<RawFlow>,
    /// The last `deleted_assets.seq` read (None until the first flush reads it).
    deleted_seq: Option<i64>,
    /// Addresses whose asset row PostgreSQL refused: not tried again.
    refused_ips: std::collections::HashSet<IpAddr>,
    /// Learnt listening endpoints to persist (`service_endpoints`).
    listeners: std::collections::HashSet<crate::resolve::fan_out::Endpoint>,
    /// Raw-topic positions of the flows added so far (the Kafka path), written in the
    /// next flush's transaction.
    positions: positions::Positions,
    /// Where committed positions are told (to the consumer).
    durable: Option<positions::Durable>,
    pub counters: WriterCounters,
}

/// A flush that may or may not have committed.
struct InDoubt {
    id: Uuid,
    staged: Staged,
}

/// What a flush wrote, applied to the writer's memory once it is known to have landed.
struct Staged {
    /// Addresses asked to become assets, and every address resolved by the flush.
    to_create: Vec<IpAddr>,
    asset_of: HashMap<IpAddr, Uuid>,
    dependencies_created: u64,
    /// Edges written (removed from `held`).
    ready: Vec<EdgeKey>,
    raw_rows: u64,
    raw_rejected: u64,
    events: u64,
    alerts: u64,
    /// Addresses whose reverse-DNS answer was settled.
    named: Vec<IpAddr>,
    /// Assets the inventory described, with the fingerprint of what it wrote, and the
    /// inventory version it read.
    described: Vec<(Uuid, u64)>,
    /// Addresses taken off a workload's asset (another workload has them now).
    detached: Vec<IpAddr>,
    inventory_version: u64,
    /// The SNMP answers' version this flush wrote to `exporters`.
    devices_version: u64,
    /// Dependencies written or suppressed (no longer pending), and those still below
    /// their thresholds.
    written: Vec<DepKey>,
    suppressed_flows: u64,
    /// Rows PostgreSQL refused as data, per table.
    refused: [(&'static str, u64); 3],
    /// Listening endpoints persisted.
    listeners: Vec<crate::resolve::fan_out::Endpoint>,
    still_pending: Vec<(DepKey, Pending)>,
    /// Raw-topic positions written.
    positions: positions::Positions,
    now_ms: u64,
}

/// Assets waiting for a reverse-DNS answer, at most.
const MAX_AWAITING_NAMES: usize = 100_000;

/// Waiting addresses whose lookup is asked for again per flush, at most: a request
/// that found every lookup slot busy started nothing, and nothing else would retry it.
const MAX_NAME_RETRIES_PER_FLUSH: usize = 10_000;

/// Assets queued again for a reverse lookup per upkeep, at most (never checked, or
/// checked more than [`RDNS_RECHECK_DAYS`] ago).
const MAX_NAME_REQUEUE: usize = 10_000;

/// Reverse names are looked up again after this many days (names change).
const RDNS_RECHECK_DAYS: i32 = 7;

/// A change event about to be recorded, with what alert rules match on.
#[derive(Debug, Clone)]
struct Change {
    kind: &'static str,
    entity_type: &'static str,
    entity_id: Uuid,
    before: Option<serde_json::Value>,
    after: serde_json::Value,
    scope: Option<Scope>,
    port: Option<u16>,
    title: String,
}

/// Assets the inventory describes in one flush at most: the first description after
/// a start (or of a new provider) is every known asset, spread over a few flushes
/// rather than one statement that could outlast the flush timeout.
const MAX_DESCRIBED_PER_FLUSH: usize = 2000;

/// The alert scope of a client -> server pair.
pub fn scope_of(classifier: &Classifier, client: IpAddr, server: IpAddr) -> Scope {
    classifier.classify(client, server)
}

fn ts(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default()
}

fn net(ip: IpAddr) -> IpNetwork {
    IpNetwork::from(ip)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl GraphWriter {
    pub fn new(pool: PgPool, settings: WriterSettings) -> Self {
        Self {
            pool,
            settings,
            asset_of: HashMap::new(),
            pending_ip_flows: HashMap::new(),
            pending_deps: HashMap::new(),
            held: HashMap::new(),
            raw: Vec::new(),
            geoip: None,
            rdns: None,
            inventory: None,
            described: HashMap::new(),
            inventory_applied: 0,
            devices: None,
            devices_applied: 0,
            awaiting_name: HashMap::new(),
            conn: None,
            in_doubt: None,
            incoming: HashMap::new(),
            incoming_raw: Vec::new(),
            deleted_seq: None,
            listeners: std::collections::HashSet::new(),
            positions: positions::Positions::new(),
            durable: None,
            refused_ips: std::collections::HashSet::new(),
            counters: WriterCounters::default(),
        }
    }

    /// Writes what the exporters said over SNMP to the `exporters` table.
    #[must_use]
    pub fn with_devices(
        mut self,
        devices: std::sync::Arc<crate::inventory::snmp::Devices>,
    ) -> Self {
        self.devices = Some(devices);
        self
    }

    /// Describes assets from `inventory` at each flush.
    #[must_use]
    pub fn with_inventory(
        mut self,
        inventory: std::sync::Arc<crate::inventory::Inventory>,
    ) -> Self {
        self.inventory = Some(inventory);
        self
    }

    /// Adds `GeoIP`/ASN columns and reverse-DNS names to the assets this writer
    /// creates.
    #[must_use]
    pub fn with_enrichment(mut self, geoip: Option<GeoIp>, rdns: Option<ReverseDns>) -> Self {
        self.geoip = geoip;
        self.rdns = rdns;
        self
    }

    /// Tells `durable` the raw-topic positions of each flush that commits.
    #[must_use]
    pub fn with_positions(mut self, durable: positions::Durable) -> Self {
        self.durable = Some(durable);
        self
    }

    /// Adds the raw-topic positions up to which the flows added so far were read: the
    /// next flush writes them in its transaction.
    pub fn add_positions(&mut self, p: positions::Positions) {
        positions::merge(&mut self.positions, p);
    }

    /// Edge rows waiting to be written.
    pub fn held_rows(&self) -> usize {
        self.held.len() + self.incoming.len()
    }

    /// How long a flush (or upkeep) may run (`database.flush_timeout_seconds`).
    pub fn flush_timeout(&self) -> std::time::Duration {
        self.settings.flush_timeout
    }

    /// Adds learnt listening endpoints for the next flush to persist (an upsert: writing
    /// one twice is harmless).
    pub fn add_listeners(&mut self, listeners: Vec<crate::resolve::fan_out::Endpoint>) {
        let max = self.settings.max_buffered_rows.max(1);
        for e in listeners {
            if self.listeners.len() < max || self.listeners.contains(&e) {
                self.listeners.insert(e);
            } else {
                self.counters.listeners_not_persisted += 1;
            }
        }
    }

    /// Adds a flush interval's edges (and raw flows) to what the next flush writes.
    pub fn add(&mut self, edges: Vec<(EdgeKey, EdgeStats)>, raw: Vec<RawFlow>) {
        let doubt = self.in_doubt.is_some();
        let (held, held_raw) = if doubt {
            (&mut self.incoming, &mut self.incoming_raw)
        } else {
            (&mut self.held, &mut self.raw)
        };
        for (key, stats) in edges {
            for ip in [key.client, key.server] {
                if !self.asset_of.contains_key(&ip) {
                    *self.pending_ip_flows.entry(ip).or_default() += stats.flows;
                }
            }
            held.entry(key)
                .and_modify(|s| s.merge(&stats))
                .or_insert(stats);
        }
        if self.settings.write_raw_flows {
            held_raw.extend(raw);
        }
        let max = self.settings.max_buffered_rows.max(1);
        self.counters.rows_dropped += bound(held, held_raw, max);
    }

    /// Writes everything held in one transaction. On error nothing is lost (up to the
    /// bound): the same rows are retried by the next call. A flush in doubt is settled
    /// first.
    pub async fn flush(&mut self, now_ms: u64) -> Result<(), FlushError> {
        self.counters.flushes += 1;
        let limit = self.settings.flush_timeout;
        let result = if let Ok(r) = tokio::time::timeout(limit, self.flush_inner(now_ms)).await {
            r.map_err(FlushError::from)
        } else {
            // The flush future is gone, and with it its connection: a COMMIT it had sent
            // is in doubt (recorded before sending), anything earlier rolled back when
            // the server saw the connection close.
            self.counters.flush_timeouts += 1;
            if self.in_doubt.is_some() {
                self.counters.flushes_in_doubt += 1;
            }
            Err(FlushError::TimedOut(limit))
        };
        if result.is_err() {
            self.counters.flush_failures += 1;
        }
        result
    }

    /// Settles a flush in doubt: did its id land? Either way, what arrived meanwhile
    /// joins what is held.
    async fn settle_in_doubt(&mut self) -> Result<(), sqlx::Error> {
        let Some(id) = self.in_doubt.as_ref().map(|d| d.id) else {
            return Ok(());
        };
        let landed: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM graph_flushes WHERE id = $1)")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
        if let Some(doubt) = self.in_doubt.take() {
            if landed {
                self.counters.flushes_in_doubt_committed += 1;
                self.apply(doubt.staged);
            }
            tracing::info!(%id, landed, "graph flush in doubt settled");
        }
        for (key, stats) in std::mem::take(&mut self.incoming) {
            self.held
                .entry(key)
                .and_modify(|s| s.merge(&stats))
                .or_insert(stats);
        }
        self.raw.append(&mut self.incoming_raw);
        let max = self.settings.max_buffered_rows.max(1);
        self.counters.rows_dropped += bound(&mut self.held, &mut self.raw, max);
        Ok(())
    }

    async fn flush_inner(&mut self, now_ms: u64) -> Result<(), sqlx::Error> {
        self.settle_in_doubt().await?;
        let mut result = self.try_flush(now_ms).await;
        if let Err(e) = &result
            && self.in_doubt.is_none()
            && is_stale_cache_error(e)
        {
            // An asset we cached was deleted (the API, an operator), or another
            // writer claimed an address first: forget what we cached and try again
            // at once. Pending edges keyed by asset ids go too; they were below
            // their thresholds and start counting afresh.
            tracing::info!(error = %e, "graph cache out of date; re-reading assets");
            self.asset_of.clear();
            self.described.clear();
            self.pending_deps.clear();
            // The held edges' flows count toward (re)creating their addresses.
            for (k, st) in &self.held {
                for ip in [k.client, k.server] {
                    let n = self.pending_ip_flows.entry(ip).or_default();
                    *n = (*n).max(st.flows);
                }
            }
            result = self.try_flush(now_ms).await;
        }
        result
    }

    async fn try_flush(&mut self, now_ms: u64) -> Result<(), sqlx::Error> {
        if self.held.is_empty()
            && self.raw.is_empty()
            && self.awaiting_name.is_empty()
            && self.listeners.is_empty()
            && self.positions.is_empty()
            && self
                .inventory
                .as_ref()
                .is_none_or(|i| i.version() == self.inventory_applied)
        {
            return Ok(());
        }
        // Out of the pool for good: on any error or timeout it is dropped, which closes
        // it, and the next flush takes a fresh one.
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.pool.acquire().await?.detach(),
        };
        let mut tx = sqlx::Connection::begin(&mut conn).await?;
        self.forget_deleted_assets(&mut tx).await?;
        let res = &self.settings.resolution;
        let mut changes: Vec<Change> = Vec::new();

        // Phase timings, for `flowlens_daemon::graph=debug` (where a slow flush goes).
        let t0 = std::time::Instant::now();
        let mut phases: Vec<(&str, f64)> = Vec::new();
        let mark = |name: &'static str, phases: &mut Vec<(&str, f64)>| {
            phases.push((name, t0.elapsed().as_secs_f64()));
        };

        // 1. Addresses -> assets.
        let mut asset_of: HashMap<IpAddr, Uuid> = HashMap::new();
        let unknown: Vec<IpAddr> = {
            let mut v: Vec<IpAddr> = self
                .held
                .keys()
                .flat_map(|k| [k.client, k.server])
                .filter(|ip| !self.asset_of.contains_key(ip))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        if !unknown.is_empty() {
            let rows =
                sqlx::query("SELECT ip, asset_id FROM asset_addresses WHERE ip = ANY($1::inet[])")
                    .bind(unknown.iter().map(|ip| net(*ip)).collect::<Vec<_>>())
                    .fetch_all(&mut *tx)
                    .await?;
            for r in rows {
                let ip: IpNetwork = r.try_get(0)?;
                asset_of.insert(ip.ip(), r.try_get(1)?);
            }
        }
        let mut to_create: Vec<IpAddr> = if res.assets.auto_create {
            unknown
                .iter()
                .filter(|ip| !asset_of.contains_key(ip) && !self.refused_ips.contains(ip))
                .filter(|ip| {
                    self.pending_ip_flows.get(ip).copied().unwrap_or(0)
                        >= res.assets.min_flows_for_creation
                })
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        // Pods grouped by workload (`group_pods_by_workload`): a new address of a
        // workload that has an asset joins it; of one that has none, the first
        // address makes the asset and the others join it once it exists.
        let joining = self
            .join_workloads(&mut tx, &mut to_create, &mut asset_of)
            .await?;
        let mut refused_assets = 0;
        if !to_create.is_empty() {
            let (first, last) = self.seen_range(&to_create);
            let new_assets: Vec<NewAsset> = to_create
                .iter()
                .zip(first.into_iter().zip(last))
                .map(|(ip, (first, last))| NewAsset {
                    ip: *ip,
                    first,
                    last,
                    internal: self.settings.classifier.is_internal(*ip),
                    geo: self.geoip.as_ref().and_then(|g| g.lookup(*ip)),
                })
                .collect();
            let (rows, refused) = set_aside(&mut tx, &new_assets, "assets", insert_assets).await?;
            refused_assets = refused.len();
            for i in refused {
                if let Some(a) = new_assets.get(i)
                    && self.refused_ips.len() < self.settings.max_buffered_rows.max(1)
                {
                    self.refused_ips.insert(a.ip);
                }
            }
            for r in rows {
                let id: Uuid = r.try_get("id")?;
                let ip: IpNetwork = r.try_get("ip")?;
                let name: String = r.try_get("name")?;
                let internal: Option<bool> = r.try_get("is_internal")?;
                let country: Option<String> = r.try_get("country_code")?;
                let asn: Option<i64> = r.try_get("asn")?;
                let as_org: Option<String> = r.try_get("as_org")?;
                asset_of.insert(ip.ip(), id);
                changes.push(Change {
                    kind: "new_asset",
                    entity_type: "asset",
                    entity_id: id,
                    before: None,
                    after: serde_json::json!({
                        "id": id, "name": name, "ip_addresses": [ip.ip().to_string()],
                        "is_internal": internal, "discovery_source": "flow",
                        "country_code": country, "asn": asn, "as_org": as_org,
                    }),
                    scope: None,
                    port: None,
                    title: format!("New asset {name}"),
                });
            }
        }
        self.attach_to_workloads(&mut tx, joining, &mut asset_of)
            .await?;
        let lookup = |ip: &IpAddr| self.asset_of.get(ip).or_else(|| asset_of.get(ip)).copied();

        mark("assets", &mut phases);
        // 2. Ready edges (both ends are assets), summed per dependency.
        let mut ready: Vec<(EdgeKey, Uuid, Uuid)> = Vec::new();
        for key in self.held.keys() {
            if let (Some(s), Some(t)) = (lookup(&key.client), lookup(&key.server)) {
                ready.push((*key, s, t));
            }
        }
        ready.sort_unstable();
        let mut per_dep: HashMap<DepKey, Pending> = HashMap::new();
        for (key, s, t) in &ready {
            let stats = self.held.get(key).copied();
            let Some(stats) = stats else { continue };
            let dk = DepKey {
                source: *s,
                target: *t,
                protocol: key.protocol,
                port: key.port,
            };
            per_dep
                .entry(dk)
                .and_modify(|p| p.stats.merge(&stats))
                .or_insert(Pending {
                    stats,
                    client: key.client,
                    server: key.server,
                });
        }
        // Which of them exist, and how they looked (to tell "back after being stale or
        // absent from the baseline" from a plain update), one query.
        let existing = existing_dependencies(&mut tx, per_dep.keys()).await?;
        // Dependencies a person deleted stay deleted while flows still show them.
        let suppressed = if self.any_suppressed(&mut tx).await? {
            suppressed_dependencies(&mut tx, per_dep.keys()).await?
        } else {
            std::collections::HashSet::new()
        };
        let mut suppressed_flows = 0;
        let mut dropped: Vec<DepKey> = Vec::new();
        // Add what was pending, decide which dependencies are written. The thresholds
        // decide creation only: a dependency that exists takes every flow, or a nightly
        // job's one flow a day (or a long connection whose later records carry no SYN,
        // so less confidence) would never move its `last_seen` and it would be reported
        // removed while in use.
        let mut write: Vec<(DepKey, Pending)> = Vec::new();
        let mut still_pending: Vec<(DepKey, Pending)> = Vec::new();
        for (dk, mut p) in per_dep {
            if suppressed.contains(&dk) {
                suppressed_flows += p.stats.flows;
                dropped.push(dk);
                continue;
            }
            if let Some(old) = self.pending_deps.get(&dk) {
                p.stats.merge(&old.stats);
            }
            let qualifies = existing.contains_key(&dk)
                || (p.stats.flows >= res.dependencies.min_flows_for_creation
                    && p.stats.confidence >= res.dependencies.confidence_threshold);
            if qualifies {
                write.push((dk, p));
            } else {
                still_pending.push((dk, p));
            }
        }
        write.sort_unstable_by_key(|(dk, _)| *dk);
        let baseline_ms = res.change_detection.baseline_window_days * 86_400_000;
        let mut refused_deps: Vec<DepKey> = Vec::new();
        if !write.is_empty() {
            let cols: Vec<DepRow> = write
                .iter()
                .map(|(dk, p)| DepRow::new(dk, p, &self.settings.classifier))
                .collect();
            let before: HashMap<Uuid, (DateTime<Utc>, bool)> = existing
                .values()
                .map(|e| (e.id, (e.last_seen, e.stale)))
                .collect();
            let (rows, refused) =
                set_aside(&mut tx, &cols, "dependencies", upsert_dependencies).await?;
            for i in refused {
                if let Some(c) = cols.get(i) {
                    refused_deps.push(c.key);
                }
            }
            let by_key: HashMap<DepKey, &Pending> = write.iter().map(|(k, p)| (*k, p)).collect();
            for r in rows {
                let inserted: bool = r.try_get("inserted")?;
                let id: Uuid = r.try_get("id")?;
                let old_last: Option<DateTime<Utc>> = before.get(&id).map(|b| b.0);
                let was_stale: Option<bool> = before.get(&id).map(|b| b.1);
                let absent_from_baseline = old_last.is_some_and(|t| {
                    u64::try_from(t.timestamp_millis()).unwrap_or(0) + baseline_ms < now_ms
                });
                if !(inserted || was_stale == Some(true) || absent_from_baseline) {
                    continue;
                }
                let dk = DepKey::from_row(&r)?;
                let Some(p) = by_key.get(&dk) else { continue };
                let scope = scope_of(&self.settings.classifier, p.client, p.server);
                let service: Option<String> = r.try_get("inferred_service")?;
                let what = service
                    .clone()
                    .unwrap_or_else(|| format!("port {}", dk.port));
                changes.push(Change {
                    kind: "new_dependency",
                    entity_type: "dependency",
                    entity_id: id,
                    before: old_last
                        .map(|t| serde_json::json!({"last_seen": t, "stale": was_stale})),
                    after: serde_json::json!({
                        "id": id, "source_asset_id": dk.source, "target_asset_id": dk.target,
                        "protocol": dk.protocol, "port": dk.port, "inferred_service": service,
                        "client_ip": p.client.to_string(), "server_ip": p.server.to_string(),
                        "scope": scope.as_str(),
                    }),
                    scope: Some(scope),
                    port: Some(dk.port),
                    title: format!(
                        "New {} dependency {} -> {} ({what})",
                        scope.as_str(),
                        p.client,
                        p.server
                    ),
                });
            }
        }

        mark("dependencies", &mut phases);
        // 3. flow_stats, per window and asset pair.
        let mut refused_stats = 0;
        if !ready.is_empty() {
            let rows: Vec<StatsRow> = ready
                .iter()
                .filter_map(|(key, s, t)| {
                    self.held.get(key).map(|st| StatsRow {
                        key: *key,
                        source: *s,
                        target: *t,
                        stats: *st,
                    })
                })
                .collect();
            refused_stats = set_aside(&mut tx, &rows, "flow_stats", upsert_flow_stats)
                .await?
                .1
                .len();
        }
        // Assets seen now: every known asset at either end of an edge of this flush,
        // also when the other end is no asset (yet), so that an asset talking only to
        // new or unnamed peers is not reported stale while in use. One that was stale
        // is back: a `new_asset` event again (migration 2). `last_seen` moves in steps
        // of 5 minutes (a window): rows that would move less are not rewritten, so a
        // steady flush leaves most assets alone.
        let mut touched: HashMap<Uuid, u64> = HashMap::new();
        for (key, st) in &self.held {
            for ip in [key.client, key.server] {
                if let Some(id) = lookup(&ip) {
                    let e = touched.entry(id).or_insert(st.last_ms);
                    *e = (*e).max(st.last_ms);
                }
            }
        }
        if !touched.is_empty() {
            let (ids, lasts): (Vec<Uuid>, Vec<DateTime<Utc>>) =
                touched.into_iter().map(|(id, l)| (id, ts(l))).unzip();
            let returned = sqlx::query(
                "UPDATE assets a SET last_seen = greatest(a.last_seen, u.l), stale = false
                 FROM (SELECT x.id, x.l, old.stale AS was_stale
                       FROM unnest($1::uuid[], $2::timestamptz[]) AS x(id, l)
                       JOIN assets old ON old.id = x.id) AS u
                 WHERE a.id = u.id
                   AND (a.stale OR a.last_seen < u.l - interval '5 minutes')
                 RETURNING a.id, a.name, a.ip_addresses, u.was_stale",
            )
            .bind(ids)
            .bind(lasts)
            .fetch_all(&mut *tx)
            .await?;
            for r in returned {
                if !r.try_get::<bool, _>("was_stale")? {
                    continue;
                }
                let id: Uuid = r.try_get("id")?;
                let name: String = r.try_get("name")?;
                let ips: Vec<IpNetwork> = r.try_get("ip_addresses")?;
                let ips: Vec<String> = ips.iter().map(|n| n.ip().to_string()).collect();
                changes.push(Change {
                    kind: "new_asset",
                    entity_type: "asset",
                    entity_id: id,
                    before: Some(serde_json::json!({"id": id, "stale": true})),
                    after: serde_json::json!({
                        "id": id, "name": name, "ip_addresses": ips, "stale": false,
                    }),
                    scope: None,
                    port: None,
                    title: format!("Asset {name} is back"),
                });
            }
        }

        mark("flow_stats", &mut phases);
        // 3b. Reverse-DNS names that arrived for assets created earlier.
        let named = self.apply_names(&mut tx, &mut changes).await?;
        // 3b'. What the exporters said over SNMP.
        let devices_version = self.write_exporters(&mut tx).await?;
        // 3c. What the inventories say these assets are (and, when asked, assets for
        // what they list that no flow has shown).
        let read_version = self.inventory.as_ref().map_or(0, |i| i.version());
        let created_all = self
            .create_from_inventory(&mut tx, &mut asset_of, &mut changes)
            .await?;
        let (detached, kept) = self.detach_moved_addresses(&mut tx, &asset_of).await?;
        for ip in &detached {
            asset_of.remove(ip);
        }
        // Neither kind describes its asset as the workload that has it now.
        let skip: Vec<IpAddr> = detached.iter().chain(&kept).copied().collect();
        let (described, mut complete) = self
            .apply_inventory(&mut tx, &asset_of, &skip, &mut changes)
            .await?;
        complete &= created_all;
        // Not all written (bounded per flush): the next flush carries on.
        let inventory_version = if complete {
            read_version
        } else {
            self.inventory_applied
        };

        // 4. Change events and alerts.
        let (events, alerts) = record_changes(&mut tx, &changes, &self.settings.alerts).await?;

        mark("changes", &mut phases);
        // 5. Raw flows: rows PostgreSQL refuses are set aside, not the flush.
        let mut raw_rejected = 0;
        if !self.raw.is_empty() {
            raw_rejected = write_raw(&mut tx, &self.raw).await?;
        }
        let raw_rows = self.raw.len() as u64 - raw_rejected;
        mark("raw", &mut phases);
        let listeners: Vec<_> = self.listeners.iter().copied().collect();
        if !listeners.is_empty() {
            sqlx::query(
                "INSERT INTO service_endpoints AS e (ip, protocol, port)
                 SELECT * FROM unnest($1::inet[], $2::int2[], $3::int4[])
                 ON CONFLICT (ip, protocol, port) DO UPDATE SET last_seen = now()",
            )
            .bind(listeners.iter().map(|e| net(e.ip)).collect::<Vec<_>>())
            .bind(
                listeners
                    .iter()
                    .map(|e| i16::from(e.protocol))
                    .collect::<Vec<_>>(),
            )
            .bind(
                listeners
                    .iter()
                    .map(|e| i32::from(e.port))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
        }
        positions::write(&mut tx, &self.positions).await?;
        let id = Uuid::new_v4();
        sqlx::query("INSERT INTO graph_flushes (id) VALUES ($1)")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let staged = Staged {
            dependencies_created: changes
                .iter()
                .filter(|c| c.kind == "new_dependency" && c.before.is_none())
                .count() as u64,
            to_create,
            asset_of,
            ready: ready.iter().map(|(k, _, _)| *k).collect(),
            raw_rows,
            raw_rejected,
            events,
            alerts,
            named,
            described,
            detached,
            inventory_version,
            devices_version,
            written: write
                .iter()
                .map(|(dk, _)| *dk)
                .chain(dropped)
                .chain(refused_deps.iter().copied())
                .collect(),
            refused: [
                ("assets", refused_assets as u64),
                ("dependencies", refused_deps.len() as u64),
                ("flow_stats", refused_stats as u64),
            ],
            suppressed_flows,
            listeners,
            still_pending,
            positions: self.positions.clone(),
            now_ms,
        };
        let (edges, assets, dependencies) = (ready.len(), staged.to_create.len(), write.len());
        // In doubt from the moment COMMIT is sent until its answer is read: a lost
        // reply, an error or the flush timeout leave it so, for the next flush to settle.
        self.in_doubt = Some(InDoubt { id, staged });
        if let Err(e) = tx.commit().await {
            self.counters.flushes_in_doubt += 1;
            return Err(e);
        }
        self.conn = Some(conn);
        mark("commit", &mut phases);
        tracing::debug!(edges, assets, dependencies, ?phases, "graph flush");
        if let Some(doubt) = self.in_doubt.take() {
            self.apply(doubt.staged);
        }
        Ok(())
    }

    /// A committed flush: the memory follows what is now in PostgreSQL.
    fn apply(&mut self, s: Staged) {
        self.counters.assets_created += s
            .to_create
            .iter()
            .filter(|ip| s.asset_of.contains_key(*ip))
            .count() as u64;
        self.counters.dependencies_created += s.dependencies_created;
        self.counters.flow_stats_rows += s.ready.len() as u64;
        self.counters.raw_rows += s.raw_rows;
        self.counters.raw_rows_rejected += s.raw_rejected;
        self.counters.change_events += s.events;
        self.counters.alerts += s.alerts;
        self.counters.flows_suppressed += s.suppressed_flows;
        for (table, n) in s.refused {
            *self.counters.rows_refused.entry(table).or_default() += n;
        }
        for e in &s.listeners {
            self.listeners.remove(e);
        }
        self.raw.clear();
        for ip in s.asset_of.keys() {
            self.pending_ip_flows.remove(ip);
        }
        for ip in &s.named {
            self.awaiting_name.remove(ip);
        }
        self.described.extend(s.described.iter().copied());
        self.described.retain(|_, fingerprint| *fingerprint != 0);
        self.inventory_applied = s.inventory_version;
        self.devices_applied = s.devices_version;
        if let Some(rdns) = &self.rdns {
            for ip in &s.to_create {
                if let Some(id) = s.asset_of.get(ip)
                    && self.awaiting_name.len() < MAX_AWAITING_NAMES
                {
                    rdns.request(*ip);
                    self.awaiting_name.insert(*ip, *id);
                }
            }
        }
        self.asset_of.extend(s.asset_of);
        for ip in &s.detached {
            self.asset_of.remove(ip);
        }
        for key in &s.ready {
            self.held.remove(key);
        }
        for dk in &s.written {
            self.pending_deps.remove(dk);
        }
        self.pending_deps.extend(s.still_pending);
        // Positions added since the flush was staged are later ones: kept for the next.
        self.positions
            .retain(|k, v| s.positions.get(k).is_none_or(|written| *v > *written));
        if let Some(d) = &self.durable {
            d.extend(&s.positions);
        }
        self.expire_waiting(s.now_ms);
    }

    /// Whether any dependency is suppressed at all (most graphs: none), so the join
    /// against every key of the flush is skipped.
    async fn any_suppressed(
        &self,
        tx: &mut Transaction<'_, Postgres>,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM dependency_suppressions)")
            .fetch_one(&mut **tx)
            .await
    }

    /// Forgets cached ids of assets deleted since the last look (`deleted_assets`, filled
    /// by a trigger whoever deletes), so that no row of this flush refers to one: the
    /// address becomes an asset again (a new one) if its flows carry on.
    async fn forget_deleted_assets(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
    ) -> Result<(), sqlx::Error> {
        let Some(seq) = self.deleted_seq else {
            // First flush: nothing is cached yet; start from here.
            let max: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM deleted_assets")
                .fetch_one(&mut **tx)
                .await?;
            self.deleted_seq = Some(max);
            return Ok(());
        };
        let rows: Vec<(i64, Uuid)> =
            sqlx::query_as("SELECT seq, asset_id FROM deleted_assets WHERE seq > $1 ORDER BY seq")
                .bind(seq)
                .fetch_all(&mut **tx)
                .await?;
        let Some(last) = rows.last().map(|r| r.0) else {
            return Ok(());
        };
        let gone: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.1).collect();
        let mut forgotten = std::collections::HashSet::new();
        self.asset_of.retain(|ip, id| {
            let keep = !gone.contains(id);
            if !keep {
                forgotten.insert(*ip);
            }
            keep
        });
        self.counters.deleted_assets_forgotten += forgotten.len() as u64;
        // Their held flows count toward the address becoming an asset again (they were
        // not counted while it had one).
        for (k, st) in &self.held {
            for ip in [k.client, k.server] {
                if forgotten.contains(&ip) {
                    *self.pending_ip_flows.entry(ip).or_default() += st.flows;
                }
            }
        }
        self.pending_deps
            .retain(|dk, _| !gone.contains(&dk.source) && !gone.contains(&dk.target));
        self.awaiting_name.retain(|_, id| !gone.contains(id));
        self.described.retain(|id, _| !gone.contains(id));
        self.deleted_seq = Some(last);
        Ok(())
    }

    /// Sets `fqdn` (and `name`, while it is still the bare address) of assets whose
    /// reverse-DNS answer has come, recording an `asset_changed` event for each.
    /// Returns the addresses settled (named, or known to have no name).
    async fn apply_names(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<IpAddr>, sqlx::Error> {
        let Some(rdns) = &self.rdns else {
            return Ok(Vec::new());
        };
        let mut settled = Vec::new();
        let (mut ids, mut names) = (Vec::new(), Vec::new());
        let mut retries = 0;
        for (ip, id) in &self.awaiting_name {
            match rdns.cached(*ip) {
                Some(Some(name)) => {
                    settled.push(*ip);
                    ids.push(*id);
                    names.push(name);
                }
                Some(None) => settled.push(*ip),
                // Not answered: in flight, or dropped because every slot was busy (a
                // large first flush). Ask again; a lookup in flight is not doubled.
                None if retries < MAX_NAME_RETRIES_PER_FLUSH => {
                    rdns.request(*ip);
                    retries += 1;
                }
                None => {}
            }
        }
        if !settled.is_empty() {
            // Named or known to have no name: checked, not queued again for a week.
            let checked: Vec<Uuid> = settled
                .iter()
                .filter_map(|ip| self.awaiting_name.get(ip).copied())
                .collect();
            sqlx::query("UPDATE assets SET rdns_checked_at = now() WHERE id = ANY($1::uuid[])")
                .bind(checked)
                .execute(&mut **tx)
                .await?;
        }
        if ids.is_empty() {
            return Ok(settled);
        }
        let rows = sqlx::query(
            "WITH old AS (SELECT id, name, fqdn FROM assets WHERE id = ANY($1::uuid[]))
             UPDATE assets a SET fqdn = u.name,
                    name = CASE WHEN a.name = host(a.ip_addresses[1]) THEN u.name ELSE a.name END,
                    updated_at = now()
             FROM unnest($1::uuid[], $2::text[]) AS u(id, name), old
             WHERE a.id = u.id AND old.id = u.id AND a.fqdn IS DISTINCT FROM u.name
             RETURNING a.id, old.name AS old_name, old.fqdn AS old_fqdn, a.name, a.fqdn",
        )
        .bind(&ids)
        .bind(&names)
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let id: Uuid = r.try_get("id")?;
            let name: Option<String> = r.try_get("name")?;
            let fqdn: Option<String> = r.try_get("fqdn")?;
            changes.push(Change {
                kind: "asset_changed",
                entity_type: "asset",
                entity_id: id,
                before: Some(serde_json::json!({
                    "name": r.try_get::<Option<String>, _>("old_name")?,
                    "fqdn": r.try_get::<Option<String>, _>("old_fqdn")?,
                })),
                after: serde_json::json!({"name": name, "fqdn": fqdn}),
                scope: None,
                port: None,
                title: format!("Asset named {}", fqdn.clone().unwrap_or_default()),
            });
        }
        Ok(settled)
    }

    /// Writes what the inventories say about the assets this writer knows (and those
    /// this flush creates, `fresh`): cloud provider, account, region, zone, the
    /// instance, NIC or pod, its type, network, Kubernetes workload, and the cloud's
    /// tags under `tags.cloud`. The name becomes the inventory's while it is still the
    /// address, the reverse-DNS name or the inventory's previous name: a name a person
    /// set is never overwritten. Each asset whose identity changed gets an
    /// `asset_changed` event saying from what to what. Items already written (same
    /// fingerprint) are skipped.
    async fn apply_inventory(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        fresh: &HashMap<IpAddr, Uuid>,
        detached: &[IpAddr],
        changes: &mut Vec<Change>,
    ) -> Result<(Vec<(Uuid, u64)>, bool), sqlx::Error> {
        let Some(inventory) = &self.inventory else {
            return Ok((Vec::new(), true));
        };
        let map = inventory.current();
        // One item per asset, the lowest address's, whatever order the map iterates
        // in: an asset with several addresses must not flip between their items.
        let mut chosen: HashMap<Uuid, (IpAddr, &crate::inventory::Entry)> = HashMap::new();
        for (ip, entry) in map.iter() {
            if detached.contains(ip) {
                continue;
            }
            let Some(id) = self.asset_of.get(ip).or_else(|| fresh.get(ip)) else {
                continue;
            };
            chosen
                .entry(*id)
                .and_modify(|(low, e)| {
                    if ip < low {
                        *low = *ip;
                        *e = entry;
                    }
                })
                .or_insert((*ip, entry));
        }
        let mut pending: Vec<(Uuid, u64, &crate::inventory::Item)> = chosen
            .into_iter()
            .filter(|(id, (_, e))| self.described.get(id) != Some(&e.fingerprint))
            .map(|(id, (_, e))| (id, e.fingerprint, &e.item))
            .collect();
        // Bounded per flush (the first description after a start is every asset): the
        // rest goes in the next flushes.
        let mut complete = pending.len() <= MAX_DESCRIBED_PER_FLUSH;
        pending.sort_unstable_by_key(|(id, _, _)| *id);
        pending.truncate(MAX_DESCRIBED_PER_FLUSH);
        // A new publication: identities whose addresses left every inventory are
        // cleared (a pod deleted, an instance terminated), once every provider has
        // installed a snapshot.
        // Cleared assets are forgotten as described (fingerprint 0): the same item
        // coming back must be written again.
        let mut described: Vec<(Uuid, u64)> = Vec::new();
        let live = inventory.live();
        if inventory.version() != self.inventory_applied && !live.is_empty() {
            let (all, cleared) = self.clear_departed(tx, &map, &live, changes).await?;
            complete &= all;
            described.extend(cleared.into_iter().map(|id| (id, 0)));
        }
        if pending.is_empty() {
            return Ok((described, complete));
        }
        let rows: HashMap<Uuid, (u64, &crate::inventory::Item)> = pending
            .into_iter()
            .map(|(id, fp, item)| (id, (fp, item)))
            .collect();
        let mut ids = Vec::with_capacity(rows.len());
        let mut cols: [Vec<Option<String>>; 13] = Default::default();
        let mut tags = Vec::with_capacity(rows.len());
        for (id, (fp, it)) in &rows {
            ids.push(*id);
            described.push((*id, *fp));
            for (col, v) in cols.iter_mut().zip([
                Some(&it.provider),
                it.region.as_ref(),
                Some(&it.id),
                it.account.as_ref(),
                it.zone.as_ref(),
                it.instance_type.as_ref(),
                it.vpc.as_ref(),
                it.subnet.as_ref(),
                it.cluster.as_ref(),
                it.namespace.as_ref(),
                it.workload_kind.as_ref(),
                it.workload.as_ref(),
                it.name.as_ref(),
            ]) {
                col.push(v.cloned());
            }
            tags.push(serde_json::to_string(&it.tags).unwrap_or_else(|_| "{}".to_owned()));
        }
        let [
            provider,
            region,
            instance,
            account,
            zone,
            itype,
            vpc,
            subnet,
            cluster,
            namespace,
            wkind,
            workload,
            name,
        ] = cols;
        let returned = sqlx::query(
            "WITH u AS (
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                   $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                   $12::text[], $13::text[], $14::text[], $15::text[])
                 AS u(id, provider, region, instance, account, zone, itype, vpc, subnet,
                      cluster, namespace, wkind, workload, name, tags)),
             old AS (SELECT a.*, CASE WHEN jsonb_typeof(a.tags) = 'object' THEN a.tags
                                      ELSE '{}'::jsonb END AS obj_tags
                     FROM assets a JOIN u ON u.id = a.id)
             UPDATE assets a SET
                 cloud_provider = u.provider, cloud_region = u.region,
                 cloud_instance_id = u.instance, cloud_account = u.account,
                 cloud_zone = u.zone, instance_type = u.itype, vpc = u.vpc,
                 subnet = u.subnet, cluster = u.cluster, namespace = u.namespace,
                 workload_kind = u.wkind, workload = u.workload,
                 name = CASE WHEN u.name IS NOT NULL AND (a.name IS NULL
                                OR a.name = host(a.ip_addresses[1]) OR a.name = a.fqdn
                                OR a.name = a.inventory_name)
                             THEN u.name ELSE a.name END,
                 inventory_name = u.name,
                 -- tags.cloud is the inventory's; tags that are not an object (set
                 -- by hand) are replaced rather than failing the flush.
                 tags = CASE WHEN u.tags = '{}' THEN old.obj_tags - 'cloud'
                             ELSE jsonb_set(old.obj_tags, '{cloud}', u.tags::jsonb) END,
                 inventory_seen_at = now(), updated_at = now(),
                 -- An asset the inventory made is back with its item.
                 stale = a.stale AND a.discovery_source <> 'cloud_api'
             FROM u, old
             WHERE a.id = u.id AND old.id = u.id
               AND (a.cloud_provider, a.cloud_region, a.cloud_instance_id, a.cloud_account,
                    a.cloud_zone, a.instance_type, a.vpc, a.subnet, a.cluster, a.namespace,
                    a.workload_kind, a.workload, a.inventory_name, old.obj_tags -> 'cloud')
                   IS DISTINCT FROM
                   (u.provider, u.region, u.instance, u.account, u.zone, u.itype, u.vpc,
                    u.subnet, u.cluster, u.namespace, u.wkind, u.workload, u.name,
                    CASE WHEN u.tags = '{}' THEN NULL ELSE u.tags::jsonb END)
             RETURNING a.id,
                 jsonb_build_object('name', old.name, 'cloud_provider', old.cloud_provider,
                   'cloud_region', old.cloud_region, 'cloud_instance_id', old.cloud_instance_id,
                   'cloud_account', old.cloud_account, 'cloud_zone', old.cloud_zone,
                   'instance_type', old.instance_type, 'vpc', old.vpc, 'subnet', old.subnet,
                   'cluster', old.cluster, 'namespace', old.namespace,
                   'workload_kind', old.workload_kind, 'workload', old.workload,
                   'cloud_tags', old.tags -> 'cloud') AS before,
                 jsonb_build_object('name', a.name, 'cloud_provider', a.cloud_provider,
                   'cloud_region', a.cloud_region, 'cloud_instance_id', a.cloud_instance_id,
                   'cloud_account', a.cloud_account, 'cloud_zone', a.cloud_zone,
                   'instance_type', a.instance_type, 'vpc', a.vpc, 'subnet', a.subnet,
                   'cluster', a.cluster, 'namespace', a.namespace,
                   'workload_kind', a.workload_kind, 'workload', a.workload,
                   'cloud_tags', a.tags -> 'cloud') AS after",
        )
        .bind(&ids)
        .bind(&provider)
        .bind(&region)
        .bind(&instance)
        .bind(&account)
        .bind(&zone)
        .bind(&itype)
        .bind(&vpc)
        .bind(&subnet)
        .bind(&cluster)
        .bind(&namespace)
        .bind(&wkind)
        .bind(&workload)
        .bind(&name)
        .bind(&tags)
        .fetch_all(&mut **tx)
        .await?;
        for r in returned {
            let id: Uuid = r.try_get("id")?;
            let before: serde_json::Value = r.try_get("before")?;
            let after: serde_json::Value = r.try_get("after")?;
            // Only what changed, on both sides.
            let (mut b, mut a) = (serde_json::Map::new(), serde_json::Map::new());
            if let (Some(bo), Some(ao)) = (before.as_object(), after.as_object()) {
                for (k, v) in ao {
                    let old = bo.get(k).cloned().unwrap_or(serde_json::Value::Null);
                    if old != *v {
                        b.insert(k.clone(), old);
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
            if a.is_empty() {
                continue;
            }
            let label = after["name"].as_str().unwrap_or_default().to_owned();
            changes.push(Change {
                kind: "asset_changed",
                entity_type: "asset",
                entity_id: id,
                before: Some(serde_json::Value::Object(b)),
                after: serde_json::Value::Object(a),
                scope: None,
                port: None,
                title: format!("Asset {label} described by its inventory"),
            });
        }
        Ok((described, complete))
    }

    /// Takes out of `to_create` the addresses whose inventory item is a workload
    /// (pods grouped by workload). Those of a workload with an asset join it now (in
    /// `asset_of`); of the others, each workload's lowest address stays in
    /// `to_create` and the rest are returned with it, to join the asset it makes.
    async fn join_workloads(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        to_create: &mut Vec<IpAddr>,
        asset_of: &mut HashMap<IpAddr, Uuid>,
    ) -> Result<Vec<(IpAddr, Vec<IpAddr>)>, sqlx::Error> {
        let Some(inventory) = &self.inventory else {
            return Ok(Vec::new());
        };
        let map = inventory.current();
        let workload = |ip: &IpAddr| {
            map.get(ip)
                .filter(|e| e.item.provider == "kubernetes" && e.item.kind == "workload")
                .map(|e| {
                    (
                        e.item.cluster.clone().unwrap_or_default(),
                        e.item.id.clone(),
                    )
                })
        };
        let mut groups: std::collections::BTreeMap<(String, String), Vec<IpAddr>> =
            std::collections::BTreeMap::new();
        to_create.retain(|ip| match workload(ip) {
            Some(key) => {
                groups.entry(key).or_default().push(*ip);
                false
            }
            None => true,
        });
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = groups.keys().map(|(_, id)| id.clone()).collect();
        let existing: HashMap<(String, String), Uuid> = sqlx::query(
            "SELECT id, coalesce(cluster, '') AS cluster, cloud_instance_id FROM assets
             WHERE cloud_provider = 'kubernetes' AND cloud_instance_id = ANY($1::text[])",
        )
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|r| {
            Ok((
                (r.try_get("cluster")?, r.try_get("cloud_instance_id")?),
                r.try_get("id")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()?;
        let mut later = Vec::new();
        for (key, mut ips) in groups {
            ips.sort_unstable();
            if let Some(id) = existing.get(&key) {
                add_addresses(tx, *id, &ips).await?;
                for ip in ips {
                    asset_of.insert(ip, *id);
                }
            } else {
                let first = ips.remove(0);
                to_create.push(first);
                later.push((first, ips));
            }
        }
        Ok(later)
    }

    /// At a new publication, takes off each workload's asset the addresses another
    /// workload has now (its pod ended, another got the address): otherwise the
    /// asset would be described as the other workload, or count its flows. A taken
    /// address joins its new workload's asset when flows show it again. An asset's
    /// last address stays (its workload is gone; its description is cleared when the
    /// address leaves the inventory).
    async fn detach_moved_addresses(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        fresh: &HashMap<IpAddr, Uuid>,
    ) -> Result<(Vec<IpAddr>, Vec<IpAddr>), sqlx::Error> {
        let Some(inventory) = &self.inventory else {
            return Ok((Vec::new(), Vec::new()));
        };
        if inventory.version() == self.inventory_applied {
            return Ok((Vec::new(), Vec::new()));
        }
        let map = inventory.current();
        let mut on_asset: HashMap<Uuid, Vec<(IpAddr, &str)>> = HashMap::new();
        for (ip, e) in map.iter() {
            if e.item.provider != "kubernetes" {
                continue;
            }
            if let Some(id) = self.asset_of.get(ip).or_else(|| fresh.get(ip)) {
                on_asset
                    .entry(*id)
                    .or_default()
                    .push((*ip, e.item.id.as_str()));
            }
        }
        if on_asset.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let ids: Vec<Uuid> = on_asset.keys().copied().collect();
        // Workload assets: their instance id is `<namespace>/<kind>/<name>`.
        let workloads: Vec<(Uuid, String, i32)> = sqlx::query_as(
            "SELECT id, cloud_instance_id, cardinality(ip_addresses) FROM assets
             WHERE id = ANY($1::uuid[]) AND cloud_provider = 'kubernetes'
               AND cloud_instance_id LIKE '%/%/%'",
        )
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
        let mut detached = Vec::new();
        let mut kept = Vec::new();
        for (id, workload, count) in workloads {
            let moved: Vec<IpAddr> = on_asset
                .get(&id)
                .into_iter()
                .flatten()
                .filter(|(_, item)| *item != workload)
                .map(|(ip, _)| *ip)
                .collect();
            if moved.is_empty() {
                continue;
            }
            if usize::try_from(count).unwrap_or(0) <= moved.len() {
                // Its last addresses: they stay (an asset has one), but the asset is
                // not described as the workload that has them now.
                kept.extend(moved);
                continue;
            }
            sqlx::query(
                "UPDATE assets SET ip_addresses = (SELECT coalesce(array_agg(a ORDER BY o),
                                                            '{}')
                     FROM unnest(ip_addresses) WITH ORDINALITY AS x(a, o)
                     WHERE NOT a = ANY($2::inet[])), updated_at = now()
                 WHERE id = $1",
            )
            .bind(id)
            .bind(moved.iter().map(|ip| net(*ip)).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
            detached.extend(moved);
        }
        Ok((detached, kept))
    }

    /// Adds the addresses [`Self::join_workloads`] set aside to the assets their
    /// workload's first address just became.
    async fn attach_to_workloads(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        joining: Vec<(IpAddr, Vec<IpAddr>)>,
        asset_of: &mut HashMap<IpAddr, Uuid>,
    ) -> Result<(), sqlx::Error> {
        for (first, rest) in joining {
            let Some(id) = asset_of.get(&first).copied() else {
                continue;
            };
            if rest.is_empty() {
                continue;
            }
            add_addresses(tx, id, &rest).await?;
            for ip in rest {
                asset_of.insert(ip, id);
            }
        }
        Ok(())
    }

    /// Creates an asset (`discovery_source: cloud_api`, all of the item's addresses)
    /// for each inventory item none of whose addresses is an asset yet, at a new
    /// publication, when `enrichment.cloud.create_assets` is on. Pods are left to the
    /// flows. At most [`MAX_DESCRIBED_PER_FLUSH`] a flush (the rest at the next
    /// publication); each is a `new_asset` event. The new assets join `fresh`, so
    /// this flush describes them.
    async fn create_from_inventory(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        fresh: &mut HashMap<IpAddr, Uuid>,
        changes: &mut Vec<Change>,
    ) -> Result<bool, sqlx::Error> {
        let Some(inventory) = &self.inventory else {
            return Ok(true);
        };
        if !inventory.creates_assets() || inventory.version() == self.inventory_applied {
            return Ok(true);
        }
        let map = inventory.current();
        // Each item's addresses, and whether one of them is an asset already.
        let mut items: std::collections::BTreeMap<
            (&str, &str),
            (Vec<IpAddr>, &crate::inventory::Item, bool),
        > = std::collections::BTreeMap::new();
        for (ip, e) in map.iter() {
            let it = &e.item;
            if it.provider == "kubernetes" && matches!(it.kind.as_str(), "pod" | "workload") {
                continue;
            }
            let known = self.asset_of.contains_key(ip) || fresh.contains_key(ip);
            let entry = items
                .entry((it.provider.as_str(), it.id.as_str()))
                .or_insert_with(|| (Vec::new(), it, false));
            entry.0.push(*ip);
            entry.2 |= known;
        }
        let candidates: Vec<IpAddr> = items
            .values()
            .filter(|(_, _, known)| !known)
            .flat_map(|(ips, _, _)| ips.iter().copied())
            .collect();
        if candidates.is_empty() {
            return Ok(true);
        }
        let taken: std::collections::HashSet<IpAddr> = sqlx::query_scalar::<_, IpNetwork>(
            "SELECT ip FROM asset_addresses WHERE ip = ANY($1::inet[])",
        )
        .bind(candidates.iter().map(|ip| net(*ip)).collect::<Vec<_>>())
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|n| n.ip())
        .collect();
        let mut names = Vec::new();
        let mut types = Vec::new();
        let mut addresses = Vec::new();
        let mut internal = Vec::new();
        let mut all = true;
        for (mut ips, item, known) in items.into_values() {
            if known || ips.iter().any(|ip| taken.contains(ip)) {
                continue;
            }
            if names.len() >= MAX_DESCRIBED_PER_FLUSH {
                // The rest at the next flush (the version is not marked applied).
                all = false;
                break;
            }
            ips.sort_unstable();
            ips.truncate(16);
            let lowest = ips[0];
            names.push(item.name.clone().unwrap_or_else(|| lowest.to_string()));
            types.push(match item.kind.as_str() {
                "instance" | "node" => "vm",
                "load_balancer" | "nat_gateway" | "transit_gateway" | "vpc_endpoint" => {
                    "network_device"
                }
                _ => "unknown",
            });
            // One text per asset: `{a,b}`, an inet[] literal (addresses print safely).
            addresses.push(format!(
                "{{{}}}",
                ips.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ));
            internal.push(self.settings.classifier.is_internal(lowest));
        }
        if names.is_empty() {
            return Ok(all);
        }
        // Under a savepoint: another daemon creating the same asset at the same time
        // makes PostgreSQL refuse the address; that is not this flush's failure.
        let mut savepoint = sqlx::Connection::begin(&mut **tx).await?;
        let inserted = sqlx::query(
            "INSERT INTO assets (name, asset_type, ip_addresses, first_seen, last_seen,
                                 discovery_source, confidence, is_internal)
             SELECT n, t, a::inet[], now(), now(), 'cloud_api', 0.9, i
             FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[]) AS u(n, t, a, i)
             RETURNING id, name, asset_type, ip_addresses, is_internal",
        )
        .bind(&names)
        .bind(&types)
        .bind(&addresses)
        .bind(&internal)
        .fetch_all(&mut *savepoint)
        .await;
        let rows = match inserted {
            Ok(rows) => {
                savepoint.commit().await?;
                rows
            }
            Err(e) if is_data_error(&e) => {
                savepoint.rollback().await?;
                tracing::debug!(error = %e, "assets from the inventory: left for the next flush");
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        for r in rows {
            let id: Uuid = r.try_get("id")?;
            let name: String = r.try_get("name")?;
            let kind: String = r.try_get("asset_type")?;
            let ips: Vec<IpNetwork> = r.try_get("ip_addresses")?;
            let is_internal: Option<bool> = r.try_get("is_internal")?;
            for ip in &ips {
                fresh.insert(ip.ip(), id);
            }
            changes.push(Change {
                kind: "new_asset",
                entity_type: "asset",
                entity_id: id,
                before: None,
                after: serde_json::json!({
                    "id": id, "name": name, "asset_type": kind,
                    "ip_addresses": ips.iter().map(|n| n.ip().to_string()).collect::<Vec<_>>(),
                    "is_internal": is_internal, "discovery_source": "cloud_api",
                }),
                scope: None,
                port: None,
                title: format!("New asset {name} (from its inventory)"),
            });
        }
        Ok(all)
    }

    /// Writes the exporters' SNMP answers to `exporters` when they changed since the
    /// last landed flush (one row an exporter: a few thousand at most). The version
    /// written.
    async fn write_exporters(
        &self,
        tx: &mut Transaction<'_, Postgres>,
    ) -> Result<u64, sqlx::Error> {
        let Some(devices) = &self.devices else {
            return Ok(0);
        };
        let version = devices.version();
        if version == self.devices_applied {
            return Ok(version);
        }
        let map = devices.current();
        let mut ips = Vec::with_capacity(map.len());
        let mut names = Vec::with_capacity(map.len());
        let mut interfaces = Vec::with_capacity(map.len());
        let mut polled = Vec::with_capacity(map.len());
        for (ip, d) in map.iter() {
            ips.push(net(*ip));
            names.push(d.sys_name.clone());
            interfaces.push(serde_json::to_string(&d.interfaces).unwrap_or_else(|_| "{}".into()));
            polled.push(d.polled_at);
        }
        sqlx::query(
            "INSERT INTO exporters (exporter_ip, sys_name, interfaces, polled_at)
             SELECT ip, name, ifs::jsonb, polled
             FROM unnest($1::inet[], $2::text[], $3::text[], $4::timestamptz[])
               AS u(ip, name, ifs, polled)
             ON CONFLICT (exporter_ip) DO UPDATE SET
                 sys_name = excluded.sys_name, interfaces = excluded.interfaces,
                 polled_at = excluded.polled_at, updated_at = now()
             WHERE (exporters.sys_name, exporters.interfaces, exporters.polled_at)
                   IS DISTINCT FROM (excluded.sys_name, excluded.interfaces, excluded.polled_at)",
        )
        .bind(&ips)
        .bind(&names)
        .bind(&interfaces)
        .bind(&polled)
        .execute(&mut **tx)
        .await?;
        Ok(version)
    }

    /// Clears the inventory's description from assets none of whose addresses any
    /// inventory holds now: the cloud and Kubernetes columns, `tags.cloud`, and the
    /// name when it was the inventory's (it goes back to the reverse-DNS name or the
    /// address, so that the next item for the address names the asset again). Each
    /// is an `asset_changed` event. At most [`MAX_DESCRIBED_PER_FLUSH`] a flush;
    /// whether all were cleared.
    async fn clear_departed(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        map: &crate::inventory::Map,
        providers: &[String],
        changes: &mut Vec<Change>,
    ) -> Result<(bool, Vec<Uuid>), sqlx::Error> {
        let live: Vec<IpNetwork> = map.keys().map(|ip| IpNetwork::from(*ip)).collect();
        // Kubernetes assets of other clusters (another daemon's) are not ours to clear.
        let clusters: Vec<String> = map
            .values()
            .filter(|e| e.item.provider == "kubernetes")
            .filter_map(|e| e.item.cluster.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let limit = i64::try_from(MAX_DESCRIBED_PER_FLUSH).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "WITH live AS (
               SELECT DISTINCT aa.asset_id FROM asset_addresses aa
               JOIN unnest($1::inet[]) AS m(ip) ON aa.ip = m.ip),
             gone AS (
               SELECT a.id FROM assets a
               WHERE a.inventory_seen_at IS NOT NULL AND a.cloud_provider = ANY($3::text[])
                 AND (a.cloud_provider <> 'kubernetes' OR a.cluster = ANY($4::text[]))
                 -- A workload's asset (pods grouped) keeps its identity while its pods
                 -- come and go: a CronJob between runs, a rollout, a scale to zero.
                 AND NOT (a.cloud_provider = 'kubernetes' AND a.cloud_instance_id LIKE '%/%/%')
                 AND NOT EXISTS (SELECT 1 FROM live WHERE live.asset_id = a.id)
               ORDER BY a.id LIMIT $2 FOR UPDATE SKIP LOCKED),
             old AS (SELECT a.* FROM assets a JOIN gone ON gone.id = a.id)
             UPDATE assets a SET
                 cloud_provider = NULL, cloud_region = NULL, cloud_instance_id = NULL,
                 cloud_account = NULL, cloud_zone = NULL, instance_type = NULL, vpc = NULL,
                 subnet = NULL, cluster = NULL, namespace = NULL, workload_kind = NULL,
                 workload = NULL,
                 name = CASE WHEN a.name = a.inventory_name
                             THEN coalesce(a.fqdn, host(a.ip_addresses[1])) ELSE a.name END,
                 inventory_name = NULL,
                 tags = CASE WHEN jsonb_typeof(a.tags) = 'object' THEN a.tags - 'cloud'
                             ELSE a.tags END,
                 -- An asset the inventory created is gone with it.
                 stale = a.stale OR a.discovery_source = 'cloud_api',
                 inventory_seen_at = now(), updated_at = now()
             FROM old
             WHERE a.id = old.id
             RETURNING a.id, a.name,
                 jsonb_strip_nulls(jsonb_build_object('name', old.name,
                   'cloud_provider', old.cloud_provider, 'cloud_region', old.cloud_region,
                   'cloud_instance_id', old.cloud_instance_id,
                   'cloud_account', old.cloud_account, 'cloud_zone', old.cloud_zone,
                   'instance_type', old.instance_type, 'vpc', old.vpc, 'subnet', old.subnet,
                   'cluster', old.cluster, 'namespace', old.namespace,
                   'workload_kind', old.workload_kind, 'workload', old.workload,
                   'cloud_tags', CASE WHEN jsonb_typeof(old.tags) = 'object'
                                      THEN old.tags -> 'cloud' END)) AS before",
        )
        .bind(&live)
        .bind(limit)
        .bind(providers)
        .bind(&clusters)
        .fetch_all(&mut **tx)
        .await?;
        let all = rows.len() < MAX_DESCRIBED_PER_FLUSH;
        let mut cleared = Vec::with_capacity(rows.len());
        for r in rows {
            let id: Uuid = r.try_get("id")?;
            cleared.push(id);
            let name: String = r.try_get("name")?;
            let before: serde_json::Value = r.try_get("before")?;
            // Only what changed: every field the inventory had set, now null, and
            // the name when it went back.
            let mut before = before;
            let mut after = serde_json::Map::new();
            if let Some(b) = before.as_object_mut() {
                if b.get("name").and_then(|v| v.as_str()) == Some(name.as_str()) {
                    b.remove("name");
                } else {
                    after.insert("name".into(), serde_json::Value::String(name.clone()));
                }
                for k in b.keys().filter(|k| *k != "name") {
                    after.insert(k.clone(), serde_json::Value::Null);
                }
            }
            changes.push(Change {
                kind: "asset_changed",
                entity_type: "asset",
                entity_id: id,
                before: Some(before),
                after: serde_json::Value::Object(after),
                scope: None,
                port: None,
                title: format!("Asset {name} no longer in any inventory"),
            });
        }
        Ok((all, cleared))
    }

    /// Gives up on edges that waited a day for an end to become an asset (it never
    /// carried enough flows), on dependencies pending as long, and bounds the flow
    /// counts of addresses that are not assets yet.
    fn expire_waiting(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(86_400_000);
        let before = self.held.len();
        self.held.retain(|k, _| k.window_start_ms >= horizon);
        self.counters.rows_without_asset += (before - self.held.len()) as u64;
        self.pending_deps.retain(|_, p| p.stats.last_ms >= horizon);
        // Addresses below the asset threshold (scanners, one-off external peers) must
        // not pile up: beyond the buffer bound, keep only those with edges still held.
        if self.pending_ip_flows.len() > self.settings.max_buffered_rows.max(1) {
            let live: std::collections::HashSet<IpAddr> = self
                .held
                .keys()
                .flat_map(|k| [k.client, k.server])
                .collect();
            self.pending_ip_flows.retain(|ip, _| live.contains(ip));
        }
    }

    /// First and last time each address was seen in the held edges.
    fn seen_range(&self, ips: &[IpAddr]) -> (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) {
        let mut range: HashMap<IpAddr, (u64, u64)> = HashMap::new();
        for (k, s) in &self.held {
            for ip in [k.client, k.server] {
                let e = range.entry(ip).or_insert((s.first_ms, s.last_ms));
                e.0 = e.0.min(s.first_ms);
                e.1 = e.1.max(s.last_ms);
            }
        }
        ips.iter()
            .map(|ip| {
                let (f, l) = range.get(ip).copied().unwrap_or((0, 0));
                (ts(f), ts(l))
            })
            .unzip()
    }

    /// Queues assets whose reverse name was never settled (created while lookups were
    /// off, dropped from a full queue, lost to a restart) or settled more than a week
    /// ago, up to [`MAX_NAME_REQUEUE`] at a time and the queue's bound. Returns how
    /// many were queued.
    pub async fn requeue_unnamed(&mut self) -> Result<usize, sqlx::Error> {
        let Some(rdns) = &self.rdns else {
            return Ok(0);
        };
        let room = MAX_AWAITING_NAMES
            .saturating_sub(self.awaiting_name.len())
            .min(MAX_NAME_REQUEUE);
        if room == 0 {
            return Ok(0);
        }
        let rows: Vec<(Uuid, IpNetwork)> = sqlx::query_as(
            "SELECT id, ip_addresses[1] FROM assets
             WHERE discovery_source = 'flow' AND ip_addresses[1] IS NOT NULL
               AND (rdns_checked_at IS NULL
                    OR rdns_checked_at < now() - make_interval(days => $1))
             ORDER BY rdns_checked_at NULLS FIRST LIMIT $2",
        )
        .bind(RDNS_RECHECK_DAYS)
        .bind(i64::try_from(room).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut queued = 0;
        for (id, ip) in rows {
            let ip = ip.ip();
            if self.awaiting_name.insert(ip, id).is_none() {
                rdns.request(ip);
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// Assets waiting for their reverse-DNS answer.
    pub fn awaiting_names(&self) -> usize {
        self.awaiting_name.len()
    }

    /// The reverse-DNS counters, when lookups are on.
    pub fn rdns_counters(&self) -> Option<crate::enrich::rdns::RdnsCounters> {
        self.rdns.as_ref().map(ReverseDns::counters)
    }

    /// Partition upkeep (see [`crate::store::maintain_partitions`]), on the same timer
    /// as [`Self::detect_stale`].
    pub async fn maintain_partitions(
        &self,
    ) -> Result<crate::store::PartitionUpkeep, crate::store::StoreError> {
        let upkeep = crate::store::maintain_partitions(
            &self.pool,
            self.settings.raw_retention_days,
            self.settings.stats_retention_days,
        )
        .await?;
        // Flush ids are needed only until a flush in doubt is settled (one flush after
        // the database answers again); a week is ample.
        sqlx::query("DELETE FROM graph_flushes WHERE committed_at < now() - interval '7 days'")
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM deleted_assets WHERE deleted_at < now() - interval '7 days'")
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM service_endpoints WHERE last_seen < now() - interval '30 days'")
            .execute(&self.pool)
            .await?;
        Ok(upkeep)
    }

    /// Marks assets and dependencies without traffic for `stale_after_hours` as
    /// stale, recording a removal change event (and its alerts) for each; also drops
    /// the address -> asset cache so it is re-read (every `check_interval_seconds`).
    pub async fn detect_stale(&mut self) -> Result<u64, sqlx::Error> {
        // Also the moment to refresh the address -> asset cache: assets an operator
        // edited or merged since are read again by the next flush.
        self.asset_of.clear();
        self.described.clear();
        let hours = i64_of(self.settings.resolution.dependencies.stale_after_hours);
        let mut tx = self.pool.begin().await?;
        let mut changes = Vec::new();
        let deps = sqlx::query(
            "UPDATE dependencies SET stale = true, updated_at = now()
             WHERE NOT stale AND last_seen < now() - make_interval(hours => $1::int)
               AND discovery_source <> 'manual'
             RETURNING id, source_asset_id, target_asset_id, protocol, port, last_seen,
                       inferred_service, is_internal",
        )
        .bind(i32::try_from(hours).unwrap_or(i32::MAX))
        .fetch_all(&mut *tx)
        .await?;
        for r in deps {
            let id: Uuid = r.try_get("id")?;
            let port: i32 = r.try_get("port")?;
            let last: DateTime<Utc> = r.try_get("last_seen")?;
            changes.push(Change {
                kind: "removed_dependency",
                entity_type: "dependency",
                entity_id: id,
                before: Some(serde_json::json!({
                    "id": id,
                    "source_asset_id": r.try_get::<Uuid, _>("source_asset_id")?,
                    "target_asset_id": r.try_get::<Uuid, _>("target_asset_id")?,
                    "protocol": r.try_get::<i16, _>("protocol")?,
                    "port": port,
                    "inferred_service": r.try_get::<Option<String>, _>("inferred_service")?,
                    "last_seen": last,
                })),
                after: serde_json::json!({"id": id, "stale": true}),
                scope: None,
                port: u16::try_from(port).ok(),
                title: format!("Dependency on port {port} silent since {last}"),
            });
        }
        let assets = sqlx::query(
            "UPDATE assets SET stale = true, updated_at = now()
             WHERE NOT stale AND discovery_source = 'flow'
               AND last_seen < now() - make_interval(hours => $1::int)
             RETURNING id, name, last_seen",
        )
        .bind(i32::try_from(hours).unwrap_or(i32::MAX))
        .fetch_all(&mut *tx)
        .await?;
        for r in assets {
            let id: Uuid = r.try_get("id")?;
            let name: Option<String> = r.try_get("name")?;
            let last: DateTime<Utc> = r.try_get("last_seen")?;
            changes.push(Change {
                kind: "removed_asset",
                entity_type: "asset",
                entity_id: id,
                before: Some(serde_json::json!({"id": id, "name": name, "last_seen": last})),
                after: serde_json::json!({"id": id, "stale": true}),
                scope: None,
                port: None,
                title: format!(
                    "Asset {} silent since {last}",
                    name.unwrap_or_else(|| id.to_string())
                ),
            });
        }
        let (events, alerts) = record_changes(&mut tx, &changes, &self.settings.alerts).await?;
        tx.commit().await?;
        self.counters.change_events += events;
        self.counters.alerts += alerts;
        Ok(events)
    }
}

/// Drops the oldest windows (and raw flows) beyond `max` rows; returns how many.
fn bound(held: &mut HashMap<EdgeKey, EdgeStats>, raw: &mut Vec<RawFlow>, max: usize) -> u64 {
    let mut dropped = 0;
    if held.len() > max {
        let mut keys: Vec<EdgeKey> = held.keys().copied().collect();
        keys.sort_unstable();
        let excess = held.len() - max;
        for k in keys.into_iter().take(excess) {
            held.remove(&k);
        }
        dropped += excess as u64;
    }
    if raw.len() > max {
        let excess = raw.len() - max;
        raw.drain(..excess);
        dropped += excess as u64;
    }
    dropped
}

/// Whether `e` says our asset cache is out of date: a foreign key to a deleted asset
/// (23503) or an address another asset took first (23505).
fn is_stale_cache_error(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .is_some_and(|c| c == "23503" || c == "23505")
}

/// Inserts the change events and the alerts their first matching rules raise.
async fn record_changes(
    tx: &mut Transaction<'_, Postgres>,
    changes: &[Change],
    alerts: &AlertsConfig,
) -> Result<(u64, u64), sqlx::Error> {
    if changes.is_empty() {
        return Ok((0, 0));
    }
    // Ids made here so that alerts can refer to their events without a round trip
    // per event (a new network is tens of thousands of events in one flush).
    let ids: Vec<Uuid> = changes.iter().map(|_| Uuid::new_v4()).collect();
    for (chunk_ids, chunk) in ids.chunks(10_000).zip(changes.chunks(10_000)) {
        sqlx::query(
            "INSERT INTO change_events (id, change_type, entity_type, entity_id, before_state,
                                        after_state)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::jsonb[],
                                  $6::jsonb[])",
        )
        .bind(chunk_ids)
        .bind(chunk.iter().map(|c| c.kind).collect::<Vec<_>>())
        .bind(chunk.iter().map(|c| c.entity_type).collect::<Vec<_>>())
        .bind(chunk.iter().map(|c| c.entity_id).collect::<Vec<_>>())
        .bind(chunk.iter().map(|c| c.before.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|c| c.after.clone()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    let raised: Vec<(Uuid, &Change, &AlertRule)> = ids
        .iter()
        .zip(changes)
        .filter_map(|(id, c)| Some((*id, c, alerts.rules.iter().find(|r| matches(r, c))?)))
        .collect();
    let n_alerts = raised.len() as u64;
    if n_alerts > 0 {
        sqlx::query(
            "INSERT INTO alerts (change_event_id, severity, title, description, rule_name)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])",
        )
        .bind(raised.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(
            raised
                .iter()
                .map(|r| r.2.severity.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            raised
                .iter()
                .map(|r| r.1.title.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            raised
                .iter()
                .map(|r| r.1.after.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(raised.iter().map(|r| r.2.name.as_str()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    Ok((changes.len() as u64, n_alerts))
}

fn matches(rule: &AlertRule, c: &Change) -> bool {
    rule.change_type == c.kind
        && rule.scope.is_none_or(|s| c.scope == Some(s))
        && rule.port.is_none_or(|p| c.port == Some(p))
}

impl DepKey {
    /// The key of a `dependencies` row (its `source_asset_id`, `target_asset_id`,
    /// `protocol` and `port` columns).
    fn from_row(r: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            source: r.try_get("source_asset_id")?,
            target: r.try_get("target_asset_id")?,
            protocol: u8::try_from(r.try_get::<i16, _>("protocol")?).unwrap_or(0),
            port: u16::try_from(r.try_get::<i32, _>("port")?).unwrap_or(0),
        })
    }
}

/// A dependency as it was before this flush.
struct Existing {
    id: Uuid,
    last_seen: DateTime<Utc>,
    stale: bool,
}

/// Dependency keys as the column arrays `unnest($1::uuid[], $2::uuid[], $3::int2[],
/// $4::int4[])` takes.
type KeyColumns = (Vec<Uuid>, Vec<Uuid>, Vec<i16>, Vec<i32>);

fn key_columns<'a>(keys: impl Iterator<Item = &'a DepKey>) -> KeyColumns {
    let mut c: KeyColumns = Default::default();
    for dk in keys {
        c.0.push(dk.source);
        c.1.push(dk.target);
        c.2.push(i16::from(dk.protocol));
        c.3.push(i32::from(dk.port));
    }
    c
}

/// Which of `keys` a person deleted (`dependency_suppressions`).
async fn suppressed_dependencies(
    tx: &mut Transaction<'_, Postgres>,
    keys: impl Iterator<Item = &DepKey>,
) -> Result<std::collections::HashSet<DepKey>, sqlx::Error> {
    rows_for_keys(
        tx,
        "SELECT x.source_asset_id, x.target_asset_id, x.protocol, x.port
         FROM dependency_suppressions x
         JOIN unnest($1::uuid[], $2::uuid[], $3::int2[], $4::int4[]) AS i(s, t, p, port)
           ON x.source_asset_id = i.s AND x.target_asset_id = i.t
          AND x.protocol = i.p AND x.port = i.port",
        keys,
    )
    .await?
    .iter()
    .map(DepKey::from_row)
    .collect()
}

/// Runs `sql`, which joins `unnest($1::uuid[], $2::uuid[], $3::int2[], $4::int4[])`,
/// with `keys` as those four arrays (no query when there are none).
async fn rows_for_keys(
    tx: &mut Transaction<'_, Postgres>,
    sql: &'static str,
    keys: impl Iterator<Item = &DepKey>,
) -> Result<Vec<PgRow>, sqlx::Error> {
    let (s, t, p, port) = key_columns(keys);
    if s.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query(sql)
        .bind(s)
        .bind(t)
        .bind(p)
        .bind(port)
        .fetch_all(&mut **tx)
        .await
}

/// Which of `keys` are dependencies already, and how they look (one query).
async fn existing_dependencies(
    tx: &mut Transaction<'_, Postgres>,
    keys: impl Iterator<Item = &DepKey>,
) -> Result<HashMap<DepKey, Existing>, sqlx::Error> {
    rows_for_keys(
        tx,
        "SELECT d.source_asset_id, d.target_asset_id, d.protocol, d.port, d.id,
                d.last_seen, d.stale
         FROM dependencies d
         JOIN unnest($1::uuid[], $2::uuid[], $3::int2[], $4::int4[]) AS i(s, t, p, port)
           ON d.source_asset_id = i.s AND d.target_asset_id = i.t
          AND d.protocol = i.p AND d.port = i.port",
        keys,
    )
    .await?
    .into_iter()
    .map(|r| {
        let existing = Existing {
            id: r.try_get("id")?,
            last_seen: r.try_get("last_seen")?,
            stale: r.try_get("stale")?,
        };
        Ok((DepKey::from_row(&r)?, existing))
    })
    .collect()
}

/// Whether PostgreSQL refused the data itself (SQLSTATE class 22, data exception, or
/// 23, integrity constraint violation), as opposed to the connection or the server.
fn is_data_error(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .is_some_and(|c| c.starts_with("22") || c.starts_with("23"))
}

/// Inserts raw flows in chunks of 10 000, each under a savepoint. A chunk PostgreSQL
/// refuses as data is halved until the rows it refuses are found; those are logged,
/// set aside and counted (returned), the rest are written. Only connection and server
/// errors fail the flush.
async fn write_raw(
    tx: &mut Transaction<'_, Postgres>,
    raw: &[RawFlow],
) -> Result<u64, sqlx::Error> {
    let mut rejected = 0;
    let mut todo: Vec<&[RawFlow]> = raw.chunks(10_000).rev().collect();
    while let Some(rows) = todo.pop() {
        let mut savepoint = sqlx::Connection::begin(&mut **tx).await?;
        match insert_raw(&mut savepoint, rows).await {
            Ok(()) => savepoint.commit().await?,
            Err(e) if is_data_error(&e) => {
                savepoint.rollback().await?;
                if let [row] = rows {
                    rejected += 1;
                    if rejected == 1 {
                        tracing::warn!(error = %e, src = %row.src, dst = %row.dst,
                            "raw flow refused by PostgreSQL; set aside (the first of this \
                             flush; all are counted in flowlens_graph_raw_rows_rejected_total)");
                    }
                } else {
                    let (first, second) = rows.split_at(rows.len() / 2);
                    todo.push(second);
                    todo.push(first);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(rejected)
}

async fn insert_raw(
    tx: &mut Transaction<'_, Postgres>,
    chunk: &[RawFlow],
) -> Result<(), sqlx::Error> {
    {
        let mut c = RawColumns::default();
        for r in chunk {
            c.push(r);
        }
        sqlx::query(
            "INSERT INTO flow_raw (received_at, exporter_ip, src_ip, dst_ip, src_port, dst_port,
                                   protocol, bytes, packets, tcp_flags, sampling_rate,
                                   flow_start, flow_end, exporter_name, input_interface,
                                   output_interface, input_if_name, output_if_name)
             SELECT * FROM unnest($1::timestamptz[], $2::inet[], $3::inet[], $4::inet[],
                                  $5::int4[], $6::int4[], $7::int2[], $8::int8[], $9::int4[],
                                  $10::int2[], $11::int4[], $12::timestamptz[],
                                  $13::timestamptz[], $14::text[], $15::int8[], $16::int8[],
                                  $17::text[], $18::text[])",
        )
        .bind(c.received)
        .bind(c.exporter)
        .bind(c.src)
        .bind(c.dst)
        .bind(c.src_port)
        .bind(c.dst_port)
        .bind(c.protocol)
        .bind(c.bytes)
        .bind(c.packets)
        .bind(c.tcp_flags)
        .bind(c.sampling_rate)
        .bind(c.start)
        .bind(c.end)
        .bind(c.exporter_name)
        .bind(c.input_interface)
        .bind(c.output_interface)
        .bind(c.input_if_name)
        .bind(c.output_if_name)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A future of a statement's rows, borrowing the connection and the items (the
/// statements [`set_aside`] runs).
type RowsFuture<'c> =
    std::pin::Pin<Box<dyn Future<Output = Result<Vec<PgRow>, sqlx::Error>> + Send + 'c>>;

/// A statement over a slice of items, for [`set_aside`].
type Statement<T> = for<'c> fn(&'c mut PgConnection, &'c [T]) -> RowsFuture<'c>;

/// Whether PostgreSQL refused the values themselves (SQLSTATE class 22: too long, out
/// of range, invalid text), as opposed to a constraint (class 23, which for graph rows
/// means the writer's cache is out of date) or the connection.
fn is_value_error(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .is_some_and(|c| c.starts_with("22"))
}

/// Runs `stmt` over `items` under a savepoint. When PostgreSQL refuses a chunk's
/// values (class 22) the chunk is halved until the refused items are found; they are
/// logged (the first), set aside and returned by index, and the rest is written, so
/// one bad row never fails the whole flush again and again. Returns the rows of what
/// was written and the indexes refused.
async fn set_aside<T: Sync>(
    tx: &mut Transaction<'_, Postgres>,
    items: &[T],
    table: &'static str,
    stmt: Statement<T>,
) -> Result<(Vec<PgRow>, Vec<usize>), sqlx::Error> {
    let mut rows = Vec::new();
    let mut refused = Vec::new();
    let mut todo: Vec<(usize, &[T])> = vec![(0, items)];
    while let Some((offset, chunk)) = todo.pop() {
        if chunk.is_empty() {
            continue;
        }
        let mut savepoint = sqlx::Connection::begin(&mut **tx).await?;
        match stmt(&mut savepoint, chunk).await {
            Ok(r) => {
                savepoint.commit().await?;
                rows.extend(r);
            }
            Err(e) if is_value_error(&e) => {
                savepoint.rollback().await?;
                if chunk.len() == 1 {
                    if refused.is_empty() {
                        tracing::warn!(error = %e, table,
                            "graph row refused by PostgreSQL; set aside (the first of this \
                             flush; all are counted in flowlens_graph_rows_refused_total)");
                    }
                    refused.push(offset);
                } else {
                    let mid = chunk.len() / 2;
                    let (first, second) = chunk.split_at(mid);
                    todo.push((offset + mid, second));
                    todo.push((offset, first));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok((rows, refused))
}

/// Most addresses a workload's asset keeps: the newest; older ones (pods long gone)
/// are let go, and come back if they are seen again.
const MAX_WORKLOAD_ADDRESSES: i32 = 256;

/// Adds `ips` to an asset's addresses (its `asset_addresses` follow by trigger),
/// keeping the newest [`MAX_WORKLOAD_ADDRESSES`].
async fn add_addresses(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    ips: &[IpAddr],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE assets SET
             ip_addresses = (SELECT array_agg(a ORDER BY o) FROM (
                 SELECT a, o FROM unnest(ip_addresses || ARRAY(
                     SELECT DISTINCT n FROM unnest($2::inet[]) AS n
                     WHERE NOT n = ANY(ip_addresses))) WITH ORDINALITY AS x(a, o)
                 ORDER BY o DESC LIMIT $3) k),
             updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(ips.iter().map(|ip| net(*ip)).collect::<Vec<_>>())
    .bind(MAX_WORKLOAD_ADDRESSES)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An asset to create from flows.
struct NewAsset {
    ip: IpAddr,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    internal: bool,
    geo: Option<crate::enrich::geoip::GeoInfo>,
}

fn insert_assets<'c>(conn: &'c mut PgConnection, items: &'c [NewAsset]) -> RowsFuture<'c> {
    Box::pin(async move {
        let geo = |f: fn(&crate::enrich::geoip::GeoInfo) -> Option<String>| {
            items
                .iter()
                .map(|a| a.geo.as_ref().and_then(f))
                .collect::<Vec<_>>()
        };
        sqlx::query(
            "INSERT INTO assets (name, asset_type, ip_addresses, first_seen, last_seen,
                                     discovery_source, confidence, is_internal, country_code,
                                     asn, as_org)
                 SELECT host(ip), 'unknown', ARRAY[ip], f, l, 'flow', 0.5, i, cc, asn, org
                 FROM unnest($1::inet[], $2::timestamptz[], $3::timestamptz[], $4::bool[],
                             $5::text[], $6::int8[], $7::text[])
                      AS u(ip, f, l, i, cc, asn, org)
                 RETURNING id, ip_addresses[1] AS ip, name, is_internal, country_code, asn,
                           as_org",
        )
        .bind(items.iter().map(|a| net(a.ip)).collect::<Vec<_>>())
        .bind(items.iter().map(|a| a.first).collect::<Vec<_>>())
        .bind(items.iter().map(|a| a.last).collect::<Vec<_>>())
        .bind(items.iter().map(|a| a.internal).collect::<Vec<_>>())
        .bind(geo(|g| g.country_code.clone()))
        .bind(
            items
                .iter()
                .map(|a| a.geo.as_ref().and_then(|g| g.asn).map(i64::from))
                .collect::<Vec<_>>(),
        )
        .bind(geo(|g| g.as_org.clone()))
        .fetch_all(conn)
        .await
    })
}

/// One dependency upsert's values.
struct DepRow {
    key: DepKey,
    service: Option<String>,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    bytes: i64,
    flows: i64,
    packets: i64,
    internal: bool,
    confidence: f32,
    /// The ports a folded dynamic-port dependency (port 0) stands for.
    range: Option<(i32, i32)>,
}

impl DepRow {
    fn new(dk: &DepKey, p: &Pending, classifier: &Classifier) -> Self {
        Self {
            key: *dk,
            service: if dk.port == 0 && p.stats.port_max != 0 {
                Some("dynamic".to_owned())
            } else {
                services::service_for(dk.protocol, dk.port).map(str::to_owned)
            },
            first: ts(p.stats.first_ms),
            last: ts(p.stats.last_ms),
            bytes: i64_of(p.stats.bytes),
            flows: i64_of(p.stats.flows),
            packets: i64_of(p.stats.packets),
            internal: scope_of(classifier, p.client, p.server) == Scope::Internal,
            confidence: p.stats.confidence.clamp(0.0, 1.0),
            range: (dk.port == 0 && p.stats.port_max != 0).then(|| {
                (
                    i32::from(p.stats.port_min.max(1)),
                    i32::from(p.stats.port_max),
                )
            }),
        }
    }
}

fn upsert_dependencies<'c>(conn: &'c mut PgConnection, items: &'c [DepRow]) -> RowsFuture<'c> {
    Box::pin(async move {
        sqlx::query(
            "INSERT INTO dependencies AS d (source_asset_id, target_asset_id, protocol,
                    port, inferred_service, first_seen, last_seen, total_bytes, total_flows,
                    total_packets, is_internal, confidence, direction, avg_flows_per_hour,
                    port_range_min, port_range_max)
                 SELECT s, t, proto, port, service, f, l, bytes, flows, packets, internal,
                        conf, 'outbound',
                        flows / greatest(extract(epoch FROM (l - f)) / 3600.0, 1.0), pmin, pmax
                 FROM unnest($1::uuid[], $2::uuid[], $3::int2[], $4::int4[],
                        $5::text[], $6::timestamptz[], $7::timestamptz[], $8::int8[],
                        $9::int8[], $10::int8[], $11::bool[], $12::float4[], $13::int4[],
                        $14::int4[])
                    AS u(s, t, proto, port, service, f, l, bytes, flows, packets, internal, conf,
                         pmin, pmax)
                 ON CONFLICT (source_asset_id, target_asset_id, protocol, port) DO UPDATE SET
                    first_seen = least(d.first_seen, EXCLUDED.first_seen),
                    last_seen = greatest(d.last_seen, EXCLUDED.last_seen),
                    total_bytes = d.total_bytes + EXCLUDED.total_bytes,
                    total_flows = d.total_flows + EXCLUDED.total_flows,
                    total_packets = d.total_packets + EXCLUDED.total_packets,
                    confidence = CASE WHEN 'confidence' = ANY(d.user_fields) THEN d.confidence
                                      ELSE greatest(d.confidence, EXCLUDED.confidence) END,
                    avg_flows_per_hour = (d.total_flows + EXCLUDED.total_flows)
                        / greatest(extract(epoch FROM (greatest(d.last_seen, EXCLUDED.last_seen)
                                   - least(d.first_seen, EXCLUDED.first_seen))) / 3600.0, 1.0),
                    port_range_min = least(d.port_range_min, EXCLUDED.port_range_min),
                    port_range_max = greatest(d.port_range_max, EXCLUDED.port_range_max),
                    stale = false,
                    updated_at = now()
                 RETURNING d.id, d.source_asset_id, d.target_asset_id, d.protocol, d.port,
                    d.inferred_service, (xmax = 0) AS inserted",
        )
        .bind(items.iter().map(|d| d.key.source).collect::<Vec<_>>())
        .bind(items.iter().map(|d| d.key.target).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|d| i16::from(d.key.protocol))
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|d| i32::from(d.key.port))
                .collect::<Vec<_>>(),
        )
        .bind(items.iter().map(|d| d.service.clone()).collect::<Vec<_>>())
        .bind(items.iter().map(|d| d.first).collect::<Vec<_>>())
        .bind(items.iter().map(|d| d.last).collect::<Vec<_>>())
        .bind(items.iter().map(|d| d.bytes).collect::<Vec<_>>())
        .bind(items.iter().map(|d| d.flows).collect::<Vec<_>>())
        .bind(items.iter().map(|d| d.packets).collect::<Vec<_>>())
        .bind(items.iter().map(|d| d.internal).collect::<Vec<_>>())
        .bind(items.iter().map(|d| d.confidence).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|d| d.range.map(|r| r.0))
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|d| d.range.map(|r| r.1))
                .collect::<Vec<_>>(),
        )
        .fetch_all(conn)
        .await
    })
}

/// One `flow_stats` row to add: a window's edge between two assets.
struct StatsRow {
    key: EdgeKey,
    source: Uuid,
    target: Uuid,
    stats: EdgeStats,
}

fn upsert_flow_stats<'c>(conn: &'c mut PgConnection, items: &'c [StatsRow]) -> RowsFuture<'c> {
    Box::pin(async move {
        sqlx::query(
            "INSERT INTO flow_stats AS f (time, source_asset_id, target_asset_id, protocol,
                                               port, flow_count, byte_count, packet_count)
                 SELECT w, s, t, p, port, sum(fl)::int4, sum(b), sum(pk)
                 FROM unnest($1::timestamptz[], $2::uuid[], $3::uuid[], $4::int2[], $5::int4[],
                             $6::int8[], $7::int8[], $8::int8[])
                      AS u(w, s, t, p, port, fl, b, pk)
                 GROUP BY w, s, t, p, port
                 ON CONFLICT (time, source_asset_id, target_asset_id, protocol, port)
                 DO UPDATE SET flow_count = f.flow_count + EXCLUDED.flow_count,
                               byte_count = f.byte_count + EXCLUDED.byte_count,
                               packet_count = f.packet_count + EXCLUDED.packet_count",
        )
        .bind(
            items
                .iter()
                .map(|r| ts(r.key.window_start_ms))
                .collect::<Vec<_>>(),
        )
        .bind(items.iter().map(|r| r.source).collect::<Vec<_>>())
        .bind(items.iter().map(|r| r.target).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|r| i16::from(r.key.protocol))
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|r| i32::from(r.key.port))
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|r| i64_of(r.stats.flows))
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|r| i64_of(r.stats.bytes))
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|r| i64_of(r.stats.packets))
                .collect::<Vec<_>>(),
        )
        .execute(conn)
        .await
        .map(|_| Vec::new())
    })
}

/// Column arrays for `flow_raw`.
#[derive(Default)]
struct RawColumns {
    received: Vec<DateTime<Utc>>,
    exporter: Vec<IpNetwork>,
    src: Vec<IpNetwork>,
    dst: Vec<IpNetwork>,
    src_port: Vec<i32>,
    dst_port: Vec<i32>,
    protocol: Vec<i16>,
    bytes: Vec<i64>,
    packets: Vec<i32>,
    tcp_flags: Vec<Option<i16>>,
    sampling_rate: Vec<i32>,
    start: Vec<Option<DateTime<Utc>>>,
    end: Vec<Option<DateTime<Utc>>>,
    exporter_name: Vec<Option<String>>,
    input_interface: Vec<Option<i64>>,
    output_interface: Vec<Option<i64>>,
    input_if_name: Vec<Option<String>>,
    output_if_name: Vec<Option<String>>,
}

impl RawColumns {
    fn push(&mut self, r: &RawFlow) {
        self.received.push(ts(r.received_ms));
        self.exporter.push(net(r.exporter));
        self.exporter_name
            .push(r.exporter_name.as_deref().map(str::to_owned));
        self.input_interface.push(r.input_interface.map(i64::from));
        self.output_interface
            .push(r.output_interface.map(i64::from));
        self.input_if_name
            .push(r.input_if_name.as_deref().map(str::to_owned));
        self.output_if_name
            .push(r.output_if_name.as_deref().map(str::to_owned));
        self.src.push(net(r.src));
        self.dst.push(net(r.dst));
        self.src_port.push(i32::from(r.src_port));
        self.dst_port.push(i32::from(r.dst_port));
        self.protocol.push(i16::from(r.protocol));
        self.bytes.push(i64_of(r.bytes));
        self.packets
            .push(i32::try_from(r.packets).unwrap_or(i32::MAX));
        self.tcp_flags
            .push(r.tcp_flags.map(|f| i16::try_from(f).unwrap_or(i16::MAX)));
        self.sampling_rate
            .push(i32::try_from(r.sampling_rate).unwrap_or(i32::MAX));
        self.start.push(r.start_ms.map(ts));
        self.end.push(r.end_ms.map(ts));
    }
}
