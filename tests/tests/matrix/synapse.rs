//! Real homeservers on the netns backend: three Synapse nodes in a line, n1 - n2 - n3, and a
//! real Matrix client (matrix-nio, from PyPI) that is not ours. A user on n1 makes a room and
//! invites a user on n3, who joins; a message from n1 arrives on n3; the counters show the
//! federation going n1 -> n2 -> n3 and back, and nothing straight between n1 and n3.
//!
//! Needs root, Python 3 with venv, and PyPI the first time (Synapse and matrix-nio are
//! installed into cached venvs, ~30 s; later runs reuse them). `cargo xtask test` runs it.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use meshsim::{
    model::{Model, NodeId, Topology},
    runtime::process::ProcStat,
    workload::{SynapseOptions, WorkloadKind, synapse::Launch},
};
use meshsim_tests::{
    Sweep, assert_carried, assert_runs_as_node,
    fixtures::{check_line, examples_dir, line, square},
    growth, id, leftovers,
    matrix::Nio,
    mesh::{MeshConfig, MeshLab},
    meshsim_bin, pgrep, spawn_meshsim, wait_for_line,
};

/// A node that returns gets this long to receive what was sent while it was away.
const RETURN_TIMEOUT: Duration = Duration::from_secs(180);

/// A lab of Synapse nodes on the netns backend, with fq where the kernel has it.
async fn start(options: &SynapseOptions, topology: &Topology) -> MeshLab {
    MeshLab::start(MeshConfig {
        workload: WorkloadKind::Synapse(options.clone()),
        settings: topology.settings.clone(),
        fq_if_available: true,
        log_dir: std::env::temp_dir().join("meshsim-synapse-test-logs"),
        ..MeshConfig::default()
    })
    .await
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// The parent of `pid`, or 0 when it is gone.
fn parent_of(pid: u32) -> u32 {
    ProcStat::of(pid).map_or(0, |s| s.parent)
}

/// The network namespace `pid` is in, as `net:[inode]`.
fn netns_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// What a node's Synapse sees as /etc/hosts: its own mount namespace, through /proc.
fn hosts_seen_by(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/root/etc/hosts")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and Synapse: run with cargo xtask test"]
async fn a_message_crosses_two_hops_between_synapse_nodes() {
    let (n1, n2, n3) = (id("n1"), id("n2"), id("n3"));
    let topology = line();
    check_line(&topology);

    // The installs, before the clock starts (cached after the first run).
    let options = SynapseOptions::default();
    let nio = Nio::prepare(&options, true).await;
    let mut mesh = start(&options, &topology).await;
    let fq = mesh.fq;
    let up = Instant::now();
    mesh.sim.load(topology, None).await.unwrap();
    let status = mesh.ready(3, options.start_timeout).await;
    let all_ready = up.elapsed();
    let all_answer = status
        .values()
        .map(|s| s.spawned + s.answered_after.unwrap())
        .max()
        .unwrap()
        - up;
    println!(
        "3 Synapse nodes: all answer /_matrix/federation/v1/version {:.1} s after the load, \
         all with their test user {:.1} s after (delays {})",
        all_answer.as_secs_f64(),
        all_ready.as_secs_f64(),
        if fq {
            "enforced"
        } else {
            "NOT enforced: this kernel has no sch_fq"
        }
    );
    // By default every homeserver is forked from the run's one zygote, and still lives in
    // its own node: its namespace, its hosts file (below), a process group of its own.
    let zygotes: std::collections::BTreeSet<u32> =
        status.values().map(|s| parent_of(s.pid.unwrap())).collect();
    assert_eq!(zygotes.len(), 1, "one zygote forks them all: {zygotes:?}");
    let zygote = *zygotes.first().unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{zygote}/cmdline")).unwrap();
    assert!(
        cmdline.contains("zygote.py"),
        "their parent is the zygote: {cmdline:?}"
    );
    for (node, s) in &status {
        let pid = s.pid.unwrap();
        println!(
            "  {node}: pid {pid} (forked by {zygote}), answered after {:.1} s, RSS {:.0} MiB",
            s.answered_after.unwrap().as_secs_f64(),
            rss_mib(pid)
        );
        let own = mesh.ns(*node).path().to_owned();
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&own).unwrap());
        assert_eq!(
            netns_of(pid),
            format!("net:[{inode}]"),
            "{node} runs in its namespace"
        );
        assert_eq!(
            nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32))).unwrap(),
            nix::unistd::Pid::from_raw(pid as i32),
            "{node}'s homeserver leads its process group"
        );
        // Forked by a zygote that runs as root, it dropped to its node's own user.
        assert_runs_as_node(pid, *node);
        let hosts = hosts_seen_by(pid);
        for other in [n1, n2, n3] {
            let line = format!("{}\t{}\n", mesh.ip(other), other.name());
            assert!(
                hosts.contains(&line),
                "{node} cannot resolve {other}: {hosts}"
            );
        }
    }
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert!(
        !host_hosts.contains("meshsim"),
        "the host's /etc/hosts must not change"
    );

    let before = mesh.sim.counters().await.unwrap();
    let conversation = Instant::now();
    let room = nio.step(&mesh, n1, "invite", "@meshsim:n3", "").await;
    assert!(room.starts_with('!'), "a room id: {room}");
    nio.step(&mesh, n3, "join", &room, "").await;
    let joined = conversation.elapsed();
    let body = format!("hello from n1 over n2 ({})", std::process::id());
    let sent = Instant::now();
    let event = nio.step(&mesh, n1, "send", &room, &body).await;
    assert!(event.starts_with('$'), "an event id: {event}");
    nio.step(&mesh, n3, "await", &room, &body).await;
    println!(
        "invite + join across n1 -> n2 -> n3: {:.1} s; the message reached n3 {:.1} s after \
         it was sent (each step is a new client process: ~1 s of Python start-up)",
        joined.as_secs_f64(),
        sent.elapsed().as_secs_f64()
    );

    let after = mesh.sim.counters().await.unwrap();
    assert_carried(&before, &after, &[(n1, n2), (n2, n3), (n3, n2), (n2, n1)]);
    assert!(
        !after.links.contains_key(&(n1, n3)) && !after.links.contains_key(&(n3, n1)),
        "n1 and n3 have no link"
    );

    // A new node is in everyone's hosts file at once, and gone with its node.
    let n4 = mesh.sim.add_node(5000.0, 5000.0).await.unwrap().id;
    let n1_pid = status[&n1].pid.unwrap();
    let n4_ip = mesh.ip(n4);
    assert!(
        hosts_seen_by(n1_pid).contains(&format!("{n4_ip}\t{}\n", n4.name())),
        "n1 does not see the new node"
    );
    let n4_pid = mesh.status.borrow()[&n4].pid.unwrap();
    mesh.sim.remove_node(n4).await.unwrap();
    assert!(!hosts_seen_by(n1_pid).contains(&n4_ip));
    assert!(
        !Path::new(&format!("/proc/{n4_pid}")).exists(),
        "n4's Synapse stops with its node"
    );

    mesh.stop().await;
    assert!(
        !options.run_dir.exists(),
        "the run directory is removed at the end"
    );
    assert!(
        !Path::new(&format!("/proc/{zygote}")).exists(),
        "the zygote stops with the run"
    );
}

/// Where `from` sends packets for `to`, as the Sim installed it.
async fn next_hop(mesh: &MeshLab, from: NodeId, to: NodeId) -> Option<NodeId> {
    mesh.sim
        .routes_of(from)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.dst == to)
        .map(|r| r.next_hop)
}

/// Sends `body` from `from`'s user into `room` and waits until `to`'s user has it; the time
/// from the send to the arrival (each step is a client process, ~1 s of Python start-up).
async fn converse(
    nio: &Nio,
    mesh: &MeshLab,
    room: &str,
    (from, to): (NodeId, NodeId),
    body: &str,
) -> Duration {
    let sent = Instant::now();
    let event = nio.step(mesh, from, "send", room, body).await;
    assert!(event.starts_with('$'), "an event id: {event}");
    let accepted = sent.elapsed();
    nio.step(mesh, to, "await", room, body).await;
    let took = sent.elapsed();
    println!(
        "  {body:?}: {from} took it after {:.1} s, {to} had it {:.1} s later",
        accepted.as_secs_f64(),
        (took - accepted).as_secs_f64()
    );
    took
}

/// Waits until a line of `log` contains every one of `needles`; how long that took.
async fn line_in_log(log: &Path, needles: &[&str], within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and Synapse: run with cargo xtask test"]
async fn a_conversation_outlives_a_relay_and_its_destination_leaving() {
    let (n1, n2, n3, n4) = (id("n1"), id("n2"), id("n3"), id("n4"));
    let topology = square();
    let model = Model::from_topology(&topology).unwrap();
    assert!(model.link(n1, n4).is_none(), "n1 and n4 must not be linked");
    assert!(model.link(n2, n3).is_none(), "n2 and n3 must not be linked");

    // Cold starts, each Synapse importing itself (`--launch cold`): the other tests fork.
    let options = SynapseOptions {
        launch: Launch::Cold,
        ..SynapseOptions::default()
    };
    let nio = Nio::prepare(&options, true).await;
    let mut mesh = start(&options, &topology).await;
    let up = Instant::now();
    mesh.sim.load(topology, None).await.unwrap();
    let status = mesh.ready(4, options.start_timeout).await;
    println!(
        "4 Synapse nodes ready with their users {:.1} s after the load (cold starts)",
        up.elapsed().as_secs_f64()
    );
    for (node, s) in &status {
        assert_eq!(
            parent_of(s.pid.unwrap()),
            std::process::id(),
            "{node}'s cold homeserver is meshsim's own child"
        );
        assert_runs_as_node(s.pid.unwrap(), *node);
    }
    assert_eq!(next_hop(&mesh, n1, n4).await, Some(n2));
    assert_eq!(next_hop(&mesh, n4, n1).await, Some(n2));

    let room = nio.step(&mesh, n1, "invite", "@meshsim:n4", "").await;
    assert!(room.starts_with('!'), "a room id: {room}");
    nio.step(&mesh, n4, "join", &room, "").await;
    let took = converse(&nio, &mesh, &room, (n1, n4), "over n2").await;
    println!("n1 -> n4 over n2: {:.1} s", took.as_secs_f64());

    // The relay leaves: the route heals over n3 and the conversation goes on there.
    let n2_doc = mesh.node_doc(n2).await;
    mesh.sim.remove_node(n2).await.unwrap();
    assert_eq!(next_hop(&mesh, n1, n4).await, Some(n3));
    assert_eq!(next_hop(&mesh, n4, n1).await, Some(n3));
    let before = mesh.sim.counters().await.unwrap();
    let took = converse(&nio, &mesh, &room, (n1, n4), "over n3, n2 gone").await;
    let after = mesh.sim.counters().await.unwrap();
    let grew = growth(&before, &after);
    println!(
        "n2 removed, n1 -> n4 over n3: {:.1} s; packets per link: {grew:?}",
        took.as_secs_f64()
    );
    for hop in [(n1, n3), (n3, n4), (n4, n3), (n3, n1)] {
        assert!(
            grew.contains_key(&hop),
            "no federation traffic on {hop:?}: {grew:?}"
        );
    }
    assert!(
        !after.links.keys().any(|(a, b)| *a == n2 || *b == n2),
        "n2's links left with it: {grew:?}"
    );
    assert_eq!(
        after.global.unlinked_packets, before.global.unlinked_packets,
        "a frame went straight between unlinked nodes"
    );

    // The relay comes back under its name (itself again, never in the room): the route
    // returns to it and so does the conversation.
    let back = Instant::now();
    mesh.add_back(&n2_doc).await;
    let status = mesh.ready(4, options.start_timeout).await;
    println!("n2 back and ready in {:.1} s", back.elapsed().as_secs_f64());
    // Its directory, written by its first self, is handed to whoever it is now.
    for (node, s) in &status {
        assert_runs_as_node(s.pid.unwrap(), *node);
    }
    assert_eq!(next_hop(&mesh, n1, n4).await, Some(n2));
    assert_eq!(next_hop(&mesh, n4, n1).await, Some(n2));
    let before = mesh.sim.counters().await.unwrap();
    let took = converse(&nio, &mesh, &room, (n1, n4), "over n2 again").await;
    let grew = growth(&before, &mesh.sim.counters().await.unwrap());
    println!(
        "n1 -> n4 over n2 again: {:.1} s; packets per link: {grew:?}",
        took.as_secs_f64()
    );
    for hop in [(n1, n2), (n2, n4), (n4, n2), (n2, n1)] {
        assert!(
            grew.contains_key(&hop),
            "no federation traffic on {hop:?}: {grew:?}"
        );
    }

    // The destination itself leaves mid-conversation; n1 takes a message while it is gone.
    let n4_doc = mesh.node_doc(n4).await;
    let n4_dir = options.run_dir.join(n4.name());
    let n4_key = std::fs::read_to_string(n4_dir.join("signing.key")).unwrap();
    let old_n4_pid = mesh.status.borrow()[&n4].pid.unwrap();
    mesh.sim.remove_node(n4).await.unwrap();
    assert_eq!(next_hop(&mesh, n1, n4).await, None);
    assert!(!Path::new(&format!("/proc/{old_n4_pid}")).exists());
    assert!(
        n4_dir.join("homeserver.db").exists(),
        "n4's directory stays for the run"
    );
    let away = "sent while n4 was away";
    let event = nio.step(&mesh, n1, "send", &room, away).await;
    assert!(event.starts_with('$'), "n1 takes the message: {event}");
    // Long enough for n1 to try n4 and back off at least once.
    tokio::time::sleep(Duration::from_secs(10)).await;

    // n4 comes back as itself: the same directory, so the same database and signing key.
    let back = Instant::now();
    mesh.add_back(&n4_doc).await;
    mesh.ready(4, options.start_timeout).await;
    let ready_after = back.elapsed();
    assert_eq!(
        std::fs::read_to_string(n4_dir.join("signing.key")).unwrap(),
        n4_key,
        "n4 returns with its signing key"
    );
    let log = mesh.status.borrow()[&n4].log.clone();

    // n1 retries on its own (backoff 5 s doubling, at most 1 min; see homeserver_yaml), and
    // n4, which still knows the room, takes the message.
    let ready = Instant::now();
    let (transaction, delivered) = tokio::join!(
        line_in_log(
            &log,
            &["{n1} Processed request", "PUT /_matrix/federation/v1/send/"],
            RETURN_TIMEOUT,
        ),
        async {
            let got = nio
                .try_step(&mesh, n4, "await", &room, away, RETURN_TIMEOUT)
                .await;
            (got, ready.elapsed())
        }
    );
    let (delivered, delivered_after) = delivered;
    if let Err(why) = delivered {
        panic!(
            "the message sent while n4 was away did not reach n4's user within {} s of its \
             return: {why}; see {}",
            RETURN_TIMEOUT.as_secs(),
            log.display()
        );
    }
    println!(
        "n4 back and ready {:.1} s after the load; n1's first transaction reached it {} after \
         that; n4's user had the message sent while it was away {:.1} s after it was ready",
        ready_after.as_secs_f64(),
        transaction.map_or("(not seen in its log)".to_owned(), |t| format!(
            "{:.1} s",
            t.as_secs_f64()
        )),
        delivered_after.as_secs_f64()
    );

    // And the conversation goes on, both ways.
    let took = converse(&nio, &mesh, &room, (n1, n4), "after n4's return").await;
    println!("n1 -> n4 after n4's return: {:.1} s", took.as_secs_f64());
    let took = converse(&nio, &mesh, &room, (n4, n1), "n4 is back").await;
    println!("n4 -> n1 after n4's return: {:.1} s", took.as_secs_f64());

    mesh.stop().await;
    assert!(
        !options.run_dir.exists(),
        "the run directory is removed at the end"
    );
}

#[test]
#[ignore = "needs root and Synapse: run with cargo xtask test"]
fn a_killed_meshsim_takes_its_zygote_and_every_forked_homeserver_with_it() {
    let _sweep = Sweep;
    let file = examples_dir().join("mesh6.toml");
    let (mut meshsim, lines) =
        spawn_meshsim(&["up", file.to_str().unwrap(), "--workload", "synapse"]);
    for _ in 0..6 {
        wait_for_line(&lines, "is ready");
    }
    // A forked homeserver keeps the zygote's command line; its name says which node it is.
    let processes = pgrep(&["-f", "run/zygote.py"]);
    let (forked, zygotes): (Vec<u32>, Vec<u32>) = processes
        .iter()
        .partition(|&&p| processes.contains(&parent_of(p)));
    assert_eq!(zygotes.len(), 1, "one zygote: {processes:?}");
    assert_eq!(forked.len(), 6, "six homeservers forked: {processes:?}");
    let mut names: Vec<String> = forked
        .iter()
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        (1..=6).map(|i| format!("synapse n{i}")).collect::<Vec<_>>()
    );

    meshsim.kill_9();
    // The kernel ends them: the zygote's parent-death signal, then each child's.
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = || {
        zygotes
            .iter()
            .chain(&forked)
            .filter(|p| Path::new(&format!("/proc/{p}/stat")).exists())
            .copied()
            .collect::<Vec<u32>>()
    };
    while !alive().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(alive(), Vec::<u32>::new(), "outlived a kill -9 of meshsim");
    let out = std::process::Command::new(meshsim_bin())
        .arg("down")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(leftovers(), Vec::<String>::new());
    assert!(
        !SynapseOptions::default().run_dir.exists(),
        "down removes the run directory"
    );
}

/// The zygote's `keep_code_unspecialised` (what `--ksm` asks of it), run in the Synapse
/// venv's own Python: a function that existed when it ran is still unspecialised after 100
/// calls, while one compiled afterwards is specialised within them, as 3.11 does; and the
/// count it answers covers the code it found.
#[tokio::test]
#[ignore = "needs the Synapse venv (PyPI the first time); cargo xtask test runs it"]
async fn the_zygote_keeps_the_code_it_has_unspecialised_and_no_other() {
    let options = SynapseOptions::default();
    let venv = tokio::task::spawn_blocking(move || options.prepare(&mut |_| {}))
        .await
        .unwrap()
        .expect("the Synapse venv");
    let zygote = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../meshsim/src/workload/synapse/zygote.py")
        .canonicalize()
        .unwrap();
    let script = format!(
        r#"
import dis, importlib.util, sys
spec = importlib.util.spec_from_file_location("zygote", {zygote:?})
zygote = importlib.util.module_from_spec(spec)
spec.loader.exec_module(zygote)

def specialised(f):
    return sorted({{i.opname for i in dis.get_instructions(f, adaptive=True)}}
                  - {{i.opname for i in dis.get_instructions(f)}})

def before(xs):
    return sum(x.real for x in xs) + len(xs)

kept = zygote.keep_code_unspecialised()

# Compiled only now (this script's own functions were compiled with it, before the call).
namespace = {{}}
exec("def after(xs):\n    return sum(x.real for x in xs) + len(xs)\n", namespace)
after = namespace["after"]

for _ in range(100):
    before([1, 2, 3])
    after([1, 2, 3])
import json
print(json.dumps({{"version": list(sys.version_info[:2]), "kept": kept,
                  "before": specialised(before), "after": specialised(after)}}))
"#
    );
    let out = std::process::Command::new(venv.python_bin())
        .args(["-c", &script])
        .output()
        .expect("run the venv's python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).expect("a JSON line");
    if answer["version"] != serde_json::json!([3, 11]) {
        // Another Python's code objects differ: it must do nothing, and say why.
        let why = answer["kept"].as_str().unwrap_or_default();
        assert!(why.contains("3.11"), "it says why it did nothing: {answer}");
        eprintln!("this venv's Python is not 3.11: {why}");
        return;
    }
    let kept = answer["kept"].as_u64().expect("a count");
    // Every function of the modules the interpreter imported at start, and of zygote.py.
    assert!(kept > 100, "it found the code there was: {answer}");
    assert_eq!(
        answer["before"],
        serde_json::json!([]),
        "kept code runs unspecialised: {answer}"
    );
    assert_ne!(
        answer["after"],
        serde_json::json!([]),
        "later code is specialised as usual: {answer}"
    );
}
