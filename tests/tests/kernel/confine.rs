//! A node's command runs as the node's own unprivileged user, confined to its directory
//! (`runtime::confine`), unless the run asks for root (`--node-cmd-as-root`). A probe in
//! each node tries what a confined process must not do and says what happened; the
//! assertions are here.
//!
//! These need root and use the real names (`ms-*`), so they take meshsim's run lock.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    time::{Duration, Instant},
};

use meshsim::{
    model::NodeId,
    runtime::process::pid_alive,
    workload::{
        NodeCommand, WorkloadKind, WorkloadStatus,
        host::{NODE_GID, node_uid},
    },
};
use meshsim_tests::{
    TempDir,
    fixtures::line,
    id,
    mesh::{MeshConfig, MeshLab},
};

/// What the probe does, in Python (no single quote in it: it is one shell word). Each
/// line it prints is `key=value`; `done=1` last. It waits for the other node's namespace
/// before it tries to enter it and a little before it lists /proc, so that every node of the
/// line runs by then (nodes start one by one), and stays, so that its pid stays alive.
const PROBE: &str = r#"
import ctypes, errno, os, platform, struct, time
libc = ctypes.CDLL(None, use_errno=True)
def out(key, value):
    print(f"{key}={value}", flush=True)
def outcome(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def write(path):
    with open(path, "w") as f:
        f.write("probe")
def sys(number, *args):
    if libc.syscall(number, *args) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
def bpf_map():
    attr = ctypes.create_string_buffer(struct.pack("IIII", 2, 4, 4, 1), 128)
    sys({"x86_64": 321, "aarch64": 280}[platform.machine()], 0, attr, 128)
def enter(other):
    path = f"/run/netns/ms-{other}"
    for _ in range(100):
        if os.path.exists(path):
            break
        time.sleep(0.1)
    fd = os.open(path, os.O_RDONLY)
    sys({"x86_64": 308, "aarch64": 268}[platform.machine()], fd, 0x40000000)
out("uid", os.getuid())
out("gid", os.getgid())
out("groups", ",".join(map(str, os.getgroups())))
out("pid", os.getpid())
out("ppid", os.getppid())
out("cwd", os.getcwd())
out("write_etc", outcome(lambda: write("/etc/meshsim-probe")))
out("write_var_tmp", outcome(lambda: write("/var/tmp/meshsim-probe")))
out("write_dir", outcome(lambda: write("probe")))
out("write_tmp", outcome(lambda: write("/tmp/meshsim-probe")))
out("host_tmp_seen", os.path.exists("/tmp/meshsim/logs"))
out("bpf", outcome(bpf_map))
out("setns", outcome(lambda: enter("n3" if os.getcwd().endswith("/n1") else "n1")))
out("kill_ppid", outcome(lambda: os.kill(os.getppid(), 0)))
time.sleep(2)
out("visible", ",".join(sorted(d for d in os.listdir("/proc") if d.isdigit())))
out("done", 1)
time.sleep(600)
"#;

/// The probe's lines in `log`, once it printed them all.
fn probe_says(log: &Path, within: Duration) -> HashMap<String, String> {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|l| l == "done=1") {
            return text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "the probe did not finish within {within:?}; {}:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn run_probe(as_root: bool, logs: &TempDir) -> (MeshLab, WorkloadStatus) {
    let command = NodeCommand {
        template: format!("exec python3 -c '{PROBE}'"),
        as_root,
    };
    let mut mesh = MeshLab::start(MeshConfig {
        workload: WorkloadKind::Command(command),
        log_dir: logs.0.clone(),
        ..MeshConfig::default()
    })
    .await;
    mesh.sim.load(line(), None).await.unwrap();
    let status = mesh.ready(3, Duration::from_secs(10)).await;
    (mesh, status)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn a_node_command_runs_unprivileged_and_confined_to_its_directory() {
    let logs = TempDir::new("confine-logs");
    let (mesh, status) = run_probe(false, &logs).await;
    let says: BTreeMap<NodeId, HashMap<String, String>> = [id("n1"), id("n2"), id("n3")]
        .into_iter()
        .map(|n| {
            (
                n,
                probe_says(&logs.0.join(format!("{n}.log")), Duration::from_secs(20)),
            )
        })
        .collect();
    let meshsim = std::process::id().to_string();
    for (node, s) in &says {
        let say = |key: &str| s[key].as_str();
        // Its own user, in the nodes' group and no other.
        assert_eq!(say("uid"), node_uid(*node).to_string(), "{node}: {s:?}");
        assert_eq!(say("gid"), NODE_GID.to_string(), "{node}");
        assert_eq!(say("groups"), "", "{node}: no supplementary group");
        assert_eq!(say("pid"), status[node].pid.unwrap().to_string(), "{node}");
        // It writes its directory (where it starts) and its own /tmp, nothing else.
        assert_eq!(say("cwd"), format!("/tmp/meshsim/nodes/{node}"), "{node}");
        assert_eq!(say("write_dir"), "ok", "{node}");
        assert_eq!(say("write_tmp"), "ok", "{node}");
        assert_eq!(say("write_etc"), "EROFS", "{node}");
        assert_eq!(say("write_var_tmp"), "EROFS", "{node}");
        assert_eq!(say("host_tmp_seen"), "False", "{node}: the host's /tmp");
        assert!(
            Path::new(&format!("/tmp/meshsim/nodes/{node}/probe")).is_file(),
            "{node}'s file is in its directory on the host"
        );
        assert!(
            !Path::new("/tmp/meshsim-probe").exists(),
            "{node}'s /tmp is its own"
        );
        // No BPF, no other node's namespace.
        assert_eq!(say("bpf"), "EPERM", "{node}");
        assert_eq!(say("setns"), "EPERM", "{node}");
        // meshsim (its parent, here this test) it can neither see nor signal.
        assert_eq!(say("ppid"), meshsim, "{node}'s parent is meshsim");
        assert_eq!(say("kill_ppid"), "EPERM", "{node}");
        // Nor any other node's process, though they run: only its own.
        assert_eq!(say("visible"), say("pid"), "{node} sees only itself");
    }
    for node in says.keys() {
        assert!(pid_alive(status[node].pid.unwrap()), "{node}'s probe runs");
    }
    mesh.stop().await;
    assert!(
        !Path::new("/tmp/meshsim/nodes").exists(),
        "the nodes' directories go with the run"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn a_node_command_asked_to_run_as_root_is_root() {
    let logs = TempDir::new("confine-root-logs");
    let (mesh, _status) = run_probe(true, &logs).await;
    let s = probe_says(&logs.0.join("n1.log"), Duration::from_secs(20));
    assert_eq!(s["uid"], "0", "{s:?}");
    assert_eq!(s["kill_ppid"], "ok", "root signals whom it likes");
    assert_eq!(s["bpf"], "ok", "root may load BPF");
    assert!(
        s["visible"]
            .split(',')
            .any(|p| p == std::process::id().to_string()),
        "root sees meshsim"
    );
    mesh.stop().await;
    // As root it wrote where it started (meshsim's directory) and where it liked.
    let _ = std::fs::remove_file(std::env::current_dir().unwrap().join("probe"));
    let _ = std::fs::remove_file("/etc/meshsim-probe");
    let _ = std::fs::remove_file("/var/tmp/meshsim-probe");
    let _ = std::fs::remove_file("/tmp/meshsim-probe");
}
