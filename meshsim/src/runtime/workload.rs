//! A per-node process (`--node-cmd`), run inside the node's namespace with its output in a
//! log file, and stopped with the node.

use std::{
    fs::File,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Stdio},
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
    pub fn spawn(
        ns: &NetNs,
        template: &str,
        name: &str,
        ip: &str,
        log: &Path,
    ) -> std::io::Result<Self> {
        let command = template.replace("{name}", name).replace("{ip}", ip);
        let out = File::create(log)?;
        let mut cmd = ns.command("sh");
        cmd.arg("-c")
            .arg(&command)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // Its own process group, so stopping it stops whatever it started; and if meshsim
        // dies without cleaning up, the kernel stops it too.
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

    /// SIGTERM to the process group, SIGKILL after a grace period.
    pub fn stop(mut self) {
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // The shell is gone; make sure nothing it started lingers.
                let _ = killpg(group, Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}
