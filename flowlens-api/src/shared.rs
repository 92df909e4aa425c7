//! EDGE: Redis, the state several API instances share (design §8): rate-limit buckets
//! (`api.rate_limiting.backend: redis`) and rendered answers (`api.cache.backend:
//! redis`). Redis is an accelerator, never a dependency: when it does not answer
//! within [`TIMEOUT`], the caller falls back to this process's memory (logged once per
//! outage, counted in `flowlens_api_redis_fallbacks_total{use}`), Redis is left alone
//! for [`RETRY_AFTER`], and nothing fails because of it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::telemetry::{REDIS_FALLBACKS, REDIS_UP};

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
}

impl Redis {
    /// Checks the URL; connects on first use.
    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: tokio::sync::Mutex::new(None),
            down_until: Mutex::new(None),
            warned: AtomicBool::new(false),
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
        if !self.available() {
            metrics::counter!(REDIS_FALLBACKS, "use" => use_).increment(1);
            return None;
        }
        let result = tokio::time::timeout(TIMEOUT, async {
            let mut c = self.connection().await?;
            op(&mut c).await
        })
        .await;
        match result {
            Ok(Ok(v)) => {
                if self.warned.swap(false, Ordering::AcqRel) {
                    tracing::info!(use_, "Redis answers again; shared state is back in use");
                }
                metrics::gauge!(REDIS_UP).set(1.0);
                Some(v)
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {} ms", TIMEOUT.as_millis()),
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
                metrics::gauge!(REDIS_UP).set(0.0);
                metrics::counter!(REDIS_FALLBACKS, "use" => use_).increment(1);
                None
            }
        }
    }
}
