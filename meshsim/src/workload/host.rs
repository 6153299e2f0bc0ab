//! The small interface between a workload and the backend its node lives on: what a node
//! needs before it is made ([`NodeNeeds`]), and, once it exists, "run this in the node, is
//! it alive, where are its logs" ([`NodeHost`], [`NodeProcess`]). Each backend implements it
//! once (`runtime::netns`, `runtime::docker`); a workload composes it and never knows which
//! backend it runs on, so adding a workload touches no backend.

use std::{future::Future, io, path::PathBuf, pin::Pin};

use super::restart::Exit;
use crate::net::NetNs;

/// A host file that the node's processes see in place of another path: `/etc/hosts` covered
/// by the run's hosts file, say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cover {
    pub file: PathBuf,
    pub target: PathBuf,
}

/// What a workload needs from a node before the node is made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeNeeds {
    /// Files its processes see over others (a mount namespace per process on netns, binds
    /// on Docker).
    pub covers: Vec<Cover>,
    /// Host directories its processes use at the same path (run and log directories). A
    /// netns node shares the host's filesystem anyway; a container gets them mounted.
    pub dirs: Vec<PathBuf>,
    /// The workload starts processes in the node. When false and the node runs the run's
    /// workload, a container runs its image's own command (an image of the user's may start
    /// its server that way); otherwise it idles until processes are started in it.
    pub runs_processes: bool,
}

/// A program to run in a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Where it starts.
    pub dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Its standard output and error, appended to.
    pub log: PathBuf,
}

impl Program {
    /// `program args...` with its output in `log`.
    pub fn new(program: impl Into<PathBuf>, args: &[&str], log: impl Into<PathBuf>) -> Self {
        Program {
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            dir: None,
            env: Vec::new(),
            log: log.into(),
        }
    }

    /// `sh -c command`.
    pub fn shell(command: &str, log: impl Into<PathBuf>) -> Self {
        Self::new("sh", &["-c", command], log)
    }

    pub fn with_arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn in_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// What it is, for messages: the program and its first arguments.
    pub fn describe(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in self.args.iter().take(3) {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

/// Where a node lives, for a workload that must choose between installs: a namespace sees
/// the host's files, a container its image's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    Namespace,
    Container,
}

/// How a process already running on the host gets into a node: a namespace node is its
/// network namespace plus the covers. A process that enters it this way (a homeserver the
/// zygote forks) sees what [`NodeHost::spawn`]'s processes see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    /// The bound network namespace, `/run/netns/NAME`.
    pub netns: PathBuf,
    pub covers: Vec<Cover>,
}

/// A node, as a workload uses it.
pub trait NodeHost: Send + Sync {
    fn kind(&self) -> HostKind;
    /// The node's network namespace: a socket opened in it reaches the node's own
    /// 127.0.0.1 without crossing any link.
    fn netns(&self) -> &NetNs;
    /// Starts `program` in the node with the node's [`NodeNeeds::covers`]. Awaited on the
    /// Sim's task (a runtime worker thread lives as long as the run, and a spawned process's
    /// parent-death signal is tied to the thread that forked it).
    fn spawn<'a>(&'a self, program: &'a Program) -> Spawning<'a>;
    /// How a host process enters it; `None` for a container, whose processes run from its
    /// image, not from the host.
    fn entry(&self) -> Option<NodeEntry> {
        None
    }
}

/// A process being started in a node.
pub type Spawning<'a> = Pin<Box<dyn Future<Output = io::Result<Box<dyn NodeProcess>>> + Send + 'a>>;

/// A process running in a node.
pub trait NodeProcess: Send + Sync {
    /// Its pid on the host.
    fn pid(&self) -> u32;
    /// Whether it still runs (an exited one waiting to be reaped does not).
    fn alive(&self) -> bool;
    /// How it ended, once it has; `None` while it runs. A process whose parent is not
    /// meshsim may only say that it is gone ([`Exit::Unknown`]).
    fn exit(&self) -> Option<Exit> {
        (!self.alive()).then_some(Exit::Unknown)
    }
    /// SIGTERM to it and what it started, SIGKILL after a grace period. Blocks.
    fn stop(&self);
}
