//! Watches the Docker daemon while a run lasts. A container of the run that stops without
//! meshsim asking takes its node's namespace and processes with it, and a dockerd that
//! restarts stops every container unless its `live-restore` setting is on. Neither can be
//! mended from here (the node's veth, routes and workload went with the container), so the
//! watch says what happened and the run stops cleanly. A restart that kept every container
//! running (live-restore) is only logged: the run carries on.
//!
//! The watch follows the daemon's events (`die` of the run's containers). When the stream
//! ends, the daemon is waited for; once it answers, the run's containers are listed, which
//! also covers what happened while nobody listened.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bollard::{
    Docker,
    query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder},
};
use futures_util::StreamExt as _;
use tokio::{sync::watch, task::JoinHandle};

use super::docker::RUN_LABEL;

/// How long a daemon that stopped answering is waited for before the run gives up on it.
pub const DAEMON_GRACE: Duration = Duration::from_secs(60);
const PING_EVERY: Duration = Duration::from_millis(500);
/// A daemon that shuts down stops its containers first (each a `die`) and still answers for
/// a moment: this long after a `die`, a daemon that no longer answers was going away.
const DIE_SETTLE: Duration = Duration::from_secs(2);

/// Why a Docker run cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerLost {
    #[error(
        "the container {container} stopped (exit code {exit_code}) without meshsim asking: its \
         node's namespace and processes are gone"
    )]
    Died {
        container: String,
        exit_code: String,
    },
    #[error(
        "Docker stopped the containers {}: a dockerd restart does that unless its \
         `live-restore` setting is on (/etc/docker/daemon.json)",
        .0.join(", ")
    )]
    Stopped(Vec<String>),
    #[error(
        "dockerd stopped answering and did not come back within {} s",
        DAEMON_GRACE.as_secs()
    )]
    Gone,
}

/// The run's containers that should be running: the backend adds one once it runs and takes
/// it out before removing it, so a removal of meshsim's own is never reported.
#[derive(Clone, Default)]
pub struct Expected(Arc<Mutex<BTreeSet<String>>>);

impl Expected {
    pub fn insert(&self, container: &str) {
        self.lock().insert(container.to_owned());
    }

    pub fn remove(&self, container: &str) {
        self.lock().remove(container);
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn contains(&self, container: &str) -> bool {
        self.lock().contains(container)
    }

    fn snapshot(&self) -> BTreeSet<String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // The set stays whole whatever a panicking holder did: every change is one call.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The watch of one run; it ends when dropped.
pub struct DaemonWatch {
    task: JoinHandle<()>,
    lost: watch::Receiver<Option<DockerLost>>,
}

impl DaemonWatch {
    pub fn spawn(docker: Docker, run_id: String, expected: Expected) -> DaemonWatch {
        let (tx, lost) = watch::channel(None);
        let task = tokio::spawn(async move {
            if let Some(why) = follow(&docker, &run_id, &expected).await {
                let _ = tx.send(Some(why));
            }
        });
        DaemonWatch { task, lost }
    }

    /// Set once, when the run cannot go on.
    pub fn lost(&self) -> watch::Receiver<Option<DockerLost>> {
        self.lost.clone()
    }
}

impl Drop for DaemonWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follows the daemon until the run is lost; `None` only if the watch cannot be kept (never
/// in practice: it waits for the daemon instead).
async fn follow(docker: &Docker, run_id: &str, expected: &Expected) -> Option<DockerLost> {
    let label = format!("{RUN_LABEL}={run_id}");
    let mut came_back = false;
    loop {
        // Events from a second before the check below, so none falls between the two.
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().saturating_sub(1));
        let filters = HashMap::from([
            ("type", vec!["container"]),
            ("event", vec!["die"]),
            ("label", vec![label.as_str()]),
        ]);
        let options = EventsOptionsBuilder::new()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        let mut events = docker.events(Some(options));
        match not_running(docker, &label, expected).await {
            Ok(stopped) if !stopped.is_empty() => return Some(DockerLost::Stopped(stopped)),
            Ok(_) if came_back => tracing::warn!(
                "every container of the run still runs (dockerd's live-restore): carrying on"
            ),
            _ => {}
        }
        while let Some(Ok(event)) = events.next().await {
            let attributes = event.actor.and_then(|a| a.attributes).unwrap_or_default();
            let Some(container) = attributes.get("name") else {
                continue;
            };
            if !expected.contains(container) {
                continue;
            }
            tokio::time::sleep(DIE_SETTLE).await;
            if docker.ping().await.is_err() {
                // The daemon is going away: what it stopped is listed once it is back.
                break;
            }
            return Some(DockerLost::Died {
                container: container.clone(),
                exit_code: attributes
                    .get("exitCode")
                    .cloned()
                    .unwrap_or_else(|| "unknown".to_owned()),
            });
        }
        // The stream ended: the daemon went away, or only the connection did (then the
        // loop listens again, a moment later, and says nothing).
        came_back = docker.ping().await.is_err();
        if came_back && !wait_for(docker, DAEMON_GRACE).await {
            return Some(DockerLost::Gone);
        }
        if !came_back {
            tokio::time::sleep(PING_EVERY).await;
        }
    }
}

/// The expected containers that do not run, by name.
async fn not_running(
    docker: &Docker,
    label: &str,
    expected: &Expected,
) -> Result<Vec<String>, bollard::errors::Error> {
    let options = ListContainersOptionsBuilder::new()
        .all(false)
        .filters(&HashMap::from([("label", vec![label])]))
        .build();
    let running: BTreeSet<String> = docker
        .list_containers(Some(options))
        .await?
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .map(|n| n.trim_start_matches('/').to_owned())
        .collect();
    // Read after the listing: a container made meanwhile is not yet expected, one removed
    // meanwhile no longer is.
    Ok(expected.snapshot().difference(&running).cloned().collect())
}

/// Whether the daemon answers within `grace`.
pub async fn wait_for(docker: &Docker, grace: Duration) -> bool {
    if docker.ping().await.is_ok() {
        return true;
    }
    tracing::warn!(
        "dockerd is not answering: waiting up to {} s for it to come back",
        grace.as_secs()
    );
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        tokio::time::sleep(PING_EVERY).await;
        if docker.ping().await.is_ok() {
            tracing::warn!("dockerd answers again");
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_stops_a_run_says_what_happened_and_what_helps() {
        let stopped = DockerLost::Stopped(vec!["meshsim-n1".into(), "meshsim-n2".into()]);
        let text = stopped.to_string();
        assert!(text.contains("meshsim-n1, meshsim-n2"), "{text}");
        assert!(text.contains("live-restore"), "{text}");
        let died = DockerLost::Died {
            container: "meshsim-n3".into(),
            exit_code: "137".into(),
        };
        assert!(
            died.to_string()
                .contains("meshsim-n3 stopped (exit code 137)")
        );
        assert!(DockerLost::Gone.to_string().contains("60 s"));
    }

    #[test]
    fn the_expected_set_follows_inserts_and_removals() {
        let expected = Expected::default();
        expected.insert("a");
        expected.insert("b");
        expected.remove("a");
        assert!(!expected.contains("a"));
        assert!(expected.contains("b"));
        expected.clear();
        assert!(expected.snapshot().is_empty());
    }
}
