//! EDGE: the live daemon's decoder state on disk (`<state.directory>/decoder-state.json`,
//! the [`StateSnapshot`] format `decode --state` writes), so a restart does not drop
//! every data set until each exporter resends its templates: some resend them every
//! 30 minutes.
//!
//! Each decode worker hands its snapshot to the [`DecoderStateStore`] every
//! `state.decoder_save_interval_seconds` and when it stops; the control loop writes the
//! merged file when something was handed in, atomically (a temporary file, synced,
//! renamed over the old one), so a crash leaves the previous whole file, never half of
//! one. At start the file is split by exporter among the workers of the new process
//! (its exporter-to-worker mapping differs from the last one's). A missing file starts
//! cold; an unreadable one is logged, counted and set aside, never a reason not to
//! collect.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::decode::state::StateSnapshot;

/// The file's name in the state directory.
pub const FILE_NAME: &str = "decoder-state.json";

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DecoderStateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a decoder state: {source}")]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The workers' latest snapshots and the file they are saved to.
#[derive(Debug)]
pub struct DecoderStateStore {
    path: PathBuf,
    parts: Mutex<Vec<Option<StateSnapshot>>>,
    dirty: AtomicBool,
}

impl DecoderStateStore {
    /// A store for `workers` decode workers in `directory` (created when missing).
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn open(directory: &Path, workers: usize) -> Result<Self, DecoderStateError> {
        std::fs::create_dir_all(directory).map_err(|source| DecoderStateError::Io {
            path: directory.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: directory.join(FILE_NAME),
            parts: Mutex::new(vec![None; workers.max(1)]),
            dirty: AtomicBool::new(false),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state; `Ok(None)` when there is none yet.
    ///
    /// # Errors
    /// The file cannot be read or is not a decoder state (the caller sets it aside).
    pub fn load(&self) -> Result<Option<StateSnapshot>, DecoderStateError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(DecoderStateError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| DecoderStateError::Format {
                path: self.path.clone(),
                source,
            })
    }

    /// Moves an unreadable file aside (`decoder-state.json.unreadable`), so the next
    /// save does not destroy what an operator may want to look at.
    pub fn set_aside(&self) {
        let aside = self.path.with_extension("json.unreadable");
        if let Err(e) = std::fs::rename(&self.path, &aside) {
            tracing::warn!(error = %e, path = %self.path.display(),
                "could not set the unreadable decoder state aside");
        }
    }

    /// Worker `worker`'s latest snapshot.
    pub fn put(&self, worker: usize, snapshot: StateSnapshot) {
        let mut parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = parts.get_mut(worker) {
            *slot = Some(snapshot);
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Writes the merged snapshots when a worker handed one in since the last save.
    /// The templates saved, or `None` when there was nothing new.
    ///
    /// # Errors
    /// Writing, syncing or renaming the file failed (the previous file stays whole).
    pub fn save_if_changed(&self) -> Result<Option<usize>, DecoderStateError> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(None);
        }
        let merged = {
            let parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
            StateSnapshot::merge(parts.iter().flatten().cloned())
        };
        let templates = merged.templates.len();
        let io = |source| DecoderStateError::Io {
            path: self.path.clone(),
            source,
        };
        let body = serde_json::to_vec(&merged).map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("json.tmp");
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            // Saved next time (the snapshots are still here).
            self.dirty.store(true, Ordering::Relaxed);
            return Err(io(e));
        }
        Ok(Some(templates))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::state::SavedRate;

    #[test]
    fn saves_merged_parts_atomically_and_loads_them_back() {
        let dir = std::env::temp_dir().join(format!("flowlens-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = DecoderStateStore::open(&dir, 2).unwrap();
        assert!(store.load().unwrap().is_none(), "no file: cold start");
        assert!(
            store.save_if_changed().unwrap().is_none(),
            "nothing handed in"
        );
        for (worker, last) in [(0, 1), (1, 2)] {
            let mut s = StateSnapshot::empty();
            s.sampling.push(SavedRate {
                exporter: std::net::IpAddr::from([192, 0, 2, last]),
                domain: 0,
                sampler_id: None,
                rate: 100,
            });
            store.put(worker, s);
        }
        assert_eq!(store.save_if_changed().unwrap(), Some(0));
        assert!(store.save_if_changed().unwrap().is_none(), "unchanged");
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.sampling.len(), 2);
        assert!(!dir.join("decoder-state.json.tmp").exists());

        std::fs::write(store.path(), b"{ not json").unwrap();
        assert!(matches!(
            store.load(),
            Err(DecoderStateError::Format { .. })
        ));
        store.set_aside();
        assert!(store.load().unwrap().is_none());
        assert!(dir.join("decoder-state.json.unreadable").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
