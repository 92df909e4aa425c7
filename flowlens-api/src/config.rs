//! The API's one typed config: the design's `api` section (DESIGN.md §3.4) and the
//! database URL.
//!
//! Precedence: defaults < YAML file (`--config FILE`) < environment
//! `FLOWLENS_<SECTION>__<KEY>` (e.g. `FLOWLENS_API__PORT=8080`) < `DATABASE_URL`.
//! The file may be the same one the daemon reads: sections other than `api` and
//! `database` are ignored, but unknown keys inside `api` are errors (a typo in a rate
//! limit must not silently leave the default in force). `${VAR}` in a secret
//! (`api.auth.jwt_secret`, `database.url`, the Redis URLs) is replaced by that
//! environment variable.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the API reads from its configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Config {
    pub api: ApiConfig,
    pub database: DatabaseConfig,
}

/// The design's `api` section, plus the analysis and discovery knobs it left out.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on (design default: every interface).
    pub host: String,
    /// TCP port of the REST and WebSocket API.
    pub port: u16,
    /// Tokio worker threads (0 = one per core).
    pub workers: usize,
    /// Request budgets per caller and per client address.
    pub rate_limiting: RateLimitConfig,
    /// Caching of topology and search answers.
    pub cache: CacheConfig,
    /// Page sizes and bounds of the list endpoints.
    pub pagination: PaginationConfig,
    /// JWT and API-key authentication (roles viewer, editor, admin).
    pub auth: AuthConfig,
    /// The change feed over WebSocket (`/api/v1/topology/ws`).
    pub websocket: WebSocketConfig,
    /// Bounds on the graph analyses (impact, path, SPOF, blast radius).
    pub analysis: AnalysisConfig,
    /// Discovery scans: where, how fast, how many.
    pub discovery: DiscoveryConfig,
    /// What one client can hold of the server before any credential is checked.
    pub limits: LimitsConfig,
    /// Exports of the graph to other systems (the ServiceNow CMDB).
    pub integrations: IntegrationsConfig,
}

/// Exports of the graph to other systems.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IntegrationsConfig {
    /// The ServiceNow CMDB: the payload of `GET /api/v1/integrations/servicenow/payload`
    /// and its scheduled push to an instance's Identification and Reconciliation API.
    pub servicenow: ServiceNowConfig,
}

/// The ServiceNow CMDB export (docs/cmdb.md).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceNowConfig {
    /// Push the graph to `instance_url` every `interval_seconds` (the on-demand payload
    /// is served either way). With several API instances one pushes at a time.
    pub enabled: bool,
    /// The instance, `https://<name>.service-now.com` (http only to a loopback address).
    pub instance_url: String,
    /// `basic` (`username`/`password`) or `oauth` (`client_id`/`client_secret`, and
    /// `username`/`password` with the `password` grant).
    pub auth: String,
    /// The integration user (needs the `itil` or `asset` role, as the IRE API says).
    pub username: String,
    /// Its password; `${VAR}` reads it from the environment.
    pub password: String,
    /// OAuth: the application registry's client id.
    pub client_id: String,
    /// OAuth: its secret; `${VAR}` reads it from the environment.
    pub client_secret: String,
    /// OAuth grant at `/oauth_token.do`: `password` or `client_credentials`.
    pub oauth_grant_type: String,
    /// Seconds between pushes (the first goes out at start); at least 60.
    pub interval_seconds: u64,
    /// `sysparm_data_source` and the items' `source_name`: must be one of the choices of
    /// `cmdb_ci.discovery_source` on the instance (add it there).
    pub data_source: String,
    /// Most items (CIs) per request; a relation's two CIs travel in its request.
    pub batch_size: usize,
    /// Attempts per request on 429, 5xx and network errors (with backoff).
    pub max_attempts: u32,
    /// Seconds one request may take.
    pub timeout_seconds: u64,
    /// Export assets outside your networks (`is_internal` false) and dependencies on
    /// them (default: no, the CMDB holds your estate, not the internet).
    pub include_external: bool,
    /// Export stale assets and dependencies (no traffic for `stale_after_hours`).
    pub include_stale: bool,
    /// CI class per asset type (`server`, `vm`, `container`, `network_device`,
    /// `unknown`); a `cmdb_ci_server` whose OS is Linux or Windows becomes
    /// `cmdb_ci_linux_server` or `cmdb_ci_win_server`.
    pub classes: std::collections::BTreeMap<String, String>,
}

impl Default for ServiceNowConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            instance_url: String::new(),
            auth: "basic".into(),
            username: String::new(),
            password: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            oauth_grant_type: "password".into(),
            interval_seconds: 3600,
            data_source: "FlowLens".into(),
            batch_size: 100,
            max_attempts: 4,
            timeout_seconds: 30,
            include_external: false,
            include_stale: false,
            classes: [
                ("server", "cmdb_ci_server"),
                ("vm", "cmdb_ci_server"),
                ("container", "cmdb_ci_server"),
                ("network_device", "cmdb_ci_netgear"),
                ("unknown", "cmdb_ci_server"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        }
    }
}

/// What one client can hold of the server before any credential is checked.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// A connection that has not sent a whole request head within this is closed
    /// (slow-header clients would otherwise hold connections forever).
    pub header_read_timeout_seconds: u64,
    /// A request not answered within this gets 503; its work is dropped.
    pub request_timeout_seconds: u64,
    /// PostgreSQL's `statement_timeout` on every API connection, so no request's query
    /// holds a pooled connection longer (set here, not under `database`, because the
    /// daemon reads `database.statement_timeout_seconds` from the same file for its
    /// much longer flushes).
    pub statement_timeout_seconds: u64,
    /// TCP connections open at once (HTTP; an upgraded WebSocket counts under
    /// `api.websocket.max_connections` instead); more are closed as they arrive.
    pub max_connections: usize,
    /// TCP connections one client address (an IPv6 client by its /64) may hold; more
    /// are closed as they arrive, so one client cannot take every connection.
    pub max_connections_per_address: usize,
    /// A response the client does not read within this is abandoned and the
    /// connection closed (a client that stops reading would hold its connection
    /// forever).
    pub write_timeout_seconds: u64,
    /// Requests in progress at once; more get 429 with `Retry-After` (health is exempt).
    pub max_concurrent_requests: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_seconds: 10,
            request_timeout_seconds: 30,
            statement_timeout_seconds: 20,
            max_connections: 1024,
            max_connections_per_address: 64,
            write_timeout_seconds: 30,
            max_concurrent_requests: 256,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8000,
            workers: 4,
            rate_limiting: RateLimitConfig::default(),
            cache: CacheConfig::default(),
            pagination: PaginationConfig::default(),
            auth: AuthConfig::default(),
            websocket: WebSocketConfig::default(),
            analysis: AnalysisConfig::default(),
            discovery: DiscoveryConfig::default(),
            limits: LimitsConfig::default(),
            integrations: IntegrationsConfig::default(),
        }
    }
}

/// Per-caller limits: `default_limit` is the sustained rate, `burst_limit` caps how
/// fast a caller may spend it.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Whether requests are limited at all (the per-address limit included).
    pub enabled: bool,
    /// "memory": this instance keeps its own counters; "redis": every instance
    /// spends from the same buckets (memory while Redis does not answer).
    pub backend: String,
    /// The Redis server of the `redis` backend.
    pub redis_url: String,
    /// `N/second|minute|hour|day`.
    pub default_limit: String,
    /// How fast a caller may spend its budget (`N/second|minute|hour|day`).
    pub burst_limit: String,
    /// Every request from one client address, before authentication (health, bad
    /// tokens and unknown keys included): what an anonymous caller can make the
    /// server do. Not shared between instances (it guards this instance).
    pub per_address_limit: String,
    /// How fast one client address may spend its budget.
    pub per_address_burst: String,
    /// Load balancers or proxies (CIDRs) whose `X-Forwarded-For` names the client;
    /// from anyone else the header is ignored (it would let a caller pick its address).
    pub trusted_proxies: Vec<String>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: "memory".into(),
            redis_url: "redis://localhost:6379/2".into(),
            default_limit: "100/minute".into(),
            burst_limit: "20/second".into(),
            per_address_limit: "1200/minute".into(),
            per_address_burst: "100/second".into(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Caching of topology and search answers, dropped whenever the graph changes.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether answers are cached at all.
    pub enabled: bool,
    /// "memory", or "redis": answers shared by every instance (memory while Redis
    /// does not answer). Either way they are dropped on every change the instance hears.
    pub backend: String,
    /// The Redis server of the `redis` backend.
    pub redis_url: String,
    /// Longest a cached topology answer is served (it is dropped sooner on a change).
    pub topology_ttl_seconds: u64,
    /// Longest a cached search answer is served (it is dropped sooner on a change).
    pub search_ttl_seconds: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: "memory".into(),
            redis_url: "redis://localhost:6379/3".into(),
            topology_ttl_seconds: 300,
            search_ttl_seconds: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PaginationConfig {
    /// Rows per page when the request names none.
    pub default_page_size: u32,
    /// Most rows a request may ask for per page.
    pub max_page_size: u32,
    /// Deepest row a page may start at (`(page - 1) * page_size`): PostgreSQL reads and
    /// throws away every row before an OFFSET, so deeper pages cost more and more.
    /// Narrow the list with its filters (`since`, `until`, ...) to go further.
    pub max_offset: u32,
    /// `total` counts matching rows up to this many, then says `total_capped: true`:
    /// an exact count of a huge match is a scan per request.
    pub max_count: u32,
}

impl Default for PaginationConfig {
    fn default() -> Self {
        Self {
            default_page_size: 50,
            max_page_size: 1000,
            max_offset: 100_000,
            max_count: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// When false every caller is an anonymous admin: for a lab, never production.
    pub enabled: bool,
    /// HS256 secret, at least [`MIN_JWT_SECRET_BYTES`]; the design's default reads it
    /// from `$JWT_SECRET`.
    pub jwt_secret: String,
    /// Lifetime of issued tokens; longer-lived tokens are refused.
    pub token_expiry_hours: u64,
    /// When set, tokens carry this `iss` and tokens without it are refused (several
    /// services sharing one secret cannot use each other's tokens).
    pub issuer: Option<String>,
    /// When set, tokens carry this `aud` and tokens without it are refused.
    pub audience: Option<String>,
    /// With `enabled: false` the API refuses to listen on anything but a loopback
    /// address, because every caller that reaches it is an admin; this forces it.
    pub allow_unauthenticated_remote: bool,
}

/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash (32 bytes); a
/// shorter one can be brute-forced from any token.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            jwt_secret: "${JWT_SECRET}".into(),
            token_expiry_hours: 24,
            issuer: None,
            audience: None,
            allow_unauthenticated_remote: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Whether the change feed is served.
    pub enabled: bool,
    /// How often the server pings each socket; one that does not answer is closed.
    pub ping_interval_seconds: u64,
    /// Open sockets this instance holds at most.
    pub max_connections: usize,
    /// Open sockets one caller (a token's subject, an API key) may hold, so one viewer
    /// cannot take every `max_connections` slot.
    pub max_connections_per_caller: usize,
    /// Origins (`https://console.example.com`) whose pages may open the socket besides
    /// the API's own origin. A browser sends `Origin` on every WebSocket handshake;
    /// other origins are refused (403), so a page elsewhere cannot ride on a token in
    /// the browser or on an unauthenticated lab API (cross-site WebSocket hijacking).
    /// Clients that send no `Origin` (not a browser) are not affected.
    pub allowed_origins: Vec<String>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ping_interval_seconds: 30,
            max_connections: 1000,
            max_connections_per_caller: 10,
            allowed_origins: Vec::new(),
        }
    }
}

/// Bounds on the graph analyses, so one request cannot walk forever.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Depth used when a request names none.
    pub default_max_depth: u32,
    /// Largest depth a request may ask for.
    pub max_depth: u32,
    /// Largest number of paths `path` enumerates.
    pub max_paths: usize,
    /// Work budget of one `path` enumeration, in adjacency entries examined (see
    /// `graph::path::all_paths`); past it the answer lists the paths found so far, which
    /// are the first ones in order, as `truncated`. Simple paths can be exponentially
    /// many, and so can the dead branches on the way to few, so `max_depth` and
    /// `max_paths` alone do not bound the time. One hand measurement on the 2-core
    /// development VM (a temporary release-build test, not a committed benchmark) put a
    /// step at 4 to 12 ns, i.e. the default of 2 million at tens of milliseconds of one
    /// blocking thread; the unit tests count steps, not time: 100 paths between
    /// assets of the benchmark graph take thousands, a 100k-asset chain about 200k.
    pub max_path_steps: u64,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            default_max_depth: 10,
            max_depth: 50,
            max_paths: 100,
            max_path_steps: 2_000_000,
        }
    }
}

/// Active discovery scans (`POST /api/v1/discovery/scans`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// CIDRs a scan may touch; a scan outside them is refused. Empty: no scans at all,
    /// because probing a network nobody allowed is not a default.
    pub allowed_ranges: Vec<String>,
    /// TCP ports a scan connects to when the request names none.
    pub ports: Vec<u16>,
    /// Connections in flight at once.
    pub concurrency: usize,
    /// Connection attempts per second.
    pub rate_per_second: u32,
    /// How long one connection attempt waits for an answer.
    pub connect_timeout_ms: u64,
    /// Largest number of addresses one scan may cover.
    pub max_hosts: u32,
    /// Scans running at once in this API process; more are refused (503) rather than
    /// queued, so a forgotten script cannot stack scans against the allowed ranges.
    pub max_running_scans: usize,
    /// A queued or running scan whose API instance has not written its heartbeat (each
    /// second while it runs) for this long is failed by any instance: its process
    /// died. Several instances share the database, so none fails the others' live
    /// scans when it starts.
    pub orphaned_after_seconds: u64,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            allowed_ranges: Vec::new(),
            ports: vec![22, 53, 80, 443, 3306, 5432, 6379, 8080, 9092, 27017],
            concurrency: 64,
            rate_per_second: 500,
            connect_timeout_ms: 1000,
            max_hosts: 65_536,
            max_running_scans: 2,
            orphaned_after_seconds: 60,
        }
    }
}

/// Where the graph lives.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `postgres://...`; `DATABASE_URL` wins over it.
    pub url: Option<String>,
    /// Connections the API's pool opens at most.
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
        }
    }
}

/// A request budget: `count` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (n, unit) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected N/second|minute|hour|day"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {n:?} is not a count"))?;
        if count == 0 {
            return Err(format!("{s:?}: the count must be at least 1"));
        }
        let per = match unit.trim() {
            "second" | "s" | "sec" => 1,
            "minute" | "m" | "min" => 60,
            "hour" | "h" => 3600,
            "day" | "d" => 86_400,
            other => return Err(format!("{s:?}: unknown unit {other:?}")),
        };
        Ok(Self {
            count,
            per: Duration::from_secs(per),
        })
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {origin}: {source}")]
    Parse {
        origin: String,
        #[source]
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
    /// Loads defaults < `file` < `vars` (usually `std::env::vars()`), expands `${VAR}`
    /// in secrets from `vars`, and validates.
    pub fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
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
        let mut env: Vec<_> = vars
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
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
            let parsed: serde_yaml::Value = serde_yaml::from_str(value)
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
        if let Some((_, url)) = vars.iter().find(|(k, _)| k == "DATABASE_URL") {
            config.database.url = Some(url.clone());
        }
        config.expand_secrets(&vars)?;
        config.validate()?;
        Ok(config)
    }

    /// Replaces `${VAR}` in the secrets. An unset variable is an error only where the
    /// secret is used (the JWT secret with auth off is never read).
    fn expand_secrets(&mut self, vars: &[(String, String)]) -> Result<(), ConfigError> {
        let lookup = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut problems = Vec::new();
        let mut expand =
            |key: &str, value: &mut String, required: bool| match expand_vars(value, &lookup) {
                Ok(v) => *value = v,
                Err(var) if required => problems.push(format!(
                    "{key} refers to ${{{var}}}, which is not set in the environment"
                )),
                Err(_) => {}
            };
        expand(
            "api.auth.jwt_secret",
            &mut self.api.auth.jwt_secret,
            self.api.auth.enabled,
        );
        if let Some(url) = self.database.url.as_mut() {
            expand("database.url", url, true);
        }
        expand(
            "api.rate_limiting.redis_url",
            &mut self.api.rate_limiting.redis_url,
            false,
        );
        expand("api.cache.redis_url", &mut self.api.cache.redis_url, false);
        let sn = &mut self.api.integrations.servicenow;
        let enabled = sn.enabled;
        for (key, value) in [
            ("api.integrations.servicenow.password", &mut sn.password),
            (
                "api.integrations.servicenow.client_secret",
                &mut sn.client_secret,
            ),
        ] {
            expand(key, value, enabled);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Checks what types cannot, reporting every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let a = &self.api;
        if a.host.parse::<IpAddr>().is_err() {
            problems.push(format!("api.host {:?} is not an IP address", a.host));
        }
        for (key, value) in [
            (
                "api.rate_limiting.default_limit",
                &a.rate_limiting.default_limit,
            ),
            (
                "api.rate_limiting.burst_limit",
                &a.rate_limiting.burst_limit,
            ),
            (
                "api.rate_limiting.per_address_limit",
                &a.rate_limiting.per_address_limit,
            ),
            (
                "api.rate_limiting.per_address_burst",
                &a.rate_limiting.per_address_burst,
            ),
        ] {
            if let Err(e) = value.parse::<Rate>() {
                problems.push(format!("{key}: {e}"));
            }
        }
        for (key, backend, url) in [
            (
                "api.rate_limiting",
                &a.rate_limiting.backend,
                &a.rate_limiting.redis_url,
            ),
            ("api.cache", &a.cache.backend, &a.cache.redis_url),
        ] {
            match backend.as_str() {
                "memory" => {}
                "redis" => {
                    if !(url.starts_with("redis://")
                        || url.starts_with("rediss://")
                        || url.starts_with("redis+unix://"))
                    {
                        problems.push(format!(
                            "{key}.redis_url must be a redis://, rediss:// or redis+unix:// URL"
                        ));
                    }
                }
                other => problems.push(format!(
                    "{key}.backend {other:?}: \"memory\" (one instance) or \"redis\" (shared by \
                     several)"
                )),
            }
        }
        let p = &a.pagination;
        if p.default_page_size == 0 || p.max_page_size == 0 || p.default_page_size > p.max_page_size
        {
            problems
                .push("api.pagination: need 1 <= default_page_size <= max_page_size".to_owned());
        }
        if a.auth.enabled && a.auth.jwt_secret.len() < MIN_JWT_SECRET_BYTES {
            problems.push(format!(
                "api.auth.jwt_secret must be at least {MIN_JWT_SECRET_BYTES} bytes when auth is \
                 enabled (HS256 keys shorter than the hash can be guessed offline from one token)"
            ));
        }
        // Unauthenticated, every caller is an admin: only this host's callers may be.
        if !a.auth.enabled
            && !a.auth.allow_unauthenticated_remote
            && a.host.parse::<IpAddr>().is_ok_and(|ip| !ip.is_loopback())
        {
            problems.push(format!(
                "api.auth.enabled is false and api.host {} is not a loopback address: every \
                 caller on the network would be an admin. Bind 127.0.0.1 or ::1, enable auth, \
                 or set api.auth.allow_unauthenticated_remote: true",
                a.host
            ));
        }
        if !(1..=87_600).contains(&a.auth.token_expiry_hours) {
            problems.push("api.auth.token_expiry_hours must be between 1 and 87600".to_owned());
        }
        if !(1..=3600).contains(&a.websocket.ping_interval_seconds) {
            problems
                .push("api.websocket.ping_interval_seconds must be between 1 and 3600".to_owned());
        }
        if a.websocket.max_connections_per_caller == 0 {
            problems.push("api.websocket.max_connections_per_caller must be at least 1".to_owned());
        }
        for o in &a.websocket.allowed_origins {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                problems.push(format!(
                    "api.websocket.allowed_origins: {o:?} is not an origin \
                     (scheme://host[:port], no path)"
                ));
            }
        }
        if a.analysis.default_max_depth == 0 || a.analysis.default_max_depth > a.analysis.max_depth
        {
            problems.push("api.analysis: need 1 <= default_max_depth <= max_depth".to_owned());
        }
        if a.analysis.max_path_steps == 0 {
            problems.push("api.analysis.max_path_steps must be at least 1".to_owned());
        }
        for r in &a.discovery.allowed_ranges {
            if r.parse::<ipnetwork::IpNetwork>().is_err() {
                problems.push(format!("api.discovery.allowed_ranges: {r:?} is not a CIDR"));
            }
        }
        let d = &a.discovery;
        if d.concurrency == 0
            || d.rate_per_second == 0
            || d.connect_timeout_ms == 0
            || d.max_hosts == 0
            || d.max_running_scans == 0
        {
            problems.push(
                "api.discovery: concurrency, rate_per_second, connect_timeout_ms, max_hosts and \
                 max_running_scans must be at least 1"
                    .to_owned(),
            );
        }
        if d.orphaned_after_seconds < 3 {
            problems.push(
                "api.discovery.orphaned_after_seconds must be at least 3 (heartbeats are \
                 written each second)"
                    .to_owned(),
            );
        }
        if d.ports.contains(&0) {
            problems.push("api.discovery.ports: 0 is not a port".to_owned());
        }
        for r in &a.rate_limiting.trusted_proxies {
            if r.parse::<ipnetwork::IpNetwork>().is_err() {
                problems.push(format!(
                    "api.rate_limiting.trusted_proxies: {r:?} is not a CIDR"
                ));
            }
        }
        let l = &a.limits;
        if l.header_read_timeout_seconds == 0
            || l.request_timeout_seconds == 0
            || l.statement_timeout_seconds == 0
            || l.max_connections == 0
            || l.max_connections_per_address == 0
            || l.write_timeout_seconds == 0
            || l.max_concurrent_requests == 0
        {
            problems.push("api.limits: every limit must be at least 1".to_owned());
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections must be at least 1".to_owned());
        }
        a.integrations.servicenow.check(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The database URL, or why there is none.
    pub fn database_url(&self) -> Result<&str, ConfigError> {
        self.database.url.as_deref().ok_or_else(|| {
            ConfigError::Invalid(vec![
                "no database: set DATABASE_URL or database.url".to_owned(),
            ])
        })
    }

    /// The effective configuration with secrets replaced by `"<redacted>"`, for
    /// `/api/v1/admin/config`.
    pub fn redacted(&self) -> serde_json::Value {
        let mut c = self.clone();
        c.api.auth.jwt_secret = "<redacted>".into();
        c.database.url = c.database.url.as_deref().map(redact_url);
        c.api.rate_limiting.redis_url = redact_url(&c.api.rate_limiting.redis_url);
        c.api.cache.redis_url = redact_url(&c.api.cache.redis_url);
        let sn = &mut c.api.integrations.servicenow;
        for secret in [&mut sn.password, &mut sn.client_secret] {
            if !secret.is_empty() {
                *secret = "<redacted>".into();
            }
        }
        serde_json::to_value(c).unwrap_or(serde_json::Value::Null)
    }
}

impl ServiceNowConfig {
    /// Appends what is wrong with the section: its bounds always, the instance and
    /// credentials when the push is enabled.
    fn check(&self, problems: &mut Vec<String>) {
        const KEY: &str = "api.integrations.servicenow";
        if !(2..=10_000).contains(&self.batch_size) {
            problems.push(format!(
                "{KEY}.batch_size must be between 2 and 10000 (a relation travels with its two CIs)"
            ));
        }
        if !(1..=20).contains(&self.max_attempts) {
            problems.push(format!("{KEY}.max_attempts must be between 1 and 20"));
        }
        if !(1..=600).contains(&self.timeout_seconds) {
            problems.push(format!("{KEY}.timeout_seconds must be between 1 and 600"));
        }
        if self.interval_seconds < 60 {
            problems.push(format!(
                "{KEY}.interval_seconds must be at least 60 (every push sends the whole graph)"
            ));
        }
        if self.data_source.is_empty()
            || self.data_source.len() > 40
            || !self
                .data_source
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b' ')
        {
            problems.push(format!(
                "{KEY}.data_source must be 1-40 letters, digits, spaces, '_' or '-' (a choice \
                 of cmdb_ci.discovery_source)"
            ));
        }
        for (asset_type, class) in &self.classes {
            if !matches!(
                asset_type.as_str(),
                "server" | "vm" | "container" | "network_device" | "unknown"
            ) {
                problems.push(format!(
                    "{KEY}.classes: {asset_type:?} is not an asset type (server, vm, \
                     container, network_device, unknown)"
                ));
            }
            if class.is_empty()
                || class.len() > 80
                || !class
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                problems.push(format!(
                    "{KEY}.classes.{asset_type}: {class:?} is not a table name"
                ));
            }
        }
        if !matches!(self.auth.as_str(), "basic" | "oauth") {
            problems.push(format!("{KEY}.auth must be \"basic\" or \"oauth\""));
        }
        if !matches!(
            self.oauth_grant_type.as_str(),
            "password" | "client_credentials"
        ) {
            problems.push(format!(
                "{KEY}.oauth_grant_type must be \"password\" or \"client_credentials\""
            ));
        }
        if !self.enabled {
            return;
        }
        if let Err(e) = instance_url_ok(&self.instance_url) {
            problems.push(format!("{KEY}.instance_url: {e}"));
        }
        let user = !self.username.is_empty() && !self.password.is_empty();
        let client = !self.client_id.is_empty() && !self.client_secret.is_empty();
        let missing = match (self.auth.as_str(), self.oauth_grant_type.as_str()) {
            ("basic", _) if !user => "basic auth needs username and password",
            ("oauth", "password") if !(user && client) => {
                "the oauth password grant needs client_id, client_secret, username and password"
            }
            ("oauth", _) if !client => "oauth needs client_id and client_secret",
            _ => return,
        };
        problems.push(format!("{KEY}: {missing}"));
    }
}

/// An instance URL: `https://host[:port]` (a path prefix allowed, no query), or
/// `http://` to a loopback address only (credentials never cross a network in clear).
fn instance_url_ok(url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL"))?;
    let host_port = rest.split('/').next().unwrap_or("");
    if host_port.is_empty() || rest.contains(['?', '#', '@']) || url.ends_with('/') {
        return Err(format!(
            "{url:?}: give scheme://host[:port], with no trailing '/', query or user"
        ));
    }
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    match scheme {
        "https" => Ok(()),
        "http"
            if host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) =>
        {
            Ok(())
        }
        "http" => Err(format!(
            "{url:?}: http only to a loopback address (the credentials would cross the \
             network in clear)"
        )),
        _ => Err(format!("{url:?}: the scheme must be https")),
    }
}

/// `scheme://user:password@host/...?password=...` without the passwords. The last `@`
/// ends the user info (a password may contain `@`).
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority_and_path, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = match authority_and_path.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{user}:<redacted>@{host}")
        }
        _ => authority_and_path.to_owned(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().contains("password") => {
                    format!("{k}=<redacted>")
                }
                _ => kv.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{authority}?{q}"),
        None => format!("{scheme}://{authority}"),
    }
}

/// Replaces every `${NAME}` in `s`; returns the first unset name as the error.
fn expand_vars(s: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        out.push_str(&lookup(name).ok_or_else(|| name.to_owned())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
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

/// The API's configuration reference, generated from the code (`flowlens_docgen`):
/// `deploy/flowlens-api.example.yaml` and `docs/configuration-api.md`.
#[cfg(test)]
mod reference {
    use std::path::Path;

    use super::Config;

    fn entries() -> Vec<flowlens_docgen::Entry> {
        flowlens_docgen::entries(
            &serde_yaml::to_value(Config::default()).expect("the defaults serialize"),
            &schemars::schema_for!(Config).to_value(),
        )
    }

    fn current(relative: &str, text: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
        let bless = "cargo test -p flowlens-api --lib reference";
        flowlens_docgen::check_current(&path, text, bless).expect("a current file");
    }

    #[test]
    fn the_example_and_the_reference_are_current_and_every_key_is_explained() {
        let entries = entries();
        let unexplained: Vec<&str> = entries
            .iter()
            .filter(|e| e.meaning.as_deref().is_none_or(str::is_empty))
            .map(|e| e.path.as_str())
            .collect();
        assert!(
            unexplained.is_empty(),
            "keys without a doc comment: {unexplained:?}"
        );
        let example = flowlens_docgen::example_yaml(
            "flowlens-api: every configuration key with its default and what it means. \
             Generated from the code (a test fails when it is stale; FLOWLENS_BLESS=1 \
             rewrites it). Every key is optional; FLOWLENS_API__<KEY> variables override \
             the file, ${VAR} in secrets is read from the environment, and `flowlens-api \
             check-config FILE` shows the result. The daemon reads the same file (its own \
             sections are in flowlens-daemon.example.yaml).",
            &entries,
        );
        current("../deploy/flowlens-api.example.yaml", &example);
        current(
            "../docs/configuration-api.md",
            &flowlens_docgen::markdown(
                "Configuration of flowlens-api",
                "Every key is optional. The file is YAML (`--config FILE`); \
                 `FLOWLENS_API__<KEY>` environment variables (nested keys joined by `__`) \
                 override it; `${VAR}` in `api.auth.jwt_secret`, `database.url` and the \
                 Redis URLs is read from the environment; `flowlens-api check-config FILE` \
                 prints the effective result. A commented file with every default is \
                 [deploy/flowlens-api.example.yaml](../deploy/flowlens-api.example.yaml).",
                &entries,
            ),
        );
        // The example loads back as the defaults (the secret's variable given).
        let dir = std::env::temp_dir().join(format!("flowlens-api-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let file = dir.join("example.yaml");
        std::fs::write(&file, &example).expect("a temporary file");
        let secret = (
            "JWT_SECRET".to_owned(),
            "example-secret-0123456789abcdef0123".to_owned(),
        );
        let loaded = Config::load(Some(&file), [secret.clone()]).expect("the example loads");
        let mut defaults = Config::default();
        defaults.api.auth.jwt_secret = secret.1;
        assert_eq!(
            serde_json::to_value(&loaded).expect("serializes"),
            serde_json::to_value(&defaults).expect("serializes")
        );
        std::fs::remove_dir_all(&dir).expect("removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn write(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    /// A file under the target directory removed on drop (no tempfile crate needed).
    mod tempfile_path {
        pub(super) struct TempPath(pub(super) std::path::PathBuf);
        impl TempPath {
            pub(super) fn with(text: &str) -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "flowlens-api-config-{}-{}.yaml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&p, text).unwrap();
                Self(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn the_servicenow_push_reads_its_secrets_from_the_environment_and_never_shows_them() {
        let f = write(
            "api:\n  integrations:\n    servicenow:\n      enabled: true\n      instance_url: https://acme.service-now.com\n      auth: oauth\n      username: flowlens\n      password: ${SN_PASSWORD}\n      client_id: abc\n      client_secret: ${SN_SECRET}\n",
        );
        let c = Config::load(
            Some(&f.0),
            vars(&[
                ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
                ("SN_PASSWORD", "pw-1"),
                ("SN_SECRET", "cs-2"),
            ]),
        )
        .unwrap();
        let sn = &c.api.integrations.servicenow;
        assert_eq!(
            (sn.password.as_str(), sn.client_secret.as_str()),
            ("pw-1", "cs-2")
        );
        let shown = c.redacted().to_string();
        assert!(
            !shown.contains("pw-1") && !shown.contains("cs-2"),
            "{shown}"
        );
        // Unset variables, clear-text URLs to other hosts, missing credentials.
        let e = Config::load(
            Some(&f.0),
            vars(&[("JWT_SECRET", "0123456789abcdef0123456789abcdef")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("servicenow.password refers to ${SN_PASSWORD}"),
            "{e}"
        );
        let mut bad = c.clone();
        let sn = &mut bad.api.integrations.servicenow;
        sn.instance_url = "http://acme.service-now.com".into();
        sn.client_secret = String::new();
        sn.interval_seconds = 5;
        sn.classes
            .insert("router".into(), "cmdb_ci_netgear; drop".into());
        let e = bad.validate().unwrap_err().to_string();
        for want in [
            "http only to a loopback address",
            "oauth password grant needs",
            "interval_seconds must be at least 60",
            "\"router\" is not an asset type",
            "is not a table name",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
        let mut local = c;
        local.api.integrations.servicenow.instance_url = "http://127.0.0.1:8080".into();
        local.validate().unwrap();
    }

    #[test]
    fn defaults_are_the_designs() {
        let c = Config::load(
            None,
            vars(&[("JWT_SECRET", "0123456789abcdef0123456789abcdef0123")]),
        )
        .unwrap();
        assert_eq!(c.api.host, "0.0.0.0");
        assert_eq!(c.api.port, 8000);
        assert_eq!(c.api.workers, 4);
        assert_eq!(c.api.rate_limiting.default_limit, "100/minute");
        assert_eq!(c.api.rate_limiting.burst_limit, "20/second");
        assert_eq!(c.api.cache.topology_ttl_seconds, 300);
        assert_eq!(c.api.cache.search_ttl_seconds, 60);
        assert_eq!(c.api.pagination.default_page_size, 50);
        assert_eq!(c.api.pagination.max_page_size, 1000);
        assert_eq!(
            c.api.auth.jwt_secret,
            "0123456789abcdef0123456789abcdef0123"
        );
        assert_eq!(c.api.auth.token_expiry_hours, 24);
        assert_eq!(c.api.websocket.ping_interval_seconds, 30);
        assert_eq!(c.api.websocket.max_connections, 1000);
    }

    #[test]
    fn unset_secret_variable_is_a_clear_error() {
        let e = Config::load(None, vars(&[])).unwrap_err().to_string();
        assert!(
            e.contains("api.auth.jwt_secret refers to ${JWT_SECRET}"),
            "{e}"
        );
        // With auth off nobody reads the secret.
        Config::load(
            None,
            vars(&[
                ("FLOWLENS_API__AUTH__ENABLED", "false"),
                ("FLOWLENS_API__HOST", "127.0.0.1"),
            ]),
        )
        .unwrap();
    }

    #[test]
    fn unauthenticated_only_on_loopback_unless_forced() {
        let off = |extra: &[(&str, &str)]| {
            let mut v = vec![("FLOWLENS_API__AUTH__ENABLED", "false")];
            v.extend_from_slice(extra);
            Config::load(None, vars(&v))
        };
        // The default bind is every interface.
        let e = off(&[]).unwrap_err().to_string();
        assert!(e.contains("allow_unauthenticated_remote"), "{e}");
        let e = off(&[("FLOWLENS_API__HOST", "192.0.2.10")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("192.0.2.10"), "{e}");
        off(&[("FLOWLENS_API__HOST", "::1")]).unwrap();
        off(&[("FLOWLENS_API__HOST", "127.0.0.2")]).unwrap();
        off(&[("FLOWLENS_API__AUTH__ALLOW_UNAUTHENTICATED_REMOTE", "true")]).unwrap();
    }

    #[test]
    fn jwt_secrets_shorter_than_the_hash_are_refused() {
        let e = Config::load(None, vars(&[("JWT_SECRET", &"x".repeat(31))]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 32 bytes"), "{e}");
        Config::load(None, vars(&[("JWT_SECRET", &"x".repeat(32))])).unwrap();
    }

    #[test]
    fn file_then_env_then_database_url() {
        let f = write(
            "api:\n  port: 9000\n  auth:\n    jwt_secret: \"pre-${S}-post-0123456789abcdef0123456789\"\n  rate_limiting:\n    default_limit: 5/second\ndatabase:\n  url: postgres://file/db\n  write_raw_flows: true\ningestion:\n  batch_size: 3\n",
        );
        let c = Config::load(
            Some(&f.0),
            vars(&[("S", "x"), ("FLOWLENS_API__PORT", "9001")]),
        )
        .unwrap();
        assert_eq!(c.api.port, 9001);
        assert_eq!(
            c.api.auth.jwt_secret,
            "pre-x-post-0123456789abcdef0123456789"
        );
        assert_eq!(
            c.api.rate_limiting.default_limit.parse::<Rate>().unwrap(),
            Rate {
                count: 5,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(c.database.url.as_deref(), Some("postgres://file/db"));
        let c = Config::load(
            Some(&f.0),
            vars(&[("S", "x"), ("DATABASE_URL", "postgres://env/db")]),
        )
        .unwrap();
        assert_eq!(c.database.url.as_deref(), Some("postgres://env/db"));
    }

    #[test]
    fn unknown_api_keys_and_bad_values_are_all_reported() {
        let f = write("api:\n  prot: 1\n");
        let e = Config::load(
            Some(&f.0),
            vars(&[("JWT_SECRET", "0123456789abcdef0123456789abcdef")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `prot`"), "{e}");
        let f = write(
            "api:\n  host: nowhere\n  rate_limiting:\n    default_limit: 10/fortnight\n  pagination:\n    default_page_size: 5000\n  auth:\n    jwt_secret: short\n  analysis:\n    max_path_steps: 0\n",
        );
        let e = Config::load(Some(&f.0), vars(&[])).unwrap_err().to_string();
        for needle in [
            "api.host",
            "fortnight",
            "api.pagination",
            "32 bytes",
            "api.analysis.max_path_steps",
        ] {
            assert!(e.contains(needle), "{needle} in {e}");
        }
    }

    #[test]
    fn redaction_hides_secrets_only() {
        let c = Config::load(
            None,
            vars(&[
                ("JWT_SECRET", "0123456789abcdef0123456789abcdef0123"),
                (
                    "DATABASE_URL",
                    "postgres://flowlens:hunter2@db:5432/flowlens",
                ),
            ]),
        )
        .unwrap();
        let r = c.redacted().to_string();
        assert!(
            !r.contains("hunter2") && !r.contains("0123456789abcdef0123456789abcdef0123"),
            "{r}"
        );
        assert!(
            r.contains("postgres://flowlens:<redacted>@db:5432/flowlens"),
            "{r}"
        );
        assert!(r.contains("\"port\":8000"), "{r}");
        assert_eq!(
            redact_url("postgres://u:p@ss@db/x?sslpassword=s3&sslmode=require"),
            "postgres://u:<redacted>@db/x?sslpassword=<redacted>&sslmode=require"
        );
    }
}
