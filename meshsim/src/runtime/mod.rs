//! Where nodes live. Both backends hand back the same facts, so the Sim, the datapath and the
//! routes do not care which one made a node. `netns` (the default: needs nothing but the
//! kernel) and `docker` (containers, through bollard).

mod addressing;
pub mod cleanup;
pub mod docker;
pub mod lock;
pub mod netns;
mod workload;

use std::{fmt, future::Future, net::Ipv4Addr, str::FromStr};

pub use addressing::{Addressing, AddressingError};

use crate::{
    model::NodeId,
    net::{NetNsError, NetlinkError, SysctlError},
    workload::NodeWorkload,
};

/// Where nodes live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A network namespace per node (needs nothing but the kernel).
    #[default]
    Netns,
    /// A Docker container per node, from a local image.
    Docker,
}

impl Backend {
    /// The names the flag and the topology file take.
    pub const NAMES: &[&str] = &["netns", "docker"];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Netns => "netns",
            Backend::Docker => "docker",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend {0:?}: use \"netns\" or \"docker\"")]
pub struct UnknownBackend(pub String);

impl FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "netns" => Ok(Backend::Netns),
            "docker" => Ok(Backend::Docker),
            other => Err(UnknownBackend(other.to_owned())),
        }
    }
}

/// How a run was made, for the API and the canvas: where nodes live and what they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunInfo {
    pub backend: Backend,
    /// The run's workload, as [`crate::workload::WorkloadKind::name`] gives it: `none`,
    /// `command` or `synapse`.
    pub workload: &'static str,
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

/// One change to a node's routing table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteChange {
    /// Reach `dst` (a /32) through the neighbour `via`.
    Replace {
        dst: Ipv4Addr,
        via: Ipv4Addr,
    },
    Delete {
        dst: Ipv4Addr,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error(transparent)]
    Addressing(#[from] AddressingError),
    #[error("node {0} does not exist in the runtime")]
    UnknownNode(NodeId),
    #[error(
        "{0} already exists: another meshsim is running, or one crashed; stop it, or run `meshsim down`"
    )]
    Leftover(String),
    #[error(transparent)]
    Docker(#[from] docker::DockerError),
    #[error(transparent)]
    WorkloadSetup(#[from] crate::workload::WorkloadError),
    #[error(transparent)]
    NodeDns(#[from] crate::workload::dns::DnsError),
    #[error("starting the workload of {node} failed: {source}")]
    Workload {
        node: String,
        #[source]
        source: std::io::Error,
    },
}

/// A backend that creates and removes nodes and sets their routes.
pub trait Runtime: Send {
    /// The host's address on the mesh bridge.
    fn host_ip(&self) -> Ipv4Addr;
    /// Where its nodes live and what the run's workload is.
    fn run_info(&self) -> RunInfo;
    /// Creates a node that runs the run's workload, or nothing.
    fn create_node(
        &mut self,
        id: NodeId,
        workload: NodeWorkload,
    ) -> impl Future<Output = Result<NodeFacts, RuntimeError>> + Send;
    fn remove_node(&mut self, id: NodeId) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn set_routes(
        &mut self,
        id: NodeId,
        changes: Vec<RouteChange>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Removes every node and what the runtime made for them.
    fn shutdown(&mut self) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}
