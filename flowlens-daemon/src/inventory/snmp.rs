//! SNMP for exporters: each exporter's `sysName` and its interfaces' `ifName`,
//! `ifAlias` and speed (`ifHighSpeed`, else `ifSpeed`), read with `SNMPv2c` or `SNMPv3`,
//! so a flow can say which router and which interfaces it crossed (Akvorado's main
//! metadata source, the same way).
//!
//! Exporters are polled as the flow path reports them ([`Devices::note`]): once when
//! first seen, then every `refresh_interval_seconds`; one that does not answer is
//! tried again after five minutes and keeps what it answered last. The answers are
//! kept in a map swapped whole (readers never wait on SNMP) and saved in the state
//! directory, so a restart names interfaces at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use snmp2::{AsyncSession, Oid, Value};
use sqlx::types::ipnetwork::IpNetwork;

use crate::notify::config::resolve;

/// `enrichment.snmp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SnmpConfig {
    /// Poll exporters over SNMP.
    pub enabled: bool,
    /// The agents' UDP port.
    pub port: u16,
    /// Seconds between two polls of one exporter.
    pub refresh_interval_seconds: u64,
    /// Seconds one request may take.
    pub timeout_seconds: u64,
    /// Requests tried again after a timeout.
    pub retries: u32,
    /// Credentials by exporter prefix: the most specific prefix holding the exporter
    /// wins; an exporter no prefix holds is never polled (an sFlow datagram names its
    /// agent: polling any address it names would send credentials anywhere).
    pub credentials: Vec<SnmpCredentials>,
    /// Exporters polled at the same time at most.
    pub max_concurrent_polls: usize,
}

impl Default for SnmpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            port: 161,
            refresh_interval_seconds: 3600,
            timeout_seconds: 2,
            retries: 1,
            credentials: Vec::new(),
            max_concurrent_polls: 16,
        }
    }
}

/// One set of SNMP credentials and the exporters it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SnmpCredentials {
    /// Exporter prefixes (`10.0.0.0/8`, `2001:db8::/32`, `0.0.0.0/0` for every IPv4
    /// exporter): at least one.
    pub prefixes: Vec<String>,
    /// `2c` or `3`.
    pub version: String,
    /// `SNMPv2c`'s community (a secret: `${VAR}` reads the environment).
    pub community: String,
    /// `SNMPv3`'s user.
    pub username: String,
    /// `none`, `md5`, `sha`, `sha224`, `sha256`, `sha384`, `sha512`.
    pub auth_protocol: String,
    pub auth_password: String,
    /// `none`, `des`, `aes` (128), `aes192`, `aes256` (keys extended as net-snmp
    /// does, Blumenthal), `aes192c`, `aes256c` (Cisco's, Reeder).
    pub privacy_protocol: String,
    pub privacy_password: String,
    /// `SNMPv3` context name (empty: the default context).
    pub context: String,
}

impl Default for SnmpCredentials {
    fn default() -> Self {
        Self {
            prefixes: Vec::new(),
            version: "2c".into(),
            community: "public".into(),
            username: String::new(),
            auth_protocol: "sha".into(),
            auth_password: String::new(),
            privacy_protocol: "aes".into(),
            privacy_password: String::new(),
            context: String::new(),
        }
    }
}

impl SnmpConfig {
    /// What is wrong with the section.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.refresh_interval_seconds < 60 {
            p.push("enrichment.snmp.refresh_interval_seconds must be at least 60".to_owned());
        }
        if !(1..=30).contains(&self.timeout_seconds) {
            p.push("enrichment.snmp.timeout_seconds must be between 1 and 30".to_owned());
        }
        if self.retries > 5 {
            p.push("enrichment.snmp.retries must be at most 5".to_owned());
        }
        if !(1..=256).contains(&self.max_concurrent_polls) {
            p.push("enrichment.snmp.max_concurrent_polls must be between 1 and 256".to_owned());
        }
        if self.enabled && self.credentials.is_empty() {
            p.push(
                "enrichment.snmp.credentials: name the exporters' prefixes and their \
                 credentials (no exporter is polled otherwise)"
                    .to_owned(),
            );
        }
        for (i, c) in self.credentials.iter().enumerate() {
            let at = format!("enrichment.snmp.credentials[{i}]");
            if c.prefixes.is_empty() {
                p.push(format!(
                    "{at}.prefixes: name the exporters these credentials are for \
                     (0.0.0.0/0 and ::/0 for all)"
                ));
            }
            for prefix in &c.prefixes {
                if prefix.parse::<IpNetwork>().is_err() {
                    p.push(format!("{at}.prefixes: {prefix:?} is not a prefix"));
                }
            }
            match c.version.as_str() {
                "2c" => {}
                "3" => {
                    if c.username.is_empty() {
                        p.push(format!("{at}.username: SNMPv3 needs a user"));
                    }
                    if auth_protocol(&c.auth_protocol).is_err() {
                        p.push(format!(
                            "{at}.auth_protocol: {:?} is not none, md5, sha, sha224, sha256, \
                             sha384 or sha512",
                            c.auth_protocol
                        ));
                    }
                    if cipher(&c.privacy_protocol).is_err() {
                        p.push(format!(
                            "{at}.privacy_protocol: {:?} is not none, des, aes, aes192, aes256, \
                             aes192c or aes256c",
                            c.privacy_protocol
                        ));
                    }
                    if c.auth_protocol == "none" && c.privacy_protocol != "none" {
                        p.push(format!("{at}: privacy needs authentication"));
                    }
                }
                other => p.push(format!("{at}.version: {other:?} is not 2c or 3")),
            }
        }
        p
    }

    /// The credentials for `exporter`: the most specific prefix holding it; `None`
    /// when no prefix does (the exporter is not polled).
    #[must_use]
    pub fn credentials_for(&self, exporter: IpAddr) -> Option<SnmpCredentials> {
        let mut best: Option<(u8, &SnmpCredentials)> = None;
        for c in &self.credentials {
            let len = c
                .prefixes
                .iter()
                .filter_map(|p| p.parse::<IpNetwork>().ok())
                .filter(|n| n.contains(exporter))
                .map(|n| n.prefix())
                .max();
            if let Some(len) = len
                && best.is_none_or(|(b, _)| len > b)
            {
                best = Some((len, c));
            }
        }
        best.map(|(_, c)| c.clone())
    }
}

fn auth_protocol(s: &str) -> Result<Option<snmp2::v3::AuthProtocol>, ()> {
    use snmp2::v3::AuthProtocol as A;
    Ok(Some(match s {
        "none" => return Ok(None),
        "md5" => A::Md5,
        "sha" | "sha1" => A::Sha1,
        "sha224" => A::Sha224,
        "sha256" => A::Sha256,
        "sha384" => A::Sha384,
        "sha512" => A::Sha512,
        _ => return Err(()),
    }))
}

/// The cipher, and how its key is extended past the hash's length (AES-192 and
/// AES-256 need longer keys than MD5 and SHA-1 give: net-snmp extends them as
/// Blumenthal's draft says, Cisco as Reeder's).
fn cipher(s: &str) -> Result<Option<(snmp2::v3::Cipher, Option<snmp2::v3::KeyExtension>)>, ()> {
    use snmp2::v3::{Cipher as C, KeyExtension as K};
    Ok(Some(match s {
        "none" => return Ok(None),
        "des" => (C::Des, None),
        "aes" | "aes128" => (C::Aes128, None),
        "aes192" => (C::Aes192, Some(K::Blumenthal)),
        "aes256" => (C::Aes256, Some(K::Blumenthal)),
        "aes192c" => (C::Aes192, Some(K::Reeder)),
        "aes256c" => (C::Aes256, Some(K::Reeder)),
        _ => return Err(()),
    }))
}

/// An interface, as the exporter describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: Option<String>,
    pub alias: Option<String>,
    /// Bits per second.
    pub speed_bps: Option<u64>,
}

/// What an exporter said about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub sys_name: Option<String>,
    /// By `ifIndex`.
    pub interfaces: BTreeMap<u32, Interface>,
    pub polled_at: Option<DateTime<Utc>>,
}

/// Why an exporter could not be polled.
#[derive(Debug, thiserror::Error)]
pub enum SnmpError {
    #[error("no answer within {0:?} ({1} tries)")]
    Timeout(Duration, u32),
    #[error("SNMP: {0:?}")]
    Protocol(snmp2::Error),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("the agent answered error status {0}")]
    Status(u32),
}

/// Most interfaces kept per exporter, and the longest text kept.
const MAX_INTERFACES: usize = 16_384;
const MAX_TEXT: usize = 255;
/// Most exporters polled (the flow path notes every exporter it sees).
const MAX_EXPORTERS: usize = 10_000;

const SYS_NAME: &[u64] = &[1, 3, 6, 1, 2, 1, 1, 5, 0];
const IF_NAME: &[u64] = &[1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1];
const IF_ALIAS: &[u64] = &[1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 18];
const IF_HIGH_SPEED: &[u64] = &[1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 15];
const IF_SPEED: &[u64] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 5];
const IF_DESCR: &[u64] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 2];

fn text(bytes: &[u8]) -> Option<String> {
    let s: String = String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect();
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// A session to one agent, as configured for it.
struct Agent {
    address: SocketAddr,
    credentials: SnmpCredentials,
    timeout: Duration,
    retries: u32,
    session: Option<AsyncSession>,
}

impl Agent {
    async fn open(&self) -> Result<AsyncSession, SnmpError> {
        let c = &self.credentials;
        let secret = |v: &str, key: &str| {
            resolve(v).map_err(|e| SnmpError::Credentials(format!("{key}: {e}")))
        };
        if c.version == "3" {
            let auth = auth_protocol(&c.auth_protocol)
                .map_err(|()| SnmpError::Credentials("auth_protocol".into()))?;
            let privacy = cipher(&c.privacy_protocol)
                .map_err(|()| SnmpError::Credentials("privacy_protocol".into()))?;
            let password = secret(&c.auth_password, "auth_password")?;
            let mut security = snmp2::v3::Security::new(c.username.as_bytes(), password.as_bytes());
            security = match (auth, privacy) {
                (None, _) => security.with_auth(snmp2::v3::Auth::NoAuthNoPriv),
                (Some(a), None) => security
                    .with_auth_protocol(a)
                    .with_auth(snmp2::v3::Auth::AuthNoPriv),
                (Some(a), Some((cipher, extension))) => {
                    let security =
                        security
                            .with_auth_protocol(a)
                            .with_auth(snmp2::v3::Auth::AuthPriv {
                                cipher,
                                privacy_password: secret(&c.privacy_password, "privacy_password")?
                                    .into_bytes(),
                            });
                    match extension {
                        Some(k) => security.with_key_extension_method(k),
                        None => security,
                    }
                }
            };
            if !c.context.is_empty() {
                security = security.with_context_name(&c.context);
            }
            let mut session = AsyncSession::new_v3(self.address, 0, security).await?;
            tokio::time::timeout(self.timeout, session.init())
                .await
                .map_err(|_| SnmpError::Timeout(self.timeout, 1))?
                .map_err(SnmpError::Protocol)?;
            Ok(session)
        } else {
            let community = secret(&c.community, "community")?;
            Ok(AsyncSession::new_v2c(self.address, community.as_bytes(), 0).await?)
        }
    }

    /// One request, tried again on a new session (a new socket: a late answer to the
    /// abandoned request must not be taken for the next one's) after a timeout.
    /// `op` turns the answer into owned values.
    async fn request<T>(
        &mut self,
        op: impl for<'s> Fn(
            &'s mut AsyncSession,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = Result<T, snmp2::Error>> + Send + 's>,
        >,
    ) -> Result<T, SnmpError> {
        for _ in 0..=self.retries {
            if self.session.is_none() {
                self.session = Some(self.open().await?);
            }
            let Some(session) = self.session.as_mut() else {
                continue;
            };
            match tokio::time::timeout(self.timeout, op(session)).await {
                Ok(Ok(v)) => return Ok(v),
                // The agent's engine boots or time moved (a reboot, or a discovery
                // report without them): the session took the new values; again.
                Ok(Err(snmp2::Error::AuthUpdated)) => {}
                Ok(Err(e)) => {
                    self.session = None;
                    return Err(SnmpError::Protocol(e));
                }
                Err(_) => self.session = None,
            }
        }
        Err(SnmpError::Timeout(self.timeout, self.retries + 1))
    }

    /// Every (last arc, value) under `column`, by GETBULK (`SNMPv2c` and v3).
    async fn walk(&mut self, column: &'static [u64]) -> Result<Vec<(u32, Owned)>, SnmpError> {
        let prefix = Oid::from(column).map_err(|_| SnmpError::Credentials("oid".into()))?;
        let mut next: Vec<u64> = column.to_vec();
        let mut out = Vec::new();
        loop {
            let start = next.clone();
            let page: Vec<(Vec<u64>, Owned)> = self
                .request(move |s| {
                    let start = start.clone();
                    Box::pin(async move {
                        let oid = Oid::from(&start).map_err(|_| snmp2::Error::AsnParse)?;
                        let pdu = s.getbulk(&[&oid], 0, 32).await?;
                        if pdu.error_status != 0 {
                            return Err(snmp2::Error::ValueOutOfRange);
                        }
                        Ok(pdu
                            .varbinds
                            .map(|(oid, v)| {
                                (
                                    oid.iter().map(Iterator::collect).unwrap_or_default(),
                                    Owned::from(&v),
                                )
                            })
                            .collect())
                    })
                })
                .await?;
            let mut advanced = false;
            for (oid, value) in page {
                let inside = Oid::from(&oid).is_ok_and(|o| o.starts_with(&prefix))
                    && oid.len() == column.len() + 1;
                if !inside || matches!(value, Owned::End) {
                    return Ok(out);
                }
                if oid <= next {
                    // Not increasing: a broken agent; stop rather than loop.
                    return Ok(out);
                }
                if let Ok(index) = u32::try_from(oid[column.len()]) {
                    out.push((index, value));
                }
                next = oid;
                advanced = true;
                if out.len() >= MAX_INTERFACES {
                    return Ok(out);
                }
            }
            if !advanced {
                return Ok(out);
            }
        }
    }
}

/// A value, owned (the session's buffer is reused by the next request).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Text(Vec<u8>),
    Number(u64),
    End,
    Other,
}

impl From<&Value<'_>> for Owned {
    fn from(v: &Value<'_>) -> Self {
        match v {
            Value::OctetString(s) => Self::Text(s.to_vec()),
            Value::Integer(n) => u64::try_from(*n).map_or(Self::Other, Self::Number),
            Value::Counter32(n) | Value::Unsigned32(n) | Value::Timeticks(n) => {
                Self::Number(u64::from(*n))
            }
            Value::Counter64(n) => Self::Number(*n),
            Value::EndOfMibView | Value::NoSuchObject | Value::NoSuchInstance => Self::End,
            _ => Self::Other,
        }
    }
}

/// Polls one exporter's agent.
///
/// # Errors
/// No answer, refused credentials, or an answer that is not SNMP.
pub async fn poll(config: &SnmpConfig, exporter: IpAddr) -> Result<Device, SnmpError> {
    let credentials = config.credentials_for(exporter).ok_or_else(|| {
        SnmpError::Credentials(format!(
            "no enrichment.snmp.credentials prefix holds {exporter}"
        ))
    })?;
    let mut agent = Agent {
        address: SocketAddr::new(exporter, config.port),
        credentials,
        timeout: Duration::from_secs(config.timeout_seconds),
        retries: config.retries,
        session: None,
    };
    let sys_name = agent
        .request(|s| {
            Box::pin(async move {
                let oid = Oid::from(SYS_NAME).map_err(|_| snmp2::Error::AsnParse)?;
                let mut pdu = s.get(&oid).await?;
                if pdu.error_status != 0 {
                    return Err(snmp2::Error::ValueOutOfRange);
                }
                Ok(pdu.varbinds.next().map(|(_, v)| Owned::from(&v)))
            })
        })
        .await?;
    let mut interfaces: BTreeMap<u32, Interface> = BTreeMap::new();
    for (index, v) in agent.walk(IF_NAME).await? {
        if let Owned::Text(t) = v {
            interfaces.entry(index).or_default().name = text(&t);
        }
    }
    if interfaces.is_empty() {
        // An agent without IF-MIB's ifXTable: ifDescr names the interfaces.
        for (index, v) in agent.walk(IF_DESCR).await? {
            if let Owned::Text(t) = v {
                interfaces.entry(index).or_default().name = text(&t);
            }
        }
    }
    for (index, v) in agent.walk(IF_ALIAS).await? {
        if let (Owned::Text(t), Some(i)) = (v, interfaces.get_mut(&index)) {
            i.alias = text(&t);
        }
    }
    for (index, v) in agent.walk(IF_HIGH_SPEED).await? {
        if let (Owned::Number(mbps), Some(i)) = (v, interfaces.get_mut(&index))
            && mbps > 0
        {
            i.speed_bps = Some(mbps.saturating_mul(1_000_000));
        }
    }
    for (index, v) in agent.walk(IF_SPEED).await? {
        if let (Owned::Number(bps), Some(i)) = (v, interfaces.get_mut(&index))
            && i.speed_bps.is_none()
            && bps > 0
        {
            i.speed_bps = Some(bps);
        }
    }
    Ok(Device {
        sys_name: match sys_name {
            Some(Owned::Text(t)) => text(&t),
            _ => None,
        },
        interfaces,
        polled_at: Some(Utc::now()),
    })
}

/// Metric names of the SNMP poller.
pub mod metric {
    /// Polls, by `outcome` (`ok`, `failed`).
    pub const POLLS: &str = "flowlens_snmp_polls_total";
    /// Exporters whose SNMP description is known.
    pub const EXPORTERS: &str = "flowlens_snmp_exporters";
}

/// What the exporters said, shared by the poller and its readers.
#[derive(Debug, Default)]
pub struct Devices {
    map: RwLock<Arc<HashMap<IpAddr, Arc<Device>>>>,
    /// Exporters the flow path reported, not yet polled.
    noted: Mutex<HashSet<IpAddr>>,
    known: Mutex<HashSet<IpAddr>>,
    version: AtomicU64,
}

impl Devices {
    /// Reports an exporter the flow path saw (cheap when it is known already).
    pub fn note(&self, exporter: IpAddr) {
        let known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.contains(&exporter) || known.len() >= MAX_EXPORTERS {
            return;
        }
        drop(known);
        self.noted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(exporter);
    }

    /// What `exporter` said, if it answered.
    pub fn get(&self, exporter: IpAddr) -> Option<Arc<Device>> {
        self.current().get(&exporter).cloned()
    }

    /// The whole map (a cheap reference).
    pub fn current(&self) -> Arc<HashMap<IpAddr, Arc<Device>>> {
        self.map
            .read()
            .map_or_else(|p| p.into_inner().clone(), |m| m.clone())
    }

    /// Bumped on every change.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Installs what `exporter` said; whether it differs from what it said before
    /// (the time of the poll aside: an unchanged answer is not written again).
    fn put(&self, exporter: IpAddr, device: Device) -> bool {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(&exporter).is_some_and(|old| {
            old.sys_name == device.sys_name && old.interfaces == device.interfaces
        }) {
            return false;
        }
        let mut next = HashMap::clone(&map);
        next.insert(exporter, Arc::new(device));
        metrics::gauge!(metric::EXPORTERS)
            .set(f64::from(u32::try_from(next.len()).unwrap_or(u32::MAX)));
        *map = Arc::new(next);
        self.version.fetch_add(1, Ordering::AcqRel);
        true
    }

    fn take_noted(&self) -> Vec<IpAddr> {
        let noted: Vec<IpAddr> = self
            .noted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .collect();
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(noted.iter().copied());
        noted
    }
}

/// The file the answers are kept in.
pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("snmp.json")
}

/// Starts the poller: the saved answers installed first, then every exporter noted
/// polled at once and again every `refresh_interval_seconds`; one that failed is
/// tried again after five minutes.
pub fn spawn(
    config: SnmpConfig,
    devices: &Arc<Devices>,
    state_dir: Option<&Path>,
) -> tokio::task::JoinHandle<()> {
    let path = state_dir.map(state_path);
    if let Some(saved) = path
        .as_deref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<HashMap<IpAddr, Device>>(&b).ok())
    {
        for (ip, d) in saved {
            devices.put(ip, d);
        }
    }
    let devices = devices.clone();
    tokio::spawn(async move {
        let config = Arc::new(config);
        let refresh = Duration::from_secs(config.refresh_interval_seconds);
        // A whole poll (several walks) at most: a huge or stuttering agent is given
        // up on, not waited for.
        let deadline = Duration::from_secs(config.timeout_seconds * 60).max(Duration::from_mins(1));
        // When each exporter is due, and how many times in a row it failed.
        let mut due: BTreeMap<IpAddr, tokio::time::Instant> = BTreeMap::new();
        let mut failures: HashMap<IpAddr, u32> = HashMap::new();
        let mut running = tokio::task::JoinSet::new();
        loop {
            let now = tokio::time::Instant::now();
            for ip in devices.take_noted() {
                // Exporters no configured prefix holds are never polled.
                if config.credentials_for(ip).is_some() {
                    due.entry(ip).or_insert(now);
                }
            }
            let ready: Vec<IpAddr> = due
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(ip, _)| *ip)
                .collect();
            for ip in ready {
                if running.len() >= config.max_concurrent_polls {
                    break;
                }
                // Not due again until it has answered or failed.
                due.insert(ip, now + refresh + deadline);
                let config = config.clone();
                running.spawn(async move {
                    let result = tokio::time::timeout(deadline, poll(&config, ip))
                        .await
                        .unwrap_or(Err(SnmpError::Timeout(deadline, 1)));
                    (ip, result)
                });
            }
            let mut changed = false;
            // Collect what finished; wait a second for more otherwise.
            let tick = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(tick);
            loop {
                tokio::select! {
                    () = &mut tick => break,
                    Some(done) = running.join_next(), if !running.is_empty() => {
                        let Ok((ip, result)) = done else { continue };
                        match result {
                            Ok(device) => {
                                metrics::counter!(metric::POLLS, "outcome" => "ok").increment(1);
                                if failures.remove(&ip).is_some() {
                                    tracing::info!(exporter = %ip, "SNMP: the exporter answers again");
                                }
                                changed |= devices.put(ip, device);
                                due.insert(ip, tokio::time::Instant::now() + refresh);
                            }
                            Err(e) => {
                                metrics::counter!(metric::POLLS, "outcome" => "failed").increment(1);
                                let n = failures.entry(ip).or_insert(0);
                                if *n == 0 {
                                    tracing::warn!(exporter = %ip, error = %e, "SNMP: the exporter did not answer; keeping what it said last");
                                }
                                *n = n.saturating_add(1);
                                // 5 minutes, doubling, at most the refresh interval.
                                let wait = Duration::from_mins(5)
                                    .saturating_mul(1 << (*n - 1).min(6))
                                    .min(refresh.max(Duration::from_mins(5)));
                                due.insert(ip, tokio::time::Instant::now() + wait);
                            }
                        }
                    }
                }
            }
            if changed && let Some(p) = path.clone() {
                let current = devices.current();
                let saved = tokio::task::spawn_blocking(move || {
                    let snapshot: HashMap<IpAddr, &Device> =
                        current.iter().map(|(k, v)| (*k, v.as_ref())).collect();
                    super::save_json(&p, &snapshot)
                })
                .await;
                if let Ok(Err(e)) = saved {
                    tracing::warn!(error = %e, "SNMP: the answers could not be saved");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_prefix_chooses_the_credentials() {
        let c = SnmpConfig {
            credentials: vec![
                SnmpCredentials {
                    prefixes: vec!["0.0.0.0/0".into()],
                    community: "everyone".into(),
                    ..SnmpCredentials::default()
                },
                SnmpCredentials {
                    prefixes: vec!["10.0.0.0/8".into()],
                    community: "core".into(),
                    ..SnmpCredentials::default()
                },
                SnmpCredentials {
                    prefixes: vec!["10.1.0.0/16".into(), "2001:db8::/32".into()],
                    version: "3".into(),
                    username: "flowlens".into(),
                    ..SnmpCredentials::default()
                },
            ],
            ..SnmpConfig::default()
        };
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let at = |ip: &str| c.credentials_for(ip.parse().unwrap()).unwrap();
        assert_eq!(at("192.0.2.1").community, "everyone");
        assert_eq!(at("10.2.0.1").community, "core");
        assert_eq!(at("10.1.0.1").version, "3");
        assert_eq!(at("2001:db8::1").version, "3");
        // No prefix holds it: never polled.
        assert!(c.credentials_for("2001:db9::1".parse().unwrap()).is_none());
        assert!(
            SnmpConfig::default()
                .credentials_for("192.0.2.1".parse().unwrap())
                .is_none()
        );
        let bad = SnmpConfig {
            credentials: vec![SnmpCredentials {
                prefixes: vec!["10.0.0.0/33".into()],
                version: "3".into(),
                auth_protocol: "sha3".into(),
                ..SnmpCredentials::default()
            }],
            ..SnmpConfig::default()
        };
        assert_eq!(bad.problems().len(), 3, "{:?}", bad.problems());
        let unscoped = SnmpConfig {
            enabled: true,
            credentials: vec![SnmpCredentials::default()],
            ..SnmpConfig::default()
        };
        assert_eq!(unscoped.problems().len(), 1, "{:?}", unscoped.problems());
        assert_eq!(
            SnmpConfig {
                enabled: true,
                ..SnmpConfig::default()
            }
            .problems()
            .len(),
            1
        );
    }
}
