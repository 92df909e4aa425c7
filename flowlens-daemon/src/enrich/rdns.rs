//! EDGE: reverse DNS names for flow addresses, without ever making the flow path wait
//! (DESIGN.md §3.2, "DNS Resolution", `enrichment.dns`).
//!
//! The flow path calls [`ReverseDns::request`] for an address and [`ReverseDns::cached`]
//! when it writes the record. `request` only looks at a bounded in-memory cache: on a
//! miss it starts a background lookup on the tokio runtime given at construction and
//! returns at once, so the first flows from a new address go out without a name and the
//! later ones carry it. Lookups run through hickory-resolver, each under
//! `timeout_ms`, at most `max_concurrent_lookups` at a time.
//!
//! Answers are cached per address: a name until the record's TTL, clamped to
//! [`MIN_POSITIVE_TTL`]..`cache_ttl_seconds`; a non-answer (NXDOMAIN, no PTR, SERVFAIL,
//! timeout) for `negative_cache_ttl_seconds`, so an address without a name costs one query
//! per negative TTL rather than one per flow. The cache holds at most
//! `enrichment.cache.max_memory_entries` addresses; when full it drops expired entries
//! first, then the ones closest to expiry (see `Cache`). The cache takes the time as an
//! argument, so its expiry is unit-tested without sleeping.
//!
//! When every lookup slot is taken, a new request is dropped (counted in
//! `dropped_for_concurrency`) rather than queued: a burst of new addresses (a scan, a
//! reconnect storm) would otherwise queue tasks without bound, and their answers would
//! arrive long after the flows they were for. The address is not marked, so the next
//! flow from it tries again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::Record;
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
use hickory_resolver::{ResolveError, TokioResolver};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

/// The floor under a positive answer's lifetime. A TTL of 0 means "do not cache", and
/// dnsmasq serves its DHCP and `--ptr-record` names with TTL 0 by default; honoured
/// literally, a busy address would cost one query per flow. A name that changes within
/// a minute is rare enough to be late once.
pub const MIN_POSITIVE_TTL: Duration = Duration::from_mins(1);

/// The longest lifetime we compute with: RFC 2181 §8 caps TTLs at 2^31 - 1 seconds, and
/// the cap keeps `Instant + Duration` from overflowing whatever the config says.
const MAX_TTL: Duration = Duration::from_secs(0x7fff_ffff);

/// `enrichment.dns` (DESIGN.md §3.2); defaults are the design's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// On by default, as in the design: the flow path never waits for it.
    pub enabled: bool,
    /// `"system"` (default: the servers and options in `/etc/resolv.conf`), or one
    /// server as `"IP"` (port 53) or `"IP:PORT"` (`"[IPv6]:PORT"`).
    pub resolver: String,
    /// The whole budget of one lookup, retries included (default 500).
    pub timeout_ms: u64,
    /// The longest a name is kept, however long its record's TTL (default 3600).
    pub cache_ttl_seconds: u64,
    /// How long "no name" (NXDOMAIN, no PTR, SERVFAIL, timeout) is kept (default 300).
    pub negative_cache_ttl_seconds: u64,
    /// Lookups in flight at once; requests beyond it are dropped and retried later
    /// (default 100).
    pub max_concurrent_lookups: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            resolver: "system".to_owned(),
            timeout_ms: 500,
            cache_ttl_seconds: 3600,
            negative_cache_ttl_seconds: 300,
            max_concurrent_lookups: 100,
        }
    }
}

/// Why [`ReverseDns::new`] refused the config.
#[derive(Debug, thiserror::Error)]
pub enum RdnsError {
    #[error("enrichment.dns.resolver {text:?} is not \"system\", an IP address or IP:PORT")]
    InvalidResolver { text: String },
    #[error("enrichment.dns.{key} must be greater than 0")]
    Zero { key: &'static str },
    #[error("reading the system resolver configuration (/etc/resolv.conf): {source}")]
    SystemConfig {
        #[source]
        source: ResolveError,
    },
}

impl RdnsError {
    /// A bounded label for metrics and logs.
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::InvalidResolver { .. } => "invalid_resolver",
            Self::Zero { .. } => "zero",
            Self::SystemConfig { .. } => "system_config",
        }
    }
}

/// A snapshot of the counters. Once nothing is in flight,
/// `lookups == resolved + not_found + failures + timeouts`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RdnsCounters {
    /// Queries started (by `request` or `resolve_now`).
    pub lookups: u64,
    /// `request` calls answered by a fresh cache entry, positive or negative.
    pub hits: u64,
    /// `request` calls that found nothing fresh (a lookup started, was in flight, or was
    /// dropped).
    pub misses: u64,
    /// Lookups that returned a name.
    pub resolved: u64,
    /// Lookups answered NXDOMAIN or with no PTR record: the address has no name.
    pub not_found: u64,
    /// Lookups that failed otherwise (SERVFAIL, REFUSED, a network error).
    pub failures: u64,
    /// Lookups that ran out of `timeout_ms`.
    pub timeouts: u64,
    /// Misses that started no lookup because `max_concurrent_lookups` were in flight.
    pub dropped_for_concurrency: u64,
    /// Unexpired entries removed to make room (expired ones are not counted).
    pub evictions: u64,
    /// Lookups whose every name was unusable (see [`usable_name`]), cached and counted
    /// as "no name" too.
    pub invalid_names: u64,
    /// Lookups answered by another instance's answer in the shared cache (no query).
    pub shared: u64,
}

/// Whether a PTR name (ASCII form, trailing dot removed) may become an asset's `fqdn`:
/// at most 253 characters in labels of 1 to 63 letters, digits, hyphens or
/// underscores. Whoever controls the reverse zone of an address that sends a few flows
/// chooses its name: hickory escapes odd bytes (`\\DDD`), so a 255-byte name can come
/// back as ~1000 characters, longer than the column, and one such name failed every
/// flush until its cache entry expired. Such names are not names.
pub fn usable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// What one lookup produced.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A name, and the smallest TTL in the answer when the resolver reports one.
    Resolved {
        name: String,
        ttl: Option<Duration>,
    },
    NotFound,
    Failed,
    TimedOut,
}

/// A cached answer: `name` is `None` for a negative entry.
#[derive(Debug)]
struct Entry {
    name: Option<String>,
    expires_at: Instant,
}

/// PURE: per-address answers with an expiry, at most `capacity` of them.
///
/// `by_expiry` orders the same entries by expiry, so making room removes expired entries
/// first and then the live entry that would have expired soonest (the one whose loss
/// costs least: it would have been looked up again soonest anyway), in O(log n).
#[derive(Debug)]
struct Cache {
    entries: HashMap<IpAddr, Entry>,
    by_expiry: BTreeSet<(Instant, IpAddr)>,
    capacity: usize,
}

impl Cache {
    /// A capacity of 0 is taken as 1: a cache that keeps nothing would start a lookup
    /// for every flow.
    fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// `Some(Some(name))`, `Some(None)` for a negative entry, `None` if absent or expired.
    #[expect(
        clippy::option_option,
        reason = "the three states of ReverseDns::cached: unknown, no name, a name"
    )]
    fn get(&self, ip: IpAddr, now: Instant) -> Option<Option<&str>> {
        self.entries
            .get(&ip)
            .filter(|e| e.expires_at > now)
            .map(|e| e.name.as_deref())
    }

    /// Stores an answer; returns how many unexpired entries were evicted for it.
    fn insert(
        &mut self,
        ip: IpAddr,
        name: Option<String>,
        expires_at: Instant,
        now: Instant,
    ) -> u64 {
        if let Some(old) = self.entries.remove(&ip) {
            self.by_expiry.remove(&(old.expires_at, ip));
        }
        let mut evicted = 0;
        while let Some(&(at, victim)) = self.by_expiry.first() {
            if at > now && self.entries.len() < self.capacity {
                break;
            }
            self.by_expiry.pop_first();
            self.entries.remove(&victim);
            evicted += u64::from(at > now);
        }
        self.entries.insert(ip, Entry { name, expires_at });
        self.by_expiry.insert((expires_at, ip));
        evicted
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// PURE: until when an outcome is kept.
fn expiry(outcome: &Outcome, now: Instant, positive: Duration, negative: Duration) -> Instant {
    let keep = match outcome {
        Outcome::Resolved { ttl: Some(ttl), .. } => {
            (*ttl).clamp(MIN_POSITIVE_TTL.min(positive), positive)
        }
        Outcome::Resolved { ttl: None, .. } => positive,
        Outcome::NotFound | Outcome::Failed | Outcome::TimedOut => negative,
    };
    now.checked_add(keep).unwrap_or(now)
}

/// The cache, the addresses being looked up and the counters, under one lock that is
/// never held across an await (each update touches two of them, so one lock is simpler
/// than atomics and no slower).
#[derive(Debug)]
struct State {
    cache: Cache,
    in_flight: HashSet<IpAddr>,
    counters: RdnsCounters,
}

#[derive(Debug)]
struct Shared {
    resolver: TokioResolver,
    runtime: Handle,
    slots: Arc<Semaphore>,
    state: Mutex<State>,
    timeout: Duration,
    positive_ttl: Duration,
    negative_ttl: Duration,
    /// Other instances' answers (`enrichment.cache.backend: redis`).
    cache: Option<Arc<crate::enrich::shared::SharedCache>>,
}

/// An answer as shared between instances: the name (none: known to have none) and
/// until when it holds, in milliseconds since the epoch.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SharedAnswer {
    name: Option<String>,
    until_ms: u64,
}

/// The reverse DNS handle; cheap to clone, every clone shares one cache.
#[derive(Debug, Clone)]
pub struct ReverseDns {
    shared: Arc<Shared>,
}

impl ReverseDns {
    /// Builds the resolver; `Ok(None)` when `enabled` is false. `max_memory_entries` is
    /// `enrichment.cache.max_memory_entries`, the bound shared by enrichment caches.
    /// Lookups are spawned on `runtime`, so `request` may be called from any thread.
    pub fn new(
        config: &DnsConfig,
        max_memory_entries: usize,
        runtime: Handle,
    ) -> Result<Option<Self>, RdnsError> {
        if !config.enabled {
            return Ok(None);
        }
        if config.timeout_ms == 0 {
            return Err(RdnsError::Zero { key: "timeout_ms" });
        }
        if config.max_concurrent_lookups == 0 {
            return Err(RdnsError::Zero {
                key: "max_concurrent_lookups",
            });
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let mut builder = if config.resolver == "system" {
            TokioResolver::builder_tokio().map_err(|source| RdnsError::SystemConfig { source })?
        } else {
            let server = parse_server(&config.resolver)?;
            let servers =
                NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
            let mut builder = TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                TokioConnectionProvider::default(),
            );
            // Answers come from the named server only, as configured.
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        };
        let opts = builder.options_mut();
        // Two tries of half the budget each: a lost UDP datagram costs half the
        // budget, not the answer.
        opts.timeout = (timeout / 2).max(Duration::from_millis(1));
        opts.attempts = 1;
        // We cache per address with our own bounds; a second cache would only hold
        // records past the TTLs we chose.
        opts.cache_size = 0;
        let secs = |s: u64| Duration::from_secs(s).min(MAX_TTL);
        Ok(Some(Self {
            shared: Arc::new(Shared {
                resolver: builder.build(),
                runtime,
                slots: Arc::new(Semaphore::new(
                    config.max_concurrent_lookups.min(Semaphore::MAX_PERMITS),
                )),
                state: Mutex::new(State {
                    cache: Cache::new(max_memory_entries),
                    in_flight: HashSet::new(),
                    counters: RdnsCounters::default(),
                }),
                timeout,
                positive_ttl: secs(config.cache_ttl_seconds),
                negative_ttl: secs(config.negative_cache_ttl_seconds),
                cache: None,
            }),
        }))
    }

    /// Shares answers with the other instances through `cache`: a miss asks it before
    /// the resolver, and what the resolver answers is stored there with its expiry.
    #[must_use]
    pub fn with_shared_cache(mut self, cache: Arc<crate::enrich::shared::SharedCache>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.cache = Some(cache);
        }
        self
    }

    /// Makes sure a name for `ip` is cached or on its way, without waiting: on a miss
    /// with no lookup in flight for `ip`, starts one if a slot is free.
    pub fn request(&self, ip: IpAddr) {
        let ip = ip.to_canonical();
        let mut state = self.shared.lock();
        if state.cache.get(ip, Instant::now()).is_some() {
            state.counters.hits += 1;
            return;
        }
        state.counters.misses += 1;
        if state.in_flight.contains(&ip) {
            return;
        }
        let Ok(permit) = Arc::clone(&self.shared.slots).try_acquire_owned() else {
            state.counters.dropped_for_concurrency += 1;
            return;
        };
        state.in_flight.insert(ip);
        state.counters.lookups += 1;
        drop(state);
        let guard = InFlight {
            shared: Arc::clone(&self.shared),
            ip,
        };
        self.shared.runtime.spawn(async move {
            let answered = guard.shared.answer(ip).await;
            drop(permit);
            if let Some(outcome) = answered {
                guard.shared.store(ip, &outcome);
            }
        });
    }

    /// The cached answer: `Some(Some(name))` resolved, `Some(None)` known to have no
    /// name (or failed recently), `None` unknown, expired or in flight. Counts nothing.
    pub fn cached(&self, ip: IpAddr) -> Option<Option<String>> {
        let state = self.shared.lock();
        state
            .cache
            .get(ip.to_canonical(), Instant::now())
            .map(|name| name.map(str::to_owned))
    }

    /// Looks `ip` up and waits for the answer (for tools and tests): the cached answer if
    /// fresh, otherwise a lookup of its own (it does not join one in flight) that waits
    /// for a free slot rather than being dropped. The answer is cached as `request`'s are.
    pub async fn resolve_now(&self, ip: IpAddr) -> Option<String> {
        let ip = ip.to_canonical();
        if let Some(answer) = self.cached(ip) {
            return answer;
        }
        let _permit = self.shared.slots.acquire().await.ok()?;
        self.shared.lock().counters.lookups += 1;
        match self.shared.answer(ip).await {
            Some(outcome) => {
                self.shared.store(ip, &outcome);
                match outcome {
                    Outcome::Resolved { name, .. } => Some(name),
                    Outcome::NotFound | Outcome::Failed | Outcome::TimedOut => None,
                }
            }
            None => self.cached(ip).flatten(),
        }
    }

    /// A snapshot of the counters, for the metrics exporter and tests.
    pub fn counters(&self) -> RdnsCounters {
        self.shared.lock().counters
    }

    /// Addresses in the cache, expired ones included until they are pushed out.
    pub fn cache_len(&self) -> usize {
        self.shared.lock().cache.len()
    }
}

impl Shared {
    /// A poisoned lock still holds a consistent cache (no update panics halfway), so
    /// enrichment goes on rather than failing every flow after one panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer for `ip`: another instance's from the shared cache (stored here
    /// with its own expiry; `None` returned, nothing more to store), else the
    /// resolver's, which is shared in turn.
    async fn answer(&self, ip: IpAddr) -> Option<Outcome> {
        let Some(cache) = &self.cache else {
            return Some(self.lookup(ip).await);
        };
        let key = format!("rdns:{ip}");
        let now_ms = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
        )
        .unwrap_or(u64::MAX);
        if let Some(answer) = cache
            .get("rdns", &key)
            .await
            .and_then(|v| serde_json::from_slice::<SharedAnswer>(&v).ok())
            .filter(|a| a.until_ms > now_ms)
            // Another instance's name passes the same check as ours.
            .filter(|a| a.name.as_deref().is_none_or(usable_name))
        {
            let keep = Duration::from_millis(answer.until_ms - now_ms).min(MAX_TTL);
            let now = Instant::now();
            let mut state = self.lock();
            state.counters.shared += 1;
            let evicted =
                state
                    .cache
                    .insert(ip, answer.name, now.checked_add(keep).unwrap_or(now), now);
            state.counters.evictions += evicted;
            metrics::counter!(crate::enrich::shared::metric::SHARED_HITS, "use" => "rdns")
                .increment(1);
            return None;
        }
        let outcome = self.lookup(ip).await;
        // Failures are not shared: another instance's resolver may do better.
        let name = match &outcome {
            Outcome::Resolved { name, .. } => Some(Some(name.clone())),
            Outcome::NotFound => Some(None),
            Outcome::Failed | Outcome::TimedOut => None,
        };
        if let Some(name) = name {
            let keep = expiry(
                &outcome,
                Instant::now(),
                self.positive_ttl,
                self.negative_ttl,
            )
            .saturating_duration_since(Instant::now());
            let until_ms = now_ms.saturating_add(u64::try_from(keep.as_millis()).unwrap_or(0));
            if let Ok(value) = serde_json::to_vec(&SharedAnswer { name, until_ms }) {
                cache.set("rdns", &key, value, keep).await;
            }
        }
        Some(outcome)
    }

    async fn lookup(&self, ip: IpAddr) -> Outcome {
        match tokio::time::timeout(self.timeout, self.resolver.reverse_lookup(ip)).await {
            Err(_elapsed) => Outcome::TimedOut,
            Ok(Err(err)) => classify(&err),
            Ok(Ok(answer)) => {
                // Several PTRs are legal and servers rotate their order; the smallest
                // name keeps the answer stable from one lookup to the next. Names stay in
                // ASCII form (punycode, escaped bytes): whoever owns an outside address
                // chooses its PTR, and a Unicode look-alike should not pass for a name.
                let names: Vec<String> = answer
                    .iter()
                    .map(|ptr| {
                        let mut name = ptr.0.to_ascii();
                        if name.ends_with('.') {
                            name.pop();
                        }
                        name
                    })
                    .filter(|n| !n.is_empty())
                    .collect();
                let name = names.iter().filter(|n| usable_name(n)).min().cloned();
                if name.is_none() && !names.is_empty() {
                    self.lock().counters.invalid_names += 1;
                }
                let ttl = answer.as_lookup().record_iter().map(Record::ttl).min();
                match name {
                    Some(name) => Outcome::Resolved {
                        name,
                        ttl: ttl.map(|s| Duration::from_secs(u64::from(s))),
                    },
                    None => Outcome::NotFound,
                }
            }
        }
    }

    fn store(&self, ip: IpAddr, outcome: &Outcome) {
        if let Outcome::Failed | Outcome::TimedOut = outcome {
            tracing::debug!(%ip, ?outcome, "reverse lookup failed");
        }
        let now = Instant::now();
        let expires_at = expiry(outcome, now, self.positive_ttl, self.negative_ttl);
        let mut state = self.lock();
        let c = &mut state.counters;
        *match outcome {
            Outcome::Resolved { .. } => &mut c.resolved,
            Outcome::NotFound => &mut c.not_found,
            Outcome::Failed => &mut c.failures,
            Outcome::TimedOut => &mut c.timeouts,
        } += 1;
        let name = match outcome {
            Outcome::Resolved { name, .. } => Some(name.clone()),
            Outcome::NotFound | Outcome::Failed | Outcome::TimedOut => None,
        };
        state.counters.evictions += state.cache.insert(ip, name, expires_at, now);
    }
}

/// How a resolver error is cached and counted: "no name" answers apart from failures.
fn classify(err: &ResolveError) -> Outcome {
    match err.proto().map(ProtoError::kind) {
        Some(ProtoErrorKind::Timeout) => Outcome::TimedOut,
        Some(ProtoErrorKind::NoRecordsFound {
            response_code: ResponseCode::NXDomain | ResponseCode::NoError,
            ..
        }) => Outcome::NotFound,
        _ => Outcome::Failed,
    }
}

/// Removes the address from the in-flight set however the lookup task ends (done,
/// panicked, or dropped at runtime shutdown), so an address is never stuck unresolvable.
struct InFlight {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.lock().in_flight.remove(&self.ip);
    }
}

/// `"IP"` (port 53) or `"IP:PORT"`.
fn parse_server(text: &str) -> Result<SocketAddr, RdnsError> {
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .or_else(|_| text.parse::<SocketAddr>())
        .map_err(|_| RdnsError::InvalidResolver {
            text: text.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn only_hostname_shaped_names_are_usable() {
        assert!(usable_name("db-1.prod.example.com"));
        assert!(usable_name("_ldap._tcp.example.org"));
        assert!(usable_name("xn--bcher-kva.example"));
        let label = "a".repeat(63);
        let long = [label.as_str(); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(!usable_name(&long), "over 253 characters");
        assert!(usable_name(long[..253].trim_end_matches('.')));
        assert!(!usable_name(&"b".repeat(64)), "a label over 63");
        assert!(!usable_name(r"evil\032name.example"), "escaped bytes");
        assert!(!usable_name("has space.example"));
        assert!(!usable_name("a..b"), "empty label");
        assert!(!usable_name(""));
        // What hickory makes of a 255-byte label of odd bytes: ~1000 characters.
        let escaped = r"\255".repeat(200);
        assert!(!usable_name(&escaped));
    }

    #[test]
    fn config_defaults_are_the_designs() {
        let cfg: DnsConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(cfg, DnsConfig::default());
        assert!(cfg.enabled);
        assert_eq!(cfg.resolver, "system");
        assert_eq!((cfg.timeout_ms, cfg.cache_ttl_seconds), (500, 3600));
        assert_eq!(
            (cfg.negative_cache_ttl_seconds, cfg.max_concurrent_lookups),
            (300, 100)
        );
        assert!(serde_yaml::from_str::<DnsConfig>("timeout: 5\n").is_err());
    }

    #[test]
    fn cache_entries_expire_at_their_deadline() {
        let t0 = Instant::now();
        let mut cache = Cache::new(10);
        cache.insert(ip("10.0.0.1"), Some("a.example".into()), t0 + S(60), t0);
        cache.insert(ip("10.0.0.2"), None, t0 + S(5), t0);
        assert_eq!(
            cache.get(ip("10.0.0.1"), t0 + S(59)),
            Some(Some("a.example"))
        );
        assert_eq!(cache.get(ip("10.0.0.1"), t0 + S(60)), None);
        assert_eq!(cache.get(ip("10.0.0.2"), t0 + S(4)), Some(None));
        assert_eq!(cache.get(ip("10.0.0.2"), t0 + S(5)), None);
        assert_eq!(cache.get(ip("10.0.0.3"), t0), None);
    }

    #[test]
    fn positive_ttl_is_the_records_clamped_to_floor_and_cache_ttl() {
        let t0 = Instant::now();
        let named = |ttl: Option<u64>| Outcome::Resolved {
            name: "h".into(),
            ttl: ttl.map(S),
        };
        let keep = |o: &Outcome, positive: u64| expiry(o, t0, S(positive), S(300)) - t0;
        assert_eq!(keep(&named(Some(120)), 3600), S(120));
        assert_eq!(
            keep(&named(Some(86_400)), 3600),
            S(3600),
            "capped at cache_ttl"
        );
        assert_eq!(
            keep(&named(Some(0)), 3600),
            MIN_POSITIVE_TTL,
            "TTL 0 floored"
        );
        assert_eq!(keep(&named(None), 3600), S(3600), "no TTL: cache_ttl");
        assert_eq!(
            keep(&named(Some(0)), 10),
            S(10),
            "cache_ttl below the floor wins"
        );
        for negative in [Outcome::NotFound, Outcome::Failed, Outcome::TimedOut] {
            assert_eq!(keep(&negative, 3600), S(300), "{negative:?}");
        }
    }

    #[test]
    fn full_cache_drops_expired_then_soonest_to_expire() {
        let t0 = Instant::now();
        let mut cache = Cache::new(2);
        assert_eq!(cache.insert(ip("10.0.0.1"), None, t0 + S(10), t0), 0);
        assert_eq!(cache.insert(ip("10.0.0.2"), None, t0 + S(20), t0), 0);
        // Full, nothing expired: the entry expiring soonest goes, and is counted.
        assert_eq!(cache.insert(ip("10.0.0.3"), None, t0 + S(30), t0), 1);
        assert_eq!(cache.get(ip("10.0.0.1"), t0), None);
        assert_eq!(cache.len(), 2);
        // At t0+25 10.0.0.2 has expired: it makes room and is not counted.
        assert_eq!(
            cache.insert(ip("10.0.0.4"), None, t0 + S(90), t0 + S(25)),
            0
        );
        assert_eq!(cache.get(ip("10.0.0.3"), t0 + S(25)), Some(None));
        assert_eq!(cache.get(ip("10.0.0.4"), t0 + S(25)), Some(None));
        // Replacing an address's answer does not grow the cache or evict.
        let name = Some("new.example".to_owned());
        assert_eq!(
            cache.insert(ip("10.0.0.4"), name, t0 + S(95), t0 + S(26)),
            0
        );
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.by_expiry.len(), 2);
        assert_eq!(
            cache.get(ip("10.0.0.4"), t0 + S(94)),
            Some(Some("new.example"))
        );
        // Expired entries are all purged on the next insert, however many.
        assert_eq!(
            cache.insert(ip("10.0.0.5"), None, t0 + S(200), t0 + S(100)),
            0
        );
        assert_eq!(cache.len(), 1);
        assert_eq!(Cache::new(0).capacity, 1);
    }

    #[test]
    fn resolver_errors_are_classified() {
        let nx = |code| {
            let query = Box::default();
            ProtoError::nx_error(query, None, None, None, code, true, None)
        };
        let cases = [
            (nx(ResponseCode::NXDomain), Outcome::NotFound),
            (nx(ResponseCode::NoError), Outcome::NotFound),
            (nx(ResponseCode::ServFail), Outcome::Failed),
            (nx(ResponseCode::Refused), Outcome::Failed),
            (ProtoErrorKind::Timeout.into(), Outcome::TimedOut),
            (ProtoErrorKind::NoConnections.into(), Outcome::Failed),
        ];
        for (err, want) in cases {
            assert_eq!(classify(&ResolveError::from(err)), want);
        }
        assert_eq!(classify(&ResolveError::from("other")), Outcome::Failed);
    }

    #[test]
    fn resolver_setting_parses() {
        let ok = |t: &str| parse_server(t).unwrap().to_string();
        assert_eq!(ok("192.0.2.53"), "192.0.2.53:53");
        assert_eq!(ok("127.0.0.1:5353"), "127.0.0.1:5353");
        assert_eq!(ok("2001:db8::53"), "[2001:db8::53]:53");
        assert_eq!(ok("[::1]:5353"), "[::1]:5353");
        for bad in ["", "dns.example", "10.0.0.1:", "10.0.0.1:99999", "::1:53x"] {
            let err = parse_server(bad).unwrap_err();
            assert_eq!(err.reason(), "invalid_resolver", "{bad}");
        }
    }

    #[tokio::test]
    async fn new_validates_the_config() {
        let handle = Handle::current();
        let build = |cfg: DnsConfig| ReverseDns::new(&cfg, 10, handle.clone());
        let off = DnsConfig {
            enabled: false,
            resolver: "not parsed when disabled".into(),
            ..DnsConfig::default()
        };
        assert!(build(off).unwrap().is_none());
        let with = |f: fn(&mut DnsConfig)| {
            let mut cfg = DnsConfig::default();
            f(&mut cfg);
            build(cfg).unwrap_err().to_string()
        };
        assert!(with(|c| c.timeout_ms = 0).contains("timeout_ms must be greater than 0"));
        assert!(with(|c| c.max_concurrent_lookups = 0).contains("max_concurrent_lookups"));
        assert!(with(|c| c.resolver = "dns.example".into()).contains("\"dns.example\""));
        let server = DnsConfig {
            resolver: "127.0.0.1:5353".into(),
            ..DnsConfig::default()
        };
        assert!(build(server).unwrap().is_some());
    }

    /// A full set of slots drops new requests (counted) instead of queueing them, and a
    /// dropped address is retried by the next request. The server is a local socket
    /// that never answers, so the first lookup holds the only slot.
    #[tokio::test]
    async fn busy_slots_drop_requests_and_allow_a_retry() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let cfg = DnsConfig {
            resolver: silent.local_addr().unwrap().to_string(),
            timeout_ms: 200,
            max_concurrent_lookups: 1,
            ..DnsConfig::default()
        };
        let rdns = ReverseDns::new(&cfg, 10, Handle::current())
            .unwrap()
            .unwrap();
        rdns.request(ip("192.0.2.1"));
        rdns.request(ip("192.0.2.2"));
        rdns.request(ip("192.0.2.1"));
        let c = rdns.counters();
        assert_eq!((c.lookups, c.misses, c.dropped_for_concurrency), (1, 3, 1));
        assert_eq!(rdns.cached(ip("192.0.2.1")), None, "in flight");
        let until = Instant::now() + S(5);
        while rdns.cached(ip("192.0.2.1")).is_none() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            rdns.cached(ip("192.0.2.1")),
            Some(None),
            "timed out: negative"
        );
        assert_eq!(rdns.counters().timeouts, 1);
        rdns.request(ip("192.0.2.2"));
        assert_eq!(
            rdns.counters().lookups,
            2,
            "the dropped address is tried again"
        );
        rdns.request(ip("192.0.2.1"));
        assert_eq!(rdns.counters().hits, 1);
        assert_eq!(rdns.cache_len(), 1);
    }
}
