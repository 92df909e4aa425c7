//! Google Cloud: `instances.aggregatedList` of each project (every zone in one paged
//! list), each network interface's internal and external addresses (IPv4 and IPv6)
//! mapped to its instance. Credentials as Google's libraries find them: a
//! service-account key (`credentials_file` or `GOOGLE_APPLICATION_CREDENTIALS`), whose
//! signed JWT is exchanged at the key's `token_uri`, else the metadata server.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{Item, ProviderError, get_json, last_segment};
use crate::inventory::config::GcpConfig;

/// The one scope the listing needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/compute.readonly";
/// Pages followed per project at most (500 instances a page).
const MAX_PAGES: usize = 2000;

/// A service-account key file, the fields used.
#[derive(Deserialize)]
struct ServiceAccountKey {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    token_uri: String,
}

/// Where tokens come from.
enum Credentials {
    Key(ServiceAccountKey),
    Metadata,
}

/// The GCP provider.
pub struct Gcp {
    http: reqwest::Client,
    config: GcpConfig,
    credentials: Credentials,
    /// The last token and when to stop using it (a minute before it expires).
    token: tokio::sync::Mutex<Option<(String, tokio::time::Instant)>>,
}

impl Gcp {
    /// What this provider lists, for the shared cache's key.
    #[must_use]
    pub fn scope(&self) -> String {
        format!(
            "{:?} {}",
            self.config.projects, self.config.compute_endpoint
        )
    }

    /// A provider for `config`, its key file read now (a bad one is an error at start,
    /// not a failing refresh every five minutes).
    ///
    /// # Errors
    /// An unreadable key file, or an HTTP client that cannot start.
    pub fn new(config: GcpConfig) -> Result<Self, ProviderError> {
        let file = if config.credentials_file.is_empty() {
            std::env::var("GOOGLE_APPLICATION_CREDENTIALS").unwrap_or_default()
        } else {
            config.credentials_file.clone()
        };
        let credentials = if file.is_empty() {
            Credentials::Metadata
        } else {
            let text = std::fs::read(&file)
                .map_err(|e| ProviderError::Credentials(format!("{file}: {e}")))?;
            let key: ServiceAccountKey = serde_json::from_slice(&text).map_err(|e| {
                ProviderError::Credentials(format!("{file}: not a service-account key: {e}"))
            })?;
            Credentials::Key(key)
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_seconds))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProviderError::Credentials(e.to_string()))?;
        Ok(Self {
            http,
            config,
            credentials,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// An access token for [`SCOPE`], kept until a minute before it expires.
    async fn token(&self) -> Result<String, ProviderError> {
        let mut kept = self.token.lock().await;
        if let Some((t, until)) = kept.as_ref()
            && tokio::time::Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let answer = match &self.credentials {
            Credentials::Key(key) => {
                let now = chrono::Utc::now().timestamp();
                let claims = serde_json::json!({
                    "iss": key.client_email, "scope": SCOPE, "aud": key.token_uri,
                    "iat": now, "exp": now + 3600,
                });
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
                header.kid.clone_from(&key.private_key_id);
                let pem = key.private_key.clone();
                // RSA signing is CPU work: off the runtime's only worker.
                let assertion = tokio::task::spawn_blocking(move || {
                    let signer =
                        jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
                            ProviderError::Credentials(format!("the key's private_key: {e}"))
                        })?;
                    jsonwebtoken::encode(&header, &claims, &signer)
                        .map_err(|e| ProviderError::Credentials(format!("signing: {e}")))
                })
                .await
                .map_err(|e| ProviderError::Credentials(format!("signing: {e}")))??;
                let request = self.http.post(&key.token_uri).form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.as_str()),
                ]);
                get_json("the token endpoint", request).await
            }
            Credentials::Metadata => {
                let url = format!(
                    "{}/computeMetadata/v1/instance/service-accounts/default/token",
                    self.config.metadata_endpoint
                );
                let request = self.http.get(url).header("Metadata-Flavor", "Google");
                get_json("the metadata server", request).await
            }
        };
        let answer = answer.map_err(|e| match e {
            ProviderError::Status { status, what, .. } => {
                // The body may repeat the assertion: not kept.
                ProviderError::Credentials(format!("{what} answered HTTP {status}"))
            }
            other => other,
        })?;
        let token = answer["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                ProviderError::Credentials("no access_token in the answer".to_owned())
            })?;
        // A lifetime from outside, bounded: an hour at most, a minute in reserve.
        let life = answer["expires_in"].as_u64().unwrap_or(0).clamp(60, 3600) - 60;
        *kept = Some((
            token.clone(),
            tokio::time::Instant::now() + Duration::from_secs(life),
        ));
        Ok(token)
    }

    /// Forgets the kept token (the API refused it).
    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    /// Every address of every instance of every configured project.
    ///
    /// # Errors
    /// The first request that failed (the refresh keeps the last snapshot).
    pub async fn snapshot(&self) -> Result<Vec<(IpAddr, Item)>, ProviderError> {
        let token = self.token().await?;
        let mut out = Vec::new();
        for project in &self.config.projects {
            let url = format!(
                "{}/compute/v1/projects/{project}/aggregated/instances",
                self.config.compute_endpoint
            );
            let mut page_token: Option<String> = None;
            for page in 0.. {
                if page >= MAX_PAGES {
                    return Err(ProviderError::TooManyPages(MAX_PAGES));
                }
                let mut query = vec![("maxResults", "500".to_owned())];
                if let Some(t) = &page_token {
                    query.push(("pageToken", t.clone()));
                }
                let request = self.http.get(&url).bearer_auth(&token).query(&query);
                let answer = match get_json("instances.aggregatedList", request).await {
                    Err(e @ ProviderError::Status { status: 401, .. }) => {
                        // Revoked or expired early: the next refresh asks for a new one.
                        self.forget_token().await;
                        return Err(e);
                    }
                    other => other?,
                };
                out.extend(addresses(project, &answer));
                page_token = answer["nextPageToken"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned);
                if page_token.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// The addresses of one `aggregatedList` page: `items` maps a scope (`zones/...`) to
/// `{"instances": [...]}` or `{"warning": ...}` (a zone without instances).
pub fn addresses(project: &str, page: &Value) -> Vec<(IpAddr, Item)> {
    let mut out = Vec::new();
    let Some(scopes) = page["items"].as_object() else {
        return out;
    };
    for scope in scopes.values() {
        for instance in scope["instances"].as_array().into_iter().flatten() {
            let zone = instance["zone"].as_str().map(last_segment);
            let item = Item {
                provider: "gcp".to_owned(),
                kind: "instance".to_owned(),
                id: match &instance["id"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
                name: instance["name"].as_str().map(str::to_owned),
                account: Some(project.to_owned()),
                // A zone is its region and a letter: europe-west1-b.
                region: zone
                    .as_deref()
                    .and_then(|z| z.rsplit_once('-'))
                    .map(|(r, _)| r.to_owned()),
                zone: zone.clone(),
                instance_type: instance["machineType"].as_str().map(last_segment),
                tags: instance["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect(),
                ..Item::default()
            };
            for nic in instance["networkInterfaces"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let mut item = item.clone();
                item.vpc = nic["network"].as_str().map(last_segment);
                item.subnet = nic["subnetwork"].as_str().map(last_segment);
                let mut ips: Vec<&str> = Vec::new();
                ips.extend(nic["networkIP"].as_str());
                ips.extend(nic["ipv6Address"].as_str());
                for ac in nic["accessConfigs"].as_array().into_iter().flatten() {
                    ips.extend(ac["natIP"].as_str());
                }
                for ac in nic["ipv6AccessConfigs"].as_array().into_iter().flatten() {
                    ips.extend(ac["externalIpv6"].as_str());
                }
                for ip in ips {
                    if let Ok(ip) = ip.parse::<IpAddr>() {
                        out.push((ip, item.clone()));
                    }
                }
            }
        }
    }
    out
}
