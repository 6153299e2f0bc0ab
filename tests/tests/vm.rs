//! What the host kernel cannot show (it has no sch_fq): delays, rates and jitter really
//! enforced by fq. `cargo xtask vm-test` boots Debian's kernel under qemu and runs these
//! there; they are built only with the `vm-tests` feature.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use meshsim::{
    datapath::LinkShape,
    model::{LinkPins, NodeId},
};
use meshsim_stats::{binomial_interval, mean_sd, median, reordered};
use meshsim_tests::{
    hub::Lab,
    mesh::{MeshConfig, MeshLab},
};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// A two-node lab with fq on both ports, `shape` on both directions.
async fn pair(shape: &LinkShape) -> Lab {
    let mut lab = Lab::new(2, true).await;
    lab.link(0, 1, shape).await;
    lab
}

#[tokio::test]
#[ignore = "needs sch_fq: runs in the VM (cargo xtask vm-test)"]
async fn fifty_ms_each_way_gives_a_100ms_round_trip() {
    let lab = pair(&LinkShape {
        latency: ms(50),
        ..Default::default()
    })
    .await;
    let to = lab.nodes[1].ip.to_string();
    let out = lab.run(0, "ping", &["-n", "-c", "20", "-i", "0.2", &to]);
    let text = String::from_utf8_lossy(&out.stdout);
    let rtts: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.trim_end_matches(" ms").parse().ok())
        .collect();
    assert!(rtts.len() >= 18, "too few replies: {text}");
    let rtt = median(&rtts);
    println!("figure: rtt median {rtt:.2} ms (configured 100 ms)");
    assert!((rtt - 100.0).abs() <= 3.0, "median RTT {rtt} ms");
}

/// Sends TCP from node 0 to node 1 for `secs` and returns the goodput in bit/s measured by
/// the receiver after the first `warmup` seconds.
fn tcp_goodput(lab: &Lab, secs: u64, warmup: u64) -> f64 {
    let addr = SocketAddrV4::new(lab.nodes[1].ip, 5201);
    goodput_between(
        Some(&lab.nodes[0].ns),
        Some(&lab.nodes[1].ns),
        addr,
        secs,
        warmup,
    )
}

#[tokio::test]
#[ignore = "needs sch_fq: runs in the VM (cargo xtask vm-test)"]
async fn one_mbit_link_carries_one_mbit_of_tcp() {
    let lab = pair(&LinkShape {
        bandwidth_bytes_per_s: 125_000,
        ..Default::default()
    })
    .await;
    let goodput = tcp_goodput(&lab, 10, 2);
    println!(
        "figure: tcp goodput {:.3} Mbit/s on a 1 Mbit/s link",
        goodput / 1e6
    );
    // Goodput excludes headers (1448 of 1514 bytes per frame): ~0.956 of the rate.
    assert!((goodput - 1e6).abs() <= 0.1e6, "goodput {goodput} bit/s");
}

#[tokio::test]
#[ignore = "needs sch_fq: runs in the VM (cargo xtask vm-test)"]
async fn held_packets_do_not_throttle_tcp_at_10mbit_and_50ms() {
    // The socket charge (docs/architecture.md): were held packets still charged to the socket, this flow would get
    // under 1 Mbit/s.
    let lab = pair(&LinkShape {
        bandwidth_bytes_per_s: 1_250_000,
        latency: ms(50),
        ..Default::default()
    })
    .await;
    let goodput = tcp_goodput(&lab, 15, 4);
    println!(
        "figure: tcp goodput {:.3} Mbit/s on a 10 Mbit/s, 50 ms link",
        goodput / 1e6
    );
    assert!(goodput >= 8.5e6, "goodput {goodput} bit/s");
    assert_eq!(lab.dp.global_counters().unwrap().clone_failed, 0);
}

#[tokio::test]
#[ignore = "needs sch_fq: runs in the VM (cargo xtask vm-test)"]
async fn ten_percent_loss_lands_in_the_binomial_interval() {
    let mut lab = pair(&LinkShape::default()).await;
    lab.dp
        .upsert_link(
            lab.key(0, 1),
            lab.nodes[1].port,
            &LinkShape {
                loss: 0.1,
                ..Default::default()
            },
        )
        .unwrap();
    let n = 1000u64;
    lab.ping(0, 1, n as u32, "0.005");
    let c = lab.dp.link_counters(&lab.key(0, 1)).unwrap();
    assert_eq!(
        c.packets + c.dropped_loss,
        n,
        "every echo request met the link"
    );
    let (lo, hi) = binomial_interval(n, 0.1);
    println!(
        "figure: {} of {n} lost (99% interval {lo}..{hi})",
        c.dropped_loss
    );
    assert!(
        (lo..=hi).contains(&c.dropped_loss),
        "{} lost",
        c.dropped_loss
    );
}

#[tokio::test]
#[ignore = "needs sch_fq: runs in the VM (cargo xtask vm-test)"]
async fn normal_jitter_keeps_order_and_its_spread() {
    let lab = pair(&LinkShape {
        latency: ms(50),
        jitter: ms(10),
        ..Default::default()
    })
    .await;
    let to = SocketAddrV4::new(lab.nodes[1].ip, 5202);
    let receiver_sock = lab.nodes[1]
        .ns
        .run(move || UdpSocket::bind(to).unwrap())
        .unwrap();
    receiver_sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (count, gap) = (2000u64, Duration::from_millis(10));
    let (delays, reordered) = std::thread::scope(|s| {
        let receiver = s.spawn(move || {
            let (mut delays, mut last_seq, mut reordered) = (Vec::new(), 0u64, 0);
            let mut buf = [0u8; 16];
            while let Ok(n) = receiver_sock.recv(&mut buf) {
                assert_eq!(n, 16);
                let seq = u64::from_le_bytes(buf[0..8].try_into().unwrap());
                let sent = u64::from_le_bytes(buf[8..16].try_into().unwrap());
                delays.push((monotonic_ns() - sent) as f64 / 1e6);
                if seq < last_seq {
                    reordered += 1;
                }
                last_seq = last_seq.max(seq);
            }
            (delays, reordered)
        });
        lab.nodes[0]
            .ns
            .run(|| {
                let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
                let start = Instant::now();
                for seq in 1..=count {
                    let mut msg = [0u8; 16];
                    msg[0..8].copy_from_slice(&seq.to_le_bytes());
                    msg[8..16].copy_from_slice(&monotonic_ns().to_le_bytes());
                    sock.send_to(&msg, to).unwrap();
                    if let Some(wait) = (gap * seq as u32).checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            })
            .unwrap();
        receiver.join().unwrap()
    });
    assert!(
        delays.len() as u64 >= count * 99 / 100,
        "only {} of {count} probes arrived",
        delays.len()
    );
    let (mean, sd) = mean_sd(&delays);
    println!(
        "figure: one-way delay mean {mean:.2} ms, sd {sd:.2} ms (configured 50, 10); {reordered} reordered"
    );
    assert_eq!(reordered, 0);
    assert!((sd - 10.0).abs() <= 1.5, "sd {sd} ms");
    assert!((mean - 50.0).abs() <= 3.0, "mean {mean} ms");
}

/// One UDP flow of `count` sequence-numbered packets, one every millisecond, from node
/// `from` to node `to` of a [`MeshLab`]: the sequence numbers in the order the receiving
/// application read them (not the kernel's stamps), and how many were sent.
fn flow(
    mesh: &MeshLab,
    from: NodeId,
    to: NodeId,
    port: u16,
    count: u64,
) -> std::thread::JoinHandle<Vec<u64>> {
    let to_ip: std::net::Ipv4Addr = mesh.ip(to).parse().unwrap();
    let rx = mesh
        .ns(to)
        .run(|| UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, port)))
        .unwrap()
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let tx = mesh
        .ns(from)
        .run(|| UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)))
        .unwrap()
        .unwrap();
    let receiver = std::thread::spawn(move || {
        let mut seen = Vec::with_capacity(count as usize);
        let mut buf = [0u8; 64];
        while let Ok(n) = rx.recv(&mut buf) {
            if n >= 8 {
                seen.push(u64::from_be_bytes(buf[..8].try_into().unwrap()));
            }
        }
        seen
    });
    std::thread::spawn(move || {
        let start = Instant::now();
        for seq in 0..count {
            let due = start + Duration::from_millis(seq);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let mut packet = [0u8; 64];
            packet[..8].copy_from_slice(&seq.to_be_bytes());
            tx.send_to(&packet, SocketAddrV4::new(to_ip, port)).unwrap();
        }
    })
    .join()
    .unwrap();
    receiver
}

/// Issue 17: a shaped link delivers each flow in order. Four nodes of the real runtime in
/// the VM: n1 -> n2 over a shaped link (20 ms, 50 Mbit/s; with and without jitter; with and
/// without 200 changes through the Sim during the flow), and n3 -> n4 over a transparent
/// link at the same time, for reference. 12,000 packets at 1000/s each time: 0 reordered, 0
/// lost.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs sch_fq: runs in the VM (cargo xtask vm-test)"]
async fn a_shaped_link_keeps_every_flow_in_order() {
    let mesh = MeshLab::start(MeshConfig {
        fq_if_available: true,
        ..MeshConfig::default()
    })
    .await;
    assert!(mesh.fq, "the VM's kernel has sch_fq");
    let settings = meshsim::model::Settings {
        max_latency_ms: 150.0,
        ..Default::default()
    };
    let mut topology = meshsim::model::Topology {
        settings,
        ..Default::default()
    };
    // Two pairs far apart: n1 - n2 and n3 - n4.
    for (id, x, y) in [
        (1, 0.0, 0.0),
        (2, 100.0, 0.0),
        (3, 0.0, 5000.0),
        (4, 100.0, 5000.0),
    ] {
        topology.nodes.push(meshsim::model::NodeDoc {
            id: Some(NodeId(id)),
            name: None,
            x,
            y,
        });
    }
    mesh.sim.load(topology, None).await.unwrap();
    let (n1, n2, n3, n4) = (NodeId(1), NodeId(2), NodeId(3), NodeId(4));
    let pin = |latency: f64, jitter: f64, bandwidth: u64| LinkPins {
        latency_ms: Some(latency),
        jitter_ms: Some(jitter),
        bandwidth_bps: Some(bandwidth),
        loss_pct: Some(0.0),
    };
    // The reference: a transparent link (nothing held, so nothing released from a timer).
    mesh.sim.pin(n3, n4, pin(0.0, 0.0, 0)).await.unwrap();
    const COUNT: u64 = 12_000;
    for (case, jitter, changes) in [
        ("20 ms, 50 Mbit/s", 0.0, false),
        ("20 ms, 50 Mbit/s, 200 changes", 0.0, true),
        ("20 ms ± 2 ms, 50 Mbit/s", 2.0, false),
        ("20 ms ± 2 ms, 50 Mbit/s, 200 changes", 2.0, true),
    ] {
        mesh.sim
            .pin(n1, n2, pin(20.0, jitter, 50_000_000))
            .await
            .unwrap();
        let shaped = flow(&mesh, n1, n2, 9001, COUNT);
        let reference = flow(&mesh, n3, n4, 9002, COUNT);
        if changes {
            // 200 changes spread over the flow's 12 s: 20 <-> 30 ms, jitter 0 <-> 2 ms,
            // 50 <-> 20 Mbit/s.
            for i in 0..200 {
                tokio::time::sleep(Duration::from_millis(55)).await;
                let p = if i % 2 == 0 {
                    pin(30.0, 2.0 - jitter, 20_000_000)
                } else {
                    pin(20.0, jitter, 50_000_000)
                };
                mesh.sim.pin(n1, n2, p).await.unwrap();
            }
        }
        let (shaped, reference) = tokio::task::spawn_blocking(move || {
            (shaped.join().unwrap(), reference.join().unwrap())
        })
        .await
        .unwrap();
        let (late, lost) = (reordered(&shaped), COUNT - shaped.len() as u64);
        let (ref_late, ref_lost) = (reordered(&reference), COUNT - reference.len() as u64);
        println!(
            "figure: {case}: {late} reordered, {lost} lost of {COUNT}; transparent link \
             alongside: {ref_late} reordered, {ref_lost} lost"
        );
        assert_eq!((late, lost), (0, 0), "{case}");
    }
    mesh.stop().await;
}

/// TCP from `from` to `to` (a namespace, or the host's own with `None`) for `secs`; the
/// goodput in bit/s the receiver measured after the first `warmup` seconds.
fn goodput_between(
    from: Option<&meshsim::net::NetNs>,
    to: Option<&meshsim::net::NetNs>,
    addr: SocketAddrV4,
    secs: u64,
    warmup: u64,
) -> f64 {
    let in_ns = |ns: Option<&meshsim::net::NetNs>, f: &mut (dyn FnMut() + Send)| match ns {
        Some(ns) => ns.run(f).unwrap(),
        None => f(),
    };
    let mut listener = None;
    in_ns(to, &mut || {
        listener = Some(TcpListener::bind(addr).unwrap())
    });
    let listener = listener.unwrap();
    std::thread::scope(|s| {
        let receiver = s.spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let start = Instant::now();
            let mut counted = 0u64;
            let mut since = None;
            loop {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                if start.elapsed() >= Duration::from_secs(warmup) {
                    // The first read after the warm-up may bring what waited in the socket
                    // while this thread was not running: the window starts after it.
                    match since {
                        None => since = Some(Instant::now()),
                        Some(_) => counted += n as u64,
                    }
                }
            }
            counted as f64 * 8.0
                / since
                    .expect("data after the warm-up")
                    .elapsed()
                    .as_secs_f64()
        });
        in_ns(from, &mut || {
            let mut conn = TcpStream::connect(addr).unwrap();
            let chunk = vec![0x55u8; 1 << 16];
            let end = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < end {
                conn.write_all(&chunk).unwrap();
            }
        });
        receiver.join().unwrap()
    })
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs sch_fq: runs in the VM (cargo xtask vm-test)"]
async fn a_client_link_is_shaped_each_way_on_its_own() {
    let mesh = MeshLab::start(MeshConfig {
        fq_if_available: true,
        ..MeshConfig::default()
    })
    .await;
    assert!(mesh.fq, "the VM's kernel has sch_fq");
    let n1 = mesh.sim.add_node(0.0, 0.0).await.unwrap().id;
    let ip: std::net::Ipv4Addr = mesh.ip(n1).parse().unwrap();
    let unshaped = std::process::Command::new("ping")
        .args(["-n", "-c", "3", "-i", "0.2", &ip.to_string()])
        .output()
        .unwrap();
    let c = mesh.sim.counters().await.unwrap();
    println!(
        "unshaped client link: {}; host -> n1 {:?}, n1 -> host {:?}",
        String::from_utf8_lossy(&unshaped.stdout)
            .lines()
            .last()
            .unwrap_or(""),
        c.links.get(&(meshsim::model::HOST, n1)),
        c.links.get(&(n1, meshsim::model::HOST)),
    );
    // A phone on a poor link: 300 ms each way, 32 kbit/s up, 64 kbit/s down.
    let link = meshsim::model::ClientLink {
        latency_ms: 300.0,
        bandwidth_up_bps: 32_000,
        bandwidth_down_bps: 64_000,
        ..Default::default()
    };
    mesh.sim.set_client(n1, Some(link)).await.unwrap();

    let out = std::process::Command::new("ping")
        .args(["-n", "-c", "10", "-i", "0.3", &ip.to_string()])
        .output()
        .unwrap();
    let c = mesh.sim.counters().await.unwrap();
    println!(
        "shaped: host -> n1 {:?}, n1 -> host {:?}",
        c.links.get(&(meshsim::model::HOST, n1)),
        c.links.get(&(n1, meshsim::model::HOST)),
    );
    assert!(out.status.success(), "{out:?}");
    let rtts: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    let rtt = median(&rtts);
    // 300 ms each way, plus each 98-byte echo frame's time on the wire at each rate.
    let expected = 600.0 + 98.0 * 8.0 / 32_000.0 * 1e3 + 98.0 * 8.0 / 64_000.0 * 1e3;
    println!(
        "figure: client link rtt median {rtt:.1} ms (expected {expected:.1}: 300 ms each way \
         and the frames' serialisation at 32 and 64 kbit/s)"
    );
    assert!((rtt - expected).abs() <= 5.0, "median RTT {rtt} ms");

    let up = goodput_between(None, Some(&mesh.ns(n1)), SocketAddrV4::new(ip, 5301), 12, 4);
    let host = SocketAddrV4::new(std::net::Ipv4Addr::new(10, 77, 0, 1), 5302);
    let down = goodput_between(Some(&mesh.ns(n1)), None, host, 12, 4);
    println!(
        "figure: client link tcp goodput up {:.1} kbit/s (32 configured), down {:.1} kbit/s (64)",
        up / 1e3,
        down / 1e3
    );
    let counters = mesh.sim.counters().await.unwrap();
    let (to_n1, to_host) = (
        counters.links[&(meshsim::model::HOST, n1)],
        counters.links[&(n1, meshsim::model::HOST)],
    );
    println!(
        "client link counters: host -> n1 {} packets {} bytes, n1 -> host {} packets {} bytes",
        to_n1.packets, to_n1.bytes, to_host.packets, to_host.bytes
    );
    assert!(to_n1.bytes > 40_000 && to_host.bytes > 80_000);
    // Goodput should be a little under the rate (headers: 1448 of 1514 bytes a frame, 0.956).
    // Measured (2026-12-03, four runs under qemu's software emulation): 0.96-1.05 of each
    // rate, the spread from run to run, once 1.03 of 64 kbit/s in both directions. Within 7 %.
    for (got, rate) in [(up, 32_000.0), (down, 64_000.0)] {
        assert!(
            (0.90..=1.07).contains(&(got / rate)),
            "{got} bit/s on a {rate} bit/s link"
        );
    }
    mesh.stop().await;
}
