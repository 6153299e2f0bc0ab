//! `--node-cmd CMD`: a shell command of the user's in every node, with `{name}` and `{ip}`
//! filled in, its output in the node's log.

use std::sync::Arc;

use tokio::sync::watch;

use super::{
    NodeInfo, NodeLogs, NodeState, NodeStatus, Running, WorkloadError, WorkloadStatus,
    host::{NodeHost, NodeNeeds, Program},
};

pub struct CommandRun {
    template: String,
    logs: NodeLogs,
}

impl CommandRun {
    pub fn new(template: &str, logs: NodeLogs) -> Self {
        CommandRun {
            template: template.to_owned(),
            logs,
        }
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
            .template
            .replace("{name}", &node.name)
            .replace("{ip}", &node.ip.to_string());
        let log = self.logs.open(&node.name)?;
        let program = Program::shell(&command, &log);
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
}
