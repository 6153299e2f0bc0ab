//! Applying a diff to the host, all or nothing.
//!
//! Order: nodes first (a link needs both ends), then links, then routes onto the new links,
//! then what went away. So a moved node's traffic switches to its new path before the old
//! link is removed, and no packet meets a missing link.
//!
//! Before anything is touched, the change is checked against the host's limits (addresses
//! in the subnet, room on the bridge, map capacity): a change that cannot fit is refused
//! whole. Every step that touches the host is written in a journal; if a later step fails,
//! the journal is undone backwards, so what exists on the host is again what the model
//! held before the change (the caller puts the model back).

use std::{collections::BTreeMap, time::Instant};

use tokio::sync::mpsc;

use super::{
    ApplyTimings, HostError, NodeRuntime, Progress, Refusal, RouteChange, Shaper, Sim, SimError,
};
use crate::{
    model::{Diff, HOST, Link, LinkParams, Model, NodeId},
    workload::NodeWorkload,
};

/// One step a change took on the host, and so one to take back if a later step fails.
#[derive(Debug)]
enum Step {
    /// A node was created.
    Created(NodeId),
    /// Its port got the classifier (and fq).
    Attached(u32),
    /// Its MAC was made a node in the datapath.
    Known([u8; 6]),
    /// A directed link was added or changed; `before` is what it was (`None`: absent).
    LinkSet {
        from: NodeId,
        to: NodeId,
        before: Option<LinkParams>,
    },
    /// A node's routes were changed; `undo` puts them back.
    Routes {
        node: NodeId,
        undo: Vec<RouteChange>,
    },
    /// A directed link was removed.
    LinkRemoved {
        from: NodeId,
        to: NodeId,
        params: LinkParams,
    },
    /// A node left the datapath's `NODES`.
    Forgotten(NodeId),
    /// A node's port lost the classifier.
    Detached(NodeId),
    /// A node was removed from the host.
    Removed { id: NodeId, workload: NodeWorkload },
}

impl<R: NodeRuntime, S: Shaper> Sim<R, S> {
    /// Applies `diff` (the change from `before` to the current model) to the host. On a
    /// refusal nothing was touched; on a host failure everything done is undone.
    pub(super) async fn apply(
        &mut self,
        before: &Model,
        diff: &Diff,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
        workloads: &BTreeMap<NodeId, NodeWorkload>,
    ) -> Result<(), SimError> {
        if diff.is_empty() {
            return Ok(());
        }
        self.admit(before, diff)?;
        let mut journal = Vec::new();
        let mut t = ApplyTimings::default();
        let result = self
            .forward(before, diff, progress, workloads, &mut journal, &mut t)
            .await;
        match result {
            Ok(()) => {
                self.last_apply = t;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    "a change failed on the host after {} steps; undoing them: {e}",
                    journal.len()
                );
                self.undo(before, journal).await;
                Err(e)
            }
        }
    }

    /// Refuses a change the host cannot take, before anything is touched.
    fn admit(&self, before: &Model, diff: &Diff) -> Result<(), Refusal> {
        let nodes = self.model.nodes().len();
        for node in &diff.nodes_added {
            self.runtime.admit(node.id, nodes)?;
        }
        let capacity = self.shaper.capacity();
        // The host's client-link end is a NODES entry too.
        let host = usize::from(self.host.is_some());
        if nodes + host > capacity.nodes {
            return Err(Refusal {
                node: diff.nodes_added.first().map(|n| n.id),
                reason: format!(
                    "the datapath holds at most {} nodes{}: remove nodes first",
                    capacity.nodes - host,
                    if host == 1 { " besides the host" } else { "" }
                ),
            });
        }
        // Links are added before the old ones go, so both are installed for a moment; every
        // node also has its two client links when the host has them.
        let clients = if self.host.is_some() { 2 * nodes } else { 0 };
        let peak = 2 * (before.links().len() + diff.links_added.len()) + clients;
        if peak > capacity.directed_links {
            return Err(Refusal {
                node: None,
                reason: format!(
                    "the datapath holds at most {} directed links ({} links): lower the \
                     neighbours setting or remove nodes",
                    capacity.directed_links,
                    capacity.directed_links / 2
                ),
            });
        }
        Ok(())
    }

    async fn forward(
        &mut self,
        before: &Model,
        diff: &Diff,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
        workloads: &BTreeMap<NodeId, NodeWorkload>,
        journal: &mut Vec<Step>,
        t: &mut ApplyTimings,
    ) -> Result<(), SimError> {
        let total = diff.nodes_added.len();
        for (i, node) in diff.nodes_added.iter().enumerate() {
            let started = Instant::now();
            let workload = workloads.get(&node.id).copied().unwrap_or_default();
            let facts = self.runtime.create_node(node.id, workload).await?;
            let (port, mac) = (facts.port, facts.mac);
            self.facts.insert(node.id, facts);
            journal.push(Step::Created(node.id));
            self.shaper.attach_port(port).await?;
            journal.push(Step::Attached(port));
            t.runtime += started.elapsed();
            let started = Instant::now();
            self.shaper.upsert_node(mac, node.id, port)?;
            journal.push(Step::Known(mac));
            t.datapath += started.elapsed();
            if let Some(p) = progress {
                let _ = p.send(Progress {
                    nodes_done: i + 1,
                    nodes_total: total,
                });
            }
        }

        let started = Instant::now();
        // Every new node's client links, with its settings (a node added back under its id
        // keeps its own) or the default.
        if self.host.is_some() {
            for node in &diff.nodes_added {
                let link = self.clients.of(node.id);
                let (up, down) = link.directions();
                for (from, to, params) in [(HOST, node.id, up), (node.id, HOST, down)] {
                    self.set_link(from, to, &params)?;
                    journal.push(Step::LinkSet {
                        from,
                        to,
                        before: None,
                    });
                    t.links_written += 1;
                }
            }
        }
        for link in diff.links_added.iter().chain(&diff.links_changed) {
            let was = before.link(link.pair.a(), link.pair.b()).map(|l| l.params);
            for (from, to) in directions(link) {
                self.set_link(from, to, &link.params)?;
                journal.push(Step::LinkSet {
                    from,
                    to,
                    before: was,
                });
                t.links_written += 1;
            }
        }
        t.datapath += started.elapsed();

        let started = Instant::now();
        let batches: Vec<(NodeId, Vec<RouteChange>)> =
            self.route_changes(diff).into_iter().collect();
        for (node, changes) in &batches {
            let undo = changes
                .iter()
                .map(|c| {
                    let dst = match c {
                        RouteChange::Replace { dst, .. } | RouteChange::Delete { dst } => *dst,
                    };
                    restore_route(before, *node, dst)
                })
                .collect();
            // Journaled first: the nodes are written at once, and any of them may fail
            // half-way; every batch is then undone as a whole (putting back a route that was
            // not changed yet changes nothing).
            journal.push(Step::Routes { node: *node, undo });
            t.routes_written += changes.len();
        }
        self.runtime.set_routes_of(&batches).await?;
        t.routes += started.elapsed();

        let started = Instant::now();
        for link in &diff.links_removed {
            for (from, to) in directions(link) {
                if let Some(key) = self.key(from, to) {
                    self.shaper.remove_link(&key)?;
                    journal.push(Step::LinkRemoved {
                        from,
                        to,
                        params: link.params,
                    });
                    t.links_written += 1;
                }
            }
        }
        t.datapath += started.elapsed();

        for node in &diff.nodes_removed {
            let Some(facts) = self.facts.get(&node.id).cloned() else {
                continue;
            };
            let started = Instant::now();
            if self.host.is_some() {
                let (up, down) = self.clients.of(node.id).directions();
                for (from, to, params) in [(HOST, node.id, up), (node.id, HOST, down)] {
                    if let Some(key) = self.key(from, to) {
                        self.shaper.remove_link(&key)?;
                        journal.push(Step::LinkRemoved { from, to, params });
                    }
                }
            }
            self.shaper.remove_node(&facts.mac)?;
            journal.push(Step::Forgotten(node.id));
            // The device goes with the node; detaching first keeps the bookkeeping.
            self.shaper.detach_port(facts.port)?;
            journal.push(Step::Detached(node.id));
            t.datapath += started.elapsed();
            let started = Instant::now();
            self.runtime.remove_node(node.id).await?;
            self.facts.remove(&node.id);
            journal.push(Step::Removed {
                id: node.id,
                workload: facts.workload,
            });
            t.runtime += started.elapsed();
        }
        Ok(())
    }

    /// The route changes of a diff, per node. A node that is going away takes its routing
    /// table with it, so routes from it are not deleted one by one.
    fn route_changes(&self, diff: &Diff) -> BTreeMap<NodeId, Vec<RouteChange>> {
        let mut per_node: BTreeMap<NodeId, Vec<RouteChange>> = BTreeMap::new();
        for r in diff.routes_added.iter().chain(&diff.routes_changed) {
            per_node
                .entry(r.src)
                .or_default()
                .push(RouteChange::Replace {
                    dst: r.dst,
                    via: r.next_hop,
                });
        }
        for r in &diff.routes_removed {
            if self.model.node(r.src).is_none() {
                continue;
            }
            per_node
                .entry(r.src)
                .or_default()
                .push(RouteChange::Delete { dst: r.dst });
        }
        per_node
    }

    pub(super) fn set_link(
        &mut self,
        from: NodeId,
        to: NodeId,
        params: &LinkParams,
    ) -> Result<(), SimError> {
        // Both ends exist on the host before their links (the diff is in that order), so
        // a missing end is a bug; it fails the change rather than the Sim.
        let (Some(key), Some(port)) = (self.key(from, to), self.facts_of(to).map(|f| f.port))
        else {
            return Err(
                HostError::new(format!("link {from} -> {to}: an end is not on the host")).into(),
            );
        };
        self.shaper.upsert_link(key, port, params)?;
        Ok(())
    }

    /// Takes back every step of `journal`, last first. A step that cannot be undone is
    /// logged and the rest still are: the host then differs from the model in that step,
    /// which the log says.
    async fn undo(&mut self, before: &Model, journal: Vec<Step>) {
        for step in journal.into_iter().rev() {
            let what = format!("{step:?}");
            if let Err(e) = self.undo_step(before, step).await {
                tracing::error!(
                    "could not undo {what}: {e}; the host may differ from the mesh shown \
                     (`meshsim down` and a restart put it right)"
                );
            }
        }
    }

    async fn undo_step(&mut self, before: &Model, step: Step) -> Result<(), SimError> {
        match step {
            Step::Created(id) => {
                self.facts.remove(&id);
                self.runtime.remove_node(id).await?;
            }
            Step::Attached(port) => self.shaper.detach_port(port)?,
            Step::Known(mac) => self.shaper.remove_node(&mac)?,
            Step::LinkSet { from, to, before } => match before {
                Some(params) => self.set_link(from, to, &params)?,
                None => {
                    if let Some(key) = self.key(from, to) {
                        self.shaper.remove_link(&key)?;
                    }
                }
            },
            Step::Routes { node, undo } => self.runtime.set_routes(node, &undo).await?,
            Step::LinkRemoved { from, to, params } => self.set_link(from, to, &params)?,
            Step::Forgotten(id) => {
                if let Some(facts) = self.facts.get(&id) {
                    self.shaper.upsert_node(facts.mac, id, facts.port)?;
                }
            }
            Step::Detached(id) => {
                if let Some(port) = self.facts_of(id).map(|f| f.port) {
                    self.shaper.attach_port(port).await?;
                }
            }
            Step::Removed { id, workload } => {
                // Made again, as itself (same address; a workload's directory is kept for
                // the run), with the routing table it had.
                let facts = self.runtime.create_node(id, workload).await?;
                self.facts.insert(id, facts);
                let routes: Vec<RouteChange> = before
                    .routes()
                    .filter(|r| r.src == id)
                    .map(|r| RouteChange::Replace {
                        dst: r.dst,
                        via: r.next_hop,
                    })
                    .collect();
                self.runtime.set_routes(id, &routes).await?;
            }
        }
        Ok(())
    }
}

/// The change that puts `src`'s route to `dst` back as it was in `before`.
fn restore_route(before: &Model, src: NodeId, dst: NodeId) -> RouteChange {
    match before.next_hop(src, dst) {
        Some(via) => RouteChange::Replace { dst, via },
        None => RouteChange::Delete { dst },
    }
}

/// Both directions of a link.
fn directions(link: &Link) -> [(NodeId, NodeId); 2] {
    [
        (link.pair.a(), link.pair.b()),
        (link.pair.b(), link.pair.a()),
    ]
}
