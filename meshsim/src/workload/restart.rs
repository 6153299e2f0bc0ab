//! What happens when a homeserver ends on its own: the node's restart policy (a run-wide
//! default with per-node choices, [`RestartPolicies`]), the backoff between restarts
//! ([`Backoff`]) and how a process ended ([`Exit`]). Pure, apart from the lock that lets the
//! API change a node's policy while its supervisor reads it.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::model::NodeId;

/// Whether a homeserver that ended on its own is started again.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Started again after a backoff, from its own directory and database.
    #[default]
    OnFailure,
    /// Left failed, as it ended.
    Never,
}

impl Restart {
    pub fn name(self) -> &'static str {
        match self {
            Restart::OnFailure => "on-failure",
            Restart::Never => "never",
        }
    }
}

/// The first pause before a restart, doubled after each crash up to [`BACKOFF_MOST`].
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
pub const BACKOFF_MOST: Duration = Duration::from_secs(60);
/// A homeserver that was ready this long before it ended starts over at [`BACKOFF_FIRST`]:
/// it crashed once, not in a loop.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);

/// The pauses between one node's restarts: 1 s, 2 s, 4 s ... at most 60 s, back to 1 s once
/// a run of it stayed ready for [`BACKOFF_RESET_AFTER`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }
}

impl Backoff {
    /// The pause before restarting a process that ended after being ready for `ready_for`
    /// (zero if it never was); the following pause doubles.
    pub fn after(&mut self, ready_for: Duration) -> Duration {
        if ready_for >= BACKOFF_RESET_AFTER {
            self.next = BACKOFF_FIRST;
        }
        let pause = self.next;
        self.next = (self.next * 2).min(BACKOFF_MOST);
        pause
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// It is gone, and nothing says how (a container's exec, whose parent is Docker's).
    Unknown,
}

impl Exit {
    /// From a `waitpid` status as [`std::process::ExitStatus`] holds it.
    pub fn of(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Unknown,
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with status {code}"),
            Exit::Signal(signal) => match nix::sys::signal::Signal::try_from(*signal) {
                Ok(name) => write!(f, "was killed by signal {signal} ({name})"),
                Err(_) => write!(f, "was killed by signal {signal}"),
            },
            Exit::Unknown => write!(f, "exited"),
        }
    }
}

/// Every node's restart policy: the run's default, and the nodes that chose their own. One
/// value shared by the nodes' supervisors (which read it when a homeserver ends) and the API
/// (which changes it), so a change holds from the next crash on, without the Sim.
#[derive(Clone, Debug, Default)]
pub struct RestartPolicies(Arc<Mutex<Policies>>);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Policies {
    default: Restart,
    nodes: BTreeMap<NodeId, Restart>,
}

impl RestartPolicies {
    pub fn new(default: Restart) -> Self {
        RestartPolicies(Arc::new(Mutex::new(Policies {
            default,
            nodes: BTreeMap::new(),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Policies> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The run's default.
    pub fn default_policy(&self) -> Restart {
        self.lock().default
    }

    /// `node`'s policy: its own, else the default.
    pub fn of(&self, node: NodeId) -> Restart {
        let p = self.lock();
        p.nodes.get(&node).copied().unwrap_or(p.default)
    }

    /// Whether `node` has a policy of its own.
    pub fn own(&self, node: NodeId) -> bool {
        self.lock().nodes.contains_key(&node)
    }

    /// `node` follows `policy` (`None`: the default again). Kept when the node is removed,
    /// like its data: added back under its name, it is the same server with the same choice.
    pub fn set(&self, node: NodeId, policy: Option<Restart>) {
        let mut p = self.lock();
        match policy {
            Some(policy) => p.nodes.insert(node, policy),
            None => p.nodes.remove(&node),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_up_to_a_minute() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..9).map(|_| b.after(Duration::ZERO).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn a_run_that_stayed_ready_starts_the_pauses_over() {
        let mut b = Backoff::default();
        for _ in 0..4 {
            b.after(Duration::from_secs(2));
        }
        assert_eq!(
            b.after(BACKOFF_RESET_AFTER - Duration::from_millis(1))
                .as_secs(),
            16
        );
        assert_eq!(b.after(BACKOFF_RESET_AFTER), BACKOFF_FIRST);
        assert_eq!(b.after(Duration::ZERO).as_secs(), 2);
    }

    #[test]
    fn an_exit_says_its_status_or_its_signal() {
        use std::os::unix::process::ExitStatusExt as _;
        let killed = std::process::ExitStatus::from_raw(9);
        assert_eq!(Exit::of(killed), Exit::Signal(9));
        assert_eq!(
            Exit::of(killed).to_string(),
            "was killed by signal 9 (SIGKILL)"
        );
        let failed = std::process::ExitStatus::from_raw(1 << 8);
        assert_eq!(Exit::of(failed), Exit::Code(1));
        assert_eq!(Exit::of(failed).to_string(), "exited with status 1");
        assert_eq!(
            serde_json::to_value(Exit::Signal(9)).unwrap(),
            serde_json::json!({"signal": 9})
        );
    }

    #[test]
    fn a_node_follows_the_default_until_it_chooses() {
        let p = RestartPolicies::new(Restart::OnFailure);
        let n2 = NodeId(2);
        assert_eq!(p.of(n2), Restart::OnFailure);
        assert!(!p.own(n2));
        p.set(n2, Some(Restart::Never));
        assert_eq!((p.of(n2), p.own(n2)), (Restart::Never, true));
        assert_eq!(p.of(NodeId(3)), Restart::OnFailure);
        p.set(n2, None);
        assert_eq!((p.of(n2), p.own(n2)), (Restart::OnFailure, false));
        assert_eq!(
            serde_json::to_value(Restart::OnFailure).unwrap(),
            serde_json::json!("on-failure")
        );
    }
}
