//! A loopback TCP proxy in front of PostgreSQL that breaks connections the way
//! networks do, at the one moment that matters to exactly-once writes: around COMMIT.
//!
//! It reads the frontend protocol just enough to find a simple-query `COMMIT` (sqlx
//! commits with a simple query) and then, as armed by the test:
//! - [`Fault::LoseCommitReply`]: forwards the COMMIT, lets the server answer, throws the
//!   answer away and resets both sides (the commit happened; the client cannot know);
//! - [`Fault::HoldCommit`]: keeps the COMMIT (and everything after it on that
//!   connection) until [`PgProxy::release`], the way a hung network looks: no error, no
//!   progress. Released, it sends the COMMIT on if the server is still there.
//!
//! Each arming applies to the next COMMIT only. Plain threads and blocking sockets:
//! tests drive it from synchronous code.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What the proxy does to the next COMMIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything.
    None = 0,
    LoseCommitReply = 1,
    HoldCommit = 2,
}

#[derive(Debug, Default)]
struct Shared {
    fault: AtomicU8,
    /// COMMITs the proxy acted on.
    broken: AtomicU32,
    /// A COMMIT is being held right now.
    holding: AtomicBool,
    released: Mutex<bool>,
    wake: Condvar,
}

/// The proxy; listens on `127.0.0.1:<ephemeral>` until dropped with the process.
#[derive(Debug, Clone)]
pub struct PgProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl PgProxy {
    /// Starts a proxy to `upstream` (PostgreSQL's `host:port`).
    pub fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::Builder::new()
            .name("pgproxy".into())
            .spawn(move || {
                for client in listener.incoming().flatten() {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        if let Ok(server) = TcpStream::connect(upstream) {
                            serve(client, server, &s);
                        }
                    });
                }
            })?;
        Ok(Self { addr, shared })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of database `db` through the proxy, as user `postgres` without a
    /// password (the test clusters' trust authentication), TLS off (the proxy reads
    /// the protocol).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.addr.port()
        )
    }

    /// Arms `fault` for the next COMMIT.
    pub fn arm(&self, fault: Fault) {
        *self.shared.released.lock().unwrap() = false;
        self.shared.fault.store(fault as u8, Ordering::SeqCst);
    }

    /// COMMITs broken so far.
    pub fn broken(&self) -> u32 {
        self.shared.broken.load(Ordering::SeqCst)
    }

    /// Whether a COMMIT is held right now.
    pub fn holding(&self) -> bool {
        self.shared.holding.load(Ordering::SeqCst)
    }

    /// Lets a held COMMIT go on.
    pub fn release(&self) {
        *self.shared.released.lock().unwrap() = true;
        self.shared.wake.notify_all();
    }
}

/// One client connection: server -> client is copied as is (unless muted); client ->
/// server is read message by message.
fn serve(client: TcpStream, server: TcpStream, s: &Arc<Shared>) {
    let mute = Arc::new(AtomicBool::new(false));
    let (Ok(mut from_server), Ok(mut to_client)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    let m = mute.clone();
    let back = std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from_server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if m.load(Ordering::SeqCst) {
                        continue;
                    }
                    if to_client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_client.shutdown(Shutdown::Both);
    });
    forward(client, server, s, &mute);
    let _ = back.join();
}

fn read_exact(c: &mut TcpStream, n: usize) -> Option<Vec<u8>> {
    let mut v = vec![0u8; n];
    c.read_exact(&mut v).ok()?;
    Some(v)
}

/// Client -> server, one protocol message at a time.
fn forward(mut client: TcpStream, mut server: TcpStream, s: &Shared, mute: &AtomicBool) {
    // Untyped messages first: SSLRequest / GSSENCRequest (answered by one byte, then
    // another untyped one) and the StartupMessage.
    loop {
        let Some(len) = read_exact(&mut client, 4) else {
            return;
        };
        let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(body) = read_exact(&mut client, n.saturating_sub(4)) else {
            return;
        };
        if server.write_all(&len).is_err() || server.write_all(&body).is_err() {
            return;
        }
        let code = body
            .get(..4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if code != 80_877_103 && code != 80_877_104 {
            break;
        }
    }
    while let Some(head) = read_exact(&mut client, 5) {
        let n = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let Some(body) = read_exact(&mut client, n.saturating_sub(4)) else {
            break;
        };
        let commit = head[0] == b'Q' && body.to_ascii_uppercase().starts_with(b"COMMIT");
        let fault = if commit {
            s.fault.swap(Fault::None as u8, Ordering::SeqCst)
        } else {
            Fault::None as u8
        };
        if fault == Fault::HoldCommit as u8 {
            s.broken.fetch_add(1, Ordering::SeqCst);
            s.holding.store(true, Ordering::SeqCst);
            let mut released = s.released.lock().unwrap();
            while !*released {
                released = s.wake.wait(released).unwrap();
            }
            drop(released);
            s.holding.store(false, Ordering::SeqCst);
        }
        if fault == Fault::LoseCommitReply as u8 {
            mute.store(true, Ordering::SeqCst);
        }
        if server.write_all(&head).is_err() || server.write_all(&body).is_err() {
            break;
        }
        if fault == Fault::LoseCommitReply as u8 {
            s.broken.fetch_add(1, Ordering::SeqCst);
            // Let the server commit and answer (into the void), then reset both sides.
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                std::thread::park_timeout(until - Instant::now());
            }
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}
