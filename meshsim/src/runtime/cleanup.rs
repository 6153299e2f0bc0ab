//! `meshsim down`, and what a start does when a crashed run left things behind: remove every
//! namespace and root-namespace link with meshsim's prefix (the qdiscs and tc programs on
//! them go with the devices), after stopping processes still running inside those namespaces.
//! When Docker is reachable, first every container with meshsim's run label and the
//! `meshsim` network (see `docker::remove_leftovers`): labels only, never names.

use std::os::unix::fs::MetadataExt as _;

use nix::{sys::signal::Signal, unistd::Pid};

use super::{RuntimeError, netns::PREFIX};
use crate::net::{NETNS_DIR, NetNs, Netlink};

/// What was removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub namespaces: Vec<String>,
    pub links: Vec<String>,
    pub processes: usize,
    /// Docker containers with meshsim's run label.
    pub containers: Vec<String>,
    /// Docker networks (`meshsim`).
    pub networks: Vec<String>,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.links.is_empty()
            && self.processes == 0
            && self.containers.is_empty()
            && self.networks.is_empty()
    }
}

pub async fn remove_leftovers() -> Result<Removed, RuntimeError> {
    let mut removed = Removed::default();
    // Containers first: their namespaces may be bound as `ms-<name>` below, and removing a
    // container through Docker lets it release what it holds (its veth, its IP).
    (removed.containers, removed.networks) = super::docker::remove_leftovers().await?;
    for name in NetNs::list_with_prefix(PREFIX)? {
        removed.processes += kill_processes_in(&format!("{NETNS_DIR}/{name}"));
        NetNs::delete(&name)?;
        removed.namespaces.push(name);
    }
    let root = Netlink::connect()?;
    for link in root.links_with_prefix(PREFIX).await? {
        root.delete_link(link.index).await?;
        removed.links.push(link.name);
    }
    Ok(removed)
}

/// SIGKILLs every process whose network namespace is the one bound at `path`; a process
/// inside would keep the namespace (and its veth) alive after the mount is gone.
pub(crate) fn kill_processes_in(path: &str) -> usize {
    let Ok(target) = std::fs::metadata(path) else {
        return 0;
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if ns.ino() == target.ino()
            && ns.dev() == target.dev()
            && nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}
