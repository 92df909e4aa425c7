//! EDGE: Redis, the state several FlowLens processes share (design §8): the API's
//! rate-limit buckets and rendered answers, the daemon's enrichment caches. Redis is
//! an accelerator, never a dependency: when it does not answer within [`TIMEOUT`],
//! the caller falls back to its own memory (logged once per outage, counted in the
//! service's fallbacks metric by `use`), Redis is left alone for [`RETRY_AFTER`], and
//! nothing fails because of it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use redis;

/// The metrics a service counts Redis by.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    /// Counter, by `use`: requests served from memory because Redis was down.
    pub fallbacks: &'static str,
    /// Gauge: 1 while Redis answers, 0 during an outage.
    pub up: &'static str,
}

/// The most a request waits for Redis before using memory instead.
pub const TIMEOUT: Duration = Duration::from_millis(250);

/// After a failure, how long Redis is not tried (requests use memory meanwhile).
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// One Redis server (one URL), shared by the uses configured on it.
pub struct Redis {
    client: redis::Client,
    /// Connected lazily, so an API that starts while Redis is down still starts.
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    /// Not before this instant: the last attempt failed.
    down_until: Mutex<Option<Instant>>,
    /// An outage has been logged (reset when Redis answers again).
    warned: AtomicBool,
    metrics: Metrics,
}

impl Redis {
    /// Checks the URL; connects on first use.
    ///
    /// # Errors
    /// A URL that is not a Redis URL.
    pub fn new(url: &str, metrics: Metrics) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: tokio::sync::Mutex::new(None),
            down_until: Mutex::new(None),
            warned: AtomicBool::new(false),
            metrics,
        })
    }

    /// Whether Redis is in use now (false during an outage's back-off).
    pub fn available(&self) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none_or(|t| Instant::now() >= t)
    }

    async fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let c = self
            .client
            .get_connection_manager_with_config(config)
            .await?;
        *conn = Some(c.clone());
        Ok(c)
    }

    /// Runs `op` on Redis within [`TIMEOUT`], or says `None` (and counts a fallback for
    /// `use_`) when Redis is down or does not answer: the caller then uses memory.
    pub async fn run<T, F>(&self, use_: &'static str, op: F) -> Option<T>
    where
        F: AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    {
        self.run_within(use_, TIMEOUT, op).await
    }

    /// [`Self::run`] with its own time limit, for the few large values (a
    /// multi-megabyte snapshot does not cross a network in 250 ms).
    pub async fn run_within<T, F>(&self, use_: &'static str, limit: Duration, op: F) -> Option<T>
    where
        F: AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    {
        if !self.available() {
            metrics::counter!(self.metrics.fallbacks, "use" => use_).increment(1);
            return None;
        }
        let result = tokio::time::timeout(limit, async {
            let mut c = self.connection().await?;
            op(&mut c).await
        })
        .await;
        match result {
            Ok(Ok(v)) => {
                if self.warned.swap(false, Ordering::AcqRel) {
                    tracing::info!(use_, "Redis answers again; shared state is back in use");
                }
                metrics::gauge!(self.metrics.up).set(1.0);
                Some(v)
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {} ms", limit.as_millis()),
                };
                *self
                    .down_until
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(Instant::now() + RETRY_AFTER);
                if !self.warned.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        use_,
                        %error,
                        "Redis unavailable: this instance uses its own memory until it is back \
                         (limits and caches are then per instance)"
                    );
                }
                metrics::gauge!(self.metrics.up).set(0.0);
                metrics::counter!(self.metrics.fallbacks, "use" => use_).increment(1);
                None
            }
        }
    }
}

/// Test support: a private `redis-server` (Debian's `redis-server` package) on
/// 127.0.0.1, for the services' tests.
#[allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "test support: a failure to start is the test's failure"
)]
pub mod testing {
    use std::time::Duration;

    /// A private `redis-server` (Debian's) on 127.0.0.1, stopped when dropped.
    pub struct RedisServer {
        child: Option<std::process::Child>,
        pub port: u16,
    }

    impl RedisServer {
        /// Starts one on a free port and waits until it answers.
        pub async fn start() -> Self {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let mut s = Self { child: None, port };
            s.restart().await;
            s
        }

        pub fn url(&self, db: u8) -> String {
            format!("redis://127.0.0.1:{}/{db}", self.port)
        }

        /// Starts (again) on the same port.
        pub async fn restart(&mut self) {
            self.stop();
            let child = std::process::Command::new("redis-server")
                .args([
                    "--port",
                    &self.port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    &std::env::temp_dir().display().to_string(),
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (Debian's redis-server package) on PATH");
            self.child = Some(child);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(c) = redis::Client::open(self.url(0))
                    && let Ok(mut conn) = c.get_multiplexed_async_connection().await
                    && redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok()
                {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "redis-server did not answer on port {}",
                    self.port
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        /// Kills it (an outage, as far as clients can tell).
        pub fn stop(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            self.stop();
        }
    }
}
