//! Receive packet steering (RPS) on an interface inside a namespace: which CPUs may process
//! the packets it receives, chosen per packet by its flow hash, so one flow's packets are
//! processed by one CPU, in the order they arrived.
//!
//! The setting lives in sysfs (`/sys/class/net/IF/queues/rx-N/rps_cpus`), and a sysfs
//! instance shows the interfaces of the namespace that mounted it. So the write happens on a
//! thread that enters the namespace and makes a sysfs there, mounted nowhere (the mount API
//! of Linux 5.2: `fsopen`, `fsmount`); the write goes through its descriptor, and closing it
//! unmounts it.
//!
//! Where that sysfs is read-only (a container's runtime mounted its namespace's sysfs so,
//! and the new mount shares that superblock) or the kernel lacks the mount API, the thread
//! instead takes a mount namespace of its own (the thread's only: made slave first, so
//! nothing propagates back to the host), mounts a sysfs there over `/sys`, makes it
//! writable, writes, and ends, taking its mounts with it. That is the slower way: a new mount
//! namespace copies every mount of the host, a thousand namespaces' among them.

use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::{Path, PathBuf},
};

use super::{
    names::{NameError, check_ifname},
    netns::{NetNs, NetNsError},
};

#[derive(Debug, thiserror::Error)]
pub enum RpsError {
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("could not {what} to set receive steering of {ifname} in {ns}: {source}")]
    Io {
        what: &'static str,
        ifname: String,
        ns: String,
        #[source]
        source: io::Error,
    },
}

impl RpsError {
    /// A failed step (what, and why) on `ifname` in the namespace `ns`.
    fn io(ifname: &str, ns: &str, (what, source): (&'static str, io::Error)) -> Self {
        RpsError::Io {
            what,
            ifname: ifname.to_owned(),
            ns: ns.to_owned(),
            source,
        }
    }
}

/// Lets every CPU of the machine process `ifname`'s received packets, each flow on one CPU
/// (its receive queues' `rps_cpus`).
pub fn steer_by_flow(ns: &NetNs, ifname: &str) -> Result<(), RpsError> {
    write_rps_cpus(ns, ifname, &cpu_mask(online_cpus()))
}

/// [`steer_by_flow`] for an interface of the host's own namespace (the host's end of its
/// client links), whose sysfs is the host's `/sys`.
pub fn steer_host_by_flow(ifname: &str) -> Result<(), RpsError> {
    check_ifname(ifname)?;
    write_queues(ifname, &cpu_mask(online_cpus()), "the host")
}

/// Turns steering off again: packets are processed on the CPU that received them (the
/// kernel's default; benchmarks compare against it).
pub fn steer_off(ns: &NetNs, ifname: &str) -> Result<(), RpsError> {
    write_rps_cpus(ns, ifname, "0")
}

/// Each receive queue's `rps_cpus` of `ifname` in `ns`, as sysfs shows it (`3` for CPUs 0
/// and 1, `0` for none).
pub fn steering(ns: &NetNs, ifname: &str) -> Result<Vec<String>, RpsError> {
    check_ifname(ifname)?;
    let fail = |step| RpsError::io(ifname, ns.name(), step);
    ns.run(|| {
        let sysfs = detached_sysfs().map_err(|e| fail(("make a sysfs of the namespace", e)))?;
        let mut masks = Vec::new();
        for_each_queue(&mount_path(&sysfs), ifname, |rps_cpus| {
            let mask = std::fs::read_to_string(rps_cpus).map_err(|e| ("read rps_cpus", e))?;
            masks.push(mask.trim_end().to_owned());
            Ok(())
        })
        .map_err(fail)?;
        Ok(masks)
    })?
}

fn write_rps_cpus(ns: &NetNs, ifname: &str, mask: &str) -> Result<(), RpsError> {
    check_ifname(ifname)?;
    let fail = |step| RpsError::io(ifname, ns.name(), step);
    ns.run(|| -> Result<(), RpsError> {
        let detached = detached_sysfs()
            .map_err(|e| ("make a sysfs of the namespace", e))
            .and_then(|sysfs| write_queues_under(&mount_path(&sysfs), ifname, mask));
        match detached {
            Ok(()) => Ok(()),
            Err((_, e)) if needs_private_sysfs(&e) => {
                private_sysfs().map_err(|e| fail(("mount a sysfs of the namespace", e)))?;
                write_queues(ifname, mask, ns.name())
            }
            Err(step) => Err(fail(step)),
        }
    })?
}

/// Whether the detached sysfs failed for a reason the slower way gets around.
fn needs_private_sysfs(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EROFS | libc::ENOSYS | libc::EPERM | libc::EACCES)
    )
}

/// Writes `mask` into every receive queue's `rps_cpus` of `ifname`, as the calling thread's
/// `/sys` shows it; `ns` names the namespace in errors.
fn write_queues(ifname: &str, mask: &str, ns: &str) -> Result<(), RpsError> {
    write_queues_under(Path::new("/sys"), ifname, mask)
        .map_err(|step| RpsError::io(ifname, ns, step))
}

/// Writes `mask` into every receive queue's `rps_cpus` of `ifname` in the sysfs at `root`.
fn write_queues_under(
    root: &Path,
    ifname: &str,
    mask: &str,
) -> Result<(), (&'static str, io::Error)> {
    for_each_queue(root, ifname, |rps_cpus| {
        std::fs::write(rps_cpus, mask).map_err(|e| ("write rps_cpus", e))
    })
}

/// Calls `f` with the `rps_cpus` file of each receive queue of `ifname` in the sysfs at
/// `root`.
fn for_each_queue(
    root: &Path,
    ifname: &str,
    mut f: impl FnMut(&Path) -> Result<(), (&'static str, io::Error)>,
) -> Result<(), (&'static str, io::Error)> {
    let list = |e| ("list the receive queues", e);
    let queues =
        std::fs::read_dir(root.join(format!("class/net/{ifname}/queues"))).map_err(list)?;
    for queue in queues {
        let queue = queue.map_err(list)?;
        if queue.file_name().to_string_lossy().starts_with("rx-") {
            f(&queue.path().join("rps_cpus"))?;
        }
    }
    Ok(())
}

/// A path to the root of the mount `fd` (open in this thread).
fn mount_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/thread-self/fd/{}", fd.as_raw_fd()))
}

/// A sysfs of the calling thread's network namespace, mounted nowhere: the descriptor of its
/// root. Closing it unmounts it.
fn detached_sysfs() -> io::Result<OwnedFd> {
    let fd = |r: libc::c_long| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
        }
    };
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: plain syscalls with a static C string, descriptors we own, and null pointers
    // where FSCONFIG_CMD_CREATE takes no key or value.
    unsafe {
        let context = fd(libc::syscall(
            libc::SYS_fsopen,
            c"sysfs".as_ptr(),
            libc::FSOPEN_CLOEXEC,
        ))?;
        if libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            null,
            null,
            0,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        fd(libc::syscall(
            libc::SYS_fsmount,
            context.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            0,
        ))
    }
}

/// Gives the calling thread a mount namespace of its own with a sysfs of its network
/// namespace on `/sys`.
fn private_sysfs() -> io::Result<()> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let null = std::ptr::null();
    const SYSFS: &CStr = c"sysfs";
    // SAFETY: plain syscalls on static C strings and null pointers where the kernel takes
    // none. unshare(CLONE_NEWNS) moves only this thread (it copies the thread's fs info);
    // the thread ends right after its work, and with it the mount namespace.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        // Nothing mounted here may reach the host's mounts: /sys, under which the sysfs
        // goes, stops propagating back. "/" only when /sys is no mount point; "/" fails
        // where it is not one itself (meshsim run in a chroot).
        let slave = |path: &CStr| {
            libc::mount(
                null,
                path.as_ptr(),
                null,
                libc::MS_SLAVE | libc::MS_REC,
                null.cast(),
            )
        };
        if slave(c"/sys") != 0 {
            check(slave(c"/"))?;
        }
        check(libc::mount(
            SYSFS.as_ptr(),
            c"/sys".as_ptr(),
            SYSFS.as_ptr(),
            0,
            null.cast(),
        ))?;
        // A network namespace has one sysfs superblock, which this mount shares: a container's
        // runtime mounted it read-only, so make the superblock writable. The container's own
        // mount stays read-only (that flag is its mount's, not the superblock's).
        check(libc::mount(
            null,
            c"/sys".as_ptr(),
            null,
            libc::MS_REMOUNT,
            null.cast(),
        ))
    }
}

fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A CPU bitmap as sysfs writes it: hex, in comma-separated groups of 32 bits, most
/// significant first (`3` for two CPUs, `1,ffffffff` for 33).
fn cpu_mask(cpus: usize) -> String {
    let cpus = cpus.max(1);
    let groups = cpus.div_ceil(32);
    (0..groups)
        .rev()
        .map(|g| {
            let bits = (cpus - g * 32).min(32);
            let word: u32 = if bits == 32 {
                u32::MAX
            } else {
                (1 << bits) - 1
            };
            if g == groups - 1 {
                format!("{word:x}")
            } else {
                format!("{word:08x}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_hex_groups_of_32_cpus() {
        assert_eq!(cpu_mask(1), "1");
        assert_eq!(cpu_mask(2), "3");
        assert_eq!(cpu_mask(32), "ffffffff");
        assert_eq!(cpu_mask(33), "1,ffffffff");
        assert_eq!(cpu_mask(72), "ff,ffffffff,ffffffff");
    }
}
