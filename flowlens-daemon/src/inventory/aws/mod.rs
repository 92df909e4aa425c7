//! AWS: each region's `DescribeNetworkInterfaces` (every address in a VPC is on an
//! ENI: instances, load balancers, RDS, Lambda, NAT gateways, endpoints, each told
//! apart by its `InterfaceType`, attachment and description) and `DescribeInstances`
//! (names, types and tags of the instances ENIs are attached to), paged with
//! `NextToken`. Private, public and IPv6 addresses.
//!
//! The EC2 Query API is called directly, signed with `SigV4` ([`sigv4`]), rather than
//! through `aws-sdk-ec2`: the SDK's EC2 crate alone took more than four minutes to
//! build on the two-core machines this is built and tested on, for two read-only
//! calls. Credentials are found where the SDKs find them ([`credentials`]), and the
//! endpoint can be overridden as with the SDKs (`AWS_ENDPOINT_URL_EC2`,
//! `AWS_ENDPOINT_URL`) and by `enrichment.cloud.aws.endpoint_url`, which wins.

pub mod credentials;
pub mod sigv4;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use chrono::Utc;

use super::{Item, ProviderError};
use crate::inventory::config::AwsConfig;
pub use credentials::Environment;

/// The EC2 Query API's version.
pub const EC2_VERSION: &str = "2016-11-15";
/// Items a page (the most both calls accept).
const PAGE: u32 = 1000;
/// Pages followed per call and region at most.
const MAX_PAGES: usize = 2000;
/// Largest answer read (a page of a thousand ENIs is well under it).
const MAX_BODY: usize = 64 << 20;
/// Attempts at one page when AWS throttles or fails on its side.
const ATTEMPTS: u32 = 3;

/// The AWS provider.
pub struct Aws {
    http: reqwest::Client,
    config: AwsConfig,
    env: Environment,
    chain: credentials::Chain,
    page: u32,
}

/// One page's items and the token of the next page, if any.
pub type Page<T> = (Vec<T>, Option<String>);

/// An instance, as `DescribeInstances` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub owner: Option<String>,
    pub instance_type: Option<String>,
    pub zone: Option<String>,
    pub vpc: Option<String>,
    pub subnet: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// `pending`, `running`, `stopped`, `terminated`, ...
    pub state: Option<String>,
    /// The addresses `DescribeInstances` reports (ENIs normally report them too).
    pub addresses: Vec<IpAddr>,
}

/// A network interface, as `DescribeNetworkInterfaces` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub id: String,
    pub interface_type: Option<String>,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub zone: Option<String>,
    pub vpc: Option<String>,
    pub subnet: Option<String>,
    pub instance: Option<String>,
    /// The account of the instance it is attached to (another's, for a shared ENI).
    pub instance_owner: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub addresses: Vec<IpAddr>,
}

impl Aws {
    /// A provider reading credentials and endpoints from the process's environment.
    ///
    /// # Errors
    /// When the HTTP client cannot start.
    pub fn new(config: AwsConfig) -> Result<Self, ProviderError> {
        Self::with_environment(config, Environment::Process)
    }

    /// A provider reading credentials and endpoints from `env`.
    ///
    /// # Errors
    /// When the HTTP client cannot start.
    pub fn with_environment(config: AwsConfig, env: Environment) -> Result<Self, ProviderError> {
        let timeout = Duration::from_secs(config.timeout_seconds);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProviderError::Credentials(e.to_string()))?;
        let region = config.regions.first().cloned().unwrap_or_default();
        let region = env
            .var("AWS_REGION")
            .or_else(|| env.var("AWS_DEFAULT_REGION"))
            .unwrap_or(region);
        let profile = Some(config.profile.clone()).filter(|p| !p.is_empty());
        let chain = credentials::Chain::new(env.clone(), profile, region, timeout)?;
        Ok(Self {
            http,
            config,
            env,
            chain,
            page: PAGE,
        })
    }

    /// Items a page asked for (AWS accepts 5 to 1000): tests page through small
    /// estates with it.
    #[doc(hidden)]
    #[must_use]
    pub fn with_page_size(mut self, page: u32) -> Self {
        self.page = page;
        self
    }

    /// What this provider lists, for the shared cache's key.
    #[must_use]
    pub fn scope(&self) -> String {
        format!(
            "{:?} {:?} {:?}",
            self.config.regions, self.config.endpoint_url, self.config.profile
        )
    }

    /// Where EC2 is for `region`: an override with `{region}` in it is a template (a
    /// VPC endpoint per region); one without serves every region (a test server).
    fn endpoint(&self, region: &str) -> String {
        self.config
            .endpoint_url
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| self.env.var("AWS_ENDPOINT_URL_EC2"))
            .or_else(|| self.env.var("AWS_ENDPOINT_URL"))
            .map_or_else(
                || regional("ec2", region),
                |u| u.replace("{region}", region),
            )
            .trim_end_matches('/')
            .to_owned()
    }

    /// One signed EC2 Query call in `region`: the answer's XML. Throttling and AWS's
    /// own failures are tried again (twice, after one and two seconds).
    ///
    /// # Errors
    /// Credentials that cannot be found, a transport failure, or AWS's error (its
    /// code and message).
    pub async fn call(
        &self,
        region: &str,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, ProviderError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.call_once(region, action, params).await {
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }

    async fn call_once(
        &self,
        region: &str,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, ProviderError> {
        let (_, credentials) = self.chain.credentials().await?;
        let endpoint = self.endpoint(region);
        let what = format!("EC2 {action} in {region}");
        let bad_endpoint = |message: String| ProviderError::Transport {
            what: what.clone(),
            message,
        };
        let url = reqwest::Url::parse(&format!("{endpoint}/"))
            .map_err(|e| bad_endpoint(format!("the endpoint {endpoint:?}: {e}")))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => {
                return Err(bad_endpoint(format!(
                    "the endpoint {endpoint:?} has no host"
                )));
            }
        };
        if url.query().is_some() {
            return Err(bad_endpoint(format!(
                "the endpoint {endpoint:?} has a query"
            )));
        }
        let mut all = vec![
            ("Action".to_owned(), action.to_owned()),
            ("Version".to_owned(), EC2_VERSION.to_owned()),
        ];
        all.extend_from_slice(params);
        let body = sigv4::canonical_query(&all);
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let signed = sigv4::sign(
            &sigv4::Request {
                method: "POST",
                host: &host,
                path: url.path(),
                query: "",
                headers: &[("content-type", content_type)],
                body: body.as_bytes(),
            },
            "ec2",
            region,
            &credentials,
            Utc::now(),
        );
        let mut request = self
            .http
            .post(url)
            .header("content-type", content_type)
            .body(body);
        for (k, v) in signed {
            request = request.header(k, v);
        }
        let transport = |e: &reqwest::Error| ProviderError::Transport {
            what: what.clone(),
            message: super::short_error(e),
        };
        let response = request.send().await.map_err(|e| transport(&e))?;
        let status = response.status();
        let text = read_bounded(response, MAX_BODY, &what).await?;
        if status.is_success() {
            return Ok(text);
        }
        let error = xml_error(&text);
        if matches!(status.as_u16(), 401 | 403)
            || error.starts_with("AuthFailure")
            || error.starts_with("UnauthorizedOperation")
            || error.starts_with("InvalidClientTokenId")
            || error.starts_with("SignatureDoesNotMatch")
        {
            return Err(ProviderError::Credentials(format!(
                "{what}: HTTP {}: {error}",
                status.as_u16()
            )));
        }
        Err(ProviderError::Status {
            what,
            status: status.as_u16(),
            body: error,
        })
    }

    /// Every page of one `Describe*` call, each parsed by `parse` as it arrives.
    async fn pages<T>(
        &self,
        region: &str,
        action: &str,
        parse: fn(&str) -> Result<Page<T>, String>,
    ) -> Result<Vec<T>, ProviderError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for page in 0.. {
            if page >= MAX_PAGES {
                return Err(ProviderError::TooManyPages(MAX_PAGES));
            }
            let mut params = vec![("MaxResults".to_owned(), self.page.to_string())];
            if let Some(t) = &token {
                params.push(("NextToken".to_owned(), t.clone()));
            }
            let text = self.call(region, action, &params).await?;
            let (items, next) = parse(&text).map_err(|message| ProviderError::Answer {
                what: format!("EC2 {action} in {region}"),
                message,
            })?;
            out.extend(items);
            if next.is_none() || next == token {
                break;
            }
            token = next;
        }
        Ok(out)
    }

    /// Every address of every configured region. The ENIs are listed first: an
    /// instance launched between the two calls is then in the instances' list too,
    /// with its name.
    ///
    /// # Errors
    /// The first call that failed.
    pub async fn snapshot(&self) -> Result<Vec<(IpAddr, Item)>, ProviderError> {
        let mut out = Vec::new();
        for region in &self.config.regions {
            let interfaces = self
                .pages(region, "DescribeNetworkInterfaces", parse_interfaces)
                .await?;
            let instances = self
                .pages(region, "DescribeInstances", parse_instances)
                .await?;
            out.extend(items(region, &instances, &interfaces));
        }
        Ok(out)
    }
}

/// A service's endpoint in a region, as AWS names them (China's and the isolated
/// regions have their own domains).
pub(crate) fn regional(service: &str, region: &str) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else if region.starts_with("us-isob-") {
        "sc2s.sgov.gov"
    } else if region.starts_with("us-iso-") {
        "c2s.ic.gov"
    } else {
        "amazonaws.com"
    };
    format!("https://{service}.{region}.{domain}")
}

/// A response's body as text, refused past `max` bytes.
pub(crate) async fn read_bounded(
    mut response: reqwest::Response,
    max: usize,
    what: &str,
) -> Result<String, ProviderError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ProviderError::Transport {
            what: what.to_owned(),
            message: super::short_error(&e),
        })?
    {
        if body.len() + chunk.len() > max {
            return Err(ProviderError::Answer {
                what: what.to_owned(),
                message: format!("more than {max} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Whether an error is worth another attempt: AWS throttling or failing on its side.
fn retryable(e: &ProviderError) -> bool {
    match e {
        ProviderError::Status { status, body, .. } => {
            *status >= 500
                || *status == 429
                || ["RequestLimitExceeded", "Throttling", "ThrottlingException"]
                    .iter()
                    .any(|c| body.starts_with(c))
        }
        ProviderError::Transport { .. } => true,
        _ => false,
    }
}

/// `Code: Message` of an AWS error answer (`<Response><Errors><Error>` for EC2,
/// `<ErrorResponse><Error>` for STS), bounded; the start of the body otherwise.
pub(crate) fn xml_error(text: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect::<String>()
    };
    if let Ok(doc) = roxmltree::Document::parse(text)
        && let Some(error) = doc.descendants().find(|n| n.tag_name().name() == "Error")
    {
        let code = child_text(error, "Code").unwrap_or_default();
        let message = child_text(error, "Message").unwrap_or_default();
        return clean(&format!("{code}: {message}"));
    }
    clean(text)
}

/// The text of `node`'s child element `name`, trimmed, if not empty.
pub(crate) fn child_text(node: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    child(node, name)
        .and_then(|c| c.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// The `<item>` children of `node`'s child `set` (how the EC2 API writes lists).
fn items_of<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    set: &str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    child(node, set)
        .into_iter()
        .flat_map(|s| s.children())
        .filter(|c| c.is_element() && c.tag_name().name() == "item")
}

fn tags(node: roxmltree::Node<'_, '_>) -> BTreeMap<String, String> {
    items_of(node, "tagSet")
        .filter_map(|t| {
            Some((
                child_text(t, "key")?,
                child_text(t, "value").unwrap_or_default(),
            ))
        })
        .collect()
}

fn parse(text: &str) -> Result<roxmltree::Document<'_>, String> {
    roxmltree::Document::parse(text).map_err(|e| format!("not XML: {e}"))
}

/// Addresses an element names in `fields`, each parsed; unparseable ones are skipped
/// (`DescribeInstances` and ENIs write them as dotted quads and IPv6 text).
fn addresses(node: roxmltree::Node<'_, '_>, fields: &[&str]) -> Vec<IpAddr> {
    fields
        .iter()
        .filter_map(|f| child_text(node, f)?.parse().ok())
        .collect()
}

/// The instances of one `DescribeInstances` page, and its `nextToken`.
///
/// # Errors
/// When the page is not `DescribeInstances`'s answer.
pub fn parse_instances(text: &str) -> Result<Page<Instance>, String> {
    let doc = parse(text)?;
    let root = doc.root_element();
    if root.tag_name().name() != "DescribeInstancesResponse" {
        return Err(format!(
            "<{}> is not DescribeInstancesResponse",
            root.tag_name().name()
        ));
    }
    let mut out = Vec::new();
    for reservation in items_of(root, "reservationSet") {
        let owner = child_text(reservation, "ownerId");
        for i in items_of(reservation, "instancesSet") {
            let Some(id) = child_text(i, "instanceId") else {
                continue;
            };
            let mut addrs = addresses(i, &["privateIpAddress", "ipAddress", "ipv6Address"]);
            for nic in items_of(i, "networkInterfaceSet") {
                for a in items_of(nic, "privateIpAddressesSet") {
                    addrs.extend(addresses(a, &["privateIpAddress"]));
                    if let Some(assoc) = child(a, "association") {
                        addrs.extend(addresses(assoc, &["publicIp"]));
                    }
                }
                for a in items_of(nic, "ipv6AddressesSet") {
                    addrs.extend(addresses(a, &["ipv6Address"]));
                }
            }
            addrs.sort();
            addrs.dedup();
            out.push(Instance {
                id,
                owner: owner.clone(),
                instance_type: child_text(i, "instanceType"),
                zone: child(i, "placement").and_then(|p| child_text(p, "availabilityZone")),
                vpc: child_text(i, "vpcId"),
                subnet: child_text(i, "subnetId"),
                tags: tags(i),
                state: child(i, "instanceState").and_then(|s| child_text(s, "name")),
                addresses: addrs,
            });
        }
    }
    Ok((out, child_text(root, "nextToken")))
}

/// The interfaces of one `DescribeNetworkInterfaces` page, and its `nextToken`.
///
/// # Errors
/// When the page is not `DescribeNetworkInterfaces`'s answer.
pub fn parse_interfaces(text: &str) -> Result<Page<Interface>, String> {
    let doc = parse(text)?;
    let root = doc.root_element();
    if root.tag_name().name() != "DescribeNetworkInterfacesResponse" {
        return Err(format!(
            "<{}> is not DescribeNetworkInterfacesResponse",
            root.tag_name().name()
        ));
    }
    let mut out = Vec::new();
    for n in items_of(root, "networkInterfaceSet") {
        let Some(id) = child_text(n, "networkInterfaceId") else {
            continue;
        };
        let mut addrs = addresses(n, &["privateIpAddress"]);
        if let Some(assoc) = child(n, "association") {
            addrs.extend(addresses(assoc, ASSOCIATED));
        }
        for a in items_of(n, "privateIpAddressesSet") {
            addrs.extend(addresses(a, &["privateIpAddress"]));
            if let Some(assoc) = child(a, "association") {
                addrs.extend(addresses(assoc, ASSOCIATED));
            }
        }
        for a in items_of(n, "ipv6AddressesSet") {
            addrs.extend(addresses(a, &["ipv6Address"]));
        }
        // Prefix delegation (EKS's VPC CNI in prefix mode, ECS): every address of
        // each IPv4 /28 belongs to the ENI's owner. IPv6 /80 prefixes are too large
        // to list and are left out.
        for p in items_of(n, "ipv4PrefixSet") {
            if let Some(prefix) = child_text(p, "ipv4Prefix") {
                addrs.extend(expand_v4(&prefix));
            }
        }
        addrs.sort();
        addrs.dedup();
        out.push(Interface {
            id,
            interface_type: child_text(n, "interfaceType"),
            description: child_text(n, "description"),
            owner: child_text(n, "ownerId"),
            zone: child_text(n, "availabilityZone"),
            vpc: child_text(n, "vpcId"),
            subnet: child_text(n, "subnetId"),
            instance: child(n, "attachment").and_then(|a| child_text(a, "instanceId")),
            instance_owner: child(n, "attachment").and_then(|a| child_text(a, "instanceOwnerId")),
            tags: tags(n),
            addresses: addrs,
        });
    }
    Ok((out, child_text(root, "nextToken")))
}

/// The addresses an association carries: the public IPv4, a Wavelength carrier
/// address, an Outpost's customer-owned address.
const ASSOCIATED: &[&str] = &["publicIp", "carrierIp", "customerOwnedIp"];

/// Every address of an IPv4 prefix of /24 or longer (ENI prefixes are /28).
fn expand_v4(prefix: &str) -> Vec<IpAddr> {
    let Some((base, len)) = prefix.split_once('/') else {
        return Vec::new();
    };
    let (Ok(base), Ok(len)) = (base.parse::<std::net::Ipv4Addr>(), len.parse::<u32>()) else {
        return Vec::new();
    };
    if !(24..=32).contains(&len) {
        return Vec::new();
    }
    let size = 1u32 << (32 - len);
    let start = u32::from(base) & !(size - 1);
    (0..size)
        .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(start + i)))
        .collect()
}

/// What a detached (or service-managed) ENI belongs to, and that thing's name, from
/// its `InterfaceType` and the description AWS writes on the ENIs it creates
/// (`ELB app/<name>/<id>`, `AWS Lambda VPC ENI-<function>-<uuid>`,
/// `RDSNetworkInterface`, `Interface for NAT Gateway nat-...`, `EFS mount target for
/// fs-...`, `VPC Endpoint Interface vpce-...`).
#[must_use]
pub fn classify(
    interface_type: Option<&str>,
    description: Option<&str>,
) -> (String, Option<String>) {
    let d = description.unwrap_or_default();
    let t = interface_type.unwrap_or("interface");
    if matches!(t, "nat_gateway" | "natGateway") || d.starts_with("Interface for NAT Gateway ") {
        let name = d
            .strip_prefix("Interface for NAT Gateway ")
            .map(str::to_owned);
        return ("nat_gateway".into(), name);
    }
    if let Some(rest) = d.strip_prefix("ELB ") {
        // app/<name>/<id>, net/<name>/<id>, gwy/<name>/<id>, or a classic LB's name.
        let parts: Vec<&str> = rest.split('/').collect();
        let name = if parts.len() == 3 { parts[1] } else { rest };
        return ("load_balancer".into(), Some(name.to_owned()));
    }
    if matches!(
        t,
        "network_load_balancer" | "gateway_load_balancer" | "load_balancer"
    ) {
        return ("load_balancer".into(), None);
    }
    if let Some(rest) = d.strip_prefix("AWS Lambda VPC ENI-") {
        // <function>-<uuid>: the uuid is the last 36 characters.
        let name = rest
            .len()
            .checked_sub(37)
            .filter(|&cut| rest.as_bytes().get(cut) == Some(&b'-'))
            .map_or(rest, |cut| &rest[..cut]);
        return ("lambda".into(), Some(name.to_owned()));
    }
    if t == "lambda" {
        return ("lambda".into(), None);
    }
    if d == "RDSNetworkInterface" {
        return ("rds".into(), None);
    }
    if t == "vpc_endpoint" || d.starts_with("VPC Endpoint Interface ") {
        let name = d.strip_prefix("VPC Endpoint Interface ").map(str::to_owned);
        return ("vpc_endpoint".into(), name);
    }
    if d.starts_with("EFS mount target for ") {
        return ("efs".into(), None);
    }
    if d.starts_with("arn:aws:ecs:") || d.starts_with("arn:aws-cn:ecs:") {
        // ECS (and Fargate) tasks in awsvpc mode: the attachment's ARN.
        return ("ecs_task".into(), None);
    }
    if d == "aws-k8s-branch-eni" || t == "branch" {
        // EKS security groups for pods: one ENI per pod, on a trunk.
        return ("eks_pod".into(), None);
    }
    if let Some(id) = d.strip_prefix("ElastiCache ") {
        return ("elasticache".into(), Some(id.to_owned()));
    }
    if let Some(domain) = d.strip_prefix("ES ") {
        return ("opensearch".into(), Some(domain.to_owned()));
    }
    if t == "transit_gateway" || d.starts_with("Network Interface for Transit Gateway Attachment ")
    {
        return ("transit_gateway".into(), None);
    }
    if t == "interface" {
        ("nic".into(), None)
    } else {
        (t.to_owned(), None)
    }
}

/// One region's items: an ENI attached to an instance is the instance (its name,
/// type and tags), any other ENI is what [`classify`] says; an instance address no
/// ENI reported is added from `DescribeInstances`. Lambda's ENIs may be shared by
/// the functions of one subnet and security groups: the name is the function that
/// created it. A terminated instance has no
/// addresses any more (`DescribeInstances` lists it for an hour after), and an ENI
/// still shown attached to one is left out with it.
#[must_use]
pub fn items(
    region: &str,
    instances: &[Instance],
    interfaces: &[Interface],
) -> Vec<(IpAddr, Item)> {
    let ended = |i: &Instance| i.state.as_deref() == Some("terminated");
    let by_id: HashMap<&str, &Instance> = instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let instance_item = |i: &Instance, owner: Option<&String>| Item {
        provider: "aws".into(),
        kind: "instance".into(),
        id: i.id.clone(),
        name: i.tags.get("Name").cloned(),
        account: i.owner.clone().or_else(|| owner.cloned()),
        region: Some(region.to_owned()),
        zone: i.zone.clone(),
        instance_type: i.instance_type.clone(),
        vpc: i.vpc.clone(),
        subnet: i.subnet.clone(),
        tags: i.tags.clone(),
        ..Item::default()
    };
    let mut out = Vec::new();
    // Each address once per item; an address two items claim (VPCs whose ranges
    // overlap) is returned for both, and the refresh leaves it out as ambiguous.
    let mut seen: HashMap<IpAddr, String> = HashMap::new();
    for n in interfaces {
        let item = match n.instance.as_deref().and_then(|id| by_id.get(id)) {
            Some(i) if ended(i) => continue,
            Some(i) => Item {
                // The ENI's own subnet: an instance's secondary ENIs may be elsewhere.
                subnet: n.subnet.clone().or_else(|| i.subnet.clone()),
                vpc: n.vpc.clone().or_else(|| i.vpc.clone()),
                ..instance_item(i, n.instance_owner.as_ref().or(n.owner.as_ref()))
            },
            None => {
                let (kind, derived) = match &n.instance {
                    // Attached to an instance this listing did not return (another
                    // account's, or one that just ended): still that instance.
                    Some(_) => ("instance".to_owned(), None),
                    None => classify(n.interface_type.as_deref(), n.description.as_deref()),
                };
                Item {
                    provider: "aws".into(),
                    kind,
                    id: n.instance.clone().unwrap_or_else(|| n.id.clone()),
                    name: n.tags.get("Name").cloned().or(derived),
                    account: n.instance_owner.clone().or_else(|| n.owner.clone()),
                    region: Some(region.to_owned()),
                    zone: n.zone.clone(),
                    vpc: n.vpc.clone(),
                    subnet: n.subnet.clone(),
                    tags: n.tags.clone(),
                    ..Item::default()
                }
            }
        };
        for ip in &n.addresses {
            if seen.get(ip) != Some(&item.id) {
                seen.insert(*ip, item.id.clone());
                out.push((*ip, item.clone()));
            }
        }
    }
    for i in instances.iter().filter(|i| !ended(i)) {
        for ip in &i.addresses {
            if !seen.contains_key(ip) {
                seen.insert(*ip, i.id.clone());
                out.push((*ip, instance_item(i, None)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `DescribeNetworkInterfaces` page as the EC2 API reference documents it: an
    /// instance's ENI with a public address and IPv6, an ALB's, a Lambda function's
    /// and a NAT gateway's.
    const INTERFACES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeNetworkInterfacesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>fc45294c-006b-457b-bab9-012f5b3b0e40</requestId>
  <networkInterfaceSet>
    <item>
      <networkInterfaceId>eni-0f7db5a1</networkInterfaceId>
      <subnetId>subnet-c88f5aa1</subnetId>
      <vpcId>vpc-11112222</vpcId>
      <availabilityZone>eu-west-1a</availabilityZone>
      <description/>
      <ownerId>123456789012</ownerId>
      <requesterManaged>false</requesterManaged>
      <status>in-use</status>
      <macAddress>02:74:b0:72:79:61</macAddress>
      <privateIpAddress>10.0.1.10</privateIpAddress>
      <sourceDestCheck>true</sourceDestCheck>
      <attachment>
        <attachmentId>eni-attach-bf3a8bd6</attachmentId>
        <instanceId>i-0598c7d356eba48d7</instanceId>
        <instanceOwnerId>123456789012</instanceOwnerId>
        <deviceIndex>0</deviceIndex>
        <status>attached</status>
      </attachment>
      <association>
        <publicIp>203.0.113.12</publicIp>
        <ipOwnerId>amazon</ipOwnerId>
      </association>
      <tagSet/>
      <privateIpAddressesSet>
        <item>
          <privateIpAddress>10.0.1.10</privateIpAddress>
          <primary>true</primary>
          <association><publicIp>203.0.113.12</publicIp></association>
        </item>
        <item>
          <privateIpAddress>10.0.1.11</privateIpAddress>
          <primary>false</primary>
        </item>
      </privateIpAddressesSet>
      <ipv6AddressesSet>
        <item><ipv6Address>2001:db8:1234:1a00::123</ipv6Address></item>
      </ipv6AddressesSet>
      <interfaceType>interface</interfaceType>
    </item>
    <item>
      <networkInterfaceId>eni-0alb</networkInterfaceId>
      <subnetId>subnet-c88f5aa1</subnetId>
      <vpcId>vpc-11112222</vpcId>
      <availabilityZone>eu-west-1a</availabilityZone>
      <description>ELB app/payments-alb/50dc6c495c0c9188</description>
      <ownerId>123456789012</ownerId>
      <requesterId>amazon-elb</requesterId>
      <requesterManaged>true</requesterManaged>
      <privateIpAddress>10.0.1.20</privateIpAddress>
      <privateIpAddressesSet><item><privateIpAddress>10.0.1.20</privateIpAddress></item></privateIpAddressesSet>
      <interfaceType>interface</interfaceType>
    </item>
    <item>
      <networkInterfaceId>eni-0lambda</networkInterfaceId>
      <subnetId>subnet-c88f5aa2</subnetId>
      <vpcId>vpc-11112222</vpcId>
      <availabilityZone>eu-west-1b</availabilityZone>
      <description>AWS Lambda VPC ENI-resize-images-3f1c2a7e-9b8d-4c6e-a5f4-0123456789ab</description>
      <ownerId>123456789012</ownerId>
      <privateIpAddress>10.0.2.30</privateIpAddress>
      <attachment><instanceOwnerId>amazon-aws</instanceOwnerId></attachment>
      <tagSet><item><key>team</key><value>media</value></item></tagSet>
      <interfaceType>lambda</interfaceType>
    </item>
    <item>
      <networkInterfaceId>eni-0nat</networkInterfaceId>
      <subnetId>subnet-c88f5aa1</subnetId>
      <vpcId>vpc-11112222</vpcId>
      <description>Interface for NAT Gateway nat-0a1b2c3d4e5f</description>
      <ownerId>123456789012</ownerId>
      <privateIpAddress>10.0.1.5</privateIpAddress>
      <association><publicIp>198.51.100.77</publicIp></association>
      <interfaceType>nat_gateway</interfaceType>
    </item>
    <item>
      <networkInterfaceId>eni-0node</networkInterfaceId>
      <subnetId>subnet-c88f5aa1</subnetId>
      <vpcId>vpc-11112222</vpcId>
      <privateIpAddress>10.0.3.4</privateIpAddress>
      <attachment><instanceId>i-0other</instanceId><instanceOwnerId>210987654321</instanceOwnerId></attachment>
      <ipv4PrefixSet><item><ipv4Prefix>10.0.4.16/28</ipv4Prefix></item></ipv4PrefixSet>
      <interfaceType>interface</interfaceType>
    </item>
  </networkInterfaceSet>
  <nextToken>token-2</nextToken>
</DescribeNetworkInterfacesResponse>"#;

    const INSTANCES: &str = r#"<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>8f7724cf-496f-496e-8fe3-example</requestId>
  <reservationSet>
    <item>
      <reservationId>r-1234567890abcdef0</reservationId>
      <ownerId>123456789012</ownerId>
      <instancesSet>
        <item>
          <instanceId>i-0598c7d356eba48d7</instanceId>
          <imageId>ami-0abcdef1234567890</imageId>
          <instanceState><code>16</code><name>running</name></instanceState>
          <instanceType>m5.large</instanceType>
          <placement><availabilityZone>eu-west-1a</availabilityZone></placement>
          <subnetId>subnet-c88f5aa1</subnetId>
          <vpcId>vpc-11112222</vpcId>
          <privateIpAddress>10.0.1.10</privateIpAddress>
          <ipAddress>203.0.113.12</ipAddress>
          <tagSet>
            <item><key>Name</key><value>payments-api-1</value></item>
            <item><key>env</key><value>prod</value></item>
          </tagSet>
        </item>
        <item>
          <instanceId>i-0ended</instanceId>
          <instanceState><code>48</code><name>terminated</name></instanceState>
          <privateIpAddress>10.0.9.9</privateIpAddress>
        </item>
        <item>
          <instanceId>i-0noeni</instanceId>
          <instanceType>t3.micro</instanceType>
          <privateIpAddress>10.0.3.3</privateIpAddress>
        </item>
      </instancesSet>
    </item>
  </reservationSet>
</DescribeInstancesResponse>"#;

    #[test]
    fn enis_are_mapped_to_their_instances_and_services() {
        let (instances, last) = parse_instances(INSTANCES).unwrap();
        let (interfaces, next) = parse_interfaces(INTERFACES).unwrap();
        assert_eq!(next.as_deref(), Some("token-2"));
        assert_eq!(last, None);
        let items: HashMap<IpAddr, Item> = items("eu-west-1", &instances, &interfaces)
            .into_iter()
            .collect();
        let at = |s: &str| &items[&s.parse::<IpAddr>().unwrap()];
        for ip in [
            "10.0.1.10",
            "10.0.1.11",
            "203.0.113.12",
            "2001:db8:1234:1a00::123",
        ] {
            let i = at(ip);
            assert_eq!(
                (i.kind.as_str(), i.id.as_str(), i.name.as_deref()),
                ("instance", "i-0598c7d356eba48d7", Some("payments-api-1")),
                "{ip}"
            );
            assert_eq!(i.instance_type.as_deref(), Some("m5.large"));
            assert_eq!(i.account.as_deref(), Some("123456789012"));
            assert_eq!(i.zone.as_deref(), Some("eu-west-1a"));
            assert_eq!(i.tags.get("env").map(String::as_str), Some("prod"));
        }
        let lb = at("10.0.1.20");
        assert_eq!(
            (lb.kind.as_str(), lb.id.as_str(), lb.name.as_deref()),
            ("load_balancer", "eni-0alb", Some("payments-alb"))
        );
        let lambda = at("10.0.2.30");
        assert_eq!(
            (
                lambda.kind.as_str(),
                lambda.name.as_deref(),
                lambda.subnet.as_deref()
            ),
            ("lambda", Some("resize-images"), Some("subnet-c88f5aa2"))
        );
        assert_eq!(lambda.tags.get("team").map(String::as_str), Some("media"));
        for ip in ["10.0.1.5", "198.51.100.77"] {
            assert_eq!(at(ip).kind, "nat_gateway");
            assert_eq!(at(ip).name.as_deref(), Some("nat-0a1b2c3d4e5f"));
        }
        assert_eq!(at("10.0.3.3").id, "i-0noeni");
        // Another account's instance (not listed), with a delegated /28 for its pods.
        for ip in
            std::iter::once("10.0.3.4".to_owned()).chain((16..32).map(|l| format!("10.0.4.{l}")))
        {
            let i = at(&ip);
            assert_eq!(
                (i.id.as_str(), i.kind.as_str()),
                ("i-0other", "instance"),
                "{ip}"
            );
            assert_eq!(i.account.as_deref(), Some("210987654321"));
        }
        assert!(!items.contains_key(&"10.0.4.32".parse::<IpAddr>().unwrap()));
        assert!(!items.contains_key(&"10.0.9.9".parse::<IpAddr>().unwrap()));
        assert_eq!(items.len(), 10 + 16);
    }

    #[test]
    fn service_enis_are_told_apart_by_type_and_description() {
        for (t, d, kind, name) in [
            (
                Some("interface"),
                Some("ELB my-classic-lb"),
                "load_balancer",
                Some("my-classic-lb"),
            ),
            (
                Some("network_load_balancer"),
                Some("ELB net/edge/0123"),
                "load_balancer",
                Some("edge"),
            ),
            (Some("interface"), Some("RDSNetworkInterface"), "rds", None),
            (
                Some("vpc_endpoint"),
                Some("VPC Endpoint Interface vpce-0abc"),
                "vpc_endpoint",
                Some("vpce-0abc"),
            ),
            (
                Some("interface"),
                Some("EFS mount target for fs-1 (fsmt-2)"),
                "efs",
                None,
            ),
            (
                Some("lambda"),
                Some("AWS Lambda VPC ENI-short"),
                "lambda",
                Some("short"),
            ),
            (Some("transit_gateway"), None, "transit_gateway", None),
            (Some("natGateway"), None, "nat_gateway", None),
            (
                Some("interface"),
                Some("arn:aws:ecs:eu-west-1:1:attachment/5c1e"),
                "ecs_task",
                None,
            ),
            (Some("branch"), Some("aws-k8s-branch-eni"), "eks_pod", None),
            (
                Some("interface"),
                Some("ElastiCache sessions-0001-001"),
                "elasticache",
                Some("sessions-0001-001"),
            ),
            (
                Some("interface"),
                Some("ES orders-search"),
                "opensearch",
                Some("orders-search"),
            ),
            (None, None, "nic", None),
        ] {
            let (k, n) = classify(t, d);
            assert_eq!((k.as_str(), n.as_deref()), (kind, name), "{t:?} {d:?}");
        }
    }

    /// Two VPCs with the same range: both ENIs' items come back, for the refresh to
    /// leave the address out as ambiguous.
    #[test]
    fn an_address_in_two_vpcs_is_returned_for_both() {
        let eni = |id: &str, vpc: &str| Interface {
            id: id.into(),
            vpc: Some(vpc.into()),
            addresses: vec!["172.31.0.10".parse().unwrap()],
            ..Interface::default()
        };
        let out = items(
            "eu-west-1",
            &[],
            &[eni("eni-a", "vpc-a"), eni("eni-b", "vpc-b")],
        );
        assert_eq!(out.len(), 2);
        let (kept, ambiguous) = crate::inventory::disambiguate(out);
        assert_eq!((kept.len(), ambiguous), (0, 1));
    }

    #[test]
    fn errors_say_aws_code_and_message() {
        let text = "<?xml version=\"1.0\"?><Response><Errors><Error><Code>AuthFailure</Code>\
                    <Message>AWS was not able to validate the provided access credentials</Message>\
                    </Error></Errors><RequestID>x</RequestID></Response>";
        assert_eq!(
            xml_error(text),
            "AuthFailure: AWS was not able to validate the provided access credentials"
        );
        assert!(parse_instances(text).unwrap_err().contains("<Response>"));
        assert_eq!(
            regional("ec2", "us-iso-east-1"),
            "https://ec2.us-iso-east-1.c2s.ic.gov"
        );
        assert_eq!(
            regional("ec2", "cn-north-1"),
            "https://ec2.cn-north-1.amazonaws.com.cn"
        );
    }
}
