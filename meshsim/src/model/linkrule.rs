//! The link rule: which pairs are linked, and the parameters geometry gives them.
//!
//! The rule is stated in the model's module docs: candidates within `max_latency_ms`, each
//! node's k nearest by (distance, id), linked iff each is among the other's nearest.
//!
//! Requiring both sides ("mutual nearest") is what makes links symmetric without any node
//! exceeding k links: a one-sided rule (link if either side chose the other) lets a node in
//! a crowd collect many more links than k, and an order-dependent greedy rule would make the
//! mesh depend on the order nodes were added. This rule depends only on the positions, ids and
//! settings, so any two evaluations of the same mesh agree.

use std::{cmp::Ordering, collections::BTreeMap};

use super::{LinkParams, Node, NodeId, Pair, Settings};

/// The linked pairs of `nodes` and their derived (unpinned) parameters.
///
/// O(n² + n·c·log k) for n nodes with c candidates each: every change re-evaluates the whole
/// rule, which takes well under a millisecond at 500 nodes and can never drift from it.
pub(crate) fn derive_links(
    nodes: &BTreeMap<NodeId, Node>,
    settings: &Settings,
) -> BTreeMap<Pair, LinkParams> {
    let nodes: Vec<&Node> = nodes.values().collect();
    let nearest: Vec<Vec<usize>> = (0..nodes.len())
        .map(|i| nearest(&nodes, i, settings))
        .collect();
    let mut links = BTreeMap::new();
    for (i, chosen) in nearest.iter().enumerate() {
        for &j in chosen.iter().filter(|&&j| j > i) {
            if nearest[j].binary_search(&i).is_ok() {
                let (a, b) = (nodes[i], nodes[j]);
                // `nodes` is sorted by id and i < j, so a.id < b.id.
                links.insert(Pair::ordered(a.id, b.id), derived_params(a, b, settings));
            }
        }
    }
    links
}

/// Indices (into `nodes`, which is sorted by id) of node `i`'s nearest candidates, ascending.
fn nearest(nodes: &[&Node], i: usize, settings: &Settings) -> Vec<usize> {
    let me = nodes[i];
    let mut candidates: Vec<(f64, usize)> = nodes
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .map(|(j, other)| (me.distance_sq(other), j))
        .filter(|&(d2, _)| settings.latency_ms(d2.sqrt()) <= settings.max_latency_ms)
        .collect();
    // Index order is id order, so comparing indices breaks distance ties by id.
    let rank = |x: &(f64, usize), y: &(f64, usize)| -> Ordering {
        x.0.total_cmp(&y.0).then(x.1.cmp(&y.1))
    };
    let k = settings.neighbours as usize;
    if candidates.len() > k {
        candidates.select_nth_unstable_by(k, rank);
        candidates.truncate(k);
    }
    let mut chosen: Vec<usize> = candidates.into_iter().map(|(_, j)| j).collect();
    chosen.sort_unstable();
    chosen
}

/// The parameters a link between `a` and `b` gets from the settings alone.
fn derived_params(a: &Node, b: &Node, settings: &Settings) -> LinkParams {
    let latency_ms = settings.latency_ms(a.distance_sq(b).sqrt());
    LinkParams {
        latency_ms,
        jitter_ms: settings.jitter_ms,
        bandwidth_bps: settings.derived_bandwidth_bps(latency_ms),
        loss_pct: settings.loss_pct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testkit::Rng;

    fn mesh(points: &[(f64, f64)]) -> BTreeMap<NodeId, Node> {
        points
            .iter()
            .enumerate()
            .map(|(i, &(x, y))| {
                let id = NodeId(i as u32 + 1);
                (id, Node::new(id, x, y).unwrap())
            })
            .collect()
    }

    fn degrees(links: &BTreeMap<Pair, LinkParams>) -> BTreeMap<NodeId, usize> {
        let mut degrees = BTreeMap::new();
        for pair in links.keys() {
            *degrees.entry(pair.a()).or_default() += 1;
            *degrees.entry(pair.b()).or_default() += 1;
        }
        degrees
    }

    /// The rule as the doc comment states it, by brute force: sort every candidate.
    fn naive(nodes: &BTreeMap<NodeId, Node>, settings: &Settings) -> Vec<Pair> {
        let nearest = |a: &Node| -> Vec<NodeId> {
            let mut c: Vec<&Node> = nodes
                .values()
                .filter(|b| b.id != a.id)
                .filter(|b| settings.latency_ms(a.distance_sq(b).sqrt()) <= settings.max_latency_ms)
                .collect();
            c.sort_by(|x, y| {
                a.distance_sq(x)
                    .total_cmp(&a.distance_sq(y))
                    .then(x.id.cmp(&y.id))
            });
            c.iter()
                .take(settings.neighbours as usize)
                .map(|n| n.id)
                .collect()
        };
        let mut pairs = Vec::new();
        for a in nodes.values() {
            for b in nearest(a) {
                if a.id < b && nearest(&nodes[&b]).contains(&a.id) {
                    pairs.push(Pair::new(a.id, b).unwrap());
                }
            }
        }
        pairs.sort();
        pairs
    }

    #[test]
    fn neighbour_cap_holds_in_a_crowd() {
        // 30 nodes within a few pixels: everyone is everyone's candidate.
        let mut rng = Rng::new(1);
        let points: Vec<_> = (0..30)
            .map(|_| (rng.f64_in(0.0, 5.0), rng.f64_in(0.0, 5.0)))
            .collect();
        for k in 1..=6 {
            let settings = Settings {
                neighbours: k,
                ..Settings::default()
            };
            let links = derive_links(&mesh(&points), &settings);
            assert!(!links.is_empty());
            assert!(degrees(&links).values().all(|&d| d <= k as usize));
        }
    }

    #[test]
    fn rule_matches_its_statement_on_random_meshes() {
        let mut rng = Rng::new(2);
        for _ in 0..200 {
            let n = rng.below(40) as usize + 2;
            let side = rng.f64_in(50.0, 1500.0);
            // Snap to a coarse grid now and then so equal distances (ties) actually occur.
            let snap = rng.below(2) == 0;
            let points: Vec<_> = (0..n)
                .map(|_| {
                    let (x, y) = (rng.f64_in(0.0, side), rng.f64_in(0.0, side));
                    if snap {
                        ((x / 50.0).round() * 50.0, (y / 50.0).round() * 50.0)
                    } else {
                        (x, y)
                    }
                })
                .collect();
            let settings = Settings {
                neighbours: rng.below(6) as u32 + 1,
                max_latency_ms: rng.f64_in(50.0, 400.0),
                latency_scale_pct: rng.f64_in(50.0, 150.0),
                ..Settings::default()
            };
            let nodes = mesh(&points);
            let links = derive_links(&nodes, &settings);
            assert_eq!(
                links.keys().copied().collect::<Vec<_>>(),
                naive(&nodes, &settings)
            );
            let cap = settings.neighbours as usize;
            assert!(degrees(&links).values().all(|&d| d <= cap));
            for params in links.values() {
                assert!(params.latency_ms <= settings.max_latency_ms);
            }
        }
    }

    #[test]
    fn distance_ties_go_to_the_lower_id() {
        // n1 in the middle, n2..n5 at distance 100 on all four sides; n1 may keep two.
        let nodes = mesh(&[
            (0.0, 0.0),
            (100.0, 0.0),
            (0.0, 100.0),
            (-100.0, 0.0),
            (0.0, -100.0),
        ]);
        let settings = Settings {
            neighbours: 2,
            ..Settings::default()
        };
        let linked_to_n1: Vec<NodeId> = derive_links(&nodes, &settings)
            .keys()
            .filter(|p| p.a() == NodeId(1))
            .map(|p| p.b())
            .collect();
        assert_eq!(linked_to_n1, [NodeId(2), NodeId(3)]);
    }

    #[test]
    fn pairs_beyond_max_latency_are_not_linked() {
        let nodes = mesh(&[(0.0, 0.0), (300.0, 0.0), (600.5, 0.0)]);
        let links = derive_links(&nodes, &Settings::default());
        let pairs: Vec<Pair> = links.keys().copied().collect();
        assert_eq!(
            pairs,
            [Pair::new(NodeId(1), NodeId(2)).unwrap()],
            "300 ms is within reach, 300.5 ms is not"
        );
        let scaled = Settings {
            latency_scale_pct: 40.0,
            ..Settings::default()
        };
        let links = derive_links(&nodes, &scaled);
        assert_eq!(links.len(), 3, "at 40% every pair is within 300 ms");
        assert_eq!(links[&pairs[0]].latency_ms, 120.0);
    }
}
