//! A Docker daemon for the Docker tier: the one that runs, or one of the tests' own (as `./x`
//! starts it), stopped again when the guard drops.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use meshsim::runtime::docker;

/// Where a daemon the tests start keeps its state (as ./x does).
const DOCKERD_ROOT: &str = "/var/lib/meshsim-docker";

/// A dockerd this test started, stopped when dropped; `None` inside when one was running.
pub struct Dockerd(Option<Child>);

impl Dockerd {
    pub async fn ensure() -> Dockerd {
        if docker::connect().await.is_ok() {
            return Dockerd(None);
        }
        let root = Path::new(DOCKERD_ROOT);
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::create_dir_all(root.join("exec")).unwrap();
        let log = std::fs::File::create(root.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            // As ./x starts it: a dockerd managing iptables would drop the netns tier's
            // bridged traffic (FORWARD policy DROP with br_netfilter).
            .args(["--iptables=false", "--bridge=none"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("dockerd (Debian: apt-get install docker.io)");
        let guard = Dockerd(Some(child));
        let deadline = Instant::now() + Duration::from_secs(60);
        while docker::connect().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60 s: see {DOCKERD_ROOT}/dockerd.log"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        guard
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}
