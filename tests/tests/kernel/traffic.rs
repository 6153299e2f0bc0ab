//! Real traffic through node namespaces on the host kernel: the per-link counters equal
//! exactly what crossed each link, along the routed path and nowhere else.
//!
//! These need root: `cargo xtask test` runs them.

use std::time::Duration;

use meshsim::datapath::LinkShape;
use meshsim_common::LinkCounters;
use meshsim_tests::hub::Lab;

/// An ICMP echo of ping's default 56 data bytes: 14 Ethernet + 20 IP + 8 ICMP + 56.
const ECHO_FRAME: u64 = 98;

fn counters(packets: u64) -> LinkCounters {
    LinkCounters {
        packets,
        bytes: packets * ECHO_FRAME,
        ..Default::default()
    }
}

#[tokio::test]
#[ignore = "needs root: run with cargo xtask test"]
async fn counters_follow_a_two_hop_path_exactly() {
    // n1 - n2 - n3, and n1, n3 not linked.
    let mut lab = Lab::new(3, false).await;
    let shape = LinkShape {
        latency: Duration::from_millis(1),
        ..Default::default()
    };
    lab.link(0, 1, &shape).await;
    lab.link(1, 2, &shape).await;
    lab.route(0, 2, 1).await;
    lab.route(2, 0, 1).await;

    let out = lab.ping(0, 2, 5, "0.2");
    assert!(
        out.status.success(),
        "ping n1 -> n3 failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    for (from, to) in [(0, 1), (1, 2), (2, 1), (1, 0)] {
        assert_eq!(
            lab.dp.link_counters(&lab.key(from, to)).unwrap(),
            counters(5),
            "link n{} -> n{}",
            from + 1,
            to + 1
        );
    }
    let g = lab.dp.global_counters().unwrap();
    assert_eq!((g.unlinked_packets, g.clone_failed), (0, 0));
}

#[tokio::test]
#[ignore = "needs root: run with cargo xtask test"]
async fn strict_mode_stops_a_forced_route_between_unlinked_nodes() {
    let mut lab = Lab::new(3, false).await;
    lab.link(0, 1, &LinkShape::default()).await;
    lab.link(1, 2, &LinkShape::default()).await;
    // A route straight to n3, which n1 has no link to: the frames die at the bridge.
    lab.route(0, 2, 2).await;
    let out = lab.ping(0, 2, 3, "0.2");
    assert!(!out.status.success(), "n1 reached n3 without a link");
    let g = lab.dp.global_counters().unwrap();
    assert_eq!((g.unlinked_packets, g.unlinked_bytes), (3, 3 * ECHO_FRAME));
    // The bridge had not learnt n3 (it never sent a frame): it flooded each request to n2 too.
    assert_eq!(g.flooded_packets, 3);
    for (from, to) in [(0, 1), (1, 2), (2, 1), (1, 0)] {
        assert_eq!(
            lab.dp.link_counters(&lab.key(from, to)).unwrap(),
            LinkCounters::default()
        );
    }
}

#[tokio::test]
#[ignore = "needs root: run with cargo xtask test"]
async fn full_loss_on_one_direction_is_counted_where_it_happens() {
    let mut lab = Lab::new(2, false).await;
    lab.link(0, 1, &LinkShape::default()).await;
    lab.dp
        .upsert_link(
            lab.key(1, 0),
            lab.nodes[0].port,
            &LinkShape {
                loss: 1.0,
                ..Default::default()
            },
        )
        .unwrap();
    let out = lab.ping(0, 1, 4, "0.2");
    assert!(!out.status.success());
    assert_eq!(lab.dp.link_counters(&lab.key(0, 1)).unwrap(), counters(4));
    let back = lab.dp.link_counters(&lab.key(1, 0)).unwrap();
    assert_eq!((back.packets, back.dropped_loss), (0, 4));
}
