//! Homeservers on Postgres (`--database postgres`): one cluster per run on a unix socket in
//! the run's directory, a database per node. A real client's conversation n1 -> n2 -> n3 ends
//! up in n1's and n3's own databases (and not n2's, which is not in the room); a removed
//! node's database stays for the run; the cluster goes with the run, and `meshsim down`
//! removes it after `kill -9`. Each node connects as its own role with its own password, to
//! its own database only; a node's user cannot connect as the superuser.

use std::{os::unix::process::CommandExt as _, path::Path, time::Instant};

use meshsim::{
    runtime::process::{ProcStat, all_pids, pid_alive},
    workload::{
        SynapseOptions, WorkloadKind,
        host::{NODE_GID, node_uid},
        synapse::Database,
    },
};
use meshsim_tests::{
    Sweep, assert_carried, assert_runs_as_node,
    fixtures::{check_line, examples_dir, line},
    id,
    matrix::Nio,
    mesh::{MeshConfig, MeshLab},
    meshsim_bin, spawn_meshsim, wait_for_line,
};

/// The `m.room.message` bodies in node `name`'s database.
pub(crate) async fn messages_in(options: &SynapseOptions, name: &str) -> Vec<String> {
    let client = connect(options, name).await;
    client
        .query(
            "SELECT j.json FROM events e JOIN event_json j USING (event_id) \
             WHERE e.type = 'm.room.message'",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            let json: String = row.get(0);
            let event: serde_json::Value = serde_json::from_str(&json).unwrap();
            event["content"]["body"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

async fn connect(options: &SynapseOptions, dbname: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::Config::new()
        .host_path(&options.postgres_dir)
        .user("postgres")
        .dbname(dbname)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {dbname}'s database: {e}"));
    tokio::spawn(connection);
    client
}

/// The nodes' databases, each with its owner.
async fn databases(options: &SynapseOptions) -> Vec<(String, String)> {
    connect(options, "postgres")
        .await
        .query(
            "SELECT d.datname, r.rolname FROM pg_database d JOIN pg_roles r \
             ON r.oid = d.datdba WHERE r.rolname <> 'postgres' ORDER BY d.datname",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// The Postgres password in node `name`'s homeserver.yaml.
fn password_of(options: &SynapseOptions, name: &str) -> String {
    let config = options.run_dir.join(name).join("homeserver.yaml");
    let yaml = std::fs::read_to_string(&config).unwrap();
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix("password: \""))
        .and_then(|p| p.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no database password in {}", config.display()))
        .to_owned()
}

/// Connects to `dbname` as `user` with `password`, as root; the error if refused.
async fn connect_as(
    options: &SynapseOptions,
    user: &str,
    password: &str,
    dbname: &str,
) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host_path(&options.postgres_dir)
        .user(user)
        .password(password)
        .dbname(dbname)
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    client.simple_query("SELECT 1").await.map(drop)
}

/// `psql` run as node `node`'s user, connecting as the superuser: whether it got in, and
/// what it said.
fn psql_as_superuser_from(
    options: &SynapseOptions,
    node: meshsim::model::NodeId,
) -> (bool, String) {
    let out = std::process::Command::new("psql")
        .args(["-w", "-h"])
        .arg(&options.postgres_dir)
        .args(["-U", "postgres", "-d", "n1", "-c", "SELECT 1"])
        .uid(node_uid(node))
        .gid(NODE_GID)
        .output()
        .expect("psql (Debian's postgresql-client)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The pid in the cluster's `postmaster.pid`, if there is one.
fn postmaster(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("data/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| ProcStat::of(p).is_some_and(|s| s.parent == pid))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, Postgres and Synapse: run with cargo xtask test"]
async fn a_conversation_over_postgres_is_in_each_servers_own_database() {
    let (n1, n2, n3) = (id("n1"), id("n2"), id("n3"));
    let topology = line();
    check_line(&topology);
    let options = SynapseOptions {
        database: Database::Postgres,
        ..SynapseOptions::default()
    };
    let nio = Nio::prepare(&options, true).await;
    let mut mesh = MeshLab::start(MeshConfig {
        workload: WorkloadKind::Synapse(options.clone()),
        settings: topology.settings.clone(),
        fq_if_available: true,
        log_dir: std::env::temp_dir().join("meshsim-postgres-test-logs"),
        ..MeshConfig::default()
    })
    .await;
    let pid = postmaster(&options.postgres_dir).expect("the run's Postgres is up");
    let up = Instant::now();
    mesh.sim.load(topology, None).await.unwrap();
    let status = mesh.ready(3, options.start_timeout).await;
    // Unprivileged, they reach the cluster's socket through the nodes' group.
    for (node, s) in &status {
        assert_runs_as_node(s.pid.unwrap(), *node);
    }
    println!(
        "3 Synapse nodes on Postgres ready {:.1} s after the load",
        up.elapsed().as_secs_f64()
    );
    let own = |n: &str| (n.to_owned(), n.to_owned());
    assert_eq!(databases(&options).await, [own("n1"), own("n2"), own("n3")]);
    // Each node reaches its own database with its password, and nothing else.
    let n1_password = password_of(&options, "n1");
    assert_ne!(n1_password, password_of(&options, "n2"));
    connect_as(&options, "n1", &n1_password, "n1")
        .await
        .expect("n1 connects to its own database");
    for (user, password, db) in [
        ("n1", n1_password.as_str(), "n2"),
        ("n1", "wrong", "n1"),
        ("n2", n1_password.as_str(), "n2"),
    ] {
        let refused = connect_as(&options, user, password, db).await;
        assert!(
            refused.is_err(),
            "{user} with {password} must not reach {db}"
        );
    }
    let (got_in, said) = psql_as_superuser_from(&options, n2);
    assert!(!got_in, "a node's user is not let in as the superuser");
    assert!(said.contains("authentication failed"), "{said}");

    let before = mesh.sim.counters().await.unwrap();
    let room = nio.step(&mesh, n1, "invite", "@meshsim:n3", "").await;
    nio.step(&mesh, n3, "join", &room, "").await;
    let body = format!("kept in postgres ({})", std::process::id());
    nio.step(&mesh, n1, "send", &room, &body).await;
    nio.step(&mesh, n3, "await", &room, &body).await;
    let after = mesh.sim.counters().await.unwrap();
    assert_carried(&before, &after, &[(n1, n2), (n2, n3), (n3, n2), (n2, n1)]);

    for node in ["n1", "n3"] {
        let bodies = messages_in(&options, node).await;
        assert!(
            bodies.contains(&body),
            "{node}'s database holds the message: {bodies:?}"
        );
    }
    assert!(
        !messages_in(&options, "n2").await.contains(&body),
        "n2 only forwarded: the room is not on it"
    );

    // A node removed: its Synapse stops, its database stays for the run.
    let n3_pid = mesh.status.borrow()[&n3].pid.unwrap();
    mesh.sim.remove_node(n3).await.unwrap();
    assert!(!Path::new(&format!("/proc/{n3_pid}")).exists());
    assert!(messages_in(&options, "n3").await.contains(&body));

    mesh.stop().await;
    assert!(!pid_alive(pid), "the run's Postgres stops with the run");
    assert!(
        !options.postgres_dir.exists(),
        "its directory (data and socket) is removed"
    );
}

#[test]
#[ignore = "needs root, Postgres and Synapse: run with cargo xtask test"]
fn down_stops_the_runs_postgres_after_kill_9() {
    let _sweep = Sweep;
    let dir = SynapseOptions::default().postgres_dir;
    let file = examples_dir().join("mesh6.toml");
    let (mut meshsim, lines) = spawn_meshsim(&[
        "up",
        file.to_str().unwrap(),
        "--workload",
        "synapse",
        "--database",
        "postgres",
    ]);
    wait_for_line(&lines, "Postgres for this run's homeservers is up");
    let pid = postmaster(&dir).expect("a postmaster.pid");
    let children = children_of(pid);
    assert!(!children.is_empty(), "a running cluster has its helpers");
    meshsim.kill_9();
    assert!(
        pid_alive(pid),
        "a killed meshsim leaves its Postgres running"
    );
    let out = std::process::Command::new(meshsim_bin())
        .arg("down")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(&dir.display().to_string()), "{stdout}");
    // (A zombie until whoever inherited it reaps it: not alive.)
    assert!(!pid_alive(pid), "down stops it");
    assert!(!dir.exists(), "and removes its data and socket");
    let left = std::process::Command::new("pgrep")
        .args(["-f", &dir.display().to_string()])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "no process of the cluster is left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    for child in children {
        assert!(
            !pid_alive(child),
            "the cluster's process {child} outlived it"
        );
    }
}
