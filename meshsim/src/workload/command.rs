//! `--node-cmd CMD`: a shell command of the user's in every node, with `{name}` and `{ip}`
//! filled in, its output in the node's log. By default it runs as the node's own
//! unprivileged user, confined to a directory of its own (`<tmp_dir>/nodes/<name>`, where it
//! starts; `host::Confinement`); `--node-cmd-as-root` runs it as root, as meshsim is.

use std::{path::PathBuf, sync::Arc};

use tokio::sync::watch;

use super::{
    NodeCommand, NodeInfo, NodeLogs, NodeState, NodeStatus, Running, WorkloadError, WorkloadStatus,
    host::{Confinement, HostKind, NodeHost, NodeNeeds, Program},
    marked,
};

/// Marks the nodes' directories as meshsim's, so a leftover one is emptied (or removed by
/// `meshsim down`), and only then.
pub const NODE_DIRS_MARKER: &str = ".meshsim-node-dirs";

pub struct CommandRun {
    command: NodeCommand,
    logs: NodeLogs,
    /// Where each node's directory is made.
    dirs: PathBuf,
}

impl CommandRun {
    /// Makes the directory for the nodes' directories (emptying one an earlier run left).
    pub fn new(
        command: &NodeCommand,
        logs: NodeLogs,
        dirs: PathBuf,
    ) -> Result<Self, WorkloadError> {
        if dirs.exists() {
            if !marked::is_ours(&dirs, NODE_DIRS_MARKER) {
                return Err(WorkloadError::ForeignRunDir {
                    path: dirs,
                    marker: NODE_DIRS_MARKER,
                });
            }
            marked::remove(&dirs, NODE_DIRS_MARKER).map_err(WorkloadError::io("empty", &dirs))?;
        }
        marked::make(
            &dirs,
            NODE_DIRS_MARKER,
            "made by meshsim; removed when the run stops\n",
        )
        .map_err(WorkloadError::io("create", &dirs))?;
        Ok(CommandRun {
            command: command.clone(),
            logs,
            dirs,
        })
    }

    /// Containers see the log directory.
    pub fn needs(&self) -> NodeNeeds {
        NodeNeeds {
            covers: Vec::new(),
            dirs: vec![self.logs.dir().to_owned()],
            runs_processes: true,
        }
    }

    /// Runs the command through `sh -c`; it counts as ready once started.
    pub async fn start(
        &self,
        node: &NodeInfo,
        host: Arc<dyn NodeHost>,
        status: &watch::Sender<WorkloadStatus>,
    ) -> Result<Running, WorkloadError> {
        let command = self
            .command
            .template
            .replace("{name}", &node.name)
            .replace("{ip}", &node.ip.to_string());
        let log = self.logs.open(&node.name)?;
        let mut program = Program::shell(&command, &log);
        // A container is its own confinement (docs/docker.md).
        if !self.command.as_root && host.kind() == HostKind::Namespace {
            // Kept when the node comes back: what it wrote is still there.
            let dir = self.dirs.join(&node.name);
            std::fs::create_dir_all(&dir).map_err(WorkloadError::io("create", &dir))?;
            let confinement = Confinement::node(node.id, &dir);
            confinement
                .hand_over_dir()
                .map_err(WorkloadError::io("hand to the node's user", &dir))?;
            program = program.confined(confinement);
        }
        let process = host
            .spawn(&program)
            .await
            .map_err(|source| WorkloadError::Spawn {
                node: node.name.clone(),
                program: command.clone(),
                source,
            })?;
        let pid = process.pid();
        status.send_modify(|s| {
            s.insert(
                node.id,
                NodeStatus {
                    state: NodeState::Ready,
                    ..NodeStatus::starting(&node.name, pid, log)
                },
            );
        });
        Ok(Running {
            process: Arc::from(process),
            watcher: None,
            serving: Vec::new(),
        })
    }

    /// When the run ends: the nodes' directories go.
    pub fn finish(&self) {
        if let Err(e) = marked::remove(&self.dirs, NODE_DIRS_MARKER) {
            tracing::warn!("could not remove {}: {e}", self.dirs.display());
        }
    }
}
