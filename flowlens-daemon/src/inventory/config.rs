//! `enrichment.cloud`: which inventories to read, how often, with which credentials.
//! Secrets are `${VAR}` (read from the environment when the provider starts) and are
//! redacted by `check-config` by their key names.

use serde::{Deserialize, Serialize};

/// `enrichment.cloud` (DESIGN.md §3.2).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CloudConfig {
    /// Also create an asset (`discovery_source: cloud_api`) for each cloud instance,
    /// load balancer, NIC, Kubernetes node or service the inventories list that no flow
    /// has shown yet: idle machines appear on the map. Pods are never created this
    /// way (they come and go by the thousand). Off by default: an estate's every
    /// instance becomes an asset.
    pub create_assets: bool,
    pub aws: AwsConfig,
    pub azure: AzureConfig,
    pub gcp: GcpConfig,
    pub kubernetes: KubernetesConfig,
}

/// `enrichment.cloud.kubernetes`: pods, services and nodes of one cluster, watched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Watch the cluster.
    pub enabled: bool,
    /// The cluster's name, written to the assets' `cluster`.
    pub cluster: String,
    /// A kubeconfig file; empty: in the cluster (the pod's service account), else
    /// `KUBECONFIG`, else `~/.kube/config`.
    pub kubeconfig: String,
    /// The kubeconfig's context to use; empty: its current context.
    pub context: String,
    /// Seconds between two full publications of the stores (changes are published
    /// within seconds of the watch delivering them).
    pub refresh_interval_seconds: u64,
    /// One item per workload instead of per pod: a Deployment's replicas become one
    /// identity (name, `cloud_instance_id` `<namespace>/<kind>/<name>`), so the map
    /// shows the workload, not its pods (see docs/inventory.md for the trade-off).
    pub group_pods_by_workload: bool,
    /// Seconds the first lists may take.
    pub timeout_seconds: u64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            cluster: String::new(),
            kubeconfig: String::new(),
            context: String::new(),
            refresh_interval_seconds: 300,
            group_pods_by_workload: false,
            timeout_seconds: 30,
        }
    }
}

/// `enrichment.cloud.aws`: each region's network interfaces and instances through the
/// EC2 API, with credentials found where AWS's SDKs find them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AwsConfig {
    /// Read the AWS inventory.
    pub enabled: bool,
    /// Regions to list (at least one when enabled).
    pub regions: Vec<String>,
    /// Seconds between two snapshots (plus up to a tenth at random).
    pub refresh_interval_seconds: u64,
    /// An EC2 endpoint instead of AWS's: `{region}` in it is replaced by each region
    /// (VPC endpoints are per region); without it, every region is asked there (a
    /// test server). Empty: `AWS_ENDPOINT_URL_EC2`, else `AWS_ENDPOINT_URL`, else the
    /// region's own.
    pub endpoint_url: Option<String>,
    /// The shared files' profile to take keys from; empty: `AWS_PROFILE`, else
    /// `default` (after the environment's keys, before a web identity, the container
    /// endpoint and the instance's role).
    pub profile: String,
    /// Seconds one request may take.
    pub timeout_seconds: u64,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            regions: Vec::new(),
            refresh_interval_seconds: 300,
            endpoint_url: None,
            profile: String::new(),
            timeout_seconds: 30,
        }
    }
}

/// `enrichment.cloud.azure`: VMs, NICs and public IPs through one Resource Graph
/// query, with an Entra ID token from the standard sources: a client secret, a
/// federated token (AKS workload identity), else the managed identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AzureConfig {
    /// Read the Azure inventory.
    pub enabled: bool,
    /// Subscriptions to query (empty: every one the identity can read).
    pub subscriptions: Vec<String>,
    /// Seconds between two snapshots (plus up to a tenth at random).
    pub refresh_interval_seconds: u64,
    /// The directory (tenant) id; `${VAR}` reads the environment (default
    /// `${AZURE_TENANT_ID}`, the Azure SDKs' variable).
    pub tenant_id: String,
    /// The app registration's client id (default `${AZURE_CLIENT_ID}`).
    pub client_id: String,
    /// Its secret (default `${AZURE_CLIENT_SECRET}`); unset or empty: the next source.
    pub client_secret: String,
    /// A federated token file (default `${AZURE_FEDERATED_TOKEN_FILE}`, which AKS
    /// workload identity sets), exchanged as a client assertion; unset or empty: the
    /// managed identity.
    pub federated_token_file: String,
    /// The instance metadata service the managed identity's token comes from.
    pub metadata_endpoint: String,
    /// Entra ID's host (sovereign clouds have their own).
    pub authority_host: String,
    /// Azure Resource Manager's endpoint.
    pub management_endpoint: String,
    /// Seconds one request may take.
    pub timeout_seconds: u64,
}

impl Default for AzureConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            subscriptions: Vec::new(),
            refresh_interval_seconds: 300,
            tenant_id: "${AZURE_TENANT_ID}".into(),
            client_id: "${AZURE_CLIENT_ID}".into(),
            client_secret: "${AZURE_CLIENT_SECRET}".into(),
            federated_token_file: "${AZURE_FEDERATED_TOKEN_FILE}".into(),
            metadata_endpoint: "http://169.254.169.254".into(),
            authority_host: "https://login.microsoftonline.com".into(),
            management_endpoint: "https://management.azure.com".into(),
            timeout_seconds: 30,
        }
    }
}

/// `enrichment.cloud.gcp`: `instances.aggregatedList` of each project, with a token
/// from a service-account key (`credentials_file`, else `GOOGLE_APPLICATION_CREDENTIALS`)
/// or, on Google Cloud, the metadata server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GcpConfig {
    /// Read the Google Cloud inventory.
    pub enabled: bool,
    /// Project ids to list (at least one when enabled).
    pub projects: Vec<String>,
    /// Seconds between two snapshots (plus up to a tenth at random).
    pub refresh_interval_seconds: u64,
    /// A service-account key file (JSON); empty: `GOOGLE_APPLICATION_CREDENTIALS`,
    /// else the metadata server.
    pub credentials_file: String,
    /// The Compute Engine API's endpoint.
    pub compute_endpoint: String,
    /// The metadata server (used only without a key file).
    pub metadata_endpoint: String,
    /// Seconds one request may take.
    pub timeout_seconds: u64,
}

impl Default for GcpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            projects: Vec::new(),
            refresh_interval_seconds: 300,
            credentials_file: String::new(),
            compute_endpoint: "https://compute.googleapis.com".into(),
            metadata_endpoint: "http://metadata.google.internal".into(),
            timeout_seconds: 30,
        }
    }
}

impl CloudConfig {
    /// What is wrong with the section.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.aws.enabled && self.aws.regions.is_empty() {
            p.push("enrichment.cloud.aws.regions: name at least one region".to_owned());
        }
        for region in &self.aws.regions {
            // us-east-1, eu-central-2, us-gov-west-1, cn-north-1: also what keeps them
            // safe in a host name.
            let ok = (9..=32).contains(&region.len())
                && region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && region.contains('-')
                && region.bytes().last().is_some_and(|b| b.is_ascii_digit());
            if !ok {
                p.push(format!(
                    "enrichment.cloud.aws.regions: {region:?} is not a region name"
                ));
            }
        }
        for (key, interval) in [
            ("aws", self.aws.refresh_interval_seconds),
            ("azure", self.azure.refresh_interval_seconds),
            ("gcp", self.gcp.refresh_interval_seconds),
            ("kubernetes", self.kubernetes.refresh_interval_seconds),
        ] {
            if interval < 30 {
                p.push(format!(
                    "enrichment.cloud.{key}.refresh_interval_seconds must be at least 30 \
                     (each refresh lists the whole inventory)"
                ));
            }
        }
        for (key, t) in [
            ("aws", self.aws.timeout_seconds),
            ("azure", self.azure.timeout_seconds),
            ("gcp", self.gcp.timeout_seconds),
            ("kubernetes", self.kubernetes.timeout_seconds),
        ] {
            if !(1..=600).contains(&t) {
                p.push(format!(
                    "enrichment.cloud.{key}.timeout_seconds must be between 1 and 600"
                ));
            }
        }
        let cluster = &self.kubernetes.cluster;
        if self.kubernetes.enabled && cluster.is_empty() {
            p.push(
                "enrichment.cloud.kubernetes.cluster: name the cluster (assets say which one \
                 they run in)"
                    .to_owned(),
            );
        }
        if cluster.len() > 128 || cluster.chars().any(char::is_control) {
            p.push(
                "enrichment.cloud.kubernetes.cluster: at most 128 characters, no control \
                 characters"
                    .to_owned(),
            );
        }
        if self.gcp.enabled && self.gcp.projects.is_empty() {
            p.push("enrichment.cloud.gcp.projects: name at least one project".to_owned());
        }
        for project in &self.gcp.projects {
            // Project ids: 6-30 lowercase letters, digits and hyphens (also what keeps
            // them safe in a URL path).
            let ok = (6..=30).contains(&project.len())
                && project
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                p.push(format!(
                    "enrichment.cloud.gcp.projects: {project:?} is not a project id"
                ));
            }
        }
        for s in &self.azure.subscriptions {
            if uuid::Uuid::parse_str(s).is_err() {
                p.push(format!(
                    "enrichment.cloud.azure.subscriptions: {s:?} is not a subscription id"
                ));
            }
        }
        // `{region}` is a placeholder (one VPC endpoint per region).
        let aws_endpoint = self
            .aws
            .endpoint_url
            .clone()
            .unwrap_or_default()
            .replace("{region}", "us-east-1");
        for (key, url) in [
            ("aws.endpoint_url", &aws_endpoint),
            ("azure.authority_host", &self.azure.authority_host),
            ("azure.management_endpoint", &self.azure.management_endpoint),
            ("azure.metadata_endpoint", &self.azure.metadata_endpoint),
            ("gcp.compute_endpoint", &self.gcp.compute_endpoint),
            ("gcp.metadata_endpoint", &self.gcp.metadata_endpoint),
        ] {
            if url.is_empty() && key == "aws.endpoint_url" {
                continue;
            }
            if reqwest::Url::parse(url).map_or(true, |u| {
                !matches!(u.scheme(), "http" | "https")
                    || u.host().is_none()
                    || (key == "aws.endpoint_url" && (u.path() != "/" || u.query().is_some()))
            }) || url.ends_with('/')
            {
                p.push(format!(
                    "enrichment.cloud.{key}: {url:?} is not scheme://host[:port] without a \
                     trailing '/'"
                ));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_needs_regions_named_as_aws_names_them() {
        let mut c = CloudConfig::default();
        c.aws.enabled = true;
        assert_eq!(
            c.problems(),
            ["enrichment.cloud.aws.regions: name at least one region"]
        );
        c.aws.regions = ["us-east-1", "eu-central-2", "us-gov-west-1", "cn-north-1"]
            .map(str::to_owned)
            .to_vec();
        c.aws.endpoint_url = Some("http://127.0.0.1:5000".into());
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        c.aws.endpoint_url = Some("https://vpce-0a1b.ec2.{region}.vpce.amazonaws.com".into());
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        c.aws.endpoint_url = Some("http://127.0.0.1:5000/ec2".into());
        assert_eq!(c.problems().len(), 1, "{:?}", c.problems());
        c.aws.endpoint_url = None;
        c.aws.regions = vec!["eu-west-1.evil.example/".into(), "EU-WEST-1".into()];
        assert_eq!(c.problems().len(), 2, "{:?}", c.problems());
    }
}
