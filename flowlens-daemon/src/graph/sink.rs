//! EDGE: the PostgreSQL graph sink of `flowlens-daemon run`.
//!
//! Runs on the pipeline's sink thread: each batch of decoded flows is oriented and
//! aggregated in memory (no I/O per flow); every `flush_interval_seconds` the windows
//! go to the [`GraphWriter`] on its own thread, which writes them in one transaction,
//! and every `check_interval_seconds` the partitions are kept up (a week ahead, rows
//! out of the default partitions, retention) and stale assets and dependencies are
//! looked for. A
//! failed flush (PostgreSQL down) is logged, counted and retried at the next interval
//! with everything it held (bounded by `database.max_buffered_rows`). At shutdown every
//! open window is flushed, with a few retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::config::{AlertsConfig, DatabaseConfig, DependencyResolutionConfig};
use super::window::{Aggregator, EdgeKey, EdgeStats, Orientation};
use super::writer::{GraphWriter, RawFlow, WriterSettings};
use crate::config::EnrichmentConfig;
use crate::enrich::classify::Classifier;
use crate::enrich::geoip::{GeoIp, GeoIpError};
use crate::enrich::rdns::{RdnsError, ReverseDns};
use crate::flow::FlowRecord;
use crate::kafka::positions::{self, Durable, Positions};
use crate::resolve::direction::{FlowEnds, Unoriented, orient_with};
use crate::resolve::dynamic_ports::{DynamicPorts, PortUse};
use crate::resolve::fan_out::{Endpoint, PeerCounter};
use crate::resolve::listeners::{ListenerBook, Listening};
use crate::store::{self, StoreError};

/// Endpoints whose distinct peers are counted for direction evidence.
const MAX_TRACKED_ENDPOINTS: usize = 200_000;

/// Listening endpoints learnt (and as many candidates) at most.
const MAX_LEARNT_LISTENERS: usize = 100_000;

/// PostgreSQL health as the sink last saw it, for `/health`.
#[derive(Debug, Clone, Default)]
pub struct GraphHealth(Arc<HealthState>);

#[derive(Debug, Default)]
struct HealthState {
    outcome: AtomicU8,
    /// When the running flush started (ms since the epoch), 0 when none runs.
    flush_started_ms: AtomicU64,
    /// A flush running longer than this is a stalled writer (0: never said).
    stall_after_ms: AtomicU64,
}

impl GraphHealth {
    const OK: u8 = 1;
    const ERROR: u8 = 2;

    fn set(&self, ok: bool) {
        self.0
            .outcome
            .store(if ok { Self::OK } else { Self::ERROR }, Ordering::Relaxed);
    }

    fn flush_started(&self) {
        self.0.flush_started_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn flush_ended(&self) {
        self.0.flush_started_ms.store(0, Ordering::Relaxed);
    }

    fn stall_after(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.0.stall_after_ms.store(ms, Ordering::Relaxed);
    }

    /// "stalled" (a flush has run for longer than two flush intervals or half its
    /// timeout: a hung connection, a lock, a database that cannot keep up), else the
    /// outcome of the last flush: "ok", "error", or "starting" (none yet).
    pub fn status(&self) -> &'static str {
        let started = self.0.flush_started_ms.load(Ordering::Relaxed);
        let after = self.0.stall_after_ms.load(Ordering::Relaxed);
        if started != 0 && after != 0 && now_ms().saturating_sub(started) > after {
            return "stalled";
        }
        match self.0.outcome.load(Ordering::Relaxed) {
            Self::OK => "ok",
            Self::ERROR => "error",
            _ => "starting",
        }
    }
}

/// Everything the graph sink is configured by.
#[derive(Debug, Clone)]
pub struct GraphSettings {
    pub url: String,
    pub database: DatabaseConfig,
    pub resolution: DependencyResolutionConfig,
    pub alerts: AlertsConfig,
    pub classifier: Classifier,
    pub enrichment: EnrichmentConfig,
    /// Where the inventories' last snapshots are kept (none: not kept).
    pub state_dir: Option<std::path::PathBuf>,
}

/// Why the graph sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("enrichment.geoip: {0}")]
    GeoIp(#[from] GeoIpError),
    #[error("{0}")]
    Cache(String),
    #[error("enrichment.dns: {0}")]
    Rdns(#[from] RdnsError),
    #[error("starting the graph writer: {0}")]
    Thread(#[source] std::io::Error),
}

/// Starts the configured inventory providers on `rt` (each loads its saved snapshot
/// first); none configured: no inventory. A provider that cannot start (an unreadable
/// key file) is logged and left out: the graph does not wait for inventories.
fn start_inventory(
    cloud: &crate::inventory::CloudConfig,
    shared: Option<Arc<crate::enrich::shared::SharedCache>>,
    state_dir: Option<&std::path::Path>,
    rt: &tokio::runtime::Handle,
) -> Option<Arc<crate::inventory::Inventory>> {
    use crate::inventory::{Provider, aws::Aws, azure::Azure, gcp::Gcp, kubernetes::Kubernetes};
    let mut providers = Vec::new();
    if cloud.kubernetes.enabled {
        providers.push((
            Provider::Kubernetes(Box::new(Kubernetes::new(cloud.kubernetes.clone()))),
            Duration::from_secs(cloud.kubernetes.refresh_interval_seconds),
        ));
    }
    if cloud.aws.enabled {
        match Aws::new(cloud.aws.clone()) {
            Ok(p) => providers.push((
                Provider::Aws(Box::new(p)),
                Duration::from_secs(cloud.aws.refresh_interval_seconds),
            )),
            Err(e) => tracing::error!(error = %e, "enrichment.cloud.aws cannot start"),
        }
    }
    if cloud.gcp.enabled {
        match Gcp::new(cloud.gcp.clone()) {
            Ok(p) => providers.push((
                Provider::Gcp(p),
                Duration::from_secs(cloud.gcp.refresh_interval_seconds),
            )),
            Err(e) => tracing::error!(error = %e, "enrichment.cloud.gcp cannot start"),
        }
    }
    if cloud.azure.enabled {
        match Azure::new(cloud.azure.clone()) {
            Ok(p) => providers.push((
                Provider::Azure(p),
                Duration::from_secs(cloud.azure.refresh_interval_seconds),
            )),
            Err(e) => tracing::error!(error = %e, "enrichment.cloud.azure cannot start"),
        }
    }
    if providers.is_empty() {
        return None;
    }
    let inventory = Arc::new(
        shared
            .map_or_else(crate::inventory::Inventory::default, |cache| {
                crate::inventory::Inventory::shared_through(cache)
            })
            .with_asset_creation(cloud.create_assets),
    );
    let _guard = rt.enter();
    crate::inventory::spawn(&inventory, providers, state_dir);
    Some(inventory)
}

/// Work for the writer thread.
enum Job {
    /// Write these windows (and raw flows); answer on `reply` when asked.
    Flush {
        edges: Vec<(EdgeKey, EdgeStats)>,
        raw: Vec<RawFlow>,
        /// Listening endpoints learnt or confirmed, to persist.
        listeners: Vec<Endpoint>,
        /// Raw-topic positions up to which these flows were read (the Kafka path).
        positions: Positions,
        reply: Option<SyncSender<bool>>,
    },
    /// Partition upkeep, then (when change detection is on) stale assets and
    /// dependencies.
    Upkeep { stale: bool },
}

/// The sink: aggregation on the pipeline's sink thread, writing on a thread of its own.
///
/// A flush hands the windows to the writer thread and returns at once; while the
/// writer is busy (a first flush of a large network creates tens of thousands of
/// assets), windows keep aggregating in memory and go with the next hand-over, so
/// intake never waits for PostgreSQL.
pub struct GraphSink {
    aggregator: Aggregator,
    peers: PeerCounter,
    /// The aggregation window the fan-out evidence belongs to (see `PeerCounter::rotate`).
    peers_window: u64,
    /// Listening endpoints learnt across windows (loaded from `service_endpoints`).
    listeners: ListenerBook,
    /// Learnt or confirmed listeners not handed to the writer yet.
    listeners_to_persist: Vec<Endpoint>,
    /// Dynamic server ports (passive FTP, RPC, RTP), folded into port 0.
    dynamic: DynamicPorts,
    window_ms: u64,
    raw: Vec<RawFlow>,
    write_raw: bool,
    max_raw: usize,
    flush_every: Duration,
    last_flush: Instant,
    /// Upkeep timer: `check_interval_seconds`.
    upkeep_every: Duration,
    last_upkeep: Instant,
    /// Whether upkeep also looks for stale assets and dependencies.
    stale: bool,
    jobs: Option<SyncSender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
    raw_dropped: u64,
    health: GraphHealth,
    /// Raw-topic positions of the flows aggregated so far, for the next hand-over.
    positions: Positions,
    /// Fed by a Kafka consumer: windows are handed over only when a mark completes
    /// (see [`Self::add_positions`]).
    at_marks: bool,
    /// What the exporters said over SNMP (`enrichment.snmp`), and the exporters
    /// already reported to the poller.
    devices: Option<Arc<crate::inventory::snmp::Devices>>,
    noted: std::collections::HashSet<std::net::IpAddr>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl GraphSink {
    /// Connects, migrates, prepares partitions and starts the writer thread. Fails
    /// when PostgreSQL is unreachable at start (an outage later is survived).
    pub fn open(settings: &GraphSettings, health: GraphHealth) -> Result<Self, GraphError> {
        Self::open_with(settings, health, None)
    }

    /// [`Self::open`] for a `process` instance: the positions of each committed flush
    /// are told to `durable`.
    pub fn open_with(
        settings: &GraphSettings,
        health: GraphHealth,
        durable: Option<Durable>,
    ) -> Result<Self, GraphError> {
        // One worker thread: reverse-DNS lookups run on it between flushes.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flowlens-enrich")
            .enable_all()
            .build()
            .map_err(GraphError::Thread)?;
        let geoip = GeoIp::open(&settings.enrichment.geoip)?;
        let shared = crate::enrich::shared::SharedCache::new(&settings.enrichment.cache)
            .map_err(GraphError::Cache)?
            .map(Arc::new);
        let rdns = ReverseDns::new(
            &settings.enrichment.dns,
            settings.enrichment.cache.max_memory_entries,
            rt.handle().clone(),
        )?
        .map(|r| match &shared {
            Some(cache) => r.with_shared_cache(cache.clone()),
            None => r,
        });
        let db = &settings.database;
        let statement_timeout = Duration::from_secs(db.statement_timeout_seconds);
        let pool = rt.block_on(async {
            let pool =
                store::connect_with(&settings.url, db.max_connections, statement_timeout).await?;
            store::migrate(&pool).await?;
            let upkeep =
                store::maintain_partitions(&pool, db.raw_retention_days, db.stats_retention_days)
                    .await?;
            publish_upkeep(&upkeep);
            Ok::<_, StoreError>(pool)
        })?;
        let mut listeners = ListenerBook::new(MAX_LEARNT_LISTENERS);
        listeners.load(rt.block_on(store::learnt_listeners(&pool, MAX_LEARNT_LISTENERS))?);
        health.set(true);
        let agg = &settings.resolution.aggregation;
        let aggregator = Aggregator::new(
            agg.window_size_seconds,
            agg.max_clock_skew_seconds,
            db.max_buffered_rows,
        )
        .with_observation_policy(agg.observation_policy);
        let cd = &settings.resolution.change_detection;
        let upkeep_every = Duration::from_secs(cd.check_interval_seconds.max(1));
        let flush_every = Duration::from_secs(agg.flush_interval_seconds.max(1));
        // Stalled: a flush running for two intervals (the writer falls behind), or for
        // half its timeout, whichever comes first.
        let flush_timeout = Duration::from_secs(db.flush_timeout_seconds.max(1));
        health.stall_after((flush_every * 2).min(flush_timeout / 2));
        let writer = GraphWriter::new(
            pool,
            WriterSettings {
                resolution: settings.resolution.clone(),
                alerts: settings.alerts.clone(),
                classifier: settings.classifier.clone(),
                max_buffered_rows: db.max_buffered_rows,
                write_raw_flows: db.write_raw_flows,
                raw_retention_days: db.raw_retention_days,
                stats_retention_days: db.stats_retention_days,
                flush_timeout,
            },
        )
        .with_enrichment(geoip, rdns);
        let devices = settings.enrichment.snmp.enabled.then(|| {
            let devices = Arc::new(crate::inventory::snmp::Devices::default());
            let _guard = rt.enter();
            crate::inventory::snmp::spawn(
                settings.enrichment.snmp.clone(),
                &devices,
                settings.state_dir.as_deref(),
            );
            devices
        });
        let writer = match &devices {
            Some(d) => writer.with_devices(d.clone()),
            None => writer,
        };
        let writer = match start_inventory(
            &settings.enrichment.cloud,
            shared.clone(),
            settings.state_dir.as_deref(),
            rt.handle(),
        ) {
            Some(inventory) => writer.with_inventory(inventory),
            None => writer,
        };
        let durable_given = durable.is_some();
        let writer = match durable {
            Some(d) => writer.with_positions(d),
            None => writer,
        };
        // One job in the queue: a second hand-over waits in the aggregator instead.
        let (jobs, rx) = sync_channel::<Job>(1);
        let writer_health = health.clone();
        let thread = std::thread::Builder::new()
            .name("flowlens-graph".into())
            .spawn(move || writer_loop(&rt, writer, &rx, &writer_health))
            .map_err(GraphError::Thread)?;
        Ok(Self {
            aggregator,
            peers: PeerCounter::new(MAX_TRACKED_ENDPOINTS),
            peers_window: 0,
            listeners,
            listeners_to_persist: Vec::new(),
            dynamic: DynamicPorts::new(MAX_TRACKED_ENDPOINTS),
            window_ms: agg.window_size_seconds.max(1) * 1000,
            raw: Vec::new(),
            write_raw: db.write_raw_flows,
            max_raw: db.max_buffered_rows,
            flush_every,
            last_flush: Instant::now(),
            upkeep_every,
            last_upkeep: Instant::now(),
            stale: cd.enabled,
            jobs: Some(jobs),
            writer: Some(thread),
            raw_dropped: 0,
            health,
            positions: Positions::new(),
            at_marks: durable_given,
            devices,
            noted: std::collections::HashSet::new(),
        })
    }

    /// The PostgreSQL state the writer last saw, for `/health`.
    pub fn health(&self) -> GraphHealth {
        self.health.clone()
    }

    /// Orients and aggregates a batch; hands windows to the writer when due.
    pub fn write(&mut self, batch: &[FlowRecord]) {
        let now = now_ms();
        self.rotate_fan_out(now);
        // Counted per batch: a metric lookup per flow would cost more than orienting it.
        let mut unoriented = [0u64; Unoriented::ALL.len()];
        // What the exporters said over SNMP, read once a batch.
        let devices = self.devices.as_ref().map(|d| d.current());
        for rec in batch {
            if let Some(devices) = &self.devices
                && self.noted.len() < 10_000
                && self.noted.insert(rec.exporter_ip)
            {
                devices.note(rec.exporter_ip);
            }
            let ends = FlowEnds::from(rec);
            let mut listening = Listening::default();
            let fan_out = ends.endpoints().map(|(src, dst)| {
                self.peers.observe_flow(src, dst, ends.is_syn());
                listening = self.listeners.listening(&src, &dst);
                self.peers.fan_out(&src, &dst)
            });
            match orient_with(&ends, fan_out, listening) {
                Ok(o) => {
                    let server_is_src =
                        ends.src_ip == Some(o.server) && ends.src_port == Some(o.server_port);
                    let server_listens = if server_is_src {
                        listening.src
                    } else {
                        listening.dst
                    };
                    let dynamic = o.server_port != 0
                        && self.dynamic.is_dynamic(
                            PortUse {
                                client: o.client,
                                server: o.server,
                                protocol: o.protocol,
                                port: o.server_port,
                                listener: server_listens,
                            },
                            now / self.window_ms,
                            now,
                        );
                    self.aggregator.add(
                        rec,
                        Orientation {
                            client: o.client,
                            server: o.server,
                            protocol: o.protocol,
                            port: if dynamic { 0 } else { o.server_port },
                            confidence: o.confidence,
                            real_port: o.server_port,
                        },
                        now,
                    );
                    if self.write_raw {
                        self.push_raw(rec, o.protocol, now, devices.as_deref());
                    }
                }
                Err(why) => {
                    if let Some(n) = unoriented.get_mut(why.index()) {
                        *n += 1;
                    }
                }
            }
        }
        for (why, n) in Unoriented::ALL.iter().zip(unoriented) {
            if n > 0 {
                metrics::counter!("flowlens_graph_flows_unoriented_total", "reason" => why.reason())
                    .increment(n);
            }
        }
        self.tick();
    }

    /// Records that every flow of the raw topic before `p` was given to
    /// [`Self::write`], and nothing after it: the flush that writes them writes `p`
    /// too. A sink fed by a consumer hands its windows over here (when the interval
    /// is due) and only here: windows handed over between two marks would hold flows
    /// read after the positions they are written with, and an instance killed after
    /// such a flush would have its successor read those flows, and count them, again.
    pub fn add_positions(&mut self, p: Positions) {
        positions::merge(&mut self.positions, p);
        if self.at_marks && self.last_flush.elapsed() >= self.flush_every {
            self.hand_over();
        }
    }

    /// Starts the fan-out evidence of a new window when the wall clock enters one, and
    /// publishes what the bounded table had to leave out.
    fn rotate_fan_out(&mut self, now: u64) {
        let window = now / self.window_ms;
        if window == self.peers_window {
            return;
        }
        self.peers_window = window;
        let listening = self.peers.rotate();
        // Bounded by the book: each endpoint is handed out when learnt and at most
        // once a day after; the writer bounds (and counts) what it holds.
        let persist = self.listeners.end_window(window, listening);
        self.listeners_to_persist.extend(persist);
        let c = self.listeners.counters;
        metrics::counter!("flowlens_graph_listeners_learnt_total").absolute(c.learnt);
        metrics::counter!("flowlens_graph_listener_candidates_dropped_total")
            .absolute(c.candidates_dropped);
        metrics::counter!("flowlens_graph_listeners_not_kept_total").absolute(c.not_kept);
        #[expect(clippy::cast_precision_loss, reason = "a gauge")]
        metrics::gauge!("flowlens_graph_listeners").set(self.listeners.len() as f64);
        let d = self.dynamic.counters;
        metrics::counter!("flowlens_graph_flows_dynamic_port_folded_total").absolute(d.folded);
        metrics::counter!("flowlens_graph_dynamic_port_tables_cleared_total")
            .absolute(d.tables_cleared);
        metrics::counter!("flowlens_graph_fan_out_pruned_total").absolute(self.peers.pruned());
        metrics::counter!("flowlens_graph_fan_out_untracked_total")
            .absolute(self.peers.untracked());
    }

    /// Endpoints the fan-out evidence tracks in the current window.
    pub fn fan_out_endpoints(&self) -> usize {
        self.peers.len()
    }

    /// Listening endpoints learnt (or loaded) so far.
    pub fn learnt_listeners(&self) -> usize {
        self.listeners.len()
    }

    fn push_raw(
        &mut self,
        rec: &FlowRecord,
        protocol: u8,
        now: u64,
        devices: Option<
            &std::collections::HashMap<std::net::IpAddr, Arc<crate::inventory::snmp::Device>>,
        >,
    ) {
        let (Some(src), Some(dst)) = (rec.src_ip, rec.dst_ip) else {
            return;
        };
        if self.raw.len() >= self.max_raw {
            self.raw_dropped += 1;
            return;
        }
        // The exporter's and its interfaces' names, when SNMP knows them.
        let device = devices.and_then(|d| d.get(&rec.exporter_ip));
        let if_name = |index: Option<u32>| -> Option<Arc<str>> {
            let i = device.as_ref()?.interfaces.get(&index?)?;
            i.name.as_deref().map(Arc::from)
        };
        self.raw.push(RawFlow {
            received_ms: now,
            exporter: rec.exporter_ip,
            exporter_name: device
                .as_ref()
                .and_then(|d| d.sys_name.as_deref())
                .map(Arc::from),
            input_interface: rec.input_interface,
            output_interface: rec.output_interface,
            input_if_name: if_name(rec.input_interface),
            output_if_name: if_name(rec.output_interface),
            src,
            dst,
            src_port: rec.src_port.unwrap_or(0),
            dst_port: rec.dst_port.unwrap_or(0),
            protocol,
            bytes: rec.bytes.unwrap_or(0),
            packets: rec.packets.unwrap_or(0),
            tcp_flags: rec.tcp_flags,
            sampling_rate: rec.sampling_rate.unwrap_or(1),
            start_ms: rec.flow_start_ms,
            end_ms: rec.flow_end_ms,
        });
    }

    /// Hands windows over (and asks for a staleness check) when due; call when idle
    /// too.
    pub fn tick(&mut self) {
        if !self.at_marks && self.last_flush.elapsed() >= self.flush_every {
            self.hand_over();
        }
        if self.last_upkeep.elapsed() >= self.upkeep_every
            && let Some(jobs) = &self.jobs
            && jobs.try_send(Job::Upkeep { stale: self.stale }).is_ok()
        {
            self.last_upkeep = Instant::now();
        }
    }

    /// Gives the windows to the writer if it is free; else they keep aggregating.
    fn hand_over(&mut self) {
        self.last_flush = Instant::now();
        // Counted per flow while aggregating, published per hand-over.
        let counters = std::mem::take(&mut self.aggregator.counters);
        if counters.clock_skewed > 0 {
            metrics::counter!("flowlens_graph_flows_clock_skewed_total")
                .increment(counters.clock_skewed);
        }
        if counters.duplicate_observations > 0 {
            metrics::counter!("flowlens_graph_flows_duplicate_observation_total")
                .increment(counters.duplicate_observations);
        }
        if counters.over_capacity > 0 {
            metrics::counter!("flowlens_graph_flows_over_capacity_total")
                .increment(counters.over_capacity);
        }
        let Some(jobs) = &self.jobs else { return };
        if self.aggregator.is_empty()
            && self.raw.is_empty()
            && self.listeners_to_persist.is_empty()
            && self.positions.is_empty()
        {
            return;
        }
        let job = Job::Flush {
            edges: self.aggregator.take(),
            raw: std::mem::take(&mut self.raw),
            listeners: std::mem::take(&mut self.listeners_to_persist),
            positions: std::mem::take(&mut self.positions),
            reply: None,
        };
        if let Err(TrySendError::Full(Job::Flush {
            edges,
            raw,
            listeners,
            positions,
            ..
        })) = jobs.try_send(job)
        {
            // The writer is still on the previous flush: put the windows back.
            metrics::counter!("flowlens_graph_flushes_deferred_total").increment(1);
            self.aggregator.restore(edges);
            self.raw = raw;
            self.listeners_to_persist = listeners;
            self.positions = positions;
        }
    }

    /// Writes everything aggregated so far and waits for the outcome (tests, tools).
    pub fn flush_now(&mut self) -> bool {
        self.last_flush = Instant::now();
        let Some(jobs) = &self.jobs else { return false };
        let (reply, answer) = sync_channel(1);
        let job = Job::Flush {
            edges: self.aggregator.take(),
            raw: std::mem::take(&mut self.raw),
            listeners: std::mem::take(&mut self.listeners_to_persist),
            positions: std::mem::take(&mut self.positions),
            reply: Some(reply),
        };
        if jobs.send(job).is_err() {
            return false;
        }
        answer.recv().unwrap_or(false)
    }

    /// Final flush at shutdown: every open window, a few tries, then the writer stops.
    pub fn close(&mut self) {
        for attempt in 0..3 {
            if self.flush_now() {
                break;
            }
            if attempt < 2 {
                std::thread::park_timeout(Duration::from_secs(1));
            }
        }
        self.jobs = None;
        if let Some(t) = self.writer.take() {
            let _ = t.join();
        }
        if self.raw_dropped > 0 {
            tracing::warn!(dropped = self.raw_dropped, "raw flows dropped: buffer full");
        }
    }
}

impl Drop for GraphSink {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.writer.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: one job at a time.
fn writer_loop(
    rt: &tokio::runtime::Runtime,
    mut writer: GraphWriter,
    jobs: &Receiver<Job>,
    health: &GraphHealth,
) {
    // Assets a previous run left unnamed are looked up again from the start.
    match rt.block_on(writer.requeue_unnamed()) {
        Ok(n) if n > 0 => tracing::info!(queued = n, "reverse lookups queued for unnamed assets"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "queueing unnamed assets failed; retried later"),
    }
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Flush {
                edges,
                raw,
                listeners,
                positions,
                reply,
            } => {
                writer.add(edges, raw);
                writer.add_listeners(listeners);
                writer.add_positions(positions);
                let started = Instant::now();
                health.flush_started();
                let result = rt.block_on(writer.flush(now_ms()));
                health.flush_ended();
                metrics::histogram!("flowlens_graph_flush_seconds")
                    .record(started.elapsed().as_secs_f64());
                let ok = match result {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, held = writer.held_rows(),
                            "graph flush failed; kept for the next flush");
                        false
                    }
                };
                health.set(ok);
                publish(&writer);
                if let Some(r) = reply {
                    let _ = r.send(ok);
                }
            }
            Job::Upkeep { stale } => {
                // Bounded like a flush: a hung connection must not stop the writer.
                let limit = writer.flush_timeout();
                health.flush_started();
                let bounded = |what: &str, r: Result<Result<(), String>, _>| match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "{what} failed; retried later"),
                    Err(tokio::time::error::Elapsed { .. }) => {
                        tracing::warn!("{what} timed out; retried later");
                    }
                };
                let r = rt.block_on(async {
                    tokio::time::timeout(limit, writer.maintain_partitions()).await
                });
                bounded(
                    "partition upkeep",
                    r.map(|r| r.map(|u| publish_upkeep(&u)).map_err(|e| e.to_string())),
                );
                let r = rt.block_on(async {
                    tokio::time::timeout(limit, writer.requeue_unnamed()).await
                });
                bounded(
                    "queueing unnamed assets",
                    r.map(|r| r.map(|_| ()).map_err(|e| e.to_string())),
                );
                if stale {
                    let r = rt.block_on(async {
                        tokio::time::timeout(limit, writer.detect_stale()).await
                    });
                    let r = r.map(|r| {
                        r.map(|n| {
                            if n > 0 {
                                tracing::info!(changes = n, "stale assets/dependencies");
                            }
                        })
                        .map_err(|e| e.to_string())
                    });
                    bounded("stale check", r);
                }
                health.flush_ended();
            }
        }
    }
}

/// Logs what partition upkeep changed and publishes
/// `flowlens_graph_default_partition_rows{table}`: rows that no partition of their day
/// holds (0 unless days arrive faster than upkeep runs).
fn publish_upkeep(u: &store::PartitionUpkeep) {
    if u.created > 0 || u.moved_rows > 0 || u.dropped > 0 || u.expired_rows > 0 {
        tracing::info!(
            created = u.created,
            moved_rows = u.moved_rows,
            dropped = u.dropped,
            expired_rows = u.expired_rows,
            "partition upkeep"
        );
    }
    #[expect(clippy::cast_precision_loss, reason = "a gauge")]
    for (table, rows) in [
        ("flow_raw", u.default_raw_rows),
        ("flow_stats", u.default_stats_rows),
    ] {
        metrics::gauge!("flowlens_graph_default_partition_rows", "table" => table).set(rows as f64);
    }
}

fn publish(writer: &GraphWriter) {
    let c = &writer.counters;
    let set = |name: &'static str, v: u64| metrics::counter!(name).absolute(v);
    set("flowlens_graph_flushes_total", c.flushes);
    set("flowlens_graph_flush_failures_total", c.flush_failures);
    set("flowlens_graph_flush_timeouts_total", c.flush_timeouts);
    set("flowlens_graph_flows_suppressed_total", c.flows_suppressed);
    set(
        "flowlens_graph_listeners_not_persisted_total",
        c.listeners_not_persisted,
    );
    for (table, n) in &c.rows_refused {
        metrics::counter!("flowlens_graph_rows_refused_total", "table" => *table).absolute(*n);
    }
    set(
        "flowlens_graph_deleted_assets_forgotten_total",
        c.deleted_assets_forgotten,
    );
    set("flowlens_graph_flushes_in_doubt_total", c.flushes_in_doubt);
    set(
        "flowlens_graph_flushes_in_doubt_committed_total",
        c.flushes_in_doubt_committed,
    );
    set("flowlens_graph_assets_created_total", c.assets_created);
    set(
        "flowlens_graph_dependencies_created_total",
        c.dependencies_created,
    );
    set("flowlens_graph_flow_stats_rows_total", c.flow_stats_rows);
    set("flowlens_graph_raw_rows_total", c.raw_rows);
    set(
        "flowlens_graph_raw_rows_rejected_total",
        c.raw_rows_rejected,
    );
    set("flowlens_graph_change_events_total", c.change_events);
    set("flowlens_graph_alerts_total", c.alerts);
    set("flowlens_graph_rows_dropped_total", c.rows_dropped);
    set(
        "flowlens_graph_rows_without_asset_total",
        c.rows_without_asset,
    );
    #[expect(clippy::cast_precision_loss, reason = "a gauge")]
    metrics::gauge!("flowlens_graph_held_rows").set(writer.held_rows() as f64);
    #[expect(clippy::cast_precision_loss, reason = "a gauge")]
    metrics::gauge!("flowlens_enrich_rdns_waiting").set(writer.awaiting_names() as f64);
    if let Some(r) = writer.rdns_counters() {
        let outcome = |o: &'static str, v: u64| {
            metrics::counter!("flowlens_enrich_rdns_lookups_total", "outcome" => o).absolute(v);
        };
        outcome("resolved", r.resolved);
        outcome("not_found", r.not_found);
        outcome("failed", r.failures);
        outcome("timed_out", r.timeouts);
        outcome("invalid_name", r.invalid_names);
        outcome("shared", r.shared);
        set(
            "flowlens_enrich_rdns_dropped_for_concurrency_total",
            r.dropped_for_concurrency,
        );
    }
}
