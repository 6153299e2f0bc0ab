//! The docker backend end to end: three containers in a line, n1 - n2 - n3 (100 ms links, n1
//! and n3 not linked). Ping crosses from n1 to n3 over n2 with the counters growing on
//! n1 -> n2 -> n3 only; with the Synapse image, a real Matrix client (matrix-nio) makes a
//! room on n1, invites a user on n3 who joins, and a message from n1 arrives on n3. Bad
//! input fails with one line that says what to do, and leaves nothing behind.
//!
//! Needs root, Docker (Debian's `docker.io`: when no daemon answers, the tests start one of
//! their own, with its own data root, and stop it afterwards) and the images
//! (`cargo xtask images`). `cargo xtask test` runs them.

use std::{collections::HashMap, process::Output, time::Instant};

use bollard::query_parameters::{ListContainersOptionsBuilder, StatsOptionsBuilder};
use futures_util::StreamExt as _;
use meshsim::{
    model::HOST,
    net::NetNs,
    run_config::{BackendKind, RunConfig},
    runtime::{
        self, RuntimeError,
        docker::{self, DockerError, RUN_LABEL},
        names::PREFIX,
    },
    workload::{SynapseOptions, WorkloadKind},
};
use meshsim_tests::{
    assert_carried,
    dockerd::Dockerd,
    fixtures::{check_line, line},
    growth, id,
    matrix::Nio,
    mesh::{MeshConfig, MeshLab, run_lock},
};

/// A lab of containers in [`line`]'s settings, with fq where the kernel has it.
async fn start(workload: WorkloadKind) -> MeshLab {
    MeshLab::start(MeshConfig {
        backend: BackendKind::Docker,
        workload,
        settings: line().settings,
        fq_if_available: true,
        log_dir: std::env::temp_dir().join("meshsim-docker-test-logs"),
    })
    .await
}

/// No container with meshsim's label, no `meshsim` network, no `ms-` namespace.
async fn assert_nothing_left() {
    let docker = docker::connect().await.unwrap();
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&HashMap::from([("label", vec![RUN_LABEL.to_owned()])]))
        .build();
    let left = docker.list_containers(Some(options)).await.unwrap();
    assert!(left.is_empty(), "containers left: {left:?}");
    assert!(
        docker.inspect_network("meshsim", None).await.is_err(),
        "the network meshsim is left"
    );
    assert_eq!(
        NetNs::list_with_prefix(PREFIX).unwrap(),
        Vec::<String>::new(),
        "namespaces left"
    );
}

/// A container's memory use as Docker reports it (cgroup usage less the page cache).
async fn memory_mib(container: &str) -> f64 {
    let docker = docker::connect().await.unwrap();
    let options = StatsOptionsBuilder::new()
        .stream(false)
        .one_shot(true)
        .build();
    let stats = docker
        .stats(container, Some(options))
        .next()
        .await
        .unwrap()
        .unwrap();
    let memory = stats.memory_stats.unwrap();
    let usage = memory.usage.unwrap_or(0) as f64;
    let cache = memory
        .stats
        .and_then(|s| s.get("inactive_file").or(s.get("cache")).copied())
        .unwrap_or(0) as f64;
    (usage - cache) / (1024.0 * 1024.0)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and Docker: run with cargo xtask test"]
async fn ping_crosses_two_hops_between_containers() {
    let _dockerd = Dockerd::ensure().await;
    let (n1, n2, n3) = (id("n1"), id("n2"), id("n3"));
    let topology = line();
    check_line(&topology);
    let mesh = start(WorkloadKind::None).await;
    let fq = mesh.fq;
    let up = Instant::now();
    mesh.sim.load(topology, None).await.unwrap();
    println!(
        "3 containers created, started, addressed and routed in {:.2} s ({:.2} s each)",
        up.elapsed().as_secs_f64(),
        up.elapsed().as_secs_f64() / 3.0
    );

    let before = mesh.sim.counters().await.unwrap();
    let out: Output = mesh
        .ns(n1)
        .command("ping")
        .args(["-n", "-q", "-c", "5", "-i", "0.2", "-W", "2", &mesh.ip(n3)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ping n1 -> n3 failed: {text}");
    println!("{}", text.trim());
    let after = mesh.sim.counters().await.unwrap();
    let grew = growth(&before, &after);
    println!("packets per link: {grew:?}");
    for hop in [(n1, n2), (n2, n3), (n3, n2), (n2, n1)] {
        assert!(
            grew.get(&hop).copied().unwrap_or(0) >= 5,
            "the echoes did not cross {hop:?}: {grew:?}"
        );
    }
    assert!(
        !after.links.contains_key(&(n1, n3)),
        "n1 and n3 have no link"
    );
    assert_eq!(
        after.global.unlinked_packets, before.global.unlinked_packets,
        "a frame went straight between unlinked nodes"
    );
    if fq {
        // Two links of 100 ms each way: at least 400 ms round trip.
        let avg: f64 = text
            .rsplit_once("= ")
            .and_then(|(_, v)| v.split('/').nth(1))
            .and_then(|v| v.parse().ok())
            .expect("ping's summary");
        assert!(avg >= 399.0, "round trip {avg} ms over two 100 ms links");
    }

    // The host reaches a container over its client link, counted each way on its own.
    let before = mesh.sim.counters().await.unwrap();
    let out = std::process::Command::new("ping")
        .args(["-n", "-q", "-c", "4", "-i", "0.2", "-W", "2", &mesh.ip(n2)])
        .output()
        .unwrap();
    assert!(out.status.success(), "host -> n2: {out:?}");
    let after = mesh.sim.counters().await.unwrap();
    let grew = growth(&before, &after);
    assert_eq!(
        (grew.get(&(HOST, n2)), grew.get(&(n2, HOST))),
        (Some(&4), Some(&4)),
        "the host's pings on n2's client link only: {grew:?}"
    );

    // A node added later is a container at once, and goes with its node.
    let docker = docker::connect().await.unwrap();
    let n4 = mesh.sim.add_node(5000.0, 5000.0).await.unwrap().id;
    let container = format!("meshsim-{n4}");
    let running = docker.inspect_container(&container, None).await.unwrap();
    assert_eq!(running.state.and_then(|s| s.running), Some(true));
    mesh.sim.remove_node(n4).await.unwrap();
    assert!(
        docker.inspect_container(&container, None).await.is_err(),
        "{container} outlived its node"
    );
    mesh.stop().await;
    assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and Docker: run with cargo xtask test"]
async fn a_missing_image_is_one_clear_line_and_leaves_nothing() {
    let _dockerd = Dockerd::ensure().await;
    let _lock = run_lock().await;
    let run = RunConfig {
        backend: BackendKind::Docker,
        image: Some("meshsim/no-such-image:test".into()),
        ..RunConfig::default()
    };
    let Err(e) = runtime::start(&run, &WorkloadKind::None).await else {
        panic!("a missing image must fail the start");
    };
    assert!(matches!(
        e,
        RuntimeError::Docker(DockerError::MissingImage { .. })
    ));
    let line = e.to_string();
    println!("{line}");
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(line.contains("cargo xtask images"), "{line}");
    assert_nothing_left().await;
}

#[tokio::test]
#[ignore = "needs root and Docker: run with cargo xtask test"]
async fn unreachable_docker_is_one_clear_line() {
    let Err(e) = docker::connect_to("/nonexistent/docker.sock").await else {
        panic!("no daemon there");
    };
    let line = e.to_string();
    println!("{line}");
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(line.contains("Docker is not reachable"), "{line}");
    assert!(line.contains("docker.io"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and Docker: run with cargo xtask test"]
async fn a_message_crosses_two_hops_between_synapse_containers() {
    let _dockerd = Dockerd::ensure().await;
    let (n1, n2, n3) = (id("n1"), id("n2"), id("n3"));
    let topology = line();
    check_line(&topology);
    let options = SynapseOptions::default();
    // matrix-nio on the host; Synapse is in the image.
    let nio = Nio::prepare(&options, false).await;
    let mut mesh = start(WorkloadKind::Synapse(options.clone())).await;
    let up = Instant::now();
    mesh.sim.load(topology, None).await.unwrap();
    let started = up.elapsed();
    mesh.ready(3, options.start_timeout).await;
    println!(
        "3 Synapse containers started in {:.1} s; all federating (answering, test user made) \
         {:.1} s after the load",
        started.as_secs_f64(),
        up.elapsed().as_secs_f64()
    );
    for node in [n1, n2, n3] {
        println!(
            "  meshsim-{node}: {:.0} MiB",
            memory_mib(&format!("meshsim-{node}")).await
        );
    }

    let before = mesh.sim.counters().await.unwrap();
    let room = nio.step(&mesh, n1, "invite", "@meshsim:n3", "").await;
    assert!(room.starts_with('!'), "a room id: {room}");
    nio.step(&mesh, n3, "join", &room, "").await;
    let body = format!("hello from container n1 over n2 ({})", std::process::id());
    let sent = Instant::now();
    let event = nio.step(&mesh, n1, "send", &room, &body).await;
    assert!(event.starts_with('$'), "an event id: {event}");
    nio.step(&mesh, n3, "await", &room, &body).await;
    println!(
        "the message reached n3 {:.1} s after it was sent",
        sent.elapsed().as_secs_f64()
    );
    let after = mesh.sim.counters().await.unwrap();
    assert_carried(&before, &after, &[(n1, n2), (n2, n3), (n3, n2), (n2, n1)]);
    mesh.stop().await;
    assert!(
        !options.run_dir.exists(),
        "the run directory is removed at the end"
    );
}
