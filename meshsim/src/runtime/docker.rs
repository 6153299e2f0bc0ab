//! The docker backend: each node is a container `meshsim-<name>`, labelled
//! `org.meshsim.run=<run id>`, on the bridge network `meshsim`, talked to through bollard
//! (the Engine API over the daemon's Unix socket, never the docker CLI). The API version is
//! negotiated: Debian's daemon speaks an older one than bollard's default.
//!
//! Nothing of ours runs inside a container. Once it runs, meshsim names its network
//! namespace `ms-<name>` (a bind mount of `/proc/<pid>/ns/net`, so `ip netns exec ms-n1`
//! works as for the netns backend), and from then on treats it exactly like a netns node:
//! the classifier goes on the host side of the container's veth, and addresses, routes and
//! sysctls are set through netlink inside the namespace.
//!
//! Addressing: Docker's IPAM gives the container the node's address as a /16 on `eth0`
//! (`EndpointIpamConfig`), so Docker keeps the address reserved and its embedded DNS knows
//! it. meshsim then replaces that addressing inside the namespace, as the netns backend sets
//! it: the node's MAC, the address as a /32 and no connected subnet, so a node reaches the
//! others only through the per-destination routes of its links and never straight across
//! the bridge. Docker does not look at the interface again after the start, so the change
//! sticks. (IPAM alone cannot do this: Docker always installs the subnet's prefix and a
//! default route. Nor can it set the MAC here: bollard's models carry it per endpoint only,
//! which daemons before API 1.44, Debian's 20.10 among them, ignore.)
//!
//! A Synapse node gets what a netns Synapse node gets, from the same code: its directory
//! under the run directory (mounted at the same path, so the generated configuration's
//! paths hold), the run's hosts file and resolv.conf over `/etc/hosts` and
//! `/etc/resolv.conf` (Docker leaves those alone when a mount covers them), and meshsim's
//! DNS answerer on 127.0.0.1:53 in its namespace.
//!
//! A node created with [`NodeWorkload::None`] runs the run's image with `sleep infinity` as
//! its command instead of the workload's: the same files as its neighbours, nothing started.
//! (Not the image's own `CMD`, which an image of the user's may use to start a server.)

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use bollard::{
    Docker,
    errors::Error as BollardError,
    exec::{CreateExecOptions, StartExecOptions},
    models::{
        ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig,
        NetworkCreateRequest, NetworkingConfig,
    },
    query_parameters::{
        CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    },
};
use tokio::{sync::watch, task::JoinHandle};

use super::{Addressing, Backend, NodeFacts, RouteChange, RunInfo, Runtime, RuntimeError};
use crate::{
    model::NodeId,
    net::{NetNs, Netlink, sysctl},
    workload::{
        NodeState, NodeStatus, NodeWorkload, SynapseOptions, WorkloadError, WorkloadKind,
        WorkloadStatus, dns,
        names::MeshNames,
        pki::RunCa,
        synapse::{self, NodeConfig, NodeDir},
    },
};

/// The network every node is on.
pub const NETWORK: &str = "meshsim";
/// The name of the network's Linux bridge (Docker's default, `br-<id>`, would change
/// every run).
pub const BRIDGE: &str = "meshsim0";
/// Every container carries this label, with the run's id as its value.
pub const RUN_LABEL: &str = "org.meshsim.run";
/// Containers are named `meshsim-<node>`.
pub const CONTAINER_PREFIX: &str = "meshsim-";
/// The image of nodes without a workload, or with `--node-cmd`.
pub const BASE_IMAGE: &str = "meshsim/base";
/// The image of Synapse nodes.
pub const SYNAPSE_IMAGE: &str = "meshsim/synapse";
/// What builds the images.
pub const BUILD_IMAGES: &str = "cargo xtask images";
/// Where Synapse is inside `meshsim/synapse` (images/synapse/Dockerfile).
const SYNAPSE_BIN: &str = "/opt/synapse/bin";
/// The command of a node that runs nothing: it idles until removed.
const IDLE: [&str; 2] = ["sleep", "infinity"];

/// What went wrong talking to Docker; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "Docker is not reachable ({0}): start the daemon (Debian: `apt-get install docker.io`, \
         then `systemctl start docker`), or use `--backend netns`"
    )]
    Unreachable(String),
    #[error("the image {image} is missing: build it with `{BUILD_IMAGES}`")]
    MissingImage { image: String },
    #[error("Docker could not {action}: {source}")]
    Api {
        action: String,
        #[source]
        source: BollardError,
    },
    #[error("container {container}: {what}; see `docker logs {container}`")]
    Container { container: String, what: String },
}

impl DockerError {
    fn api(action: impl Into<String>) -> impl FnOnce(BollardError) -> Self {
        let action = action.into();
        move |source| DockerError::Api { action, source }
    }
}

/// Connects to the daemon on its default socket (or `DOCKER_HOST=unix://...`) and agrees
/// on an API version both sides speak.
pub async fn connect() -> Result<Docker, DockerError> {
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| h.starts_with("unix://"))
        .unwrap_or_else(|| DEFAULT_SOCKET.to_owned());
    connect_to(&socket).await
}

/// The daemon's socket unless `DOCKER_HOST=unix://...` says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Connects to the daemon at `socket` (a path, or `unix://PATH`); see [`connect`].
pub async fn connect_to(socket: &str) -> Result<Docker, DockerError> {
    let shown = socket.trim_start_matches("unix://").to_owned();
    let unreachable = |e: BollardError| DockerError::Unreachable(format!("{shown}: {e}"));
    // The request timeout, in seconds: a hung daemon fails a run instead of stalling it.
    let docker = Docker::connect_with_socket(socket, 120, bollard::API_DEFAULT_VERSION)
        .map_err(unreachable)?;
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}

/// Whether a local image exists.
async fn image_exists(docker: &Docker, image: &str) -> Result<bool, DockerError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(DockerError::api(format!("look up the image {image}"))(e)),
    }
}

#[derive(Clone, Debug)]
pub struct DockerConfig {
    pub addressing: Addressing,
    /// What every node runs.
    pub workload: WorkloadKind,
    /// Where the workloads' logs go (`<name>.log`).
    pub log_dir: PathBuf,
    /// The image; `None`: the workload's (`meshsim/base`, or `meshsim/synapse`).
    pub image: Option<String>,
}

struct DockerNode {
    container: String,
    ns: NetNs,
    nl: Netlink,
    eth0: u32,
    /// Synapse: the start watcher and the DNS answerer.
    tasks: Vec<JoinHandle<()>>,
}

/// What every Synapse node of a run shares.
struct SynapseRun {
    options: SynapseOptions,
    ca: RunCa,
    ca_path: PathBuf,
    names: MeshNames,
    registration_secret: String,
    mesh_cidr: String,
}

pub struct DockerRuntime {
    docker: Docker,
    config: DockerConfig,
    image: String,
    run_id: String,
    root: Netlink,
    nodes: HashMap<NodeId, DockerNode>,
    synapse: Option<Arc<SynapseRun>>,
    status: watch::Sender<WorkloadStatus>,
}

/// How often a starting Synapse is asked whether it answers.
const PROBE_EVERY: Duration = Duration::from_millis(250);

impl DockerRuntime {
    /// Connects to Docker, checks the image, prepares the workload and creates the
    /// network. Fails, leaving nothing behind, when Docker is not reachable, the image is
    /// missing (saying how to build it) or the network exists (see `cleanup`).
    pub async fn start(config: DockerConfig) -> Result<Self, RuntimeError> {
        let docker = connect().await?;
        let image = config.image.clone().unwrap_or_else(|| {
            match config.workload {
                WorkloadKind::Synapse(_) => SYNAPSE_IMAGE,
                _ => BASE_IMAGE,
            }
            .to_owned()
        });
        if !image_exists(&docker, &image).await? {
            return Err(DockerError::MissingImage { image }.into());
        }
        match docker.inspect_network(NETWORK, None).await {
            Ok(_) => {
                return Err(RuntimeError::Leftover(format!(
                    "the Docker network {NETWORK}"
                )));
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(DockerError::api(format!("look up network {NETWORK}"))(e).into()),
        }
        let root = Netlink::connect()?;
        let run_id = format!("{}-{}", std::process::id(), synapse::random_hex(4));
        let synapse = match &config.workload {
            WorkloadKind::Synapse(options) => {
                Some(Arc::new(prepare_synapse(options, &config).await?))
            }
            WorkloadKind::Command(_) => {
                make_log_dir(&config.log_dir)?;
                None
            }
            WorkloadKind::None => None,
        };
        let discard = |synapse: &Option<Arc<SynapseRun>>| {
            if let Some(run) = synapse {
                let _ = std::fs::remove_dir_all(&run.options.run_dir);
            }
        };
        if let Err(e) = create_network(&docker, &config.addressing, &run_id).await {
            discard(&synapse);
            return Err(e.into());
        }
        match root.link_by_name(BRIDGE).await {
            Ok(Some(bridge)) => tracing::debug!(bridge = bridge.index, "the meshsim network"),
            Ok(None) | Err(_) => tracing::warn!("the network's bridge {BRIDGE} was not found"),
        }
        tracing::info!(%image, run = %run_id, "docker backend: containers on network {NETWORK}");
        Ok(DockerRuntime {
            docker,
            config,
            image,
            run_id,
            root,
            nodes: HashMap::new(),
            synapse,
            status: watch::Sender::new(WorkloadStatus::new()),
        })
    }

    /// Every node's workload, as [`super::netns::NetnsRuntime::workload_status`].
    pub fn workload_status(&self) -> watch::Receiver<WorkloadStatus> {
        self.status.subscribe()
    }

    /// The run's id, the value of every container's `org.meshsim.run` label.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The namespace of a node, for tests and `exec`.
    pub fn namespace(&self, id: NodeId) -> Option<&NetNs> {
        self.nodes.get(&id).map(|n| &n.ns)
    }

    fn container_body(
        &self,
        name: &str,
        ip: Ipv4Addr,
        workload: NodeWorkload,
    ) -> ContainerCreateBody {
        let mut binds = Vec::new();
        let mut env = Vec::new();
        let cmd = match (self.config.workload.for_node(workload), &self.synapse) {
            (WorkloadKind::Synapse(_), Some(run)) => {
                let dir = run.options.run_dir.join(name);
                let log = self.config.log_dir.join(format!("{name}.log"));
                binds.push(same_path(&run.options.run_dir, false));
                binds.push(same_path(&self.config.log_dir, false));
                binds.push(format!(
                    "{}:/etc/hosts:ro",
                    run.names.hosts_path().display()
                ));
                binds.push(format!(
                    "{}:/etc/resolv.conf:ro",
                    run.names.resolv_path().display()
                ));
                env.push(format!("PATH={SYNAPSE_BIN}:/usr/sbin:/usr/bin:/sbin:/bin"));
                // Output to the same log as a netns node's, so its errors quote the same file.
                Some(vec![
                    "sh".to_owned(),
                    "-c".to_owned(),
                    format!(
                        "cd {dir} && exec python -m synapse.app.homeserver --config-path \
                         {dir}/homeserver.yaml >>{log} 2>&1",
                        dir = dir.display(),
                        log = log.display()
                    ),
                ])
            }
            (WorkloadKind::Command(cmd), _) => {
                let log = self.config.log_dir.join(format!("{name}.log"));
                binds.push(same_path(&self.config.log_dir, false));
                let cmd = cmd.replace("{name}", name).replace("{ip}", &ip.to_string());
                Some(vec![
                    "sh".to_owned(),
                    "-c".to_owned(),
                    format!("exec >>{} 2>&1; {cmd}", log.display()),
                ])
            }
            (WorkloadKind::None, _) if workload == NodeWorkload::None => {
                Some(IDLE.map(str::to_owned).to_vec())
            }
            _ => None,
        };
        let endpoint = EndpointSettings {
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: Some(ip.to_string()),
                ..Default::default()
            }),
            aliases: Some(vec![name.to_owned()]),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            hostname: Some(name.to_owned()),
            cmd,
            env: (!env.is_empty()).then_some(env),
            labels: Some(HashMap::from([
                (RUN_LABEL.to_owned(), self.run_id.clone()),
                ("org.meshsim.node".to_owned(), name.to_owned()),
            ])),
            host_config: Some(HostConfig {
                network_mode: Some(NETWORK.to_owned()),
                // A tiny init reaps and forwards signals, so a stop is quick.
                init: Some(true),
                binds: (!binds.is_empty()).then_some(binds),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(NETWORK.to_owned(), endpoint)])),
            }),
            ..Default::default()
        }
    }

    /// Creates and starts the container, names its namespace and sets its addressing.
    async fn build_node(
        &mut self,
        id: NodeId,
        container: &str,
        workload: NodeWorkload,
    ) -> Result<(NodeFacts, DockerNode), RuntimeError> {
        let name = id.name();
        let ip = self.config.addressing.node(id)?;
        let mac = Addressing::mac(id);
        let reused = match (&self.synapse, workload) {
            (Some(run), NodeWorkload::Run) => write_synapse_node(run, &name, ip)?.reused,
            _ => false,
        };
        let body = self.container_body(&name, ip, workload);
        let options = CreateContainerOptionsBuilder::new().name(container).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| match e {
                BollardError::DockerResponseServerError {
                    status_code: 409, ..
                } => RuntimeError::Leftover(format!("the container {container}")),
                e => DockerError::api(format!("create container {container}"))(e).into(),
            })?;
        self.docker
            .start_container(container, None)
            .await
            .map_err(DockerError::api(format!("start container {container}")))?;
        let pid = self
            .docker
            .inspect_container(container, None)
            .await
            .map_err(DockerError::api(format!("inspect container {container}")))?
            .state
            .and_then(|s| s.pid)
            .filter(|pid| *pid > 0)
            .ok_or_else(|| DockerError::Container {
                container: container.to_owned(),
                what: "it stopped right after starting".to_owned(),
            })?;
        let ns_name = format!("{}{name}", super::netns::PREFIX);
        let ns =
            NetNs::bind(&ns_name, Path::new(&format!("/proc/{pid}/ns/net"))).map_err(
                |e| match e {
                    crate::net::NetNsError::AlreadyExists { .. } => {
                        RuntimeError::Leftover(format!("the namespace {ns_name}"))
                    }
                    e => e.into(),
                },
            )?;
        match self
            .address_node(id, container, &ns, ip, mac, workload)
            .await
        {
            Ok((facts, nl, eth0)) => {
                let tasks = match workload {
                    NodeWorkload::Run => {
                        self.start_synapse_tasks(id, container, &ns, ip, reused)?
                    }
                    NodeWorkload::None => Vec::new(),
                };
                Ok((
                    facts,
                    DockerNode {
                        container: container.to_owned(),
                        ns,
                        nl,
                        eth0,
                        tasks,
                    },
                ))
            }
            Err(e) => {
                drop(ns);
                let _ = NetNs::delete(&ns_name);
                Err(e)
            }
        }
    }

    /// Finds the host side of the container's veth and gives `eth0` the node's MAC, its
    /// address as a /32 and a route to the host, as the netns backend does.
    async fn address_node(
        &self,
        id: NodeId,
        container: &str,
        ns: &NetNs,
        ip: Ipv4Addr,
        mac: [u8; 6],
        workload: NodeWorkload,
    ) -> Result<(NodeFacts, Netlink, u32), RuntimeError> {
        let nl = Netlink::connect_in(ns)?;
        let missing = |what: &str| DockerError::Container {
            container: container.to_owned(),
            what: what.to_owned(),
        };
        let eth0 = nl
            .link_by_name("eth0")
            .await?
            .ok_or_else(|| missing("it has no eth0"))?
            .index;
        // eth0's iflink is the index of its veth peer, which lives in the root namespace.
        let peer = nl
            .peer_index("eth0")
            .await?
            .ok_or_else(|| missing("its eth0 is not one end of a veth pair"))?;
        let port = self
            .root
            .link_by_index(peer)
            .await?
            .ok_or_else(|| missing("the host side of its veth was not found"))?
            .index;
        sysctl::disable_ipv6(ns)?;
        nl.flush_addresses_v4(eth0).await?;
        nl.set_mac(eth0, mac).await?;
        nl.set_up(eth0).await?;
        nl.add_address(eth0, ip, 32).await?;
        sysctl::enable_forwarding(ns)?;
        sysctl::disable_redirects(ns, &["eth0"])?;
        let host = self.config.addressing.host();
        nl.replace_route(host, host, eth0).await?;
        let facts = NodeFacts {
            id,
            name: id.name(),
            ip,
            mac,
            port,
            workload,
        };
        Ok((facts, nl, eth0))
    }

    /// Synapse: the node's DNS answerer, and a task that watches the server start and makes
    /// its test user (unless its directory was `reused`: the user is in its database).
    fn start_synapse_tasks(
        &self,
        id: NodeId,
        container: &str,
        ns: &NetNs,
        ip: Ipv4Addr,
        reused: bool,
    ) -> Result<Vec<JoinHandle<()>>, RuntimeError> {
        let Some(run) = &self.synapse else {
            if let WorkloadKind::Command(_) = self.config.workload {
                self.publish(id, NodeState::Ready);
            }
            return Ok(Vec::new());
        };
        let socket = dns::bind_in(ns)?;
        let dns_task = tokio::spawn(dns::serve(socket, run.names.clone()));
        self.publish(id, NodeState::Starting);
        let watcher = tokio::spawn(watch_start(
            self.docker.clone(),
            Arc::clone(run),
            self.status.clone(),
            Started {
                id,
                container: container.to_owned(),
                ip,
                log: self.log_of(id),
                at: Instant::now(),
                has_user: reused,
            },
        ));
        Ok(vec![dns_task, watcher])
    }

    fn log_of(&self, id: NodeId) -> PathBuf {
        self.config.log_dir.join(format!("{}.log", id.name()))
    }

    fn publish(&self, id: NodeId, state: NodeState) {
        let log = self.log_of(id);
        self.status.send_modify(|s| {
            s.insert(
                id,
                NodeStatus {
                    name: id.name(),
                    state,
                    pid: None,
                    spawned: Instant::now(),
                    answered_after: None,
                    log,
                },
            );
        });
    }

    /// Removes a container (killing what runs in it), and its namespace's name.
    async fn remove_container(&self, container: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(container, Some(options)).await {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(DockerError::api(format!("remove container {container}"))(e)),
        }
    }
}

/// `PATH:PATH[:ro]`: a host directory at the same place inside.
fn same_path(dir: &Path, read_only: bool) -> String {
    let dir = dir.display();
    if read_only {
        format!("{dir}:{dir}:ro")
    } else {
        format!("{dir}:{dir}")
    }
}

async fn create_network(
    docker: &Docker,
    addressing: &Addressing,
    run_id: &str,
) -> Result<(), DockerError> {
    let host = addressing.host();
    let subnet = format!(
        "{}/{}",
        Ipv4Addr::from(u32::from(host) - 1),
        addressing.prefix_len()
    );
    let request = NetworkCreateRequest {
        name: NETWORK.to_owned(),
        driver: Some("bridge".to_owned()),
        ipam: Some(Ipam {
            driver: Some("default".to_owned()),
            // The gateway is the host's address on the bridge, as with the netns backend.
            config: Some(vec![IpamConfig {
                subnet: Some(subnet),
                gateway: Some(host.to_string()),
                ..Default::default()
            }]),
            options: None,
        }),
        options: Some(HashMap::from([
            (
                "com.docker.network.bridge.name".to_owned(),
                BRIDGE.to_owned(),
            ),
            // Nodes talk to each other and to the host, never out through NAT.
            (
                "com.docker.network.bridge.enable_ip_masquerade".to_owned(),
                "false".to_owned(),
            ),
        ])),
        labels: Some(HashMap::from([(RUN_LABEL.to_owned(), run_id.to_owned())])),
        ..Default::default()
    };
    docker
        .create_network(request)
        .await
        .map_err(DockerError::api(format!("create network {NETWORK}")))?;
    Ok(())
}

async fn prepare_synapse(
    options: &SynapseOptions,
    config: &DockerConfig,
) -> Result<SynapseRun, RuntimeError> {
    make_log_dir(&config.log_dir)?;
    synapse::prepare_run_dir(&options.run_dir)?;
    let made = (|| -> Result<SynapseRun, WorkloadError> {
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
        let host = config.addressing.host();
        Ok(SynapseRun {
            options: options.clone(),
            ca,
            ca_path,
            names,
            registration_secret: synapse::random_hex(24),
            mesh_cidr: format!(
                "{}/{}",
                Ipv4Addr::from(u32::from(host) - 1),
                config.addressing.prefix_len()
            ),
        })
    })();
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&options.run_dir);
    }
    Ok(made?)
}

/// The node's name in the run's hosts file and its directory (configuration, keys), or the
/// directory it had earlier in the run.
fn write_synapse_node(run: &SynapseRun, name: &str, ip: Ipv4Addr) -> Result<NodeDir, RuntimeError> {
    run.names
        .insert(name, ip)
        .map_err(WorkloadError::io("rewrite", run.names.hosts_path()))?;
    let config = NodeConfig {
        name,
        mesh_cidr: &run.mesh_cidr,
        ca_path: &run.ca_path,
        registration_secret: &run.registration_secret,
    };
    synapse::write_node_dir(&run.options.run_dir, &config, &run.ca).map_err(|e| {
        let _ = run.names.remove(name);
        e.into()
    })
}

fn make_log_dir(dir: &Path) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Workload {
        node: "(log directory)".into(),
        source,
    })
}

struct Started {
    id: NodeId,
    container: String,
    ip: Ipv4Addr,
    log: PathBuf,
    at: Instant,
    /// The test user is in the database already (the node's directory was reused), and
    /// `register_new_matrix_user` would fail on it.
    has_user: bool,
}

/// Asks the node until it answers `/_matrix/federation/v1/version`, then makes its test
/// user inside the container (`register_new_matrix_user`, through the Engine API's exec),
/// and publishes the outcome.
async fn watch_start(
    docker: Docker,
    run: Arc<SynapseRun>,
    status: watch::Sender<WorkloadStatus>,
    node: Started,
) {
    let deadline = node.at + run.options.start_timeout;
    let outcome = loop {
        if synapse::federation_version_answers(node.ip, Duration::from_secs(2)).await {
            break Ok(node.at.elapsed());
        }
        let running = docker
            .inspect_container(&node.container, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.running)
            .unwrap_or(false);
        if !running {
            break Err(format!(
                "synapse in {} exited while starting; the end of {}:\n{}",
                node.container,
                node.log.display(),
                synapse::log_tail(&node.log, 12)
            ));
        }
        if Instant::now() >= deadline {
            break Err(format!(
                "synapse in {} did not answer within {} s: see {}",
                node.container,
                run.options.start_timeout.as_secs(),
                node.log.display()
            ));
        }
        tokio::time::sleep(PROBE_EVERY).await;
    };
    let outcome = match outcome {
        Ok(after) if node.has_user => Ok(after),
        Ok(after) => register(&docker, &run, &node).await.map(|()| after),
        Err(e) => Err(e),
    };
    match &outcome {
        Ok(after) => tracing::info!(
            container = %node.container,
            "synapse answers after {:.1} s; @{}:{} is ready",
            after.as_secs_f64(),
            run.options.user,
            node.id.name()
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

/// Runs `register_new_matrix_user` in the container, its output appended to the node's log.
async fn register(docker: &Docker, run: &SynapseRun, node: &Started) -> Result<(), String> {
    let script = format!(
        "{SYNAPSE_BIN}/register_new_matrix_user --user {user} --password {password} \
         --no-admin --shared-secret {secret} http://{ip}:{port} >>{log} 2>&1",
        user = run.options.user,
        password = run.options.password,
        secret = run.registration_secret,
        ip = node.ip,
        port = synapse::CLIENT_PORT,
        log = node.log.display(),
    );
    let fail = |e: BollardError| format!("registering the test user in {}: {e}", node.container);
    let exec = docker
        .create_exec(
            &node.container,
            CreateExecOptions {
                cmd: Some(vec!["sh", "-c", &script]),
                ..Default::default()
            },
        )
        .await
        .map_err(fail)?;
    docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                detach: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(fail)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let inspect = docker.inspect_exec(&exec.id).await.map_err(fail)?;
        if inspect.running != Some(true) {
            return match inspect.exit_code {
                Some(0) => Ok(()),
                code => Err(format!(
                    "register_new_matrix_user in {} failed (exit {code:?}): {}",
                    node.container,
                    synapse::log_tail(&node.log, 1)
                )),
            };
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "register_new_matrix_user in {} did not finish within 60 s",
                node.container
            ));
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

impl Runtime for DockerRuntime {
    fn host_ip(&self) -> Ipv4Addr {
        self.config.addressing.host()
    }

    fn run_info(&self) -> RunInfo {
        RunInfo {
            backend: Backend::Docker,
            workload: self.config.workload.name(),
        }
    }

    async fn create_node(
        &mut self,
        id: NodeId,
        workload: NodeWorkload,
    ) -> Result<NodeFacts, RuntimeError> {
        let container = format!("{CONTAINER_PREFIX}{}", id.name());
        // A directory from earlier in the run holds the node's data: a failed start keeps it.
        let kept = self
            .synapse
            .as_ref()
            .is_some_and(|run| synapse::node_dir_written(&run.options.run_dir, &id.name()));
        match self.build_node(id, &container, workload).await {
            Ok((facts, node)) => {
                self.nodes.insert(id, node);
                Ok(facts)
            }
            Err(e) => {
                // Nothing half-made stays, unless the container was someone else's.
                if !matches!(e, RuntimeError::Leftover(_)) {
                    let _ = self.remove_container(&container).await;
                }
                if let Some(run) = &self.synapse {
                    let _ = run.names.remove(&id.name());
                    if !kept {
                        let _ = std::fs::remove_dir_all(run.options.run_dir.join(id.name()));
                    }
                }
                self.status.send_modify(|s| {
                    s.remove(&id);
                });
                Err(e)
            }
        }
    }

    async fn remove_node(&mut self, id: NodeId) -> Result<(), RuntimeError> {
        let node = self
            .nodes
            .remove(&id)
            .ok_or(RuntimeError::UnknownNode(id))?;
        for task in &node.tasks {
            task.abort();
        }
        let name = node.ns.name().to_owned();
        drop(node.nl);
        drop(node.ns);
        NetNs::delete(&name)?;
        self.remove_container(&node.container).await?;
        if let Some(run) = &self.synapse {
            // The node's directory stays until the run ends, so it can come back as itself.
            if let Err(e) = run.names.remove(&id.name()) {
                tracing::warn!("could not update {}: {e}", run.names.hosts_path().display());
            }
        }
        self.status.send_modify(|s| {
            s.remove(&id);
        });
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
        match self.docker.remove_network(NETWORK).await {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(DockerError::api(format!("remove network {NETWORK}"))(e).into()),
        }
        if let Some(run) = &self.synapse
            && let Err(e) = std::fs::remove_dir_all(&run.options.run_dir)
        {
            tracing::warn!("could not remove {}: {e}", run.options.run_dir.display());
        }
        Ok(())
    }
}

/// `meshsim down`'s part for Docker: every container with meshsim's run label (whatever the
/// run), then the `meshsim` network. Nothing when Docker is not reachable.
pub async fn remove_leftovers() -> Result<(Vec<String>, Vec<String>), DockerError> {
    let Ok(docker) = connect().await else {
        return Ok((Vec::new(), Vec::new()));
    };
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&HashMap::from([("label", vec![RUN_LABEL])]))
        .build();
    let listed = docker
        .list_containers(Some(options))
        .await
        .map_err(DockerError::api("list meshsim's containers"))?;
    let mut containers = Vec::new();
    for summary in listed {
        let Some(id) = summary.id else { continue };
        let name = summary
            .names
            .and_then(|n| n.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_else(|| id.clone());
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(&id, Some(options)).await {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => containers.push(name),
            Err(e) => return Err(DockerError::api(format!("remove container {name}"))(e)),
        }
    }
    let mut networks = Vec::new();
    match docker.inspect_network(NETWORK, None).await {
        Ok(network) => {
            // Only ours: a network of that name without the label is left alone.
            let ours = network
                .labels
                .is_some_and(|labels| labels.contains_key(RUN_LABEL));
            if ours {
                docker
                    .remove_network(NETWORK)
                    .await
                    .map_err(DockerError::api(format!("remove network {NETWORK}")))?;
                networks.push(NETWORK.to_owned());
            }
        }
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(DockerError::api(format!("look up network {NETWORK}"))(e)),
    }
    Ok((containers, networks))
}
