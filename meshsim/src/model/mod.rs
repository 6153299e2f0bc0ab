//! The mesh model: nodes on a canvas, the links between them, and the routes over the links.
//!
//! Pure: no files, network, clocks or threads, so the Sim can own it outright and every rule
//! is unit-tested here. The model keeps only its inputs (settings, nodes, pins) as state and
//! derives links and routes from them after every change, then compares before with after:
//! each operation returns a [`Diff`] that the Sim applies to runtime, datapath and routes.
//!
//! # The link rule
//!
//! With k = [`Settings::neighbours`]:
//!
//! 1. A pair (a, b) is a *candidate* iff its distance latency
//!    (`distance * latency_scale_pct / 100`) is at most `max_latency_ms`.
//! 2. Each node ranks its candidates by distance, nearer first, equal distances by lower node
//!    id; its *nearest* are the first k of that ranking (all of them if it has fewer).
//! 3. a and b are linked iff b is among a's nearest **and** a is among b's nearest.
//!
//! So links are symmetric and no node has more than k of them. A link's parameters are the
//! derived ones ([`Settings`]) with the pair's pins ([`LinkPins`]) winning field by field.
//!
//! # Routing
//!
//! Dijkstra from every node over the links, cost = latency, or 1/bandwidth with
//! [`CostMetric::Bandwidth`] (see [`link_cost`]). Paths compare by cost, then hop count; the
//! next hop is the lowest-id neighbour that begins a best path. Following next hops never
//! loops. A pair with no route is unreachable. Cut links (see `cut`) are avoided where a
//! path remains without them; a pair with none keeps its path over them.

mod client;
mod cut;
mod diff;
mod error;
mod link;
mod linkrule;
mod node;
mod routing;
mod settings;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;
mod topology;

use std::{collections::BTreeMap, sync::Arc};

pub use client::{ClientLink, ClientLinks, HOST};
pub use cut::CutChange;
use cut::Cuts;
pub use diff::Diff;
pub use error::{MAX_BANDWIDTH_BPS, MAX_LATENCY_SCALE_PCT, MAX_MS, ModelError};
pub use link::{Link, LinkField, LinkParams, LinkPins, Pair};
pub use node::{MAX_COORD, Node, NodeId, NodeNameError};
use routing::RouteTable;
pub use routing::{BANDWIDTH_COST_SCALE, Route, link_cost};
use serde::{Deserialize, Serialize};
pub use settings::{BandwidthMode, CostMetric, Settings};
pub use topology::{ClientDoc, NodeDoc, PinDoc, Topology};

/// The whole mesh as the API's `GET /api/state` shows it (the server adds addresses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub settings: Settings,
    pub nodes: Vec<Node>,
    pub links: Vec<Link>,
    /// The partitioned sides, each cut off from the rest (see [`CutChange`]); the nodes
    /// not listed are the rest.
    #[serde(default)]
    pub partitions: Vec<Vec<NodeId>>,
    /// The links taken down on their own (a flapping link), linked now or not.
    #[serde(default)]
    pub down: Vec<Pair>,
}

/// Nodes and everything derived from them; two of these make a [`Diff`].
#[derive(Debug, Clone, Default)]
struct Mesh {
    nodes: BTreeMap<NodeId, Node>,
    links: BTreeMap<Pair, Link>,
    /// The routing input: each link's cost under the current metric and whether it is
    /// cut, by pair.
    costs: Vec<(Pair, u64, bool)>,
    routes: RouteTable,
}

impl Mesh {
    /// The mesh of `nodes` under `settings` and `pins`. Routes are only recomputed when the
    /// routing input changed: pinning jitter or loss, or changing their defaults, leaves every
    /// cost as it was, and all-pairs Dijkstra is the expensive part of a change.
    fn derive(
        previous: &Mesh,
        nodes: BTreeMap<NodeId, Node>,
        settings: &Settings,
        pins: &BTreeMap<Pair, LinkPins>,
        cuts: &Cuts,
    ) -> Self {
        let links: BTreeMap<Pair, Link> = linkrule::derive_links(&nodes, settings)
            .into_iter()
            .map(|(pair, derived)| {
                let pins = pins.get(&pair).copied().unwrap_or_default();
                let cut = cuts.is_cut(pair);
                let mut params = pins.apply(derived);
                if cut {
                    params.loss_pct = 100.0;
                }
                let link = Link {
                    pair,
                    params,
                    pinned: pins.fields(),
                    cut,
                };
                (pair, link)
            })
            .collect();
        let costs: Vec<(Pair, u64, bool)> = links
            .values()
            .map(|link| (link.pair, link_cost(&link.params, settings.cost), link.cut))
            .collect();
        let routes = if costs == previous.costs && nodes.keys().eq(previous.nodes.keys()) {
            previous.routes.clone()
        } else {
            let ids: Vec<NodeId> = nodes.keys().copied().collect();
            routing::next_hops_avoiding(&ids, costs.iter().copied())
        };
        Self {
            nodes,
            links,
            costs,
            routes,
        }
    }
}

/// Every node's next hops, as of one state of the model, shared (cloning is cheap): what a
/// published state carries so that readers can follow paths without asking the Sim.
#[derive(Debug, Clone, Default)]
pub struct Routes(Arc<Mesh>);

impl Routes {
    /// Where `src` sends packets for `dst`.
    pub fn next_hop(&self, src: NodeId, dst: NodeId) -> Option<NodeId> {
        self.0.routes.get(&(src, dst)).copied()
    }

    /// The nodes a packet from `src` to `dst` passes, both ends included; `None` when `dst`
    /// is unreachable.
    pub fn path(&self, src: NodeId, dst: NodeId) -> Option<Vec<NodeId>> {
        let mut path = vec![src];
        while *path.last()? != dst {
            let next = self.next_hop(*path.last()?, dst)?;
            path.push(next);
            // Routes never loop (see `routing`); this only guards a broken table.
            if path.len() > self.0.nodes.len() + 1 {
                return None;
            }
        }
        Some(path)
    }
}

/// The mesh model. Every mutating operation either fails and changes nothing, or succeeds
/// and returns the [`Diff`] from the state before to the state after.
///
/// Cloning is cheap (the derived mesh is shared), so a caller can keep the state before an
/// operation and put it back if applying the diff to the host fails.
#[derive(Debug, Clone)]
pub struct Model {
    settings: Settings,
    /// Pins by node pair, kept while the pair is not linked (a move can unlink a pair and a
    /// later move relink it; the user's overrides should still be there). Dropped only when
    /// one of the nodes is removed, since ids never come back.
    pins: BTreeMap<Pair, LinkPins>,
    /// The id the next added node gets; only ever grows.
    next_id: u32,
    cuts: Cuts,
    mesh: Arc<Mesh>,
}

impl Default for Model {
    /// An empty mesh with default settings.
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            pins: BTreeMap::new(),
            next_id: 1,
            cuts: Cuts::default(),
            mesh: Arc::default(),
        }
    }
}

impl Model {
    /// An empty mesh.
    pub fn new(settings: Settings) -> Result<Self, ModelError> {
        settings.validate()?;
        Ok(Self {
            settings,
            ..Self::default()
        })
    }

    /// A mesh loaded from a document (see [`Model::load`]).
    pub fn from_topology(topology: &Topology) -> Result<Self, ModelError> {
        let mut model = Self::default();
        model.load(topology)?;
        Ok(model)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The id the next added node gets.
    pub fn next_id(&self) -> NodeId {
        NodeId(self.next_id)
    }

    /// Nodes by ascending id.
    pub fn nodes(&self) -> impl ExactSizeIterator<Item = &Node> + '_ {
        self.mesh.nodes.values()
    }

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.mesh.nodes.get(&id)
    }

    /// Links by ascending pair.
    pub fn links(&self) -> impl ExactSizeIterator<Item = &Link> + '_ {
        self.mesh.links.values()
    }

    /// The link between `a` and `b` (either order), if they are linked.
    pub fn link(&self, a: NodeId, b: NodeId) -> Option<&Link> {
        self.mesh.links.get(&Pair::new(a, b).ok()?)
    }

    /// Every stored pin, including those of pairs that are not linked right now.
    pub fn pins(&self) -> impl ExactSizeIterator<Item = (Pair, &LinkPins)> + '_ {
        self.pins.iter().map(|(pair, pins)| (*pair, pins))
    }

    /// The routing table, by ascending (src, dst). Pairs that are not listed are unreachable.
    pub fn routes(&self) -> impl ExactSizeIterator<Item = Route> + '_ {
        self.mesh
            .routes
            .iter()
            .map(|(&(src, dst), &next_hop)| Route { src, dst, next_hop })
    }

    /// Where `src` sends packets for `dst`; `None` if `dst` is unreachable from `src` (or is
    /// `src`, or either node does not exist).
    pub fn next_hop(&self, src: NodeId, dst: NodeId) -> Option<NodeId> {
        self.mesh.routes.get(&(src, dst)).copied()
    }

    /// The routes of the current state, shared.
    pub fn shared_routes(&self) -> Routes {
        Routes(Arc::clone(&self.mesh))
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            settings: self.settings.clone(),
            nodes: self.nodes().cloned().collect(),
            links: self.links().cloned().collect(),
            partitions: self.cuts.partitions(),
            down: self.cuts.down().collect(),
        }
    }

    /// The mesh as a document, for saving. Includes pins of pairs not linked right now, the
    /// cuts standing, and the next id when removed nodes held the highest ids.
    pub fn topology(&self) -> Topology {
        let above = self
            .mesh
            .nodes
            .keys()
            .next_back()
            .map_or(1, |last| last.0.saturating_add(1));
        Topology {
            next_id: (self.next_id != above).then_some(NodeId(self.next_id)),
            settings: self.settings.clone(),
            nodes: self
                .nodes()
                .map(|node| NodeDoc {
                    id: Some(node.id),
                    name: Some(node.name.clone()),
                    x: node.x,
                    y: node.y,
                })
                .collect(),
            pins: self
                .pins
                .iter()
                .map(|(pair, pins)| PinDoc::new(*pair, pins))
                .collect(),
            partitions: self
                .cuts
                .partitions()
                .iter()
                .map(|side| side.iter().map(|id| id.name()).collect())
                .collect(),
            down: self
                .cuts
                .down()
                .map(|pair| [pair.a().name(), pair.b().name()])
                .collect(),
            ..Topology::default()
        }
    }

    /// Adds a node at (x, y) and returns its new id.
    pub fn add_node(&mut self, x: f64, y: f64) -> Result<(NodeId, Diff), ModelError> {
        let id = NodeId(self.next_id);
        let node = Node::new(id, x, y)?;
        self.next_id = self
            .next_id
            .checked_add(1)
            .ok_or(ModelError::IdsExhausted)?;
        let mut nodes = self.mesh.nodes.clone();
        nodes.insert(id, node);
        Ok((id, self.rebuild(nodes)))
    }

    /// Moves a node; its links, their latencies and the routes follow.
    pub fn move_node(&mut self, id: NodeId, x: f64, y: f64) -> Result<Diff, ModelError> {
        let old = self.node(id).ok_or(ModelError::UnknownNode(id))?;
        let node = Node::new(id, x, y)?;
        if *old == node {
            return Ok(Diff::default());
        }
        let mut nodes = self.mesh.nodes.clone();
        nodes.insert(id, node);
        Ok(self.rebuild(nodes))
    }

    /// Moves several nodes at once: one rebuild, one diff. Nothing moves unless all can.
    pub fn move_nodes(&mut self, moves: &[(NodeId, f64, f64)]) -> Result<Diff, ModelError> {
        let mut nodes = self.mesh.nodes.clone();
        for &(id, x, y) in moves {
            if !nodes.contains_key(&id) {
                return Err(ModelError::UnknownNode(id));
            }
            nodes.insert(id, Node::new(id, x, y)?);
        }
        if nodes == self.mesh.nodes {
            return Ok(Diff::default());
        }
        Ok(self.rebuild(nodes))
    }

    /// Removes a node with its links, routes and pins; traffic through it reroutes.
    pub fn remove_node(&mut self, id: NodeId) -> Result<Diff, ModelError> {
        let mut nodes = self.mesh.nodes.clone();
        nodes.remove(&id).ok_or(ModelError::UnknownNode(id))?;
        self.pins.retain(|pair, _| !pair.contains(id));
        self.cuts.forget(id);
        Ok(self.rebuild(nodes))
    }

    /// Pins the given fields of the link between `a` and `b`, keeping its other pins. The
    /// pair must be linked now; the pin then stays with the pair (see [`Model::pins`]).
    pub fn pin(&mut self, a: NodeId, b: NodeId, pins: &LinkPins) -> Result<Diff, ModelError> {
        let pair = self.known_pair(a, b)?;
        pins.validate()?;
        if !self.mesh.links.contains_key(&pair) {
            return Err(ModelError::NotLinked(pair.a(), pair.b()));
        }
        self.pins.entry(pair).or_default().merge(pins);
        Ok(self.rebuild(self.mesh.nodes.clone()))
    }

    /// Unpins one field of the pair `a`, `b`, or all of them with `None`. Unpinning what is
    /// not pinned changes nothing; the pair need not be linked.
    pub fn unpin(
        &mut self,
        a: NodeId,
        b: NodeId,
        field: Option<LinkField>,
    ) -> Result<Diff, ModelError> {
        let pair = self.known_pair(a, b)?;
        let Some(pins) = self.pins.get_mut(&pair) else {
            return Ok(Diff::default());
        };
        match field {
            Some(field) => pins.clear(field),
            None => *pins = LinkPins::default(),
        }
        if pins.is_empty() {
            self.pins.remove(&pair);
        }
        Ok(self.rebuild(self.mesh.nodes.clone()))
    }

    /// Partitions, heals, takes a link down or brings it up (see [`CutChange`]); the cut
    /// links' loss and the routes follow.
    pub fn cut(&mut self, change: &CutChange) -> Result<Diff, ModelError> {
        let mut cuts = self.cuts.clone();
        let mesh = &self.mesh;
        cuts.apply(
            change,
            |id| mesh.nodes.contains_key(&id),
            |pair| mesh.links.contains_key(&pair),
        )?;
        self.cuts = cuts;
        Ok(self.rebuild(self.mesh.nodes.clone()))
    }

    /// The links taken down on their own (not by a partition), linked or not.
    pub fn links_down(&self) -> Vec<Pair> {
        self.cuts.down().collect()
    }

    /// Replaces the settings; links and routes follow.
    pub fn set_settings(&mut self, settings: Settings) -> Result<Diff, ModelError> {
        settings.validate()?;
        self.settings = settings;
        Ok(self.rebuild(self.mesh.nodes.clone()))
    }

    /// Replaces settings, nodes, pins and cuts with a document's. Nodes keep the document's
    /// ids; a node whose id is already here counts as moved (if its position differs), not as
    /// removed and added. Nodes added later get ids above every id seen in this run, and not
    /// below the document's `next_id`.
    pub fn load(&mut self, topology: &Topology) -> Result<Diff, ModelError> {
        let checked = topology.check()?;
        self.next_id = self.next_id.max(checked.next_id);
        self.settings = checked.settings;
        self.pins = checked.pins;
        self.cuts = checked.cuts;
        Ok(self.rebuild(checked.nodes))
    }

    /// The pair of two existing, different nodes.
    fn known_pair(&self, a: NodeId, b: NodeId) -> Result<Pair, ModelError> {
        for id in [a, b] {
            if !self.mesh.nodes.contains_key(&id) {
                return Err(ModelError::UnknownNode(id));
            }
        }
        Pair::new(a, b)
    }

    /// Derives the mesh for `nodes` under the current settings and pins, makes it current, and
    /// returns what changed.
    fn rebuild(&mut self, nodes: BTreeMap<NodeId, Node>) -> Diff {
        let next = Mesh::derive(&self.mesh, nodes, &self.settings, &self.pins, &self.cuts);
        let diff = Diff::between(&self.mesh, &next);
        self.mesh = Arc::new(next);
        diff
    }
}
