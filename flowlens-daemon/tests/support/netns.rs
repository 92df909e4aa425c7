//! Network namespaces joined by a veth pair, for tests that need a real kernel path
//! (the XDP program, the daemon in XDP mode, exporters in a peer namespace), and the
//! prerequisites those tests skip on locally and fail on in CI.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

// ---------------------------------------------------------------------------------
// Prerequisites: skip locally, fail in CI.

pub(crate) fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `None` (after printing why) when the test should be skipped; panics in CI.
pub(crate) fn unavailable<T>(reason: &str) -> Option<T> {
    assert!(
        !in_ci(),
        "XDP test prerequisite missing (CI is set, so this fails): {reason}"
    );
    eprintln!("skipping XDP test: {reason}");
    None
}

pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The BPF object: `$FLOWLENS_EBPF_OBJECT`, else built by `cargo xtask build-ebpf`
/// (once per test binary; a no-op when CI already built it).
pub(crate) fn object() -> Result<PathBuf, String> {
    static OBJECT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    OBJECT
        .get_or_init(|| {
            if let Some(p) = std::env::var_os(flowlens_daemon::ingest::xdp::OBJECT_ENV) {
                return Ok(PathBuf::from(p));
            }
            let out = Command::new(env!("CARGO"))
                .args(["run", "--quiet", "--package", "xtask", "--manifest-path"])
                .arg(workspace().join("Cargo.toml"))
                .args(["--", "build-ebpf"])
                .output()
                .map_err(|e| format!("running cargo xtask build-ebpf: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cargo xtask build-ebpf failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            let path = stdout.lines().last().unwrap_or_default().trim();
            Ok(PathBuf::from(path))
        })
        .clone()
}

pub(crate) fn tool(name: &str) -> bool {
    Command::new(name).arg("-V").output().is_ok()
}

/// Everything a test needs, or `None` when skipped.
pub(crate) fn setup(tag: &str) -> Option<(Net, PathBuf)> {
    for t in ["ip", "ping"] {
        if !tool(t) {
            return unavailable(&format!("`{t}` is not installed (iproute2, iputils-ping)"));
        }
    }
    let net = match Net::new(tag) {
        Ok(n) => n,
        Err(e) => return unavailable(&format!("cannot create network namespaces: {e}")),
    };
    match object() {
        Ok(p) => Some((net, p)),
        Err(e) => unavailable(&e),
    }
}

// ---------------------------------------------------------------------------------
// Network namespaces joined by a veth pair.

/// Two namespaces, `collector` (veth `vc`, 10.0.0.1, `fd00::1`) and `peer` (veth `vp`,
/// 10.0.0.2 and .3, `fd00::2`); deleted with everything in them on drop.
pub(crate) struct Net {
    pub(crate) collector: String,
    pub(crate) peer: String,
    pub(crate) vc: String,
    pub(crate) vp: String,
}

pub(crate) fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    pub(crate) fn new(tag: &str) -> Result<Self, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{:x}{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let net = Self {
            collector: format!("flowlens-{tag}-{id}-c"),
            peer: format!("flowlens-{tag}-{id}-p"),
            vc: format!("vc{id}"),
            vp: format!("vp{id}"),
        };
        ip(&["netns", "add", &net.collector])?;
        ip(&["netns", "add", &net.peer])?;
        let (c, p, vc, vp) = (&net.collector, &net.peer, &net.vc, &net.vp);
        ip(&[
            "-n", c, "link", "add", vc, "type", "veth", "peer", "name", vp, "netns", p,
        ])?;
        ip(&["-n", c, "addr", "add", "10.0.0.1/24", "dev", vc])?;
        ip(&["-n", p, "addr", "add", "10.0.0.2/24", "dev", vp])?;
        ip(&["-n", p, "addr", "add", "10.0.0.3/24", "dev", vp])?;
        ip(&["-n", c, "addr", "add", "fd00::1/64", "dev", vc, "nodad"])?;
        ip(&["-n", p, "addr", "add", "fd00::2/64", "dev", vp, "nodad"])?;
        for (ns, dev) in [(c, vc), (p, vp)] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(net)
    }

    /// Sets the MTU of both ends of the veth pair.
    pub(crate) fn set_mtu(&self, mtu: u32) -> Result<(), String> {
        let mtu = mtu.to_string();
        ip(&["-n", &self.collector, "link", "set", &self.vc, "mtu", &mtu])?;
        ip(&["-n", &self.peer, "link", "set", &self.vp, "mtu", &mtu])?;
        Ok(())
    }

    /// `ip link show` of the collector's veth.
    pub(crate) fn collector_link(&self) -> String {
        ip(&["-n", &self.collector, "link", "show", "dev", &self.vc]).expect("ip link show")
    }

    pub(crate) fn collector_mac(&self) -> [u8; 6] {
        let link = self.collector_link();
        let mac = link
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .expect("veth has a MAC");
        let mut out = [0u8; 6];
        for (o, h) in out.iter_mut().zip(mac.split(':')) {
            *o = u8::from_str_radix(h, 16).expect("hex MAC");
        }
        out
    }

    pub(crate) fn ping(&self, dst: IpAddr) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.peer, "ping", "-c", "1", "-W", "3"])
            .arg(dst.to_string())
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.collector]);
        let _ = ip(&["netns", "del", &self.peer]);
    }
}

/// Runs `f` on a thread inside namespace `ns` (setns affects only the calling thread).
pub(crate) fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = File::open(format!("/run/netns/{ns}")).expect("namespace exists");
            setns(&fd, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
            f()
        })
        .join()
        .expect("namespace thread panicked")
    })
}
