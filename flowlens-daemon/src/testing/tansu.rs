//! A private Kafka-protocol broker for tests: tansu (`.ci/install-tansu` puts it at
//! `target/tools/tansu`; `FLOWLENS_TANSU` names another binary) on a free loopback
//! port, memory storage, killed when dropped.

#![allow(
    clippy::disallowed_methods,
    reason = "test support: waits for the broker synchronously"
)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running broker.
pub struct Tansu {
    child: Child,
    pub addr: SocketAddr,
}

/// Where the broker binary is.
pub fn binary() -> PathBuf {
    std::env::var_os("FLOWLENS_TANSU").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/tansu"),
        PathBuf::from,
    )
}

impl Tansu {
    /// Starts a broker and waits until it accepts connections.
    ///
    /// # Panics
    /// When the binary is missing (run `.ci/install-tansu`) or the broker does not
    /// listen within 20 s.
    pub fn start() -> Self {
        let bin = binary();
        assert!(
            bin.exists(),
            "{} is missing: run .ci/install-tansu (or set FLOWLENS_TANSU)",
            bin.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let url = format!("tcp://{addr}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let broker = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {addr}");
            std::thread::park_timeout(Duration::from_millis(20));
        }
        broker
    }

    /// `bootstrap.servers` for clients.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
