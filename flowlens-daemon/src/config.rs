//! The daemon's one typed configuration.
//!
//! Sections and keys mirror DESIGN.md §3 (`ingestion.netflow_port`,
//! `ingestion.backpressure.drop_threshold_queue_depth`, ...). Every key is optional and
//! defaults to the design's value. Precedence: defaults < YAML file (`--config`) <
//! environment `FLOWLENS_<SECTION>__<KEY>` (nested keys joined by `__`, e.g.
//! `FLOWLENS_INGESTION__BACKPRESSURE__ENABLED=false`) < command-line flags. Sections
//! later issues will fill (`kafka`, `api`, parts of `enrichment`) are accepted as-is so
//! one config file can serve every stage today.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::decode::DecoderConfig;
pub use crate::graph::config::{AlertsConfig, DatabaseConfig, DependencyResolutionConfig};

/// DESIGN.md §3.2 `enrichment`: reverse DNS, `GeoIP`, the enrichment cache, and
/// `internal_prefixes` (ours: prefixes that count as internal besides the built-in
/// private ranges), and `cloud`: the inventories (Azure, GCP) that say who an address is.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EnrichmentConfig {
    pub dns: crate::enrich::rdns::DnsConfig,
    pub geoip: crate::enrich::geoip::GeoIpConfig,
    /// Cloud inventories: who an address is, from the clouds' own APIs.
    pub cloud: crate::inventory::CloudConfig,
    /// Exporters' names and interfaces, over SNMP.
    pub snmp: crate::inventory::snmp::SnmpConfig,
    pub cache: CacheConfig,
    /// e.g. `["203.0.113.0/24"]`: public space that is ours.
    pub internal_prefixes: Vec<String>,
}

/// `enrichment.cache`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// "memory", or "redis": reverse-DNS answers and cloud inventory snapshots shared
    /// by the daemons writing one graph (Redis down: each uses its memory).
    pub backend: String,
    /// The Redis server of the `redis` backend.
    pub redis_url: String,
    /// Entries each enrichment cache (reverse DNS) keeps at most.
    pub max_memory_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            backend: "memory".into(),
            redis_url: "redis://localhost:6379/0".into(),
            max_memory_entries: 100_000,
        }
    }
}

/// The whole daemon configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub ingestion: IngestionConfig,
    pub xdp: XdpConfig,
    /// Decoder knobs (template cache, hold time, clock rules, per-exporter sampling).
    pub decoder: DecoderConfig,
    pub telemetry: TelemetryConfig,
    pub enrichment: EnrichmentConfig,
    pub dependency_resolution: DependencyResolutionConfig,
    pub database: DatabaseConfig,
    /// Rules turning change events into alerts.
    pub alerts: AlertsConfig,
    /// The Kafka path (design §4.2, §6.2): brokers, topics, producer settings.
    pub kafka: KafkaConfig,
    /// What is kept across restarts, and where.
    pub state: StateConfig,
    /// Where alerts are sent (Slack, PagerDuty, webhooks).
    pub notifications: crate::notify::config::NotificationsConfig,
    /// Accepted so one file can configure the daemon and the API.
    #[schemars(with = "serde_json::Value")]
    pub api: serde_yaml::Value,
}

/// The `kafka` section: where the high-volume path's topics live and how records are
/// produced to them. Empty `bootstrap_servers` means Kafka is not configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`; the environment's `KAFKA_BOOTSTRAP_SERVERS` (design
    /// §7.2) wins over it.
    pub bootstrap_servers: String,
    /// The consumer group `process` instances share (they split the partitions).
    pub consumer_group: String,
    pub topics: KafkaTopics,
    /// Partitions of topics created at start (existing topics are left as they are).
    /// One exporter's datagrams go to one partition, so this also bounds how many
    /// `process` instances share the work.
    pub partitions: i32,
    /// Replicas of topics created at start.
    pub replication_factor: i32,
    /// `lz4` (default), `zstd`, `gzip`, `snappy` or `none`.
    pub compression: String,
    /// How long a producer waits to fill a batch.
    pub linger_ms: u64,
    /// Largest batch a producer sends to one partition, in bytes.
    pub batch_size: u64,
    /// Datagrams an `ingest` producer holds while the broker is slow or away; past
    /// it (or `max_buffered_mib`) a datagram is dropped and counted for its exporter,
    /// never waited for.
    pub max_buffered_datagrams: u32,
    /// Bytes an `ingest` producer holds at most, in mebibytes.
    pub max_buffered_mib: u32,
    /// How long a produced datagram may wait for the broker before it is given up
    /// (and counted as dropped for its exporter).
    pub message_timeout_ms: u64,
    /// How often a `process` instance tells its decode workers where it is in the
    /// raw topic; the graph flush writes the last such position with its flows, and
    /// waits for the next one once its interval is due (so it comes at most this much
    /// later).
    pub mark_interval_ms: u64,
    /// This instance's name in the records it produces (`ingest_id`); the host name
    /// when empty.
    pub instance_id: String,
    /// Whether instances that decode also publish every decoded record to
    /// `topics.flows` (`flowlens.v1.Flow`, enriched); off by default: at full rate it
    /// is about as much broker traffic again as the raw topic, for consumers that want
    /// flows rather than the graph.
    pub publish_flows: bool,
    /// Passed to librdkafka as they are (TLS, SASL, timeouts): `security.protocol`,
    /// `sasl.mechanisms`, ... They win over the settings above.
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: String::new(),
            consumer_group: "flowlens-process".into(),
            topics: KafkaTopics::default(),
            partitions: 12,
            replication_factor: 1,
            compression: "lz4".into(),
            linger_ms: 5,
            batch_size: 1 << 20,
            max_buffered_datagrams: 200_000,
            max_buffered_mib: 256,
            message_timeout_ms: 300_000,
            mark_interval_ms: 500,
            instance_id: String::new(),
            publish_flows: false,
            properties: std::collections::BTreeMap::new(),
        }
    }
}

/// Topic names; the schema version is part of each (`-v1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaTopics {
    /// Datagrams as received (`flowlens.v1.RawDatagram`), keyed by exporter.
    pub raw: String,
    /// Decoded and enriched flows (optional).
    pub flows: String,
    /// Change events the graph writes.
    pub changes: String,
    /// Alerts the graph raises.
    pub alerts: String,
}

impl Default for KafkaTopics {
    fn default() -> Self {
        Self {
            raw: "flowlens.raw-v1".into(),
            flows: "flowlens.flows-v1".into(),
            changes: "flowlens.changes-v1".into(),
            alerts: "flowlens.alerts-v1".into(),
        }
    }
}

impl KafkaConfig {
    /// Whether brokers are configured.
    pub fn configured(&self) -> bool {
        !self.bootstrap_servers.trim().is_empty()
    }

    /// `instance_id`, or the host name when it is empty.
    pub fn instance_name(&self) -> String {
        if self.instance_id.is_empty() {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default()
        } else {
            self.instance_id.clone()
        }
    }
}

/// DESIGN.md §3.1 `ingestion`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IngestionConfig {
    /// Address the UDP sockets bind to. `0.0.0.0` (the default) also opens `IPv6`
    /// sockets on `::`, so exporters on either family are heard.
    pub bind_address: IpAddr,
    /// UDP port of NetFlow v5 and v9.
    pub netflow_port: u16,
    /// UDP port of sFlow v5.
    pub sflow_port: u16,
    /// UDP port of IPFIX.
    pub ipfix_port: u16,
    /// SO_RCVBUF for each UDP socket, in bytes (16 `MiB`: a few hundred ms of a busy
    /// exporter at line rate).
    pub receive_buffer_size: usize,
    /// Flows handed to the sink per batch.
    pub batch_size: usize,
    /// Longest a partial batch waits before it is handed to the sink.
    pub batch_timeout_ms: u64,
    /// Decode workers (and UDP receive sockets per port); 0 = one per core.
    pub workers: usize,
    pub routing: RoutingConfig,
    pub backpressure: BackpressureConfig,
}

impl Default for IngestionConfig {
    fn default() -> Self {
        Self {
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            netflow_port: 2055,
            sflow_port: 6343,
            ipfix_port: 4739,
            receive_buffer_size: 16 * 1024 * 1024,
            batch_size: 1000,
            batch_timeout_ms: 100,
            workers: 0,
            routing: RoutingConfig::default(),
            backpressure: BackpressureConfig::default(),
        }
    }
}

impl IngestionConfig {
    /// The UDP ports to listen on (deduplicated: several protocols may share one).
    pub fn ports(&self) -> Vec<u16> {
        let mut p = vec![self.netflow_port, self.ipfix_port, self.sflow_port];
        p.sort_unstable();
        p.dedup();
        p
    }

    /// Worker count with 0 resolved to the number of cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    }
}

/// DESIGN.md §3.1 `ingestion.routing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// `postgres` (never Kafka), `kafka` (always; Kafka must be configured) or `auto`
    /// (Kafka above `kafka_threshold_flows_per_sec` when configured).
    pub mode: String,
    /// With `mode: auto`, the decoded flow rate above which datagrams go through
    /// Kafka (after 3 s above it; back below 70 % of it for 10 s).
    pub kafka_threshold_flows_per_sec: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            mode: "auto".to_owned(),
            kafka_threshold_flows_per_sec: 10_000,
        }
    }
}

/// DESIGN.md §3.1 `ingestion.backpressure`, plus the watermarks that say when
/// "under pressure" starts and ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BackpressureConfig {
    /// Whether the daemon samples 1:N under pressure (else a full queue drops).
    pub enabled: bool,
    /// 1:N sampling applied while under pressure (XDP pre-sampling, or userspace
    /// sampling in socket mode).
    pub sample_rate_under_pressure: u32,
    /// Capacity of each decode worker's queue, in datagrams: beyond it datagrams are
    /// dropped and counted.
    pub drop_threshold_queue_depth: usize,
    /// Queue fill (fraction of the drop threshold) that turns sampling on.
    pub high_watermark: f64,
    /// Queue fill below which sampling turns off again (hysteresis).
    pub low_watermark: f64,
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sample_rate_under_pressure: 10,
            drop_threshold_queue_depth: 100_000,
            high_watermark: 0.5,
            low_watermark: 0.1,
        }
    }
}

/// The XDP fast path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct XdpConfig {
    /// Use XDP when interfaces are given; false forces UDP sockets.
    pub enabled: bool,
    /// Interfaces to attach to (also `--iface`).
    pub interfaces: Vec<String>,
    /// The BPF object built by `cargo xtask build-ebpf` (default: found next to the
    /// workspace's target directory, or `$FLOWLENS_EBPF_OBJECT`).
    pub object_path: Option<PathBuf>,
    /// Also pass steered packets to the kernel stack (run beside another collector).
    pub mirror: bool,
    /// Only steer datagrams from these exporter prefixes ("192.0.2.0/24"); empty = all.
    pub exporter_prefixes: Vec<String>,
    /// Size of each per-CPU ring buffer in bytes (a power of two).
    pub ring_size_bytes: u32,
    /// The XDP program's own reports through aya-log, forwarded to this log: `off`
    /// (free: the verifier removes the reporting code), `error` (configuration or ABI
    /// mismatch), `warn` (setup problems), `debug` (datagrams to a flow port passed on
    /// doubt: fragments, bad UDP lengths, oversized; at most one a second per kind and
    /// CPU), `trace`.
    pub log_level: crate::ingest::xdp::XdpLogLevel,
    /// A directory on bpffs where the program's links and shared maps are pinned, so
    /// a restarted (or upgraded) daemon takes over the running program and what its
    /// rings buffered meanwhile instead of detaching it; empty: off (the program
    /// lives as long as the daemon). `rm -r` of the directory detaches it for good.
    pub pin_path: String,
    /// How long a pinned program keeps steering into its rings after its daemon
    /// stopped renewing the lease (a restart in progress); then it passes flow
    /// datagrams to the kernel's stack (counted as `lease_expired`).
    pub handover_seconds: u32,
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interfaces: Vec::new(),
            object_path: None,
            mirror: false,
            exporter_prefixes: Vec::new(),
            ring_size_bytes: 8 * 1024 * 1024,
            log_level: crate::ingest::xdp::XdpLogLevel::Off,
            pin_path: String::new(),
            handover_seconds: 60,
        }
    }
}

/// `/health` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Where `GET /health` and `GET /metrics` are served.
    pub listen_address: SocketAddr,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            listen_address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464),
        }
    }
}

/// `state`: what the daemon keeps across restarts (today the decoder's templates,
/// sampling rates and exporters' boot times, so data from an exporter that resends its
/// templates every 30 minutes is decoded at once after a restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// The directory of state files. Empty: systemd's `$STATE_DIRECTORY` (the unit's
    /// `StateDirectory=`), else `/var/lib/flowlens` when it exists; `off`: keep nothing.
    pub directory: String,
    /// How often the decoder state is saved besides at shutdown (a crash loses at
    /// most what changed within this interval).
    pub decoder_save_interval_seconds: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            directory: String::new(),
            decoder_save_interval_seconds: 60,
        }
    }
}

/// Where the packaged daemon keeps its state when nothing else says.
pub const DEFAULT_STATE_DIRECTORY: &str = "/var/lib/flowlens";

impl StateConfig {
    /// The state directory, given systemd's `$STATE_DIRECTORY` (a colon-separated
    /// list; the first is ours); `None` when state is off or nowhere to be kept.
    pub fn resolve(&self, systemd: Option<&str>) -> Option<PathBuf> {
        match self.directory.trim() {
            "off" => None,
            "" => systemd
                .and_then(|s| s.split(':').next())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    let d = PathBuf::from(DEFAULT_STATE_DIRECTORY);
                    d.is_dir().then_some(d)
                }),
            d => Some(PathBuf::from(d)),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {origin}: {source}")]
    Parse {
        origin: String,
        source: serde_yaml::Error,
    },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "FLOWLENS_";

impl Config {
    /// Loads defaults < `file` < environment (`vars`, usually `std::env::vars()`).
    pub fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut tree = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                serde_yaml::from_str::<serde_yaml::Value>(&text).map_err(|source| {
                    ConfigError::Parse {
                        origin: path.display().to_string(),
                        source,
                    }
                })?
            }
            None => serde_yaml::Value::Mapping(serde_yaml::Mapping::new()),
        };
        if tree.is_null() {
            tree = serde_yaml::Value::Mapping(serde_yaml::Mapping::new());
        }
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        // Only FLOWLENS_<SECTION>__<KEY>: variables without `__` (FLOWLENS_CONFIG,
        // FLOWLENS_LOG, FLOWLENS_EBPF_OBJECT) belong to the command line, not the tree.
        let mut env: Vec<_> = vars
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
            .cloned()
            .collect();
        env.sort();
        for (name, value) in env {
            let path: Vec<String> = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            if path.iter().any(String::is_empty) {
                continue;
            }
            let parsed: serde_yaml::Value = serde_yaml::from_str(&value)
                .unwrap_or_else(|_| serde_yaml::Value::String(value.clone()));
            set_path(&mut tree, &path, parsed).map_err(|message| ConfigError::Env {
                name: name.clone(),
                message,
            })?;
        }
        let mut config: Self =
            serde_yaml::from_value(tree).map_err(|source| ConfigError::Parse {
                origin: "configuration".into(),
                source,
            })?;
        // Design §7.2's variable, as container deployments set it.
        if let Some((_, servers)) = vars.iter().find(|(k, _)| k == "KAFKA_BOOTSTRAP_SERVERS") {
            config.kafka.bootstrap_servers.clone_from(servers);
        }
        config.validate()?;
        Ok(config)
    }

    /// The configuration as YAML with secrets replaced by `<redacted>`: values of keys
    /// that name a password, secret, token or private key (`kafka.properties.
    /// sasl.password`, `api.auth.jwt_secret`, ...) and the passwords inside URLs.
    pub fn redacted(&self) -> serde_yaml::Value {
        let mut tree = serde_yaml::to_value(self).unwrap_or(serde_yaml::Value::Null);
        redact(&mut tree, false);
        // A Slack webhook's URL is its secret.
        if let Some(targets) = tree
            .get_mut("notifications")
            .and_then(|n| n.get_mut("targets"))
            .and_then(serde_yaml::Value::as_sequence_mut)
        {
            for t in targets {
                if t.get("kind").and_then(serde_yaml::Value::as_str) == Some("slack")
                    && let Some(url) = t.get_mut("url")
                    && url
                        .as_str()
                        .is_some_and(|u| !u.is_empty() && !u.starts_with("${"))
                {
                    *url = "<redacted>".into();
                }
            }
        }
        tree
    }

    /// What an operator should know that does not make the configuration invalid:
    /// files that are not there, state that will not be kept.
    pub fn notes(&self, systemd_state_directory: Option<&str>) -> Vec<String> {
        let mut notes = Vec::new();
        if self.state.resolve(systemd_state_directory).is_none() {
            notes.push(format!(
                "decoder state is not kept across restarts (state.directory is off, or \
                 empty and {DEFAULT_STATE_DIRECTORY} does not exist)"
            ));
        }
        let g = &self.enrichment.geoip;
        if g.enabled {
            for path in [&g.database_path, &g.asn_database_path]
                .into_iter()
                .flatten()
            {
                if !path.is_file() {
                    notes.push(format!(
                        "enrichment.geoip: {} does not exist (the graph sink will not start)",
                        path.display()
                    ));
                }
            }
        }
        if !self.xdp.interfaces.is_empty()
            && let Some(o) = &self.xdp.object_path
            && !o.is_file()
        {
            notes.push(format!(
                "xdp.object_path {} does not exist: the daemon will receive on sockets",
                o.display()
            ));
        }
        if self.database.url.is_none() && std::env::var_os("DATABASE_URL").is_none() {
            notes.push(
                "no database (database.url or DATABASE_URL): --output auto discards flows".into(),
            );
        }
        notes
    }

    /// Checks what types cannot, reporting every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut kafka_problems = Vec::new();
        let k = &self.kafka;
        if !matches!(
            k.compression.as_str(),
            "lz4" | "zstd" | "gzip" | "snappy" | "none"
        ) {
            kafka_problems.push(format!(
                "kafka.compression {:?}: lz4, zstd, gzip, snappy or none",
                k.compression
            ));
        }
        if k.partitions < 1 || k.replication_factor < 1 {
            kafka_problems
                .push("kafka.partitions and kafka.replication_factor must be at least 1".into());
        }
        let t = &k.topics;
        if [&t.raw, &t.flows, &t.changes, &t.alerts].iter().any(|n| {
            n.is_empty()
                || n.len() > 249
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }) {
            kafka_problems.push(
                "kafka.topics: names of 1 to 249 characters from a-z, A-Z, 0-9, '.', '_', '-'"
                    .into(),
            );
        }
        if k.consumer_group.trim().is_empty() {
            kafka_problems.push("kafka.consumer_group must not be empty".into());
        }
        if k.max_buffered_datagrams == 0
            || k.max_buffered_mib == 0
            || k.message_timeout_ms == 0
            || k.mark_interval_ms == 0
        {
            kafka_problems.push(
                "kafka.max_buffered_datagrams, max_buffered_mib, message_timeout_ms and \
                 mark_interval_ms must be at least 1"
                    .into(),
            );
        }
        if k.instance_id.len() > 255 || k.instance_id.chars().any(char::is_control) {
            kafka_problems.push("kafka.instance_id: at most 255 printable characters".into());
        }
        let mut problems = kafka_problems;
        if self.state.decoder_save_interval_seconds == 0 {
            problems.push("state.decoder_save_interval_seconds must be at least 1".into());
        }
        let i = &self.ingestion;
        if i.batch_size == 0 {
            problems.push("ingestion.batch_size must be at least 1".to_owned());
        }
        let bp = &i.backpressure;
        if bp.sample_rate_under_pressure == 0 {
            problems.push("ingestion.backpressure.sample_rate_under_pressure must be >= 1".into());
        }
        if bp.drop_threshold_queue_depth == 0 {
            problems.push("ingestion.backpressure.drop_threshold_queue_depth must be >= 1".into());
        }
        if !(0.0..=1.0).contains(&bp.low_watermark)
            || !(0.0..=1.0).contains(&bp.high_watermark)
            || bp.low_watermark >= bp.high_watermark
        {
            problems.push(
                "ingestion.backpressure: need 0 <= low_watermark < high_watermark <= 1".into(),
            );
        }
        if !matches!(i.routing.mode.as_str(), "auto" | "postgres" | "kafka") {
            problems.push(format!(
                "ingestion.routing.mode must be auto, postgres or kafka, not {:?}",
                i.routing.mode
            ));
        }
        if !self.xdp.pin_path.is_empty() && self.xdp.handover_seconds < 3 {
            // Renewed every second from a 100 ms loop: a shorter lease would lapse.
            problems
                .push("xdp.handover_seconds must be at least 3 when xdp.pin_path is set".into());
        }
        problems.extend(self.notifications.problems());
        if !self.xdp.ring_size_bytes.is_power_of_two() || self.xdp.ring_size_bytes < 4096 {
            problems.push("xdp.ring_size_bytes must be a power of two >= 4096".into());
        }
        for p in &self.enrichment.internal_prefixes {
            if let Err(e) = p.parse::<crate::enrich::classify::Prefix>() {
                problems.push(format!("enrichment.internal_prefixes: {p:?}: {e}"));
            }
        }
        problems.extend(self.enrichment.cloud.problems());
        problems.extend(self.enrichment.snmp.problems());
        match self.enrichment.cache.backend.as_str() {
            "memory" => {}
            "redis" => {
                if let Err(e) = crate::enrich::shared::SharedCache::new(&self.enrichment.cache) {
                    problems.push(e);
                }
            }
            other => problems.push(format!(
                "enrichment.cache.backend {other:?}: \"memory\" or \"redis\""
            )),
        }
        let agg = &self.dependency_resolution.aggregation;
        if agg.window_size_seconds == 0 || agg.flush_interval_seconds == 0 {
            problems.push(
                "dependency_resolution.aggregation: window_size_seconds and flush_interval_seconds must be >= 1"
                    .into(),
            );
        }
        if agg.buffer_backend != "memory" {
            problems.push(format!(
                "dependency_resolution.aggregation.buffer_backend {:?}: only \"memory\" is available",
                agg.buffer_backend
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// Sets `value` at `path` in a YAML tree, creating mappings on the way.
fn set_path(
    tree: &mut serde_yaml::Value,
    path: &[String],
    value: serde_yaml::Value,
) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        *tree = value;
        return Ok(());
    };
    if tree.is_null() {
        *tree = serde_yaml::Value::Mapping(serde_yaml::Mapping::new());
    }
    let map = tree
        .as_mapping_mut()
        .ok_or_else(|| format!("{first} is not a section"))?;
    let key = serde_yaml::Value::String(first.clone());
    let child = map.entry(key).or_insert(serde_yaml::Value::Null);
    set_path(child, rest, value)
}

/// Replaces secrets in a configuration tree (see [`Config::redacted`]).
fn redact(v: &mut serde_yaml::Value, secret: bool) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, child) in m.iter_mut() {
                let key = k.as_str().unwrap_or_default().to_ascii_lowercase();
                let named = [
                    "password",
                    "secret",
                    "token",
                    "key.pem",
                    "private",
                    "routing_key",
                    "community",
                ]
                .iter()
                .any(|w| key.contains(w));
                redact(child, secret || named);
            }
        }
        serde_yaml::Value::Sequence(s) => s.iter_mut().for_each(|c| redact(c, secret)),
        serde_yaml::Value::String(s) if secret && !s.is_empty() => {
            *s = "<redacted>".into();
        }
        serde_yaml::Value::String(s) => {
            if let Some(clean) = without_url_password(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

/// `scheme://user:password@host...` with the password replaced; `None` when `s` holds
/// no password (the user info ends at the last `@` before the path).
fn without_url_password(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host) = authority.rsplit_once('@')?;
    let (user, _) = userinfo.split_once(':')?;
    Some(format!("{scheme}://{user}:<redacted>@{host}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_designs() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert_eq!(c.ingestion.ports(), vec![2055, 4739, 6343]);
        assert_eq!(c.ingestion.receive_buffer_size, 16_777_216);
        assert_eq!(
            (c.ingestion.batch_size, c.ingestion.batch_timeout_ms),
            (1000, 100)
        );
        assert_eq!(c.ingestion.backpressure.sample_rate_under_pressure, 10);
        assert_eq!(c.ingestion.backpressure.drop_threshold_queue_depth, 100_000);
    }

    #[test]
    fn kafka_settings_default_validate_and_take_the_designs_variable() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert!(!c.kafka.configured());
        assert_eq!(c.kafka.consumer_group, "flowlens-process");
        assert_eq!(c.kafka.topics.raw, "flowlens.raw-v1");
        assert_eq!(c.kafka.compression, "lz4");
        let var = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let c = Config::load(
            None,
            vec![
                var("FLOWLENS_KAFKA__BOOTSTRAP_SERVERS", "file:9092"),
                var("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092"),
                var("FLOWLENS_KAFKA__PROPERTIES__SECURITY.PROTOCOL", "SSL"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.bootstrap_servers, "k1:9092,k2:9092");
        assert_eq!(
            c.kafka
                .properties
                .get("security.protocol")
                .map(String::as_str),
            Some("SSL")
        );
        let e = Config::load(
            None,
            vec![
                var("FLOWLENS_KAFKA__COMPRESSION", "brotli"),
                var("FLOWLENS_KAFKA__TOPICS__RAW", "raw topic!"),
                var("FLOWLENS_KAFKA__PARTITIONS", "0"),
            ],
        )
        .unwrap_err()
        .to_string();
        for needle in ["kafka.compression", "kafka.topics", "kafka.partitions"] {
            assert!(e.contains(needle), "{needle} in {e}");
        }
        let e = Config::load(None, vec![var("FLOWLENS_KAFKA__BROKERS", "x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("brokers"), "unknown kafka keys are errors: {e}");
    }

    #[test]
    fn file_then_env_precedence_and_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("flowlens-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yaml");
        std::fs::write(
            &f,
            "ingestion:\n  netflow_port: 9995\n  batch_size: 10\n  backpressure:\n    enabled: false\n\
             enrichment:\n  dns:\n    enabled: true\n",
        )
        .unwrap();
        let env = vec![
            ("FLOWLENS_INGESTION__BATCH_SIZE".to_owned(), "20".to_owned()),
            (
                "FLOWLENS_TELEMETRY__LISTEN_ADDRESS".to_owned(),
                "127.0.0.1:1".to_owned(),
            ),
            ("UNRELATED".to_owned(), "x".to_owned()),
            ("FLOWLENS_LOG".to_owned(), "debug".to_owned()),
        ];
        let c = Config::load(Some(&f), env).unwrap();
        assert_eq!(c.ingestion.netflow_port, 9995);
        assert_eq!(c.ingestion.batch_size, 20);
        assert!(!c.ingestion.backpressure.enabled);
        assert_eq!(c.telemetry.listen_address, "127.0.0.1:1".parse().unwrap());
        std::fs::write(&f, "ingestion:\n  netflow_prot: 1\n").unwrap();
        let err = Config::load(Some(&f), Vec::new()).unwrap_err().to_string();
        assert!(err.contains("netflow_prot"), "{err}");
        let bad = vec![("FLOWLENS_INGESTION__BATCH_SIZE".to_owned(), "0".to_owned())];
        let err = Config::load(None, bad).unwrap_err().to_string();
        assert!(err.contains("batch_size must be at least 1"), "{err}");
    }
}
