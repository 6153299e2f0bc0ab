//! Shortest-path routing: a next hop for every (source, destination) pair.
//!
//! Dijkstra (petgraph) runs from every node over the links, with integer link costs so that
//! path sums are exact: equal-cost paths are then really equal, and which one wins is decided
//! by the tie rule below, not by floating-point rounding order.
//!
//! Tie rule: paths compare by total cost, then by hop count; the next hop from `s` towards
//! `d` is the lowest-id neighbour `v` of `s` that begins such a best path, i.e. with
//! `cost(s, v) + dist(v, d) == dist(s, d)`. Following next hops therefore never loops: each
//! step strictly lowers the remaining (cost, hops), and hops fall even over zero-cost links.

use std::{collections::BTreeMap, ops::Add};

use petgraph::{
    algo::dijkstra,
    graph::{NodeIndex, UnGraph},
    visit::EdgeRef,
};
use serde::{Deserialize, Serialize};

use super::{CostMetric, LinkParams, NodeId, Pair};

/// Routing cost of a bit/s of bandwidth: `cost = BANDWIDTH_COST_SCALE / bandwidth_bps`, i.e.
/// picoseconds per bit, exact in integers for any bandwidth up to 1 Tbit/s.
pub const BANDWIDTH_COST_SCALE: u64 = 1_000_000_000_000;

/// One entry of a node's routing table: packets from `src` to `dst` go to `next_hop` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Route {
    pub src: NodeId,
    pub dst: NodeId,
    pub next_hop: NodeId,
}

/// Next hops by (src, dst), for reachable pairs only: a missing entry means unreachable.
pub(crate) type RouteTable = BTreeMap<(NodeId, NodeId), NodeId>;

/// The integer routing cost of a link under `metric`: latency in nanoseconds, or
/// [`BANDWIDTH_COST_SCALE`]` / bandwidth_bps` (an unlimited link, bandwidth 0, costs 0).
pub fn link_cost(params: &LinkParams, metric: CostMetric) -> u64 {
    match metric {
        // Latencies are checked to at most an hour, so this neither saturates nor overflows
        // when summed along a path.
        CostMetric::Latency => (params.latency_ms * 1e6).round() as u64,
        CostMetric::Bandwidth => BANDWIDTH_COST_SCALE
            .checked_div(params.bandwidth_bps)
            .unwrap_or(0),
    }
}

/// A path's length as routing ranks it: total cost first, then hops. Field order matters:
/// the derived `Ord` compares `cost` before `hops`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct PathCost {
    cost: u64,
    hops: u32,
}

impl PathCost {
    fn link(cost: u64) -> Self {
        Self { cost, hops: 1 }
    }
}

impl Add for PathCost {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            cost: self.cost.saturating_add(other.cost),
            hops: self.hops.saturating_add(other.hops),
        }
    }
}

/// Next hops for every reachable (src, dst) pair among `nodes` (sorted ascending), over
/// undirected links with the given costs.
///
/// O(n · m log n) for the n Dijkstra runs plus O(n² · k) to pick next hops (k = degree).
pub(crate) fn next_hops(
    nodes: &[NodeId],
    links: impl IntoIterator<Item = (Pair, u64)>,
) -> RouteTable {
    let index = |id: NodeId| {
        nodes
            .binary_search(&id)
            .map(NodeIndex::new)
            .expect("links join known nodes")
    };
    let mut graph = UnGraph::<(), u64>::with_capacity(nodes.len(), nodes.len() * 3);
    for _ in nodes {
        graph.add_node(());
    }
    for (pair, cost) in links {
        graph.add_edge(index(pair.a()), index(pair.b()), cost);
    }

    let n = nodes.len();
    // dist[d][v]: best path from d to v, which is also the best from v to d (links are
    // undirected). Reading next hops by destination row keeps the lookups below in one row.
    let dist: Vec<Vec<Option<PathCost>>> = graph
        .node_indices()
        .map(|src| {
            let mut row = vec![None; n];
            for (v, score) in dijkstra(&graph, src, None, |e| PathCost::link(*e.weight())) {
                row[v.index()] = Some(score);
            }
            row
        })
        .collect();

    // Each node's neighbours by ascending id (= index), so the first fit is the lowest id.
    let adjacency: Vec<Vec<(usize, u64)>> = graph
        .node_indices()
        .map(|v| {
            let mut out: Vec<(usize, u64)> = graph
                .edges(v)
                .map(|e| {
                    let other = if e.source() == v {
                        e.target()
                    } else {
                        e.source()
                    };
                    (other.index(), *e.weight())
                })
                .collect();
            out.sort_unstable();
            out
        })
        .collect();

    // hop[s * n + d]: index of the next hop from s to d, if d is reachable.
    let mut hop: Vec<Option<usize>> = vec![None; n * n];
    for (d, to_d) in dist.iter().enumerate() {
        for s in (0..n).filter(|&s| s != d) {
            let Some(best) = to_d[s] else { continue };
            hop[s * n + d] = adjacency[s]
                .iter()
                .find(|&&(v, cost)| to_d[v].map(|rest| PathCost::link(cost) + rest) == Some(best))
                .map(|&(v, _)| v);
            debug_assert!(hop[s * n + d].is_some(), "a best path has a first hop");
        }
    }
    // Row-major order is (src, dst) order, so the map is built from sorted input in one go.
    hop.iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| ((nodes[i / n], nodes[i % n]), nodes[v])))
        .collect()
}

/// [`next_hops`] over the links that are not cut, and for pairs that have no path without
/// the cut links, over all of them (see `model::cut`). Following these next hops never
/// loops either: while the destination is unreachable without cut links, each hop follows
/// the full graph's best path and lowers its remaining cost; once it is reachable without
/// them it stays so along that graph's best path, which never crosses back.
pub(crate) fn next_hops_avoiding(
    nodes: &[NodeId],
    links: impl IntoIterator<Item = (Pair, u64, bool)> + Clone,
) -> RouteTable {
    let uncut = links
        .clone()
        .into_iter()
        .filter(|&(_, _, cut)| !cut)
        .map(|(pair, cost, _)| (pair, cost));
    let mut routes = next_hops(nodes, uncut);
    if links.clone().into_iter().any(|(_, _, cut)| cut) {
        let all = links.into_iter().map(|(pair, cost, _)| (pair, cost));
        for (key, hop) in next_hops(nodes, all) {
            routes.entry(key).or_insert(hop);
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testkit::{Rng, check_routes, check_routes_by_optimality};

    fn ids(n: u32) -> Vec<NodeId> {
        (1..=n).map(NodeId).collect()
    }

    fn pair(a: u32, b: u32) -> Pair {
        Pair::new(NodeId(a), NodeId(b)).unwrap()
    }

    #[test]
    fn routes_are_shortest_and_loop_free_on_random_graphs() {
        // Arbitrary graphs, not only geometric ones: small costs (so ties abound), zero-cost
        // links, and several components.
        let mut rng = Rng::new(3);
        for _ in 0..200 {
            let n = rng.below(39) as u32 + 2;
            let nodes = ids(n);
            let density = rng.f64_in(0.0, 0.3);
            let mut links = Vec::new();
            for a in 1..=n {
                for b in a + 1..=n {
                    if rng.f64_in(0.0, 1.0) < density {
                        links.push((pair(a, b), rng.below(4)));
                    }
                }
            }
            let routes = next_hops(&nodes, links.iter().copied());
            check_routes(&nodes, &links, &routes);
            check_routes_by_optimality(&nodes, &links, &routes);
        }
    }

    #[test]
    fn equal_cost_paths_go_through_the_lowest_id() {
        // n1 reaches n4 through n2 or n3 at equal cost.
        let links = [
            (pair(1, 3), 5),
            (pair(3, 4), 5),
            (pair(1, 2), 5),
            (pair(2, 4), 5),
        ];
        let routes = next_hops(&ids(4), links);
        assert_eq!(routes[&(NodeId(1), NodeId(4))], NodeId(2));
        assert_eq!(routes[&(NodeId(4), NodeId(1))], NodeId(2));
    }

    #[test]
    fn equal_cost_prefers_fewer_hops() {
        // n1-n3 direct costs 2; n1-n2-n3 costs 1 + 1: same cost, one hop fewer wins, even
        // though n2 has the lower id.
        let links = [(pair(1, 2), 1), (pair(2, 3), 1), (pair(1, 3), 2)];
        let routes = next_hops(&ids(3), links);
        assert_eq!(routes[&(NodeId(1), NodeId(3))], NodeId(3));
    }

    #[test]
    fn unlinked_nodes_are_unreachable() {
        let routes = next_hops(&ids(3), [(pair(1, 2), 1)]);
        assert_eq!(routes.len(), 2);
        assert!(!routes.contains_key(&(NodeId(1), NodeId(3))));
    }

    #[test]
    fn costs_follow_the_metric() {
        let params = LinkParams {
            latency_ms: 1.5,
            jitter_ms: 0.0,
            bandwidth_bps: 512_000,
            loss_pct: 0.0,
        };
        assert_eq!(link_cost(&params, CostMetric::Latency), 1_500_000);
        assert_eq!(link_cost(&params, CostMetric::Bandwidth), 1_953_125);
        let unlimited = LinkParams {
            bandwidth_bps: 0,
            ..params
        };
        assert_eq!(link_cost(&unlimited, CostMetric::Bandwidth), 0);
    }

    #[test]
    fn cut_links_are_avoided_where_a_path_remains_and_kept_where_none_does() {
        // A square n1-n2-n3-n4-n1 with n1-n2 cut: n1 reaches n2 around the square; a
        // pendant n5 behind a cut link n4-n5 keeps its only path, over the cut.
        let links = [
            (pair(1, 2), 1, true),
            (pair(2, 3), 1, false),
            (pair(3, 4), 1, false),
            (pair(1, 4), 1, false),
            (pair(4, 5), 1, true),
        ];
        let routes = next_hops_avoiding(&ids(5), links);
        assert_eq!(routes[&(NodeId(1), NodeId(2))], NodeId(4));
        assert_eq!(routes[&(NodeId(2), NodeId(1))], NodeId(3));
        assert_eq!(routes[&(NodeId(1), NodeId(5))], NodeId(4));
        assert_eq!(routes[&(NodeId(5), NodeId(2))], NodeId(4));
        assert_eq!(routes.len(), 20, "every pair keeps a route");
    }

    #[test]
    fn routes_around_cuts_never_loop() {
        let mut rng = Rng::new(11);
        for _ in 0..200 {
            let n = rng.below(25) as u32 + 2;
            let nodes = ids(n);
            let mut links = Vec::new();
            for a in 1..=n {
                for b in a + 1..=n {
                    if rng.f64_in(0.0, 1.0) < 0.25 {
                        links.push((pair(a, b), rng.below(4), rng.f64_in(0.0, 1.0) < 0.3));
                    }
                }
            }
            let routes = next_hops_avoiding(&nodes, links.iter().copied());
            let all: Vec<(Pair, u64)> = links.iter().map(|&(p, c, _)| (p, c)).collect();
            // Reachability is the full graph's; every path ends at its destination.
            assert_eq!(routes.len(), next_hops(&nodes, all.iter().copied()).len());
            for &(src, dst) in routes.keys() {
                let mut at = src;
                for _ in 0..=n {
                    if at == dst {
                        break;
                    }
                    at = routes[&(at, dst)];
                }
                assert_eq!(at, dst, "{src} to {dst} loops");
            }
        }
    }
}
