//! Cuts: partitions of the mesh and links taken down, as an experiment makes them.
//!
//! A link is *cut* when its two nodes are on different sides of a partition, or when it was
//! taken down on its own (a flapping link). A cut link stays a link (the canvas shows it, its
//! counters keep counting) but drops everything that reaches it: its loss is 100 %, so each
//! packet is counted as lost, as on a real cable that was pulled.
//!
//! Routing avoids cut links where it can: a pair that still has a path without them takes it,
//! as a routing protocol would find it. A pair that has none keeps its path over the cut
//! links (see [`super::routing::next_hops_avoiding`]), so its packets travel to the cut and
//! are counted there, and the pair's traffic resumes on its own once the cut heals.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{ModelError, NodeId, Pair};

/// A change to the cuts, as the API and scenario steps ask for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CutChange {
    /// Puts these nodes on a side of their own: every link from one of them to a node not
    /// in the list is cut. Nodes already partitioned move to the new side.
    Partition(Vec<NodeId>),
    /// Puts these nodes back with the rest (`None`: every node; every partition heals).
    Heal(Option<Vec<NodeId>>),
    /// Takes the link between two nodes down (they must be linked now).
    Down(NodeId, NodeId),
    /// Brings a link taken down back up.
    Up(NodeId, NodeId),
}

/// The cuts in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cuts {
    /// The side of each partitioned node; nodes not listed are on side 0, the rest.
    sides: BTreeMap<NodeId, u32>,
    /// The side the next partition makes.
    next_side: u32,
    /// Links taken down on their own, kept while the pair is unlinked (like pins).
    down: BTreeSet<Pair>,
}

impl Cuts {
    /// The cuts a document lists: each side partitioned in turn, then the links down. The
    /// caller checked that every node is on one side at most.
    pub(crate) fn new(sides: &[Vec<NodeId>], down: BTreeSet<Pair>) -> Self {
        let mut cuts = Cuts {
            down,
            ..Cuts::default()
        };
        for side in sides {
            cuts.next_side += 1;
            for &id in side {
                cuts.sides.insert(id, cuts.next_side);
            }
        }
        cuts
    }

    /// Whether the link of `pair` drops everything.
    pub(crate) fn is_cut(&self, pair: Pair) -> bool {
        self.side(pair.a()) != self.side(pair.b()) || self.down.contains(&pair)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.sides.is_empty() && self.down.is_empty()
    }

    fn side(&self, id: NodeId) -> u32 {
        self.sides.get(&id).copied().unwrap_or(0)
    }

    /// The partitioned sides, each a list of nodes by ascending id, in the order they were
    /// made (the rest, side 0, is not listed).
    pub(crate) fn partitions(&self) -> Vec<Vec<NodeId>> {
        let mut by_side: BTreeMap<u32, Vec<NodeId>> = BTreeMap::new();
        for (&id, &side) in &self.sides {
            by_side.entry(side).or_default().push(id);
        }
        by_side.into_values().collect()
    }

    /// The links taken down on their own.
    pub(crate) fn down(&self) -> impl Iterator<Item = Pair> + '_ {
        self.down.iter().copied()
    }

    /// Applies `change`; `known` says whether a node exists and `linked` whether a pair is
    /// linked now. Fails without changing anything.
    pub(crate) fn apply(
        &mut self,
        change: &CutChange,
        known: impl Fn(NodeId) -> bool,
        linked: impl Fn(Pair) -> bool,
    ) -> Result<(), ModelError> {
        let check_all = |ids: &[NodeId], field: &str| -> Result<(), ModelError> {
            if ids.is_empty() {
                return Err(ModelError::invalid(field, "lists no node"));
            }
            match ids.iter().find(|&&id| !known(id)) {
                Some(&id) => Err(ModelError::UnknownNode(id)),
                None => Ok(()),
            }
        };
        match change {
            CutChange::Partition(ids) => {
                check_all(ids, "partition")?;
                self.next_side += 1;
                for &id in ids {
                    self.sides.insert(id, self.next_side);
                }
            }
            CutChange::Heal(None) => self.sides.clear(),
            CutChange::Heal(Some(ids)) => {
                check_all(ids, "heal")?;
                for id in ids {
                    self.sides.remove(id);
                }
            }
            CutChange::Down(a, b) => {
                let pair = Pair::new(*a, *b)?;
                check_all(&[*a, *b], "down")?;
                if !linked(pair) {
                    return Err(ModelError::NotLinked(pair.a(), pair.b()));
                }
                self.down.insert(pair);
            }
            CutChange::Up(a, b) => {
                let pair = Pair::new(*a, *b)?;
                check_all(&[*a, *b], "up")?;
                self.down.remove(&pair);
            }
        }
        Ok(())
    }

    /// Forgets a removed node.
    pub(crate) fn forget(&mut self, id: NodeId) {
        self.sides.remove(&id);
        self.down.retain(|pair| !pair.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(a: u32, b: u32) -> Pair {
        Pair::new(NodeId(a), NodeId(b)).unwrap()
    }

    #[test]
    fn a_partition_cuts_only_links_across_it() {
        let mut cuts = Cuts::default();
        cuts.apply(
            &CutChange::Partition(vec![NodeId(1), NodeId(2)]),
            |_| true,
            |_| true,
        )
        .unwrap();
        assert!(!cuts.is_cut(pair(1, 2)));
        assert!(cuts.is_cut(pair(2, 3)));
        assert!(!cuts.is_cut(pair(3, 4)));
        // A second partition is a third side: cut from both others.
        cuts.apply(&CutChange::Partition(vec![NodeId(4)]), |_| true, |_| true)
            .unwrap();
        assert!(cuts.is_cut(pair(3, 4)) && cuts.is_cut(pair(1, 4)));
        assert_eq!(
            cuts.partitions(),
            [vec![NodeId(1), NodeId(2)], vec![NodeId(4)]]
        );
        cuts.apply(&CutChange::Heal(Some(vec![NodeId(4)])), |_| true, |_| true)
            .unwrap();
        assert!(!cuts.is_cut(pair(3, 4)));
        cuts.apply(&CutChange::Heal(None), |_| true, |_| true)
            .unwrap();
        assert!(cuts.is_empty());
    }

    #[test]
    fn a_link_goes_down_and_up_on_its_own() {
        let mut cuts = Cuts::default();
        cuts.apply(&CutChange::Down(NodeId(3), NodeId(1)), |_| true, |_| true)
            .unwrap();
        assert!(cuts.is_cut(pair(1, 3)) && !cuts.is_cut(pair(1, 2)));
        cuts.apply(&CutChange::Up(NodeId(1), NodeId(3)), |_| true, |_| true)
            .unwrap();
        assert!(cuts.is_empty());
    }

    #[test]
    fn refusals_change_nothing() {
        let mut cuts = Cuts::default();
        let known = |id: NodeId| id.0 <= 3;
        let before = cuts.clone();
        assert_eq!(
            cuts.apply(
                &CutChange::Partition(vec![NodeId(1), NodeId(9)]),
                known,
                |_| true
            ),
            Err(ModelError::UnknownNode(NodeId(9)))
        );
        assert_eq!(
            cuts.apply(&CutChange::Partition(vec![]), known, |_| true)
                .unwrap_err()
                .field(),
            Some("partition")
        );
        assert_eq!(
            cuts.apply(&CutChange::Down(NodeId(1), NodeId(2)), known, |_| false),
            Err(ModelError::NotLinked(NodeId(1), NodeId(2)))
        );
        assert_eq!(cuts, before);
    }

    #[test]
    fn a_removed_node_is_forgotten() {
        let mut cuts = Cuts::default();
        cuts.apply(&CutChange::Partition(vec![NodeId(2)]), |_| true, |_| true)
            .unwrap();
        cuts.apply(&CutChange::Down(NodeId(1), NodeId(3)), |_| true, |_| true)
            .unwrap();
        cuts.forget(NodeId(2));
        cuts.forget(NodeId(3));
        assert!(cuts.is_empty());
    }
}
