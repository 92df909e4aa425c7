//! Where the command line keeps its login: `$XDG_CONFIG_HOME/flowlens/credentials.json`
//! (else `~/.config/...`), written 0600 in a 0700 directory, replaced atomically, and
//! refused when others could read it (as ssh refuses a readable key).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ClientError;

/// What `flowlens login` saves.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The API's base URL, `http(s)://host:port` (no `/api/v1`).
    pub url: String,
    /// A JWT (`Authorization: Bearer`) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// ... or an API key (`X-API-Key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl std::fmt::Debug for Credentials {
    /// Never the secret: this may end up in a log or an error.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The credentials file under `config_home` (`$XDG_CONFIG_HOME`, else `$HOME/.config`).
pub fn path_in(config_home: &Path) -> PathBuf {
    config_home.join("flowlens").join("credentials.json")
}

/// The user's config directory, from the environment.
///
/// # Errors
/// When neither `XDG_CONFIG_HOME` nor `HOME` is set.
pub fn config_home() -> Result<PathBuf, ClientError> {
    match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|home| PathBuf::from(home).join(".config"))
            .ok_or_else(|| {
                ClientError::Other("neither XDG_CONFIG_HOME nor HOME is set".to_owned())
            }),
    }
}

/// Reads the saved login; `None` when there is none.
///
/// # Errors
/// When the file is readable by others, or unreadable.
pub fn load(path: &Path) -> Result<Option<Credentials>, ClientError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ClientError::Other(format!("{}: {e}", path.display()))),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(ClientError::Other(format!(
            "{} may be read by others (mode {:o}): chmod 600 it, or log in again",
            path.display(),
            meta.permissions().mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Other(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ClientError::Other(format!("{}: {e}", path.display())))
}

/// Saves the login: a new file created 0600 beside the old one, synced, renamed over it.
///
/// # Errors
/// When the directory or file cannot be written.
pub fn save(path: &Path, credentials: &Credentials) -> Result<(), ClientError> {
    let fail = |e: std::io::Error| ClientError::Other(format!("{}: {e}", path.display()));
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    let tmp = dir.join(format!(".credentials.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    let body =
        serde_json::to_vec_pretty(credentials).map_err(|e| ClientError::Other(e.to_string()))?;
    file.write_all(&body)
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// Forgets the login; true when there was one.
///
/// # Errors
/// When the file exists and cannot be removed.
pub fn remove(path: &Path) -> Result<bool, ClientError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ClientError::Other(format!("{}: {e}", path.display()))),
    }
}
