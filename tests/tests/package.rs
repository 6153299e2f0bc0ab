//! The Debian package, installed into a clean Debian root: the minbase bookworm tree the
//! node images are made from (`meshsim/debian:bookworm`, debootstrapped by `cargo xtask
//! images`), exported into a directory of the test's own. There, with nothing of the
//! checkout: `dpkg -i` the package, then `meshsim --version`, `meshsim check` (which finds
//! the installed man page, completions and examples) and a two-node `meshsim up`, whose
//! canvas answers on the host (the root shares the host's network) and which removes its
//! mesh on SIGTERM.
//!
//! `cargo xtask test` builds the package first and names it in `MESHSIM_DEB`; it needs
//! root, Docker and the images (`./x test` provides all three).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use bollard::{
    models::ContainerCreateBody,
    query_parameters::{CreateContainerOptions, RemoveContainerOptions},
};
use futures_util::StreamExt as _;
use meshsim_tests::{
    Running, TempDir,
    dockerd::Dockerd,
    eventually,
    mesh::{assert_nothing_left, run_lock},
    target_dir,
};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use serde_json::Value;

const BASE_IMAGE: &str = "meshsim/debian:bookworm";

/// A Debian root with the host's /proc, /sys, /dev and a fresh /run and /tmp mounted in;
/// unmounted and removed when dropped.
struct DebianRoot {
    dir: TempDir,
    mounts: Vec<PathBuf>,
}

impl DebianRoot {
    /// Exports the base image's filesystem (a container made from it, never started) into a
    /// new directory.
    async fn new() -> DebianRoot {
        let dir = TempDir::new("debian-root");
        let docker = meshsim::runtime::docker::connect().await.unwrap();
        let container = docker
            .create_container(
                None::<CreateContainerOptions>,
                ContainerCreateBody {
                    image: Some(BASE_IMAGE.to_owned()),
                    cmd: Some(vec!["/bin/true".to_owned()]),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("a container of {BASE_IMAGE} (cargo xtask images): {e}"));
        let mut tar = Command::new("tar")
            .args(["-x", "--numeric-owner", "-C"])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .expect("tar");
        let mut stdin = tar.stdin.take().unwrap();
        let mut export = docker.export_container(&container.id);
        while let Some(chunk) = export.next().await {
            stdin.write_all(&chunk.expect("the export")).unwrap();
        }
        drop(stdin);
        assert!(tar.wait().unwrap().success(), "unpacking the export");
        docker
            .remove_container(&container.id, None::<RemoveContainerOptions>)
            .await
            .unwrap();
        let mut root = DebianRoot {
            dir,
            mounts: Vec::new(),
        };
        root.mount(Some("proc"), "proc", Some("proc"), MsFlags::empty());
        root.mount(Some("sysfs"), "sys", Some("sysfs"), MsFlags::empty());
        root.mount(
            Some("/dev"),
            "dev",
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
        );
        root.mount(Some("tmpfs"), "run", Some("tmpfs"), MsFlags::empty());
        root.mount(Some("tmpfs"), "tmp", Some("tmpfs"), MsFlags::empty());
        root
    }

    fn mount(&mut self, source: Option<&str>, at: &str, fstype: Option<&str>, flags: MsFlags) {
        let target = self.dir.path().join(at);
        std::fs::create_dir_all(&target).unwrap();
        mount(source, &target, fstype, flags, None::<&str>)
            .unwrap_or_else(|e| panic!("mounting {at} in the root: {e}"));
        self.mounts.push(target);
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `chroot ROOT ARGS`.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("chroot");
        c.arg(self.path()).args(args);
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/root");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("chroot");
        assert!(
            out.status.success(),
            "{args:?} in the Debian root failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for DebianRoot {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = umount2(m, MntFlags::MNT_DETACH);
        }
    }
}

const TWO_NODES: &str = r#"
[[nodes]]
name = "n1"
x = 100
y = 100

[[nodes]]
name = "n2"
x = 200
y = 100
"#;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, Docker and the package: run with cargo xtask test"]
async fn the_package_installs_and_runs_in_a_clean_debian_root() {
    let deb = std::env::var_os("MESHSIM_DEB").map(PathBuf::from).expect(
        "MESHSIM_DEB names the .deb to test: cargo xtask test builds it (cargo xtask package)",
    );
    assert!(deb.is_file(), "{} does not exist", deb.display());
    let _lock = run_lock().await;
    let _dockerd = Dockerd::ensure().await;
    let root = DebianRoot::new().await;
    assert!(
        !root.path().join("usr/bin/meshsim").exists(),
        "the root starts without meshsim"
    );

    std::fs::copy(&deb, root.path().join("tmp/meshsim.deb")).unwrap();
    root.run(&["dpkg", "-i", "/tmp/meshsim.deb"]);

    let version = String::from_utf8(root.run(&["meshsim", "--version"]).stdout).unwrap();
    println!("in the root: {}", version.trim());
    assert!(
        version.starts_with("meshsim 0.1.0 (commit ") && version.contains("Synapse 1.163.2"),
        "{version}"
    );

    let check = root.command(&["meshsim", "check"]).output().unwrap();
    let check_text = String::from_utf8_lossy(&check.stdout);
    println!("{check_text}");
    for want in [
        "/usr/bin/meshsim",
        "/usr/share/man/man1/meshsim.1",
        "/usr/share/bash-completion/completions/meshsim",
        "/usr/share/doc/meshsim/examples",
    ] {
        assert!(check_text.contains(want), "check does not name {want}");
    }
    assert!(
        root.path()
            .join("usr/share/man/man1/meshsim-up.1.gz")
            .is_file(),
        "a man page per command"
    );

    // Two nodes, served on a port of the host's: the root shares its network.
    std::fs::write(root.path().join("tmp/two.toml"), TWO_NODES).unwrap();
    let port = meshsim_tests::browser::free_port();
    let listen = format!("127.0.0.1:{port}");
    let log = target_dir().join("package-up.log");
    let mut up = Running::start(
        "meshsim up (in the Debian root)",
        &mut root.command(&["meshsim", "up", "/tmp/two.toml", "--listen", &listen]),
        &log,
        Duration::from_secs(30),
    );
    let http = reqwest::Client::new();
    let state: Value = eventually(
        "two nodes and their link",
        Duration::from_secs(60),
        async || {
            up.assert_alive(&log);
            let s: Value = http
                .get(format!("http://{listen}/api/state"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (s["nodes"].as_array()?.len() == 2 && s["links"].as_array()?.len() == 1).then_some(s)
        },
    )
    .await;
    assert_eq!(state["nodes"][0]["name"], "n1");
    let status = up.terminate();
    assert!(
        status.success(),
        "meshsim up ends cleanly on SIGTERM: {status}; see {}",
        log.display()
    );
    assert_nothing_left().await;
}

/// Every file under `dir`, relative to it, sorted (directories end with `/`).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            if path.is_dir() {
                out.push(format!("{rel}/"));
                stack.push(path);
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

fn xtask(args: &[&str]) -> Output {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&workspace)
        .arg("xtask")
        .args(args)
        .output()
        .expect("cargo xtask");
    assert!(
        out.status.success(),
        "cargo xtask {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn install_then_uninstall_leaves_the_prefix_as_it_was() {
    let prefix = TempDir::new("prefix");
    // Someone else's files where meshsim's go: kept, never overwritten.
    let man = prefix.path().join("share/man/man1");
    std::fs::create_dir_all(&man).unwrap();
    std::fs::write(man.join("other.1"), "not ours").unwrap();
    let before = tree(prefix.path());
    let p = prefix.path().to_str().unwrap();

    xtask(&["install", "--prefix", p]);
    let installed = tree(prefix.path());
    for want in [
        "bin/meshsim",
        "share/man/man1/meshsim.1",
        "share/man/man1/meshsim-up.1",
        "share/bash-completion/completions/meshsim",
        "share/zsh/site-functions/_meshsim",
        "share/fish/vendor_completions.d/meshsim.fish",
        "share/doc/meshsim/examples/mesh6.toml",
        "share/meshsim/installed-files",
    ] {
        assert!(
            installed.iter().any(|f| f == want),
            "{want} not installed: {installed:#?}"
        );
    }
    let version = Command::new(prefix.path().join("bin/meshsim"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("(commit "));
    // Installing again over our own files is fine.
    xtask(&["install", "--prefix", p]);

    xtask(&["uninstall", "--prefix", p]);
    assert_eq!(
        tree(prefix.path()),
        before,
        "uninstall removes exactly what install made"
    );
}
