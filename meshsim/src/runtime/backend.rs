//! What a backend does: make a node (its namespace or container, its veth on the bridge and
//! its addressing) and take it away. Everything else, the workload in the node and the
//! routes, the runtime does the same way for both (`runtime::Runtime`).

use std::{future::Future, sync::Arc};

use tokio::sync::watch;

use super::{RuntimeError, docker_watch::DockerLost, node::NodeNet};
use crate::{
    model::NodeId,
    workload::host::{NodeHost, NodeNeeds},
};

/// A node a backend made.
pub struct BackendNode {
    /// Its bridge port (host-side veth) in the root namespace.
    pub port: u32,
    /// Its namespace and `eth0`, addressed.
    pub net: NodeNet,
    /// How workloads run things in it.
    pub host: Arc<dyn NodeHost>,
}

pub trait Backend: Send {
    /// `netns` or `docker`.
    fn name(&self) -> &'static str;
    /// Whether the backend holds `nodes` nodes; if not, what the limit is and what to do.
    fn room_for(&self, nodes: usize) -> Result<(), String>;
    /// Makes node `id` with the node's MAC and address; a failure leaves nothing of it.
    fn create(
        &mut self,
        id: NodeId,
        needs: &NodeNeeds,
    ) -> impl Future<Output = Result<BackendNode, RuntimeError>> + Send;
    /// Takes a node away with everything still running in it.
    fn remove(&mut self, id: NodeId) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Takes every node away at once (the end of a run), as fast as the backend can.
    fn remove_all(&mut self) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// The bridge port the host's end of its client links hangs on, where node -> host
    /// frames are shaped; `None` where the host talks through the bridge itself (no client
    /// links: Docker for now).
    fn host_port(&self) -> Option<u32> {
        None
    }
    /// Set when the nodes went away behind meshsim's back and the run cannot go on: only
    /// containers can (their daemon stops them), so `None` elsewhere.
    fn lost(&self) -> Option<watch::Receiver<Option<DockerLost>>> {
        None
    }
    /// After the last node: the bridge or network the backend made at its start.
    fn finish(&mut self) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}
