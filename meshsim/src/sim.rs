//! The Sim: one task that owns the model, takes commands over a channel, applies each diff to
//! the runtime, the datapath and the routes (in that order), and publishes the new state.
//! No locks around the model: only this task touches it.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use meshsim_common::{LinkCounters, LinkKey};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    datapath::{CounterReader, Datapath, DatapathError, GlobalCounters, LinkShape},
    model::{
        self, Diff, Link, LinkField, LinkPins, Model, ModelError, Node, NodeId, Route, Settings,
        Snapshot, Topology,
    },
    net::{FqOptions, Netlink, NetlinkError},
    runtime::{NodeFacts, RouteChange, RunInfo, Runtime, RuntimeError},
    workload::NodeWorkload,
};

/// What subscribers see after every change.
#[derive(Debug, Clone)]
pub struct MeshState {
    /// Grows by one with every applied change.
    pub version: u64,
    pub snapshot: Snapshot,
    pub nodes: BTreeMap<NodeId, NodeFacts>,
    /// Where nodes live and what the run's workload is (each node's is in its facts).
    pub run: RunInfo,
    /// Whether delays are enforced (the kernel has sch_fq).
    pub delays_enforced: bool,
    /// Where the time of the last change went.
    pub last_apply: ApplyTimings,
    /// The counter slot of every directed link, by (from, to), for a [`CounterReader`].
    pub link_slots: BTreeMap<(NodeId, NodeId), u32>,
}

/// Wall time of one applied change, by part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyTimings {
    /// Creating and removing nodes (namespaces, veths, addresses, fq).
    pub runtime: Duration,
    /// Map updates: links and nodes.
    pub datapath: Duration,
    /// Route changes inside the nodes.
    pub routes: Duration,
    pub links_written: usize,
    pub routes_written: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("the simulation has stopped")]
    Stopped,
    /// The same failure, for a move that was folded into a later one.
    #[error("{0}")]
    Folded(String),
}

/// Progress of long work (starting many nodes), for the CLI to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub nodes_done: usize,
    pub nodes_total: usize,
}

type Reply<T> = oneshot::Sender<Result<T, SimError>>;

enum Command {
    AddNode {
        x: f64,
        y: f64,
        workload: NodeWorkload,
        reply: Reply<Node>,
    },
    MoveNode {
        id: NodeId,
        x: f64,
        y: f64,
        replies: Vec<Reply<()>>,
    },
    RemoveNode {
        id: NodeId,
        reply: Reply<()>,
    },
    Pin {
        a: NodeId,
        b: NodeId,
        pins: LinkPins,
        reply: Reply<()>,
    },
    Unpin {
        a: NodeId,
        b: NodeId,
        field: Option<LinkField>,
        reply: Reply<()>,
    },
    SetSettings {
        settings: Settings,
        reply: Reply<()>,
    },
    Load {
        topology: Topology,
        workloads: BTreeMap<NodeId, NodeWorkload>,
        progress: Option<mpsc::UnboundedSender<Progress>>,
        reply: Reply<()>,
    },
    Counters {
        reply: Reply<Counters>,
    },
    Topology {
        reply: Reply<Topology>,
    },
    Routes {
        id: NodeId,
        reply: Reply<Vec<Route>>,
    },
    CounterReader {
        reply: Reply<CounterReader>,
    },
    Shutdown {
        reply: Reply<()>,
    },
}

/// Every directed link's counters and the ones that belong to no link, read from the maps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// By (from, to).
    pub links: BTreeMap<(NodeId, NodeId), LinkCounters>,
    pub global: GlobalCounters,
}

/// The way to talk to the Sim; cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    tx: mpsc::Sender<Command>,
    state: watch::Receiver<Arc<MeshState>>,
}

impl SimHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SimError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| SimError::Stopped)?;
        answer.await.map_err(|_| SimError::Stopped)?
    }

    /// Adds a node that runs the run's workload.
    pub async fn add_node(&self, x: f64, y: f64) -> Result<Node, SimError> {
        self.add_node_running(x, y, NodeWorkload::Run).await
    }

    /// Adds a node that runs the run's workload or nothing.
    pub async fn add_node_running(
        &self,
        x: f64,
        y: f64,
        workload: NodeWorkload,
    ) -> Result<Node, SimError> {
        self.ask(|reply| Command::AddNode {
            x,
            y,
            workload,
            reply,
        })
        .await
    }

    /// Moves a node; moves that queue up while the Sim is busy collapse into the latest.
    pub async fn move_node(&self, id: NodeId, x: f64, y: f64) -> Result<(), SimError> {
        self.ask(|reply| Command::MoveNode {
            id,
            x,
            y,
            replies: vec![reply],
        })
        .await
    }

    pub async fn remove_node(&self, id: NodeId) -> Result<(), SimError> {
        self.ask(|reply| Command::RemoveNode { id, reply }).await
    }

    pub async fn pin(&self, a: NodeId, b: NodeId, pins: LinkPins) -> Result<(), SimError> {
        self.ask(|reply| Command::Pin { a, b, pins, reply }).await
    }

    pub async fn unpin(
        &self,
        a: NodeId,
        b: NodeId,
        field: Option<LinkField>,
    ) -> Result<(), SimError> {
        self.ask(|reply| Command::Unpin { a, b, field, reply })
            .await
    }

    pub async fn set_settings(&self, settings: Settings) -> Result<(), SimError> {
        self.ask(|reply| Command::SetSettings { settings, reply })
            .await
    }

    /// Replaces the mesh with `topology`; new nodes run the run's workload.
    pub async fn load(
        &self,
        topology: Topology,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<(), SimError> {
        self.load_running(topology, BTreeMap::new(), progress).await
    }

    /// [`SimHandle::load`], where the nodes in `workloads` run what it says for them (the
    /// others the run's workload). A node that runs already keeps what it runs: a workload is
    /// chosen when a node is made.
    pub async fn load_running(
        &self,
        topology: Topology,
        workloads: BTreeMap<NodeId, NodeWorkload>,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<(), SimError> {
        self.ask(|reply| Command::Load {
            topology,
            workloads,
            progress,
            reply,
        })
        .await
    }

    pub async fn counters(&self) -> Result<Counters, SimError> {
        self.ask(|reply| Command::Counters { reply }).await
    }

    /// The mesh as a document, with every pin (also those of pairs not linked right now).
    pub async fn topology(&self) -> Result<Topology, SimError> {
        self.ask(|reply| Command::Topology { reply }).await
    }

    /// The routing table of one node, as installed.
    pub async fn routes_of(&self, id: NodeId) -> Result<Vec<Route>, SimError> {
        self.ask(|reply| Command::Routes { id, reply }).await
    }

    /// A reader of the counter maps that works without the Sim (see `MeshState::link_slots`).
    pub async fn counter_reader(&self) -> Result<CounterReader, SimError> {
        self.ask(|reply| Command::CounterReader { reply }).await
    }

    /// Removes every node; the Sim's task ends after answering.
    pub async fn shutdown(&self) -> Result<(), SimError> {
        self.ask(|reply| Command::Shutdown { reply }).await
    }

    /// The latest state, and a way to wait for the next one.
    pub fn state(&self) -> watch::Receiver<Arc<MeshState>> {
        self.state.clone()
    }
}

pub struct Sim<R: Runtime> {
    model: Model,
    runtime: R,
    dp: Datapath,
    root: Netlink,
    fq: bool,
    facts: BTreeMap<NodeId, NodeFacts>,
    state: watch::Sender<Arc<MeshState>>,
    version: u64,
    last_apply: ApplyTimings,
}

/// How many commands may wait for the Sim before senders wait too.
const QUEUE: usize = 256;

/// No node asks for anything but the run's workload.
const RUN_WORKLOAD: &BTreeMap<NodeId, NodeWorkload> = &BTreeMap::new();

impl<R: Runtime + 'static> Sim<R> {
    /// Starts the Sim's task with an empty mesh. `fq`: the kernel has sch_fq, so every node
    /// port gets it and delays are enforced.
    pub fn spawn(
        runtime: R,
        dp: Datapath,
        settings: Settings,
        fq: bool,
    ) -> Result<(SimHandle, tokio::task::JoinHandle<()>), SimError> {
        let model = Model::new(settings)?;
        let initial = MeshState {
            version: 0,
            snapshot: model.snapshot(),
            nodes: BTreeMap::new(),
            run: runtime.run_info(),
            delays_enforced: fq,
            last_apply: ApplyTimings::default(),
            link_slots: BTreeMap::new(),
        };
        let (state, state_rx) = watch::channel(Arc::new(initial));
        let (tx, rx) = mpsc::channel(QUEUE);
        let sim = Sim {
            model,
            runtime,
            dp,
            root: Netlink::connect()?,
            fq,
            facts: BTreeMap::new(),
            state,
            version: 0,
            last_apply: ApplyTimings::default(),
        };
        let task = tokio::spawn(sim.run(rx));
        Ok((
            SimHandle {
                tx,
                state: state_rx,
            },
            task,
        ))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            for command in coalesce_moves(batch) {
                if let Command::Shutdown { reply } = command {
                    let result = self.runtime.shutdown().await.map_err(SimError::from);
                    let _ = reply.send(result);
                    return;
                }
                self.handle(command).await;
            }
        }
        // Every handle is gone: leave nothing behind.
        if let Err(e) = self.runtime.shutdown().await {
            tracing::error!("removing the nodes failed: {e}");
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::AddNode {
                x,
                y,
                workload,
                reply,
            } => {
                let result = match self.model.add_node(x, y) {
                    Ok((id, diff)) => match self
                        .apply(&diff, None, &BTreeMap::from([(id, workload)]))
                        .await
                    {
                        Ok(()) => Ok(self.model.node(id).cloned().expect("just added")),
                        Err(e) => {
                            // Undo in the model too, so model and host agree.
                            if let Ok(undo) = self.model.remove_node(id) {
                                let _ = self.apply(&undo, None, RUN_WORKLOAD).await;
                            }
                            Err(e)
                        }
                    },
                    Err(e) => Err(e.into()),
                };
                let _ = reply.send(result);
            }
            Command::MoveNode {
                id,
                x,
                y,
                mut replies,
            } => {
                let result = self.change(|m| m.move_node(id, x, y)).await;
                let last = replies.pop().expect("a move has a reply");
                for reply in replies {
                    let copy = result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| SimError::Folded(e.to_string()));
                    let _ = reply.send(copy);
                }
                let _ = last.send(result);
            }
            Command::RemoveNode { id, reply } => {
                let _ = reply.send(self.change(|m| m.remove_node(id)).await);
            }
            Command::Pin { a, b, pins, reply } => {
                let _ = reply.send(self.change(|m| m.pin(a, b, &pins)).await);
            }
            Command::Unpin { a, b, field, reply } => {
                let _ = reply.send(self.change(|m| m.unpin(a, b, field)).await);
            }
            Command::SetSettings { settings, reply } => {
                let _ = reply.send(self.change(|m| m.set_settings(settings)).await);
            }
            Command::Load {
                topology,
                workloads,
                progress,
                reply,
            } => {
                let result = match self.model.load(&topology) {
                    Ok(diff) => self.apply(&diff, progress.as_ref(), &workloads).await,
                    Err(e) => Err(e.into()),
                };
                let _ = reply.send(result);
            }
            Command::Counters { reply } => {
                let _ = reply.send(self.counters());
            }
            Command::Topology { reply } => {
                let _ = reply.send(Ok(self.model.topology()));
            }
            Command::Routes { id, reply } => {
                let result = match self.model.node(id) {
                    Some(_) => Ok(self.model.routes().filter(|r| r.src == id).collect()),
                    None => Err(SimError::Model(ModelError::UnknownNode(id))),
                };
                let _ = reply.send(result);
            }
            Command::CounterReader { reply } => {
                let _ = reply.send(self.dp.counter_reader().map_err(SimError::from));
            }
            Command::Shutdown { .. } => unreachable!("handled by run"),
        }
    }

    async fn change(
        &mut self,
        op: impl FnOnce(&mut Model) -> Result<Diff, ModelError>,
    ) -> Result<(), SimError> {
        let diff = op(&mut self.model)?;
        self.apply(&diff, None, RUN_WORKLOAD).await
    }

    /// Nodes first (a link needs both ends), then links, then routes onto the new links, then
    /// what went away: a moved node's traffic switches to its new path before the old one is
    /// removed, so no packet meets a missing link. A node added runs what `workloads` says
    /// for it, the run's workload if it is not there.
    async fn apply(
        &mut self,
        diff: &Diff,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
        workloads: &BTreeMap<NodeId, NodeWorkload>,
    ) -> Result<(), SimError> {
        if diff.is_empty() {
            return Ok(());
        }
        let mut t = ApplyTimings::default();
        let total = diff.nodes_added.len();
        for (i, node) in diff.nodes_added.iter().enumerate() {
            let started = Instant::now();
            let workload = workloads.get(&node.id).copied().unwrap_or_default();
            let facts = self.runtime.create_node(node.id, workload).await?;
            self.dp.attach_egress(facts.port)?;
            if self.fq {
                self.root
                    .replace_root_fq(facts.port, &FqOptions::default())
                    .await?;
            }
            t.runtime += started.elapsed();
            let started = Instant::now();
            self.dp.upsert_node(facts.mac, node.id.0, facts.port)?;
            t.datapath += started.elapsed();
            self.facts.insert(node.id, facts);
            if let Some(p) = progress {
                let _ = p.send(Progress {
                    nodes_done: i + 1,
                    nodes_total: total,
                });
            }
        }
        let started = Instant::now();
        for link in diff.links_added.iter().chain(&diff.links_changed) {
            let shape = shape(&link.params);
            for (from, to) in directions(link) {
                let key = self.key(from, to)?;
                let port = self.fact(to)?.port;
                self.dp.upsert_link(key, port, &shape)?;
                t.links_written += 1;
            }
        }
        t.datapath += started.elapsed();
        let started = Instant::now();
        t.routes_written = self.apply_routes(diff).await?;
        t.routes += started.elapsed();
        let started = Instant::now();
        for link in &diff.links_removed {
            for (from, to) in directions(link) {
                if let Ok(key) = self.key(from, to) {
                    self.dp.remove_link(&key)?;
                    t.links_written += 1;
                }
            }
        }
        t.datapath += started.elapsed();
        for node in &diff.nodes_removed {
            if let Some(facts) = self.facts.remove(&node.id) {
                let started = Instant::now();
                self.dp.remove_node(&facts.mac)?;
                // The device goes with the namespace; detaching first keeps the bookkeeping.
                let _ = self.dp.detach_egress(facts.port);
                t.datapath += started.elapsed();
                let started = Instant::now();
                self.runtime.remove_node(node.id).await?;
                t.runtime += started.elapsed();
            }
        }
        self.last_apply = t;
        self.publish();
        Ok(())
    }

    /// Returns how many routes it wrote.
    async fn apply_routes(&mut self, diff: &Diff) -> Result<usize, SimError> {
        let mut per_node: BTreeMap<NodeId, Vec<RouteChange>> = BTreeMap::new();
        for r in diff.routes_added.iter().chain(&diff.routes_changed) {
            let change = RouteChange::Replace {
                dst: self.fact(r.dst)?.ip,
                via: self.fact(r.next_hop)?.ip,
            };
            per_node.entry(r.src).or_default().push(change);
        }
        for r in &diff.routes_removed {
            // A node that is going away takes its routing table with it.
            let (Some(_), Some(dst)) = (self.model.node(r.src), self.facts.get(&r.dst)) else {
                continue;
            };
            per_node
                .entry(r.src)
                .or_default()
                .push(RouteChange::Delete { dst: dst.ip });
        }
        let mut written = 0;
        for (node, changes) in per_node {
            written += changes.len();
            self.runtime.set_routes(node, changes).await?;
        }
        Ok(written)
    }

    fn link_slots(&self) -> BTreeMap<(NodeId, NodeId), u32> {
        let by_mac: BTreeMap<[u8; 6], NodeId> =
            self.facts.values().map(|f| (f.mac, f.id)).collect();
        self.dp
            .slots()
            .filter_map(|(key, slot)| {
                Some(((*by_mac.get(&key.src)?, *by_mac.get(&key.dst)?), slot))
            })
            .collect()
    }

    fn counters(&self) -> Result<Counters, SimError> {
        let by_mac: BTreeMap<[u8; 6], NodeId> =
            self.facts.values().map(|f| (f.mac, f.id)).collect();
        let mut links = BTreeMap::new();
        for (key, c) in self.dp.all_link_counters()? {
            if let (Some(&from), Some(&to)) = (by_mac.get(&key.src), by_mac.get(&key.dst)) {
                links.insert((from, to), c);
            }
        }
        Ok(Counters {
            links,
            global: self.dp.global_counters()?,
        })
    }

    fn fact(&self, id: NodeId) -> Result<&NodeFacts, SimError> {
        self.facts
            .get(&id)
            .ok_or(SimError::Runtime(RuntimeError::UnknownNode(id)))
    }

    fn key(&self, from: NodeId, to: NodeId) -> Result<LinkKey, SimError> {
        Ok(LinkKey {
            src: self.fact(from)?.mac,
            dst: self.fact(to)?.mac,
        })
    }

    fn publish(&mut self) {
        self.version += 1;
        let state = MeshState {
            version: self.version,
            snapshot: self.model.snapshot(),
            nodes: self.facts.clone(),
            run: self.runtime.run_info(),
            delays_enforced: self.fq,
            last_apply: self.last_apply,
            link_slots: self.link_slots(),
        };
        self.state.send_replace(Arc::new(state));
    }
}

/// Both directions of a link.
fn directions(link: &Link) -> [(NodeId, NodeId); 2] {
    [
        (link.pair.a(), link.pair.b()),
        (link.pair.b(), link.pair.a()),
    ]
}

/// The datapath's view of a model link (both directions get the same).
pub fn shape(p: &model::LinkParams) -> LinkShape {
    LinkShape {
        latency: Duration::from_secs_f64(p.latency_ms / 1000.0),
        jitter: Duration::from_secs_f64(p.jitter_ms / 1000.0),
        rate_bytes_per_s: p.bandwidth_bps / 8,
        loss: p.loss_pct / 100.0,
        ..Default::default()
    }
}

/// Folds runs of moves of the same node into the last one (only the latest position of a
/// dragged node matters); every mover still gets its answer.
fn coalesce_moves(batch: Vec<Command>) -> Vec<Command> {
    let mut out: Vec<Command> = Vec::with_capacity(batch.len());
    for command in batch {
        if let Command::MoveNode { id, x, y, replies } = command {
            if let Some(Command::MoveNode {
                id: last,
                x: lx,
                y: ly,
                replies: earlier,
            }) = out.last_mut()
                && *last == id
            {
                (*lx, *ly) = (x, y);
                earlier.extend(replies);
                continue;
            }
            out.push(Command::MoveNode { id, x, y, replies });
        } else {
            out.push(command);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(id: u32, x: f64) -> (Command, oneshot::Receiver<Result<(), SimError>>) {
        let (reply, rx) = oneshot::channel();
        (
            Command::MoveNode {
                id: NodeId(id),
                x,
                y: 0.0,
                replies: vec![reply],
            },
            rx,
        )
    }

    #[test]
    fn runs_of_moves_of_one_node_fold_into_the_latest() {
        let (a1, _r1) = mv(1, 1.0);
        let (a2, _r2) = mv(1, 2.0);
        let (b, _r3) = mv(2, 5.0);
        let (a3, _r4) = mv(1, 3.0);
        let (reply, _r5) = oneshot::channel();
        let remove = Command::RemoveNode {
            id: NodeId(1),
            reply,
        };
        let (a4, _r6) = mv(1, 4.0);
        let out = coalesce_moves(vec![a1, a2, b, a3, remove, a4]);
        let summary: Vec<String> = out
            .iter()
            .map(|c| match c {
                Command::MoveNode { id, x, replies, .. } => {
                    format!("move {id} {x} ({})", replies.len())
                }
                Command::RemoveNode { id, .. } => format!("remove {id}"),
                _ => "other".into(),
            })
            .collect();
        // Only adjacent moves fold: a move never jumps over another node's or a removal.
        assert_eq!(
            summary,
            [
                "move n1 2 (2)",
                "move n2 5 (1)",
                "move n1 3 (1)",
                "remove n1",
                "move n1 4 (1)"
            ]
        );
    }
}
