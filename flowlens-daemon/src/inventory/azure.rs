//! Azure: one Resource Graph query joining network interfaces with the VMs they are
//! attached to and the public IPs they carry, paged with `$skipToken`; a token from
//! Entra ID by a client secret, a federated token (AKS workload identity) or the
//! managed identity (the identity needs the Reader role on the subscriptions).

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Item, ProviderError, get_json, last_segment};
use crate::inventory::config::AzureConfig;
use crate::notify::config::resolve;

/// Resource Graph's API version (the one documenting `$skipToken` and
/// `resultFormat: objectArray`).
pub const API_VERSION: &str = "2022-10-01";
/// Rows a page at most (Resource Graph's maximum).
const PAGE: u32 = 1000;
const MAX_PAGES: usize = 2000;

/// Each NIC's IP configurations, with its VM (if attached) and public IP (if any).
pub const QUERY: &str = "Resources
| where type =~ 'microsoft.network/networkinterfaces'
| mv-expand ipconfig = properties.ipConfigurations
| project nicId = id, nicName = name, subscriptionId, location, tags,
    vmId = tolower(tostring(properties.virtualMachine.id)),
    privateIp = tostring(ipconfig.properties.privateIPAddress),
    publicIpId = tolower(tostring(ipconfig.properties.publicIPAddress.id)),
    subnetId = tostring(ipconfig.properties.subnet.id)
| join kind=leftouter (Resources
    | where type =~ 'microsoft.compute/virtualmachines'
    | project vmId = tolower(id), vmName = name, vmSize = tostring(properties.hardwareProfile.vmSize),
        zones, vmTags = tags) on vmId
| join kind=leftouter (Resources
    | where type =~ 'microsoft.network/publicipaddresses'
    | project publicIpId = tolower(id), publicIp = tostring(properties.ipAddress)) on publicIpId
| project id = strcat(nicId, '#', privateIp), nicId, nicName, subscriptionId, location, tags,
    vmId, vmName, vmSize, zones, vmTags, privateIp, publicIp, subnetId
| order by nicId asc, privateIp asc";

/// The Azure provider.
pub struct Azure {
    http: reqwest::Client,
    /// For the instance metadata service: never through a proxy, two seconds (off
    /// Azure nothing answers there, and a refresh must not wait for it).
    imds: reqwest::Client,
    config: AzureConfig,
}

impl Azure {
    /// What this provider lists, for the shared cache's key.
    #[must_use]
    pub fn scope(&self) -> String {
        format!(
            "{:?} {} {}",
            self.config.subscriptions, self.config.tenant_id, self.config.management_endpoint
        )
    }

    /// A provider for `config`; credentials are read from the environment at each
    /// refresh (rotated secrets take effect without a restart).
    ///
    /// # Errors
    /// When the HTTP client cannot start.
    pub fn new(config: AzureConfig) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_seconds))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProviderError::Credentials(e.to_string()))?;
        let imds = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProviderError::Credentials(e.to_string()))?;
        Ok(Self { http, imds, config })
    }

    /// A token from the first source configured, in the order of Azure's
    /// `DefaultAzureCredential`: a client secret, a federated token (workload
    /// identity), the managed identity (the instance metadata service). Read again
    /// at each refresh: rotated secrets and tokens take effect without a restart.
    async fn token(&self) -> Result<String, ProviderError> {
        let c = &self.config;
        // An unset `${VAR}` is a source not configured, not an error.
        let optional = |v: &str| resolve(v).ok().filter(|s| !s.is_empty());
        let scope = format!("{}/.default", c.management_endpoint);
        let mut managed = false;
        let request = if let Some(secret) = optional(&c.client_secret) {
            let (tenant, client_id) = self.app()?;
            self.http
                .post(format!("{}/{tenant}/oauth2/v2.0/token", c.authority_host))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", secret.as_str()),
                    ("scope", scope.as_str()),
                ])
        } else if let Some(file) = optional(&c.federated_token_file) {
            let (tenant, client_id) = self.app()?;
            let assertion = std::fs::read_to_string(&file)
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty() && t.len() < 64 * 1024)
                .ok_or_else(|| {
                    ProviderError::Credentials(format!(
                        "enrichment.cloud.azure.federated_token_file {file}: unreadable or empty"
                    ))
                })?;
            self.http
                .post(format!("{}/{tenant}/oauth2/v2.0/token", c.authority_host))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.as_str()),
                    ("scope", scope.as_str()),
                ])
        } else {
            // The managed identity; a user-assigned one is named by its client id.
            let mut query = vec![
                ("api-version", "2018-02-01".to_owned()),
                ("resource", format!("{}/", c.management_endpoint)),
            ];
            if let Some(id) = optional(&c.client_id) {
                query.push(("client_id", id));
            }
            managed = true;
            self.imds
                .get(format!(
                    "{}/metadata/identity/oauth2/token",
                    c.metadata_endpoint
                ))
                .query(&query)
                .header("Metadata", "true")
        };
        let answer = get_json("Entra ID's token endpoint", request)
            .await
            .map_err(|e| match e {
                // Entra ID's error bodies describe the request; keep only the status.
                ProviderError::Status { status, what, .. } => {
                    ProviderError::Credentials(format!("{what} answered HTTP {status}"))
                }
                ProviderError::Transport { message, .. } if managed => {
                    ProviderError::Credentials(format!(
                        "no Azure credentials: no client secret, no federated token, and the \
                         managed identity's endpoint did not answer ({message})"
                    ))
                }
                other => other,
            })?;
        answer["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ProviderError::Credentials("no access_token in the answer".to_owned()))
    }

    /// The app registration's tenant and client id (for a secret or a federated
    /// token).
    fn app(&self) -> Result<(String, String), ProviderError> {
        let c = &self.config;
        let field = |key: &str, v: &str| {
            resolve(v).map_err(|e| {
                ProviderError::Credentials(format!("enrichment.cloud.azure.{key}: {e}"))
            })
        };
        let tenant = field("tenant_id", &c.tenant_id)?;
        if tenant.is_empty()
            || !tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(ProviderError::Credentials(
                "enrichment.cloud.azure.tenant_id is not a tenant id or domain".to_owned(),
            ));
        }
        Ok((tenant, field("client_id", &c.client_id)?))
    }

    /// Every NIC address of the subscriptions.
    ///
    /// # Errors
    /// The first request that failed.
    pub async fn snapshot(&self) -> Result<Vec<(IpAddr, Item)>, ProviderError> {
        let token = self.token().await?;
        let url = format!(
            "{}/providers/Microsoft.ResourceGraph/resources",
            self.config.management_endpoint
        );
        let mut out = Vec::new();
        let mut skip: Option<String> = None;
        for page in 0.. {
            if page >= MAX_PAGES {
                return Err(ProviderError::TooManyPages(MAX_PAGES));
            }
            let mut options = json!({"$top": PAGE, "resultFormat": "objectArray"});
            if let Some(s) = &skip {
                options["$skipToken"] = s.clone().into();
            }
            let mut body = json!({"query": QUERY, "options": options});
            if !self.config.subscriptions.is_empty() {
                body["subscriptions"] = json!(self.config.subscriptions);
            }
            let request = self
                .http
                .post(&url)
                .query(&[("api-version", API_VERSION)])
                .bearer_auth(&token)
                .json(&body);
            let answer = get_json("Resource Graph", request).await?;
            let rows = answer["data"]
                .as_array()
                .ok_or_else(|| ProviderError::Answer {
                    what: "Resource Graph".to_owned(),
                    message: "no data array (resultFormat objectArray)".to_owned(),
                })?;
            out.extend(rows.iter().flat_map(addresses));
            skip = answer["$skipToken"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            if skip.is_none() {
                // Truncated without a way on: the snapshot would be partial.
                let truncated = matches!(&answer["resultTruncated"], Value::Bool(true))
                    || answer["resultTruncated"].as_str() == Some("true");
                if truncated {
                    return Err(ProviderError::Answer {
                        what: "Resource Graph".to_owned(),
                        message: "the result is truncated and has no $skipToken".to_owned(),
                    });
                }
                break;
            }
        }
        Ok(out)
    }
}

/// The addresses of one row of [`QUERY`]: its private IP and its public IP, both the
/// VM's when the NIC is attached to one, else the NIC's.
pub fn addresses(row: &Value) -> Vec<(IpAddr, Item)> {
    let s = |k: &str| row[k].as_str().filter(|v| !v.is_empty()).map(str::to_owned);
    let vm = s("vmId").filter(|_| s("vmName").is_some());
    // .../virtualNetworks/{vnet}/subnets/{subnet}
    let subnet_id = s("subnetId").unwrap_or_default();
    let mut parts = subnet_id.split('/');
    let vnet = parts
        .by_ref()
        .skip_while(|p| !p.eq_ignore_ascii_case("virtualNetworks"))
        .nth(1)
        .map(str::to_owned);
    let mut tags: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for t in [&row["tags"], &row["vmTags"]] {
        for (k, v) in t.as_object().into_iter().flatten() {
            if let Some(v) = v.as_str() {
                tags.insert(k.clone(), v.to_owned());
            }
        }
    }
    let item = Item {
        provider: "azure".to_owned(),
        kind: if vm.is_some() { "instance" } else { "nic" }.to_owned(),
        id: vm.clone().or_else(|| s("nicId")).unwrap_or_default(),
        name: if vm.is_some() {
            s("vmName")
        } else {
            s("nicName")
        },
        account: s("subscriptionId"),
        region: s("location"),
        zone: row["zones"]
            .as_array()
            .and_then(|z| z.first())
            .and_then(Value::as_str)
            .map(str::to_owned),
        instance_type: s("vmSize"),
        vpc: vnet,
        subnet: s("subnetId").map(|id| last_segment(&id)),
        tags,
        ..Item::default()
    };
    ["privateIp", "publicIp"]
        .into_iter()
        .filter_map(|k| s(k)?.parse::<IpAddr>().ok())
        .map(|ip| (ip, item.clone()))
        .collect()
}
