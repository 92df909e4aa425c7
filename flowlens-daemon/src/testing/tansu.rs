//! A private Kafka-protocol broker for tests: tansu (`.ci/install-tansu` puts it at
//! `target/tools/tansu`; `FLOWLENS_TANSU` names another binary) on a free loopback
//! port, memory storage (or S3 on moto, kept across a restart), killed when dropped.

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
    storage: Storage,
}

/// Where the broker keeps its topics.
#[derive(Debug, Clone)]
pub enum Storage {
    /// In memory: gone when the broker stops.
    Memory,
    /// An S3 bucket (moto's server in tests): kept across restarts.
    S3 { endpoint: String, bucket: String },
}

/// Where the broker binary is.
pub fn binary() -> PathBuf {
    std::env::var_os("FLOWLENS_TANSU").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/tansu"),
        PathBuf::from,
    )
}

impl Tansu {
    /// Starts a broker with memory storage and waits until it accepts connections.
    ///
    /// # Panics
    /// When the binary is missing (run `.ci/install-tansu`) or the broker does not
    /// listen within 20 s.
    pub fn start() -> Self {
        Self::start_with(Storage::Memory)
    }

    /// [`Self::start`] with `storage`.
    ///
    /// # Panics
    /// As [`Self::start`].
    pub fn start_with(storage: Storage) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = spawn(addr, &storage);
        Self {
            child,
            addr,
            storage,
        }
    }

    /// `bootstrap.servers` for clients.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the broker (SIGKILL) and returns once it is gone.
    pub fn stop(&mut self) {
        // SIGTERM first, as an operator stops a broker: tansu on S3 storage killed
        // outright can lose a batch it already acknowledged (its own durability, not
        // the clients'), which a restart test would then misread as the collector's
        // loss. SIGKILL after 5 s.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same address with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.addr, &self.storage);
    }
}

fn spawn(addr: SocketAddr, storage: &Storage) -> Child {
    let bin = binary();
    assert!(
        bin.exists(),
        "{} is missing: run .ci/install-tansu (or set FLOWLENS_TANSU)",
        bin.display()
    );
    let url = format!("tcp://{addr}");
    let mut cmd = Command::new(&bin);
    cmd.args([
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
    ])
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    match storage {
        Storage::Memory => {
            cmd.args(["--storage-engine", "memory://tansu/"]);
        }
        Storage::S3 { endpoint, bucket } => {
            cmd.args(["--storage-engine", &format!("s3://{bucket}/")])
                .env("AWS_ENDPOINT", endpoint)
                .env("AWS_ALLOW_HTTP", "true")
                .env("AWS_ACCESS_KEY_ID", "flowlens")
                .env("AWS_SECRET_ACCESS_KEY", "flowlens")
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .env("AWS_REGION", "us-east-1");
        }
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen on {addr}");
        std::thread::park_timeout(Duration::from_millis(20));
    }
    child
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
