//! What the Sim needs from the world, as traits it owns: a [`NodeRuntime`] that makes and
//! removes nodes and sets their routes (the netns or Docker backend with the run's
//! workload), and a [`Shaper`] that shapes and counts links (the eBPF datapath). The Sim
//! never names either implementation, so its apply order, its undo and its folding of moves
//! are unit-tested with fakes (`sim::fake`), without root.

use std::{fmt, future::Future, net::Ipv4Addr};

use meshsim_common::{GlobalCounters, LinkCounters, LinkKey};

use crate::{
    model::{LinkParams, NodeId},
    workload::NodeWorkload,
};

/// A failure of the host: a kernel refusal, a full bridge, a Docker error. The Sim undoes
/// what the change had done and answers with it; the API shows it as a 500 (the detail goes
/// to the log). Limits a user can run into are checked before anything is touched and are
/// [`Refusal`]s instead.
pub struct HostError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl HostError {
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        HostError(e.into())
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::error::Error for HostError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A change the host cannot take, found before anything is touched: a node whose address
/// does not fit the subnet, more nodes than the bridge or the maps hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// The node that does not fit, when one is to blame.
    pub node: Option<NodeId>,
    /// What the limit is and what to do.
    pub reason: String,
}

/// How a run was made, for the API and the canvas: where nodes live and what they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunInfo {
    /// `netns` or `docker`.
    pub backend: &'static str,
    /// The run's workload: `none`, `command`, `synapse` or `synapse-workers`.
    pub workload: &'static str,
    /// Homeservers' database (`sqlite`, `postgres`); `None` without homeservers.
    pub database: Option<&'static str>,
    /// The workers' profile (`small`, `full`) of `synapse-workers`.
    pub profile: Option<&'static str>,
    /// How homeservers start (`fork`, `cold`); `None` without homeservers.
    pub launch: Option<&'static str>,
    /// Whether node processes' pages are merged (`--ksm`).
    pub ksm: bool,
}

/// What the rest of meshsim needs to know about a running node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    pub id: NodeId,
    pub name: String,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// The node's bridge port (host-side veth) in the root namespace: the classifier's place.
    pub port: u32,
    /// Whether it runs the run's workload or nothing.
    pub workload: NodeWorkload,
}

/// One change to a node's routing table, in node ids (the runtime knows their addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteChange {
    /// Reach `dst` through the neighbour `via`.
    Replace {
        dst: NodeId,
        via: NodeId,
    },
    Delete {
        dst: NodeId,
    },
}

/// The nodes of a run: a backend (namespaces or containers) with the run's workload in them.
pub trait NodeRuntime: Send {
    fn run_info(&self) -> RunInfo;
    /// Whether node `id` can be made when the mesh will hold `nodes` nodes: its address fits
    /// the subnet and the backend has room. Asked for every node of a change before the
    /// change touches anything.
    fn admit(&self, id: NodeId, nodes: usize) -> Result<(), Refusal>;
    /// The host as an end of client links (id [`HOST`](crate::model::HOST), its address,
    /// MAC and the bridge port node -> host frames leave through); `None` when the host
    /// talks to nodes through the bridge itself and has no client links.
    fn host(&self) -> Option<NodeFacts> {
        None
    }
    /// Creates a node that runs the run's workload, or nothing. A failure leaves nothing of
    /// the node behind.
    fn create_node(
        &mut self,
        id: NodeId,
        workload: NodeWorkload,
    ) -> impl Future<Output = Result<NodeFacts, HostError>> + Send;
    fn remove_node(&mut self, id: NodeId) -> impl Future<Output = Result<(), HostError>> + Send;
    fn set_routes(
        &mut self,
        id: NodeId,
        changes: &[RouteChange],
    ) -> impl Future<Output = Result<(), HostError>> + Send;
    /// Applies several nodes' route changes (one batch per node), each node's in order;
    /// a runtime may write different nodes at once. After a failure, any batch may have
    /// been written wholly, in part or not at all.
    fn set_routes_of(
        &mut self,
        batches: &[(NodeId, Vec<RouteChange>)],
    ) -> impl Future<Output = Result<(), HostError>> + Send {
        async move {
            for (id, changes) in batches {
                self.set_routes(*id, changes).await?;
            }
            Ok(())
        }
    }
    /// Removes every node and what the runtime made for them.
    fn shutdown(&mut self) -> impl Future<Output = Result<(), HostError>> + Send;
}

/// How many nodes and directed links a shaper holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShaperCapacity {
    pub nodes: usize,
    pub directed_links: usize,
}

/// Reads counters from another task than the Sim's (telemetry, `/metrics`).
pub trait ReadCounters: Send + Sync {
    /// The counters of the link in `slot` (see [`super::MeshState::link_slots`]).
    fn link(&self, slot: u32) -> Result<LinkCounters, HostError>;
    fn global(&self) -> Result<GlobalCounters, HostError>;
}

/// Shapes and counts directed links between node ports.
pub trait Shaper: Send {
    /// Whether delays are enforced (the kernel has the qdisc that holds packets).
    fn delays_enforced(&self) -> bool;
    fn capacity(&self) -> ShaperCapacity;
    /// Starts shaping at a node's bridge port (the classifier and its qdisc).
    fn attach_port(&mut self, port: u32) -> impl Future<Output = Result<(), HostError>> + Send;
    fn detach_port(&mut self, port: u32) -> Result<(), HostError>;
    /// Makes `mac` a node (strict mode tells node frames from the rest by it).
    fn upsert_node(&mut self, mac: [u8; 6], id: NodeId, port: u32) -> Result<(), HostError>;
    fn remove_node(&mut self, mac: &[u8; 6]) -> Result<(), HostError>;
    /// Adds a directed link or changes it in place; `port` is its destination's port.
    fn upsert_link(
        &mut self,
        key: LinkKey,
        port: u32,
        params: &LinkParams,
    ) -> Result<(), HostError>;
    fn remove_link(&mut self, key: &LinkKey) -> Result<(), HostError>;
    /// The counter slot of every directed link.
    fn link_slots(&self) -> Vec<(LinkKey, u32)>;
    fn link_counters(&self) -> Result<Vec<(LinkKey, LinkCounters)>, HostError>;
    fn global_counters(&self) -> Result<GlobalCounters, HostError>;
    fn counter_reader(&self) -> Result<Box<dyn ReadCounters>, HostError>;
}
