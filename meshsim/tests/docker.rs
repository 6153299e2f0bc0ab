//! The docker backend end to end: three containers in a line, n1 - n2 - n3 (100 ms links, n1
//! and n3 not linked). Ping crosses from n1 to n3 over n2 with the counters growing on
//! n1 -> n2 -> n3 only; with the Synapse image, a real Matrix client (matrix-nio) makes a
//! room on n1, invites a user on n3 who joins, and a message from n1 arrives on n3. Bad
//! input fails with one line that says what to do, and leaves nothing behind.
//!
//! Needs root, Docker (Debian's `docker.io`: when no daemon answers, the tests start one of
//! their own, with its own data root, and stop it afterwards) and the images
//! (`cargo xtask images`). `cargo xtask test` runs them.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use bollard::query_parameters::{ListContainersOptionsBuilder, StatsOptionsBuilder};
use futures_util::StreamExt as _;
use meshsim::{
    datapath::{Datapath, DatapathOptions},
    model::{Model, NodeId, Topology},
    net::{FqSupport, NetNs, probe_fq},
    runtime::{
        Addressing, RuntimeError,
        cleanup::remove_leftovers,
        docker::{self, DockerConfig, DockerError, DockerRuntime, NETWORK, RUN_LABEL},
        lock,
        netns::PREFIX,
    },
    sim::{Counters, Sim, SimHandle},
    topology_file,
    workload::{
        NodeState, SynapseOptions, WorkloadKind, WorkloadStatus, synapse::CLIENT_PORT,
        venv::VenvSpec,
    },
};
use tokio::sync::watch;

const LINE: &str = r#"
[settings]
max_latency_ms = 150.0
latency_scale_pct = 100.0
bandwidth_bps = 10_000_000

[[nodes]]
name = "n1"
x = 100
y = 100

[[nodes]]
name = "n2"
x = 200
y = 100

[[nodes]]
name = "n3"
x = 300
y = 100
"#;

/// Where a daemon the tests start keeps its state (as ./x does).
const DOCKERD_ROOT: &str = "/var/lib/meshsim-docker";

/// A dockerd this test started, stopped when dropped; `None` inside when one was running.
struct Dockerd(Option<Child>);

impl Dockerd {
    async fn ensure() -> Dockerd {
        if docker::connect().await.is_ok() {
            return Dockerd(None);
        }
        let root = Path::new(DOCKERD_ROOT);
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::create_dir_all(root.join("exec")).unwrap();
        let log = std::fs::File::create(root.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            // As ./x starts it: a dockerd managing iptables would drop the netns tier's
            // bridged traffic (FORWARD policy DROP with br_netfilter).
            .args(["--iptables=false", "--bridge=none"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("dockerd (Debian: apt-get install docker.io)");
        let guard = Dockerd(Some(child));
        let deadline = Instant::now() + Duration::from_secs(60);
        while docker::connect().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60 s: see {DOCKERD_ROOT}/dockerd.log"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        guard
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

struct Mesh {
    sim: SimHandle,
    task: Option<tokio::task::JoinHandle<()>>,
    status: watch::Receiver<WorkloadStatus>,
    run_id: String,
    _lock: lock::RunLock,
}

impl Mesh {
    async fn start(workload: WorkloadKind, fq: bool) -> Mesh {
        let lock = acquire_lock().await;
        remove_leftovers().await.unwrap();
        let dp = Datapath::load(DatapathOptions::default()).unwrap();
        let config = DockerConfig {
            addressing: Addressing::default(),
            workload,
            log_dir: std::env::temp_dir().join("meshsim-docker-test-logs"),
            image: None,
        };
        let runtime = match DockerRuntime::start(config).await {
            Ok(runtime) => runtime,
            Err(e) => panic!("{e}"),
        };
        let status = runtime.workload_status();
        let run_id = runtime.run_id().to_owned();
        let (sim, task) = Sim::spawn(runtime, dp, topology().settings, fq).unwrap();
        Mesh {
            sim,
            task: Some(task),
            status,
            run_id,
            _lock: lock,
        }
    }

    fn ip(&self, id: NodeId) -> String {
        self.sim.state().borrow().nodes[&id].ip.to_string()
    }

    fn ns(&self, id: NodeId) -> NetNs {
        NetNs::open(&format!("{PREFIX}{}", id.name())).unwrap()
    }

    async fn ready(&mut self, nodes: usize, timeout: Duration) -> WorkloadStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.status.borrow_and_update().clone();
            for (id, s) in &status {
                if let NodeState::Failed(why) = &s.state {
                    panic!("{id}: {why}");
                }
            }
            let ready = status
                .values()
                .filter(|s| s.state == NodeState::Ready)
                .count();
            if ready == nodes && status.len() == nodes {
                return status;
            }
            if tokio::time::timeout_at(deadline, self.status.changed())
                .await
                .is_err()
            {
                panic!("not every Synapse answered within {timeout:?}: {status:#?}");
            }
        }
    }

    async fn stop(mut self) {
        self.sim.shutdown().await.unwrap();
        self.task.take().unwrap().await.unwrap();
        assert_nothing_left(Some(&self.run_id)).await;
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // A failed test still leaves nothing behind: sweep by label (see tests/mesh.rs).
        if self.task.is_some() {
            let _ = std::thread::spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let _ = remove_leftovers().await;
                })
            })
            .join();
        }
    }
}

/// No container with meshsim's label (of this run, or of any), no `meshsim` network, no
/// `ms-` namespace.
async fn assert_nothing_left(run: Option<&str>) {
    let docker = docker::connect().await.unwrap();
    let label = match run {
        Some(run) => format!("{RUN_LABEL}={run}"),
        None => RUN_LABEL.to_owned(),
    };
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&HashMap::from([("label", vec![label])]))
        .build();
    let left = docker.list_containers(Some(options)).await.unwrap();
    assert!(left.is_empty(), "containers left: {left:?}");
    assert!(
        docker.inspect_network(NETWORK, None).await.is_err(),
        "the network {NETWORK} is left"
    );
    assert_eq!(
        NetNs::list_with_prefix(PREFIX).unwrap(),
        Vec::<String>::new(),
        "namespaces left"
    );
}

async fn acquire_lock() -> lock::RunLock {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match lock::acquire() {
            Ok(lock) => return lock,
            Err(lock::LockError::Held) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("the run lock: {e}"),
        }
    }
}

fn topology() -> Topology {
    topology_file::parse(Path::new("docker-line.toml"), LINE).unwrap()
}

fn id(name: &str) -> NodeId {
    name.parse().unwrap()
}

fn growth(before: &Counters, after: &Counters) -> BTreeMap<(NodeId, NodeId), u64> {
    after
        .links
        .iter()
        .map(|(k, c)| (*k, c.packets - before.links.get(k).map_or(0, |b| b.packets)))
        .collect()
}

fn check_line(topology: &Topology) {
    let model = Model::from_topology(topology).unwrap();
    let (n1, n2, n3) = (id("n1"), id("n2"), id("n3"));
    for (a, b) in [(n1, n2), (n2, n3)] {
        assert_eq!(model.link(a, b).expect("linked").params.latency_ms, 100.0);
    }
    assert!(model.link(n1, n3).is_none(), "n1 and n3 must not be linked");
    assert_eq!(model.next_hop(n1, n3), Some(n2));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and Docker: run with cargo xtask test"]
async fn ping_crosses_two_hops_between_containers() {
    let _dockerd = Dockerd::ensure().await;
    let (n1, n2, n3) = (id("n1"), id("n2"), id("n3"));
    let topology = topology();
    check_line(&topology);
    let fq = probe_fq().await == FqSupport::Available;
    let mesh = Mesh::start(WorkloadKind::None, fq).await;
    let up = Instant::now();
    mesh.sim.load(topology, None).await.unwrap();
    println!(
        "3 containers created, started, addressed and routed in {:.2} s ({:.2} s each)",
        up.elapsed().as_secs_f64(),
        up.elapsed().as_secs_f64() / 3.0
    );

    let before = mesh.sim.counters().await.unwrap();
    let out: Output = mesh
        .ns(n1)
        .command("ping")
        .args(["-n", "-q", "-c", "5", "-i", "0.2", "-W", "2", &mesh.ip(n3)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ping n1 -> n3 failed: {text}");
    println!("{}", text.trim());
    let after = mesh.sim.counters().await.unwrap();
    let grew = growth(&before, &after);
    println!("packets per link: {grew:?}");
    for hop in [(n1, n2), (n2, n3), (n3, n2), (n2, n1)] {
        assert!(
            grew[&hop] >= 5,
            "the echoes did not cross {hop:?}: {grew:?}"
        );
    }
    assert!(
        !after.links.contains_key(&(n1, n3)),
        "n1 and n3 have no link"
    );
    assert_eq!(
        after.global.unlinked_packets, before.global.unlinked_packets,
        "a frame went straight between unlinked nodes"
    );
    if fq {
        // Two links of 100 ms each way: at least 400 ms round trip.
        let avg: f64 = text
            .rsplit_once("= ")
            .and_then(|(_, v)| v.split('/').nth(1))
            .and_then(|v| v.parse().ok())
            .expect("ping's summary");
        assert!(avg >= 399.0, "round trip {avg} ms over two 100 ms links");
    }

    // A node added later is a container at once, and goes with its node.
    let docker = docker::connect().await.unwrap();
    let n4 = mesh.sim.add_node(5000.0, 5000.0).await.unwrap().id;
    let container = format!("meshsim-{n4}");
    let running = docker.inspect_container(&container, None).await.unwrap();
    assert_eq!(running.state.and_then(|s| s.running), Some(true));
    mesh.sim.remove_node(n4).await.unwrap();
    assert!(
        docker.inspect_container(&container, None).await.is_err(),
        "{container} outlived its node"
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and Docker: run with cargo xtask test"]
async fn a_missing_image_is_one_clear_line_and_leaves_nothing() {
    let _dockerd = Dockerd::ensure().await;
    let _lock = acquire_lock().await;
    let config = DockerConfig {
        addressing: Addressing::default(),
        workload: WorkloadKind::None,
        log_dir: std::env::temp_dir(),
        image: Some("meshsim/no-such-image:test".into()),
    };
    let Err(e) = DockerRuntime::start(config).await else {
        panic!("a missing image must fail the start");
    };
    assert!(matches!(
        e,
        RuntimeError::Docker(DockerError::MissingImage { .. })
    ));
    let line = e.to_string();
    println!("{line}");
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(line.contains("cargo xtask images"), "{line}");
    assert_nothing_left(None).await;
}

#[tokio::test]
#[ignore = "needs root and Docker: run with cargo xtask test"]
async fn unreachable_docker_is_one_clear_line() {
    let Err(e) = docker::connect_to("/nonexistent/docker.sock").await else {
        panic!("no daemon there");
    };
    let line = e.to_string();
    println!("{line}");
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(line.contains("Docker is not reachable"), "{line}");
    assert!(line.contains("docker.io"), "{line}");
}

const NIO_VERSION: &str = "0.26.0";
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// The same client steps as tests/synapse.rs: `invite`, `join`, `send`, `await`.
const CLIENT: &str = include_str!("support/nio_client.py");

fn nio_venv(options: &SynapseOptions) -> VenvSpec {
    VenvSpec {
        dir: options
            .cache_dir
            .join(format!("matrix-nio-venv-{NIO_VERSION}")),
        python: options.python.clone(),
        packages: vec![format!("matrix-nio=={NIO_VERSION}")],
        what: format!("matrix-nio {NIO_VERSION}"),
        approx_mb: 60,
    }
}

/// One client step, run on the host inside `node`'s namespace against its homeserver.
async fn client(
    nio: &VenvSpec,
    script: &Path,
    mesh: &Mesh,
    node: NodeId,
    step: &str,
    arg: &str,
    body: &str,
) -> String {
    let mut cmd = mesh.ns(node).command(nio.python_bin());
    cmd.arg(script)
        .arg(step)
        .arg(format!("http://{}:{CLIENT_PORT}", mesh.ip(node)))
        .arg(format!("@meshsim:{}", node.name()))
        .arg("meshsim")
        .arg(arg)
        .arg(body)
        .arg(STEP_TIMEOUT.as_secs().to_string());
    let out: Output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "client step {step} on {node} failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A container's memory use as Docker reports it (cgroup usage less the page cache).
async fn memory_mib(container: &str) -> f64 {
    let docker = docker::connect().await.unwrap();
    let options = StatsOptionsBuilder::new()
        .stream(false)
        .one_shot(true)
        .build();
    let stats = docker
        .stats(container, Some(options))
        .next()
        .await
        .unwrap()
        .unwrap();
    let memory = stats.memory_stats.unwrap();
    let usage = memory.usage.unwrap_or(0) as f64;
    let cache = memory
        .stats
        .and_then(|s| s.get("inactive_file").or(s.get("cache")).copied())
        .unwrap_or(0) as f64;
    (usage - cache) / (1024.0 * 1024.0)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and Docker: run with cargo xtask test"]
async fn a_message_crosses_two_hops_between_synapse_containers() {
    let _dockerd = Dockerd::ensure().await;
    let (n1, n2, n3) = (id("n1"), id("n2"), id("n3"));
    let topology = topology();
    check_line(&topology);
    let options = SynapseOptions::default();
    let nio = nio_venv(&options);
    let nio_spec = nio.clone();
    tokio::task::spawn_blocking(move || nio_spec.ensure(&mut |line: &str| eprintln!("{line}")))
        .await
        .unwrap()
        .unwrap();
    let script_dir: PathBuf =
        std::env::temp_dir().join(format!("meshsim-docker-nio-{}", std::process::id()));
    std::fs::create_dir_all(&script_dir).unwrap();
    let script = script_dir.join("client.py");
    std::fs::write(&script, CLIENT).unwrap();

    let fq = probe_fq().await == FqSupport::Available;
    let mut mesh = Mesh::start(WorkloadKind::Synapse(options.clone()), fq).await;
    let up = Instant::now();
    mesh.sim.load(topology, None).await.unwrap();
    let started = up.elapsed();
    mesh.ready(3, options.start_timeout).await;
    println!(
        "3 Synapse containers started in {:.1} s; all federating (answering, test user made) \
         {:.1} s after the load",
        started.as_secs_f64(),
        up.elapsed().as_secs_f64()
    );
    for node in [n1, n2, n3] {
        println!(
            "  meshsim-{node}: {:.0} MiB",
            memory_mib(&format!("meshsim-{node}")).await
        );
    }

    let before = mesh.sim.counters().await.unwrap();
    let room = client(&nio, &script, &mesh, n1, "invite", "@meshsim:n3", "").await;
    assert!(room.starts_with('!'), "a room id: {room}");
    client(&nio, &script, &mesh, n3, "join", &room, "").await;
    let body = format!("hello from container n1 over n2 ({})", std::process::id());
    let sent = Instant::now();
    let event = client(&nio, &script, &mesh, n1, "send", &room, &body).await;
    assert!(event.starts_with('$'), "an event id: {event}");
    client(&nio, &script, &mesh, n3, "await", &room, &body).await;
    println!(
        "the message reached n3 {:.1} s after it was sent",
        sent.elapsed().as_secs_f64()
    );
    let after = mesh.sim.counters().await.unwrap();
    let grew = growth(&before, &after);
    println!("packets per link during the conversation: {grew:?}");
    for hop in [(n1, n2), (n2, n3), (n3, n2), (n2, n1)] {
        assert!(grew[&hop] > 0, "no federation traffic on {hop:?}: {grew:?}");
    }
    assert_eq!(
        after.global.unlinked_packets, before.global.unlinked_packets,
        "a frame went straight between unlinked nodes"
    );
    mesh.stop().await;
    assert!(
        !options.run_dir.exists(),
        "the run directory is removed at the end"
    );
    std::fs::remove_dir_all(&script_dir).unwrap();
}
