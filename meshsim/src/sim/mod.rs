//! The Sim: one task that owns the model, takes commands over a channel, applies each diff to
//! the runtime, the datapath and the routes (in that order, see `apply`), and publishes the
//! new state. No locks around the model: only this task touches it.
//!
//! It talks to the world only through the traits in [`ports`]: a [`NodeRuntime`] and a
//! [`Shaper`]. A change is all or nothing: checked in full before anything is touched, and
//! if the host fails half-way, what was done is undone and the model is put back, so the
//! published state is always what exists.

mod apply;
mod client;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fake;
mod ports;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use meshsim_common::{GlobalCounters, LinkCounters, LinkKey};
pub use ports::{
    HostError, NodeFacts, NodeRuntime, ReadCounters, Refusal, RouteChange, RunInfo, Shaper,
    ShaperCapacity,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    model::{
        ClientDoc, ClientLink, ClientLinks, CutChange, Diff, HOST, LinkField, LinkPins, Model,
        ModelError, Node, NodeId, Route, Routes, Settings, Snapshot, Topology,
    },
    workload::NodeWorkload,
};

/// What subscribers see after every change.
#[derive(Debug, Clone)]
pub struct MeshState {
    /// Grows by one with every applied change.
    pub version: u64,
    pub snapshot: Snapshot,
    /// Every node's next hops (shared with the model: cheap).
    pub routes: Routes,
    pub nodes: BTreeMap<NodeId, NodeFacts>,
    /// Where nodes live and what the run's workload is (each node's is in its facts).
    pub run: RunInfo,
    /// Whether delays are enforced (the kernel has sch_fq).
    pub delays_enforced: bool,
    /// Where the time of the last change went.
    pub last_apply: ApplyTimings,
    /// The counter slot of every directed link, by (from, to), for a [`ReadCounters`].
    /// Client links are here too, with the host as [`HOST`].
    pub link_slots: BTreeMap<(NodeId, NodeId), u32>,
    /// The host as an end of client links; `None` when the backend has none.
    pub host: Option<NodeFacts>,
    /// The client links' default and per-node settings.
    pub clients: ClientLinks,
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
    /// The host cannot take the change; nothing was touched.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The host failed while applying the change; what was done is undone.
    #[error(transparent)]
    Host(#[from] HostError),
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
    /// One move as sent, or every move that queued up while the Sim was busy.
    MoveNodes(Vec<Move>),
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
    Cut {
        change: CutChange,
        reply: Reply<()>,
    },
    /// A node's own client link (`None`: back to the default).
    SetClient {
        id: NodeId,
        link: Option<ClientLink>,
        reply: Reply<()>,
    },
    SetClientDefault {
        link: ClientLink,
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
        reply: Reply<Box<dyn ReadCounters>>,
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
        self.ask(|reply| {
            Command::MoveNodes(vec![Move {
                id,
                x,
                y,
                replies: vec![reply],
            }])
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

    /// Sets `id`'s own client link, or with `None` puts it back to the default.
    /// Partitions, heals, takes a link down or brings it up.
    pub async fn cut(&self, change: CutChange) -> Result<(), SimError> {
        self.ask(|reply| Command::Cut { change, reply }).await
    }

    pub async fn set_client(&self, id: NodeId, link: Option<ClientLink>) -> Result<(), SimError> {
        self.ask(|reply| Command::SetClient { id, link, reply })
            .await
    }

    /// Sets the client link of every node without its own.
    pub async fn set_client_default(&self, link: ClientLink) -> Result<(), SimError> {
        self.ask(|reply| Command::SetClientDefault { link, reply })
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

    /// A reader of the counters that works without the Sim (see `MeshState::link_slots`).
    pub async fn counter_reader(&self) -> Result<Box<dyn ReadCounters>, SimError> {
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

pub struct Sim<R, S> {
    model: Model,
    runtime: R,
    shaper: S,
    facts: BTreeMap<NodeId, NodeFacts>,
    /// The host's end of the client links, once its port has the classifier.
    host: Option<NodeFacts>,
    clients: ClientLinks,
    state: watch::Sender<Arc<MeshState>>,
    version: u64,
    last_apply: ApplyTimings,
}

/// How many commands may wait for the Sim before senders wait too.
const QUEUE: usize = 256;

/// No node asks for anything but the run's workload.
const RUN_WORKLOAD: &BTreeMap<NodeId, NodeWorkload> = &BTreeMap::new();

impl<R: NodeRuntime + 'static, S: Shaper + 'static> Sim<R, S> {
    /// Starts the Sim's task with an empty mesh.
    pub fn spawn(
        runtime: R,
        shaper: S,
        settings: Settings,
    ) -> Result<(SimHandle, tokio::task::JoinHandle<()>), SimError> {
        let model = Model::new(settings)?;
        let initial = MeshState {
            version: 0,
            snapshot: model.snapshot(),
            routes: model.shared_routes(),
            nodes: BTreeMap::new(),
            run: runtime.run_info(),
            delays_enforced: shaper.delays_enforced(),
            last_apply: ApplyTimings::default(),
            link_slots: BTreeMap::new(),
            host: None,
            clients: ClientLinks::default(),
        };
        let (state, state_rx) = watch::channel(Arc::new(initial));
        let (tx, rx) = mpsc::channel(QUEUE);
        let sim = Sim {
            model,
            runtime,
            shaper,
            facts: BTreeMap::new(),
            host: None,
            clients: ClientLinks::default(),
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
}

impl<R: NodeRuntime, S: Shaper> Sim<R, S> {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        self.join_host().await;
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
                let id = self.model.next_id();
                let workloads = BTreeMap::from([(id, workload)]);
                let result = self
                    .change(None, &workloads, |m| m.add_node(x, y).map(|(_, diff)| diff))
                    .await
                    .map(|()| self.model.node(id).cloned().expect("just added"));
                let _ = reply.send(result);
            }
            Command::MoveNodes(moves) => self.move_nodes(moves).await,
            Command::RemoveNode { id, reply } => {
                let result = self.change(None, RUN_WORKLOAD, |m| m.remove_node(id)).await;
                let _ = reply.send(result);
            }
            Command::Pin { a, b, pins, reply } => {
                let result = self
                    .change(None, RUN_WORKLOAD, |m| m.pin(a, b, &pins))
                    .await;
                let _ = reply.send(result);
            }
            Command::Unpin { a, b, field, reply } => {
                let result = self
                    .change(None, RUN_WORKLOAD, |m| m.unpin(a, b, field))
                    .await;
                let _ = reply.send(result);
            }
            Command::SetSettings { settings, reply } => {
                let result = self
                    .change(None, RUN_WORKLOAD, |m| m.set_settings(settings))
                    .await;
                let _ = reply.send(result);
            }
            Command::Cut { change, reply } => {
                let result = self.change(None, RUN_WORKLOAD, |m| m.cut(&change)).await;
                let _ = reply.send(result);
            }
            Command::SetClient { id, link, reply } => {
                let _ = reply.send(self.set_client(id, link));
            }
            Command::SetClientDefault { link, reply } => {
                let _ = reply.send(self.set_client_default(link));
            }
            Command::Load {
                topology,
                workloads,
                progress,
                reply,
            } => {
                let clients = topology.client_links();
                let result = match self.admit_clients(&clients) {
                    Ok(()) => self
                        .change(progress.as_ref(), &workloads, |m| m.load(&topology))
                        .await
                        .and_then(|()| self.replace_clients(clients)),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Counters { reply } => {
                let _ = reply.send(self.counters());
            }
            Command::Topology { reply } => {
                let mut topology = self.model.topology();
                topology.client = self.clients.default;
                topology.clients = self
                    .clients
                    .nodes
                    .iter()
                    .map(|(id, link)| ClientDoc::new(*id, link))
                    .collect();
                let _ = reply.send(Ok(topology));
            }
            Command::Routes { id, reply } => {
                let result = match self.model.node(id) {
                    Some(_) => Ok(self.model.routes().filter(|r| r.src == id).collect()),
                    None => Err(SimError::Model(ModelError::UnknownNode(id))),
                };
                let _ = reply.send(result);
            }
            Command::CounterReader { reply } => {
                let _ = reply.send(self.shaper.counter_reader().map_err(SimError::from));
            }
            Command::Shutdown { .. } => unreachable!("handled by run"),
        }
    }

    /// Runs `op` on the model and applies its diff to the host, all or nothing: if the
    /// host refuses or fails, the model is put back as it was (ids included) and whatever
    /// the host had done is undone.
    /// Moves queued together are one change (one routing pass, one apply, one publish):
    /// under a hundred clients dragging, the Sim keeps up instead of queueing seconds of
    /// moves. If the change fails, each move is tried alone, so each mover's answer is its
    /// own.
    async fn move_nodes(&mut self, moves: Vec<Move>) {
        if moves.len() > 1 {
            let positions: Vec<(NodeId, f64, f64)> =
                moves.iter().map(|m| (m.id, m.x, m.y)).collect();
            if self
                .change(None, RUN_WORKLOAD, |m| m.move_nodes(&positions))
                .await
                .is_ok()
            {
                for m in moves {
                    for reply in m.replies {
                        let _ = reply.send(Ok(()));
                    }
                }
                return;
            }
        }
        for Move {
            id,
            x,
            y,
            mut replies,
        } in moves
        {
            let result = self
                .change(None, RUN_WORKLOAD, |m| m.move_node(id, x, y))
                .await;
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
    }

    async fn change(
        &mut self,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
        workloads: &BTreeMap<NodeId, NodeWorkload>,
        op: impl FnOnce(&mut Model) -> Result<Diff, ModelError>,
    ) -> Result<(), SimError> {
        let before = self.model.clone();
        let diff = op(&mut self.model)?;
        let settings_changed = before.settings() != self.model.settings();
        match self.apply(&before, &diff, progress, workloads).await {
            Ok(()) => {
                // A node that is gone takes its own client link settings with it.
                let model = &self.model;
                self.clients.nodes.retain(|id, _| model.node(*id).is_some());
                // An empty diff still changes what is published when the settings changed
                // (an empty mesh has no links for them to change).
                if !diff.is_empty() || settings_changed {
                    self.publish();
                }
                Ok(())
            }
            Err(e) => {
                self.model = before;
                // Undoing may have made nodes again (on new ports): show what exists.
                if matches!(e, SimError::Host(_)) {
                    self.publish();
                }
                Err(e)
            }
        }
    }

    fn counters(&self) -> Result<Counters, SimError> {
        let by_mac = self.ids_by_mac();
        let mut links = BTreeMap::new();
        for (key, c) in self.shaper.link_counters()? {
            if let (Some(&from), Some(&to)) = (by_mac.get(&key.src), by_mac.get(&key.dst)) {
                links.insert((from, to), c);
            }
        }
        Ok(Counters {
            links,
            global: self.shaper.global_counters()?,
        })
    }

    fn ids_by_mac(&self) -> BTreeMap<[u8; 6], NodeId> {
        self.facts
            .values()
            .chain(&self.host)
            .map(|f| (f.mac, f.id))
            .collect()
    }

    /// A node's facts, or the host's for [`HOST`].
    fn facts_of(&self, id: NodeId) -> Option<&NodeFacts> {
        if id == HOST {
            self.host.as_ref()
        } else {
            self.facts.get(&id)
        }
    }

    fn link_slots(&self) -> BTreeMap<(NodeId, NodeId), u32> {
        let by_mac = self.ids_by_mac();
        self.shaper
            .link_slots()
            .into_iter()
            .filter_map(|(key, slot)| {
                Some(((*by_mac.get(&key.src)?, *by_mac.get(&key.dst)?), slot))
            })
            .collect()
    }

    fn key(&self, from: NodeId, to: NodeId) -> Option<LinkKey> {
        Some(LinkKey {
            src: self.facts_of(from)?.mac,
            dst: self.facts_of(to)?.mac,
        })
    }

    fn publish(&mut self) {
        self.version += 1;
        let state = MeshState {
            version: self.version,
            snapshot: self.model.snapshot(),
            routes: self.model.shared_routes(),
            nodes: self.facts.clone(),
            run: self.runtime.run_info(),
            delays_enforced: self.shaper.delays_enforced(),
            last_apply: self.last_apply,
            link_slots: self.link_slots(),
            host: self.host.clone(),
            clients: self.clients.clone(),
        };
        self.state.send_replace(Arc::new(state));
    }
}

/// A node's move, with the answers owed to everyone who sent it (a drag sends many).
struct Move {
    id: NodeId,
    x: f64,
    y: f64,
    replies: Vec<Reply<()>>,
}

/// Folds each run of queued moves into one command, in which a node dragged many times
/// keeps only its latest position (the only one that matters); every mover still gets its
/// answer. Moves never pass another command, so a move sent after a removal sees it.
fn coalesce_moves(batch: Vec<Command>) -> Vec<Command> {
    let mut out: Vec<Command> = Vec::with_capacity(batch.len());
    for command in batch {
        match (command, out.last_mut()) {
            (Command::MoveNodes(moves), Some(Command::MoveNodes(run))) => {
                for new in moves {
                    match run.iter_mut().find(|m| m.id == new.id) {
                        Some(earlier) => {
                            (earlier.x, earlier.y) = (new.x, new.y);
                            earlier.replies.extend(new.replies);
                        }
                        None => run.push(new),
                    }
                }
            }
            (command, _) => out.push(command),
        }
    }
    out
}
