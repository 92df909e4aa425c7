//! The neighbourhood of an asset: what the topology view shows "around" it.

use uuid::Uuid;

use super::Graph;

/// Every asset within `depth` hops of `center`, ignoring direction (a topology view
/// around a database shows its clients as well as what it uses), `center` first, then
/// by distance and id. `None` when the asset is unknown.
pub fn neighbourhood(g: &Graph, center: Uuid, depth: u32) -> Option<Vec<Uuid>> {
    let start = g.node_index(center)?;
    let mut dist = vec![u32::MAX; g.node_count()];
    dist[start as usize] = 0;
    let mut order = vec![start];
    let mut head = 0;
    while head < order.len() {
        let n = order[head];
        head += 1;
        let d = dist[n as usize];
        if d == depth {
            continue;
        }
        let mut next: Vec<u32> = g
            .und
            .of(n)
            .iter()
            .map(|h| h.node)
            .filter(|&m| dist[m as usize] == u32::MAX)
            .collect();
        next.dedup();
        for m in next {
            if dist[m as usize] == u32::MAX {
                dist[m as usize] = d + 1;
                order.push(m);
            }
        }
    }
    // BFS order is by distance; within a distance, sort by id for stable answers.
    order[1..].sort_by_key(|&n| (dist[n as usize], n));
    Some(order.into_iter().map(|n| g.node_id(n)).collect())
}

/// The dependencies (current ones: the graph holds no stale edge) whose two ends are
/// both among `assets`, found through the adjacency lists rather than by scanning every
/// edge, sorted by id. Unknown ids are ignored.
pub fn edges_within(g: &Graph, assets: &[Uuid]) -> Vec<Uuid> {
    let mut inside: Vec<u32> = assets.iter().filter_map(|&a| g.node_index(a)).collect();
    inside.sort_unstable();
    inside.dedup();
    let mut edges: Vec<Uuid> = inside
        .iter()
        .flat_map(|&n| g.out.of(n).iter())
        .filter(|h| inside.binary_search(&h.node).is_ok())
        .map(|h| g.edge_id(h.edge))
        .collect();
    edges.sort_unstable();
    edges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{EdgeInput, NodeInput};

    fn id(n: u8) -> Uuid {
        Uuid::from_u128(u128::from(n))
    }

    fn graph(edges: &[(u8, u8)]) -> Graph {
        let mut nodes: Vec<u8> = edges.iter().flat_map(|&(a, b)| [a, b]).collect();
        nodes.push(9);
        nodes.sort_unstable();
        nodes.dedup();
        Graph::new(
            nodes
                .into_iter()
                .map(|n| NodeInput {
                    id: id(n),
                    name: None,
                    asset_type: "server".into(),
                    is_internal: Some(true),
                })
                .collect(),
            edges
                .iter()
                .enumerate()
                .map(|(i, &(a, b))| EdgeInput {
                    id: Uuid::from_u128(1000 + i as u128),
                    source: id(a),
                    target: id(b),
                    protocol: 6,
                    port: 443,
                    service: None,
                    total_bytes: 0,
                })
                .collect(),
        )
    }

    #[test]
    fn depth_bounds_the_view_in_both_directions() {
        // 1 -> 2 -> 3 -> 4, and 5 -> 2; 9 is isolated.
        let g = graph(&[(1, 2), (2, 3), (3, 4), (5, 2), (1, 2)]);
        assert_eq!(neighbourhood(&g, id(2), 0).unwrap(), vec![id(2)]);
        assert_eq!(
            neighbourhood(&g, id(2), 1).unwrap(),
            vec![id(2), id(1), id(3), id(5)]
        );
        assert_eq!(neighbourhood(&g, id(2), 2).unwrap().len(), 5);
        assert_eq!(neighbourhood(&g, id(9), 3).unwrap(), vec![id(9)]);
        assert!(neighbourhood(&g, id(42), 1).is_none());
    }

    #[test]
    fn edges_within_keeps_both_ends_inside() {
        // Edge ids are 1000 + position; the repeated (1, 2) is a parallel edge.
        let g = graph(&[(1, 2), (2, 3), (3, 4), (5, 2), (1, 2)]);
        let e = |i: u128| Uuid::from_u128(1000 + i);
        assert_eq!(
            edges_within(&g, &[id(1), id(2), id(3)]),
            vec![e(0), e(1), e(4)]
        );
        assert_eq!(edges_within(&g, &[id(4), id(42)]), Vec::<Uuid>::new());
    }
}
