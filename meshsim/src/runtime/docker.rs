//! The docker backend: each node is a container `meshsim-<name>`, labelled
//! `org.meshsim.run=<run id>`, on the bridge network `meshsim`, talked to through bollard
//! (the Engine API over the daemon's Unix socket, never the docker CLI). The API version is
//! negotiated: Debian's daemon speaks an older one than bollard's default.
//!
//! Nothing of ours runs inside a container. Once it runs, meshsim names its network
//! namespace `ms-<name>` (a bind mount of `/proc/<pid>/ns/net`, so `ip netns exec ms-n1`
//! works as for the netns backend), and from then on treats it exactly like a netns node:
//! the classifier goes on the host side of the container's veth, and addresses, routes and
//! sysctls are set through netlink inside the namespace (`runtime::node`).
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
//! A workload's needs become the container's mounts: its directories at the same path, its
//! covers as file binds (Docker leaves `/etc/hosts` and `/etc/resolv.conf` alone when a
//! mount covers them). The processes it starts run as execs in the container (the Engine
//! API's exec), with their output appended to their log. A container whose node starts no
//! process runs its image's own command when the run has no workload (an image of the
//! user's may start its server that way) and otherwise idles on `sleep infinity`.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::Path,
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
use futures_util::StreamExt as _;
use tokio::sync::watch;

use super::{
    RuntimeError,
    backend::{Backend, BackendNode},
    docker_watch::{self, DaemonWatch, DockerLost, Expected},
    host_link::HostLink,
    names::{PREFIX_LABEL, RunPrefix},
    node::NodeNet,
    process::HostPid,
};
use crate::{
    model::NodeId,
    net::{NetNs, Netlink, rps},
    run_config::Addressing,
    workload::host::{HostKind, NodeHost, NodeNeeds, NodeProcess, Program, Spawning},
};

// The network every node is on (`meshsim`), its Linux bridge (`meshsim0`; Docker's default,
// `br-<id>`, would change every run) and the containers (`meshsim-<node>`) are named after
// the run's prefix (see `names::RunPrefix`).
/// Every container carries this label, with the run's id as its value (and the run's prefix
/// in [`PREFIX_LABEL`]).
pub const RUN_LABEL: &str = "org.meshsim.run";
/// The image of nodes when neither the user nor the workload names one.
pub const BASE_IMAGE: &str = "meshsim/base";
/// What builds the images.
pub const BUILD_IMAGES: &str = "cargo xtask images";
/// The command of a node whose processes meshsim starts: it idles until removed.
const IDLE: [&str; 2] = ["sleep", "infinity"];
/// How long the end of a run waits for a daemon that does not answer (one restarting).
const REMOVAL_GRACE: Duration = Duration::from_secs(30);
/// A Docker network is one Linux bridge, which takes at most this many ports.
pub const BRIDGE_PORTS: usize = 1023;

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

pub struct DockerBackend {
    docker: Docker,
    /// The host's end of its client links, on the network's bridge.
    host: HostLink,
    addressing: Addressing,
    image: String,
    run_id: String,
    prefix: RunPrefix,
    network: String,
    root: Netlink,
    nodes: HashMap<NodeId, DockerNode>,
    /// The containers that run, for the watch of the daemon.
    expected: Expected,
    watch: DaemonWatch,
}

struct DockerNode {
    container: String,
    ns_name: String,
}

impl DockerBackend {
    /// Connects to Docker, checks the image and creates the network. Fails, leaving nothing
    /// behind, when Docker is not reachable, the image is missing (saying how to build it)
    /// or the network exists (see `cleanup`).
    pub async fn start(
        addressing: Addressing,
        image: String,
        prefix: RunPrefix,
    ) -> Result<Self, RuntimeError> {
        let network = prefix.docker_network();
        let network = network.as_str();
        let docker = connect().await?;
        if !image_exists(&docker, &image).await? {
            return Err(DockerError::MissingImage { image }.into());
        }
        match docker.inspect_network(network, None).await {
            Ok(_) => {
                return Err(RuntimeError::Leftover(format!(
                    "the Docker network {network}"
                )));
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(DockerError::api(format!("look up network {network}"))(e).into()),
        }
        let root = Netlink::connect()?;
        let run_id = format!("{}-{}", std::process::id(), crate::random::random_hex(4));
        create_network(&docker, &addressing, &run_id, &prefix).await?;
        // The host joins the mesh through a port of the network's bridge, as with netns (the
        // network is made without an address on its bridge: inhibit_ipv4).
        let bridge_name = prefix.docker_bridge();
        let bridge = root
            .link_by_name(&bridge_name)
            .await
            .ok()
            .flatten()
            .ok_or_else(|| DockerError::Container {
                container: network.to_owned(),
                what: format!("its bridge {bridge_name} was not found"),
            });
        let joined = match bridge {
            Ok(bridge) => HostLink::join(&root, bridge.index, &addressing, &prefix).await,
            Err(e) => Err(e.into()),
        };
        let host = match joined {
            Ok(host) => host,
            Err(e) => {
                let _ = docker.remove_network(network).await;
                return Err(e);
            }
        };
        tracing::info!(%image, run = %run_id, "docker backend: containers on network {network}");
        let expected = Expected::default();
        let watch = DaemonWatch::spawn(docker.clone(), run_id.clone(), expected.clone());
        Ok(DockerBackend {
            expected,
            watch,
            docker,
            host,
            addressing,
            image,
            run_id,
            network: network.to_owned(),
            prefix,
            root,
            nodes: HashMap::new(),
        })
    }

    /// The run's id, the value of every container's `org.meshsim.run` label.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    fn container_body(&self, name: &str, ip: Ipv4Addr, needs: &NodeNeeds) -> ContainerCreateBody {
        let mut binds: Vec<String> = needs
            .dirs
            .iter()
            .map(|dir| format!("{dir}:{dir}", dir = dir.display()))
            .collect();
        binds.extend(
            needs
                .covers
                .iter()
                .map(|c| format!("{}:{}:ro", c.file.display(), c.target.display())),
        );
        let cmd = needs
            .runs_processes
            .then(|| IDLE.map(str::to_owned).to_vec());
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
            labels: Some(HashMap::from([
                (RUN_LABEL.to_owned(), self.run_id.clone()),
                (PREFIX_LABEL.to_owned(), self.prefix.to_string()),
                ("org.meshsim.node".to_owned(), name.to_owned()),
            ])),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone()),
                // A tiny init reaps and forwards signals, so a stop is quick.
                init: Some(true),
                binds: (!binds.is_empty()).then_some(binds),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(self.network.clone(), endpoint)])),
            }),
            ..Default::default()
        }
    }

    /// Creates and starts the container, names its namespace and sets its addressing.
    async fn build(
        &self,
        id: NodeId,
        container: &str,
        ns_name: &str,
        needs: &NodeNeeds,
    ) -> Result<BackendNode, RuntimeError> {
        let name = id.name();
        let ip = self.addressing.node(id)?;
        let body = self.container_body(&name, ip, needs);
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
        let ns = NetNs::bind(ns_name, Path::new(&format!("/proc/{pid}/ns/net")))
            .map_err(RuntimeError::from_netns)?;
        let net = NodeNet::open(ns.clone()).await?;
        let port = self.host_side(container, &net).await?;
        net.nl.flush_addresses_v4(net.eth0).await?;
        net.nl.set_mac(net.eth0, Addressing::mac(id)).await?;
        net.configure(ip, &self.addressing).await?;
        self.host.pin_node(&self.root, id, ip).await?;
        let host = DockerHost {
            docker: self.docker.clone(),
            container: container.to_owned(),
            ns,
        };
        Ok(BackendNode {
            port,
            net,
            host: Arc::new(host),
        })
    }

    /// The host side of the container's veth: eth0's iflink is the index of its peer,
    /// which lives in the root namespace.
    async fn host_side(&self, container: &str, net: &NodeNet) -> Result<u32, RuntimeError> {
        let missing = |what: &str| DockerError::Container {
            container: container.to_owned(),
            what: what.to_owned(),
        };
        let peer = net
            .nl
            .peer_index("eth0")
            .await?
            .ok_or_else(|| missing("its eth0 is not one end of a veth pair"))?;
        let port = self
            .root
            .link_by_index(peer)
            .await?
            .ok_or_else(|| missing("the host side of its veth was not found"))?;
        // It receives what the node sends: each flow on one CPU (see `rps`).
        rps::steer_host_by_flow(&port.name)?;
        Ok(port.index)
    }
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn room_for(&self, nodes: usize) -> Result<(), String> {
        if nodes > BRIDGE_PORTS {
            return Err(format!(
                "the Docker network's bridge takes at most {BRIDGE_PORTS} containers: remove \
                 nodes first (the netns backend grows past it)"
            ));
        }
        Ok(())
    }

    async fn create(&mut self, id: NodeId, needs: &NodeNeeds) -> Result<BackendNode, RuntimeError> {
        let container = self.prefix.container(id);
        let ns_name = self.prefix.node(id);
        match self.build(id, &container, &ns_name, needs).await {
            Ok(node) => {
                self.expected.insert(&container);
                self.nodes.insert(id, DockerNode { container, ns_name });
                Ok(node)
            }
            Err(e) => {
                // Nothing half-made stays, unless what was in the way was someone else's.
                if !matches!(e, RuntimeError::Leftover(_)) {
                    let _ = NetNs::delete(&ns_name);
                    let _ = remove_container(&self.docker, &container).await;
                }
                Err(e)
            }
        }
    }

    async fn remove(&mut self, id: NodeId) -> Result<(), RuntimeError> {
        let node = self
            .nodes
            .remove(&id)
            .ok_or(RuntimeError::UnknownNode(id))?;
        self.expected.remove(&node.container);
        NetNs::delete(&node.ns_name)?;
        remove_container(&self.docker, &node.container).await?;
        Ok(())
    }

    /// Every container at once (a few requests in flight at a time: the daemon does the
    /// work), after their namespaces' names.
    async fn remove_all(&mut self) -> Result<(), RuntimeError> {
        self.expected.clear();
        let nodes: Vec<DockerNode> = self.nodes.drain().map(|(_, node)| node).collect();
        for node in &nodes {
            NetNs::delete(&node.ns_name)?;
        }
        // A daemon that restarts is back within seconds; its containers would stay otherwise.
        if !nodes.is_empty() && !docker_watch::wait_for(&self.docker, REMOVAL_GRACE).await {
            return Err(DockerError::Unreachable(format!(
                "its {} containers were not removed",
                nodes.len()
            ))
            .into());
        }
        let removals = futures_util::stream::iter(nodes.into_iter().map(|node| node.container))
            .map(|container| {
                let docker = self.docker.clone();
                async move { remove_container(&docker, &container).await }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        removals.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(())
    }

    fn host_port(&self) -> Option<u32> {
        Some(self.host.port)
    }

    fn lost(&self) -> Option<watch::Receiver<Option<DockerLost>>> {
        Some(self.watch.lost())
    }

    async fn finish(&mut self) -> Result<(), RuntimeError> {
        HostLink::remove(&self.root, &self.prefix).await?;
        match self.docker.remove_network(&self.network).await {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(DockerError::api(format!("remove network {}", self.network))(e).into()),
        }
    }
}

/// Removes a container (killing what runs in it); one that is gone already is fine.
async fn remove_container(docker: &Docker, container: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(container, Some(options)).await {
        Ok(())
        | Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(DockerError::api(format!("remove container {container}"))(e)),
    }
}

/// A container, for workloads.
struct DockerHost {
    docker: Docker,
    container: String,
    ns: NetNs,
}

impl NodeHost for DockerHost {
    fn kind(&self) -> HostKind {
        HostKind::Container
    }

    fn netns(&self) -> &NetNs {
        &self.ns
    }

    fn spawn<'a>(&'a self, program: &'a Program) -> Spawning<'a> {
        Box::pin(async move {
            self.exec(program)
                .await
                .map(|p| Box::new(p) as Box<dyn NodeProcess>)
                .map_err(std::io::Error::other)
        })
    }
}

impl DockerHost {
    /// Runs `program` as an exec in the container, detached, its output appended to its
    /// log (the log directory is mounted at the same path), and waits for its pid.
    async fn exec(&self, program: &Program) -> Result<HostPid, DockerError> {
        let redirect = format!(
            "exec \"$0\" \"$@\" >>{} 2>&1",
            shell_quote(&program.log.to_string_lossy())
        );
        let mut cmd = vec!["sh".to_owned(), "-c".to_owned(), redirect];
        cmd.push(program.program.to_string_lossy().into_owned());
        cmd.extend(program.args.iter().cloned());
        let env: Vec<String> = program
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let fail = |what: &str| {
            let what = format!("{what} {} in {}", program.describe(), self.container);
            move |e: BollardError| DockerError::Api {
                action: what,
                source: e,
            }
        };
        let exec = self
            .docker
            .create_exec(
                &self.container,
                CreateExecOptions {
                    cmd: Some(cmd),
                    env: (!env.is_empty()).then_some(env),
                    working_dir: program
                        .dir
                        .as_ref()
                        .map(|d| d.to_string_lossy().into_owned()),
                    ..Default::default()
                },
            )
            .await
            .map_err(fail("create an exec of"))?;
        self.docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(fail("start"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let inspect = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .map_err(fail("inspect"))?;
            match (inspect.pid.filter(|p| *p > 0), inspect.running) {
                (Some(pid), Some(true)) => return Ok(HostPid(pid as u32)),
                (_, Some(false)) => {
                    return Err(DockerError::Container {
                        container: self.container.clone(),
                        what: format!(
                            "{} exited at once (code {:?}); see {}",
                            program.describe(),
                            inspect.exit_code,
                            program.log.display()
                        ),
                    });
                }
                _ if Instant::now() >= deadline => {
                    return Err(DockerError::Container {
                        container: self.container.clone(),
                        what: format!("{} did not start within 10 s", program.describe()),
                    });
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

/// `s` as one word for `sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

async fn create_network(
    docker: &Docker,
    addressing: &Addressing,
    run_id: &str,
    prefix: &RunPrefix,
) -> Result<(), DockerError> {
    let network = prefix.docker_network();
    let host = addressing.host();
    let subnet = format!(
        "{}/{}",
        Ipv4Addr::from(u32::from(host) - 1),
        addressing.prefix_len()
    );
    let request = NetworkCreateRequest {
        name: network.clone(),
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
                prefix.docker_bridge(),
            ),
            // The host's address goes on its own veth on the bridge (see HostLink), so
            // node -> host frames are shaped at a port like any node's.
            (
                "com.docker.network.bridge.inhibit_ipv4".to_owned(),
                "true".to_owned(),
            ),
            // Nodes talk to each other and to the host, never out through NAT.
            (
                "com.docker.network.bridge.enable_ip_masquerade".to_owned(),
                "false".to_owned(),
            ),
        ])),
        labels: Some(HashMap::from([
            (RUN_LABEL.to_owned(), run_id.to_owned()),
            (PREFIX_LABEL.to_owned(), prefix.to_string()),
        ])),
        ..Default::default()
    };
    docker
        .create_network(request)
        .await
        .map_err(DockerError::api(format!("create network {network}")))?;
    Ok(())
}

/// `meshsim down`'s part for Docker: every container labelled with the run's prefix
/// (whatever the run), then the prefix's network. Nothing when Docker is not reachable.
pub async fn remove_leftovers(
    prefix: &RunPrefix,
) -> Result<(Vec<String>, Vec<String>), DockerError> {
    let Ok(docker) = connect().await else {
        return Ok((Vec::new(), Vec::new()));
    };
    let label = format!("{PREFIX_LABEL}={prefix}");
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&HashMap::from([("label", vec![label.as_str()])]))
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
        remove_container(&docker, &id).await?;
        containers.push(name);
    }
    let mut networks = Vec::new();
    let network = prefix.docker_network();
    match docker.inspect_network(&network, None).await {
        Ok(inspected) => {
            // Only ours: a network of that name without the label is left alone.
            let ours = inspected
                .labels
                .is_some_and(|labels| labels.contains_key(RUN_LABEL));
            if ours {
                docker
                    .remove_network(&network)
                    .await
                    .map_err(DockerError::api(format!("remove network {network}")))?;
                networks.push(network.clone());
            }
        }
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(DockerError::api(format!("look up network {network}"))(e)),
    }
    Ok((containers, networks))
}
