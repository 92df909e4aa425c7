//! Paths between two assets: how a client reaches a server through the dependency chain
//! (`directed`), or how two assets are connected at all (undirected).
//!
//! Both searches start with a breadth-first search from the destination, backwards,
//! giving every asset its distance to the destination. The shortest path is then a
//! greedy walk that always steps to the smallest-id neighbour one hop closer, which makes
//! it the lexicographically smallest shortest path: the same answer on every run, and the
//! first path [`all_paths`] lists. The same distances prune the enumeration of all paths:
//! a branch that cannot reach the destination within its remaining hops is never explored.

use serde::Serialize;
use uuid::Uuid;

use super::{Adjacency, Graph, index};

/// A node the backward search never reached.
const UNREACHED: u32 = u32::MAX;

/// One asset on a path and the dependency crossed to get there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PathStep {
    pub asset: Uuid,
    /// The dependency between the previous step's asset and this one; `None` on the
    /// first step. Among parallel dependencies (several ports between the same two
    /// assets, or, undirected, dependencies in both directions) it is the one with the
    /// smallest id, so the answer does not depend on row order.
    pub dependency: Option<Uuid>,
}

/// Simple paths between two assets, shortest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AllPaths {
    /// Each path lists its assets, `from` first and `to` last. Ordered by length, then
    /// lexicographically by asset ids.
    pub paths: Vec<Vec<Uuid>>,
    /// More than `max_paths` paths exist within `max_depth`; the ones listed are the first
    /// in the order above.
    pub truncated: bool,
}

/// A shortest path from `from` to `to`, with the fewest dependency hops.
///
/// `directed` follows dependencies from client to server (`from` depends, through the
/// path, on `to`); otherwise direction is ignored. `None` when either asset is unknown or
/// `to` cannot be reached; `from == to` gives the one-step path `[from]`. Among several
/// shortest paths, the one whose asset ids are lexicographically smallest.
pub fn shortest_path(g: &Graph, from: Uuid, to: Uuid, directed: bool) -> Option<Vec<PathStep>> {
    let start = g.node_index(from)?;
    let goal = g.node_index(to)?;
    let mut steps = vec![PathStep {
        asset: from,
        dependency: None,
    }];
    if start == goal {
        return Some(steps);
    }
    let dist = distances_to(g, goal, directed, Some(start), u32::MAX);
    if dist[start as usize] == UNREACHED {
        return None;
    }
    let forward = forward(g, directed);
    let mut at = start;
    while at != goal {
        let closer = dist[at as usize] - 1;
        // Rows are sorted by (neighbour, edge): the first match is the smallest
        // neighbour, through its smallest parallel edge. One always exists, since `at`
        // got its distance from such a neighbour.
        let half = forward
            .of(at)
            .iter()
            .find(|h| dist[h.node as usize] == closer)?;
        steps.push(PathStep {
            asset: g.node_id(half.node),
            dependency: Some(g.edge_id(half.edge)),
        });
        at = half.node;
    }
    Some(steps)
}

/// Every simple path (no asset twice) from `from` to `to` with at most `max_depth`
/// dependency hops, up to `max_paths` of them.
///
/// A path is a sequence of assets: parallel dependencies between two assets make one hop,
/// not several paths, since they fail together when either asset does. Unknown assets give
/// no paths; `from == to` gives the zero-length path `[from]`.
///
/// The number of simple paths can grow exponentially with `max_depth`; the caller bounds
/// both limits. The search goes length by length (the graph is re-walked once per length)
/// so it can stop as soon as `max_paths + 1` paths are known, in order.
pub fn all_paths(
    g: &Graph,
    from: Uuid,
    to: Uuid,
    directed: bool,
    max_depth: u32,
    max_paths: usize,
) -> AllPaths {
    let (Some(start), Some(goal)) = (g.node_index(from), g.node_index(to)) else {
        return AllPaths {
            paths: Vec::new(),
            truncated: false,
        };
    };
    if start == goal {
        return if max_paths == 0 {
            AllPaths {
                paths: Vec::new(),
                truncated: true,
            }
        } else {
            AllPaths {
                paths: vec![vec![from]],
                truncated: false,
            }
        };
    }
    // A simple path has at most V - 1 hops.
    let longest = max_depth.min(u32::try_from(g.node_count() - 1).unwrap_or(u32::MAX));
    let dist = distances_to(g, goal, directed, None, longest);
    let mut search = Enumeration {
        forward: forward(g, directed),
        dist: &dist,
        goal,
        on_path: vec![false; g.node_count()],
        found: Vec::new(),
        wanted: max_paths.saturating_add(1),
    };
    let shortest = dist[start as usize];
    if shortest != UNREACHED {
        for length in shortest..=longest {
            if search.paths_of_length(start, length) {
                break;
            }
        }
    }
    let truncated = search.found.len() > max_paths;
    search.found.truncate(max_paths);
    AllPaths {
        paths: search
            .found
            .iter()
            .map(|path| path.iter().map(|&n| g.node_id(n)).collect())
            .collect(),
        truncated,
    }
}

fn forward(g: &Graph, directed: bool) -> &Adjacency {
    if directed { &g.out } else { &g.und }
}

/// Hops from every node to `goal` (following edges when `directed`), by a breadth-first
/// search over the reversed edges. Stops once `stop` is settled, or past `limit` hops;
/// nodes not reached by then are [`UNREACHED`].
fn distances_to(g: &Graph, goal: u32, directed: bool, stop: Option<u32>, limit: u32) -> Vec<u32> {
    let backward = if directed { &g.inc } else { &g.und };
    let mut dist = vec![UNREACHED; g.node_count()];
    dist[goal as usize] = 0;
    let mut queue = vec![goal];
    let mut head = 0;
    while let Some(&node) = queue.get(head) {
        head += 1;
        // Every node closer than `stop` has been settled before it is dequeued, which is
        // all the greedy walk looks at.
        if Some(node) == stop {
            break;
        }
        let next = dist[node as usize] + 1;
        if next > limit {
            continue;
        }
        for half in backward.of(node) {
            if dist[half.node as usize] == UNREACHED {
                dist[half.node as usize] = next;
                queue.push(half.node);
            }
        }
    }
    dist
}

/// State of the depth-first enumeration of simple paths to `goal`.
struct Enumeration<'g> {
    forward: &'g Adjacency,
    dist: &'g [u32],
    goal: u32,
    on_path: Vec<bool>,
    found: Vec<Vec<u32>>,
    /// Stop once this many paths are known (`max_paths + 1`, to tell truncation).
    wanted: usize,
}

impl Enumeration<'_> {
    /// Appends every simple path from `start` to the goal with exactly `length` hops, in
    /// lexicographic order; true once `wanted` paths are known. Iterative, with an explicit
    /// cursor per level, so a long `max_depth` cannot overflow the stack.
    fn paths_of_length(&mut self, start: u32, length: u32) -> bool {
        let forward = self.forward;
        let mut path = vec![start];
        let mut cursors = vec![0_usize];
        self.on_path[start as usize] = true;
        while let (Some(&at), Some(cursor)) = (path.last(), cursors.last_mut()) {
            let row = forward.of(at);
            let hops_left = length - index(path.len());
            let mut next = None;
            while *cursor < row.len() {
                let candidate = row[*cursor].node;
                *cursor += 1;
                // Parallel edges are contiguous: one hop per neighbour.
                if *cursor >= 2 && row[*cursor - 2].node == candidate {
                    continue;
                }
                if self.on_path[candidate as usize] {
                    continue;
                }
                if candidate == self.goal {
                    if hops_left == 0 {
                        let mut done = path.clone();
                        done.push(candidate);
                        self.found.push(done);
                        if self.found.len() >= self.wanted {
                            self.unwind(&path);
                            return true;
                        }
                    }
                    continue;
                }
                // `dist` is at least 1 away from the goal, so this also rejects
                // stepping anywhere but the goal on the last hop.
                if self.dist[candidate as usize] > hops_left {
                    continue;
                }
                next = Some(candidate);
                break;
            }
            if let Some(node) = next {
                self.on_path[node as usize] = true;
                path.push(node);
                cursors.push(0);
            } else {
                self.on_path[at as usize] = false;
                path.pop();
                cursors.pop();
            }
        }
        false
    }

    fn unwind(&mut self, path: &[u32]) {
        for &node in path {
            self.on_path[node as usize] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::fixtures::{dep, dep_nth, graph, id};

    fn assets(steps: &[PathStep]) -> Vec<u128> {
        steps.iter().map(|s| s.asset.as_u128()).collect()
    }

    fn listed(all: &AllPaths) -> Vec<Vec<u128>> {
        all.paths
            .iter()
            .map(|p| p.iter().map(Uuid::as_u128).collect())
            .collect()
    }

    #[test]
    fn chain_directed_follows_dependencies_only_forwards() {
        let g = graph(1..=4, &[(1, 2), (2, 3), (3, 4)]);
        let path = shortest_path(&g, id(1), id(4), true).unwrap();
        assert_eq!(assets(&path), [1, 2, 3, 4]);
        assert_eq!(
            path.iter().map(|s| s.dependency).collect::<Vec<_>>(),
            [None, Some(dep(1, 2)), Some(dep(2, 3)), Some(dep(3, 4))]
        );
        assert_eq!(shortest_path(&g, id(4), id(1), true), None);

        let back = shortest_path(&g, id(4), id(1), false).unwrap();
        assert_eq!(assets(&back), [4, 3, 2, 1]);
        // Undirected steps still name the dependency they cross, whatever its direction.
        assert_eq!(back[1].dependency, Some(dep(3, 4)));
    }

    #[test]
    fn diamond_picks_the_smallest_ids_among_equal_lengths() {
        let g = graph(1..=4, &[(1, 3), (1, 2), (3, 4), (2, 4)]);
        let path = shortest_path(&g, id(1), id(4), true).unwrap();
        assert_eq!(assets(&path), [1, 2, 4]);

        let all = all_paths(&g, id(1), id(4), true, 10, 10);
        assert_eq!(listed(&all), [vec![1, 2, 4], vec![1, 3, 4]]);
        assert!(!all.truncated);
    }

    #[test]
    fn all_paths_orders_by_length_then_ids_and_truncates() {
        // 1 -> 4 directly, 1 -> 2 -> 4, 1 -> 3 -> 4, 1 -> 2 -> 3 -> 4.
        let g = graph(1..=4, &[(1, 4), (1, 2), (1, 3), (2, 4), (3, 4), (2, 3)]);
        let all = all_paths(&g, id(1), id(4), true, 3, 10);
        assert_eq!(
            listed(&all),
            [vec![1, 4], vec![1, 2, 4], vec![1, 3, 4], vec![1, 2, 3, 4]]
        );
        assert!(!all.truncated);

        let two = all_paths(&g, id(1), id(4), true, 3, 2);
        assert_eq!(listed(&two), [vec![1, 4], vec![1, 2, 4]]);
        assert!(two.truncated);

        // Exactly as many as exist: not truncated.
        assert!(!all_paths(&g, id(1), id(4), true, 3, 4).truncated);

        let short = all_paths(&g, id(1), id(4), true, 1, 10);
        assert_eq!(listed(&short), [vec![1, 4]]);
        assert!(!short.truncated);

        let none = all_paths(&g, id(1), id(4), true, 3, 0);
        assert!(none.paths.is_empty());
        assert!(none.truncated);
    }

    #[test]
    fn star_connects_spokes_only_undirected() {
        let g = graph(1..=5, &[(2, 1), (3, 1), (4, 1), (5, 1)]);
        assert_eq!(shortest_path(&g, id(2), id(3), true), None);
        assert_eq!(
            assets(&shortest_path(&g, id(2), id(3), false).unwrap()),
            [2, 1, 3]
        );
        assert_eq!(
            listed(&all_paths(&g, id(2), id(5), false, 4, 10)),
            [vec![2, 1, 5]]
        );
        assert!(all_paths(&g, id(2), id(5), true, 4, 10).paths.is_empty());
    }

    #[test]
    fn cycle_paths_are_simple() {
        let g = graph(1..=4, &[(1, 2), (2, 3), (3, 4), (4, 1)]);
        assert_eq!(
            assets(&shortest_path(&g, id(4), id(3), true).unwrap()),
            [4, 1, 2, 3]
        );
        assert_eq!(
            assets(&shortest_path(&g, id(4), id(3), false).unwrap()),
            [4, 3]
        );
        let all = all_paths(&g, id(1), id(3), false, 10, 10);
        assert_eq!(listed(&all), [vec![1, 2, 3], vec![1, 4, 3]]);
    }

    #[test]
    fn parallel_edges_are_one_hop_and_the_smallest_id_is_named() {
        // Three dependencies 1 -> 2 (ports 8000..8002), one 2 -> 1 back, and 2 -> 3.
        let g = graph(1..=3, &[(1, 2), (1, 2), (1, 2), (2, 1), (2, 3)]);
        let path = shortest_path(&g, id(1), id(3), true).unwrap();
        assert_eq!(path[1].dependency, Some(dep_nth(1, 2, 0)));
        // Undirected, from 2 to 1: dep(1, 2) sorts before dep(2, 1).
        let back = shortest_path(&g, id(2), id(1), false).unwrap();
        assert_eq!(back[1].dependency, Some(dep(1, 2)));

        let all = all_paths(&g, id(1), id(3), true, 5, 10);
        assert_eq!(listed(&all), [vec![1, 2, 3]]);
        assert_eq!(
            listed(&all_paths(&g, id(1), id(2), false, 5, 10)),
            [vec![1, 2]]
        );
    }

    #[test]
    fn disconnected_parts_have_no_path() {
        let g = graph(1..=4, &[(1, 2), (3, 4)]);
        assert_eq!(shortest_path(&g, id(1), id(4), false), None);
        let all = all_paths(&g, id(1), id(4), false, 5, 5);
        assert!(all.paths.is_empty());
        assert!(!all.truncated);
    }

    #[test]
    fn same_asset_is_a_zero_length_path() {
        let g = graph(1..=2, &[(1, 2)]);
        let path = shortest_path(&g, id(1), id(1), true).unwrap();
        assert_eq!(
            path,
            [PathStep {
                asset: id(1),
                dependency: None
            }]
        );
        assert_eq!(listed(&all_paths(&g, id(1), id(1), true, 0, 1)), [vec![1]]);
        assert!(all_paths(&g, id(1), id(1), true, 0, 0).truncated);
    }

    #[test]
    fn unknown_assets_have_no_path() {
        let g = graph(1..=2, &[(1, 2)]);
        assert_eq!(shortest_path(&g, id(1), id(9), false), None);
        assert_eq!(shortest_path(&g, id(9), id(1), false), None);
        assert_eq!(shortest_path(&g, id(9), id(9), false), None);
        assert!(all_paths(&g, id(9), id(1), false, 3, 3).paths.is_empty());
    }
}
