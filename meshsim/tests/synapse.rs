//! Real homeservers on the netns backend: three Synapse nodes in a line, n1 - n2 - n3, and a
//! real Matrix client (matrix-nio, from PyPI) that is not ours. A user on n1 makes a room and
//! invites a user on n3, who joins; a message from n1 arrives on n3; the counters show the
//! federation going n1 -> n2 -> n3 and back, and nothing straight between n1 and n3.
//!
//! Needs root, Python 3 with venv, and PyPI the first time (Synapse and matrix-nio are
//! installed into cached venvs, ~30 s; later runs reuse them). `cargo xtask test` runs it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use meshsim::{
    datapath::{Datapath, DatapathOptions},
    model::{Model, NodeId, Topology},
    net::{FqSupport, NetNs, Netlink, probe_fq},
    runtime::{
        Addressing,
        cleanup::remove_leftovers,
        lock,
        netns::{NetnsConfig, NetnsRuntime, PREFIX},
    },
    sim::{Counters, Sim, SimHandle},
    topology_file,
    workload::{
        NodeState, SynapseOptions, WorkloadKind, WorkloadStatus, synapse::CLIENT_PORT,
        venv::VenvSpec,
    },
};
use tokio::sync::watch;

/// The line: 100 px apart at 1 ms per px, so each link is 100 ms; n1 and n3 are 200 ms
/// apart, beyond `max_latency_ms`, so they are not linked and talk through n2.
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

const NIO_VERSION: &str = "0.26.0";
/// Each step of the conversation gets this long.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// The client, driven one step per run: `invite`, `join`, `send`, `await`.
const CLIENT: &str = include_str!("support/nio_client.py");

struct Mesh {
    sim: SimHandle,
    task: Option<tokio::task::JoinHandle<()>>,
    status: watch::Receiver<WorkloadStatus>,
    _lock: lock::RunLock,
}

impl Mesh {
    async fn start(options: SynapseOptions, fq: bool) -> Mesh {
        let lock = acquire_lock().await;
        remove_leftovers().await.unwrap();
        let dp = Datapath::load(DatapathOptions::default()).unwrap();
        let config = NetnsConfig {
            addressing: Addressing::default(),
            workload: WorkloadKind::Synapse(options),
            log_dir: std::env::temp_dir().join("meshsim-synapse-test-logs"),
        };
        let runtime = NetnsRuntime::start(config).await.unwrap();
        let status = runtime.workload_status();
        let settings = topology().settings;
        let (sim, task) = Sim::spawn(runtime, dp, settings, fq).unwrap();
        Mesh {
            sim,
            task: Some(task),
            status,
            _lock: lock,
        }
    }

    /// Waits until every node's Synapse is ready; panics with the reason if one fails.
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

    fn ip(&self, id: NodeId) -> String {
        self.sim.state().borrow().nodes[&id].ip.to_string()
    }

    async fn stop(mut self) {
        let pids: Vec<u32> = self
            .status
            .borrow()
            .values()
            .filter_map(|s| s.pid)
            .collect();
        self.sim.shutdown().await.unwrap();
        self.task.take().unwrap().await.unwrap();
        assert_eq!(
            NetNs::list_with_prefix(PREFIX).unwrap(),
            Vec::<String>::new(),
            "namespaces left"
        );
        let root = Netlink::connect().unwrap();
        assert!(
            root.links_with_prefix(PREFIX).await.unwrap().is_empty(),
            "links left"
        );
        for pid in pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "Synapse {pid} outlived its node"
            );
        }
        assert!(
            !SynapseOptions::default().run_dir.exists(),
            "the run directory is removed at the end"
        );
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // A failed test still leaves nothing behind (see tests/mesh.rs).
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

/// Someone else's test may hold the run lock for a while: wait for it.
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
    topology_file::parse(Path::new("synapse-line.toml"), LINE).unwrap()
}

fn id(name: &str) -> NodeId {
    name.parse().unwrap()
}

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

/// One step of the client, inside `node`'s namespace, against that node's homeserver.
async fn client(
    nio: &VenvSpec,
    script: &Path,
    mesh: &Mesh,
    node: NodeId,
    step: &str,
    arg: &str,
    body: &str,
) -> String {
    let ns = NetNs::open(&format!("{PREFIX}{}", node.name())).unwrap();
    let mut cmd = ns.command(nio.python_bin());
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

fn growth(before: &Counters, after: &Counters) -> BTreeMap<(NodeId, NodeId), u64> {
    after
        .links
        .iter()
        .map(|(k, c)| (*k, c.packets - before.links.get(k).map_or(0, |b| b.packets)))
        .collect()
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// What a node's Synapse sees as /etc/hosts: its own mount namespace, through /proc.
fn hosts_seen_by(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/root/etc/hosts")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and Synapse: run with cargo xtask test"]
async fn a_message_crosses_two_hops_between_synapse_nodes() {
    let (n1, n2, n3) = (id("n1"), id("n2"), id("n3"));
    let topology = topology();
    let model = Model::from_topology(&topology).unwrap();
    for (a, b) in [(n1, n2), (n2, n3)] {
        let link = model.link(a, b).expect("linked");
        assert_eq!(link.params.latency_ms, 100.0, "{a}-{b}");
    }
    assert!(model.link(n1, n3).is_none(), "n1 and n3 must not be linked");
    assert_eq!(model.next_hop(n1, n3), Some(n2));
    assert_eq!(model.next_hop(n3, n1), Some(n2));

    // The installs, before the clock starts (cached after the first run).
    let options = SynapseOptions::default();
    let nio = nio_venv(&options);
    let started = Instant::now();
    let (synapse_opts, nio_spec) = (options.clone(), nio.clone());
    tokio::task::spawn_blocking(move || {
        let mut say = |line: &str| eprintln!("{line}");
        synapse_opts.prepare(&mut say).unwrap();
        nio_spec.ensure(&mut say).unwrap();
    })
    .await
    .unwrap();
    println!(
        "venvs (synapse {}, matrix-nio {NIO_VERSION}) ready in {:.1} s",
        options.version,
        started.elapsed().as_secs_f64()
    );
    let script_dir = std::env::temp_dir().join(format!("meshsim-nio-{}", std::process::id()));
    std::fs::create_dir_all(&script_dir).unwrap();
    let script: PathBuf = script_dir.join("client.py");
    std::fs::write(&script, CLIENT).unwrap();

    let fq = probe_fq().await == FqSupport::Available;
    let mut mesh = Mesh::start(options.clone(), fq).await;
    let up = Instant::now();
    mesh.sim.load(topology, None).await.unwrap();
    let status = mesh.ready(3, options.start_timeout).await;
    let all_ready = up.elapsed();
    let all_answer = status
        .values()
        .map(|s| s.spawned + s.answered_after.unwrap())
        .max()
        .unwrap()
        - up;
    println!(
        "3 Synapse nodes: all answer /_matrix/federation/v1/version {:.1} s after the load, \
         all with their test user {:.1} s after (delays {})",
        all_answer.as_secs_f64(),
        all_ready.as_secs_f64(),
        if fq {
            "enforced"
        } else {
            "NOT enforced: this kernel has no sch_fq"
        }
    );
    for (node, s) in &status {
        let pid = s.pid.unwrap();
        println!(
            "  {node}: pid {pid}, answered after {:.1} s, RSS {:.0} MiB",
            s.answered_after.unwrap().as_secs_f64(),
            rss_mib(pid)
        );
        let hosts = hosts_seen_by(pid);
        for other in [n1, n2, n3] {
            let line = format!("{}\t{}\n", mesh.ip(other), other.name());
            assert!(
                hosts.contains(&line),
                "{node} cannot resolve {other}: {hosts}"
            );
        }
    }
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert!(
        !host_hosts.contains("meshsim"),
        "the host's /etc/hosts must not change"
    );

    let before = mesh.sim.counters().await.unwrap();
    let conversation = Instant::now();
    let room = client(&nio, &script, &mesh, n1, "invite", "@meshsim:n3", "").await;
    assert!(room.starts_with('!'), "a room id: {room}");
    client(&nio, &script, &mesh, n3, "join", &room, "").await;
    let joined = conversation.elapsed();
    let body = format!("hello from n1 over n2 ({})", std::process::id());
    let sent = Instant::now();
    let event = client(&nio, &script, &mesh, n1, "send", &room, &body).await;
    assert!(event.starts_with('$'), "an event id: {event}");
    client(&nio, &script, &mesh, n3, "await", &room, &body).await;
    println!(
        "invite + join across n1 -> n2 -> n3: {:.1} s; the message reached n3 {:.1} s after \
         it was sent (each step is a new client process: ~1 s of Python start-up)",
        joined.as_secs_f64(),
        sent.elapsed().as_secs_f64()
    );

    let after = mesh.sim.counters().await.unwrap();
    let grew = growth(&before, &after);
    println!("packets per link during the conversation: {grew:?}");
    for hop in [(n1, n2), (n2, n3), (n3, n2), (n2, n1)] {
        assert!(grew[&hop] > 0, "no federation traffic on {hop:?}: {grew:?}");
    }
    assert!(
        !after.links.contains_key(&(n1, n3)) && !after.links.contains_key(&(n3, n1)),
        "n1 and n3 have no link"
    );
    assert_eq!(
        after.global.unlinked_packets, before.global.unlinked_packets,
        "a frame went straight between unlinked nodes"
    );

    // A new node is in everyone's hosts file at once, and gone with its node.
    let n4 = mesh.sim.add_node(5000.0, 5000.0).await.unwrap().id;
    let n1_pid = status[&n1].pid.unwrap();
    let n4_ip = mesh.ip(n4);
    assert!(
        hosts_seen_by(n1_pid).contains(&format!("{n4_ip}\t{}\n", n4.name())),
        "n1 does not see the new node"
    );
    let n4_pid = mesh.status.borrow()[&n4].pid.unwrap();
    mesh.sim.remove_node(n4).await.unwrap();
    assert!(!hosts_seen_by(n1_pid).contains(&n4_ip));
    assert!(
        !Path::new(&format!("/proc/{n4_pid}")).exists(),
        "n4's Synapse stops with its node"
    );

    mesh.stop().await;
    std::fs::remove_dir_all(&script_dir).unwrap();
}
