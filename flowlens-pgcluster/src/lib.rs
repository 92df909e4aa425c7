//! A private PostgreSQL cluster under a directory, for the embedded default
//! (`cargo xtask run` with no `DATABASE_URL`) and for tests.
//!
//! Uses the system's PostgreSQL binaries (Debian: `/usr/lib/postgresql/<version>/bin`).
//! The cluster listens on 127.0.0.1 only, on a port chosen from the directory's path
//! (so two checkouts do not collide). Two kinds, chosen when the cluster is created and
//! kept for its life ([`Durability`]): the main job's is durable (fsync and full-page
//! writes on; `synchronous_commit=off`, so a crash may lose the last few hundred ms of
//! commits but never corrupts the graph) with a generated password (`scram-sha-256`
//! over TCP, peer on the socket); tests' and benchmarks' are fast (no fsync) with
//! `trust`, being scratch data on this machine only. PostgreSQL refuses to run as
//! root, so when we are root the directory is handed to the `postgres` user and the
//! binaries run as that user. Starting is idempotent and guarded by a file lock, so
//! parallel tests share one cluster.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why the cluster could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin; install Debian's postgresql package)"
    )]
    NoBinaries,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
}

/// What a new cluster promises about its data (an existing cluster keeps the kind it
/// was created with: a durable one has a `password` file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Tests and benchmarks: fsync and full-page writes off, `trust` authentication.
    Fast,
    /// The main job's graph: survives a crash of the machine; password authentication.
    Durable,
}

/// A running private cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    /// The `postgres` user's password (durable clusters).
    password: Option<String>,
}

impl Cluster {
    /// The URL of database `db` in this cluster.
    pub fn url(&self, db: &str) -> String {
        match &self.password {
            Some(pw) => format!("postgres://postgres:{pw}@127.0.0.1:{}/{db}", self.port),
            None => format!("postgres://postgres@127.0.0.1:{}/{db}", self.port),
        }
    }

    /// Whether this cluster was created durable.
    pub fn is_durable(&self) -> bool {
        self.password.is_some()
    }

    /// Creates (if needed) and starts (if not running) a fast cluster in `dir` (see
    /// [`Durability::Fast`]; an existing durable one stays durable).
    pub fn ensure(dir: &Path) -> Result<Self, ClusterError> {
        Self::ensure_with(dir, Durability::Fast)
    }

    /// Creates (if needed) and starts (if not running) the cluster in `dir`, of the
    /// given kind when it is new.
    pub fn ensure_with(dir: &Path, durability: Durability) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(dir).map_err(io("creating the cluster directory"))?;
        let dir = dir
            .canonicalize()
            .map_err(io("resolving the cluster directory"))?;
        let lock = File::create(dir.join("lock")).map_err(io("creating the lock file"))?;
        lock.lock().map_err(io("locking the cluster directory"))?;
        let bin = binaries()?;
        let port = port_for(&dir);
        let data = dir.join("data");
        let password_file = dir.join("password");
        let new = !data.join("PG_VERSION").exists();
        if new && durability == Durability::Durable && !password_file.exists() {
            write_password(&password_file)?;
        }
        let root = is_root();
        if root {
            chown_postgres(&dir)?;
        }
        let password = if password_file.exists() {
            let text = std::fs::read_to_string(&password_file)
                .map_err(io("reading the cluster password"))?;
            Some(text.trim().to_owned())
        } else {
            None
        };
        let cluster = Self {
            dir: dir.clone(),
            port,
            password,
        };
        if new {
            let data = data.display().to_string();
            let pwfile = format!("--pwfile={}", password_file.display());
            let mut args = vec!["-D", &data, "-U", "postgres", "-E", "UTF8"];
            if cluster.is_durable() {
                args.extend(["--auth-local=peer", "--auth-host=scram-sha-256", &pwfile]);
            } else {
                args.extend(["--auth=trust", "--no-sync"]);
            }
            run(&bin.join("initdb"), root, &args)?;
        }
        let status = as_user(&bin.join("pg_ctl"), root)
            .args(["status", "-D"])
            .arg(&data)
            .output()
            .map_err(io("running pg_ctl status"))?;
        if !status.status.success() {
            let durability = if cluster.is_durable() {
                ""
            } else {
                "-c fsync=off -c full_page_writes=off "
            };
            let options = format!(
                "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} \
                 {durability}-c synchronous_commit=off -c max_connections=200",
                dir.display()
            );
            // In a session of its own (setsid): a Ctrl-C meant for the daemon in the
            // foreground must not shut the server down under the daemon's last flush.
            run(
                &bin.join("pg_ctl"),
                root,
                &[
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    &data.display().to_string(),
                    "-l",
                    &dir.join("postgres.log").display().to_string(),
                    "-o",
                    &options,
                ],
            )?;
        }
        drop(lock);
        Ok(cluster)
    }

    /// Stops the cluster (fast shutdown), keeping its data.
    pub fn stop(&self) -> Result<(), ClusterError> {
        let bin = binaries()?;
        run(
            &bin.join("pg_ctl"),
            is_root(),
            &[
                "stop",
                "-m",
                "fast",
                "-D",
                &self.dir.join("data").display().to_string(),
            ],
        )
    }

    /// Starts a stopped cluster again (of the kind it was created).
    pub fn start(&self) -> Result<Self, ClusterError> {
        Self::ensure(&self.dir)
    }
}

/// Maps an I/O error to [`ClusterError::Io`] saying what was being done.
fn io(what: &str) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.to_owned();
    move |source| ClusterError::Io { what, source }
}

/// Writes a new random password (32 hex digits from the kernel's generator), readable
/// by its owner only.
fn write_password(path: &Path) -> Result<(), ClusterError> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("reading /dev/urandom"))?;
    let hex = bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    });
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(hex.as_bytes()))
        .map_err(io("writing the cluster password"))
}

/// The newest installed PostgreSQL's `bin` directory.
fn binaries() -> Result<PathBuf, ClusterError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| ClusterError::NoBinaries)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b)
        .ok_or(ClusterError::NoBinaries)
}

/// A port in 20000..32000 derived from the directory path (FNV-1a): below Linux's
/// ephemeral range (32768 and up), where a client connection's local port could
/// hold it when the cluster starts (seen: a test cluster refused with "Address already
/// in use" on 34220).
fn port_for(dir: &Path) -> u16 {
    let hash = dir
        .display()
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    20_000 + u16::try_from(hash % 12_000).unwrap_or(0)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn as_user(program: &Path, root: bool) -> Command {
    let mut c = Command::new("setsid");
    c.arg("--wait");
    if root {
        c.args(["runuser", "-u", "postgres", "--"]);
    }
    c.arg(program);
    c
}

fn run(program: &Path, root: bool, args: &[&str]) -> Result<(), ClusterError> {
    let mut cmd = as_user(program, root);
    cmd.args(args);
    exec(cmd, format!("{} {}", program.display(), args.join(" ")))
}

/// Runs `cmd` (described as `command` in errors) to completion.
fn exec(mut cmd: Command, command: String) -> Result<(), ClusterError> {
    let out = cmd.output().map_err(|source| ClusterError::Io {
        what: format!("running {command}"),
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ClusterError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Hands the cluster directory to the `postgres` user (initdb and the server refuse
/// to run as root). Skipped when it already belongs to them: a recursive chown of a
/// running cluster races the server deleting its own files (parallel tests each call
/// [`Cluster::ensure`]) and fails on a file that vanished mid-walk.
fn chown_postgres(dir: &Path) -> Result<(), ClusterError> {
    use std::os::unix::fs::MetadataExt as _;
    let postgres = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw());
    let owned = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .is_some_and(|m| Some(m.uid()) == postgres)
    };
    // The password file is made by us (root) just before initdb reads it as postgres.
    let (data, password) = (dir.join("data"), dir.join("password"));
    let ours = |p: &Path| !p.exists() || owned(p);
    if owned(dir) && ours(&data) && ours(&password) {
        return Ok(());
    }
    let mut cmd = Command::new("chown");
    cmd.args(["-R", "postgres:postgres"]).arg(dir);
    exec(cmd, format!("chown -R postgres:postgres {}", dir.display()))
}

/// Whether `name` is a test's scratch database, `<prefix>_<label>_<pid>_<n>` (label:
/// lowercase ASCII letters and digits), whose process is no longer running on this
/// machine. Only meaningful for the private cluster, whose databases this machine's
/// processes made: on a shared server another machine's live test would look dead.
pub fn is_dead_scratch_database(name: &str, prefix: &str) -> bool {
    let mut parts = name.split('_');
    let (Some(p), Some(label), Some(pid), Some(n), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let label_ok = !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if p != prefix || !label_ok || !digits(pid) || !digits(n) {
        return false;
    }
    !Path::new("/proc").join(pid).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_scratch_names_of_dead_processes_count() {
        let me = std::process::id();
        // No process has pid 0 in /proc.
        assert!(is_dead_scratch_database("t_graph_0_3", "t"));
        assert!(!is_dead_scratch_database(&format!("t_graph_{me}_3"), "t"));
        assert!(!is_dead_scratch_database("a_graph_0_3", "t"));
        assert!(!is_dead_scratch_database("t_sales_2024", "t"));
        assert!(!is_dead_scratch_database("t_sales_0_q1", "t"));
        assert!(!is_dead_scratch_database("t_Sales_0_1", "t"));
        assert!(!is_dead_scratch_database("t_a_b_0_1", "t"));
        assert!(!is_dead_scratch_database("t__0_1", "t"));
    }
}
