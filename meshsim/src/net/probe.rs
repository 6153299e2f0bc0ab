//! Does this kernel have `fq`? Asked by trying it, because the usual places to look
//! (`/proc/config.gz`, `/lib/modules`) are often absent, and a module may load on demand.

use std::sync::atomic::{AtomicU32, Ordering};

use super::{
    netns::{NetNs, NetNsError},
    qdisc::FqOptions,
    rtnl::{Netlink, NetlinkError},
};

/// Names of everything the probe creates start with this, so leftovers are recognisable.
/// No run's names do: they begin with the run's prefix (at most 5 characters) and a `-`, and
/// this has no `-` in its first 7, so removing a run's leftovers (`meshsim down`, a start)
/// never deletes the namespace of a probe that another meshsim is running.
pub const PROBE_PREFIX: &str = "msprobe";

/// The namespace of process `pid`'s `n`th probe: `msprobe-<pid>-<n>`.
pub fn scratch_name(pid: u32, n: u32) -> String {
    format!("{PROBE_PREFIX}-{pid}-{n}")
}

/// The pid that made a probe's namespace, from its name; `None` for any other name.
pub fn scratch_owner(name: &str) -> Option<u32> {
    let (pid, n) = name
        .strip_prefix(PROBE_PREFIX)?
        .strip_prefix('-')?
        .split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Whether the kernel can run `fq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FqSupport {
    /// fq was installed on a test interface.
    Available,
    /// The kernel has no sch_fq (see [`NetlinkError::FqUnsupported`] for what to do).
    Missing,
    /// The probe itself failed (no privileges, no namespaces, ...); the text says why.
    Unknown(String),
}

/// Tries to install fq on a veth pair inside a throwaway namespace ([`scratch_name`]),
/// then deletes the namespace, whatever happened (also on panic). Working in a namespace
/// of its own means the probe never adds an interface to the host's namespace, and one
/// delete removes everything.
pub async fn probe_fq() -> FqSupport {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = scratch_name(std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let guard = match tokio::task::spawn_blocking(move || ScratchNs::create(name)).await {
        Ok(Ok(guard)) => guard,
        Ok(Err(e)) => return FqSupport::Unknown(e.to_string()),
        Err(e) => return FqSupport::Unknown(format!("the probe's setup task failed: {e}")),
    };
    let support = match try_fq(&guard.ns).await {
        Ok(()) => FqSupport::Available,
        Err(NetlinkError::FqUnsupported { .. }) => FqSupport::Missing,
        Err(e) => FqSupport::Unknown(e.to_string()),
    };
    tracing::debug!(?support, "probed for sch_fq");
    drop(guard);
    support
}

async fn try_fq(ns: &NetNs) -> Result<(), NetlinkError> {
    // The connection is dropped on return, so its socket does not keep the namespace alive.
    let netlink = Netlink::connect_in(ns)?;
    let host = netlink
        .create_veth(
            &format!("{PROBE_PREFIX}0"),
            &format!("{PROBE_PREFIX}1"),
            ns,
            None,
        )
        .await?;
    netlink.replace_root_fq(host, &FqOptions::default()).await
}

/// The probe's namespace, deleted on drop.
struct ScratchNs {
    ns: NetNs,
}

impl ScratchNs {
    fn create(name: String) -> Result<Self, NetNsError> {
        let ns = match NetNs::create(&name) {
            // Only a dead process with our pid could have left this name: reclaim it.
            Err(NetNsError::AlreadyExists { .. }) => {
                NetNs::delete(&name)?;
                NetNs::create(&name)?
            }
            other => other?,
        };
        Ok(Self { ns })
    }
}

impl Drop for ScratchNs {
    fn drop(&mut self) {
        if let Err(e) = NetNs::delete(self.ns.name()) {
            tracing::warn!(
                netns = self.ns.name(),
                "could not delete the fq probe's namespace: {e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probes_owner_is_read_from_its_name() {
        assert_eq!(scratch_owner(&scratch_name(4194304, 17)), Some(4194304));
        for other in [
            "ms-n1",
            "msprobe-x-1",
            "msprobe-12",
            "msprobe-12-",
            "msprobe12-1",
        ] {
            assert_eq!(scratch_owner(other), None, "{other}");
        }
    }
}
