//! Services: dependencies grouped by what they reach, `(protocol, port, service name)`.
//!
//! A dependency row names the server's asset and the service it offers there. Across
//! the graph, the same `(protocol, port, service)` offered by several assets (three
//! PostgreSQL replicas on 6/5432 "postgresql") is one service with several providers;
//! [`spof`](super::spof) looks for services with a single provider and
//! [`blast_radius`](super::blast_radius) for services that lose all of theirs. The grouping
//! is computed once when the [`Graph`](super::Graph) is built, since both need it.

use serde::{Deserialize, Serialize};

use super::{EdgeInput, index};

/// What identifies a service across assets.
///
/// The name is part of the key because the daemon infers it per dependency: two rows on
/// the same port with different names are, as far as the data says, different services.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct ServiceKey {
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: i16,
    pub port: i32,
    pub service: Option<String>,
}

/// One service and who offers and uses it, as sorted node indices.
#[derive(Debug, Clone)]
pub(super) struct Service {
    pub(super) key: ServiceKey,
    /// Distinct targets of the service's dependencies.
    pub(super) providers: Vec<u32>,
    /// Distinct sources that are not themselves providers of this service: an asset
    /// calling its own service, or one replica calling another, does not lose anything
    /// it lacked before when the service goes down.
    pub(super) consumers: Vec<u32>,
}

/// Groups the kept edges (`ends[i]` are edge `i`'s node indices) by service key.
pub(super) fn group(edges: &[EdgeInput], ends: &[(u32, u32)]) -> Vec<Service> {
    fn key(e: &EdgeInput) -> (i16, i32, Option<&str>) {
        (e.protocol, e.port, e.service.as_deref())
    }
    let mut order: Vec<usize> = (0..edges.len()).collect();
    order.sort_by(|&a, &b| key(&edges[a]).cmp(&key(&edges[b])));

    order
        .chunk_by(|&a, &b| key(&edges[a]) == key(&edges[b]))
        .map(|members| {
            let mut providers: Vec<u32> = members.iter().map(|&e| ends[e].1).collect();
            providers.sort_unstable();
            providers.dedup();
            let mut consumers: Vec<u32> = members.iter().map(|&e| ends[e].0).collect();
            consumers.sort_unstable();
            consumers.dedup();
            consumers.retain(|c| providers.binary_search(c).is_err());
            let first = &edges[members[0]];
            Service {
                key: ServiceKey {
                    protocol: first.protocol,
                    port: first.port,
                    service: first.service.clone(),
                },
                providers,
                consumers,
            }
        })
        .collect()
}

/// How many consumers, as the `u32` the results carry.
pub(super) fn consumer_count(service: &Service) -> u32 {
    index(service.consumers.len())
}
