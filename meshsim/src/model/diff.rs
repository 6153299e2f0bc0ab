//! Diffs: what an operation changed, so the Sim applies only that to the datapath, the
//! routes and the canvas instead of re-applying the whole mesh.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Link, Mesh, Node, NodeId, Route};

/// The change between two states of the model, found by comparing them.
///
/// Added and changed entries carry the new value, removed ones the last value they had. A
/// link counts as changed when its parameters or its pinned fields change (the canvas shows
/// pins). A route becoming unreachable is removed; becoming reachable again is added.
/// Every list is sorted by its key (node id, pair, or (src, dst)).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub nodes_added: Vec<Node>,
    pub nodes_moved: Vec<Node>,
    pub nodes_removed: Vec<Node>,
    pub links_added: Vec<Link>,
    pub links_changed: Vec<Link>,
    pub links_removed: Vec<Link>,
    pub routes_added: Vec<Route>,
    pub routes_changed: Vec<Route>,
    pub routes_removed: Vec<Route>,
}

impl Diff {
    /// True when the operation changed nothing.
    pub fn is_empty(&self) -> bool {
        self.nodes_added.is_empty()
            && self.nodes_moved.is_empty()
            && self.nodes_removed.is_empty()
            && self.links_added.is_empty()
            && self.links_changed.is_empty()
            && self.links_removed.is_empty()
            && self.routes_added.is_empty()
            && self.routes_changed.is_empty()
            && self.routes_removed.is_empty()
    }

    /// The diff that turns the `old` state into the `new` one.
    pub(super) fn between(old: &Mesh, new: &Mesh) -> Self {
        let nodes = Changes::between(&old.nodes, &new.nodes);
        let links = Changes::between(&old.links, &new.links);
        let routes = Changes::between(&old.routes, &new.routes);
        let route =
            |(&(src, dst), &next_hop): (&(NodeId, NodeId), &NodeId)| Route { src, dst, next_hop };
        Self {
            nodes_added: nodes.added.into_iter().map(|(_, n)| n.clone()).collect(),
            nodes_moved: nodes.changed.into_iter().map(|(_, n)| n.clone()).collect(),
            nodes_removed: nodes.removed.into_iter().map(|(_, n)| n.clone()).collect(),
            links_added: links.added.into_iter().map(|(_, l)| l.clone()).collect(),
            links_changed: links.changed.into_iter().map(|(_, l)| l.clone()).collect(),
            links_removed: links.removed.into_iter().map(|(_, l)| l.clone()).collect(),
            routes_added: routes.added.into_iter().map(route).collect(),
            routes_changed: routes.changed.into_iter().map(route).collect(),
            routes_removed: routes.removed.into_iter().map(route).collect(),
        }
    }
}

/// Entries of two maps that differ, in key order.
struct Changes<'a, K, V> {
    /// Only in the new map.
    added: Vec<(&'a K, &'a V)>,
    /// In both with different values; the new value.
    changed: Vec<(&'a K, &'a V)>,
    /// Only in the old map; the old value.
    removed: Vec<(&'a K, &'a V)>,
}

impl<'a, K: Ord, V: PartialEq> Changes<'a, K, V> {
    /// One merge pass over both maps, O(old + new).
    fn between(old: &'a BTreeMap<K, V>, new: &'a BTreeMap<K, V>) -> Self {
        let mut changes = Self {
            added: Vec::new(),
            changed: Vec::new(),
            removed: Vec::new(),
        };
        let (mut old, mut new) = (old.iter().peekable(), new.iter().peekable());
        loop {
            match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(_), None) => changes.removed.extend(old.by_ref()),
                (None, Some(_)) => changes.added.extend(new.by_ref()),
                (Some(&(ko, vo)), Some(&(kn, vn))) => match ko.cmp(kn) {
                    std::cmp::Ordering::Less => {
                        changes.removed.push((ko, vo));
                        old.next();
                    }
                    std::cmp::Ordering::Greater => {
                        changes.added.push((kn, vn));
                        new.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if vo != vn {
                            changes.changed.push((kn, vn));
                        }
                        old.next();
                        new.next();
                    }
                },
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_exact_on_random_maps() {
        let mut rng = crate::model::testkit::Rng::new(4);
        for _ in 0..500 {
            let mut random_map = || -> BTreeMap<u64, u64> {
                (0..rng.below(30))
                    .map(|_| (rng.below(40), rng.below(3)))
                    .collect()
            };
            let (old, new) = (random_map(), random_map());
            let changes = Changes::between(&old, &new);
            let mut patched = old.clone();
            for (k, v) in changes.added.iter().chain(&changes.changed) {
                patched.insert(**k, **v);
            }
            for (k, v) in &changes.removed {
                assert_eq!(patched.remove(*k), Some(**v));
            }
            assert_eq!(patched, new);
            for (k, v) in &changes.changed {
                assert_ne!(old[*k], **v);
            }
            for (k, _) in &changes.added {
                assert!(!old.contains_key(*k));
            }
        }
    }

    #[test]
    fn equal_maps_differ_in_nothing() {
        let map: BTreeMap<u32, u32> = (0..10).map(|i| (i, i * i)).collect();
        let changes = Changes::between(&map, &map);
        assert!(changes.added.is_empty() && changes.changed.is_empty());
        assert!(changes.removed.is_empty());
    }
}
