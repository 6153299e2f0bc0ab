//! A node's homeserver from its first spawn to its node's end: it waits for it to answer
//! (and makes its test user), observes it while it runs, notices within [`PROBE_EVERY`]
//! when it ends on its own, says how (its exit status or signal, the end of its log), and
//! starts it again after a backoff when the node's restart policy says so, in its own
//! directory with its own database, so it comes back as the same server.
//!
//! Everything around the spawn, never the spawn itself: [`SynapseRun::spawn`] starts the
//! process the first time and every time after.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::watch;

use super::{PROBE_EVERY, SynapseRun};
use crate::workload::{
    NodeInfo, NodeState, NodeStatus, WorkloadStatus,
    host::{NodeHost, NodeProcess, Program},
    log_tail,
    restart::{Backoff, Exit, Restart},
};

/// What it takes to start a node's homeserver again.
pub(super) struct NodeLaunch {
    pub node: NodeInfo,
    pub host: Arc<dyn NodeHost>,
    /// The node's directory.
    pub dir: PathBuf,
    /// `--config-path <file>`, for a fork.
    pub argv: Vec<String>,
    /// What runs when it is not forked; its `log` is the node's log.
    pub program: Program,
}

/// How waiting for a homeserver to answer ended.
pub(super) enum StartOutcome {
    /// It answers, after this long, and has its test user.
    Ready(Duration),
    /// Its process ended first.
    Ended(Exit),
    /// It runs but never answered, or would not make its user: not a crash, so not
    /// restarted.
    Failed(String),
}

/// The node's homeserver process now: the runtime stops whichever it is when the node goes.
pub(super) struct CurrentProcess(Mutex<Arc<dyn NodeProcess>>);

impl CurrentProcess {
    pub fn new(process: Arc<dyn NodeProcess>) -> Self {
        CurrentProcess(Mutex::new(process))
    }

    fn get(&self) -> Arc<dyn NodeProcess> {
        Arc::clone(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn set(&self, process: Arc<dyn NodeProcess>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = process;
    }
}

impl NodeProcess for CurrentProcess {
    fn pid(&self) -> u32 {
        self.get().pid()
    }

    fn alive(&self) -> bool {
        self.get().alive()
    }

    fn exit(&self) -> Option<Exit> {
        self.get().exit()
    }

    fn stop(&self) {
        self.get().stop();
    }
}

/// Resolves when `process` has ended, with how.
async fn ended(process: &dyn NodeProcess) -> Exit {
    loop {
        if let Some(exit) = process.exit() {
            return exit;
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Watches node `launch.node`'s homeserver for as long as the node runs it. Aborted when
/// the node goes, and awaited before the runtime stops [`CurrentProcess`], so a restart is
/// either not spawned or stopped with the node. (A fork the zygote made for an abort that
/// came while it waited for the pid runs in the node's namespace, whose processes the
/// backend kills when it removes the node.)
pub(super) async fn supervise(
    run: Arc<SynapseRun>,
    launch: NodeLaunch,
    current: Arc<CurrentProcess>,
    status: watch::Sender<WorkloadStatus>,
) {
    let node = &launch.node;
    let log = launch.program.log.clone();
    let mut backoff = Backoff::default();
    let mut spawned = Instant::now();
    loop {
        let process = current.get();
        let outcome = run
            .watch_start(node, launch.host.as_ref(), process.as_ref(), &log, spawned)
            .await;
        let (exit, ready_for) = match outcome {
            StartOutcome::Ready(after) => {
                publish(&status, node, |s| {
                    s.state = NodeState::Ready;
                    s.answered_after = Some(after);
                });
                let ready = Instant::now();
                // Observed until it ends (the observer never ends by itself).
                let exit = tokio::select! {
                    () = Arc::clone(&run.matrix).observe(node.name.clone(), launch.host.netns().clone()) => {
                        ended(process.as_ref()).await
                    }
                    exit = ended(process.as_ref()) => exit,
                };
                // Gone from its rooms and unable to send until it is back; where its sync
                // stood is kept, so its observer resumes there.
                run.matrix.forget(&node.name);
                (exit, Some(ready.elapsed()))
            }
            StartOutcome::Ended(exit) => (exit, None),
            StartOutcome::Failed(why) => {
                tracing::error!("{why}");
                publish(&status, node, |s| s.state = NodeState::Failed(why));
                return;
            }
        };
        // What it started (a node with workers: Redis, the workers, nginx) goes with it.
        let stopping = Arc::clone(&process);
        let _ = tokio::task::spawn_blocking(move || stopping.stop()).await;
        let lines = if run.options.workers.is_some() {
            24
        } else {
            12
        };
        let how = match ready_for {
            Some(ready) => format!("{exit} after {:.0} s ready", ready.as_secs_f64()),
            None => format!("{exit} while starting"),
        };
        let why = format!(
            "synapse on {} {how}; the end of {}:\n{}",
            node.name,
            log.display(),
            log_tail(&log, lines)
        );
        let policy = run.restarts.of(node.id);
        if policy == Restart::Never {
            let why = format!("{why}\n(not restarted: its restart policy is never)");
            tracing::error!("{why}");
            publish(&status, node, |s| {
                s.crashes += 1;
                s.exit = Some(exit);
                s.state = NodeState::Failed(why);
            });
            return;
        }
        let pause = backoff.after(ready_for.unwrap_or_default());
        tracing::warn!("{why}\n(restarted in {} s)", pause.as_secs());
        publish(&status, node, |s| {
            s.crashes += 1;
            s.exit = Some(exit);
            s.state = NodeState::Restarting {
                why: why.clone(),
                at: SystemTime::now() + pause,
            };
        });
        tokio::time::sleep(pause).await;
        // The policy may have changed during the pause.
        if run.restarts.of(node.id) == Restart::Never {
            publish(&status, node, |s| {
                s.state = NodeState::Failed(format!(
                    "{why}\n(not restarted: its restart policy is now never)"
                ));
            });
            return;
        }
        match run.spawn(&launch).await {
            Ok(process) => {
                let process: Arc<dyn NodeProcess> = Arc::from(process);
                spawned = Instant::now();
                publish(&status, node, |s| {
                    s.restarts += 1;
                    s.pid = Some(process.pid());
                    s.spawned = spawned;
                    s.answered_after = None;
                    s.state = NodeState::Starting;
                });
                current.set(process);
            }
            Err((program, e)) => {
                let why = format!("synapse on {}: restarting {program} failed: {e}", node.name);
                tracing::error!("{why}");
                publish(&status, node, |s| s.state = NodeState::Failed(why));
                return;
            }
        }
    }
}

/// Changes the node's entry, if it still has one.
fn publish(
    status: &watch::Sender<WorkloadStatus>,
    node: &NodeInfo,
    change: impl FnOnce(&mut NodeStatus),
) {
    status.send_modify(|s| {
        if let Some(entry) = s.get_mut(&node.id) {
            change(entry);
        }
    });
}
