//! Active discovery: TCP connect scans of allowed networks that find hosts the flows
//! have not shown yet, and refresh what is known about the ones they have.
//!
//! A request (`routes::discovery`) becomes a [`plan::Plan`] or a refusal, purely, from
//! `api.discovery`; the route records a `queued` row in `discovery_scans` and hands the
//! plan to [`scanner::spawn`], which probes at the configured pace and, through
//! [`store`], keeps the row's progress current and creates or updates assets
//! (`discovery_source = 'scan'`). [`outcome`] holds the pure rules in between: what a
//! connect result means, when a host is up, and how the `open_ports` tag is merged.
//! A queued or running scan can be cancelled: the route marks its row `cancelled` and
//! throws the scan's [`Cancel`] switch, kept in [`ScanSlots`], which stops the task.
//!
//! Nothing here scans without a request, nor outside `api.discovery.allowed_ranges`.

pub mod outcome;
pub mod plan;
pub mod scanner;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// The slots for running scans (`api.discovery.max_running_scans`), shared by every
/// handler of one app, and the cancel switch of each scan holding one, so
/// `DELETE /discovery/scans/{id}` can reach the task running it.
#[derive(Debug, Clone)]
pub struct ScanSlots {
    slots: Arc<Semaphore>,
    running: Arc<Mutex<HashMap<Uuid, Cancel>>>,
}

impl ScanSlots {
    pub fn new(max_running: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_running.max(1))),
            running: Arc::default(),
        }
    }

    /// A slot for scan `id`, held until the scan ends, or `None` when every slot is
    /// taken. While it is held, [`Self::cancel`] reaches the scan.
    pub fn try_take(&self, id: Uuid) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        let cancel = Cancel::default();
        self.registry().insert(id, cancel.clone());
        Some(Slot {
            id,
            cancel,
            running: self.running.clone(),
            _permit: permit,
        })
    }

    /// Tells scan `id` to stop; false when no scan of this process holds that id
    /// (finished, or never started here).
    pub fn cancel(&self, id: Uuid) -> bool {
        let Some(cancel) = self.registry().get(&id).cloned() else {
            return false;
        };
        cancel.cancel();
        true
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Cancel>> {
        // The map stays consistent whatever panicked while holding it (one insert or
        // remove), so a poisoned lock is still usable.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running scan's place under the cap; dropping it (however the scan ends) frees
/// the slot and forgets the scan's cancel switch.
#[derive(Debug)]
pub struct Slot {
    id: Uuid,
    cancel: Cancel,
    running: Arc<Mutex<HashMap<Uuid, Cancel>>>,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    /// The switch [`ScanSlots::cancel`] throws for this scan.
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// A one-way cancel switch: a flag to check between probes, and a wake-up for a task
/// waiting on something else (a probe answer, the next tick) meanwhile.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<CancelInner>);

#[derive(Debug, Default)]
struct CancelInner {
    flag: AtomicBool,
    notify: Notify,
}

impl Cancel {
    pub fn cancel(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    /// Resolves once [`Self::cancel`] has been called, even before this was awaited.
    pub async fn cancelled(&self) {
        let notified = self.0.notify.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the flag is read, so a cancel between the two still wakes
        // us (notify_waiters only wakes futures already registered).
        notified.as_mut().enable();
        if self.is_cancelled() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn slots_cap_scans_and_forget_them_when_dropped() {
        let slots = ScanSlots::new(1);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let slot = slots.try_take(a).unwrap();
        assert!(slots.try_take(b).is_none(), "one slot");
        assert!(!slots.cancel(b), "b never started");
        assert!(slots.cancel(a));
        assert!(slot.cancel().is_cancelled());
        drop(slot);
        assert!(!slots.cancel(a), "a ended");
        assert!(slots.try_take(b).is_some(), "the slot came back");
    }

    #[tokio::test]
    async fn cancelled_wakes_waiters_and_later_callers() {
        let cancel = Cancel::default();
        let waiter = tokio::spawn({
            let cancel = cancel.clone();
            async move { cancel.cancelled().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        // Already cancelled: returns at once.
        tokio::time::timeout(Duration::from_secs(5), cancel.cancelled())
            .await
            .expect("at once");
    }
}
