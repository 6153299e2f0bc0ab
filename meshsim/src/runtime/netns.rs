//! The netns backend: each node is a named network namespace `ms-<name>` (so
//! `ip netns exec ms-n1 ...` works) with a veth pair whose host side, also `ms-<name>`, is a
//! port of the bridge `ms-br0`. Inside, `eth0` has the node's address as a /32, so a node
//! reaches others only through routes via its links; forwarding is on and ICMP redirects off.
//!
//! Each node runs the run's workload (see `crate::workload`) or, when created with
//! [`NodeWorkload::None`], nothing: a bare namespace that only forwards (no process, no
//! status entry, no line in a Synapse run's hosts file). A Synapse node gets, besides its
//! process: a directory under the run directory with its configuration, a mount namespace in
//! which the run's hosts file and resolv.conf cover `/etc/hosts` and `/etc/resolv.conf`, and
//! a DNS answerer on 127.0.0.1:53. `create_node` does not wait for Synapse to answer: a
//! task per node watches it and publishes its state ([`NetnsRuntime::workload_status`]), so
//! the Sim goes on with links and routes while the servers start.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{sync::watch, task::JoinHandle};

use super::{
    Addressing, Backend, NodeFacts, RouteChange, RunInfo, Runtime, RuntimeError,
    workload::{Workload, with_private_files},
};
use crate::{
    model::NodeId,
    net::{NETNS_DIR, NetNs, Netlink, sysctl},
    workload::{
        NodeState, NodeStatus, NodeWorkload, SynapseOptions, WorkloadError, WorkloadKind,
        WorkloadStatus, dns,
        names::MeshNames,
        pki::RunCa,
        synapse::{self, NodeConfig, NodeDir},
        venv::VenvSpec,
    },
};

/// Everything meshsim makes carries this prefix, so `meshsim down` finds exactly its own.
pub const PREFIX: &str = "ms-";
pub const BRIDGE: &str = "ms-br0";

#[derive(Clone, Debug)]
pub struct NetnsConfig {
    pub addressing: Addressing,
    /// What every node runs.
    pub workload: WorkloadKind,
    /// Where the workloads' logs go (`<name>.log`).
    pub log_dir: PathBuf,
}

struct NodeHandle {
    ns: NetNs,
    nl: Netlink,
    eth0: u32,
    workload: Option<RunningWorkload>,
}

/// A node's running workload and what serves it.
struct RunningWorkload {
    process: Workload,
    /// Synapse: the task that watches the server start.
    watcher: Option<JoinHandle<()>>,
    /// Synapse: the node's DNS answerer.
    dns: Option<JoinHandle<()>>,
}

/// The run's workload, as prepared by `start`.
enum RunWorkload {
    None,
    Command(String),
    Synapse(Arc<SynapseRun>),
}

impl RunWorkload {
    /// Removes what `prepare_workload` made for a run that will not start.
    fn discard(&self) {
        if let RunWorkload::Synapse(run) = self {
            let _ = std::fs::remove_dir_all(&run.options.run_dir);
        }
    }
}

/// What every Synapse node of a run shares.
struct SynapseRun {
    options: SynapseOptions,
    venv: VenvSpec,
    ca: RunCa,
    ca_path: PathBuf,
    names: MeshNames,
    /// One registration secret for the run: the test users are made from the host.
    registration_secret: String,
    mesh_cidr: String,
}

pub struct NetnsRuntime {
    config: NetnsConfig,
    root: Netlink,
    bridge: u32,
    nodes: HashMap<NodeId, NodeHandle>,
    workload: RunWorkload,
    status: watch::Sender<WorkloadStatus>,
}

/// What a Synapse node sees of the run instead of the host's files (see `workload::names`).
const HOSTS: &str = "/etc/hosts";
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// How often a starting Synapse is asked whether it answers.
const PROBE_EVERY: Duration = Duration::from_millis(250);

impl NetnsRuntime {
    /// Prepares the workload (for Synapse: the cached install, which the first time takes
    /// a while and says so, the run directory and the run's CA), then creates the bridge
    /// with the host's address. Fails if the bridge exists (see `cleanup`). Nothing is left
    /// behind when it fails.
    pub async fn start(config: NetnsConfig) -> Result<Self, RuntimeError> {
        let root = Netlink::connect()?;
        if root.link_by_name(BRIDGE).await?.is_some() {
            return Err(RuntimeError::Leftover(format!("the bridge {BRIDGE}")));
        }
        let workload = prepare_workload(&config).await?;
        let bridge = match root.create_bridge(BRIDGE).await {
            Ok(bridge) => bridge,
            Err(e) => {
                workload.discard();
                return Err(e.into());
            }
        };
        if let Err(e) = root
            .add_address(
                bridge,
                config.addressing.host(),
                config.addressing.prefix_len(),
            )
            .await
        {
            let _ = root.delete_link(bridge).await;
            workload.discard();
            return Err(e.into());
        }
        Ok(NetnsRuntime {
            config,
            root,
            bridge,
            nodes: HashMap::new(),
            workload,
            status: watch::Sender::new(WorkloadStatus::new()),
        })
    }

    /// Every node's workload: starting, ready or failed. Take it before handing the runtime
    /// to the Sim; it keeps working after.
    pub fn workload_status(&self) -> watch::Receiver<WorkloadStatus> {
        self.status.subscribe()
    }

    /// The namespace of a node, for `exec` and tests.
    pub fn namespace(&self, id: NodeId) -> Option<&NetNs> {
        self.nodes.get(&id).map(|n| &n.ns)
    }

    async fn build_node(
        &mut self,
        id: NodeId,
        ns: &NetNs,
        workload: NodeWorkload,
    ) -> Result<(NodeFacts, NodeHandle), RuntimeError> {
        let name = id.name();
        let ip = self.config.addressing.node(id)?;
        let mac = Addressing::mac(id);
        let host_side = format!("{PREFIX}{name}");
        let port = self
            .root
            .create_veth(&host_side, "eth0", ns, Some(mac))
            .await?;
        self.root.set_master(port, self.bridge).await?;
        self.root.set_up(port).await?;
        let nl = Netlink::connect_in(ns)?;
        if let Some(lo) = nl.link_by_name("lo").await? {
            nl.set_up(lo.index).await?;
        }
        let eth0 = nl
            .link_by_name("eth0")
            .await?
            .ok_or(RuntimeError::UnknownNode(id))?
            .index;
        // IPv6 would add router solicitations and neighbour discovery to the links.
        sysctl::disable_ipv6(ns)?;
        nl.set_up(eth0).await?;
        nl.add_address(eth0, ip, 32).await?;
        sysctl::enable_forwarding(ns)?;
        // After forwarding: changing ip_forward resets accept_redirects.
        sysctl::disable_redirects(ns, &["eth0"])?;
        // The host (API clients, tests) is on the bridge: reachable directly.
        let host = self.config.addressing.host();
        nl.replace_route(host, host, eth0).await?;
        let running = match workload {
            NodeWorkload::Run => self.start_workload(id, &name, ip, ns)?,
            NodeWorkload::None => None,
        };
        let facts = NodeFacts {
            id,
            name,
            ip,
            mac,
            port,
            workload,
        };
        Ok((
            facts,
            NodeHandle {
                ns: ns.clone(),
                nl,
                eth0,
                workload: running,
            },
        ))
    }

    /// Starts the run's workload in a new node; a failure leaves nothing of it behind.
    fn start_workload(
        &mut self,
        id: NodeId,
        name: &str,
        ip: Ipv4Addr,
        ns: &NetNs,
    ) -> Result<Option<RunningWorkload>, RuntimeError> {
        let log = self.config.log_dir.join(format!("{name}.log"));
        let run = match &self.workload {
            RunWorkload::None => return Ok(None),
            RunWorkload::Command(cmd) => {
                let process =
                    Workload::shell(ns, cmd, name, &ip.to_string(), &log).map_err(|source| {
                        RuntimeError::Workload {
                            node: name.to_owned(),
                            source,
                        }
                    })?;
                self.status.send_modify(|s| {
                    s.insert(
                        id,
                        NodeStatus {
                            name: name.to_owned(),
                            state: NodeState::Ready,
                            pid: Some(process.pid()),
                            spawned: Instant::now(),
                            answered_after: None,
                            log,
                        },
                    );
                });
                return Ok(Some(RunningWorkload {
                    process,
                    watcher: None,
                    dns: None,
                }));
            }
            RunWorkload::Synapse(run) => Arc::clone(run),
        };
        // The name first: the server resolves its own name too.
        run.names
            .insert(name, ip)
            .map_err(WorkloadError::io("rewrite", run.names.hosts_path()))?;
        let config = NodeConfig {
            name,
            mesh_cidr: &run.mesh_cidr,
            ca_path: &run.ca_path,
            registration_secret: &run.registration_secret,
        };
        let result = synapse::write_node_dir(&run.options.run_dir, &config, &run.ca)
            .map_err(RuntimeError::from)
            .and_then(|node| {
                self.start_synapse(&run, id, ip, ns, &node, log)
                    .inspect_err(|_| {
                        // A reused directory holds the node's data from earlier in the run.
                        if !node.reused {
                            let _ = std::fs::remove_dir_all(&node.dir);
                        }
                    })
            });
        if result.is_err() {
            let _ = run.names.remove(name);
        }
        result.map(Some)
    }

    /// Spawns Synapse on a written node directory, with the node's DNS answerer and a task
    /// that watches the start.
    fn start_synapse(
        &mut self,
        run: &Arc<SynapseRun>,
        id: NodeId,
        ip: Ipv4Addr,
        ns: &NetNs,
        node: &NodeDir,
        log: PathBuf,
    ) -> Result<RunningWorkload, RuntimeError> {
        let socket = dns::bind_in(ns)?;
        let dns_task = tokio::spawn(dns::serve(socket, run.names.clone()));
        let mut cmd = ns.command(run.venv.python_bin());
        cmd.args(["-m", "synapse.app.homeserver", "--config-path"])
            .arg(node.config())
            .current_dir(&node.dir);
        let spawned = with_private_files(
            &mut cmd,
            &[
                (run.names.hosts_path(), Path::new(HOSTS)),
                (run.names.resolv_path(), Path::new(RESOLV_CONF)),
            ],
        )
        .and_then(|()| Workload::spawn(cmd, &log));
        let process = match spawned {
            Ok(process) => process,
            Err(source) => {
                dns_task.abort();
                return Err(RuntimeError::Workload {
                    node: node.name.clone(),
                    source,
                });
            }
        };
        let (pid, at) = (process.pid(), Instant::now());
        self.status.send_modify(|s| {
            s.insert(
                id,
                NodeStatus {
                    name: node.name.clone(),
                    state: NodeState::Starting,
                    pid: Some(pid),
                    spawned: at,
                    answered_after: None,
                    log: log.clone(),
                },
            );
        });
        let watcher = tokio::spawn(watch_start(
            Arc::clone(run),
            self.status.clone(),
            Started {
                id,
                name: node.name.clone(),
                ip,
                pid,
                log,
                at,
            },
        ));
        Ok(RunningWorkload {
            process,
            watcher: Some(watcher),
            dns: Some(dns_task),
        })
    }

    /// Stops the process (SIGTERM, then SIGKILL), then what served it. A Synapse node's
    /// directory stays until the run ends, so the node can be added back as itself.
    async fn stop_workload(&mut self, id: NodeId, workload: RunningWorkload) {
        let RunningWorkload {
            process,
            watcher,
            dns,
        } = workload;
        // The start watcher first, so it does not report the stop as a failure.
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        let _ = tokio::task::spawn_blocking(move || process.stop()).await;
        if let Some(dns) = dns {
            dns.abort();
        }
        if let RunWorkload::Synapse(run) = &self.workload
            && let Err(e) = run.names.remove(&id.name())
        {
            tracing::warn!("could not update {}: {e}", run.names.hosts_path().display());
        }
        self.status.send_modify(|s| {
            s.remove(&id);
        });
    }
}

/// Everything before the first node: logs, and for Synapse the install, the run directory,
/// the CA and the name files.
async fn prepare_workload(config: &NetnsConfig) -> Result<RunWorkload, RuntimeError> {
    let options = match &config.workload {
        WorkloadKind::None => return Ok(RunWorkload::None),
        WorkloadKind::Command(cmd) => {
            tracing::info!(%cmd, logs = %config.log_dir.display(), "every node runs a command");
            make_log_dir(&config.log_dir)?;
            return Ok(RunWorkload::Command(cmd.clone()));
        }
        WorkloadKind::Synapse(options) => options.clone(),
    };
    for target in [HOSTS, RESOLV_CONF] {
        if !Path::new(target).exists() {
            return Err(WorkloadError::NothingToCover(target.into()).into());
        }
    }
    make_log_dir(&config.log_dir)?;
    let install = options.clone();
    let venv = tokio::task::spawn_blocking(move || {
        install.prepare(&mut |line: &str| tracing::info!("{line}"))
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    .map_err(WorkloadError::from)?;
    synapse::prepare_run_dir(&options.run_dir)?;
    let made = synapse_run(options.clone(), venv, &config.addressing);
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&options.run_dir);
    }
    let run = made?;
    tracing::info!(
        version = %options.version,
        run_dir = %options.run_dir.display(),
        logs = %config.log_dir.display(),
        "every node runs Synapse: server name = node name, user @{}:<node>",
        options.user
    );
    Ok(RunWorkload::Synapse(Arc::new(run)))
}

/// The run's CA and name files, in a prepared run directory.
fn synapse_run(
    options: SynapseOptions,
    venv: VenvSpec,
    addressing: &Addressing,
) -> Result<SynapseRun, WorkloadError> {
    let ca = RunCa::new(&format!(
        "pid {} {}",
        std::process::id(),
        synapse::random_hex(4)
    ))?;
    let ca_path = options.run_dir.join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).map_err(WorkloadError::io("write", &ca_path))?;
    let names = MeshNames::create(&options.run_dir).map_err(WorkloadError::io(
        "write the name files in",
        &options.run_dir,
    ))?;
    // The host has the subnet's first address.
    let mesh_cidr = format!(
        "{}/{}",
        Ipv4Addr::from(u32::from(addressing.host()) - 1),
        addressing.prefix_len()
    );
    Ok(SynapseRun {
        registration_secret: synapse::random_hex(24),
        options,
        venv,
        ca,
        ca_path,
        names,
        mesh_cidr,
    })
}

fn make_log_dir(dir: &Path) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Workload {
        node: "(log directory)".into(),
        source,
    })
}

/// A Synapse that was just spawned.
struct Started {
    id: NodeId,
    name: String,
    ip: Ipv4Addr,
    pid: u32,
    log: PathBuf,
    at: Instant,
}

/// Asks the node until it answers `/_matrix/federation/v1/version`, makes its test user,
/// and publishes the outcome. Gives up when the process dies or the start timeout passes.
async fn watch_start(run: Arc<SynapseRun>, status: watch::Sender<WorkloadStatus>, node: Started) {
    let deadline = node.at + run.options.start_timeout;
    let outcome = loop {
        if synapse::federation_version_answers(node.ip, Duration::from_secs(2)).await {
            break Ok(node.at.elapsed());
        }
        if !alive(node.pid) {
            break Err(format!(
                "synapse on {} exited while starting; the end of {}:\n{}",
                node.name,
                node.log.display(),
                synapse::log_tail(&node.log, 12)
            ));
        }
        if Instant::now() >= deadline {
            break Err(format!(
                "synapse on {} did not answer within {} s: see {}",
                node.name,
                run.options.start_timeout.as_secs(),
                node.log.display()
            ));
        }
        tokio::time::sleep(PROBE_EVERY).await;
    };
    let outcome = match outcome {
        Ok(answered) => {
            let (venv, ip) = (run.venv.clone(), node.ip);
            let (secret, user, password) = (
                run.registration_secret.clone(),
                run.options.user.clone(),
                run.options.password.clone(),
            );
            let registered = tokio::task::spawn_blocking(move || {
                synapse::register_user(&venv, ip, &secret, &user, &password)
            })
            .await
            .unwrap_or_else(|e| Err(format!("registering the test user: {e}")));
            registered
                .map(|()| answered)
                .map_err(|e| format!("synapse on {}: {e}", node.name))
        }
        Err(e) => Err(e),
    };
    match &outcome {
        Ok(after) => tracing::info!(
            node = %node.name,
            "synapse answers after {:.1} s; @{}:{} is ready",
            after.as_secs_f64(),
            run.options.user,
            node.name
        ),
        Err(why) => tracing::error!("{why}"),
    }
    status.send_modify(|s| {
        if let Some(entry) = s.get_mut(&node.id) {
            match outcome {
                Ok(after) => {
                    entry.state = NodeState::Ready;
                    entry.answered_after = Some(after);
                }
                Err(why) => entry.state = NodeState::Failed(why),
            }
        }
    });
}

/// Whether `pid` runs (a zombie does not: it exited and waits for `wait`).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain spaces.
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .is_some_and(|state| state != 'Z' && state != 'X')
}

impl Runtime for NetnsRuntime {
    fn host_ip(&self) -> Ipv4Addr {
        self.config.addressing.host()
    }

    fn run_info(&self) -> RunInfo {
        RunInfo {
            backend: Backend::Netns,
            workload: self.config.workload.name(),
        }
    }

    async fn create_node(
        &mut self,
        id: NodeId,
        workload: NodeWorkload,
    ) -> Result<NodeFacts, RuntimeError> {
        let ns_name = format!("{PREFIX}{}", id.name());
        let ns = NetNs::create(&ns_name).map_err(|e| match e {
            crate::net::NetNsError::AlreadyExists { .. } => {
                RuntimeError::Leftover(format!("the namespace {ns_name}"))
            }
            e => e.into(),
        })?;
        match self.build_node(id, &ns, workload).await {
            Ok((facts, handle)) => {
                self.nodes.insert(id, handle);
                Ok(facts)
            }
            Err(e) => {
                // Nothing half-made stays: the namespace takes eth0 and its veth peer with it.
                let _ = NetNs::delete(&ns_name);
                if let Ok(Some(link)) = self
                    .root
                    .link_by_name(&format!("{PREFIX}{}", id.name()))
                    .await
                {
                    let _ = self.root.delete_link(link.index).await;
                }
                Err(e)
            }
        }
    }

    async fn remove_node(&mut self, id: NodeId) -> Result<(), RuntimeError> {
        let node = self
            .nodes
            .remove(&id)
            .ok_or(RuntimeError::UnknownNode(id))?;
        if let Some(w) = node.workload {
            self.stop_workload(id, w).await;
        }
        let name = node.ns.name().to_owned();
        drop(node.nl);
        drop(node.ns);
        // Anything still running inside (say, started with `meshsim exec`) would keep the
        // namespace, and with it the veth, alive after the mount is gone.
        super::cleanup::kill_processes_in(&format!("{NETNS_DIR}/{name}"));
        NetNs::delete(&name)?;
        // And so may a socket someone still holds in it: remove our end of the veth
        // regardless, which takes the peer with it.
        if let Some(link) = self.root.link_by_name(&name).await? {
            self.root.delete_link(link.index).await?;
        }
        Ok(())
    }

    async fn set_routes(
        &mut self,
        id: NodeId,
        changes: Vec<RouteChange>,
    ) -> Result<(), RuntimeError> {
        let node = self.nodes.get(&id).ok_or(RuntimeError::UnknownNode(id))?;
        for change in changes {
            match change {
                RouteChange::Replace { dst, via } => {
                    node.nl.replace_route(dst, via, node.eth0).await?
                }
                RouteChange::Delete { dst } => node.nl.delete_route(dst).await?,
            }
        }
        Ok(())
    }

    async fn shutdown(&mut self) -> Result<(), RuntimeError> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.remove_node(id).await?;
        }
        self.root.delete_link(self.bridge).await?;
        if let RunWorkload::Synapse(run) = &self.workload
            && let Err(e) = std::fs::remove_dir_all(&run.options.run_dir)
        {
            tracing::warn!("could not remove {}: {e}", run.options.run_dir.display());
        }
        Ok(())
    }
}
