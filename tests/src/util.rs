//! Small helpers the tiers share.

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use meshsim::{model::NodeId, runtime::names::PREFIX, sim::Counters};

/// Polls `probe` until it gives a value, or fails naming `what` after `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A directory of the test's own, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("meshsim-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `n3` as a [`NodeId`].
pub fn id(name: &str) -> NodeId {
    name.parse().expect("a node name")
}

/// Packets each directed link carried between two readings, for links that carried any.
pub fn growth(before: &Counters, after: &Counters) -> BTreeMap<(NodeId, NodeId), u64> {
    after
        .links
        .iter()
        .map(|(k, c)| (*k, c.packets - before.links.get(k).map_or(0, |b| b.packets)))
        .filter(|(_, grew)| *grew > 0)
        .collect()
}

/// Asserts that every directed link in `hops` carried traffic between the two readings, and
/// that no frame went straight between nodes that are not linked; prints what each link
/// carried.
#[track_caller]
pub fn assert_carried(before: &Counters, after: &Counters, hops: &[(NodeId, NodeId)]) {
    let grew = growth(before, after);
    println!("packets per link: {grew:?}");
    for hop in hops {
        assert!(grew.contains_key(hop), "no traffic on {hop:?}: {grew:?}");
    }
    assert_eq!(
        after.global.unlinked_packets, before.global.unlinked_packets,
        "a frame went straight between unlinked nodes"
    );
}

/// The command lines of every process in node `name`'s network namespace (`ms-<name>`),
/// read from /proc.
pub fn processes_in(name: &str) -> Vec<String> {
    let ns = std::fs::metadata(format!("/run/netns/{PREFIX}{name}")).expect("the node's namespace");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let net = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
            ((net.dev(), net.ino()) == (ns.dev(), ns.ino())).then(|| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            })
        })
        .collect()
}

/// The `n`th directory above the test binary, which lives in `target/<profile>/deps/`.
fn above_the_binary(n: usize) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(n)
        .expect("test binaries live in target/<profile>/deps/")
        .to_path_buf()
}

/// `target/`, where tests leave what a person may want to look at (screenshots, logs).
pub fn target_dir() -> PathBuf {
    above_the_binary(3)
}

/// The `meshsim` binary of this build (`cargo xtask test` builds it before the tests).
pub fn meshsim_bin() -> PathBuf {
    let bin = above_the_binary(2).join("meshsim");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p meshsim` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// Namespaces and links of meshsim's (the default run's `ms-` names) that exist now.
pub fn leftovers() -> Vec<String> {
    leftovers_of(meshsim::runtime::names::PREFIX)
}

/// Namespaces and links whose names begin with `prefix` (`exp2-`) that exist now.
pub fn leftovers_of(prefix: &str) -> Vec<String> {
    let mut found = meshsim::net::NetNs::list_with_prefix(prefix).unwrap();
    let links = std::fs::read_dir("/sys/class/net").unwrap();
    found.extend(
        links
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix)),
    );
    found
}

/// Runs `meshsim down` when dropped, so a failed test leaves nothing for the next one.
pub struct Sweep;

impl Drop for Sweep {
    fn drop(&mut self) {
        let _ = std::process::Command::new(meshsim_bin())
            .arg("down")
            .output();
    }
}

/// The pids `pgrep ARGS` finds (`["-f", "sleep 600"]`, say).
pub fn pgrep(args: &[&str]) -> Vec<u32> {
    let out = std::process::Command::new("pgrep")
        .args(args)
        .output()
        .expect("pgrep runs (procps)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Asserts that `pid` runs as node `node`'s own unprivileged user (the confinement of
/// `meshsim::workload::host`): every uid the node's, the nodes' group, no supplementary
/// groups, no capability left, no new privileges (so none to gain: the bounding set is left
/// as it is, see `runtime::confine`).
pub fn assert_runs_as_node(pid: u32, node: NodeId) {
    use meshsim::workload::host::{NODE_GID, node_uid};
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let field = |name: &str| -> &str {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .trim()
    };
    let ids = |name: &str| -> Vec<u32> {
        field(name)
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let uid = node_uid(node);
    assert_eq!(ids("Uid"), [uid; 4], "{node}'s process {pid}: its uids");
    assert_eq!(
        ids("Gid"),
        [NODE_GID; 4],
        "{node}'s process {pid}: its gids"
    );
    assert_eq!(
        field("Groups"),
        "",
        "{node}'s process {pid}: no other groups"
    );
    for caps in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(
            u64::from_str_radix(field(caps), 16).unwrap(),
            0,
            "{node}'s process {pid}: {caps}"
        );
    }
    assert_eq!(field("NoNewPrivs"), "1", "{node}'s process {pid}");
}
