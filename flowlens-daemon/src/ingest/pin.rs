//! EDGE: handing the running XDP program to the next daemon (`xdp.pin_path`).
//!
//! Without pinning, the program lives as long as its daemon: a restart detaches it, and
//! until the next daemon attaches, flow datagrams take the kernel's path to sockets
//! nobody has bound yet (lost). With a bpffs directory configured, the daemon pins each
//! interface's BPF link (`link-<iface>`) and the maps two program instances must share
//! ([`PINNED_MAPS`]: the rings, settings and counts). On stop it leaves them pinned: the
//! program keeps steering into the rings, which buffer what arrives while no daemon
//! runs. The next daemon opens the same maps, adopts the rings with their contents, and
//! swaps its program into each link atomically (`bpf_link_update`): the interface is
//! never without the program, and no datagram waits in a ring that will be destroyed.
//!
//! Two guards keep a pinned program from outliving its purpose:
//! - the lease (`Config::lease_until_ns`): the daemon renews it every second; a program
//!   whose lease ran out (the daemon stopped for good, or hangs) passes flow datagrams
//!   to the stack, counted as `lease_expired`;
//! - the ABI: the pinned settings (`FLOW_CONFIG`) carry the ABI of the daemon that
//!   wrote them; maps of another ABI are not reused (fresh ones are created and pinned),
//!   the links are still taken over, and what the old rings held is lost (logged).
//!
//! Everything is found by path (`BPF_OBJ_GET`), never by id: looking objects up by id
//! needs `CAP_SYS_ADMIN`, which the daemon's unit does not grant. So each ring is
//! pinned too (`ring-<cpu>`), beside the outer map that holds it.
//!
//! Removing the directory (`rm -r /sys/fs/bpf/flowlens`) detaches the program for good.

use std::io;
use std::path::{Path, PathBuf};

use aya::maps::{Array, Map, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use flowlens_ebpf_common::{ABI_VERSION, Config, MAP_CONFIG, PINNED_MAPS};

/// `statfs(2)`'s `f_type` of a bpffs mount (`linux/magic.h`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Why a pin directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PinDirError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{0} is not on a BPF filesystem (mount one: `mount -t bpf bpf /sys/fs/bpf`; systemd does at boot)"
    )]
    NotBpfFs(PathBuf),
    #[error("{0} is in use by another daemon (two readers of one ring would corrupt it)")]
    InUse(PathBuf),
}

/// A bpffs directory holding one daemon's pinned links and maps, locked (`flock` on
/// the directory) while this daemon uses it: two daemons adopting the same rings would
/// both consume them.
#[derive(Debug)]
pub struct PinDir {
    dir: PathBuf,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// What the directory says about the program a previous daemon left running.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Previous {
    /// Interfaces with a pinned link.
    pub interfaces: Vec<String>,
    /// The pinned settings, when they read as this daemon's `Config` (a map of another
    /// layout does not); they carry the ABI of the daemon that wrote them.
    pub config: Option<Config>,
}

impl Previous {
    /// Whether its maps have this daemon's layout.
    pub fn compatible(&self) -> bool {
        !self.interfaces.is_empty() && self.config.is_some_and(|c| c.abi == ABI_VERSION)
    }
}

impl PinDir {
    /// Creates `dir` when missing, checks it is on bpffs, and locks it, waiting up to
    /// `wait` for a daemon that holds it (one still stopping) to let go.
    pub fn open(dir: &Path, wait: std::time::Duration) -> Result<Self, PinDirError> {
        let io_err = |source| PinDirError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let fs = nix::sys::statfs::statfs(dir).map_err(|e| io_err(e.into()))?;
        #[allow(
            clippy::useless_conversion,
            clippy::unnecessary_cast,
            reason = "f_type's integer type differs between libc targets"
        )]
        let magic = fs.filesystem_type().0 as i64;
        if magic != BPF_FS_MAGIC {
            return Err(PinDirError::NotBpfFs(dir.to_owned()));
        }
        let deadline = std::time::Instant::now() + wait;
        let mut handle = std::fs::File::open(dir).map_err(io_err)?;
        let lock = loop {
            match nix::fcntl::Flock::lock(handle, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((h, _)) if std::time::Instant::now() < deadline => {
                    handle = h;
                    std::thread::park_timeout(std::time::Duration::from_millis(100));
                }
                Err(_) => return Err(PinDirError::InUse(dir.to_owned())),
            }
        };
        Ok(Self {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    /// Where the map `name` is pinned.
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Where CPU `cpu`'s ring is pinned.
    pub fn ring_path(&self, cpu: u32) -> PathBuf {
        self.dir.join(format!("ring-{cpu}"))
    }

    /// Where the link on `iface` is pinned.
    pub fn link_path(&self, iface: &str) -> PathBuf {
        self.dir.join(format!("link-{iface}"))
    }

    /// The links a previous daemon left, and the program in them.
    pub fn previous(&self) -> Previous {
        let mut interfaces: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix("link-")
                    .map(str::to_owned)
            })
            .collect();
        interfaces.sort();
        Previous {
            interfaces,
            config: self.pinned_config(),
        }
    }

    /// The pinned `FLOW_CONFIG`, if it reads as this daemon's `Config`.
    fn pinned_config(&self) -> Option<Config> {
        let data = MapData::from_pin(self.map_path(MAP_CONFIG)).ok()?;
        let config: Array<MapData, Config> = Array::try_from(Map::Array(data)).ok()?;
        config.get(&0, 0).ok()
    }

    /// Takes the pinned link on `iface` out of the directory (the program stays
    /// attached while the returned link is open).
    pub fn take_link(&self, iface: &str) -> Option<FdLink> {
        let pinned = PinnedLink::from_pin(self.link_path(iface)).ok()?;
        pinned.unpin().ok()
    }

    /// Unpins the maps and rings, so that the next load creates (and pins) fresh ones.
    /// Programs still using them keep them until they go.
    pub fn remove_maps(&self) {
        for name in PINNED_MAPS {
            let _ = std::fs::remove_file(self.map_path(name));
        }
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("ring-"))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
