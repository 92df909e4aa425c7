//! The only module that knows the topology of the `run` command. Its roles cut it
//! at one seam ([`Handoff`]): what receiving hands to processing.
//!
//! ```text
//! all:      receive -> Handoff -> Dispatcher -> decode workers -> sink
//!                         \-> raw topic -> consumer -/   (routing kafka, or auto above
//!                                                        the threshold)
//! ingest:   receive -> Handoff -> raw topic
//! process:  raw topic -> consumer -> Dispatcher -> decode workers -> sink
//!
//! receive   UDP threads | XDP ring readers; never wait (a refused datagram is
//!           dropped and counted for its exporter)
//! Dispatcher sharded by exporter, bounded queues; the consumer waits on them (its
//!           backlog stays in the broker) and sends position marks down them
//! decode    one Decoder per worker; batches of ingestion.batch_size or
//!           ingestion.batch_timeout_ms
//! sink      the PostgreSQL graph (with the raw-topic positions of what it flushed),
//!           a jsonl file, or nothing
//! control   (main thread) queue fill -> 1:N sampling rate; flow rate -> route
//! telemetry (tokio thread) /health, /metrics, and SIGINT/SIGTERM -> shutdown
//! ```
//!
//! The accounting identity is counted on both sides of the seam: at the receive side
//! received = handed over (decoded here, or produced) + sampled out + dropped; at the
//! process side consumed = decoded + malformed.
//!
//! Shutdown drains in order: receivers stop, the producer flushes, the consumer
//! hands over what it read and flushes it (positions included), queues are decoded
//! to the end, the last partial batches reach the sink, the sink flushes.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use flowlens_ebpf_common::PortKind;

use crate::config::Config;
use crate::decode::state::StateSnapshot;
use crate::decode::{Datagram, DecodeError, Decoder, DecoderConfig, ExporterCounters};
use crate::decoder_state::DecoderStateStore;
use crate::enrich::classify::Classifier;
use crate::enrich::geoip::GeoIp;
use crate::flow::FlowRecord;
use crate::graph::sink::{GraphHealth, GraphSettings, GraphSink};
use crate::ingest::datagram::{Dispatcher, Mark, Work};
use crate::ingest::ring::{RingReader, RingReaderOptions};
use crate::ingest::udp;
use crate::ingest::xdp::{self, ExporterLosses, ExporterPrefix, XdpHandle, XdpOptions};
use crate::kafka::consume::{self, ConsumerSetup};
use crate::kafka::flows::{FlowEnrichment, FlowPublisher};
use crate::kafka::health::KafkaHealth;
use crate::kafka::positions::{Durable, Positions};
use crate::kafka::produce::RawProducer;
use crate::kafka::relay::{Relay, RelaySetup};
use crate::malformed_log::MalformedLog;
use crate::output;
use crate::pressure::{Pressure, PressurePolicy};
use crate::routing::{self, Router};
use crate::seam::{Handoff, Route};
use crate::telemetry::metrics as m;
use crate::telemetry::server::{self, Telemetry};

/// Where decoded flows go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Every record as a JSON line (the `decode` command's format), for debugging.
    Jsonl(PathBuf),
    /// Decode and count only.
    Discard,
    /// The PostgreSQL dependency graph (`DATABASE_URL` or `database.url`).
    Postgres,
    /// `postgres` when a database is configured, else `discard`.
    Auto,
}

impl std::str::FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("jsonl", path)) if !path.is_empty() => Ok(Self::Jsonl(path.into())),
            None if s == "discard" => Ok(Self::Discard),
            None if s == "postgres" => Ok(Self::Postgres),
            None if s == "auto" => Ok(Self::Auto),
            _ => Err(format!(
                "unknown output {s:?} (expected jsonl:PATH, postgres, auto or discard)"
            )),
        }
    }
}

/// Which stages this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// Receive, decode and write the graph (through Kafka as `ingestion.routing`
    /// says).
    #[default]
    All,
    /// Receive and produce raw datagrams to Kafka.
    Ingest,
    /// Consume raw datagrams from Kafka (in `kafka.consumer_group`), decode and write
    /// the graph.
    Process,
}

impl Role {
    fn receives(self) -> bool {
        self != Self::Process
    }
    fn processes(self) -> bool {
        self != Self::Ingest
    }
}

/// What `run` needs beyond the config.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: Config,
    pub no_xdp: bool,
    pub output: Output,
    pub role: Role,
}

/// Errors that stop the daemon at startup.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("binding UDP sockets: {0}")]
    Bind(std::io::Error),
    #[error("starting threads: {0}")]
    Thread(std::io::Error),
    #[error("opening output {path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("installing the metrics recorder: {0}")]
    Metrics(String),
    #[error("telemetry server on {addr}: {source}")]
    Telemetry {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("--output postgres needs DATABASE_URL or database.url")]
    NoDatabase,
    #[error("the PostgreSQL graph: {0}")]
    Graph(#[source] crate::graph::sink::GraphError),
    #[error("{0} needs Kafka: set kafka.bootstrap_servers or KAFKA_BOOTSTRAP_SERVERS")]
    NoKafka(&'static str),
    #[error("notifications: {0}")]
    Notify(String),
    #[error("Kafka: {0}")]
    Kafka(#[from] crate::kafka::client::KafkaError),
    #[error("state.directory: {0}")]
    State(#[from] crate::decoder_state::DecoderStateError),
    #[error("enrichment.geoip (for the flows topic): {0}")]
    GeoIp(#[from] crate::enrich::geoip::GeoIpError),
}

/// Totals at exit (also in /metrics while running).
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub decoder: ExporterCounters,
    pub flows_processed: u64,
    /// Raw-topic records consumed, and those that were not datagrams.
    pub consumed: consume::ConsumeTotals,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs the collector until SIGINT/SIGTERM (or until `shutdown` is set by the caller).
pub fn run(opts: &RunOptions, shutdown: &Arc<AtomicBool>) -> Result<RunSummary, RunError> {
    let cfg = &opts.config;
    let started = Instant::now();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| RunError::Metrics(e.to_string()))?;
    crate::telemetry::catalogue::describe();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("flowlens-telemetry")
        .enable_all()
        .build()
        .map_err(RunError::Thread)?;

    // Kafka: required by the split roles, used by `all` when routing allows it.
    let mode = routing::Mode::parse(&cfg.ingestion.routing.mode).unwrap_or(routing::Mode::Auto);
    let kafka = match (opts.role, mode) {
        (Role::Ingest, _) if !cfg.kafka.configured() => {
            return Err(RunError::NoKafka("--role ingest"));
        }
        (Role::Process, _) if !cfg.kafka.configured() => {
            return Err(RunError::NoKafka("--role process"));
        }
        (Role::All, routing::Mode::Kafka) if !cfg.kafka.configured() => {
            return Err(RunError::NoKafka("ingestion.routing.mode: kafka"));
        }
        (Role::All, routing::Mode::Postgres) => false,
        _ => cfg.kafka.configured(),
    };
    let kafka_health = KafkaHealth::default();
    if kafka {
        let created = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                crate::kafka::client::ensure_topics(&cfg.kafka),
            )
            .await
        });
        match created {
            Ok(Ok(created)) if !created.is_empty() => {
                tracing::info!(?created, "Kafka topics created");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(RunError::Kafka(crate::kafka::client::KafkaError::Io(
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the brokers did not answer within 30 s",
                    ),
                )));
            }
        }
    }

    // Processing first: a graph sink that cannot reach PostgreSQL at start is an error.
    let durable = Durable::default();
    let flows_out = if kafka && opts.role.processes() && cfg.kafka.publish_flows {
        let enrichment = FlowEnrichment {
            classifier: classifier(cfg),
            geoip: GeoIp::open(&cfg.enrichment.geoip)?,
        };
        Some(Arc::new(FlowPublisher::new(
            &cfg.kafka,
            enrichment,
            kafka_health.clone(),
        )?))
    } else {
        None
    };
    let processing = if opts.role.processes() {
        Some(Processing::start(
            cfg,
            &opts.output,
            kafka.then(|| durable.clone()),
            flows_out.as_ref(),
        )?)
    } else {
        None
    };
    let postgres_status: Arc<dyn Fn() -> String + Send + Sync> =
        match processing.as_ref().and_then(|p| p.postgres.clone()) {
            Some(h) => Arc::new(move || h.status().to_owned()),
            None => Arc::new(|| "not_configured".to_owned()),
        };
    let kafka_status: Arc<dyn Fn() -> String + Send + Sync> = if kafka {
        let h = kafka_health.clone();
        Arc::new(move || h.status().to_owned())
    } else {
        Arc::new(|| "not_configured".to_owned())
    };
    let ready = Arc::new(AtomicBool::new(false));
    serve_telemetry(
        &rt,
        Telemetry {
            prometheus,
            started,
            ready: ready.clone(),
            checks: Arc::new(move || {
                vec![
                    ("postgresql", postgres_status()),
                    ("kafka", kafka_status()),
                    ("redis", "not_configured".to_owned()),
                ]
            }),
        },
        cfg.telemetry.listen_address,
        shutdown,
    )?;

    // The consumer: the process role, and `all` when datagrams may go through Kafka.
    let consumer_stop = Arc::new(AtomicBool::new(false));
    let consumer = match &processing {
        Some(p) if kafka => Some(consume::spawn(
            ConsumerSetup {
                kafka: cfg.kafka.clone(),
                database_url: p.database_url.clone(),
                health: kafka_health.clone(),
            },
            p.dispatcher.clone(),
            durable,
            consumer_stop.clone(),
        )?),
        _ => None,
    };

    // Change events and alerts, from the graph's tables to their topics (one instance
    // of those writing the graph relays at a time).
    let relay_stop = Arc::new(AtomicBool::new(false));
    let relay = match processing.as_ref().and_then(|p| p.database_url.clone()) {
        Some(database_url) if kafka => {
            let relay = Relay::new(RelaySetup {
                kafka: cfg.kafka.clone(),
                database_url,
                health: kafka_health.clone(),
            })?;
            Some(rt.spawn(relay.run(relay_stop.clone())))
        }
        _ => None,
    };

    // Alert notifications (one instance of those writing the graph notifies at a time).
    let notify_stop = Arc::new(AtomicBool::new(false));
    let notifier = match processing.as_ref().and_then(|p| p.database_url.clone()) {
        Some(database_url) if !cfg.notifications.targets.is_empty() => {
            let n = crate::notify::Notifier::new(cfg.notifications.clone(), &database_url)
                .map_err(|e| RunError::Notify(e.to_string()))?;
            Some(rt.spawn(n.run(notify_stop.clone())))
        }
        _ => None,
    };

    // The seam, and receiving.
    let producer = if kafka && opts.role.receives() {
        Some(Arc::new(RawProducer::new(&cfg.kafka, kafka_health)?))
    } else {
        None
    };
    let route = Arc::new(Route::default());
    let handoff = match (&processing, &producer) {
        (Some(p), Some(k)) => Some(Handoff::Routed {
            local: p.dispatcher.clone(),
            kafka: k.clone(),
            route: route.clone(),
        }),
        (None, Some(k)) => Some(Handoff::Kafka(k.clone())),
        (Some(p), None) if opts.role.receives() => Some(Handoff::Local(p.dispatcher.clone())),
        _ => None,
    };
    let mut receiving = match &handoff {
        Some(h) => Some(Receiving::start(cfg, opts.no_xdp, h)?),
        None => None,
    };

    // Receiving (the program attached or the sockets bound), the consumer subscribed,
    // the database reached when there is one (the sink refuses to start otherwise).
    ready.store(true, Ordering::Relaxed);
    if let Err(e) = crate::telemetry::notify::notify("READY=1") {
        tracing::warn!(error = %e, "could not tell systemd the daemon is ready");
    }
    tracing::info!("ready");

    // Control until shutdown: pressure -> sampling rate, flow rate -> route.
    let mut router = Router::new(
        if producer.is_some() && processing.is_some() {
            mode
        } else {
            routing::Mode::Postgres
        },
        cfg.ingestion.routing.kafka_threshold_flows_per_sec,
    );
    route.set_via_kafka(router.via_kafka());
    m::routing(router.via_kafka());
    let mut control = Control::new(cfg);
    let mut last_state = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        std::thread::park_timeout(Duration::from_millis(100));
        if let (Some(h), Some(r)) = (&handoff, receiving.as_mut()) {
            control.pressure(h.fill(), r);
            r.publish();
        }
        if let Some(k) = &producer {
            k.publish();
        }
        if let Some(f) = &flows_out {
            f.publish_metrics();
        }
        if let Some(p) = &processing {
            p.save_state(&mut last_state);
            p.publish_depths();
            if let Some(via_kafka) = control.route(&mut router, p.flows_seen()) {
                tracing::info!(
                    via_kafka,
                    "routing: datagrams now go {}",
                    if via_kafka {
                        "through Kafka"
                    } else {
                        "straight to the decode workers"
                    }
                );
                route.set_via_kafka(via_kafka);
                m::routing(via_kafka);
                metrics::counter!("flowlens_routing_switches_total",
                    "to" => if via_kafka { "kafka" } else { "postgres" })
                .increment(1);
            }
        }
    }

    ready.store(false, Ordering::Relaxed);
    let _ = crate::telemetry::notify::notify("STOPPING=1");
    tracing::info!("shutting down: draining queues");
    if let Some(r) = receiving.take() {
        r.stop();
    }
    drop(handoff);
    if let Some(k) = producer {
        k.flush(Duration::from_secs(10));
    }
    consumer_stop.store(true, Ordering::Relaxed);
    let totals = consumer.and_then(|c| c.join().ok()).unwrap_or_default();
    let mut summary = processing.map(Processing::finish).unwrap_or_default();
    summary.consumed = totals;
    if let Some(f) = flows_out {
        f.flush(Duration::from_secs(10));
    }
    // The last flush's events and alerts, unless the brokers are away (then the next
    // start publishes them: they are in PostgreSQL).
    notify_stop.store(true, Ordering::Relaxed);
    if let Some(n) = notifier {
        let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), n).await });
    }
    relay_stop.store(true, Ordering::Relaxed);
    if let Some(relay) = relay {
        let last =
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), relay).await });
        if last.is_err() {
            tracing::warn!("the event relay's last pass did not finish within 10 s");
        }
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(summary)
}

/// Serves /health and /metrics, and turns SIGINT/SIGTERM into `shutdown`.
fn serve_telemetry(
    rt: &tokio::runtime::Runtime,
    telemetry: Telemetry,
    addr: std::net::SocketAddr,
    shutdown: &Arc<AtomicBool>,
) -> Result<(), RunError> {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|source| RunError::Telemetry { addr, source })?;
    let stop = shutdown.clone();
    rt.spawn(async move {
        wait_for_signal(&stop).await;
        stop.store(true, Ordering::Relaxed);
    });
    let stop = shutdown.clone();
    rt.spawn(async move {
        let until = async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let app = server::router(telemetry);
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(until)
            .await
        {
            tracing::error!(error = %e, "telemetry server failed");
        }
    });
    tracing::info!(%addr, "serving /health and /metrics");
    Ok(())
}

/// The processing side: decode workers and the sink.
struct Processing {
    dispatcher: Dispatcher,
    workers: Vec<std::thread::JoinHandle<ExporterCounters>>,
    sink: std::thread::JoinHandle<u64>,
    postgres: Option<GraphHealth>,
    /// The graph's database, when the sink writes it.
    database_url: Option<String>,
    /// Flows handed to the sink so far.
    flows: Arc<AtomicU64>,
    /// Where the decoders' state is kept across restarts, and how often it is saved.
    state: Option<(Arc<DecoderStateStore>, Duration)>,
}

impl Processing {
    fn start(
        cfg: &Config,
        output: &Output,
        durable: Option<Durable>,
        flows_out: Option<&Arc<FlowPublisher>>,
    ) -> Result<Self, RunError> {
        let workers = cfg.ingestion.worker_count();
        let (dispatcher, queues) = Dispatcher::new(
            workers,
            cfg.ingestion.backpressure.drop_threshold_queue_depth,
        );
        let (state, mut initial) = open_state(cfg, &dispatcher)?;
        let (mut sink, database_url) = open_sink(output, cfg, durable.clone())?;
        let postgres = sink.postgres_health();
        let flows = Arc::new(AtomicU64::new(0));
        let (sink_tx, sink_rx) = bounded::<SinkItem>(64);
        let counted = flows.clone();
        let sink = std::thread::Builder::new()
            .name("flowlens-sink".into())
            .spawn(move || sink_loop(&sink_rx, sink.as_mut(), durable.as_ref(), &counted))
            .map_err(RunError::Thread)?;
        let mut worker_threads = Vec::new();
        for (i, rx) in queues.into_iter().enumerate() {
            let tx = sink_tx.clone();
            let dcfg = cfg.decoder.clone();
            let batch = Batching {
                size: cfg.ingestion.batch_size,
                timeout: Duration::from_millis(cfg.ingestion.batch_timeout_ms),
            };
            let out = DecodedTo {
                sink: tx,
                flows: flows_out.cloned(),
            };
            let state = state.as_ref().map(|(store, every)| WorkerState {
                store: store.clone(),
                index: i,
                initial: initial.get_mut(i).map(std::mem::take).unwrap_or_default(),
                every: *every,
            });
            worker_threads.push(
                std::thread::Builder::new()
                    .name(format!("flowlens-decode-{i}"))
                    .spawn(move || decode_worker(&rx, dcfg, batch, &out, state))
                    .map_err(RunError::Thread)?,
            );
        }
        Ok(Self {
            dispatcher,
            workers: worker_threads,
            sink,
            postgres,
            database_url,
            flows,
            state,
        })
    }

    /// Writes the decoders' state when it is due and a worker handed in a snapshot.
    fn save_state(&self, last: &mut Instant) {
        if let Some((store, every)) = &self.state
            && last.elapsed() >= *every
        {
            *last = Instant::now();
            write_state(store);
        }
    }

    fn flows_seen(&self) -> u64 {
        self.flows.load(Ordering::Relaxed)
    }

    fn publish_depths(&self) {
        for (i, depth) in self.dispatcher.depths().into_iter().enumerate() {
            m::queue_depth(i, depth);
        }
    }

    /// Decodes what is queued, flushes the sink, and returns the totals. Every other
    /// holder of the dispatcher (receivers, consumer) must be gone.
    fn finish(self) -> RunSummary {
        drop(self.dispatcher);
        let mut summary = RunSummary::default();
        for w in self.workers {
            if let Ok(c) = w.join() {
                summary.decoder.accumulate(&c);
            }
        }
        summary.flows_processed = self.sink.join().unwrap_or(0);
        // The workers handed in their last snapshots as they stopped.
        if let Some((store, _)) = &self.state {
            write_state(store);
        }
        summary
    }
}

/// The receiving side: XDP ring readers or UDP sockets, handing over to the seam.
struct Receiving {
    xdp: Option<(XdpHandle, RingReader)>,
    receivers: Vec<std::thread::JoinHandle<()>>,
    sample_rate: Arc<AtomicU32>,
    losses: LossDeltas,
    /// Stops the ring readers and socket threads: set by [`Receiving::stop`] only once
    /// the program is detached, not at the signal, so that what arrives meanwhile is
    /// still read.
    stop: Arc<AtomicBool>,
}

impl Receiving {
    fn start(cfg: &Config, no_xdp: bool, handoff: &Handoff) -> Result<Self, RunError> {
        let stop = Arc::new(AtomicBool::new(false));
        // XDP when asked for and possible, else UDP sockets.
        let wants_xdp = cfg.xdp.enabled && !no_xdp && !cfg.xdp.interfaces.is_empty();
        let mut xdp = None;
        if wants_xdp {
            match start_xdp(cfg, handoff, &stop) {
                Ok(mut x) => {
                    tracing::info!(
                        attachments = ?x.0.attachments(),
                        instructions = x.0.translated_instructions(),
                        log_level = ?cfg.xdp.log_level,
                        pinned = x.0.is_pinned(),
                        adopted_rings = x.0.adopted_rings(),
                        "XDP fast path attached"
                    );
                    xdp = Some(x);
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    interfaces = ?cfg.xdp.interfaces,
                    "XDP unavailable; falling back to UDP sockets"
                ),
            }
        }
        m::ingest_mode(xdp.is_some());
        let sample_rate = Arc::new(AtomicU32::new(1));
        m::sample_rate(1);
        let controls = udp::Controls {
            shutdown: stop.clone(),
            sample_rate: sample_rate.clone(),
        };
        // In XDP mode the sockets still catch what the program passes on doubt
        // (fragments, IPv6 extension headers, oversized datagrams); in mirror mode
        // another collector owns the ports and gets every datagram, so we stay off them.
        let receivers = if xdp.is_some() && cfg.xdp.mirror {
            Vec::new()
        } else {
            let workers = cfg.ingestion.worker_count();
            let sets = udp::bind(
                cfg.ingestion.bind_address,
                &cfg.ingestion.ports(),
                workers,
                cfg.ingestion.receive_buffer_size,
            )
            .map_err(RunError::Bind)?;
            tracing::info!(ports = ?cfg.ingestion.ports(), workers, "receiving on UDP sockets");
            udp::spawn(sets, handoff, &controls).map_err(RunError::Thread)?
        };
        Ok(Self {
            xdp,
            receivers,
            sample_rate,
            losses: LossDeltas::default(),
            stop,
        })
    }

    /// Samples 1:`rate` from now on: XDP before the copy to the ring, the sockets in
    /// userspace.
    fn set_sample_rate(&mut self, rate: u32) {
        if let Some(Err(e)) = self.xdp.as_mut().map(|(h, _)| h.set_sample_rate(rate)) {
            tracing::error!(error = %e, "could not set the XDP sampling rate");
        }
        self.sample_rate.store(rate, Ordering::Relaxed);
        m::sample_rate(rate);
    }

    fn publish(&mut self) {
        if let Some((handle, _)) = self.xdp.as_mut() {
            if let Err(e) = handle.renew_lease() {
                tracing::error!(error = %e, "could not renew the pinned XDP program's lease");
            }
            publish_xdp(handle, &mut self.losses);
        }
    }

    /// Stops receiving without losing what is on its way. A program that is not pinned
    /// is detached first (what arrives from then on takes the kernel's path to the
    /// sockets, still open), then the rings are read to the end, then the sockets until
    /// they are empty, and only then closed. A pinned program stays attached for the
    /// next daemon: the rings are read to what they hold now, the losses published, and
    /// the rest stays in the rings for the successor.
    fn stop(mut self) {
        let xdp = self.xdp.take().map(|(mut handle, reader)| {
            if !handle.is_pinned() {
                if let Err(e) = handle.detach() {
                    tracing::error!(error = %e, "detaching XDP");
                }
                // A run of the program that began before the detach may still be
                // writing on another CPU (it ends within microseconds); give it that
                // before the last read of the rings.
                std::thread::park_timeout(Duration::from_millis(20));
            }
            let stats = reader.stop();
            (handle, stats)
        });
        self.stop.store(true, Ordering::Relaxed);
        for r in self.receivers {
            let _ = r.join();
        }
        if let Some((mut handle, stats)) = xdp {
            publish_xdp(&mut handle, &mut self.losses);
            let pinned = handle.is_pinned();
            if pinned && let Err(e) = handle.hand_over() {
                tracing::error!(error = %e, "handing the pinned XDP program over");
            }
            tracing::info!(
                records = stats.records,
                malformed = stats.malformed,
                pinned,
                "XDP {}",
                if pinned {
                    "left attached for the next daemon"
                } else {
                    "detached"
                }
            );
        }
    }
}

/// The control loop's state: sampling under pressure, and the route by flow rate.
struct Control {
    policy: PressurePolicy,
    pressure: Pressure,
    last_rate: Instant,
    last_flows: u64,
}

impl Control {
    fn new(cfg: &Config) -> Self {
        let bp = &cfg.ingestion.backpressure;
        Self {
            policy: PressurePolicy {
                enabled: bp.enabled,
                rate_under_pressure: bp.sample_rate_under_pressure,
                high_watermark: bp.high_watermark,
                low_watermark: bp.low_watermark,
            },
            pressure: Pressure::default(),
            last_rate: Instant::now(),
            last_flows: 0,
        }
    }

    fn pressure(&mut self, fill: f64, receiving: &mut Receiving) {
        if let Some(rate) = self.pressure.update(&self.policy, fill) {
            tracing::warn!(rate, "ingest pressure changed the sampling rate");
            receiving.set_sample_rate(rate);
        }
    }

    /// Feeds the router once a second with the flows decoded meanwhile.
    fn route(&mut self, router: &mut Router, flows: u64) -> Option<bool> {
        let elapsed = self.last_rate.elapsed();
        if elapsed < Duration::from_secs(1) {
            return None;
        }
        #[expect(clippy::cast_precision_loss, reason = "a rate")]
        let rate = flows.saturating_sub(self.last_flows) as f64 / elapsed.as_secs_f64();
        self.last_rate = Instant::now();
        self.last_flows = flows;
        metrics::gauge!("flowlens_routing_flows_per_second").set(rate);
        router.update(rate, elapsed)
    }
}

/// Loads and attaches the XDP program and starts the ring readers.
fn start_xdp(
    cfg: &Config,
    handoff: &Handoff,
    shutdown: &Arc<AtomicBool>,
) -> Result<(XdpHandle, RingReader), String> {
    let object = cfg
        .xdp
        .object_path
        .clone()
        .unwrap_or_else(xdp::default_object_path);
    let mut options = XdpOptions::new(object, cfg.xdp.interfaces.clone());
    let i = &cfg.ingestion;
    options.ports = vec![
        (i.netflow_port, PortKind::Netflow),
        (i.ipfix_port, PortKind::Ipfix),
        (i.sflow_port, PortKind::Sflow),
    ];
    options.ports.sort_unstable_by_key(|p| p.0);
    options.ports.dedup_by_key(|p| p.0);
    options.exporter_prefixes = cfg
        .xdp
        .exporter_prefixes
        .iter()
        .map(|p| p.parse::<ExporterPrefix>().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    options.mirror = cfg.xdp.mirror;
    options.ring_size_bytes = cfg.xdp.ring_size_bytes;
    options.log_level = cfg.xdp.log_level;
    if !cfg.xdp.pin_path.is_empty() {
        options.pin_dir = Some(PathBuf::from(&cfg.xdp.pin_path));
    }
    options.lease = Duration::from_secs(u64::from(cfg.xdp.handover_seconds));
    let mut handle = XdpHandle::load(&options).map_err(|e| e.to_string())?;
    let rings = handle
        .take_rings()
        .ok_or("the XDP rings were already taken")?;
    let reader = RingReader::spawn(
        rings,
        handoff,
        shutdown.clone(),
        &RingReaderOptions {
            // A pinned program keeps filling the rings after the stop: read what
            // they hold for a second (two full 8 MiB rings take ~0.1 s), leave the
            // rest to the next daemon.
            last_drain: handle.is_pinned().then_some(Duration::from_secs(1)),
            ..RingReaderOptions::default()
        },
    )
    .map_err(|e| format!("starting ring readers: {e}"))?;
    Ok((handle, reader))
}

/// Publishes the program's counters, and what it consumed per exporter. A datagram the
/// program samples out or loses to a full ring never reaches userspace, yet the
/// collector did receive it: it is counted as received (`source="xdp"`) and as sampled
/// out or dropped for its exporter, so the per-exporter identity received = decoded +
/// malformed + sampled out + dropped holds in XDP mode too.
fn publish_xdp(handle: &mut XdpHandle, losses: &mut LossDeltas) {
    forward_xdp_log(handle);
    match handle.counters() {
        Ok(c) => {
            for (name, value) in c.labelled() {
                m::xdp_counter(name, value);
            }
        }
        Err(e) => tracing::debug!(error = %e, "reading XDP counters"),
    }
    match handle.per_exporter() {
        Ok(totals) => {
            for (exporter, d) in losses.update(totals) {
                m::ingest_received(exporter, m::SOURCE_XDP, d.sampled_out + d.ring_full);
                m::ingest_sampled_out(exporter, d.sampled_out);
                m::ingest_dropped(exporter, d.ring_full);
            }
        }
        Err(e) => tracing::debug!(error = %e, "reading the XDP per-exporter state"),
    }
}

/// Writes what the XDP program reported (`xdp.log_level`) into this log, target
/// `flowlens::xdp`. Records the operator asked for with `xdp.log_level` are logged at
/// info at least, so they show with the default log filter.
fn forward_xdp_log(handle: &mut XdpHandle) {
    for r in handle.drain_log() {
        let level = r.level.as_str();
        match r.level {
            log::Level::Error => {
                tracing::error!(target: "flowlens::xdp", level, "{}", r.message);
            }
            log::Level::Warn => tracing::warn!(target: "flowlens::xdp", level, "{}", r.message),
            _ => tracing::info!(target: "flowlens::xdp", level, "{}", r.message),
        }
    }
}

/// Turns the program's running per-exporter totals into increments for counters.
#[derive(Debug, Default)]
struct LossDeltas {
    last: HashMap<IpAddr, ExporterLosses>,
}

impl LossDeltas {
    /// The increase of each exporter's totals since the last call. A total below the
    /// last one means the LRU map dropped the exporter and counts afresh; an exporter
    /// absent from `totals` is forgotten here too, so a later entry for it is a fresh
    /// count and this map never outgrows the program's (entries with nothing to count,
    /// which only hold a sampling position, are not kept at all).
    fn update(&mut self, totals: Vec<(IpAddr, ExporterLosses)>) -> Vec<(IpAddr, ExporterLosses)> {
        let mut last = std::mem::take(&mut self.last);
        let mut out = Vec::new();
        for (exporter, total) in totals {
            if total == ExporterLosses::default() {
                continue;
            }
            let before = last.remove(&exporter).unwrap_or_default();
            let delta = |now: u64, before: u64| now.checked_sub(before).unwrap_or(now);
            let d = ExporterLosses {
                sampled_out: delta(total.sampled_out, before.sampled_out),
                ring_full: delta(total.ring_full, before.ring_full),
            };
            if d != ExporterLosses::default() {
                out.push((exporter, d));
            }
            self.last.insert(exporter, total);
        }
        out
    }
}

async fn wait_for_signal(stop: &AtomicBool) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if stop.load(Ordering::Relaxed) { return; }
            }
        }
    }
    tracing::info!("signal received");
}

#[derive(Debug, Clone, Copy)]
struct Batching {
    size: usize,
    timeout: Duration,
}

/// The decoders' state store (`state.directory`) and each worker's part of the saved
/// state, split by the new exporter-to-worker mapping; none when state is off.
type OpenedState = (
    Option<(Arc<DecoderStateStore>, Duration)>,
    Vec<Option<StateSnapshot>>,
);

fn open_state(cfg: &Config, dispatcher: &Dispatcher) -> Result<OpenedState, RunError> {
    let workers = dispatcher.workers();
    let Some(dir) = cfg
        .state
        .resolve(std::env::var("STATE_DIRECTORY").ok().as_deref())
    else {
        tracing::info!(
            "decoder state is not kept across restarts (set state.directory, or create {})",
            crate::config::DEFAULT_STATE_DIRECTORY
        );
        return Ok((None, vec![None; workers]));
    };
    let store = DecoderStateStore::open(&dir, workers)?;
    let saved = match store.load() {
        Ok(saved) => saved,
        Err(e) => {
            metrics::counter!("flowlens_decoder_state_load_failures_total").increment(1);
            tracing::warn!("decoder state not loaded, starting without it: {e}");
            store.set_aside();
            None
        }
    };
    let initial = match saved {
        Some(s) => {
            #[expect(clippy::cast_precision_loss, reason = "a gauge")]
            metrics::gauge!("flowlens_decoder_state_loaded_templates")
                .set(s.templates.len() as f64);
            tracing::info!(templates = s.templates.len(), sampling = s.sampling.len(),
                path = %store.path().display(), "decoder state loaded");
            s.split(workers, |e| dispatcher.shard(e))
                .into_iter()
                .map(Some)
                .collect()
        }
        None => vec![None; workers],
    };
    let every = Duration::from_secs(cfg.state.decoder_save_interval_seconds.max(1));
    Ok((Some((Arc::new(store), every)), initial))
}

fn write_state(store: &DecoderStateStore) {
    match store.save_if_changed() {
        Ok(Some(templates)) => {
            metrics::counter!("flowlens_decoder_state_saves_total").increment(1);
            #[expect(clippy::cast_precision_loss, reason = "a gauge")]
            metrics::gauge!("flowlens_decoder_state_templates").set(templates as f64);
        }
        Ok(None) => {}
        Err(e) => {
            metrics::counter!("flowlens_decoder_state_save_failures_total").increment(1);
            tracing::warn!("saving the decoder state: {e}");
        }
    }
}

/// A decode worker's part in keeping decoder state: what it starts from, and where it
/// hands its snapshots.
struct WorkerState {
    store: Arc<DecoderStateStore>,
    index: usize,
    initial: Option<StateSnapshot>,
    every: Duration,
}

/// Where a decode worker's records go: the sink, and the flows topic when published.
struct DecodedTo {
    sink: Sender<SinkItem>,
    flows: Option<Arc<FlowPublisher>>,
}

/// Decodes one worker's queue until it is closed; returns the worker's totals.
fn decode_worker(
    rx: &Receiver<Work>,
    config: DecoderConfig,
    batching: Batching,
    sink: &DecodedTo,
    mut state: Option<WorkerState>,
) -> ExporterCounters {
    let mut decoder = Decoder::new(config);
    if let Some(saved) = state.as_mut().and_then(|s| s.initial.take())
        && let Err(e) = decoder.load_state(saved)
    {
        metrics::counter!("flowlens_decoder_state_load_failures_total").increment(1);
        tracing::warn!("decoder state not loaded: {e}");
    }
    let mut last_state = Instant::now();
    let mut batch: Vec<FlowRecord> = Vec::with_capacity(batching.size);
    let mut batch_started = Instant::now();
    let mut last_publish = Instant::now();
    let mut previous: HashMap<IpAddr, (u64, u64)> = HashMap::new();
    let publish_every = Duration::from_millis(500);
    let latency = m::processing_latency();
    let mut malformed = MalformedLog::default();
    loop {
        let wait = batching.timeout.saturating_sub(batch_started.elapsed());
        match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(Work::Mark(mark)) => {
                // Everything before the mark goes to the sink before it.
                if !batch.is_empty() {
                    send_batch(sink, &mut batch, batching.size);
                    batch_started = Instant::now();
                }
                let _ = sink.sink.send(SinkItem::Mark(mark));
            }
            Ok(Work::Datagram(d)) => {
                let dg = Datagram {
                    exporter: d.exporter,
                    received_at_ms: d.received_at_ms,
                    payload: &d.payload,
                };
                // A malformed datagram is counted by the decoder, and logged (see
                // `malformed_log`).
                let result = if let Some(len) = d.truncated_from {
                    let error = DecodeError::Truncated {
                        offset: d.payload.len(),
                        needed: len,
                        available: d.payload.len(),
                    };
                    decoder.reject(d.exporter, &error);
                    Err(error)
                } else {
                    decoder.decode_presampled(&dg, d.presample_rate, &mut batch)
                };
                if let Err(error) = result {
                    malformed.report(d.exporter, &d.payload, &error, Instant::now());
                }
                #[expect(clippy::cast_precision_loss, reason = "latency in seconds")]
                latency.record(now_ms().saturating_sub(d.received_at_ms) as f64 / 1000.0);
                if batch.len() >= batching.size {
                    send_batch(sink, &mut batch, batching.size);
                    batch_started = Instant::now();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if !batch.is_empty() {
                    send_batch(sink, &mut batch, batching.size);
                }
                batch_started = Instant::now();
                decoder.expire(now_ms());
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_publish.elapsed() >= publish_every {
            publish(&decoder, &mut previous, last_publish.elapsed());
            last_publish = Instant::now();
            if let Some(s) = &state
                && last_state.elapsed() >= s.every
            {
                s.store.put(s.index, decoder.save_state());
                last_state = Instant::now();
            }
        }
    }
    decoder.expire_all();
    if let Some(s) = &state {
        s.store.put(s.index, decoder.save_state());
    }
    if !batch.is_empty() {
        send_batch(sink, &mut batch, batching.size);
    }
    publish(&decoder, &mut previous, last_publish.elapsed());
    decoder.totals()
}

fn send_batch(to: &DecodedTo, batch: &mut Vec<FlowRecord>, size: usize) {
    if let Some(flows) = &to.flows {
        flows.publish(batch);
    }
    let full = std::mem::replace(batch, Vec::with_capacity(size));
    // The sink only goes away at shutdown, after the workers.
    let _ = to.sink.send(SinkItem::Flows(full));
}

/// What the decode workers send the sink.
enum SinkItem {
    Flows(Vec<FlowRecord>),
    /// Passed on by one worker: everything it had before the mark was sent first.
    Mark(Arc<Mark>),
}

fn publish(decoder: &Decoder, previous: &mut HashMap<IpAddr, (u64, u64)>, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-3);
    for (exporter, c) in decoder.counters() {
        m::decoder(exporter, &c);
        let flows: u64 = c.records.iter().sum();
        let (pf, pp) = previous
            .insert(exporter, (flows, c.packets))
            .unwrap_or((0, 0));
        #[expect(clippy::cast_precision_loss, reason = "rates")]
        m::exporter_rates(
            exporter,
            flows.saturating_sub(pf) as f64 / secs,
            c.packets.saturating_sub(pp) as f64 / secs,
        );
    }
}

/// Where batches are written.
trait Sink: Send {
    fn write(&mut self, batch: &[FlowRecord]) -> std::io::Result<()>;
    /// Called when no batch came for a while (and before `close`).
    fn flush(&mut self) -> std::io::Result<()>;
    /// Called once at shutdown, after the last batch.
    fn close(&mut self) -> std::io::Result<()> {
        self.flush()
    }
    /// Called every idle tick (no batch for 200 ms); `dirty` says whether anything
    /// was written since the last one. File sinks flush what they wrote.
    fn idle(&mut self, dirty: bool) -> std::io::Result<()> {
        if dirty { self.flush() } else { Ok(()) }
    }
    /// The PostgreSQL connection state for `/health`, for sinks that have one.
    fn postgres_health(&self) -> Option<GraphHealth> {
        None
    }
    /// Every flow written so far was read before these raw-topic positions. A sink
    /// that keeps nothing in memory has them once it flushed.
    fn positions(&mut self, p: Positions, durable: Option<&Durable>) {
        match self.flush() {
            Ok(()) => {
                if let Some(d) = durable {
                    d.extend(&p);
                }
            }
            Err(e) => tracing::error!(error = %e, "sink flush failed"),
        }
    }
    /// Makes everything written so far durable now; whether it is.
    fn flush_durable(&mut self) -> bool {
        self.flush().is_ok()
    }
}

impl Sink for GraphSink {
    fn write(&mut self, batch: &[FlowRecord]) -> std::io::Result<()> {
        GraphSink::write(self, batch);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tick();
        Ok(())
    }
    fn close(&mut self) -> std::io::Result<()> {
        GraphSink::close(self);
        Ok(())
    }
    /// The graph writes its windows when its interval is due, data or not.
    fn idle(&mut self, _dirty: bool) -> std::io::Result<()> {
        self.tick();
        Ok(())
    }
    fn postgres_health(&self) -> Option<GraphHealth> {
        Some(self.health())
    }
    /// Written with the next flush, in its transaction.
    fn positions(&mut self, p: Positions, _durable: Option<&Durable>) {
        self.add_positions(p);
    }
    fn flush_durable(&mut self) -> bool {
        self.flush_now()
    }
}

struct JsonlSink {
    out: std::io::BufWriter<std::fs::File>,
}

impl Sink for JsonlSink {
    fn write(&mut self, batch: &[FlowRecord]) -> std::io::Result<()> {
        for r in batch {
            self.out.write_all(output::json_line(r).as_bytes())?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

struct DiscardSink;

impl Sink for DiscardSink {
    fn write(&mut self, _batch: &[FlowRecord]) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The internal ranges: the built-ins and `enrichment.internal_prefixes`.
fn classifier(cfg: &Config) -> Classifier {
    Classifier::new(
        cfg.enrichment
            .internal_prefixes
            .iter()
            .filter_map(|p| p.parse().ok()),
    )
}

/// The sink, and the graph's database URL when it writes one.
fn open_sink(
    output: &Output,
    cfg: &Config,
    durable: Option<Durable>,
) -> Result<(Box<dyn Sink>, Option<String>), RunError> {
    let url = cfg
        .database
        .effective_url(std::env::var("DATABASE_URL").ok());
    let output = match (output, &url) {
        (Output::Auto, Some(_)) => &Output::Postgres,
        (Output::Auto, None) => &Output::Discard,
        (o, _) => o,
    };
    Ok(match output {
        Output::Postgres => {
            let url = url.ok_or(RunError::NoDatabase)?;
            let classifier = classifier(cfg);
            let settings = GraphSettings {
                url: url.clone(),
                database: cfg.database.clone(),
                resolution: cfg.dependency_resolution.clone(),
                alerts: cfg.alerts.clone(),
                classifier,
                enrichment: cfg.enrichment.clone(),
                state_dir: cfg
                    .state
                    .resolve(std::env::var("STATE_DIRECTORY").ok().as_deref()),
            };
            let sink = GraphSink::open_with(&settings, GraphHealth::default(), durable)
                .map_err(RunError::Graph)?;
            tracing::info!("writing the dependency graph to PostgreSQL");
            (Box::new(sink), Some(url))
        }
        Output::Jsonl(path) => {
            let f = std::fs::File::create(path).map_err(|source| RunError::Output {
                path: path.clone(),
                source,
            })?;
            (
                Box::new(JsonlSink {
                    out: std::io::BufWriter::with_capacity(1 << 20, f),
                }),
                None,
            )
        }
        Output::Discard | Output::Auto => (Box::new(DiscardSink), None),
    })
}

fn sink_loop(
    rx: &Receiver<SinkItem>,
    sink: &mut dyn Sink,
    durable: Option<&Durable>,
    flows: &AtomicU64,
) -> u64 {
    let mut total = 0u64;
    let mut dirty = false;
    // Marks passed on by some workers but not yet all, by address.
    let mut marks: HashMap<usize, (Arc<Mark>, usize)> = HashMap::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(SinkItem::Flows(batch)) => {
                if let Err(e) = sink.write(&batch) {
                    tracing::error!(error = %e, "sink write failed");
                }
                let n = batch.len() as u64;
                total += n;
                flows.fetch_add(n, Ordering::Relaxed);
                m::flows_processed(n);
                dirty = true;
            }
            Ok(SinkItem::Mark(mark)) => {
                let key = Arc::as_ptr(&mark) as usize;
                let seen = {
                    let e = marks.entry(key).or_insert_with(|| (mark.clone(), 0));
                    e.1 += 1;
                    e.1
                };
                if seen >= mark.workers {
                    marks.remove(&key);
                    // Every worker passed it on: all flows before it were written.
                    sink.positions(mark.positions.clone(), durable);
                    if let Some(reply) = &mark.flush {
                        let _ = reply.send(sink.flush_durable());
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = sink.idle(dirty) {
                    tracing::error!(error = %e, "sink flush failed");
                }
                dirty = false;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Err(e) = sink.close() {
        tracing::error!(error = %e, "sink flush failed");
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_deltas_count_increases_and_restart_after_eviction() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let l = |sampled_out, ring_full| ExporterLosses {
            sampled_out,
            ring_full,
        };
        let mut d = LossDeltas::default();
        assert_eq!(
            d.update(vec![(a, l(3, 0)), (b, l(0, 0))]),
            vec![(a, l(3, 0))]
        );
        assert_eq!(
            d.update(vec![(a, l(3, 0)), (b, l(5, 1))]),
            vec![(b, l(5, 1))]
        );
        assert_eq!(d.update(vec![(a, l(10, 2))]), vec![(a, l(7, 2))]);
        // `a` was evicted and came back with fresh counts.
        assert_eq!(d.update(vec![(a, l(2, 0))]), vec![(a, l(2, 0))]);
        // `b` was evicted too (absent above), and came back past its old total.
        assert_eq!(
            d.update(vec![(a, l(2, 0)), (b, l(9, 1))]),
            vec![(b, l(9, 1))]
        );
        // Entries with nothing counted are not remembered.
        assert_eq!(d.update(vec![(a, l(0, 0))]), vec![]);
        assert!(d.last.is_empty());
    }
}
