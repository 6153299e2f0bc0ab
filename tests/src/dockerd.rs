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

/// A Docker daemon of one test's own, on its own socket and roots, that the test may stop
/// and start again (the shared one is not the test's to restart). Its data root stays
/// between runs, so the image is copied into it once. Stopped when dropped.
pub struct OwnDockerd {
    root: std::path::PathBuf,
    socket: String,
    child: Option<Child>,
}

impl OwnDockerd {
    /// Starts the daemon `name` (`live_restore`: containers outlive its restarts) with
    /// `image` copied from the shared daemon when it lacks it.
    pub async fn start(name: &str, live_restore: bool, image: &str) -> OwnDockerd {
        let shared = Dockerd::ensure().await;
        let mut own = OwnDockerd {
            root: Path::new(&format!("{DOCKERD_ROOT}-{name}")).to_path_buf(),
            socket: format!("unix:///run/meshsim-test-dockerd-{name}.sock"),
            child: None,
        };
        own.run(live_restore).await;
        let docker = own.connect().await;
        if docker.inspect_image(image).await.is_err() {
            use bollard::query_parameters::ImportImageOptionsBuilder;
            use futures_util::StreamExt as _;
            let from = docker::connect().await.expect("the shared daemon");
            let tar = from.export_image(image);
            let mut loading = docker.import_image_stream(
                ImportImageOptionsBuilder::new().quiet(true).build(),
                tar,
                None,
            );
            while let Some(step) = loading.next().await {
                step.unwrap_or_else(|e| panic!("copying {image} into the test's dockerd: {e}"));
            }
        }
        drop(shared);
        own
    }

    /// Its socket, for `DOCKER_HOST`.
    pub fn host(&self) -> &str {
        &self.socket
    }

    pub async fn connect(&self) -> bollard::Docker {
        docker::connect_to(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("the test's dockerd: {e}"))
    }

    /// Stops the daemon (as `systemctl stop docker` would: SIGTERM, and a wait) and starts
    /// it again.
    pub async fn restart(&mut self, live_restore: bool) {
        self.stop();
        self.run(live_restore).await;
    }

    async fn run(&mut self, live_restore: bool) {
        for dir in ["data", "exec"] {
            std::fs::create_dir_all(self.root.join(dir)).unwrap();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("dockerd.log"))
            .unwrap();
        let mut command = Command::new("dockerd");
        command
            .args(["-H", &self.socket])
            .arg("--data-root")
            .arg(self.root.join("data"))
            .arg("--exec-root")
            .arg(self.root.join("exec"))
            .arg("--pidfile")
            .arg(self.root.join("dockerd.pid"))
            .args(["--iptables=false", "--bridge=none"]);
        if live_restore {
            command.arg("--live-restore");
        }
        let child = command
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("dockerd (Debian: apt-get install docker.io)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while docker::connect_to(&self.socket).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the test's dockerd did not answer within 60 s: see {}/dockerd.log",
                self.root.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

impl Drop for OwnDockerd {
    fn drop(&mut self) {
        self.stop();
    }
}
