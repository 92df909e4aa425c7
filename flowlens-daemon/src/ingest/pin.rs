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
//! - the ABI: a pinned program of another version (its name carries the ABI) has maps
//!   of another layout; they are not reused (fresh ones are created and pinned), its
//!   link is still taken over, and what its rings held is lost (logged).
//!
//! Removing the directory (`rm -r /sys/fs/bpf/flowlens`) detaches the program for good.

use std::io;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use flowlens_ebpf_common::{PINNED_MAPS, PROGRAM_NAME};

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
    /// The name of the program in those links, when it could be read.
    pub program: Option<String>,
}

impl Previous {
    /// Whether its maps have this daemon's layout (same program name, same ABI).
    pub fn compatible(&self) -> bool {
        !self.interfaces.is_empty() && self.program.as_deref() == Some(PROGRAM_NAME)
    }
}

impl PinDir {
    /// Creates `dir` when missing, checks it is on bpffs, and locks it.
    pub fn open(dir: &Path) -> Result<Self, PinDirError> {
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
        let handle = std::fs::File::open(dir).map_err(io_err)?;
        let lock = nix::fcntl::Flock::lock(handle, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| PinDirError::InUse(dir.to_owned()))?;
        Ok(Self {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the map `name` is pinned.
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
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
        let program = interfaces
            .first()
            .and_then(|iface| program_name(&self.link_path(iface)));
        Previous {
            interfaces,
            program,
        }
    }

    /// Takes the pinned link on `iface` out of the directory (the program stays
    /// attached while the returned link is open).
    pub fn take_link(&self, iface: &str) -> Option<FdLink> {
        let pinned = PinnedLink::from_pin(self.link_path(iface)).ok()?;
        pinned.unpin().ok()
    }

    /// Unpins the maps, so that the next load creates (and pins) fresh ones. Programs
    /// still using them keep them until they go.
    pub fn remove_maps(&self) {
        for name in PINNED_MAPS {
            let _ = std::fs::remove_file(self.map_path(name));
        }
    }
}

/// The name of the program behind a pinned link (the kernel keeps 15 characters: all
/// of `flowlens_xdp_vN`).
fn program_name(link: &Path) -> Option<String> {
    let link = FdLink::from(PinnedLink::from_pin(link).ok()?);
    let id = link.info().ok()?.program_id();
    aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
}
