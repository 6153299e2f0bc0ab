//! Processes in nodes: a child process meshsim spawns in a node's namespace (netns), or a
//! process a container runs for it (Docker), both stopped the same way. And the mount
//! namespace a process gets (`runtime::confine`).

use std::{
    collections::HashSet,
    fs::OpenOptions,
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};

use super::confine::PrivateMounts;
use crate::workload::{host::NodeProcess, restart::Exit};

/// How long a process gets to exit after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(3);

/// A process meshsim spawned, in a process group of its own.
pub struct ChildProcess {
    child: Mutex<Child>,
    pid: u32,
}

impl ChildProcess {
    /// Starts `cmd` with stdout and stderr appended to `log`, in a process group of its own,
    /// so that stopping it stops whatever it started; and if meshsim dies without cleaning
    /// up, the kernel stops it too.
    ///
    /// The death signal fires when the *thread* that forked exits, not the process: call
    /// this from a thread that lives as long as the run (a runtime worker, as the Sim's
    /// task is on), never from `spawn_blocking`, whose threads end when idle.
    pub fn spawn(cmd: Command, log: &Path) -> std::io::Result<Self> {
        Self::spawn_in(cmd, log, None)
    }

    /// [`ChildProcess::spawn`] in a mount namespace of its own, confined if `mounts` says so
    /// (see `runtime::confine`). The log is opened here, by meshsim: a confined process
    /// writes it without being able to open it.
    pub fn spawn_in(
        mut cmd: Command,
        log: &Path,
        mounts: Option<PrivateMounts>,
    ) -> std::io::Result<Self> {
        let out = OpenOptions::new().create(true).append(true).open(log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        Self::spawn_configured(cmd, mounts)
    }

    /// [`ChildProcess::spawn`], but meshsim talks with it: its stdin and stdout are pipes,
    /// only its stderr goes to `log`.
    pub fn spawn_piped(
        mut cmd: Command,
        log: &Path,
    ) -> std::io::Result<(Self, ChildStdin, ChildStdout)> {
        let out = OpenOptions::new().create(true).append(true).open(log)?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(out);
        let process = Self::spawn_configured(cmd, None)?;
        let mut child = process.child.lock().unwrap_or_else(|e| e.into_inner());
        let to = child.stdin.take().expect("stdin is piped");
        let from = child.stdout.take().expect("stdout is piped");
        drop(child);
        Ok((process, to, from))
    }

    fn spawn_configured(
        mut cmd: Command,
        mut mounts: Option<PrivateMounts>,
    ) -> std::io::Result<Self> {
        cmd.process_group(0);
        // Read before the fork: the child must not touch shared state.
        let merge = super::ksm::merging();
        let meshsim = std::process::id() as libc::pid_t;
        // SAFETY: the hook runs between fork and exec (after the hook that entered the
        // node's network namespace, registered before this one) and makes only
        // async-signal-safe calls (prctl, getppid, and `enter`'s system calls on memory
        // prepared before the fork) without allocating.
        unsafe {
            cmd.pre_exec(move || {
                let die_with_meshsim = || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // meshsim died before the death signal was set (killed right after
                    // the fork): nothing would stop this process, which still holds the
                    // run lock until exec. Give up instead.
                    if libc::getppid() != meshsim {
                        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                    }
                    Ok(())
                };
                die_with_meshsim()?;
                // Kept across exec and inherited by what it forks (checked on 6.18).
                if merge && libc::prctl(libc::PR_SET_MEMORY_MERGE, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(mounts) = &mut mounts {
                    mounts.enter()?;
                    // Again: changing the uid cleared it.
                    die_with_meshsim()?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(ChildProcess {
            pid: child.id(),
            child: Mutex::new(child),
        })
    }
}

impl NodeProcess for ChildProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn alive(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        matches!(child.try_wait(), Ok(None))
    }

    fn exit(&self) -> Option<Exit> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match child.try_wait() {
            Ok(Some(status)) => Some(Exit::of(status)),
            Ok(None) => None,
            Err(_) => Some(Exit::Unknown),
        }
    }

    fn stop(&self) {
        let group = Pid::from_raw(self.pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                // The leader is gone; make sure nothing it started lingers.
                let _ = killpg(group, Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait();
    }
}

/// A process known by its host pid only: one a container runs for meshsim (an exec). Its
/// parent is the container's runtime, which reaps it.
pub struct HostPid(pub u32);

impl NodeProcess for HostPid {
    fn pid(&self) -> u32 {
        self.0
    }

    fn alive(&self) -> bool {
        pid_alive(self.0)
    }

    fn stop(&self) {
        // The exec runs `setsid`, so the pid leads a group of what it started.
        let group = Pid::from_raw(self.0 as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let _ = kill(group, Signal::SIGTERM);
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline && pid_alive(self.0) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = kill(group, Signal::SIGKILL);
    }
}

/// Whether `pid` runs (a zombie does not: it exited and waits to be reaped).
pub fn pid_alive(pid: u32) -> bool {
    ProcStat::of(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// What `/proc/<pid>/stat` says of a process that meshsim (and its tests and benches) asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `Z`...
    pub state: char,
    pub parent: u32,
    pub group: u32,
}

impl ProcStat {
    /// `None` when there is no such process (or it went while being read).
    pub fn of(pid: u32) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// The fields after the command's name, which is in parentheses and may itself hold
    /// spaces and parentheses: so from the last `)`.
    pub fn parse(stat: &str) -> Option<Self> {
        let mut fields = stat.rsplit_once(") ")?.1.split(' ');
        let state = fields.next()?.chars().next()?;
        let parent = fields.next()?.parse().ok()?;
        let group = fields.next()?.parse().ok()?;
        Some(ProcStat {
            state,
            parent,
            group,
        })
    }
}

/// The pids of every process on the host, from /proc.
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// SIGKILLs every process whose network namespace is the one bound at `path`; a process
/// inside would keep the namespace (and its veth) alive after the mount is gone.
pub fn kill_processes_in(path: &str) -> usize {
    kill_processes_in_any(&[path.to_owned()])
}

/// [`kill_processes_in`] for many namespaces, in one pass over /proc.
pub fn kill_processes_in_any(paths: &[String]) -> usize {
    let targets: HashSet<(u64, u64)> = paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    if targets.is_empty() {
        return 0;
    }
    let mut killed = 0;
    for pid in all_pids() {
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if targets.contains(&(ns.dev(), ns.ino()))
            && kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_after_the_name_whatever_the_name_holds() {
        let line = "4242 (tricky) name) S 17 4242 4242 0 -1 4194560 263 0 0 0";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                state: 'S',
                parent: 17,
                group: 4242
            })
        );
        assert_eq!(ProcStat::parse("4242 (cut"), None);
        let me = ProcStat::of(std::process::id()).unwrap();
        assert_eq!(me.parent, std::os::unix::process::parent_id());
    }
}
