//! `GET /api/state`: the whole mesh as the canvas draws it, and the JSON forms of nodes that
//! the other resources answer with. The WebSocket's `state` message is the same body.

use std::{net::Ipv4Addr, time::UNIX_EPOCH};

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;

use super::AppState;
use crate::{
    model::{ClientLinks, Link, Node, NodeId, Settings},
    sim::MeshState,
    workload::{NodeState, NodeStatus, node_workload_name, restart::Exit},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/state", get(get_state))
}

async fn get_state(State(app): State<AppState>) -> Json<StateBody> {
    let state = app.sim.state().borrow().clone();
    Json(StateBody::new(&state))
}

/// `{settings, run, nodes, links, delays_enforced, host, clients, partitions}`.
#[derive(Debug, Clone, Serialize)]
pub struct StateBody {
    pub settings: Settings,
    /// How the run was made, which the canvas needs to offer a workload for new nodes.
    pub run: RunBody,
    pub nodes: Vec<NodeBody>,
    pub links: Vec<Link>,
    /// False when the kernel has no sch_fq: links are counted but not delayed, and the canvas
    /// must say so.
    pub delays_enforced: bool,
    /// The host's end of the client links (`{id: 0, name: "host", ip, mac}`); null when the
    /// backend has no client links.
    pub host: Option<HostBody>,
    /// Client links: the default and the nodes with their own (`{default, nodes: {id: link}}`).
    pub clients: ClientLinks,
    /// The partitioned sides, each a list of node ids (`/api/cuts`); a cut link has `cut`.
    pub partitions: Vec<Vec<NodeId>>,
}

/// The host as an end of client links.
#[derive(Debug, Clone, Serialize)]
pub struct HostBody {
    pub id: NodeId,
    pub name: String,
    pub ip: Ipv4Addr,
    pub mac: String,
}

impl StateBody {
    pub fn new(state: &MeshState) -> Self {
        Self {
            settings: state.snapshot.settings.clone(),
            run: RunBody {
                backend: state.run.backend,
                workload: state.run.workload,
                database: state.run.database,
                profile: state.run.profile,
                launch: state.run.launch,
                ksm: state.run.ksm,
            },
            nodes: state
                .snapshot
                .nodes
                .iter()
                .map(|n| NodeBody::new(n, state))
                .collect(),
            links: state.snapshot.links.clone(),
            delays_enforced: state.delays_enforced,
            host: state.host.as_ref().map(|h| HostBody {
                id: h.id,
                name: h.name.clone(),
                ip: h.ip,
                mac: format_mac(&h.mac),
            }),
            clients: state.clients.clone(),
            partitions: state.snapshot.partitions.clone(),
        }
    }
}

/// `{backend: "netns"|"docker", workload: "none"|"command"|"synapse"|"synapse-workers"}`,
/// with homeservers also `database` (`sqlite`|`postgres`) and `launch` (`fork`|`cold`), with
/// workers `profile` (`small`|`full`), and `ksm: true` with `--ksm`: set when meshsim starts
/// (flags, the topology file's `[run]`), fixed for the run.
#[derive(Debug, Clone, Serialize)]
pub struct RunBody {
    pub backend: &'static str,
    pub workload: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ksm: bool,
}

/// A node with its addresses and what it runs: `{id, name, x, y, ip, mac, workload}`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeBody {
    pub id: NodeId,
    pub name: String,
    pub x: f64,
    pub y: f64,
    /// Null only for a node the runtime has not made yet, which the published state never
    /// holds (the Sim publishes after creating nodes).
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<String>,
    /// `none`, or the run's workload (`command`, `synapse`); null as `ip` is.
    pub workload: Option<&'static str>,
}

impl NodeBody {
    pub fn new(node: &Node, state: &MeshState) -> Self {
        let facts = state.nodes.get(&node.id);
        Self {
            id: node.id,
            name: node.name.clone(),
            x: node.x,
            y: node.y,
            ip: facts.map(|f| f.ip),
            mac: facts.map(|f| format_mac(&f.mac)),
            workload: facts.map(|f| node_workload_name(f.workload, state.run.workload)),
        }
    }

    /// The node `id` of `state`, if it exists there.
    pub fn find(id: NodeId, state: &MeshState) -> Option<Self> {
        state
            .snapshot
            .nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| Self::new(n, state))
    }
}

/// A node's workload as the canvas and `GET /api/workloads` show it: `starting`, `ready`,
/// `restarting` (it ended on its own and starts again at `restart_at_ms`) or `failed`, with
/// why (`detail`), how its process last ended (`exit`) and how often it ended and restarted.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadBody {
    pub id: NodeId,
    pub name: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When a restarting node starts again, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// How its process last ended on its own: `{"code": N}`, `{"signal": N}` or `"unknown"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<Exit>,
    pub crashes: u32,
    pub restarts: u32,
}

impl WorkloadBody {
    pub fn new(id: NodeId, status: &NodeStatus) -> Self {
        let (state, detail, restart_at) = match &status.state {
            NodeState::Starting => ("starting", None, None),
            NodeState::Ready => ("ready", None, None),
            NodeState::Restarting { why, at } => ("restarting", Some(why.clone()), Some(*at)),
            NodeState::Failed(why) => ("failed", Some(why.clone()), None),
        };
        WorkloadBody {
            id,
            name: status.name.clone(),
            state,
            detail,
            restart_at_ms: restart_at.map(|at| {
                at.duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64)
            }),
            pid: status.pid,
            exit: status.exit,
            crashes: status.crashes,
            restarts: status.restarts,
        }
    }
}

/// `02:6d:00:00:00:01`, as `ip link` shows it.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_look_like_ip_link_shows_them() {
        assert_eq!(
            format_mac(&[0x02, 0x6d, 0, 0, 0x1a, 0xff]),
            "02:6d:00:00:1a:ff"
        );
    }

    #[test]
    fn the_run_names_database_and_profile_only_for_homeservers() {
        let plain = RunBody {
            backend: "netns",
            workload: "command",
            database: None,
            profile: None,
            launch: None,
            ksm: false,
        };
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            serde_json::json!({"backend": "netns", "workload": "command"})
        );
        let workers = RunBody {
            backend: "docker",
            workload: "synapse-workers",
            database: Some("postgres"),
            profile: Some("full"),
            launch: Some("cold"),
            ksm: true,
        };
        assert_eq!(
            serde_json::to_value(&workers).unwrap(),
            serde_json::json!({"backend": "docker", "workload": "synapse-workers",
                "database": "postgres", "profile": "full", "launch": "cold", "ksm": true})
        );
    }
}
