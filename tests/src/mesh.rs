//! A real mesh through the library: the Sim with a real runtime (netns or Docker, with a
//! workload or none) and the classifier. It uses the real names (`ms-*`), so it holds
//! meshsim's run lock (waiting for another test or bench that holds it) and sweeps what a
//! crashed run left, before it starts and when it is dropped.

use std::{
    path::{Path, PathBuf},
    process::Output,
    sync::Arc,
    time::{Duration, Instant},
};

use meshsim::{
    datapath::{Datapath, DatapathOptions},
    model::{NodeDoc, NodeId, Settings},
    net::{FqSupport, NetNs, Netlink, probe_fq},
    run_config::{BackendKind, RunConfig},
    runtime::{
        self, AnyBackend, Runtime,
        cleanup::remove_leftovers,
        lock::{self, LockError, RunLock},
        names::{PREFIX, RunPrefix},
        netns::NetnsBackend,
    },
    sim::{Sim, SimHandle},
    workload::{
        NodeState, RunWorkload, SynapseOptions, WorkloadKind, WorkloadStatus, matrix::Matrix,
        restart::RestartPolicies,
    },
};
use tokio::sync::watch;

/// How a test's mesh is made.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    pub backend: BackendKind,
    pub workload: WorkloadKind,
    pub settings: Settings,
    /// Put fq on node ports when the kernel has it, so delays are enforced.
    pub fq_if_available: bool,
    pub log_dir: PathBuf,
}

impl Default for MeshConfig {
    /// netns, no workload, default settings, links only counted.
    fn default() -> Self {
        MeshConfig {
            backend: BackendKind::Netns,
            workload: WorkloadKind::None,
            settings: Settings::default(),
            fq_if_available: false,
            log_dir: std::env::temp_dir().join("meshsim-test-logs"),
        }
    }
}

pub struct MeshLab {
    pub sim: SimHandle,
    /// Every node's workload (starting, ready, failed).
    pub status: watch::Receiver<WorkloadStatus>,
    /// The run's Matrix view, when nodes run homeservers.
    pub matrix: Option<Arc<Matrix>>,
    /// Every node's restart policy, when nodes run homeservers.
    pub restarts: Option<RestartPolicies>,
    /// Whether delays are enforced (fq on the node ports).
    pub fq: bool,
    task: Option<tokio::task::JoinHandle<()>>,
    _lock: RunLock,
}

/// meshsim's run lock; another test or bench may hold it for a while.
pub async fn run_lock() -> RunLock {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match lock::try_acquire(&RunPrefix::default()) {
            Ok(lock) => return lock,
            Err(LockError::Held(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the run lock (is a meshsim running?): {e}"),
        }
    }
}

/// Installs Synapse into meshsim's cache unless it is there (~30 s the first time).
pub async fn install_synapse(options: &SynapseOptions) {
    let install = options.clone();
    tokio::task::spawn_blocking(move || install.prepare(&mut |l| eprintln!("{l}")).unwrap())
        .await
        .unwrap();
}

impl MeshConfig {
    /// Synapse nodes (installed first), with fq where the kernel has it, their logs in the
    /// temporary directory's `logs`.
    pub async fn synapse(options: &SynapseOptions, settings: Settings, logs: &str) -> Self {
        install_synapse(options).await;
        MeshConfig {
            workload: WorkloadKind::Synapse(options.clone()),
            settings,
            fq_if_available: true,
            log_dir: std::env::temp_dir().join(logs),
            ..MeshConfig::default()
        }
    }
}

impl MeshLab {
    pub async fn start(config: MeshConfig) -> MeshLab {
        let lock = run_lock().await;
        remove_leftovers(&RunPrefix::default()).await.unwrap();
        let run = RunConfig {
            backend: config.backend,
            log_dir: config.log_dir.clone(),
            ..RunConfig::default()
        };
        let runtime = match runtime::start(&run, &config.workload).await {
            Ok(runtime) => runtime,
            Err(e) => panic!("starting the {} runtime: {e}", run.backend),
        };
        Self::with(lock, runtime, &config).await
    }

    /// A lab on a netns runtime whose bridges take `nodes_per_bridge` node ports each, so a
    /// test crosses bridges without a thousand nodes.
    pub async fn with_small_bridges(config: MeshConfig, nodes_per_bridge: usize) -> MeshLab {
        let lock = run_lock().await;
        remove_leftovers(&RunPrefix::default()).await.unwrap();
        let run = RunConfig::default();
        let workload = RunWorkload::prepare(&config.workload, &run).await.unwrap();
        let backend =
            NetnsBackend::start_with(run.addressing, run.prefix.clone(), nodes_per_bridge)
                .await
                .unwrap();
        let runtime = Runtime::new(AnyBackend::Netns(backend), run.addressing, workload);
        Self::with(lock, runtime, &config).await
    }

    async fn with(lock: RunLock, runtime: Runtime<AnyBackend>, config: &MeshConfig) -> MeshLab {
        let fq = config.fq_if_available && probe_fq().await == FqSupport::Available;
        let dp = Datapath::load(DatapathOptions {
            fq,
            ..DatapathOptions::default()
        })
        .unwrap();
        let status = runtime.workload_status();
        let matrix = runtime.matrix();
        let restarts = runtime.restarts();
        let (sim, task) = Sim::spawn(runtime, dp, config.settings.clone()).unwrap();
        MeshLab {
            sim,
            status,
            matrix,
            restarts,
            fq,
            task: Some(task),
            _lock: lock,
        }
    }

    /// A node as the mesh's document has it, to add it back later under the same name.
    pub async fn node_doc(&self, id: NodeId) -> NodeDoc {
        let doc = self.sim.topology().await.unwrap();
        doc.nodes
            .into_iter()
            .find(|n| n.id == Some(id))
            .expect("the node is in the document")
    }

    /// Adds a removed node back under its own name: `add_node` would give it a new id, a
    /// document keeps the ids it names (the other nodes are unchanged by the load).
    pub async fn add_back(&self, node: &NodeDoc) {
        let mut doc = self.sim.topology().await.unwrap();
        doc.nodes.push(node.clone());
        self.sim.load(doc, None).await.unwrap();
    }

    /// Waits until `nodes` nodes' workloads are ready; panics with the reason if one fails
    /// (or ended and is restarting: no test expects that while its mesh starts).
    pub async fn ready(&mut self, nodes: usize, timeout: Duration) -> WorkloadStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.status.borrow_and_update().clone();
            for (id, s) in &status {
                if let NodeState::Failed(why) | NodeState::Restarting { why, .. } = &s.state {
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
                panic!("not every workload was ready within {timeout:?}: {status:#?}");
            }
        }
    }

    pub fn ip(&self, id: NodeId) -> String {
        self.sim.state().borrow().nodes[&id].ip.to_string()
    }

    /// Node `id`'s namespace.
    pub fn ns(&self, id: NodeId) -> NetNs {
        NetNs::open(&format!("{PREFIX}{}", id.name())).expect("the node's namespace")
    }

    /// `ping -c count -i interval` from inside `from` to `to`.
    pub fn ping(&self, from: NodeId, to: NodeId, count: u32, interval: &str) -> Output {
        self.ns(from)
            .command("ping")
            .args(["-n", "-q", "-c", &count.to_string(), "-i", interval])
            .args(["-W", "1", &self.ip(to)])
            .output()
            .expect("run ping (iputils-ping)")
    }

    /// Removes every node and checks that nothing is left: no namespace, no link with
    /// meshsim's prefix, no process of a workload.
    pub async fn stop(mut self) {
        let pids: Vec<u32> = self
            .status
            .borrow()
            .values()
            .filter_map(|s| s.pid)
            .collect();
        self.sim.shutdown().await.unwrap();
        self.task.take().unwrap().await.unwrap();
        assert_nothing_left().await;
        for pid in pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "process {pid} outlived its node"
            );
        }
    }
}

/// No namespace and no root-namespace link with meshsim's prefix.
pub async fn assert_nothing_left() {
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
}

impl Drop for MeshLab {
    fn drop(&mut self) {
        // A failed test still leaves nothing behind: the Sim removes its nodes when its last
        // handle goes; if it is already gone, sweep by prefix and label.
        if self.task.is_some() {
            sweep();
        }
    }
}

/// Removes whatever meshsim's names say is left, from a thread of its own (a drop may run
/// inside the test's runtime, which cannot be blocked on).
pub fn sweep() {
    let _ = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = remove_leftovers(&RunPrefix::default()).await;
        })
    })
    .join();
}
