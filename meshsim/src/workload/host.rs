//! The small interface between a workload and the backend its node lives on: what a node
//! needs before it is made ([`NodeNeeds`]), and, once it exists, "run this in the node, is
//! it alive, where are its logs" ([`NodeHost`], [`NodeProcess`]). Each backend implements it
//! once (`runtime::netns`, `runtime::docker`); a workload composes it and never knows which
//! backend it runs on, so adding a workload touches no backend.

use std::{future::Future, io, path::PathBuf, pin::Pin};

use super::restart::Exit;
use crate::{model::NodeId, net::NetNs};

/// Node `nK`'s processes run as uid `NODE_UID_BASE + K`, in the group `NODE_GID`: ids no
/// account on the host has (nothing is added to /etc/passwd), above the ranges systemd hands
/// to containers (up to 1,879,048,191) and below its own reserved ones (from 2,147,352,576).
/// One uid per node, so a node cannot signal or trace another's processes.
pub const NODE_UID_BASE: u32 = 2_000_000_000;
/// The group of every node's processes: what they share (the run's Postgres socket).
pub const NODE_GID: u32 = NODE_UID_BASE;

/// The uid of node `id`'s processes.
pub fn node_uid(id: NodeId) -> u32 {
    NODE_UID_BASE + id.0
}

/// Who a node's processes run as and what of the host they may write: the least a workload
/// needs. On namespace nodes (`runtime::confine`): the node's uid and [`NODE_GID`], no
/// capabilities, no new privileges, every mount read-only but `dir` and `writable`, a `/tmp`
/// and `/dev/shm` of their own, a `/proc` showing only their own processes. Containers are
/// their own confinement and ignore it (docs/docker.md).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Confinement {
    pub uid: u32,
    pub gid: u32,
    /// The node's directory: writable, where its processes start, their `HOME`. Handed to
    /// `uid` before they start.
    pub dir: PathBuf,
    /// Other files or directories it writes (logs of its own).
    pub writable: Vec<PathBuf>,
    /// What it reads under `/tmp`, which its own `/tmp` would hide (the run's CA, the
    /// Postgres socket's directory); the rest of the host's files it sees read-only anyway.
    pub readable: Vec<PathBuf>,
}

impl Confinement {
    /// Node `id`, in `dir`.
    pub fn node(id: NodeId, dir: impl Into<PathBuf>) -> Self {
        Confinement {
            uid: node_uid(id),
            gid: NODE_GID,
            dir: dir.into(),
            writable: Vec::new(),
            readable: Vec::new(),
        }
    }

    /// Gives `dir` (and all in it) to the node's uid, reachable by it alone. Call it before
    /// every start: meshsim writes some of it as root, and a node added again under its name
    /// may have a new id, so a new uid.
    pub fn hand_over_dir(&self) -> io::Result<()> {
        crate::runtime::confine::hand_over(&self.dir, self.uid, self.gid)
    }
}

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
    /// Runs unprivileged, confined to its node directory; `None`: as root, seeing the host
    /// as meshsim does (`--node-cmd-as-root`).
    pub confinement: Option<Confinement>,
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
            confinement: None,
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

    /// Runs it confined (and in the confinement's directory).
    pub fn confined(mut self, confinement: Confinement) -> Self {
        self.dir = Some(confinement.dir.clone());
        self.confinement = Some(confinement);
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
