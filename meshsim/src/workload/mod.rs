//! What runs on every node: nothing, a command of the user's, or a Synapse homeserver.
//!
//! The kind is chosen once per run (a flag, or the topology file's `[run]` table); each node
//! then runs it or nothing ([`NodeWorkload`]): a bare router between homeservers, say. A
//! workload's whole lifecycle is here, once: prepared for the run ([`RunWorkload::prepare`]),
//! started in each node and stopped with it, through the small interface every backend
//! implements ([`host`]). The runtime calls these; no backend knows what a workload is.
//!
//! - `command`: `--node-cmd`;
//! - `synapse`: the homeserver, its install (`venv`), its per-run CA (`pki`), and how nodes
//!   find each other by name without any public DNS (`names`, `dns`);
//! - `postgres`: the run's Postgres cluster, for homeservers that keep their data there;
//! - `http`: HTTP to a server on a node's own loopback, never across a link.

mod command;
pub mod dns;
pub mod host;
pub mod http;
pub mod marked;
pub mod matrix;
pub mod names;
pub mod pki;
pub mod postgres;
pub mod restart;
pub mod synapse;
pub mod venv;

use std::{
    collections::{BTreeMap, HashSet},
    io::Read as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

pub use command::NODE_DIRS_MARKER;
pub use synapse::SynapseOptions;
use tokio::{sync::watch, task::JoinHandle};

use self::{
    command::CommandRun,
    host::{NodeHost, NodeNeeds, NodeProcess},
    synapse::SynapseRun,
};
use crate::{
    model::NodeId,
    run_config::{BackendKind, RunConfig},
};

/// What every node of a run runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum WorkloadKind {
    /// Nothing: the node is a bare namespace (the default of the netns backend).
    #[default]
    None,
    /// A shell command (`--node-cmd`), with `{name}` and `{ip}` filled in.
    Command(NodeCommand),
    /// A Synapse homeserver whose server name is the node's name.
    Synapse(SynapseOptions),
}

/// `--node-cmd`: the command, and whether it runs as root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCommand {
    /// The shell command, `{name}` and `{ip}` not yet filled in.
    pub template: String,
    /// Run as root, seeing and writing the host as meshsim does (`--node-cmd-as-root`,
    /// `node_cmd_as_root = true`), for a command that needs it (one that changes the node's
    /// routes, say). By default a command runs as the node's own unprivileged user, confined
    /// to its node directory (`host::Confinement`).
    pub as_root: bool,
}

impl From<&str> for NodeCommand {
    fn from(template: &str) -> Self {
        NodeCommand {
            template: template.to_owned(),
            as_root: false,
        }
    }
}

impl From<String> for NodeCommand {
    fn from(template: String) -> Self {
        NodeCommand {
            template,
            as_root: false,
        }
    }
}

/// The names `--workload` accepts.
pub const WORKLOAD_NAMES: &[&str] = &["none", "synapse", "synapse-workers"];

/// What one node runs: the run's workload (the default), or nothing. A plain value, so the
/// Sim and the API can carry it without knowing what the run's workload is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NodeWorkload {
    /// Whatever every node of the run runs (which may itself be nothing).
    #[default]
    Run,
    /// Nothing: the node only forwards.
    None,
}

impl WorkloadKind {
    /// The kind from the command line: `--workload NAME` and `--node-cmd CMD`, both optional.
    /// A command alone means [`WorkloadKind::Command`]; a command next to a named workload
    /// is refused rather than silently dropping one of them.
    pub fn from_cli(
        workload: Option<&str>,
        node_cmd: Option<String>,
    ) -> Result<Self, WorkloadError> {
        let named = match workload.map(str::trim) {
            None => None,
            Some("none") => Some(WorkloadKind::None),
            Some("synapse") => Some(WorkloadKind::Synapse(SynapseOptions::default())),
            Some("synapse-workers") => Some(WorkloadKind::Synapse(SynapseOptions::with_workers(
                synapse::workers::Profile::default(),
            ))),
            Some(other) => return Err(WorkloadError::Unknown(other.to_owned())),
        };
        match (named, node_cmd) {
            (Some(kind @ WorkloadKind::Synapse(_)), Some(_)) => {
                Err(WorkloadError::Conflict(kind.name().to_owned()))
            }
            (_, Some(cmd)) => Ok(WorkloadKind::Command(cmd.into())),
            (Some(kind), None) => Ok(kind),
            (None, None) => Ok(WorkloadKind::None),
        }
    }

    /// `none`, `command`, `synapse` or `synapse-workers`, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            WorkloadKind::None => "none",
            WorkloadKind::Command(_) => "command",
            WorkloadKind::Synapse(o) if o.workers.is_some() => "synapse-workers",
            WorkloadKind::Synapse(_) => "synapse",
        }
    }

    /// What a node runs in this run when it asks for `workload`.
    pub fn for_node(&self, workload: NodeWorkload) -> &WorkloadKind {
        match workload {
            NodeWorkload::Run => self,
            NodeWorkload::None => &WorkloadKind::None,
        }
    }
}

/// The node workload a request or a file names: `none`, or the name of the run's workload
/// (`run`, as [`WorkloadKind::name`] gives it). Anything else is refused with a message that
/// lists what this run accepts.
pub fn node_workload(name: &str, run: &str) -> Result<NodeWorkload, NodeWorkloadError> {
    match name {
        "none" => Ok(NodeWorkload::None),
        _ if name == run => Ok(NodeWorkload::Run),
        _ => Err(NodeWorkloadError {
            got: name.to_owned(),
            run: run.to_owned(),
        }),
    }
}

/// The name of what a node with `workload` runs in a run whose workload is `run`.
pub fn node_workload_name(workload: NodeWorkload, run: &'static str) -> &'static str {
    match workload {
        NodeWorkload::Run => run,
        NodeWorkload::None => "none",
    }
}

/// A node asked for a workload its run does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe_node_choice(got, run))]
pub struct NodeWorkloadError {
    pub got: String,
    pub run: String,
}

fn describe_node_choice(got: &str, run: &str) -> String {
    if run == "none" {
        format!(
            "unknown workload {got:?} for a node: this run's workload is none, so a node can \
             only be \"none\" (start meshsim with `--workload synapse` or `--node-cmd CMD` to \
             give nodes something to run)"
        )
    } else {
        format!(
            "unknown workload {got:?} for a node: this run's workload is {run}, so a node runs \
             \"{run}\" or \"none\""
        )
    }
}

/// Where a node's workload is, as the runtime publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Started; not answering yet.
    Starting,
    /// Answering (for Synapse: `/_matrix/federation/v1/version`, with the test user made).
    Ready,
    /// It ended on its own and is started again at `at` (its restart policy is
    /// `on-failure`); the text says how it ended, with the end of its log.
    Restarting { why: String, at: SystemTime },
    /// It exited and is not restarted, or never answered; the text says why and where its
    /// log is.
    Failed(String),
}

/// One node's workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub name: String,
    pub state: NodeState,
    /// The workload's main process.
    pub pid: Option<u32>,
    /// When the process was spawned.
    pub spawned: Instant,
    /// From spawning the process to its first answer (Synapse only).
    pub answered_after: Option<Duration>,
    /// Its output.
    pub log: PathBuf,
    /// How many times it ended on its own in this run, and how many times it was started
    /// again; how it ended the last time.
    pub crashes: u32,
    pub restarts: u32,
    pub exit: Option<restart::Exit>,
}

impl NodeStatus {
    /// A process just spawned, not answering yet.
    pub fn starting(name: &str, pid: u32, log: PathBuf) -> Self {
        NodeStatus {
            name: name.to_owned(),
            state: NodeState::Starting,
            pid: Some(pid),
            spawned: Instant::now(),
            answered_after: None,
            log,
            crashes: 0,
            restarts: 0,
            exit: None,
        }
    }
}

/// Every node's workload, by node.
pub type WorkloadStatus = BTreeMap<NodeId, NodeStatus>;

/// Setting a workload up failed; each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(
        "unknown workload {0:?}: use `--workload none`, `--workload synapse` or \
         `--workload synapse-workers` (or `--node-cmd CMD` to run a command of your own)"
    )]
    Unknown(String),
    #[error(
        "{program} was not found: homeservers with workers need it (Debian: \
         `apt-get install {package}`)"
    )]
    MissingProgram {
        program: &'static str,
        package: &'static str,
    },
    #[error(
        "`--workload {0}` and `--node-cmd` were both given: choose one \
         (`--node-cmd` runs your command instead of a workload)"
    )]
    Conflict(String),
    #[error(transparent)]
    Venv(#[from] venv::VenvError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(
        "{path} exists and was not made by meshsim (no {marker} in it): \
         remove it or choose another run directory"
    )]
    ForeignRunDir { path: PathBuf, marker: &'static str },
    #[error(
        "{0} does not exist: each Synapse node covers it with the run's own file, so there must \
         be one to cover (an empty one will do: `touch {0}`)"
    )]
    NothingToCover(PathBuf),
    #[error("starting `{program}` in {node} failed: {source}")]
    Spawn {
        node: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
    #[error(transparent)]
    Postgres(#[from] postgres::PostgresError),
    #[error(transparent)]
    Zygote(#[from] synapse::ZygoteError),
    #[error("could not {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl WorkloadError {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| WorkloadError::Io { what, path, source }
    }
}

/// A node, as a workload knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: NodeId,
    pub name: String,
    pub ip: Ipv4Addr,
}

/// A workload running in a node: its main process and the tasks that serve it.
pub struct Running {
    pub process: Arc<dyn NodeProcess>,
    /// Watches the start (Synapse: until it answers and has its user); stopped first, so
    /// that it does not report the stop as a failure.
    pub watcher: Option<JoinHandle<()>>,
    /// Serves the node while it runs (Synapse: its DNS answerer).
    pub serving: Vec<JoinHandle<()>>,
}

/// The run's workload, prepared once and shared by its nodes.
enum Prepared {
    None,
    Command(CommandRun),
    Synapse(Arc<SynapseRun>),
}

/// What every node of the run runs, with every node's state ([`NodeStatus`]).
pub struct RunWorkload {
    prepared: Prepared,
    name: &'static str,
    status: watch::Sender<WorkloadStatus>,
}

impl RunWorkload {
    /// Everything before the first node: the log directory, and for Synapse its install
    /// (for namespace nodes), the run directory, the CA and the name files.
    pub async fn prepare(kind: &WorkloadKind, run: &RunConfig) -> Result<Self, WorkloadError> {
        let prepared = match kind {
            WorkloadKind::None => Prepared::None,
            WorkloadKind::Command(command) => {
                let logs = NodeLogs::new(&run.log_dir)?;
                let dirs = run.prefix.node_dirs();
                tracing::info!(
                    cmd = %command.template,
                    logs = %run.log_dir.display(),
                    dirs = %dirs.display(),
                    as_root = command.as_root,
                    "every node runs a command"
                );
                Prepared::Command(CommandRun::new(command, logs, dirs)?)
            }
            WorkloadKind::Synapse(options) => {
                let logs = NodeLogs::new(&run.log_dir)?;
                let host_install = run.backend == BackendKind::Netns;
                let synapse =
                    SynapseRun::prepare(options, &run.addressing, logs, host_install).await?;
                Prepared::Synapse(Arc::new(synapse))
            }
        };
        Ok(RunWorkload {
            prepared,
            name: kind.name(),
            status: watch::Sender::new(WorkloadStatus::new()),
        })
    }

    /// `none`, `command`, `synapse` or `synapse-workers`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Where homeservers keep their data (`sqlite`, `postgres`); `None` without them.
    pub fn database(&self) -> Option<&'static str> {
        match &self.prepared {
            Prepared::Synapse(s) => Some(s.options.database.name()),
            _ => None,
        }
    }

    /// The workers' profile of `synapse-workers` (`small`, `full`).
    pub fn profile(&self) -> Option<&'static str> {
        match &self.prepared {
            Prepared::Synapse(s) => s.options.workers.map(|p| p.name()),
            _ => None,
        }
    }

    /// How the run's homeservers start: `fork` (from the zygote) or `cold`.
    pub fn launch(&self) -> Option<&'static str> {
        match &self.prepared {
            Prepared::Synapse(s) => Some(s.launch().name()),
            _ => None,
        }
    }

    /// Every node's workload: starting, ready or failed.
    pub fn status(&self) -> watch::Receiver<WorkloadStatus> {
        self.status.subscribe()
    }

    /// Every node's restart policy, when nodes run homeservers (the only workload that is
    /// restarted).
    pub fn restarts(&self) -> Option<restart::RestartPolicies> {
        match &self.prepared {
            Prepared::Synapse(synapse) => Some(synapse.restarts().clone()),
            _ => None,
        }
    }

    /// The run's Matrix view (event log, observers, mesh room), when nodes run homeservers.
    pub fn matrix(&self) -> Option<Arc<matrix::Matrix>> {
        match &self.prepared {
            Prepared::Synapse(synapse) => Some(Arc::clone(synapse.matrix())),
            _ => None,
        }
    }

    /// The container image this workload's nodes need, if a particular one.
    pub fn docker_image(&self) -> Option<&'static str> {
        match self.prepared {
            Prepared::Synapse(_) => Some(synapse::SYNAPSE_IMAGE),
            _ => None,
        }
    }

    /// What a node that runs `workload` needs from its backend.
    pub fn needs(&self, workload: NodeWorkload) -> NodeNeeds {
        match (&self.prepared, workload) {
            (_, NodeWorkload::None) => NodeNeeds {
                runs_processes: true,
                ..NodeNeeds::default()
            },
            (Prepared::None, NodeWorkload::Run) => NodeNeeds::default(),
            (Prepared::Command(command), NodeWorkload::Run) => command.needs(),
            (Prepared::Synapse(synapse), NodeWorkload::Run) => synapse.needs(),
        }
    }

    /// Starts the workload in a new node (nothing for a node that runs nothing). A failure
    /// leaves nothing of it behind.
    pub async fn start(
        &self,
        node: &NodeInfo,
        workload: NodeWorkload,
        host: Arc<dyn NodeHost>,
    ) -> Result<Option<Running>, WorkloadError> {
        if workload == NodeWorkload::None {
            return Ok(None);
        }
        match &self.prepared {
            Prepared::None => Ok(None),
            Prepared::Command(command) => command.start(node, host, &self.status).await.map(Some),
            Prepared::Synapse(synapse) => synapse.start(node, host, &self.status).await.map(Some),
        }
    }

    /// Stops a node's workload: its watcher, its process (SIGTERM, then SIGKILL), then what
    /// served it.
    pub async fn stop(&self, node: &NodeInfo, running: Running) {
        if let Some(watcher) = running.watcher {
            watcher.abort();
            // Until it has ended, it may still put a restarted process in place of the one
            // stopped below.
            let _ = watcher.await;
        }
        let process = running.process;
        let _ = tokio::task::spawn_blocking(move || process.stop()).await;
        for task in running.serving {
            task.abort();
        }
        if let Prepared::Synapse(synapse) = &self.prepared {
            synapse.forget(&node.name);
        }
        self.status.send_modify(|s| {
            s.remove(&node.id);
        });
    }

    /// When the run ends, after every node: what the run made (Synapse's run directory,
    /// the commands' node directories).
    pub fn finish(&self) {
        match &self.prepared {
            Prepared::Synapse(synapse) => synapse.finish(),
            Prepared::Command(command) => command.finish(),
            Prepared::None => {}
        }
    }
}

/// Where each node's workload writes its output: `<log_dir>/<name>.log`, emptied the first
/// time a node of that name starts in a run, appended to when it comes back.
pub struct NodeLogs {
    dir: PathBuf,
    started: Mutex<HashSet<String>>,
}

impl NodeLogs {
    /// Makes the log directory.
    pub fn new(dir: &Path) -> Result<Self, WorkloadError> {
        std::fs::create_dir_all(dir).map_err(WorkloadError::io("create the log directory", dir))?;
        Ok(NodeLogs {
            dir: dir.to_owned(),
            started: Mutex::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log of `node`, empty if this is its first start in the run.
    pub fn open(&self, node: &str) -> Result<PathBuf, WorkloadError> {
        let path = self.dir.join(format!("{node}.log"));
        let first = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_owned());
        if first {
            std::fs::File::create(&path).map_err(WorkloadError::io("create", &path))?;
        }
        Ok(path)
    }
}

/// The last `n` lines of a log, for error messages.
pub fn log_tail(log: &Path, n: usize) -> String {
    let mut text = String::new();
    let _ = std::fs::File::open(log).and_then(|mut f| f.read_to_string(&mut text));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_picks_one_workload() {
        assert_eq!(
            WorkloadKind::from_cli(None, None).unwrap(),
            WorkloadKind::None
        );
        assert_eq!(
            WorkloadKind::from_cli(Some("none"), None).unwrap(),
            WorkloadKind::None
        );
        assert!(matches!(
            WorkloadKind::from_cli(Some("synapse"), None).unwrap(),
            WorkloadKind::Synapse(_)
        ));
        assert_eq!(
            WorkloadKind::from_cli(None, Some("sleep 1".into())).unwrap(),
            WorkloadKind::Command("sleep 1".into())
        );
        // `--workload none --node-cmd X` is just the command.
        assert_eq!(
            WorkloadKind::from_cli(Some("none"), Some("sleep 1".into())).unwrap(),
            WorkloadKind::Command("sleep 1".into())
        );
    }

    #[test]
    fn a_node_runs_the_runs_workload_or_nothing() {
        assert_eq!(node_workload("none", "synapse"), Ok(NodeWorkload::None));
        assert_eq!(node_workload("synapse", "synapse"), Ok(NodeWorkload::Run));
        assert_eq!(node_workload("command", "command"), Ok(NodeWorkload::Run));
        assert_eq!(node_workload("none", "none"), Ok(NodeWorkload::None));
        let err = node_workload("synapse", "command").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown workload \"synapse\" for a node: this run's workload is command, so a node \
             runs \"command\" or \"none\""
        );
        let err = node_workload("synapse", "none").unwrap_err();
        assert!(err.to_string().contains("can only be \"none\""), "{err}");
        assert_eq!(node_workload_name(NodeWorkload::Run, "synapse"), "synapse");
        assert_eq!(node_workload_name(NodeWorkload::None, "synapse"), "none");
        let run = WorkloadKind::Command("sleep 1".into());
        assert_eq!(run.for_node(NodeWorkload::None), &WorkloadKind::None);
        assert_eq!(run.for_node(NodeWorkload::Run), &run);
    }

    #[test]
    fn bad_choices_say_what_to_do() {
        let err = WorkloadKind::from_cli(Some("dendrite"), None).unwrap_err();
        assert!(err.to_string().contains("--workload synapse"), "{err}");
        let err = WorkloadKind::from_cli(Some("synapse"), Some("x".into())).unwrap_err();
        assert!(err.to_string().contains("choose one"), "{err}");
    }
}
