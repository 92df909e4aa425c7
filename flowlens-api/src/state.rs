//! What every handler shares.

use std::sync::Arc;
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::auth::Authenticator;
use crate::config::{Config, ConfigError, Rate};
use crate::discovery::ScanSlots;
use crate::rate_limit::RateLimiter;

/// Cheap to clone: everything behind `Arc`s or handles.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub auth: Arc<Authenticator>,
    pub limiter: Arc<RateLimiter>,
    pub prometheus: PrometheusHandle,
    pub started: Instant,
    /// Running discovery scans of this process, capped by config.
    pub scans: ScanSlots,
}

impl AppState {
    /// Builds the state from a validated config and a connected, migrated pool.
    pub fn new(config: Config, pool: PgPool) -> Result<Self, ConfigError> {
        let rl = &config.api.rate_limiting;
        let parse = |key: &str, v: &str| {
            v.parse::<Rate>()
                .map_err(|e| ConfigError::Invalid(vec![format!("{key}: {e}")]))
        };
        let limiter = RateLimiter::new(
            rl.enabled,
            parse("api.rate_limiting.default_limit", &rl.default_limit)?,
            parse("api.rate_limiting.burst_limit", &rl.burst_limit)?,
        );
        Ok(Self {
            auth: Arc::new(Authenticator::new(
                config.api.auth.enabled,
                &config.api.auth.jwt_secret,
            )),
            limiter: Arc::new(limiter),
            prometheus: crate::telemetry::prometheus(),
            started: Instant::now(),
            scans: ScanSlots::new(config.api.discovery.max_running_scans),
            config: Arc::new(config),
            pool,
        })
    }
}
