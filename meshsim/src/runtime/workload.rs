//! A per-node process (`--node-cmd`, or a Synapse), run inside the node's namespace with its
//! output in a log file, and stopped with the node.

use std::{
    ffi::CString,
    fs::File,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};

use crate::net::NetNs;

/// How long a workload gets to exit after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(3);

pub struct Workload {
    child: Child,
}

impl Workload {
    /// Runs `template` (with `{name}` and `{ip}` filled in) through `sh -c` inside `ns`.
    pub fn shell(
        ns: &NetNs,
        template: &str,
        name: &str,
        ip: &str,
        log: &Path,
    ) -> std::io::Result<Self> {
        let command = template.replace("{name}", name).replace("{ip}", ip);
        let mut cmd = ns.command("sh");
        cmd.arg("-c").arg(&command);
        Self::spawn(cmd, log)
    }

    /// Starts `cmd` (made with [`NetNs::command`], so it runs in the node) with stdout and
    /// stderr in `log`, in a process group of its own, so that stopping it stops whatever
    /// it started; and if meshsim dies without cleaning up, the kernel stops it too.
    ///
    /// The death signal fires when the *thread* that forked exits, not the process: call
    /// this from a thread that lives as long as the run (a runtime worker, as the Sim's
    /// task is on), never from `spawn_blocking`, whose threads end when idle.
    pub fn spawn(mut cmd: Command, log: &Path) -> std::io::Result<Self> {
        let out = File::create(log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(Workload {
            child: cmd.spawn()?,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM to the process group, SIGKILL after a grace period.
    pub fn stop(mut self) {
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // The leader is gone; make sure nothing it started lingers.
                let _ = killpg(group, Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Gives `cmd`'s process a mount namespace of its own in which each `(file, target)` is
/// bind-mounted over `target`, as `ip netns exec` does with `/etc/netns/NAME/*`: the node
/// sees its own `/etc/hosts` and `/etc/resolv.conf`, the host sees nothing change.
///
/// Mounts are made `slave` first, so the binds never propagate back to the host's mount
/// tree (which is `shared` on systemd hosts), while unmounts on the host (a deleted
/// namespace under /run/netns) still reach the child.
pub fn with_private_files(cmd: &mut Command, binds: &[(&Path, &Path)]) -> std::io::Result<()> {
    let to_c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other(format!("{} contains a NUL byte", p.display())))
    };
    // Everything the child touches is made before the fork: it must not allocate.
    let binds: Vec<(CString, CString)> = binds
        .iter()
        .map(|(file, target)| Ok((to_c(file)?, to_c(target)?)))
        .collect::<std::io::Result<_>>()?;
    // SAFETY: runs between fork and exec, making only async-signal-safe calls (unshare,
    // mount) on strings that already exist; an error converts without allocating.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_SLAVE | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for (file, target) in &binds {
                if libc::mount(
                    file.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}
