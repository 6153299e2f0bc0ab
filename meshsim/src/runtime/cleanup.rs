//! `meshsim down`, and what a start does when a crashed run left things behind: remove every
//! namespace and root-namespace link with meshsim's prefix (the qdiscs and tc programs on
//! them go with the devices), after stopping processes still running inside those namespaces,
//! and the sch_fq probe's namespace of any meshsim killed while probing (`msprobe-<pid>-*`
//! whose pid is gone).
//! When Docker is reachable, first every container with meshsim's run label and the
//! `meshsim` network (see `docker::remove_leftovers`): labels only, never names. Last, the
//! run's Postgres cluster, which runs on the host (`workload::postgres::remove_leftover`),
//! and the host's KSM settings if the run changed them (`ksm::release`).

use super::{
    RuntimeError,
    names::RunPrefix,
    process::{kill_processes_in, pid_alive},
};
use crate::{
    net::{NETNS_DIR, NetNs, Netlink, PROBE_PREFIX, scratch_owner},
    workload::{NODE_DIRS_MARKER, WorkloadError, marked, synapse::RUN_MARKER},
};

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
    /// Directories of services the run kept on the host (its Postgres cluster).
    pub dirs: Vec<std::path::PathBuf>,
    /// The host's KSM settings were put back (the run used `--ksm`).
    pub ksm_restored: bool,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.links.is_empty()
            && self.processes == 0
            && self.containers.is_empty()
            && self.networks.is_empty()
            && self.dirs.is_empty()
            && !self.ksm_restored
    }
}

/// Removes what runs with `prefix` left behind (see the module's text).
pub async fn remove_leftovers(prefix: &RunPrefix) -> Result<Removed, RuntimeError> {
    let mut removed = Removed::default();
    let names = prefix.names();
    // Containers first: their namespaces may be bound as `ms-<name>` below, and removing a
    // container through Docker lets it release what it holds (its veth, its IP).
    (removed.containers, removed.networks) = super::docker::remove_leftovers(prefix).await?;
    for name in NetNs::list_with_prefix(&names)? {
        removed.processes += kill_processes_in(&format!("{NETNS_DIR}/{name}"));
        NetNs::delete(&name)?;
        removed.namespaces.push(name);
    }
    // A probe's namespace whose process is gone (killed mid-probe): no run's, and no live
    // probe's, since its owner is dead.
    for name in NetNs::list_with_prefix(PROBE_PREFIX)? {
        if scratch_owner(&name).is_some_and(|pid| !pid_alive(pid)) {
            NetNs::delete(&name)?;
            removed.namespaces.push(name);
        }
    }
    let root = Netlink::connect()?;
    for link in root.links_with_prefix(&names).await? {
        root.delete_link(link.index).await?;
        removed.links.push(link.name);
    }
    // The run's Postgres runs on the host, outside every namespace: its pid file names it.
    let postgres = prefix.postgres_dir();
    if postgres.exists() {
        if crate::workload::postgres::remove_leftover(&postgres) {
            removed.processes += 1;
        }
        removed.dirs.push(postgres);
    }
    // The homeservers' directory (their data, and the sockets of nodes with workers) is of
    // no use to the next run, which empties it: only one meshsim marked as its own (or an
    // empty one: a run killed before it wrote the marker). The marker goes last, so a
    // removal killed half-way leaves it for the next.
    let run_dir = prefix.run_dir();
    if marked::is_ours(&run_dir, RUN_MARKER) {
        marked::remove(&run_dir, RUN_MARKER).map_err(WorkloadError::io(
            "remove the leftover run directory",
            &run_dir,
        ))?;
        removed.dirs.push(run_dir);
    }
    // The node commands' directories, as well.
    let node_dirs = prefix.node_dirs();
    if marked::is_ours(&node_dirs, NODE_DIRS_MARKER) {
        marked::remove(&node_dirs, NODE_DIRS_MARKER).map_err(WorkloadError::io(
            "remove the leftover node directories",
            &node_dirs,
        ))?;
        removed.dirs.push(node_dirs);
    }
    removed.ksm_restored = super::ksm::release(prefix)?;
    Ok(removed)
}
