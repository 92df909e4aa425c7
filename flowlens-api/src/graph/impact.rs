//! Impact: who is affected, and how far away, when an asset or one dependency fails.
//!
//! Failure travels against the edges: if `a -> b` (a depends on b) and b fails, a is
//! affected. So the impact of b is reverse reachability from b, found by one
//! breadth-first search over the incoming adjacency; breadth-first gives every affected
//! asset its minimal depth for free. O(V + E) per query, one `Vec<bool>` of scratch.

use serde::Serialize;
use uuid::Uuid;

use super::{Graph, index};

/// One affected asset and its distance from the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AffectedAsset {
    pub asset: Uuid,
    /// The fewest dependency hops from this asset to the failure: 1 for a direct
    /// dependent. The shortest chain is what an operator can follow to explain why it
    /// broke.
    pub depth: u32,
}

/// Everything a failure reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Impact {
    /// Sorted by depth, then by asset id, so equal snapshots give equal responses.
    pub affected: Vec<AffectedAsset>,
    pub total_affected: u32,
    /// `by_depth[i]` is how many assets are affected at depth `i + 1`; no trailing zeros.
    pub by_depth: Vec<u32>,
    /// `max_depth` stopped the search while more assets were still reachable: the counts
    /// are a lower bound.
    pub truncated: bool,
}

/// Every asset that depends, transitively, on `asset`; `None` when the asset is unknown.
///
/// `max_depth` bounds the depth reported (`Some(0)` reports nothing and only says,
/// through `truncated`, whether anyone depends on the asset). The asset itself is never
/// listed, even on a cycle back to it: it is the failure, not a casualty.
pub fn impact_of_asset(g: &Graph, asset: Uuid, max_depth: Option<u32>) -> Option<Impact> {
    let start = g.node_index(asset)?;
    Some(dependents(g, start, 0, max_depth).into_impact(g))
}

/// What breaks when one dependency (one client -> service edge) fails; `None` when the
/// dependency is unknown.
///
/// Only the client loses something: the source is affected at depth 1 and everything
/// that transitively depends on it one level further. The target still serves its other
/// clients, so it is not affected by the failure as such; it is listed only if it
/// itself depends, transitively, on the source (a cycle), like any other dependent.
pub fn impact_of_dependency(g: &Graph, dependency: Uuid, max_depth: Option<u32>) -> Option<Impact> {
    let edge = g.edge_index(dependency)?;
    let (source, _) = g.ends[edge as usize];
    Some(dependents(g, source, 1, max_depth).into_impact(g))
}

/// The raw result of a reverse search, in node indices.
#[derive(Debug, Clone)]
pub(super) struct Reach {
    /// `(node, depth)` in breadth-first order, so depths never decrease.
    pub(super) found: Vec<(u32, u32)>,
    pub(super) truncated: bool,
}

/// Reverse breadth-first search from `start`. With `start_depth` 0 the start is the
/// failed asset and is not reported; with 1 it is the first casualty and is.
pub(super) fn dependents(g: &Graph, start: u32, start_depth: u32, max_depth: Option<u32>) -> Reach {
    let limit = max_depth.unwrap_or(u32::MAX);
    let mut seen = vec![false; g.node_count()];
    seen[start as usize] = true;
    let mut found = Vec::new();
    if start_depth > 0 {
        if start_depth > limit {
            return Reach {
                found,
                truncated: true,
            };
        }
        found.push((start, start_depth));
    }
    let mut queue = vec![(start, start_depth)];
    let mut head = 0;
    let mut truncated = false;
    while let Some(&(node, depth)) = queue.get(head) {
        head += 1;
        for half in g.inc.of(node) {
            if seen[half.node as usize] {
                continue;
            }
            if depth >= limit {
                // An unseen dependent one level past the limit: more exists.
                truncated = true;
                break;
            }
            seen[half.node as usize] = true;
            queue.push((half.node, depth + 1));
            found.push((half.node, depth + 1));
        }
    }
    Reach { found, truncated }
}

impl Reach {
    pub(super) fn into_impact(mut self, g: &Graph) -> Impact {
        // Breadth-first order already groups by depth; node indices follow ids.
        self.found
            .sort_unstable_by_key(|&(node, depth)| (depth, node));
        let deepest = self.found.last().map_or(0, |&(_, depth)| depth);
        let mut by_depth = vec![0_u32; deepest as usize];
        for &(_, depth) in &self.found {
            by_depth[depth as usize - 1] += 1;
        }
        Impact {
            affected: self
                .found
                .iter()
                .map(|&(node, depth)| AffectedAsset {
                    asset: g.node_id(node),
                    depth,
                })
                .collect(),
            total_affected: index(self.found.len()),
            by_depth,
            truncated: self.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::fixtures::{dep, graph, id};

    fn affected(impact: &Impact) -> Vec<(u128, u32)> {
        impact
            .affected
            .iter()
            .map(|a| (a.asset.as_u128(), a.depth))
            .collect()
    }

    #[test]
    fn chain_reports_each_dependent_at_its_distance() {
        // 1 -> 2 -> 3 -> 4: 1 depends on 2, ...
        let g = graph(1..=4, &[(1, 2), (2, 3), (3, 4)]);
        let impact = impact_of_asset(&g, id(4), None).unwrap();
        assert_eq!(affected(&impact), [(3, 1), (2, 2), (1, 3)]);
        assert_eq!(impact.total_affected, 3);
        assert_eq!(impact.by_depth, [1, 1, 1]);
        assert!(!impact.truncated);

        let leaf = impact_of_asset(&g, id(1), None).unwrap();
        assert!(leaf.affected.is_empty());
        assert!(leaf.by_depth.is_empty());
        assert!(!leaf.truncated);
    }

    #[test]
    fn max_depth_cuts_and_says_so() {
        let g = graph(1..=4, &[(1, 2), (2, 3), (3, 4)]);
        let impact = impact_of_asset(&g, id(4), Some(2)).unwrap();
        assert_eq!(affected(&impact), [(3, 1), (2, 2)]);
        assert!(impact.truncated);

        // Exactly deep enough: nothing left beyond, so not truncated.
        let exact = impact_of_asset(&g, id(4), Some(3)).unwrap();
        assert_eq!(exact.total_affected, 3);
        assert!(!exact.truncated);

        let zero = impact_of_asset(&g, id(4), Some(0)).unwrap();
        assert!(zero.affected.is_empty());
        assert!(zero.truncated);
        assert!(!impact_of_asset(&g, id(1), Some(0)).unwrap().truncated);
    }

    #[test]
    fn diamond_counts_the_shared_dependent_once_at_its_minimal_depth() {
        // 1 -> 2 -> 4, 1 -> 3 -> 4, and 1 -> 4 directly.
        let g = graph(1..=4, &[(1, 2), (1, 3), (2, 4), (3, 4), (1, 4)]);
        let impact = impact_of_asset(&g, id(4), None).unwrap();
        assert_eq!(affected(&impact), [(1, 1), (2, 1), (3, 1)]);
        assert_eq!(impact.by_depth, [3]);
    }

    #[test]
    fn star_hub_affects_every_spoke() {
        let g = graph(1..=5, &[(2, 1), (3, 1), (4, 1), (5, 1)]);
        let impact = impact_of_asset(&g, id(1), None).unwrap();
        assert_eq!(impact.total_affected, 4);
        assert_eq!(impact.by_depth, [4]);
        assert_eq!(impact_of_asset(&g, id(2), None).unwrap().total_affected, 0);
    }

    #[test]
    fn cycle_never_lists_the_failed_asset() {
        let g = graph(1..=3, &[(1, 2), (2, 3), (3, 1), (1, 1)]);
        let impact = impact_of_asset(&g, id(1), None).unwrap();
        assert_eq!(affected(&impact), [(3, 1), (2, 2)]);
    }

    #[test]
    fn parallel_edges_and_other_components_do_not_change_the_answer() {
        let g = graph(
            1..=5,
            &[(1, 2), (1, 2), (1, 2), (4, 5)], // 3 is isolated, 4 -> 5 is elsewhere
        );
        let impact = impact_of_asset(&g, id(2), None).unwrap();
        assert_eq!(affected(&impact), [(1, 1)]);
        assert_eq!(impact_of_asset(&g, id(3), None).unwrap().total_affected, 0);
    }

    #[test]
    fn unknown_ids_give_none() {
        let g = graph(1..=2, &[(1, 2)]);
        assert_eq!(impact_of_asset(&g, id(99), None), None);
        assert_eq!(impact_of_dependency(&g, id(99), None), None);
    }

    #[test]
    fn dependency_failure_hits_the_source_first_not_the_target() {
        // 0 -> 1 -> 2 (edge dep(1, 2)), and 3 -> 2 too.
        let g = graph(0..=3, &[(0, 1), (1, 2), (3, 2)]);
        let impact = impact_of_dependency(&g, dep(1, 2), None).unwrap();
        assert_eq!(affected(&impact), [(1, 1), (0, 2)]);
        assert_eq!(impact.by_depth, [1, 1]);
        assert!(!impact.truncated);

        let capped = impact_of_dependency(&g, dep(1, 2), Some(1)).unwrap();
        assert_eq!(affected(&capped), [(1, 1)]);
        assert!(capped.truncated);

        let zero = impact_of_dependency(&g, dep(1, 2), Some(0)).unwrap();
        assert!(zero.affected.is_empty());
        assert!(zero.truncated);
    }

    #[test]
    fn dependency_target_is_listed_only_when_it_depends_on_the_source() {
        // 1 -> 2 and 2 -> 1: losing 1's dependency on 2 breaks 1, and 2 through 1.
        let g = graph(1..=2, &[(1, 2), (2, 1)]);
        let impact = impact_of_dependency(&g, dep(1, 2), None).unwrap();
        assert_eq!(affected(&impact), [(1, 1), (2, 2)]);
    }
}
