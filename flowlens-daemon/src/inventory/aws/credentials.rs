//! AWS credentials, found where AWS's SDKs look, in their order:
//! 1. the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`);
//! 2. the shared files' profile (`enrichment.cloud.aws.profile`, else `AWS_PROFILE`,
//!    else `default`; `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE`, else
//!    `~/.aws/credentials` and `~/.aws/config`), with keys in it;
//! 3. a web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`: EKS's IAM roles
//!    for service accounts), exchanged at STS by `AssumeRoleWithWebIdentity`;
//! 4. the container endpoint (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` on ECS,
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI` with its authorization token for EKS Pod
//!    Identity);
//! 5. the instance's role from the instance metadata service (`IMDSv2`), unless
//!    `AWS_EC2_METADATA_DISABLED` is `true`.
//!
//! Everything is read again at each refresh, so rotated keys and files take effect
//! without a restart; temporary credentials are kept until five minutes before they
//! expire. Profiles that assume roles, use SSO or run a `credential_process` are not
//! followed: they are refused with a message saying so.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{ProviderError, child_text, xml_error};

/// A key pair, and the session token and expiry of temporary ones.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub expires: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires", &self.expires)
            .finish()
    }
}

/// Where the chain reads its variables and `~`: the process's own, or a fixed set (a
/// test, or a daemon given its own).
#[derive(Debug, Clone, Default)]
pub enum Environment {
    #[default]
    Process,
    Fixed {
        vars: HashMap<String, String>,
        home: Option<PathBuf>,
    },
}

impl Environment {
    /// A fixed environment of these variables and no home directory.
    pub fn fixed<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self::Fixed {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            home: None,
        }
    }

    /// A variable's value, when set and not empty.
    pub fn var(&self, name: &str) -> Option<String> {
        match self {
            Self::Process => std::env::var(name).ok(),
            Self::Fixed { vars, .. } => vars.get(name).cloned(),
        }
        .filter(|v| !v.is_empty())
    }

    fn home(&self) -> Option<PathBuf> {
        match self {
            Self::Process => std::env::var_os("HOME").map(PathBuf::from),
            Self::Fixed { home, .. } => home.clone(),
        }
    }
}

/// The link of the chain that answered, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Environment,
    Profile,
    WebIdentity,
    Container,
    InstanceMetadata,
}

/// The chain, with what it fetched last.
pub struct Chain {
    env: Environment,
    profile: Option<String>,
    /// The region STS is asked in for a web identity.
    region: String,
    http: reqwest::Client,
    /// For IMDS: a second per request, as the SDKs (a daemon off EC2 must not wait).
    imds: reqwest::Client,
    cached: tokio::sync::Mutex<Option<(Source, Credentials)>>,
}

/// The ECS agent's address for relative URIs.
const ECS_HOST: &str = "http://169.254.170.2";
/// The instance metadata service.
const IMDS: &str = "http://169.254.169.254";
/// Temporary credentials are renewed this long before they expire.
const EARLY: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// Largest credentials or profile file read.
const MAX_FILE: u64 = 1 << 20;
/// One IMDS request at most.
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);
/// Attempts at IMDS (it throttles, and answers slowly under load).
const IMDS_ATTEMPTS: u32 = 3;

impl Chain {
    /// A chain over `env`; `profile` overrides `AWS_PROFILE`.
    ///
    /// # Errors
    /// When the HTTP client cannot start.
    pub fn new(
        env: Environment,
        profile: Option<String>,
        region: String,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        // No proxy: the container endpoint and IMDS are link-local or loopback, and
        // credentials must not cross a proxy in the clear.
        let client = |timeout: Duration| {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(2).min(timeout))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .map_err(|e| ProviderError::Credentials(e.to_string()))
        };
        Ok(Self {
            env,
            profile,
            region,
            http: client(timeout)?,
            imds: client(IMDS_TIMEOUT)?,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// Credentials from the first source that has them.
    ///
    /// # Errors
    /// What the first source that applies said, or that none applies.
    pub async fn credentials(&self) -> Result<(Source, Credentials), ProviderError> {
        if let Some(c) = self.environment_keys() {
            return Ok((Source::Environment, c));
        }
        if let Some(c) = self.profile_keys()? {
            return Ok((Source::Profile, c));
        }
        let mut cached = self.cached.lock().await;
        if let Some((source, c)) = cached.as_ref()
            && c.expires.is_none_or(|e| e - EARLY > Utc::now())
        {
            return Ok((*source, c.clone()));
        }
        let fresh = if let (Some(file), Some(role)) = (
            self.env.var("AWS_WEB_IDENTITY_TOKEN_FILE"),
            self.env.var("AWS_ROLE_ARN"),
        ) {
            (Source::WebIdentity, self.web_identity(&file, &role).await?)
        } else if let Some(url) = self.container_url()? {
            (Source::Container, self.container(&url).await?)
        } else if self
            .env
            .var("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Err(ProviderError::Credentials(
                "no AWS credentials: none in the environment, the shared files, a web \
                 identity or a container endpoint, and AWS_EC2_METADATA_DISABLED is set"
                    .to_owned(),
            ));
        } else {
            (
                Source::InstanceMetadata,
                self.instance_metadata().await.map_err(|e| {
                    ProviderError::Credentials(format!(
                        "no AWS credentials: none in the environment, the shared files, a web \
                         identity or a container endpoint, and the instance metadata service \
                         gave none ({e})"
                    ))
                })?,
            )
        };
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    fn environment_keys(&self) -> Option<Credentials> {
        Some(Credentials {
            access_key_id: self.env.var("AWS_ACCESS_KEY_ID")?,
            secret_access_key: self.env.var("AWS_SECRET_ACCESS_KEY")?,
            session_token: self.env.var("AWS_SESSION_TOKEN"),
            expires: None,
        })
    }

    /// The profile's keys; `None` when the default profile is not there (a profile
    /// named explicitly must be).
    fn profile_keys(&self) -> Result<Option<Credentials>, ProviderError> {
        let named = self.profile.clone().or_else(|| self.env.var("AWS_PROFILE"));
        let name = named.clone().unwrap_or_else(|| "default".to_owned());
        let home = self.env.home();
        let file = |var: &str, default: &str| -> Option<PathBuf> {
            self.env
                .var(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(default)))
        };
        let mut found: Option<HashMap<String, String>> = None;
        // The credentials file's section wins over the config file's, key by key.
        for (path, section) in [
            (
                file("AWS_CONFIG_FILE", ".aws/config"),
                config_section(&name),
            ),
            (
                file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
                name.clone(),
            ),
        ] {
            let Some(path) = path else { continue };
            let text = match read_small(&path) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    return Err(ProviderError::Credentials(format!(
                        "{}: {e}",
                        path.display()
                    )));
                }
            };
            if let Some(keys) = ini_section(&text, &section) {
                found.get_or_insert_with(HashMap::new).extend(keys);
            }
        }
        let Some(keys) = found else {
            return match named {
                Some(n) => Err(ProviderError::Credentials(format!(
                    "the AWS profile {n:?} is in neither shared file"
                ))),
                None => Ok(None),
            };
        };
        let unsupported: Vec<&str> = [
            "role_arn",
            "source_profile",
            "credential_source",
            "credential_process",
            "sso_session",
            "sso_start_url",
            "web_identity_token_file",
        ]
        .into_iter()
        .filter(|k| keys.contains_key(*k))
        .collect();
        if !unsupported.is_empty() {
            // The SDKs would assume a role or run a process; using the profile's keys
            // (or another source) instead would read the estate as someone else.
            return Err(ProviderError::Credentials(format!(
                "the AWS profile {name:?} uses {}, which FlowLens does not follow: give \
                 the profile keys, or use the environment, a web identity or the \
                 instance's role",
                unsupported.join(", ")
            )));
        }
        match (
            keys.get("aws_access_key_id"),
            keys.get("aws_secret_access_key"),
        ) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                Ok(Some(Credentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                    session_token: keys
                        .get("aws_session_token")
                        .filter(|t| !t.is_empty())
                        .cloned(),
                    expires: None,
                }))
            }
            // A profile without keys (a region only): the chain goes on, as the
            // SDKs' does.
            _ => Ok(None),
        }
    }

    async fn web_identity(&self, file: &str, role: &str) -> Result<Credentials, ProviderError> {
        let token = read_small(std::path::Path::new(file))
            .ok()
            .flatten()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ProviderError::Credentials(format!(
                    "AWS_WEB_IDENTITY_TOKEN_FILE {file}: unreadable or empty"
                ))
            })?;
        let session = self
            .env
            .var("AWS_ROLE_SESSION_NAME")
            .unwrap_or_else(|| format!("flowlens-{}", Utc::now().timestamp()));
        let endpoint = self
            .env
            .var("AWS_ENDPOINT_URL_STS")
            .or_else(|| self.env.var("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| super::regional("sts", &self.region));
        let body = super::sigv4::canonical_query(&[
            ("Action".into(), "AssumeRoleWithWebIdentity".into()),
            ("Version".into(), "2011-06-15".into()),
            ("RoleArn".into(), role.to_owned()),
            ("RoleSessionName".into(), session),
            ("WebIdentityToken".into(), token),
        ]);
        let answer = self
            .http
            .post(format!("{}/", endpoint.trim_end_matches('/')))
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| transport("STS", &e))?;
        let status = answer.status();
        let text = super::read_bounded(answer, 1 << 20, "STS")
            .await
            .map_err(|e| ProviderError::Credentials(e.to_string()))?;
        if !status.is_success() {
            return Err(ProviderError::Credentials(format!(
                "STS AssumeRoleWithWebIdentity for {role}: HTTP {}: {}",
                status.as_u16(),
                xml_error(&text)
            )));
        }
        let doc = roxmltree::Document::parse(&text).map_err(|e| {
            ProviderError::Credentials(format!("STS answered what is not XML: {e}"))
        })?;
        let node = doc
            .descendants()
            .find(|n| n.tag_name().name() == "Credentials")
            .ok_or_else(|| ProviderError::Credentials("STS answered no Credentials".into()))?;
        let field = |name: &str| {
            child_text(node, name).ok_or_else(|| {
                ProviderError::Credentials(format!("STS's Credentials have no {name}"))
            })
        };
        Ok(Credentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: Some(field("SessionToken")?),
            expires: Some(parse_time(&field("Expiration")?)?),
        })
    }

    /// The container endpoint to ask, if the environment names one. A full URI must
    /// be loopback or one of the container agents' link-local addresses unless it is
    /// https (what the SDKs allow: credentials are not sent elsewhere in the clear).
    fn container_url(&self) -> Result<Option<String>, ProviderError> {
        if let Some(relative) = self.env.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            return Ok(Some(format!("{ECS_HOST}{relative}")));
        }
        let Some(full) = self.env.var("AWS_CONTAINER_CREDENTIALS_FULL_URI") else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(&full).map_err(|e| {
            ProviderError::Credentials(format!("AWS_CONTAINER_CREDENTIALS_FULL_URI: {e}"))
        })?;
        let host = url.host_str().unwrap_or_default();
        let allowed = url.scheme() == "https"
            || host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| {
                    a.is_loopback()
                        || a == std::net::IpAddr::from([169, 254, 170, 23])
                        || a == std::net::IpAddr::from([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23])
                });
        if !allowed {
            return Err(ProviderError::Credentials(format!(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI {full:?}: http only to loopback or the \
                 container agent's address"
            )));
        }
        Ok(Some(full))
    }

    async fn container(&self, url: &str) -> Result<Credentials, ProviderError> {
        let mut request = self.http.get(url);
        let token = match self.env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            Some(f) => Some(
                read_small(std::path::Path::new(&f))
                    .ok()
                    .flatten()
                    .map(|t| t.trim().to_owned())
                    .ok_or_else(|| {
                        ProviderError::Credentials(format!(
                            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {f}: unreadable"
                        ))
                    })?,
            ),
            None => self.env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        };
        if let Some(t) = token {
            request = request.header("authorization", t);
        }
        let json = fetch_json("the container credentials endpoint", request).await?;
        from_json(&json)
    }

    async fn instance_metadata(&self) -> Result<Credentials, ProviderError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.instance_metadata_once().await {
                Err(e) if attempt < IMDS_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "IMDS: trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }

    /// `IMDSv2` only: a session token, the role's name, its credentials. (`IMDSv1`,
    /// without a token, is what AWS asks estates to turn off.)
    async fn instance_metadata_once(&self) -> Result<Credentials, ProviderError> {
        let base = self
            .env
            .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|| IMDS.to_owned());
        let base = base.trim_end_matches('/');
        let what = "the instance metadata service";
        let token = self
            .imds
            .put(format!("{base}/latest/api/token"))
            .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
            .send()
            .await
            .map_err(|e| transport(what, &e))?;
        if !token.status().is_success() {
            return Err(ProviderError::Credentials(format!(
                "{what}: HTTP {} for a session token",
                token.status().as_u16()
            )));
        }
        let token = token.text().await.map_err(|e| transport(what, &e))?;
        let roles = self
            .imds
            .get(format!("{base}/latest/meta-data/iam/security-credentials/"))
            .header("x-aws-ec2-metadata-token", &token)
            .send()
            .await
            .map_err(|e| transport(what, &e))?;
        if !roles.status().is_success() {
            return Err(ProviderError::Credentials(format!(
                "{what}: HTTP {}: the instance has no role",
                roles.status().as_u16()
            )));
        }
        let roles = roles.text().await.map_err(|e| transport(what, &e))?;
        let role = roles
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .filter(|r| {
                r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
            })
            .ok_or_else(|| ProviderError::Credentials(format!("{what}: no role named")))?
            .to_owned();
        let request = self
            .imds
            .get(format!(
                "{base}/latest/meta-data/iam/security-credentials/{role}"
            ))
            .header("x-aws-ec2-metadata-token", &token);
        from_json(&fetch_json(what, request).await?)
    }
}

/// The section name a profile has in the config file.
fn config_section(profile: &str) -> String {
    if profile == "default" {
        "default".to_owned()
    } else {
        format!("profile {profile}")
    }
}

/// A file's text; `None` when it does not exist.
fn read_small(path: &std::path::Path) -> std::io::Result<Option<String>> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
        Ok(m) if m.len() > MAX_FILE => Err(std::io::Error::other("larger than 1 MiB")),
        Ok(_) => std::fs::read_to_string(path).map(Some),
    }
}

/// The keys of `[section]` in an INI text as the shared files write it (`key = value`,
/// `#` and `;` comments, keys lowercased; indented lines belong to a nested block and
/// are skipped).
fn ini_section(text: &str, section: &str) -> Option<HashMap<String, String>> {
    let mut out: Option<HashMap<String, String>> = None;
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.split_whitespace().collect::<Vec<_>>().join(" ") == section;
            if inside {
                out.get_or_insert_with(HashMap::new);
            }
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.get_or_insert_with(HashMap::new)
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    out
}

fn transport(what: &str, e: &reqwest::Error) -> ProviderError {
    ProviderError::Credentials(format!("{what}: {}", super::super::short_error(e)))
}

async fn fetch_json(
    what: &str,
    request: reqwest::RequestBuilder,
) -> Result<serde_json::Value, ProviderError> {
    super::super::get_json(what, request)
        .await
        .map_err(|e| match e {
            // Credential endpoints' bodies are not for the log.
            ProviderError::Status { what, status, .. } => {
                ProviderError::Credentials(format!("{what} answered HTTP {status}"))
            }
            ProviderError::Credentials(m) => ProviderError::Credentials(m),
            other => ProviderError::Credentials(other.to_string()),
        })
}

/// The JSON the container endpoint and IMDS answer with.
fn from_json(json: &serde_json::Value) -> Result<Credentials, ProviderError> {
    let field = |k: &str| {
        json[k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ProviderError::Credentials(format!("the answer has no {k}")))
    };
    Ok(Credentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: field("Token").ok(),
        expires: match field("Expiration") {
            Ok(t) => Some(parse_time(&t)?),
            Err(_) => None,
        },
    })
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, ProviderError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ProviderError::Credentials(format!("expiry {s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(env: Environment, profile: Option<&str>) -> Chain {
        Chain::new(
            env,
            profile.map(str::to_owned),
            "eu-west-1".into(),
            Duration::from_secs(2),
        )
        .unwrap()
    }

    fn dir(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "flowlens-aws-{label}-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        std::fs::create_dir_all(d.join(".aws")).unwrap();
        d
    }

    #[tokio::test]
    async fn the_environment_comes_first_then_the_profile_of_the_shared_files() {
        let home = dir("profile");
        std::fs::write(
            home.join(".aws/credentials"),
            "# comment\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n\n\
             [ops]\naws_access_key_id=AKIDOPS\naws_secret_access_key=s2\naws_session_token = t2\n",
        )
        .unwrap();
        std::fs::write(
            home.join(".aws/config"),
            "[default]\nregion = eu-west-1\n[profile assumer]\nrole_arn = arn:aws:iam::1:role/r\n\
             source_profile = default\n[profile configured]\naws_access_key_id = AKIDCFG\n\
             aws_secret_access_key = s3\ns3 =\n  max_concurrent_requests = 2\n",
        )
        .unwrap();
        let env = |vars: &[(&str, &str)]| Environment::Fixed {
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            home: Some(home.clone()),
        };
        let (source, c) = chain(
            env(&[
                ("AWS_ACCESS_KEY_ID", "AKIDENV"),
                ("AWS_SECRET_ACCESS_KEY", "s0"),
            ]),
            None,
        )
        .credentials()
        .await
        .unwrap();
        assert_eq!(
            (source, c.access_key_id.as_str()),
            (Source::Environment, "AKIDENV")
        );
        let (source, c) = chain(env(&[]), None).credentials().await.unwrap();
        assert_eq!(
            (source, c.access_key_id.as_str()),
            (Source::Profile, "AKIDDEFAULT")
        );
        let c = chain(env(&[("AWS_PROFILE", "ops")]), None)
            .credentials()
            .await
            .unwrap()
            .1;
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("AKIDOPS", Some("t2"))
        );
        // The configured profile wins over AWS_PROFILE; keys in the config file count.
        let c = chain(env(&[("AWS_PROFILE", "ops")]), Some("configured"))
            .credentials()
            .await
            .unwrap()
            .1;
        assert_eq!(c.access_key_id, "AKIDCFG");
        let e = chain(env(&[]), Some("assumer"))
            .credentials()
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("uses role_arn, source_profile, which"),
            "{e}"
        );
        let e = chain(env(&[]), Some("missing"))
            .credentials()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("\"missing\" is in neither"), "{e}");
        assert!(!format!("{c:?}").contains("s3"), "{c:?}");
        std::fs::remove_dir_all(home).unwrap();
    }

    /// A loopback instance metadata service (`IMDSv2`: a session token first, then the
    /// role, then its credentials, each checked) and container endpoint.
    async fn metadata_server() -> String {
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::{get, put};
        let creds = || {
            serde_json::json!({
                "Code": "Success",
                "AccessKeyId": "ASIAROLE",
                "SecretAccessKey": "role-secret",
                "Token": "role-session",
                "Expiration": (Utc::now() + chrono::TimeDelta::hours(6)).to_rfc3339(),
            })
            .to_string()
        };
        let token_ok = |h: &HeaderMap| {
            h.get("x-aws-ec2-metadata-token")
                .is_some_and(|v| v == "imds-session")
        };
        let app = axum::Router::new()
            .route(
                "/latest/api/token",
                put(|h: HeaderMap| async move {
                    if h.contains_key("x-aws-ec2-metadata-token-ttl-seconds") {
                        (StatusCode::OK, "imds-session".to_owned())
                    } else {
                        (StatusCode::BAD_REQUEST, String::new())
                    }
                }),
            )
            .route(
                "/latest/meta-data/iam/security-credentials/",
                get(move |h: HeaderMap| async move {
                    if token_ok(&h) {
                        (StatusCode::OK, "flowlens-node-role\n".to_owned())
                    } else {
                        (StatusCode::UNAUTHORIZED, String::new())
                    }
                }),
            )
            .route(
                "/latest/meta-data/iam/security-credentials/flowlens-node-role",
                get(move |h: HeaderMap| async move {
                    if token_ok(&h) {
                        (StatusCode::OK, creds())
                    } else {
                        (StatusCode::UNAUTHORIZED, String::new())
                    }
                }),
            )
            .route(
                "/v2/credentials",
                get(move |h: HeaderMap| async move {
                    if h.get("authorization").is_some_and(|v| v == "pod-token") {
                        (StatusCode::OK, creds())
                    } else {
                        (StatusCode::FORBIDDEN, "no".to_owned())
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    #[tokio::test]
    async fn the_instance_role_and_the_container_endpoint_give_temporary_credentials() {
        let url = metadata_server().await;
        let (source, c) = chain(
            Environment::fixed([("AWS_EC2_METADATA_SERVICE_ENDPOINT", url.as_str())]),
            None,
        )
        .credentials()
        .await
        .unwrap();
        assert_eq!(source, Source::InstanceMetadata);
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("ASIAROLE", Some("role-session"))
        );
        assert!(c.expires.is_some());
        // EKS Pod Identity: a full URI on loopback and the agent's token from a file.
        let home = dir("container");
        let token = home.join("token");
        std::fs::write(&token, "pod-token\n").unwrap();
        let full = format!("{url}/v2/credentials");
        let env = |file: &str| {
            Environment::fixed([
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", full.as_str()),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", file),
            ])
        };
        let (source, c) = chain(env(token.to_str().unwrap()), None)
            .credentials()
            .await
            .unwrap();
        assert_eq!(
            (source, c.secret_access_key.as_str()),
            (Source::Container, "role-secret")
        );
        // A wrong token: the endpoint's 403, without its body.
        std::fs::write(&token, "stolen").unwrap();
        let e = chain(env(token.to_str().unwrap()), None)
            .credentials()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("HTTP 403"), "{e}");
        std::fs::remove_dir_all(home).unwrap();
    }

    #[tokio::test]
    async fn with_nothing_configured_and_metadata_disabled_the_error_says_where_it_looked() {
        let e = chain(
            Environment::fixed([("AWS_EC2_METADATA_DISABLED", "true")]),
            None,
        )
        .credentials()
        .await
        .unwrap_err();
        assert!(e.to_string().contains("no AWS credentials"), "{e}");
        let e = chain(
            Environment::fixed([(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://198.51.100.7/creds",
            )]),
            None,
        )
        .credentials()
        .await
        .unwrap_err();
        assert!(e.to_string().contains("http only to loopback"), "{e}");
    }
}
