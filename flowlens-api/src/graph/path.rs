//! Paths between two assets: how a client reaches a server through the dependency chain
//! (`directed`), or how two assets are connected at all (undirected).
//!
//! Both searches start with a breadth-first search from the destination, backwards,
//! giving every asset its distance to the destination. The shortest path is then a
//! greedy walk that always steps to the smallest-id neighbour one hop closer, which makes
//! it the lexicographically smallest shortest path: the same answer on every run, and the
//! first path [`all_paths`] lists. The enumeration of all paths refines the distances by
//! parity (the shortest even and the shortest odd walk to the destination) and never
//! explores a branch that no walk of the remaining length, hence no path, can complete.
//! That pruning cannot see which assets the path already holds, so on cyclic graphs the
//! enumeration can still wander through exponentially many dead branches; a step budget
//! bounds it.

use serde::Serialize;
use uuid::Uuid;

use super::{Adjacency, Graph, index};

/// A node (or, for [`walks_to`], a node and parity) the backward search never reached.
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
    /// The list may be incomplete: more than `max_paths` paths exist within `max_depth`,
    /// or the search ran out of steps (`api.analysis.max_path_steps`) before it could
    /// tell. Either way the paths listed are the first ones in the order above: a prefix
    /// of the complete answer, never a sample. Truncated with fewer than `max_paths`
    /// paths means the step budget stopped the search; there may be more paths, or none.
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
/// dependency hops, up to `max_paths` of them, spending at most `max_steps` steps.
///
/// A path is a sequence of assets: parallel dependencies between two assets make one hop,
/// not several paths, since they fail together when either asset does. Unknown assets give
/// no paths; `from == to` gives the zero-length path `[from]`.
///
/// The number of simple paths can grow exponentially with `max_depth`, and so can the
/// dead branches explored to find few or none, so the work is bounded by `max_steps`: a
/// step is one adjacency entry (a dependency, or a parallel one, out of the asset at the
/// end of the partial path) examined by the depth-first enumeration, and every other
/// piece of the enumeration's work is O(1) per step, apart from copying each path found.
/// The breadth-first search before it is O(V + E) and not counted. Once the budget is
/// spent the search stops and the answer is `truncated`.
///
/// The search goes length by length (the graph is re-walked once per length, and a length
/// no walk of the right parity reaches is skipped at no cost) and, within one length, in
/// lexicographic order, so it can stop as soon as `max_paths + 1` paths are known, in
/// order. It also means that a budget stop in the middle of length `L` has found every
/// path shorter than `L` and the lexicographically first paths of length `L`: the paths
/// returned are still exactly the first ones of the complete answer, in order.
pub fn all_paths(
    g: &Graph,
    from: Uuid,
    to: Uuid,
    directed: bool,
    max_depth: u32,
    max_paths: usize,
    max_steps: u64,
) -> AllPaths {
    enumerate(g, from, to, directed, max_depth, max_paths, max_steps).0
}

/// [`all_paths`], and the steps it spent (never more than `max_steps`).
pub(super) fn enumerate(
    g: &Graph,
    from: Uuid,
    to: Uuid,
    directed: bool,
    max_depth: u32,
    max_paths: usize,
    max_steps: u64,
) -> (AllPaths, u64) {
    let (Some(start), Some(goal)) = (g.node_index(from), g.node_index(to)) else {
        let none = AllPaths {
            paths: Vec::new(),
            truncated: false,
        };
        return (none, 0);
    };
    if start == goal {
        let only = if max_paths == 0 {
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
        return (only, 0);
    }
    // A simple path has at most V - 1 hops.
    let longest = max_depth.min(u32::try_from(g.node_count() - 1).unwrap_or(u32::MAX));
    let walks = walks_to(g, goal, directed, longest);
    let mut search = Enumeration {
        forward: forward(g, directed),
        walks: &walks,
        goal,
        on_path: vec![false; g.node_count()],
        found: Vec::new(),
        wanted: max_paths.saturating_add(1),
        steps: 0,
        max_steps,
    };
    let mut out_of_steps = false;
    let shortest = walks[start as usize][0].min(walks[start as usize][1]);
    if shortest != UNREACHED {
        for length in shortest..=longest {
            // No walk of this length's parity is this short, so no path is: every other
            // length, between two clients of a client/server (bipartite) graph.
            if walks[start as usize][parity(length)] > length {
                continue;
            }
            match search.paths_of_length(start, length) {
                Ok(()) => {}
                Err(Stop::Enough) => break,
                Err(Stop::OutOfSteps) => {
                    out_of_steps = true;
                    break;
                }
            }
        }
    }
    let truncated = out_of_steps || search.found.len() > max_paths;
    search.found.truncate(max_paths);
    let all = AllPaths {
        paths: search
            .found
            .iter()
            .map(|path| path.iter().map(|&n| g.node_id(n)).collect())
            .collect(),
        truncated,
    };
    (all, search.steps)
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

/// Index of a hop count's parity in a [`walks_to`] entry: 0 even, 1 odd.
fn parity(hops: u32) -> usize {
    (hops & 1) as usize
}

/// For every node, the fewest hops of a walk (assets may repeat) from it to `goal` with
/// an even (`[0]`) and with an odd (`[1]`) number of hops, following edges when
/// `directed` and never through a self-loop, which is no hop; [`UNREACHED`] when no such
/// walk has at most `limit` hops. A breadth-first search over (node, parity) pairs and the
/// reversed edges: twice the work of [`distances_to`].
///
/// A simple path of exactly `k` hops is such a walk, so a node whose entry for `k`'s
/// parity exceeds `k` starts no path of `k` hops. The smaller of the two entries is the
/// plain distance, so this prunes at least as much as it would, and in a bipartite
/// component (clients on one side, servers on the other) the wrong parity is unreached.
fn walks_to(g: &Graph, goal: u32, directed: bool, limit: u32) -> Vec<[u32; 2]> {
    let backward = if directed { &g.inc } else { &g.und };
    let mut dist = vec![[UNREACHED; 2]; g.node_count()];
    dist[goal as usize][0] = 0;
    let mut queue = vec![(goal, 0_usize)];
    let mut head = 0;
    while let Some(&(node, even_or_odd)) = queue.get(head) {
        head += 1;
        let next = dist[node as usize][even_or_odd] + 1;
        if next > limit {
            continue;
        }
        let flipped = even_or_odd ^ 1;
        for half in backward.of(node) {
            let d = &mut dist[half.node as usize][flipped];
            if half.node != node && *d == UNREACHED {
                *d = next;
                queue.push((half.node, flipped));
            }
        }
    }
    dist
}

/// State of the depth-first enumeration of simple paths to `goal`.
struct Enumeration<'g> {
    forward: &'g Adjacency,
    walks: &'g [[u32; 2]],
    goal: u32,
    on_path: Vec<bool>,
    found: Vec<Vec<u32>>,
    /// Stop once this many paths are known (`max_paths + 1`, to tell truncation).
    wanted: usize,
    /// Adjacency entries examined so far, over all lengths.
    steps: u64,
    /// Stop before examining an entry beyond this many.
    max_steps: u64,
}

/// Why an enumeration stopped before it had every path.
enum Stop {
    /// `wanted` paths are known.
    Enough,
    /// The step budget is spent.
    OutOfSteps,
}

impl Enumeration<'_> {
    /// Appends every simple path from `start` to the goal with exactly `length` hops, in
    /// lexicographic order, or stops early (the paths appended so far are still the first
    /// ones in that order). Iterative, with an explicit cursor per level, so a long
    /// `max_depth` cannot overflow the stack.
    fn paths_of_length(&mut self, start: u32, length: u32) -> Result<(), Stop> {
        let forward = self.forward;
        let mut path = vec![start];
        let mut cursors = vec![0_usize];
        self.on_path[start as usize] = true;
        while let (Some(&at), Some(cursor)) = (path.last(), cursors.last_mut()) {
            let row = forward.of(at);
            let hops_left = length - index(path.len());
            let mut next = None;
            while *cursor < row.len() {
                if self.steps >= self.max_steps {
                    self.unwind(&path);
                    return Err(Stop::OutOfSteps);
                }
                self.steps += 1;
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
                            return Err(Stop::Enough);
                        }
                    }
                    continue;
                }
                // Only the goal is 0 hops from the goal, so this also rejects stepping
                // anywhere but the goal on the last hop.
                if self.walks[candidate as usize][parity(hops_left)] > hops_left {
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
        Ok(())
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

    /// A budget no test graph here comes near.
    const UNBOUNDED: u64 = u64::MAX;

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

        let all = all_paths(&g, id(1), id(4), true, 10, 10, UNBOUNDED);
        assert_eq!(listed(&all), [vec![1, 2, 4], vec![1, 3, 4]]);
        assert!(!all.truncated);
    }

    #[test]
    fn all_paths_orders_by_length_then_ids_and_truncates() {
        // 1 -> 4 directly, 1 -> 2 -> 4, 1 -> 3 -> 4, 1 -> 2 -> 3 -> 4.
        let g = graph(1..=4, &[(1, 4), (1, 2), (1, 3), (2, 4), (3, 4), (2, 3)]);
        let all = all_paths(&g, id(1), id(4), true, 3, 10, UNBOUNDED);
        assert_eq!(
            listed(&all),
            [vec![1, 4], vec![1, 2, 4], vec![1, 3, 4], vec![1, 2, 3, 4]]
        );
        assert!(!all.truncated);

        let two = all_paths(&g, id(1), id(4), true, 3, 2, UNBOUNDED);
        assert_eq!(listed(&two), [vec![1, 4], vec![1, 2, 4]]);
        assert!(two.truncated);

        // Exactly as many as exist: not truncated.
        assert!(!all_paths(&g, id(1), id(4), true, 3, 4, UNBOUNDED).truncated);

        let short = all_paths(&g, id(1), id(4), true, 1, 10, UNBOUNDED);
        assert_eq!(listed(&short), [vec![1, 4]]);
        assert!(!short.truncated);

        let none = all_paths(&g, id(1), id(4), true, 3, 0, UNBOUNDED);
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
            listed(&all_paths(&g, id(2), id(5), false, 4, 10, UNBOUNDED)),
            [vec![2, 1, 5]]
        );
        assert!(
            all_paths(&g, id(2), id(5), true, 4, 10, UNBOUNDED)
                .paths
                .is_empty()
        );
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
        let all = all_paths(&g, id(1), id(3), false, 10, 10, UNBOUNDED);
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

        let all = all_paths(&g, id(1), id(3), true, 5, 10, UNBOUNDED);
        assert_eq!(listed(&all), [vec![1, 2, 3]]);
        assert_eq!(
            listed(&all_paths(&g, id(1), id(2), false, 5, 10, UNBOUNDED)),
            [vec![1, 2]]
        );
    }

    #[test]
    fn disconnected_parts_have_no_path() {
        let g = graph(1..=4, &[(1, 2), (3, 4)]);
        assert_eq!(shortest_path(&g, id(1), id(4), false), None);
        let all = all_paths(&g, id(1), id(4), false, 5, 5, UNBOUNDED);
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
        assert_eq!(
            listed(&all_paths(&g, id(1), id(1), true, 0, 1, UNBOUNDED)),
            [vec![1]]
        );
        assert!(all_paths(&g, id(1), id(1), true, 0, 0, UNBOUNDED).truncated);
    }

    #[test]
    fn unknown_assets_have_no_path() {
        let g = graph(1..=2, &[(1, 2)]);
        assert_eq!(shortest_path(&g, id(1), id(9), false), None);
        assert_eq!(shortest_path(&g, id(9), id(1), false), None);
        assert_eq!(shortest_path(&g, id(9), id(9), false), None);
        assert!(
            all_paths(&g, id(9), id(1), false, 3, 3, UNBOUNDED)
                .paths
                .is_empty()
        );
    }

    /// `from` hangs off asset 1, the only way to the destination 2, and 28 assets all
    /// connected to each other and to 1: every one is 2 hops from 2 through 1, so the
    /// distance pruning lets the search into the clique at every length, and only the
    /// path being built (which holds 1) makes every branch there a dead end. There is one
    /// path, `[1, 2]`, and about 27! branches per length up to 29 hops.
    #[test]
    fn dead_branches_stop_at_the_step_budget() {
        const CLIQUE: std::ops::RangeInclusive<u128> = 3..=30;
        let mut pairs = vec![(1, 2)];
        for a in CLIQUE {
            pairs.push((1, a));
            for b in a + 1..=*CLIQUE.end() {
                pairs.push((a, b));
            }
        }
        let g = graph(1..=30, &pairs);
        for budget in [0, 1, 1000, 100_000] {
            let (all, steps) = enumerate(&g, id(1), id(2), false, 50, 100, budget);
            assert!(all.truncated, "{budget}");
            assert_eq!(steps, budget);
            // 2 is the first entry of 1's row: one step finds the path.
            let first: &[Vec<u128>] = if budget >= 1 { &[vec![1, 2]] } else { &[] };
            assert_eq!(listed(&all), first, "{budget}");
        }
        // The public function stops alike.
        assert!(all_paths(&g, id(1), id(2), false, 50, 100, 100_000).truncated);

        // Directed, the same trap: 1 -> 2, 1 -> clique, clique <-> clique, clique -> 1.
        let mut pairs = vec![(1, 2)];
        for a in CLIQUE {
            pairs.extend([(1, a), (a, 1)]);
            for b in CLIQUE.filter(|&b| b != a) {
                pairs.push((a, b));
            }
        }
        let g = graph(1..=30, &pairs);
        let (all, steps) = enumerate(&g, id(1), id(2), true, 50, 100, 100_000);
        assert!(all.truncated);
        assert_eq!(steps, 100_000);
        assert_eq!(listed(&all), [vec![1, 2]]);
    }

    /// The budget stops the search in the middle of a length: what it found are the
    /// first paths, in order, of the complete answer.
    #[test]
    fn a_budget_stop_keeps_the_first_paths_in_order() {
        // Undirected complete graph on 1..=6: paths from 1 to 6 of every length 1..=5.
        let mut pairs = Vec::new();
        for a in 1..=6 {
            for b in a + 1..=6 {
                pairs.push((a, b));
            }
        }
        let g = graph(1..=6, &pairs);
        let (every, needed) = enumerate(&g, id(1), id(6), false, 5, usize::MAX, UNBOUNDED);
        assert!(!every.truncated);
        // 1 + 4 + 4*3 + 4*3*2 + 4*3*2*1 paths.
        assert_eq!(every.paths.len(), 65);
        for budget in 0..needed {
            let (some, steps) = enumerate(&g, id(1), id(6), false, 5, usize::MAX, budget);
            assert!(some.truncated, "{budget}");
            assert_eq!(steps, budget);
            assert_eq!(some.paths[..], every.paths[..some.paths.len()], "{budget}");
        }
        let (exact, steps) = enumerate(&g, id(1), id(6), false, 5, usize::MAX, needed);
        assert_eq!((exact, steps), (every, needed));
    }

    /// Clients 1..=6 and servers 11..=16, every client connected to every server: a path
    /// between two clients has an even number of hops, and odd lengths cost no step.
    #[test]
    fn wrong_parity_lengths_are_skipped() {
        let mut pairs = Vec::new();
        for c in 1..=6 {
            for s in 11..=16 {
                pairs.push((c, s));
            }
        }
        let g = graph((1..=6).chain(11..=16), &pairs);
        let steps = |depth| enumerate(&g, id(1), id(2), false, depth, 100, UNBOUNDED);
        let (two, two_steps) = steps(2);
        assert_eq!(two.paths.len(), 6);
        assert!(!two.truncated);
        let (three, three_steps) = steps(3);
        assert_eq!((&three, three_steps), (&two, two_steps));
        // Length 4: 6 * 5 server pairs times 4 middle clients, 120 more paths.
        let (four, _) = steps(4);
        assert!(four.truncated);
        assert_eq!(four.paths[..6], two.paths[..]);
        assert_eq!(four.paths[6].len(), 5);

        // Client to server: odd lengths only; the even ones cost nothing either.
        let (one, one_steps) = enumerate(&g, id(1), id(11), false, 1, 100, UNBOUNDED);
        assert_eq!(listed(&one), [vec![1, 11]]);
        assert_eq!(
            enumerate(&g, id(1), id(11), false, 2, 100, UNBOUNDED),
            (one, one_steps)
        );
    }

    #[test]
    fn walks_have_the_parity_of_their_hops() {
        // 1 - 2 - 3 - 4 and a triangle 4 - 5 - 6, with a self-loop on 2 that is no hop.
        let g = graph(
            1..=6,
            &[(1, 2), (2, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 4)],
        );
        let w = walks_to(&g, g.node_index(id(1)).unwrap(), false, 10);
        let at = |n| w[g.node_index(id(n)).unwrap() as usize];
        // Going back and forth keeps the parity; only around the triangle changes it.
        assert_eq!(at(1), [0, 9]);
        assert_eq!(at(2), [8, 1]);
        assert_eq!(at(3), [2, 7]);
        assert_eq!(at(4), [6, 3]);
        assert_eq!(at(5), [4, 5]);
        // Within the limit only.
        let short = walks_to(&g, g.node_index(id(1)).unwrap(), false, 5);
        assert_eq!(short[g.node_index(id(4)).unwrap() as usize], [UNREACHED, 3]);
        // Directed: the self-loop still is no hop; 2 -> 1 does not exist.
        let d = walks_to(&g, g.node_index(id(2)).unwrap(), true, 10);
        assert_eq!(d[g.node_index(id(1)).unwrap() as usize], [UNREACHED, 1]);
        assert_eq!(d[g.node_index(id(2)).unwrap() as usize], [0, UNREACHED]);
    }
}
