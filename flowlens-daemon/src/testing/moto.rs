//! A private AWS API server for tests: moto's server (`.ci/install-moto` puts it in
//! `target/tools/moto-venv`; `FLOWLENS_MOTO` names another `moto_server`) on a free
//! loopback port, killed when dropped.

#![allow(
    clippy::disallowed_methods,
    reason = "test support: waits for the server synchronously"
)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server.
pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
}

/// Where `moto_server` is.
pub fn binary() -> PathBuf {
    std::env::var_os("FLOWLENS_MOTO").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/tools/moto-venv/bin/moto_server")
        },
        PathBuf::from,
    )
}

impl Moto {
    /// Starts the server and waits until it answers.
    ///
    /// # Panics
    /// When the binary is missing (run `.ci/install-moto`) or the server does not
    /// answer within 30 s.
    pub fn start() -> Self {
        let bin = binary();
        assert!(
            bin.exists(),
            "{} is missing: run .ci/install-moto (or set FLOWLENS_MOTO)",
            bin.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let moto = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while moto.request("GET", "/").is_none() {
            assert!(Instant::now() < deadline, "moto did not answer on {addr}");
            std::thread::park_timeout(Duration::from_millis(50));
        }
        moto
    }

    /// The endpoint URL for AWS clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates an S3 bucket.
    ///
    /// # Panics
    /// When moto refuses.
    pub fn create_bucket(&self, name: &str) {
        let status = self.request("PUT", &format!("/{name}"));
        assert_eq!(status, Some(200), "creating bucket {name}");
    }

    /// One plain HTTP request; the status code.
    fn request(&self, method: &str, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .ok()?;
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
