//! `/api/v1/assets`: list (filters, trigram search), create manual assets, read,
//! patch, delete, and an asset's inbound and outbound dependencies.

#![allow(
    unused_qualifications,
    reason = "utoipa's params() expansion names the filter type by its full path"
)]

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{FromRow, PgConnection, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::dependencies::{DEPENDENCY_SELECT, DependencyWithStats};
use super::{double_option, like_escape, pick_fields, problems};
use crate::audit;
use crate::auth::{Editor, Viewer};
use crate::cache::{Answer, Cached, Kind};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::pagination::{Page, PageRequest, bounded_count, read_snapshot};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_assets, create_asset))
        .routes(routes!(get_asset, update_asset, delete_asset))
        .routes(routes!(asset_dependencies))
        .routes(routes!(asset_traffic))
}

/// The design's asset types; anything else is refused on write.
pub const ASSET_TYPES: [&str; 5] = ["server", "vm", "container", "network_device", "unknown"];

/// An asset as the API shows it: the `assets` row with addresses as text.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct Asset {
    pub id: Uuid,
    pub name: Option<String>,
    pub fqdn: Option<String>,
    /// `server`, `vm`, `container`, `network_device` or `unknown`.
    pub asset_type: String,
    pub ip_addresses: Vec<String>,
    pub mac_addresses: Vec<String>,
    pub os_family: Option<String>,
    pub os_version: Option<String>,
    pub cloud_provider: Option<String>,
    pub cloud_region: Option<String>,
    pub cloud_instance_id: Option<String>,
    /// AWS account, Azure subscription or GCP project (from the inventory).
    pub cloud_account: Option<String>,
    pub cloud_zone: Option<String>,
    pub instance_type: Option<String>,
    /// The VPC, `VNet` or network.
    pub vpc: Option<String>,
    pub subnet: Option<String>,
    /// Kubernetes: the cluster, namespace and owning workload.
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub workload_kind: Option<String>,
    pub workload: Option<String>,
    pub environment: Option<String>,
    #[schema(value_type = Object)]
    pub tags: Value,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// `flow`, `scan`, `cloud_api` or `manual`.
    pub discovery_source: String,
    pub confidence: Option<f32>,
    pub country_code: Option<String>,
    pub asn: Option<i64>,
    pub as_org: Option<String>,
    pub is_internal: Option<bool>,
    /// No traffic for `stale_after_hours`.
    pub stale: bool,
}

/// Columns of [`Asset`], from a relation aliased `a`.
macro_rules! asset_columns {
    () => {
        "a.id, a.name, a.fqdn, a.asset_type,
    ARRAY(SELECT abbrev(x) FROM unnest(a.ip_addresses) WITH ORDINALITY AS u(x, n) ORDER BY n)
        AS ip_addresses,
    COALESCE(a.mac_addresses::text[], '{}') AS mac_addresses,
    a.os_family, a.os_version, a.cloud_provider, a.cloud_region, a.cloud_instance_id,
    a.cloud_account, a.cloud_zone, a.instance_type, a.vpc, a.subnet, a.cluster, a.namespace,
    a.workload_kind, a.workload, a.environment, COALESCE(a.tags, '{}'::jsonb) AS tags, a.first_seen, a.last_seen,
    a.created_at, a.updated_at, a.discovery_source, a.confidence, a.country_code, a.asn,
    a.as_org, a.is_internal, a.stale"
    };
}

/// Columns of [`Asset`], from `assets a`.
pub const ASSET_SELECT: &str = concat!("SELECT ", asset_columns!(), " FROM assets a");

/// A page row: the asset and how many rows match the filters (bounded).
#[derive(FromRow)]
struct ListedAsset {
    #[sqlx(flatten)]
    asset: Asset,
    total_count: i64,
}

/// Filters of `GET /assets`. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AssetFilter {
    /// 1-based page number.
    pub page: Option<u32>,
    /// Items per page (default and maximum from `api.pagination`).
    pub page_size: Option<u32>,
    /// Asset type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub asset_type: Option<String>,
    pub environment: Option<String>,
    /// `key` (the tag is present) or `key:value` (the tag has that string value).
    pub tag: Option<String>,
    pub cloud_provider: Option<String>,
    /// AWS account, Azure subscription or GCP project.
    pub cloud_account: Option<String>,
    pub cloud_region: Option<String>,
    /// Kubernetes namespace.
    pub namespace: Option<String>,
    /// Kubernetes workload: the name of its Deployment, `StatefulSet`, ...
    pub workload: Option<String>,
    /// An address or a CIDR: assets with an address inside it.
    pub ip: Option<String>,
    /// Seen at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    pub discovery_source: Option<String>,
    pub stale: Option<bool>,
    pub internal: Option<bool>,
    /// Search over name, FQDN (trigram similarity and substring) and address prefix;
    /// results are ranked by similarity.
    pub q: Option<String>,
}

impl AssetFilter {
    fn push_where(&self, qb: &mut QueryBuilder<'_, Postgres>) -> Result<(), ApiError> {
        qb.push(" WHERE true");
        for (column, value) in [
            ("a.asset_type", &self.asset_type),
            ("a.environment", &self.environment),
            ("a.cloud_provider", &self.cloud_provider),
            ("a.cloud_account", &self.cloud_account),
            ("a.cloud_region", &self.cloud_region),
            ("a.namespace", &self.namespace),
            ("a.workload", &self.workload),
            ("a.discovery_source", &self.discovery_source),
        ] {
            if let Some(v) = value {
                qb.push(format_args!(" AND {column} = "))
                    .push_bind(v.clone());
            }
        }
        if let Some(tag) = &self.tag {
            match tag.split_once(':') {
                Some((k, v)) => {
                    qb.push(" AND a.tags @> jsonb_build_object(")
                        .push_bind(k.to_owned())
                        .push("::text, ")
                        .push_bind(v.to_owned())
                        .push("::text)");
                }
                None => {
                    qb.push(" AND a.tags ? ").push_bind(tag.clone());
                }
            }
        }
        if let Some(ip) = &self.ip {
            let net: IpNetwork = ip.parse().map_err(|_| {
                ApiError::BadRequest(format!("ip: {ip:?} is not an address or a CIDR"))
            })?;
            qb.push(" AND a.id IN (SELECT asset_id FROM asset_addresses WHERE ip <<= ")
                .push_bind(net)
                .push(")");
        }
        if let Some(since) = self.since {
            qb.push(" AND a.last_seen >= ").push_bind(since);
        }
        if let Some(stale) = self.stale {
            qb.push(" AND a.stale = ").push_bind(stale);
        }
        if let Some(internal) = self.internal {
            qb.push(" AND COALESCE(a.is_internal, true) = ")
                .push_bind(internal);
        }
        if let Some(q) = self.search()? {
            let contains = format!("%{}%", like_escape(q));
            let prefix = format!("{}%", like_escape(q));
            qb.push(" AND (a.name ILIKE ")
                .push_bind(contains.clone())
                .push(" OR a.fqdn ILIKE ")
                .push_bind(contains)
                .push(" OR a.name % ")
                .push_bind(q.to_owned())
                .push(" OR a.fqdn % ")
                .push_bind(q.to_owned())
                .push(
                    " OR EXISTS (SELECT 1 FROM asset_addresses aa WHERE aa.asset_id = a.id AND host(aa.ip) LIKE ",
                )
                .push_bind(prefix)
                .push("))");
        }
        Ok(())
    }

    fn search(&self) -> Result<Option<&str>, ApiError> {
        match self.q.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(q) if q.len() > 200 => {
                Err(ApiError::BadRequest("q: at most 200 characters".to_owned()))
            }
            Some(q) => Ok(Some(q)),
        }
    }
}

/// List assets.
#[utoipa::path(get, path = "/assets", tag = "assets", params(AssetFilter),
    responses((status = 200, body = Page<Asset>), (status = 400, body = Problem)))]
async fn list_assets(
    State(state): State<AppState>,
    _: Viewer,
    ApiQuery(filter): ApiQuery<AssetFilter>,
) -> Result<Response, ApiError> {
    let page = PageRequest::resolve(filter.page, filter.page_size, &state.config.api.pagination)?;
    // Searches are cached (`api.cache.search_ttl_seconds`, dropped on any change);
    // plain listings are cheap index scans and always fresh.
    let key = filter.search()?.map(|_| format!("{filter:?}"));
    let ticket = match &key {
        Some(k) => match state.cache.lookup(Kind::Search, k).await {
            (Some(hit), _) => return Ok(hit.as_ref().into_response()),
            (None, ticket) => Some(ticket),
        },
        None => None,
    };
    // The page's rows are picked first and the per-row array expressions run on the
    // page only, not on every matching row; the count is bounded and separate.
    // One scan: the matching rows, ordered, up to the page's end or max_count + 1
    // (whichever is further), counted by a window over that bounded set, then the page
    // cut from it. The count is exact up to max_count and never costs more rows than
    // the page needs or the cap; one statement, one snapshot, one round trip.
    let bounded = (i64::from(page.max_count) + 1).max(page.offset() + page.limit());
    let mut qb = QueryBuilder::new(
        "WITH page AS (SELECT a.*, count(*) OVER () AS total_count FROM (SELECT a.* \
         FROM assets a",
    );
    filter.push_where(&mut qb)?;
    let order = |qb: &mut QueryBuilder<'_, Postgres>| match filter.search() {
        Ok(Some(q)) => {
            qb.push(" ORDER BY GREATEST(similarity(coalesce(a.name, ''), ")
                .push_bind(q.to_owned())
                .push("), similarity(coalesce(a.fqdn, ''), ")
                .push_bind(q.to_owned())
                .push(")) DESC, a.name, a.id");
        }
        _ => {
            // Newest first by an immutable key: offset pages must not shift
            // while the daemon updates `last_seen`.
            qb.push(" ORDER BY a.created_at DESC NULLS LAST, a.id");
        }
    };
    order(&mut qb);
    qb.push(" LIMIT ").push_bind(bounded).push(") a");
    order(&mut qb);
    qb.push(" LIMIT ")
        .push_bind(page.limit())
        .push(" OFFSET ")
        .push_bind(page.offset())
        .push(concat!(
            ") SELECT ",
            asset_columns!(),
            ", a.total_count FROM page a"
        ));
    order(&mut qb);
    let rows = qb
        .build_query_as::<ListedAsset>()
        .fetch_all(&state.pool)
        .await?;
    let total = match rows.first() {
        Some(r) => r.total_count,
        // Past the last page no row carries the count.
        None if page.page > 1 => {
            bounded_count("assets a", page, |qb| filter.push_where(qb))?
                .build_query_scalar()
                .fetch_one(&state.pool)
                .await?
        }
        None => 0,
    };
    let items: Vec<Asset> = rows.into_iter().map(|r| r.asset).collect();
    let answer: Cached = Arc::new(Answer {
        content_type: "application/json",
        body: serde_json::to_vec(&Page::new(items, page, total))?.into(),
    });
    if let (Some(k), Some(ticket)) = (key, ticket) {
        state
            .cache
            .store(Kind::Search, k, answer.clone(), ticket)
            .await;
    }
    Ok(answer.as_ref().into_response())
}

/// A manual asset to create.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAsset {
    pub name: String,
    pub fqdn: Option<String>,
    /// Defaults to `unknown`.
    pub asset_type: Option<String>,
    /// Host addresses; each may belong to one asset only.
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    #[serde(default)]
    pub mac_addresses: Vec<String>,
    pub os_family: Option<String>,
    pub os_version: Option<String>,
    pub cloud_provider: Option<String>,
    pub cloud_region: Option<String>,
    pub cloud_instance_id: Option<String>,
    pub environment: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub tags: serde_json::Map<String, Value>,
    /// Defaults to 1.0: someone said so.
    pub confidence: Option<f32>,
}

/// Checks an asset type, returning a problem when it is not one of ours.
fn check_type(t: &str, problems: &mut Vec<String>) {
    if !ASSET_TYPES.contains(&t) {
        problems.push(format!(
            "asset_type {t:?} must be one of {}",
            ASSET_TYPES.join(", ")
        ));
    }
}

fn check_confidence(c: f32, problems: &mut Vec<String>) {
    if !(0.0..=1.0).contains(&c) {
        problems.push(format!("confidence {c} must be between 0 and 1"));
    }
}

fn check_len(field: &str, value: Option<&str>, max: usize, problems: &mut Vec<String>) {
    if let Some(v) = value
        && v.chars().count() > max
    {
        problems.push(format!("{field} is longer than {max} characters"));
    }
}

/// Host addresses one asset may have, at most (a 2-megabyte body could otherwise carry
/// some 200 000).
pub const MAX_ADDRESSES: usize = 256;
/// MAC addresses one asset may have, at most.
pub const MAX_MAC_ADDRESSES: usize = 64;
/// Tags one asset may have, at most.
pub const MAX_TAGS: usize = 64;

/// Parses host addresses, reporting the bad ones and refusing more than
/// [`MAX_ADDRESSES`]. Duplicates go (a set, not a scan per address), and an
/// IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is the IPv4 address, as the daemon sees
/// it, so one host cannot end up in two assets.
fn parse_addresses(ips: &[String], problems: &mut Vec<String>) -> Vec<IpNetwork> {
    if ips.len() > MAX_ADDRESSES {
        problems.push(format!(
            "ip_addresses: {} given, at most {MAX_ADDRESSES}",
            ips.len()
        ));
        return Vec::new();
    }
    let mut seen = std::collections::HashSet::with_capacity(ips.len());
    let mut out: Vec<IpNetwork> = Vec::with_capacity(ips.len());
    for ip in ips {
        match ip.parse::<std::net::IpAddr>() {
            Ok(a) => {
                let a = a.to_canonical();
                if seen.insert(a) {
                    out.push(IpNetwork::from(a));
                }
            }
            Err(_) => problems.push(format!("ip_addresses: {ip:?} is not an IP address")),
        }
    }
    out
}

/// Refuses MAC and tag lists past their bounds ([`MAX_MAC_ADDRESSES`], [`MAX_TAGS`]).
fn check_list_sizes(
    macs: Option<&[String]>,
    tags: Option<&serde_json::Map<String, Value>>,
    problems: &mut Vec<String>,
) {
    if let Some(m) = macs
        && m.len() > MAX_MAC_ADDRESSES
    {
        problems.push(format!(
            "mac_addresses: {} given, at most {MAX_MAC_ADDRESSES}",
            m.len()
        ));
    }
    // Checked here so the caller hears which one, in our words, not PostgreSQL's.
    for mac in macs.unwrap_or_default() {
        if !is_mac_address(mac) {
            problems.push(format!(
                "mac_addresses: {:?} is not a MAC address (six hex octets, e.g. \
                 00:1a:2b:3c:4d:5e)",
                mac.chars().take(64).collect::<String>()
            ));
        }
    }
    if let Some(t) = tags
        && t.len() > MAX_TAGS
    {
        problems.push(format!("tags: {} given, at most {MAX_TAGS}", t.len()));
    }
}

/// Whether PostgreSQL's `macaddr` takes `s`: twelve hex digits, whole or grouped by
/// `:`, `-` or `.` as its input forms allow (`08:00:2b:01:02:03`, `08-00-2b-01-02-03`,
/// `0800.2b01.0203`, `08002b:010203`, `08002b010203`).
fn is_mac_address(s: &str) -> bool {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !matches!(b, b':' | b'-' | b'.'))
        .collect();
    let groups: Vec<&str> = s.split([':', '-', '.']).collect();
    let grouping_ok = matches!(groups.len(), 1 | 2 | 3 | 6)
        && groups.iter().all(|g| g.len() == 12 / groups.len());
    digits.len() == 12 && digits.iter().all(u8::is_ascii_hexdigit) && grouping_ok
}

/// Refuses addresses that already belong to another asset, naming it.
async fn check_addresses_free(
    conn: &mut PgConnection,
    ips: &[IpNetwork],
    except: Option<Uuid>,
) -> Result<(), ApiError> {
    let taken: Option<(String, Uuid)> = sqlx::query_as(
        "SELECT host(ip), asset_id FROM asset_addresses
         WHERE ip = ANY($1) AND asset_id IS DISTINCT FROM $2 LIMIT 1",
    )
    .bind(ips)
    .bind(except)
    .fetch_optional(conn)
    .await?;
    match taken {
        Some((ip, owner)) => Err(ApiError::Conflict(format!(
            "{ip} already belongs to asset {owner}"
        ))),
        None => Ok(()),
    }
}

pub async fn fetch_asset(conn: &mut PgConnection, id: Uuid) -> Result<Asset, ApiError> {
    sqlx::query_as::<_, Asset>(&format!("{ASSET_SELECT} WHERE a.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| ApiError::not_found("asset", id))
}

/// Create a manual asset.
#[utoipa::path(post, path = "/assets", tag = "assets", request_body = NewAsset,
    responses((status = 201, body = Asset), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
async fn create_asset(
    State(state): State<AppState>,
    Editor(caller): Editor,
    ApiJson(body): ApiJson<NewAsset>,
) -> Result<(StatusCode, ApiJson<Asset>), ApiError> {
    let mut bad = Vec::new();
    if body.name.trim().is_empty() {
        bad.push("name must not be empty".to_owned());
    }
    check_len("name", Some(&body.name), 255, &mut bad);
    check_len("fqdn", body.fqdn.as_deref(), 255, &mut bad);
    check_len("environment", body.environment.as_deref(), 50, &mut bad);
    check_len("cloud_region", body.cloud_region.as_deref(), 64, &mut bad);
    check_len(
        "cloud_instance_id",
        body.cloud_instance_id.as_deref(),
        512,
        &mut bad,
    );
    let asset_type = body
        .asset_type
        .clone()
        .unwrap_or_else(|| "unknown".to_owned());
    check_type(&asset_type, &mut bad);
    let confidence = body.confidence.unwrap_or(1.0);
    check_confidence(confidence, &mut bad);
    let ips = parse_addresses(&body.ip_addresses, &mut bad);
    check_list_sizes(Some(&body.mac_addresses), Some(&body.tags), &mut bad);
    problems(&bad)?;

    let mut tx = state.pool.begin().await?;
    check_addresses_free(&mut tx, &ips, None).await?;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO assets (name, fqdn, asset_type, ip_addresses, mac_addresses, os_family,
            os_version, cloud_provider, cloud_region, cloud_instance_id, environment, tags,
            first_seen, last_seen, discovery_source, confidence)
         VALUES ($1, $2, $3, $4, $5::text[]::macaddr[], $6, $7, $8, $9, $10, $11, $12,
                 now(), now(), 'manual', $13)
         RETURNING id",
    )
    .bind(body.name.trim())
    .bind(&body.fqdn)
    .bind(&asset_type)
    .bind(&ips)
    .bind(&body.mac_addresses)
    .bind(&body.os_family)
    .bind(&body.os_version)
    .bind(&body.cloud_provider)
    .bind(&body.cloud_region)
    .bind(&body.cloud_instance_id)
    .bind(&body.environment)
    .bind(Value::Object(body.tags.clone()))
    .bind(confidence)
    .fetch_one(&mut *tx)
    .await?;
    let asset = fetch_asset(&mut tx, id).await?;
    let after = serde_json::to_value(&asset).ok();
    audit::change_event(&mut tx, "new_asset", "asset", id, None, after).await?;
    audit::record(
        &mut tx,
        &caller,
        "create",
        "asset",
        Some(id),
        serde_json::to_value(&body).unwrap_or(Value::Null),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(asset)))
}

/// Get one asset.
#[utoipa::path(get, path = "/assets/{id}", tag = "assets",
    params(("id" = Uuid, Path, description = "asset id")),
    responses((status = 200, body = Asset), (status = 404, body = Problem)))]
async fn get_asset(
    State(state): State<AppState>,
    _: Viewer,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<Asset>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    Ok(ApiJson(fetch_asset(&mut conn, id).await?))
}

/// Fields to change; absent fields stay, `null` clears a nullable one.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssetPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub fqdn: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_type: Option<String>,
    /// Replaces every address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_addresses: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_addresses: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub os_family: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub os_version: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub cloud_provider: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub cloud_region: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub cloud_instance_id: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub environment: Option<Option<String>>,
    /// Replaces every tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub tags: Option<serde_json::Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
}

/// Update an asset.
#[utoipa::path(patch, path = "/assets/{id}", tag = "assets", request_body = AssetPatch,
    params(("id" = Uuid, Path, description = "asset id")),
    responses((status = 200, body = Asset), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn update_asset(
    State(state): State<AppState>,
    Editor(caller): Editor,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<AssetPatch>,
) -> Result<ApiJson<Asset>, ApiError> {
    let mut bad = Vec::new();
    if let Some(n) = &patch.name
        && n.trim().is_empty()
    {
        bad.push("name must not be empty".to_owned());
    }
    check_len("name", patch.name.as_deref(), 255, &mut bad);
    check_len(
        "fqdn",
        patch.fqdn.clone().flatten().as_deref(),
        255,
        &mut bad,
    );
    check_len(
        "cloud_region",
        patch.cloud_region.clone().flatten().as_deref(),
        64,
        &mut bad,
    );
    check_len(
        "cloud_instance_id",
        patch.cloud_instance_id.clone().flatten().as_deref(),
        512,
        &mut bad,
    );
    if let Some(t) = &patch.asset_type {
        check_type(t, &mut bad);
    }
    if let Some(c) = patch.confidence {
        check_confidence(c, &mut bad);
    }
    let ips = patch
        .ip_addresses
        .as_ref()
        .map(|ips| parse_addresses(ips, &mut bad));
    check_list_sizes(
        patch.mac_addresses.as_deref(),
        patch.tags.as_ref(),
        &mut bad,
    );
    let changed = serde_json::to_value(&patch).unwrap_or(Value::Null);
    let keys: Vec<String> = changed
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    if keys.is_empty() {
        bad.push("the patch changes nothing".to_owned());
    }
    problems(&bad)?;

    let mut tx = state.pool.begin().await?;
    super::lock_row(&mut tx, "assets", "asset", id).await?;
    let before = fetch_asset(&mut tx, id).await?;
    if let Some(ips) = &ips {
        check_addresses_free(&mut tx, ips, Some(id)).await?;
    }
    let mut qb: QueryBuilder<'_, Postgres> =
        QueryBuilder::new("UPDATE assets SET updated_at = now()");
    macro_rules! set {
        ($col:literal, $v:expr) => {
            if let Some(v) = $v {
                qb.push(concat!(", ", $col, " = ")).push_bind(v);
            }
        };
    }
    set!("name", patch.name.as_ref().map(|n| n.trim().to_owned()));
    set!("fqdn", patch.fqdn.clone());
    set!("asset_type", patch.asset_type.clone());
    set!("ip_addresses", ips);
    if let Some(macs) = &patch.mac_addresses {
        qb.push(", mac_addresses = ")
            .push_bind(macs.clone())
            .push("::text[]::macaddr[]");
    }
    set!("os_family", patch.os_family.clone());
    set!("os_version", patch.os_version.clone());
    set!("cloud_provider", patch.cloud_provider.clone());
    set!("cloud_region", patch.cloud_region.clone());
    set!("cloud_instance_id", patch.cloud_instance_id.clone());
    set!("environment", patch.environment.clone());
    set!("tags", patch.tags.clone().map(Value::Object));
    set!("confidence", patch.confidence);
    qb.push(" WHERE id = ").push_bind(id);
    qb.build().execute(&mut *tx).await?;
    let after = fetch_asset(&mut tx, id).await?;
    let pick = |asset: &Asset| pick_fields(asset, &keys);
    audit::change_event(
        &mut tx,
        "asset_changed",
        "asset",
        id,
        Some(pick(&before)),
        Some(pick(&after)),
    )
    .await?;
    audit::record(&mut tx, &caller, "update", "asset", Some(id), changed).await?;
    tx.commit().await?;
    Ok(ApiJson(after))
}

/// Delete an asset and, with it, its dependencies.
#[utoipa::path(delete, path = "/assets/{id}", tag = "assets",
    params(("id" = Uuid, Path, description = "asset id")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_asset(
    State(state): State<AppState>,
    Editor(caller): Editor,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.pool.begin().await?;
    // Concurrent deletes take turns: the second finds nothing (404), so the asset's
    // removal is recorded once.
    super::lock_row(&mut tx, "assets", "asset", id).await?;
    let before = fetch_asset(&mut tx, id).await?;
    // Each dependency that goes with the asset is a removal of its own in the change
    // feed, as if deleted one by one.
    let gone: Vec<Value> = sqlx::query_scalar(
        "WITH d AS (DELETE FROM dependencies WHERE source_asset_id = $1 OR target_asset_id = $1
                    RETURNING id, source_asset_id, target_asset_id, protocol, port,
                              inferred_service, last_seen, discovery_source)
         SELECT to_jsonb(d) FROM d ORDER BY d.id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    for dep in &gone {
        let dep_id = dep
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Uuid>().ok());
        if let Some(dep_id) = dep_id {
            audit::change_event(
                &mut tx,
                "removed_dependency",
                "dependency",
                dep_id,
                Some(dep.clone()),
                None,
            )
            .await?;
        }
    }
    let removed = gone.len();
    let deleted = sqlx::query("DELETE FROM assets WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found("asset", id));
    }
    audit::change_event(
        &mut tx,
        "removed_asset",
        "asset",
        id,
        serde_json::to_value(&before).ok(),
        None,
    )
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "delete",
        "asset",
        Some(id),
        serde_json::json!({"name": before.name, "dependencies_removed": removed}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An asset's dependencies: what it uses (outbound) and who uses it (inbound), one
/// page of each, busiest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssetDependencies {
    pub asset_id: Uuid,
    /// Services this asset depends on (it is the client).
    pub outbound: Vec<DependencyWithStats>,
    /// Clients that depend on this asset's services.
    pub inbound: Vec<DependencyWithStats>,
    pub page: u32,
    /// At most this many of each direction.
    pub page_size: u32,
    /// Outbound dependencies in all (counted up to `api.pagination.max_count`).
    pub outbound_total: i64,
    pub inbound_total: i64,
    /// A total stopped at the cap.
    pub total_capped: bool,
}

/// Pages of `GET /assets/{id}/dependencies`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AssetDependenciesPage {
    pub page: Option<u32>,
    /// Per direction (default `api.pagination.default_page_size`).
    pub page_size: Option<u32>,
}

/// Get an asset's inbound and outbound dependencies, with the last 24 hours' traffic.
#[utoipa::path(get, path = "/assets/{id}/dependencies", tag = "assets",
    params(("id" = Uuid, Path, description = "asset id"), AssetDependenciesPage),
    responses((status = 200, body = AssetDependencies), (status = 404, body = Problem)))]
async fn asset_dependencies(
    State(state): State<AppState>,
    _: Viewer,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<AssetDependenciesPage>,
) -> Result<ApiJson<AssetDependencies>, ApiError> {
    let page = PageRequest::resolve(q.page, q.page_size, &state.config.api.pagination)?;
    let mut tx = read_snapshot(&state.pool).await?;
    fetch_asset(&mut tx, id).await?;
    // A hub has thousands of clients, each row with a 24-hour aggregate: one page per
    // direction, each count bounded.
    let mut side =
        async |column: &'static str| -> Result<(Vec<DependencyWithStats>, i64), ApiError> {
            let where_ = |qb: &mut QueryBuilder<'_, Postgres>| {
                qb.push(format_args!(" WHERE d.{column} = ")).push_bind(id);
                Ok(())
            };
            let total: i64 = bounded_count("dependencies d", page, where_)?
                .build_query_scalar()
                .fetch_one(&mut *tx)
                .await?;
            let rows = sqlx::query_as::<_, DependencyWithStats>(&format!(
                "{DEPENDENCY_SELECT} WHERE d.{column} = $1
             ORDER BY d.total_bytes DESC NULLS LAST, d.id LIMIT $2 OFFSET $3"
            ))
            .bind(id)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *tx)
            .await?;
            Ok((rows, total))
        };
    let (outbound, outbound_counted) = side("source_asset_id").await?;
    let (inbound, inbound_counted) = side("target_asset_id").await?;
    tx.commit().await?;
    let cap = i64::from(page.max_count);
    Ok(ApiJson(AssetDependencies {
        asset_id: id,
        outbound,
        inbound,
        page: page.page,
        page_size: page.page_size,
        outbound_total: outbound_counted.min(cap),
        inbound_total: inbound_counted.min(cap),
        total_capped: outbound_counted > cap || inbound_counted > cap,
    }))
}

/// Hours of `GET /assets/{id}/traffic` (one bucket each).
const TRAFFIC_HOURS: usize = 24;

/// At most this many dependencies get a series of their own (the busiest); the
/// direction totals still count every one.
const TRAFFIC_MAX_SERIES: usize = 200;

/// An asset's traffic over the last 24 hours, hour by hour, from `flow_stats`: per
/// direction and per dependency (what the console draws beside each dependency).
#[derive(Debug, Serialize, ToSchema)]
pub struct AssetTraffic {
    pub asset_id: Uuid,
    /// The first bucket's start (the hour 23 hours before the current one).
    pub start: DateTime<Utc>,
    /// Width of a bucket (3600).
    pub bucket_seconds: u32,
    /// Bytes per hour where this asset is the client (24 values, oldest first).
    pub outbound_bytes: Vec<i64>,
    /// Bytes per hour where this asset is the server.
    pub inbound_bytes: Vec<i64>,
    /// The busiest dependencies' series (at most 200), busiest first.
    pub dependencies: Vec<DependencyTraffic>,
}

/// One dependency's hourly traffic.
#[derive(Debug, Serialize, ToSchema)]
pub struct DependencyTraffic {
    pub dependency_id: Uuid,
    /// True when the asset is the dependency's client.
    pub outbound: bool,
    /// Bytes per hour, oldest first.
    pub bytes: Vec<i64>,
    /// Flows per hour, oldest first.
    pub flows: Vec<i64>,
}

/// Get an asset's hourly traffic over the last 24 hours, in all and per dependency.
#[utoipa::path(get, path = "/assets/{id}/traffic", tag = "assets",
    params(("id" = Uuid, Path, description = "asset id")),
    responses((status = 200, body = AssetTraffic), (status = 404, body = Problem)))]
async fn asset_traffic(
    State(state): State<AppState>,
    _: Viewer,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<AssetTraffic>, ApiError> {
    let now = Utc::now();
    let hour = now.timestamp() - now.timestamp().rem_euclid(3600);
    // The current hour is the last bucket.
    let start = DateTime::from_timestamp(hour - 23 * 3600, 0).unwrap_or(now);
    let mut tx = read_snapshot(&state.pool).await?;
    fetch_asset(&mut tx, id).await?;
    // Both indexes of flow_stats (by source, by target) serve the OR; the join names
    // each row's dependency by its 4-tuple.
    let rows: Vec<(Uuid, bool, i32, i64, i64)> = sqlx::query_as(
        "SELECT d.id, d.source_asset_id = $1 AS outbound,
                floor(extract(epoch FROM f.time - $2) / 3600)::int4 AS bucket,
                sum(f.byte_count)::int8, sum(f.flow_count)::int8
         FROM flow_stats f
         JOIN dependencies d ON d.source_asset_id = f.source_asset_id
                            AND d.target_asset_id = f.target_asset_id
                            AND d.protocol = f.protocol AND d.port = f.port
         WHERE (f.source_asset_id = $1 OR f.target_asset_id = $1)
           AND f.time >= $2 AND f.time < $2 + interval '24 hours'
         GROUP BY 1, 2, 3",
    )
    .bind(id)
    .bind(start)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut outbound_bytes = vec![0i64; TRAFFIC_HOURS];
    let mut inbound_bytes = vec![0i64; TRAFFIC_HOURS];
    let mut series: std::collections::HashMap<Uuid, DependencyTraffic> =
        std::collections::HashMap::new();
    for (dependency_id, outbound, bucket, bytes, flows) in rows {
        let Some(b) = usize::try_from(bucket).ok().filter(|b| *b < TRAFFIC_HOURS) else {
            continue;
        };
        let side = if outbound {
            &mut outbound_bytes
        } else {
            &mut inbound_bytes
        };
        side[b] = side[b].saturating_add(bytes);
        let s = series
            .entry(dependency_id)
            .or_insert_with(|| DependencyTraffic {
                dependency_id,
                outbound,
                bytes: vec![0; TRAFFIC_HOURS],
                flows: vec![0; TRAFFIC_HOURS],
            });
        s.bytes[b] = s.bytes[b].saturating_add(bytes);
        s.flows[b] = s.flows[b].saturating_add(flows);
    }
    let mut dependencies: Vec<DependencyTraffic> = series.into_values().collect();
    dependencies.sort_by_cached_key(|d| {
        (
            std::cmp::Reverse(d.bytes.iter().fold(0i64, |a, b| a.saturating_add(*b))),
            d.dependency_id,
        )
    });
    dependencies.truncate(TRAFFIC_MAX_SERIES);
    Ok(ApiJson(AssetTraffic {
        asset_id: id,
        start,
        bucket_seconds: 3600,
        outbound_bytes,
        inbound_bytes,
        dependencies,
    }))
}

#[cfg(test)]
mod tests {
    use super::is_mac_address;

    #[test]
    fn mac_addresses_in_postgresqls_input_forms() {
        for ok in [
            "08:00:2b:01:02:03",
            "08-00-2B-01-02-03",
            "08002b:010203",
            "08002b-010203",
            "0800.2b01.0203",
            "0800-2b01-0203",
            "08002b010203",
        ] {
            assert!(is_mac_address(ok), "{ok}");
        }
        for bad in [
            "nope",
            "",
            "08:00:2b:01:02",
            "08:00:2b:01:02:03:04",
            "08:00:2b:01:0203",
            "0g:00:2b:01:02:03",
            "08::002b:01:02:03",
        ] {
            assert!(!is_mac_address(bad), "{bad}");
        }
    }
}
