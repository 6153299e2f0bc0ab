//! How a run is made: where nodes live (the backend), the mesh subnet, what nodes run, where
//! their logs go. Chosen once, when meshsim starts, from the flags and a topology file's
//! `[run]` table; the runtime is built from it. Pure values, so the topology-file parser and
//! the CLI share them without reaching into the runtime.

mod addressing;

use std::{fmt, path::PathBuf, str::FromStr};

pub use addressing::{Addressing, AddressingError};

use crate::runtime::names::RunPrefix;

/// Where nodes live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// A network namespace per node (needs nothing but the kernel).
    #[default]
    Netns,
    /// A Docker container per node, from a local image.
    Docker,
}

impl BackendKind {
    /// The names the flag and the topology file take.
    pub const NAMES: &[&str] = &["netns", "docker"];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Netns => "netns",
            BackendKind::Docker => "docker",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend {0:?}: use \"netns\" or \"docker\"")]
pub struct UnknownBackend(pub String);

impl FromStr for BackendKind {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "netns" => Ok(BackendKind::Netns),
            "docker" => Ok(BackendKind::Docker),
            other => Err(UnknownBackend(other.to_owned())),
        }
    }
}

/// Where and how a run's nodes are made (what they run is the workload's choice,
/// `workload::WorkloadKind`).
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub backend: BackendKind,
    pub addressing: Addressing,
    /// Where the workloads' logs go (`<name>.log`).
    pub log_dir: PathBuf,
    /// Docker only: the image of every node; `None`: the workload's own (or the base image).
    pub image: Option<String>,
    /// What everything the run makes on the host is named after (`ms`: `ms-n1`, ...).
    pub prefix: RunPrefix,
}

impl Default for RunConfig {
    /// netns, 10.77.0.0/16, logs in `/tmp/meshsim/logs`.
    fn default() -> Self {
        RunConfig {
            backend: BackendKind::default(),
            addressing: Addressing::default(),
            log_dir: PathBuf::from(DEFAULT_LOG_DIR),
            image: None,
            prefix: RunPrefix::default(),
        }
    }
}

/// Where per-node logs go unless `--log-dir` says otherwise.
pub const DEFAULT_LOG_DIR: &str = "/tmp/meshsim/logs";
