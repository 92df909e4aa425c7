//! Config sections of the graph stage: `database` and `dependency_resolution` (DESIGN.md
//! §3.3, same key names), plus `alerts` (ours: the design names alerts but no rules).

use serde::{Deserialize, Serialize};

/// An alert rule's scope: the classification of a dependency's two ends.
pub use crate::enrich::classify::Direction3 as Scope;

/// `database`: where the graph lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL URL; `DATABASE_URL` in the environment takes precedence when set.
    pub url: Option<String>,
    /// Connections the graph writer's pool opens at most.
    pub max_connections: u32,
    /// Write every decoded flow to `flow_raw` (the design's low-volume path).
    pub write_raw_flows: bool,
    /// Days of `flow_raw` partitions kept (DESIGN.md §5.2: 7); 0 keeps them all.
    pub raw_retention_days: u32,
    /// Days of `flow_stats` partitions kept (ours: the design gives none; 90 days of
    /// 5-minute windows answer "what talked to what this quarter"); 0 keeps them all.
    pub stats_retention_days: u32,
    /// Flush deltas kept for retry while PostgreSQL is unreachable, in edge rows;
    /// beyond it the oldest are dropped and counted. Also bounds the windows the sink
    /// aggregates while the writer is busy (flows of further new edges are counted).
    pub max_buffered_rows: usize,
    /// `statement_timeout` of the daemon's connections (ours): a statement PostgreSQL
    /// runs longer is cancelled and its flush retried; 0 leaves the server's setting.
    pub statement_timeout_seconds: u64,
    /// A flush (or upkeep) still running after this is given up and its connection
    /// closed (ours): a connection that hangs without a reset cannot stall the writer
    /// forever. `/health` says `stalled` once a flush has run for two flush intervals
    /// or half this timeout.
    pub flush_timeout_seconds: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 8,
            write_raw_flows: true,
            raw_retention_days: 7,
            stats_retention_days: 90,
            max_buffered_rows: 1_000_000,
            statement_timeout_seconds: 120,
            flush_timeout_seconds: 300,
        }
    }
}

impl DatabaseConfig {
    /// The URL to use: `DATABASE_URL` from `vars`, else `database.url`.
    pub fn effective_url(&self, database_url_env: Option<String>) -> Option<String> {
        database_url_env
            .filter(|u| !u.is_empty())
            .or_else(|| self.url.clone())
    }
}

/// `dependency_resolution` (DESIGN.md §3.3).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DependencyResolutionConfig {
    pub aggregation: AggregationConfig,
    pub assets: AssetsConfig,
    pub dependencies: DependenciesConfig,
    pub change_detection: ChangeDetectionConfig,
}

/// `dependency_resolution.aggregation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AggregationConfig {
    /// Tumbling window length (5 minutes).
    pub window_size_seconds: u64,
    /// How often accumulated windows are written (open windows are written as
    /// partial sums and topped up by later flushes).
    pub flush_interval_seconds: u64,
    /// "memory" (the only backend before the scale-out issue's "redis").
    pub buffer_backend: String,
    /// The Redis server of the `redis` buffer backend.
    pub redis_url: String,
    /// A flow whose end time is further than this from the wall clock (an exporter
    /// with a wrong clock) is windowed by the time it was aggregated instead.
    pub max_clock_skew_seconds: u64,
    /// How flows seen by several observation points are counted (ours; see
    /// [`ObservationPolicy`]).
    pub observation_policy: ObservationPolicy,
}

/// `dependency_resolution.aggregation.observation_policy`: one connection crossing
/// two routers (or one router exporting both ingress and egress) is reported twice.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ObservationPolicy {
    /// Each edge (client, server, protocol, port) of each window is counted from one
    /// observation point only, the first to report it (an exporter address and flow
    /// direction; not the observation domain, in which line cards of one router
    /// differ); the others' records of that edge and window are counted in
    /// `flowlens_graph_flows_duplicate_observation_total` and left out. An edge whose connections really are split across paths (ECMP) is
    /// undercounted to the share of the first path.
    #[default]
    FirstPerEdge,
    /// Every record counts (one observation point per connection, or totals wanted
    /// per router).
    All,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        Self {
            window_size_seconds: 300,
            flush_interval_seconds: 60,
            buffer_backend: "memory".into(),
            redis_url: "redis://localhost:6379/1".into(),
            max_clock_skew_seconds: 3600,
            observation_policy: ObservationPolicy::FirstPerEdge,
        }
    }
}

/// `dependency_resolution.assets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AssetsConfig {
    /// Whether addresses seen in flows become assets (else only known assets are
    /// linked).
    pub auto_create: bool,
    /// Flows an address must take part in before it becomes an asset.
    pub min_flows_for_creation: u64,
}

impl Default for AssetsConfig {
    fn default() -> Self {
        Self {
            auto_create: true,
            min_flows_for_creation: 5,
        }
    }
}

/// `dependency_resolution.dependencies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DependenciesConfig {
    /// Flows an edge must carry before it becomes a dependency.
    pub min_flows_for_creation: u64,
    /// Edges whose direction was decided with less confidence are held back until
    /// more evidence (flags, fan-out) raises it.
    pub confidence_threshold: f32,
    /// A dependency without traffic for this long is stale (a removal event).
    pub stale_after_hours: u64,
}

impl Default for DependenciesConfig {
    fn default() -> Self {
        Self {
            min_flows_for_creation: 3,
            confidence_threshold: 0.5,
            stale_after_hours: 168,
        }
    }
}

/// `dependency_resolution.change_detection`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ChangeDetectionConfig {
    /// Whether new and removed assets and dependencies are recorded as change events
    /// (and raise alerts).
    pub enabled: bool,
    /// The baseline is what was seen in the last this-many days: an asset or
    /// dependency with traffic now and none within the baseline (never seen, or last
    /// seen before it) is new (again), and raises a `new_*` change event.
    pub baseline_window_days: u64,
    /// How often stale assets and dependencies are looked for.
    pub check_interval_seconds: u64,
}

impl Default for ChangeDetectionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            baseline_window_days: 7,
            check_interval_seconds: 300,
        }
    }
}

/// `alerts`: rules that turn change events into alerts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Each change event raises the alert of the first rule it matches (none: no
    /// alert); an empty list raises none.
    pub rules: Vec<AlertRule>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            rules: vec![
                AlertRule {
                    name: "new-egress-dependency".into(),
                    change_type: "new_dependency".into(),
                    scope: Some(Scope::Egress),
                    port: None,
                    severity: Severity::Warning,
                },
                AlertRule {
                    name: "new-internal-dependency".into(),
                    change_type: "new_dependency".into(),
                    scope: Some(Scope::Internal),
                    port: None,
                    severity: Severity::Info,
                },
                AlertRule {
                    name: "removed-dependency".into(),
                    change_type: "removed_dependency".into(),
                    scope: None,
                    port: None,
                    severity: Severity::Info,
                },
            ],
        }
    }
}

/// One rule: a change event of `change_type` (and, for dependencies, of `scope` and
/// to `port` when given) raises an alert of `severity`. The first matching rule wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub name: String,
    /// `new_asset`, `new_dependency`, `removed_asset`, `removed_dependency`,
    /// `asset_changed`, `dependency_changed`.
    pub change_type: String,
    /// Where the dependency runs (`internal`, `egress`, `ingress`, `external`).
    #[serde(default)]
    pub scope: Option<Scope>,
    #[serde(default)]
    pub port: Option<u16>,
    pub severity: Severity,
}

/// Alert severity (the `alerts.severity` column).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    /// The `alerts.severity` column's value back (unknown: `None`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Self::Info),
            "warning" => Some(Self::Warning),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }
}
