//! Test helpers: a seeded PRNG and an independent check of a routing table (the model_ops
//! fuzz target uses the check too).

use std::collections::BTreeMap;

use super::{NodeId, Pair, routing::RouteTable};

/// SplitMix64: tiny, seeded, and good enough to spread test meshes around.
#[cfg(test)]
pub(crate) struct Rng(u64);

#[cfg(test)]
impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..hi`.
    pub(crate) fn f64_in(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + unit * (hi - lo)
    }
}

/// Asserts that `routes` is exactly the table of shortest, loop-free paths over `links`:
/// for every ordered pair, a route exists iff both ends are in one component, following next
/// hops over real links reaches the destination within n - 1 hops, and the path's (cost,
/// hops) equals the best one, computed here by Floyd–Warshall and union–find rather than
/// Dijkstra.
pub(crate) fn check_routes(nodes: &[NodeId], links: &[(Pair, u64)], routes: &RouteTable) {
    let n = nodes.len();
    let at = |id: NodeId| nodes.binary_search(&id).unwrap();
    let cost: BTreeMap<Pair, u64> = links.iter().copied().collect();

    let mut best: Vec<Vec<Option<(u64, u32)>>> = vec![vec![None; n]; n];
    let mut component: Vec<usize> = (0..n).collect();
    fn root(component: &mut [usize], mut i: usize) -> usize {
        while component[i] != i {
            component[i] = component[component[i]];
            i = component[i];
        }
        i
    }
    for (i, row) in best.iter_mut().enumerate() {
        row[i] = Some((0, 0));
    }
    for (&pair, &c) in &cost {
        let (a, b) = (at(pair.a()), at(pair.b()));
        best[a][b] = Some((c, 1));
        best[b][a] = Some((c, 1));
        let (ra, rb) = (root(&mut component, a), root(&mut component, b));
        component[ra] = rb;
    }
    for k in 0..n {
        for i in 0..n {
            for j in 0..n {
                if let (Some((c1, h1)), Some((c2, h2))) = (best[i][k], best[k][j]) {
                    let through = (c1 + c2, h1 + h2);
                    if best[i][j].is_none_or(|b| through < b) {
                        best[i][j] = Some(through);
                    }
                }
            }
        }
    }

    let mut reachable_pairs = 0;
    for s in 0..n {
        for d in (0..n).filter(|&d| d != s) {
            let (src, dst) = (nodes[s], nodes[d]);
            let connected = root(&mut component, s) == root(&mut component, d);
            assert_eq!(
                routes.contains_key(&(src, dst)),
                connected,
                "route {src}->{dst} present iff connected"
            );
            if !connected {
                continue;
            }
            reachable_pairs += 1;
            let (mut here, mut total, mut hops) = (src, 0, 0);
            while here != dst {
                assert!(hops < n as u32 - 1, "{src}->{dst} loops");
                let next = routes[&(here, dst)];
                let link = Pair::new(here, next).unwrap();
                total += cost
                    .get(&link)
                    .unwrap_or_else(|| panic!("{src}->{dst} hops over non-link {link}"));
                hops += 1;
                here = next;
            }
            assert_eq!(
                Some((total, hops)),
                best[s][d],
                "{src}->{dst} is not a shortest path"
            );
        }
    }
    assert_eq!(routes.len(), reachable_pairs, "routes for unknown pairs");
}

/// The same verdict as [`check_routes`] in O(n²·k) instead of O(n³), for large meshes: the
/// path costs P found by following next hops are real paths (no loops, only links), and they
/// satisfy Bellman's optimality condition P(s, d) <= cost(s, v) + P(v, d) for every neighbour
/// v of s. Real path costs can only be at least the shortest distances, and the condition,
/// applied along a shortest path from its end backwards, makes them at most those distances.
pub(crate) fn check_routes_by_optimality(
    nodes: &[NodeId],
    links: &[(Pair, u64)],
    routes: &RouteTable,
) {
    let n = nodes.len();
    let at = |id: NodeId| nodes.binary_search(&id).unwrap();
    let mut adjacency: Vec<Vec<(usize, u64)>> = vec![Vec::new(); n];
    let mut component: Vec<usize> = (0..n).collect();
    fn root(component: &mut [usize], mut i: usize) -> usize {
        while component[i] != i {
            component[i] = component[component[i]];
            i = component[i];
        }
        i
    }
    for &(pair, cost) in links {
        let (a, b) = (at(pair.a()), at(pair.b()));
        adjacency[a].push((b, cost));
        adjacency[b].push((a, cost));
        let (ra, rb) = (root(&mut component, a), root(&mut component, b));
        component[ra] = rb;
    }

    let mut reachable_pairs = 0;
    for d in 0..n {
        // P(s, d) as (cost, hops), filled by walking each source's chain of next hops.
        let mut path: Vec<Option<(u64, u32)>> = vec![None; n];
        path[d] = Some((0, 0));
        for s in (0..n).filter(|&s| s != d) {
            let connected = root(&mut component, s) == root(&mut component, d);
            let route = routes.get(&(nodes[s], nodes[d]));
            assert_eq!(
                route.is_some(),
                connected,
                "route {}->{} iff connected",
                nodes[s],
                nodes[d]
            );
            if !connected {
                continue;
            }
            reachable_pairs += 1;
            let (mut chain, mut here) = (vec![s], s);
            while path[here].is_none() {
                assert!(chain.len() <= n, "{}->{} loops", nodes[s], nodes[d]);
                here = at(routes[&(nodes[here], nodes[d])]);
                chain.push(here);
            }
            // Every node of the chain but the last is new: fill them in from the end.
            let mut known = path[here].unwrap();
            for step in chain.windows(2).rev() {
                let (from, to) = (step[0], step[1]);
                let cost = adjacency[from]
                    .iter()
                    .find(|&&(v, _)| v == to)
                    .unwrap_or_else(|| panic!("{}->{} hops over a non-link", nodes[s], nodes[d]))
                    .1;
                known = (known.0 + cost, known.1 + 1);
                path[from] = Some(known);
            }
        }
        for s in (0..n).filter(|&s| s != d) {
            let Some(mine) = path[s] else { continue };
            for &(v, cost) in &adjacency[s] {
                let (c, h) = path[v].expect("a neighbour of a connected node is connected");
                assert!(
                    mine <= (c + cost, h + 1),
                    "{}->{} is longer than going through {}",
                    nodes[s],
                    nodes[d],
                    nodes[v]
                );
            }
        }
    }
    assert_eq!(routes.len(), reachable_pairs, "routes for unknown pairs");
}

#[cfg(test)]
mod tests {
    use std::panic::catch_unwind;

    use super::*;

    /// The checks must fail on a table that is wrong, or the property tests prove nothing.
    #[test]
    fn route_checks_reject_detours_loops_and_missing_routes() {
        // A square n1-n2-n3-n4-n1 with unit costs plus an expensive diagonal n1-n3.
        let nodes: Vec<NodeId> = (1..=4).map(NodeId).collect();
        let pair = |a, b| Pair::new(NodeId(a), NodeId(b)).unwrap();
        let links = [
            (pair(1, 2), 1),
            (pair(2, 3), 1),
            (pair(3, 4), 1),
            (pair(1, 4), 1),
            (pair(1, 3), 5),
        ];
        let good: RouteTable = crate::model::routing::next_hops(&nodes, links);
        check_routes(&nodes, &links, &good);
        check_routes_by_optimality(&nodes, &links, &good);

        let (n1, n2, n3) = (NodeId(1), NodeId(2), NodeId(3));
        let mut detour = good.clone();
        detour.insert((n1, n3), n3);
        let mut looping = good.clone();
        looping.insert((n1, n3), n2);
        looping.insert((n2, n3), n1);
        let mut missing = good.clone();
        missing.remove(&(n1, n3));
        for bad in [detour, looping, missing] {
            let (fw, bellman) = (bad.clone(), bad);
            let (nodes2, nodes3) = (nodes.clone(), nodes.clone());
            assert!(catch_unwind(move || check_routes(&nodes2, &links, &fw)).is_err());
            assert!(
                catch_unwind(move || check_routes_by_optimality(&nodes3, &links, &bellman))
                    .is_err()
            );
        }
    }
}
