//! For the fault rounds (meshsim killed at random moments): a seeded generator of moments,
//! `meshsim down --prefix`, and the check that nothing of a run is left on the host.

use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use meshsim::{
    net::{NETNS_DIR, NetNs, PROBE_PREFIX, scratch_owner},
    runtime::{lock, names::RunPrefix, process::pid_alive},
    workload::host::NODE_UID_BASE,
};

use crate::{leftovers_of, meshsim_bin, pgrep};

/// Moments drawn from a seed (splitmix64): `MESHSIM_FAULT_SEED` if set, else the clock's.
pub struct Moments {
    pub seed: u64,
    state: u64,
}

impl Moments {
    pub fn from_env() -> Moments {
        let seed = std::env::var("MESHSIM_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        Moments { seed, state: seed }
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// `meshsim down --prefix PREFIX`, which must succeed; returns what it said.
pub fn down(prefix: &str) -> String {
    let out = Command::new(meshsim_bin())
        .args(["down", "--prefix", prefix])
        .output()
        .expect("run meshsim down");
    assert!(
        out.status.success(),
        "meshsim down --prefix {prefix} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `meshsim down --prefix` when dropped, so a failed round leaves nothing behind.
pub struct SweepPrefix(pub &'static str);

impl Drop for SweepPrefix {
    fn drop(&mut self) {
        let _ = Command::new(meshsim_bin())
            .args(["down", "--prefix", self.0])
            .output();
    }
}

/// Asserts that nothing of the run `prefix` is on the host, naming `round` in the message:
/// no namespace or link with its names (the qdiscs and tc programs of meshsim sit only on
/// those links, and meshsim pins nothing in bpffs: checked too); no probe namespace of a
/// dead meshsim; no process running `node_cmd`, and no process with a node's uid that is not
/// in another run's live namespace; no mount of its namespaces or under its directory; no
/// unix socket under its directory; no run, node or Postgres directory (its `logs` stay, for
/// the user to read); and its lock free.
pub fn assert_nothing_of(prefix: &str, node_cmd_pattern: &str, round: &str) {
    let run: RunPrefix = prefix.parse().expect("a run prefix");
    let names = run.names();
    assert_eq!(
        leftovers_of(&names),
        Vec::<String>::new(),
        "{round}: namespaces or links left"
    );
    let dead_probes: Vec<String> = NetNs::list_with_prefix(PROBE_PREFIX)
        .unwrap()
        .into_iter()
        .filter(|n| scratch_owner(n).is_some_and(|pid| !pid_alive(pid)))
        .collect();
    assert_eq!(
        dead_probes,
        Vec::<String>::new(),
        "{round}: probe namespaces left"
    );
    let pinned: Vec<String> = std::fs::read_dir("/sys/fs/bpf")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.contains("meshsim") || n.starts_with(&names))
        .collect();
    assert_eq!(pinned, Vec::<String>::new(), "{round}: pinned in bpffs");

    let commands = pgrep(&["-f", node_cmd_pattern]);
    assert_eq!(commands, Vec::<u32>::new(), "{round}: node commands left");
    let orphans = orphaned_node_processes();
    assert!(
        orphans.is_empty(),
        "{round}: node processes left: {orphans:#?}"
    );

    let tmp = run.tmp_dir();
    let tmp_str = tmp.display().to_string();
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!("{NETNS_DIR}/{names}")) || l.contains(&tmp_str))
        .map(str::to_owned)
        .collect();
    assert_eq!(mounts, Vec::<String>::new(), "{round}: mounts left");
    let sockets: Vec<String> = std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&tmp_str))
        .map(str::to_owned)
        .collect();
    assert_eq!(sockets, Vec::<String>::new(), "{round}: unix sockets left");
    for dir in [run.run_dir(), run.node_dirs(), run.postgres_dir()] {
        assert!(!dir.exists(), "{round}: {} left", dir.display());
    }
    let others: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.ends_with("logs"))
        .collect();
    assert_eq!(
        others,
        Vec::<PathBuf>::new(),
        "{round}: files left in {tmp_str}"
    );
    let beside: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        // `meshsim-fltm` is the tmp directory of another prefix, `fltm`.
        .filter(|n| {
            n.strip_prefix(&format!("meshsim-{prefix}"))
                .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_alphanumeric()))
                && Path::new("/tmp").join(n) != tmp
        })
        .collect();
    assert_eq!(beside, Vec::<String>::new(), "{round}: paths left in /tmp");
    assert!(
        lock::acquire(&run).is_ok(),
        "{round}: the run lock is still held"
    );
}

/// Processes with a node's uid (`2,000,000,000 + K`) that are not inside a namespace another
/// run still has: what a run left running. (Node uids are the same for every run, so a
/// process in a live node of another run, a test beside this one, is not counted.)
fn orphaned_node_processes() -> Vec<String> {
    let live: HashSet<(u64, u64)> = std::fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(format!("/proc/{pid}")) else {
            continue;
        };
        if !(NODE_UID_BASE..NODE_UID_BASE + 65_536).contains(&meta.uid()) || !pid_alive(pid) {
            continue;
        }
        let in_live = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|ns| live.contains(&(ns.dev(), ns.ino())));
        if !in_live {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            found.push(format!(
                "{pid} (uid {}): {}",
                meta.uid(),
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}
