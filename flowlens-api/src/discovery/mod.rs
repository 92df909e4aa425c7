//! Active discovery: TCP connect scans of allowed networks that find hosts the flows
//! have not shown yet, and refresh what is known about the ones they have.
//!
//! A request (`routes::discovery`) becomes a [`plan::Plan`] or a refusal, purely, from
//! `api.discovery`; the route records a `queued` row in `discovery_scans` and hands the
//! plan to [`scanner::spawn`], which probes at the configured pace and, through
//! [`store`], keeps the row's progress current and creates or updates assets
//! (`discovery_source = 'scan'`). [`outcome`] holds the pure rules in between: what a
//! connect result means, when a host is up, and how the `open_ports` tag is merged.
//!
//! Nothing here scans without a request, nor outside `api.discovery.allowed_ranges`.

pub mod outcome;
pub mod plan;
pub mod scanner;
pub mod store;

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots for running scans (`api.discovery.max_running_scans`), shared by every
/// handler of one app.
#[derive(Debug, Clone)]
pub struct ScanSlots(Arc<Semaphore>);

impl ScanSlots {
    pub fn new(max_running: usize) -> Self {
        Self(Arc::new(Semaphore::new(max_running.max(1))))
    }

    /// A slot, held until the scan ends, or `None` when every slot is taken.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}
