//! Blast radius: the worst case when one asset fails, as assets, services and one score.
//!
//! It is [`impact`](super::impact) taken pessimistically: every affected asset is
//! treated as down, since nothing in the flow data says whether it degrades gracefully.
//! That turns the affected set into a set of lost services, and both into a score an
//! operator can sort a fleet by. O(V + E) per query.

use serde::Serialize;
use uuid::Uuid;

use super::impact::{Impact, dependents};
use super::service::{ServiceKey, consumer_count};
use super::{Graph, index};

/// Depth of an asset the failure does not reach.
const UNAFFECTED: u32 = u32::MAX;

/// What fails with an asset, and how badly.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BlastRadius {
    /// The same answer [`impact_of_asset`](super::impact::impact_of_asset) gives.
    pub impact: Impact,
    /// Sorted by depth, then by service key.
    pub affected_services: Vec<AffectedService>,
    /// 0 to 100, see [`blast_radius`].
    pub score: f64,
}

/// A service none of whose providers survives the failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AffectedService {
    pub service: ServiceKey,
    /// All of them, the failed asset or affected ones, sorted by id.
    pub providers: Vec<Uuid>,
    /// Distinct assets using the service, its providers aside.
    pub consumers: u32,
    /// When the last provider goes: 0 when the failed asset was the only one, else the
    /// largest depth among the providers.
    pub depth: u32,
}

/// The blast radius of `asset` failing; `None` when the asset is unknown.
///
/// **Affected services.** A service (a `(protocol, port, service name)` group of
/// dependencies, see [`ServiceKey`]) is lost when every one of its providers is the
/// failed asset or an affected one (within `max_depth`), and at least one asset consumes
/// it. That covers the services only the failed asset offered (`depth` 0) and the ones
/// whose every replica depends, directly or not, on it (an app tier behind one database);
/// a service with one surviving provider is not lost, since clients can fail over.
///
/// **Score.** `100 * sum(1 / depth) / (node_count - 1)` over the affected assets,
/// rounded to two decimals. A direct dependent counts 1, one two hops away 1/2, and so on:
/// the further from the failure, the more caches, retries and fallbacks stand between,
/// so distant assets weigh less without being ignored. Dividing by every other asset in
/// the snapshot makes 100 mean "every other asset depends directly on this one", and
/// makes scores comparable across assets of one snapshot. A truncated search
/// (`impact.truncated`) gives a lower bound. Sums run in the sorted order of
/// `impact.affected`, so equal snapshots give bit-identical scores.
pub fn blast_radius(g: &Graph, asset: Uuid, max_depth: Option<u32>) -> Option<BlastRadius> {
    let failed = g.node_index(asset)?;
    let reach = dependents(g, failed, 0, max_depth);

    let mut depth_of = vec![UNAFFECTED; g.node_count()];
    depth_of[failed as usize] = 0;
    for &(node, depth) in &reach.found {
        depth_of[node as usize] = depth;
    }
    let mut affected_services: Vec<AffectedService> = g
        .services
        .iter()
        .filter(|s| !s.consumers.is_empty())
        .filter_map(|s| {
            let depth = s
                .providers
                .iter()
                .map(|&p| depth_of[p as usize])
                .try_fold(0, |deepest, d| (d != UNAFFECTED).then_some(deepest.max(d)))?;
            Some(AffectedService {
                service: s.key.clone(),
                providers: s.providers.iter().map(|&p| g.node_id(p)).collect(),
                consumers: consumer_count(s),
                depth,
            })
        })
        .collect();
    affected_services.sort_by(|a, b| {
        a.depth
            .cmp(&b.depth)
            .then_with(|| a.service.cmp(&b.service))
    });

    let impact = reach.into_impact(g);
    let score = score(&impact, g.node_count());
    Some(BlastRadius {
        impact,
        affected_services,
        score,
    })
}

fn score(impact: &Impact, node_count: usize) -> f64 {
    let others = index(node_count.saturating_sub(1));
    if others == 0 {
        return 0.0;
    }
    let weight: f64 = impact
        .affected
        .iter()
        .map(|a| 1.0 / f64::from(a.depth))
        .sum();
    let score = (100.0 * weight / f64::from(others)).min(100.0);
    (score * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::fixtures::{edge, graph, id, node};
    use crate::graph::impact::impact_of_asset;

    fn services(b: &BlastRadius) -> Vec<(i32, u32, u32)> {
        b.affected_services
            .iter()
            .map(|s| (s.service.port, s.consumers, s.depth))
            .collect()
    }

    #[test]
    fn chain_scores_by_inverse_depth() {
        let g = graph(1..=4, &[(1, 2), (2, 3), (3, 4)]);
        let b = blast_radius(&g, id(4), None).unwrap();
        assert_eq!(b.impact, impact_of_asset(&g, id(4), None).unwrap());
        // (1 + 1/2 + 1/3) / 3 = 61.11%.
        assert!((b.score - 61.11).abs() < 1e-9, "{}", b.score);
        // The fixture puts every dependency on one service (port 8000): 2, 3 and 4
        // provide it, 1 alone only consumes it, and it is gone once 2 falls at depth 2.
        assert_eq!(services(&b), [(8000, 1, 2)]);
        assert_eq!(b.affected_services[0].providers, [id(2), id(3), id(4)]);

        let leaf = blast_radius(&g, id(1), None).unwrap();
        assert!(leaf.score.abs() < f64::EPSILON);
        assert!(leaf.affected_services.is_empty());
    }

    #[test]
    fn star_hub_scores_100() {
        let g = graph(1..=5, &[(2, 1), (3, 1), (4, 1), (5, 1)]);
        let b = blast_radius(&g, id(1), None).unwrap();
        assert!((b.score - 100.0).abs() < 1e-9);
        assert_eq!(services(&b), [(8000, 4, 0)]);
    }

    #[test]
    fn a_surviving_replica_keeps_the_service() {
        // 1 and 2 both consume postgresql from 10 and 11; 10 fails.
        let pg = Some("postgresql");
        let g = Graph::new(
            [1, 2, 10, 11].map(node).to_vec(),
            vec![
                edge(1, 10, 0, 5432, pg),
                edge(1, 11, 0, 5432, pg),
                edge(2, 10, 0, 5432, pg),
                edge(2, 11, 0, 5432, pg),
            ],
        );
        let b = blast_radius(&g, id(10), None).unwrap();
        assert_eq!(b.impact.total_affected, 2);
        assert!(b.affected_services.is_empty());
    }

    #[test]
    fn replicas_behind_one_database_lose_their_service_at_the_deepest_provider() {
        // Web 1 uses app 2 and 3 (http 80); 2 uses db 4 directly, 3 through cache 5.
        let g = Graph::new(
            (1..=5).map(node).collect(),
            vec![
                edge(1, 2, 0, 80, Some("http")),
                edge(1, 3, 0, 80, Some("http")),
                edge(2, 4, 0, 5432, Some("postgresql")),
                edge(3, 5, 0, 6379, Some("redis")),
                edge(5, 4, 0, 5432, Some("postgresql")),
            ],
        );
        let b = blast_radius(&g, id(4), None).unwrap();
        // postgresql at 0 (only 4), redis at 1 (5), http at 2 (3 falls at depth 2).
        assert_eq!(services(&b), [(5432, 2, 0), (6379, 1, 1), (80, 1, 2)]);
        assert_eq!(b.affected_services[2].providers, [id(2), id(3)]);

        // Capped at depth 1, 3 is not reached, so http survives through it.
        let capped = blast_radius(&g, id(4), Some(1)).unwrap();
        assert!(capped.impact.truncated);
        assert_eq!(services(&capped), [(5432, 2, 0), (6379, 1, 1)]);
        assert!(capped.score < b.score);
    }

    #[test]
    fn cycle_and_parallel_edges_count_each_asset_once() {
        let g = graph(1..=3, &[(1, 2), (1, 2), (2, 3), (3, 1)]);
        let b = blast_radius(&g, id(3), None).unwrap();
        // 2 at depth 1, 1 at depth 2: (1 + 1/2) / 2.
        assert!((b.score - 75.0).abs() < 1e-9);
        assert!(b.score <= 100.0);
    }

    #[test]
    fn isolated_and_unknown_assets() {
        let g = graph(1..=3, &[(1, 2)]);
        let b = blast_radius(&g, id(3), None).unwrap();
        assert_eq!(b.impact.total_affected, 0);
        assert!(b.score.abs() < f64::EPSILON);
        assert_eq!(blast_radius(&g, id(9), None), None);

        let alone = blast_radius(&graph(1..=1, &[]), id(1), None).unwrap();
        assert!(alone.score.abs() < f64::EPSILON);
    }
}
