//! A process a test started (meshsim itself, chromedriver, a ping), ended when its guard
//! drops, also on a failed assertion.

use std::{
    fs::File,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::meshsim_bin;

/// The guard: SIGTERM to the process's group (so a browser started by chromedriver goes
/// with it), a wait, SIGKILL if it does not stop in time.
pub struct Running {
    pub name: &'static str,
    pub child: Child,
    grace: Duration,
    /// For meshsim: if it had to be killed it could not clean up, so `meshsim down` does.
    pub sweep: bool,
}

impl Running {
    /// Starts `command` in a process group of its own, its output in `log`.
    pub fn start(
        name: &'static str,
        command: &mut Command,
        log: &Path,
        grace: Duration,
    ) -> Running {
        let out = File::create(log).expect("create a log file");
        let err = out.try_clone().expect("clone the log file");
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        Self::spawn(name, command, grace)
    }

    /// Starts `command` as it is set up (say, with its stderr piped), in a process group of
    /// its own, so the guard can end everything it started and nothing else.
    pub fn spawn(name: &'static str, command: &mut Command, grace: Duration) -> Running {
        let child = command
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Running {
            name,
            child,
            grace,
            sweep: false,
        }
    }

    /// Fails at once, with the log's path, if the process already died.
    pub fn assert_alive(&mut self, log: &Path) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); its output is in {}",
                self.name,
                log.display()
            );
        }
    }

    /// SIGTERM to the process alone, and its exit status once it ends.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().expect("wait for the process")
    }

    /// SIGKILL to the process alone (as `kill -9` would), and a wait.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal_group(&self, signal: i32) {
        let group = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals that process group; the group is the
        // one `spawn` made for this child, so nothing else is touched.
        unsafe { libc::kill(-group, signal) };
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            // It ended already; what it started may not have.
            self.signal_group(libc::SIGKILL);
            return;
        }
        self.signal_group(libc::SIGTERM);
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // Children of the group (a browser) may outlive the leader by a moment.
                self.signal_group(libc::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM: killing it", self.name);
        self.signal_group(libc::SIGKILL);
        let _ = self.child.wait();
        if self.sweep {
            let _ = Command::new(meshsim_bin()).arg("down").output();
        }
    }
}

/// Starts `meshsim ARGS` with its stderr piped (stdout dropped), swept on drop; returns its
/// guard and its stderr lines as they come.
pub fn spawn_meshsim(args: &[&str]) -> (Running, std::sync::mpsc::Receiver<String>) {
    spawn_meshsim_with(args, &[])
}

/// [`spawn_meshsim`] with these environment variables set (`DOCKER_HOST`, say).
pub fn spawn_meshsim_with(
    args: &[&str],
    envs: &[(&str, &str)],
) -> (Running, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead as _, BufReader};
    let mut meshsim = Running::spawn(
        "meshsim",
        Command::new(meshsim_bin())
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        Duration::from_secs(20),
    );
    meshsim.sweep = true;
    let stderr = BufReader::new(meshsim.child.stderr.take().expect("stderr is piped"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (meshsim, rx)
}

/// Waits (`within` at most) for the process to end, and its exit status.
pub fn wait_for_exit(process: &mut Running, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = process.child.try_wait().expect("wait for the process") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not end within {within:?}",
            process.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (a minute at most) for a line containing `text`; panics with what came instead.
pub fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, text: &str) {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(text) => return,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no {text:?} ({e}) in {seen:#?}"),
        }
    }
}
