//! Where nodes live, and what the Sim's [`NodeRuntime`] is: a backend that makes nodes
//! (`netns`, the default, needs nothing but the kernel; `docker`, containers through
//! bollard) with the run's workload in them. What both backends do alike is written once
//! here: the workload started in a new node and stopped before it goes, the routes
//! (`node`), the order of a shutdown. A backend only makes and removes nodes (`backend`).

mod backend;
pub mod cleanup;
pub mod confine;
pub mod docker;
pub mod docker_watch;
mod host_link;
pub mod ksm;
pub mod lock;
pub mod names;
pub mod netns;
mod node;
pub mod process;

use std::{collections::HashMap, sync::Arc};

pub use backend::{Backend, BackendNode};
use futures_util::{StreamExt as _, stream};
use tokio::sync::watch;

use self::{docker::DockerBackend, netns::NetnsBackend, node::NodeNet};
use crate::{
    model::{HOST, NodeId},
    net::{NetNs, NetNsError, NetlinkError, SysctlError, rps::RpsError},
    run_config::{Addressing, AddressingError, BackendKind, RunConfig},
    sim::{HostError, NodeFacts, NodeRuntime, Refusal, RouteChange, RunInfo},
    workload::{
        NodeInfo, NodeWorkload, RunWorkload, Running, WorkloadError, WorkloadKind, WorkloadStatus,
        host::NodeHost,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error(transparent)]
    Rps(#[from] RpsError),
    #[error(transparent)]
    Addressing(#[from] AddressingError),
    #[error("node {0} does not exist in the runtime")]
    UnknownNode(NodeId),
    #[error("the namespace {0} has no eth0")]
    NoEth0(String),
    #[error(
        "{0} already exists: another meshsim is running, or one crashed; stop it, or run `meshsim down`"
    )]
    Leftover(String),
    #[error(
        "the subnet {subnet} is in use on this host ({by}): another run (or network) has it; \
         give this run another one, e.g. --subnet 10.78.0.0/16"
    )]
    SubnetInUse { subnet: String, by: String },
    #[error(transparent)]
    Docker(#[from] docker::DockerError),
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error(transparent)]
    Ksm(#[from] ksm::KsmError),
}

impl RuntimeError {
    /// A namespace that exists already is a leftover of another run; other errors as they are.
    fn from_netns(e: NetNsError) -> Self {
        match e {
            NetNsError::AlreadyExists { name, .. } => {
                RuntimeError::Leftover(format!("the namespace {name}"))
            }
            e => e.into(),
        }
    }
}

impl From<RuntimeError> for HostError {
    fn from(e: RuntimeError) -> Self {
        HostError::new(e)
    }
}

/// A running node: its network, and how its workload runs.
struct RuntimeNode {
    info: NodeInfo,
    net: NodeNet,
    running: Option<Running>,
}

/// How many nodes' routes are written at once. More than the cores, so that each core has
/// a write to do while another node's reply is on its way back.
const ROUTE_WRITERS: usize = 8;

/// A backend with the run's workload: the Sim's [`NodeRuntime`].
pub struct Runtime<B> {
    backend: B,
    addressing: Addressing,
    workload: RunWorkload,
    nodes: HashMap<NodeId, RuntimeNode>,
}

impl<B: Backend> Runtime<B> {
    pub fn new(backend: B, addressing: Addressing, workload: RunWorkload) -> Self {
        Runtime {
            backend,
            addressing,
            workload,
            nodes: HashMap::new(),
        }
    }

    /// Every node's workload: starting, ready or failed. It keeps working after the runtime
    /// is handed to the Sim.
    pub fn workload_status(&self) -> watch::Receiver<WorkloadStatus> {
        self.workload.status()
    }

    /// Every node's restart policy, when nodes run homeservers.
    pub fn restarts(&self) -> Option<crate::workload::restart::RestartPolicies> {
        self.workload.restarts()
    }

    /// The run's Matrix view, when nodes run homeservers.
    pub fn matrix(&self) -> Option<Arc<crate::workload::matrix::Matrix>> {
        self.workload.matrix()
    }

    /// The namespace of a node, for `exec` and tests.
    pub fn namespace(&self, id: NodeId) -> Option<&NetNs> {
        self.nodes.get(&id).map(|n| &n.net.ns)
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Set when the backend's nodes went away behind meshsim's back (see [`Backend::lost`]).
    pub fn lost(&self) -> Option<watch::Receiver<Option<docker_watch::DockerLost>>> {
        self.backend.lost()
    }

    async fn start_workload(
        &mut self,
        info: &NodeInfo,
        workload: NodeWorkload,
        host: Arc<dyn NodeHost>,
    ) -> Result<Option<Running>, RuntimeError> {
        Ok(self.workload.start(info, workload, host).await?)
    }
}

impl<B: Backend> NodeRuntime for Runtime<B> {
    fn run_info(&self) -> RunInfo {
        RunInfo {
            backend: self.backend.name(),
            workload: self.workload.name(),
            database: self.workload.database(),
            profile: self.workload.profile(),
            launch: self.workload.launch(),
            ksm: ksm::merging(),
        }
    }

    fn host(&self) -> Option<NodeFacts> {
        Some(NodeFacts {
            id: HOST,
            name: "host".to_owned(),
            ip: self.addressing.host(),
            mac: Addressing::host_mac(),
            port: self.backend.host_port()?,
            workload: NodeWorkload::None,
        })
    }

    /// The node's address must fit the subnet, and the backend must have room.
    fn admit(&self, id: NodeId, nodes: usize) -> Result<(), Refusal> {
        let refuse = |reason: String| Refusal {
            node: Some(id),
            reason,
        };
        self.addressing
            .node(id)
            .map_err(|e| refuse(e.to_string()))?;
        self.backend.room_for(nodes).map_err(refuse)
    }

    async fn create_node(
        &mut self,
        id: NodeId,
        workload: NodeWorkload,
    ) -> Result<NodeFacts, HostError> {
        let info = NodeInfo {
            id,
            name: id.name(),
            ip: self.addressing.node(id).map_err(RuntimeError::from)?,
        };
        let made = self
            .backend
            .create(id, &self.workload.needs(workload))
            .await?;
        let running = match self.start_workload(&info, workload, made.host).await {
            Ok(running) => running,
            Err(e) => {
                let _ = self.backend.remove(id).await;
                return Err(e.into());
            }
        };
        let facts = NodeFacts {
            id,
            name: info.name.clone(),
            ip: info.ip,
            mac: Addressing::mac(id),
            port: made.port,
            workload,
        };
        self.nodes.insert(
            id,
            RuntimeNode {
                info,
                net: made.net,
                running,
            },
        );
        Ok(facts)
    }

    async fn remove_node(&mut self, id: NodeId) -> Result<(), HostError> {
        let node = self
            .nodes
            .remove(&id)
            .ok_or(RuntimeError::UnknownNode(id))?;
        if let Some(running) = node.running {
            self.workload.stop(&node.info, running).await;
        }
        drop(node.net);
        self.backend.remove(id).await?;
        Ok(())
    }

    async fn set_routes(&mut self, id: NodeId, changes: &[RouteChange]) -> Result<(), HostError> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(RuntimeError::UnknownNode(id))?;
        node.net.set_routes(&self.addressing, changes).await?;
        Ok(())
    }

    /// Up to [`ROUTE_WRITERS`] nodes at once: a route write is the kernel's work, done
    /// inside the write call, and each node has its own netlink connection driven by a task
    /// of its own, so the writes of different nodes run on every core.
    async fn set_routes_of(
        &mut self,
        batches: &[(NodeId, Vec<RouteChange>)],
    ) -> Result<(), HostError> {
        if let Some((id, _)) = batches.iter().find(|(id, _)| !self.nodes.contains_key(id)) {
            return Err(RuntimeError::UnknownNode(*id).into());
        }
        let wanted: HashMap<NodeId, &[RouteChange]> = batches
            .iter()
            .map(|(id, changes)| (*id, changes.as_slice()))
            .collect();
        let addressing = &self.addressing;
        let mut writes = Vec::with_capacity(wanted.len());
        for (id, node) in &mut self.nodes {
            if let Some(changes) = wanted.get(id) {
                writes.push(node.net.set_routes(addressing, changes));
            }
        }
        let mut written = stream::iter(writes).buffer_unordered(ROUTE_WRITERS);
        while let Some(result) = written.next().await {
            result?;
        }
        Ok(())
    }

    /// Every node (its workload first, then the node), then what the backend made for the
    /// run, then what the workload made for it.
    ///
    /// At the end everything goes at once: the workloads stop together (each may take its
    /// grace period), then the backend removes every node in one sweep, which lets the
    /// kernel free the namespaces in batches rather than one by one.
    async fn shutdown(&mut self) -> Result<(), HostError> {
        let nodes: Vec<RuntimeNode> = self.nodes.drain().map(|(_, node)| node).collect();
        let workload = &self.workload;
        let mut nets = Vec::with_capacity(nodes.len());
        let mut stopping = Vec::new();
        for node in nodes {
            nets.push(node.net);
            if let Some(running) = node.running {
                stopping.push(async move { workload.stop(&node.info, running).await });
            }
        }
        futures_util::future::join_all(stopping).await;
        // The namespaces' handles (and the netlink sockets inside) would keep them alive.
        drop(nets);
        // What the run made for itself goes even when a node would not (a daemon gone).
        let removed = self.backend.remove_all().await;
        let finished = self.backend.finish().await;
        self.workload.finish();
        removed?;
        finished?;
        Ok(())
    }
}

/// Either backend, so a run is one type whichever it uses.
pub enum AnyBackend {
    Netns(NetnsBackend),
    Docker(DockerBackend),
}

impl Backend for AnyBackend {
    fn name(&self) -> &'static str {
        match self {
            AnyBackend::Netns(b) => b.name(),
            AnyBackend::Docker(b) => b.name(),
        }
    }

    fn room_for(&self, nodes: usize) -> Result<(), String> {
        match self {
            AnyBackend::Netns(b) => b.room_for(nodes),
            AnyBackend::Docker(b) => b.room_for(nodes),
        }
    }

    fn host_port(&self) -> Option<u32> {
        match self {
            AnyBackend::Netns(b) => b.host_port(),
            AnyBackend::Docker(b) => b.host_port(),
        }
    }

    async fn create(
        &mut self,
        id: NodeId,
        needs: &crate::workload::host::NodeNeeds,
    ) -> Result<BackendNode, RuntimeError> {
        match self {
            AnyBackend::Netns(b) => b.create(id, needs).await,
            AnyBackend::Docker(b) => b.create(id, needs).await,
        }
    }

    async fn remove(&mut self, id: NodeId) -> Result<(), RuntimeError> {
        match self {
            AnyBackend::Netns(b) => b.remove(id).await,
            AnyBackend::Docker(b) => b.remove(id).await,
        }
    }

    async fn remove_all(&mut self) -> Result<(), RuntimeError> {
        match self {
            AnyBackend::Netns(b) => b.remove_all().await,
            AnyBackend::Docker(b) => b.remove_all().await,
        }
    }

    fn lost(&self) -> Option<watch::Receiver<Option<docker_watch::DockerLost>>> {
        match self {
            AnyBackend::Netns(b) => b.lost(),
            AnyBackend::Docker(b) => b.lost(),
        }
    }

    async fn finish(&mut self) -> Result<(), RuntimeError> {
        match self {
            AnyBackend::Netns(b) => b.finish().await,
            AnyBackend::Docker(b) => b.finish().await,
        }
    }
}

/// Prepares the workload, then starts the backend `run` names. Nothing is left behind
/// when either fails.
pub async fn start(
    run: &RunConfig,
    workload: &WorkloadKind,
) -> Result<Runtime<AnyBackend>, RuntimeError> {
    let workload = RunWorkload::prepare(workload, run).await?;
    let backend = match run.backend {
        BackendKind::Netns => NetnsBackend::start(run.addressing, run.prefix.clone())
            .await
            .map(AnyBackend::Netns),
        BackendKind::Docker => {
            let image = run
                .image
                .clone()
                .or_else(|| workload.docker_image().map(str::to_owned))
                .unwrap_or_else(|| docker::BASE_IMAGE.to_owned());
            DockerBackend::start(run.addressing, image, run.prefix.clone())
                .await
                .map(AnyBackend::Docker)
        }
    };
    match backend {
        Ok(backend) => Ok(Runtime::new(backend, run.addressing, workload)),
        Err(e) => {
            workload.finish();
            Err(e)
        }
    }
}
