//! Reverse DNS against a real server: Debian's dnsmasq on 127.0.0.1 at a free port,
//! serving PTR names for `10.9.0.1` and `2001:db8::1`, authoritative ("local") for the rest
//! of `10.9.0.0/16` and `2001:db8::/32` so that other addresses there get NXDOMAIN.
//!
//! Checks what the flow path relies on: `request` returns at once and `cached` then
//! shows the name, or a negative entry for an address without one; many concurrent
//! requests for one address make one query (counted by us and seen in dnsmasq's query
//! log); a server that never answers gives a negative entry within `timeout_ms`.
//!
//! Without dnsmasq the tests that need it are skipped with a message, unless `CI` is set,
//! where a missing dnsmasq fails them (`apt-get install dnsmasq-base`, the binary without
//! the system service; `.ci/run` installs it).

use std::net::{IpAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowlens_daemon::enrich::rdns::{DnsConfig, ReverseDns};
use tokio::runtime::Handle;

/// How long a test waits for an answer: dnsmasq on loopback answers in microseconds, so
/// this only matters on a badly overloaded machine.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// A running dnsmasq, killed when dropped so a failing test leaves no process behind.
struct Dnsmasq {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Dnsmasq {
    /// Starts dnsmasq and waits until it answers. Retries on a new port if the one we
    /// picked was taken between our probe and dnsmasq's bind.
    async fn start() -> Self {
        for attempt in 0..5 {
            let port = free_port();
            let log = std::env::temp_dir().join(format!(
                "flowlens-dnsmasq-{}-{port}-{attempt}.log",
                std::process::id()
            ));
            let log_file = std::fs::File::create(&log).expect("creating the dnsmasq log file");
            let child = Command::new("dnsmasq")
                .args([
                    "--no-daemon",
                    "--conf-file=/dev/null",
                    "--pid-file=",
                    "--no-resolv",
                    "--no-hosts",
                    &format!("--port={port}"),
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--log-queries",
                    "--log-facility=-",
                    "--local-ttl=120",
                    "--local=/9.10.in-addr.arpa/",
                    "--local=/8.b.d.0.1.0.0.2.ip6.arpa/",
                    "--ptr-record=1.0.9.10.in-addr.arpa,db1.internal.example",
                    "--ptr-record=3.0.9.10.in-addr.arpa,cache.internal.example",
                    "--host-record=v6host.internal.example,2001:db8::1",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .expect("spawning dnsmasq");
            let mut server = Self { child, port, log };
            if server.wait_ready().await {
                return server;
            }
        }
        panic!("dnsmasq did not start on any of 5 ports");
    }

    /// Whether dnsmasq answers 10.9.0.1, asked through a separate resolver so the
    /// tests' own caches start empty.
    async fn wait_ready(&mut self) -> bool {
        let probe = reverse_dns(&format!("127.0.0.1:{}", self.port), 200);
        let until = Instant::now() + ANSWER_WITHIN;
        while Instant::now() < until {
            if probe.resolve_now(ip("10.9.0.1")).await.is_some() {
                return true;
            }
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// How many PTR queries for `name` dnsmasq logged, once it has logged `at_least`
    /// (or after a second: the log line may be written just after the answer is sent).
    async fn queries_for(&self, name: &str, at_least: usize) -> usize {
        let needle = format!("query[PTR] {name} ");
        let until = Instant::now() + Duration::from_secs(1);
        loop {
            let log = std::fs::read_to_string(&self.log).expect("reading the dnsmasq log");
            let count = log.lines().filter(|l| l.contains(&needle)).count();
            if count >= at_least || Instant::now() >= until {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both).
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("binding a UDP probe socket");
        let port = udp.local_addr().expect("probe socket address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Whether dnsmasq is installed; panics when it is missing on CI.
fn dnsmasq_installed() -> bool {
    let found = Command::new("dnsmasq")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "dnsmasq is not installed but CI is set: the reverse DNS tests cannot be skipped"
        );
        eprintln!(
            "SKIPPED: dnsmasq is not installed (apt-get install dnsmasq-base); set CI to fail"
        );
    }
    found
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a literal IP address")
}

fn reverse_dns(resolver: &str, timeout_ms: u64) -> ReverseDns {
    let config = DnsConfig {
        resolver: resolver.to_owned(),
        timeout_ms,
        ..DnsConfig::default()
    };
    ReverseDns::new(&config, 1000, Handle::current())
        .expect("a valid DNS config")
        .expect("DNS enabled")
}

/// Polls `cached` until the address has an answer or `within` has passed.
async fn wait_cached(rdns: &ReverseDns, addr: IpAddr, within: Duration) -> Option<Option<String>> {
    let until = Instant::now() + within;
    loop {
        let answer = rdns.cached(addr);
        if answer.is_some() || Instant::now() >= until {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_negative_answers_are_cached() {
    if !dnsmasq_installed() {
        return;
    }
    let dns = Dnsmasq::start().await;
    let rdns = reverse_dns(&format!("127.0.0.1:{}", dns.port), 1000);
    // No record in a local domain: NXDOMAIN. Outside them, with no upstream: REFUSED.
    let addrs = [
        "10.9.0.1",
        "2001:db8::1",
        "10.9.0.2",
        "2001:db8::2",
        "192.0.2.1",
    ];
    for a in addrs {
        rdns.request(ip(a));
    }
    let mut answers = Vec::new();
    for a in addrs {
        answers.push(wait_cached(&rdns, ip(a), ANSWER_WITHIN).await);
    }
    assert_eq!(
        answers,
        [
            Some(Some("db1.internal.example".to_owned())),
            Some(Some("v6host.internal.example".to_owned())),
            Some(None),
            Some(None),
            Some(None),
        ]
    );
    assert_eq!(
        rdns.cached(ip("::ffff:10.9.0.1")),
        Some(Some("db1.internal.example".to_owned())),
        "IPv4-mapped addresses share the IPv4 entry"
    );
    let c = rdns.counters();
    assert_eq!((c.lookups, c.resolved, c.not_found), (5, 2, 2), "{c:?}");
    assert_eq!(
        (c.failures, c.timeouts, c.dropped_for_concurrency),
        (1, 0, 0)
    );
    rdns.request(ip("10.9.0.1"));
    rdns.request(ip("10.9.0.2"));
    let c = rdns.counters();
    assert_eq!(
        (c.hits, c.misses, c.lookups),
        (2, 5, 5),
        "answered from the cache"
    );
    assert_eq!(
        rdns.resolve_now(ip("2001:db8::1")).await.as_deref(),
        Some("v6host.internal.example")
    );
    assert_eq!(
        dns.queries_for("1.0.9.10.in-addr.arpa", 2).await,
        2,
        "the probe's and ours"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_address_make_one_lookup() {
    if !dnsmasq_installed() {
        return;
    }
    let dns = Dnsmasq::start().await;
    let rdns = reverse_dns(&format!("127.0.0.1:{}", dns.port), 1000);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let rdns = rdns.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    rdns.request(ip("10.9.0.3"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a requesting thread panicked");
    }
    let answer = wait_cached(&rdns, ip("10.9.0.3"), ANSWER_WITHIN).await;
    assert_eq!(answer, Some(Some("cache.internal.example".to_owned())));
    let c = rdns.counters();
    assert_eq!(c.lookups, 1, "{c:?}");
    assert_eq!(c.hits + c.misses, 100, "{c:?}");
    assert_eq!(dns.queries_for("3.0.9.10.in-addr.arpa", 1).await, 1);
}

/// A server that never answers: a socket we bind and never read, so no ICMP "port
/// unreachable" turns the timeout into a quick failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_lookup_times_out_into_a_negative_entry() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("binding the silent server");
    let port = silent.local_addr().expect("silent server address").port();
    let timeout_ms = 300;
    let rdns = reverse_dns(&format!("127.0.0.1:{port}"), timeout_ms);
    let started = Instant::now();
    rdns.request(ip("10.9.0.1"));
    let returned_after = started.elapsed();
    assert_eq!(rdns.cached(ip("10.9.0.1")), None, "in flight");
    let answer = wait_cached(&rdns, ip("10.9.0.1"), Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert_eq!(answer, Some(None));
    assert!(
        returned_after * 4 < took,
        "request returned after {returned_after:?}, the answer came after {took:?}"
    );
    let margin = Duration::from_millis(500);
    assert!(
        took < Duration::from_millis(timeout_ms) + margin,
        "took {took:?}"
    );
    let c = rdns.counters();
    assert_eq!((c.lookups, c.timeouts, c.failures), (1, 1, 0), "{c:?}");
    drop(silent);
}

/// `enrichment.cache.backend: redis`: a name one instance resolved is taken by
/// another from Redis, with no query of its own (its resolver here answers nothing);
/// failures are not shared; with Redis down each instance asks its own resolver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_one_instance_resolved_is_shared_through_redis() {
    use std::sync::Arc;

    use flowlens_daemon::config::CacheConfig;
    use flowlens_daemon::enrich::shared::SharedCache;

    if !dnsmasq_installed() {
        return;
    }
    let dns = Dnsmasq::start().await;
    let mut redis = flowlens_redis::testing::RedisServer::start().await;
    let cache = || {
        Arc::new(
            SharedCache::new(&CacheConfig {
                backend: "redis".into(),
                redis_url: redis.url(0),
                ..CacheConfig::default()
            })
            .unwrap()
            .unwrap(),
        )
    };
    let first = reverse_dns(&format!("127.0.0.1:{}", dns.port), 1000).with_shared_cache(cache());
    assert_eq!(
        first.resolve_now(ip("10.9.0.1")).await.as_deref(),
        Some("db1.internal.example")
    );
    assert_eq!(first.resolve_now(ip("10.9.0.2")).await, None);
    // The second instance's resolver never answers (a port nobody listens on).
    let silent = free_port();
    let second = reverse_dns(&format!("127.0.0.1:{silent}"), 300).with_shared_cache(cache());
    second.request(ip("10.9.0.1"));
    assert_eq!(
        wait_cached(&second, ip("10.9.0.1"), ANSWER_WITHIN).await,
        Some(Some("db1.internal.example".to_owned()))
    );
    // The negative answer (NXDOMAIN) is shared too.
    assert_eq!(second.resolve_now(ip("10.9.0.2")).await, None);
    assert_eq!(second.counters().shared, 2);
    assert_eq!(second.counters().timeouts, 0, "no query of its own");
    // dnsmasq saw the readiness probe's query and the first instance's, no other.
    assert_eq!(dns.queries_for("1.0.9.10.in-addr.arpa", 2).await, 2);
    // Redis down: the second instance asks its own resolver (which times out) and
    // says so in its counters; nothing fails.
    redis.stop();
    assert_eq!(second.resolve_now(ip("10.9.0.3")).await, None);
    assert_eq!(second.counters().timeouts, 1);
    assert_eq!(second.counters().shared, 2);
}
