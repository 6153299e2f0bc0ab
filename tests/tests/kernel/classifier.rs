//! The classifier's decisions, checked on the host kernel through `BPF_PROG_TEST_RUN`: real
//! frames and a real `__sk_buff`, the real maps, `tstamp` read back. No qdisc is needed.
//!
//! These need root (they load eBPF): `cargo xtask test` runs them.

use std::time::Duration;

use meshsim::datapath::{Datapath, DatapathOptions, LinkShape, SkBuffCtx};
use meshsim_common::{JitterDist, LinkCounters, LinkKey};

const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;
/// A shaped packet leaves as a clone; the original is dropped (see the classifier).
const TC_ACT_CLONED: i32 = TC_ACT_SHOT;

/// Test runs without a device happen on loopback: links shaped there have it as their port.
const LOOPBACK: u32 = 1;
const A: [u8; 6] = [0x02, 0x6d, 0, 0, 0, 0x01];
const B: [u8; 6] = [0x02, 0x6d, 0, 0, 0, 0x02];
const HOST: [u8; 6] = [0x02, 0x6d, 0, 0, 0, 0xfe];
const AB: LinkKey = LinkKey { src: A, dst: B };

fn frame(src: [u8; 6], dst: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(14)];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    // IEEE local experimental ethertype: nothing on the host handles the clone test_run sends.
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f
}

fn load(strict: bool) -> Datapath {
    Datapath::load(DatapathOptions {
        strict,
        ..DatapathOptions::default()
    })
    .expect("load the classifier (run as root)")
}

fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Sends one frame; returns (verdict, tstamp, clock before, clock after).
fn send(dp: &Datapath, f: &[u8]) -> (i32, u64, u64, u64) {
    let before = monotonic_ns();
    let out = dp.test_run(f, &SkBuffCtx::default(), 1).unwrap();
    let after = monotonic_ns();
    (out.verdict, out.ctx.tstamp, before, after)
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn latency_only_departs_after_the_latency() {
    let mut dp = load(true);
    dp.upsert_link(
        AB,
        LOOPBACK,
        &LinkShape {
            latency: Duration::from_millis(50),
            ..Default::default()
        },
    )
    .unwrap();
    let (verdict, tstamp, before, after) = send(&dp, &frame(A, B, 100));
    // The original is dropped; fq gets a socket-less clone.
    assert_eq!(verdict, TC_ACT_CLONED);
    assert!(
        tstamp >= before + 50_000_000 && tstamp <= after + 50_000_000,
        "tstamp {tstamp} not in [{before}, {after}] + 50 ms"
    );
    assert_eq!(dp.global_counters().unwrap().clone_failed, 0);
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn rate_only_spaces_departures_by_serialisation_time() {
    let mut dp = load(true);
    // 1 Mbit/s: a 1250-byte frame takes exactly 10 ms.
    dp.upsert_link(
        AB,
        LOOPBACK,
        &LinkShape {
            bandwidth_bytes_per_s: 125_000,
            queue: Some(Duration::from_secs(1)),
            ..Default::default()
        },
    )
    .unwrap();
    let f = frame(A, B, 1250);
    let (_, first, before, _) = send(&dp, &f);
    assert!(first >= before + 10_000_000);
    let mut last = first;
    for _ in 0..9 {
        let (verdict, t, _, _) = send(&dp, &f);
        assert_eq!(verdict, TC_ACT_CLONED);
        assert_eq!(
            t - last,
            10_000_000,
            "the queue builds up one serialisation time per frame"
        );
        last = t;
    }
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn full_queue_drops_and_counts() {
    let mut dp = load(true);
    // Room for 25 ms: two 10 ms frames fit, the third does not.
    dp.upsert_link(
        AB,
        LOOPBACK,
        &LinkShape {
            bandwidth_bytes_per_s: 125_000,
            queue: Some(Duration::from_millis(25)),
            ..Default::default()
        },
    )
    .unwrap();
    let f = frame(A, B, 1250);
    let verdicts: Vec<i32> = (0..3).map(|_| send(&dp, &f).0).collect();
    assert_eq!(verdicts, [TC_ACT_CLONED, TC_ACT_CLONED, TC_ACT_SHOT]);
    let c = dp.link_counters(&AB).unwrap();
    assert_eq!(
        c,
        LinkCounters {
            packets: 2,
            bytes: 2500,
            dropped_loss: 0,
            dropped_queue: 1
        }
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn full_loss_drops_everything_and_no_loss_drops_nothing() {
    let mut dp = load(true);
    let f = frame(A, B, 200);
    dp.upsert_link(
        AB,
        LOOPBACK,
        &LinkShape {
            loss: 1.0,
            ..Default::default()
        },
    )
    .unwrap();
    assert!((0..500).all(|_| send(&dp, &f).0 == TC_ACT_SHOT));
    assert_eq!(dp.link_counters(&AB).unwrap().dropped_loss, 500);
    // Changing the link keeps its counters: one map update, same slot.
    dp.upsert_link(
        AB,
        LOOPBACK,
        &LinkShape {
            loss: 0.0,
            latency: Duration::from_millis(1),
            ..Default::default()
        },
    )
    .unwrap();
    assert!((0..500).all(|_| send(&dp, &f).0 == TC_ACT_CLONED));
    assert_eq!(
        dp.link_counters(&AB).unwrap(),
        LinkCounters {
            packets: 500,
            bytes: 100_000,
            dropped_loss: 500,
            dropped_queue: 0
        }
    );
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn unmatched_frames_pass_untouched() {
    let mut dp = load(true);
    dp.upsert_node(A, 1, LOOPBACK).unwrap();
    dp.upsert_link(
        AB,
        LOOPBACK,
        &LinkShape {
            latency: Duration::from_millis(5),
            ..Default::default()
        },
    )
    .unwrap();
    // Host to node, and a broadcast: no link, not both nodes.
    for f in [frame(HOST, A, 60), frame(A, [0xff; 6], 42)] {
        let (verdict, tstamp, _, _) = send(&dp, &f);
        assert_eq!((verdict, tstamp), (TC_ACT_OK, 0));
    }
    let g = dp.global_counters().unwrap();
    assert_eq!(
        (g.unmatched_packets, g.unmatched_bytes, g.unlinked_packets),
        (2, 102, 0)
    );
    assert_eq!(dp.link_counters(&AB).unwrap(), LinkCounters::default());
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn strict_mode_drops_frames_between_unlinked_nodes() {
    let mut dp = load(true);
    dp.upsert_node(A, 1, LOOPBACK).unwrap();
    dp.upsert_node(B, 2, LOOPBACK).unwrap();
    let (verdict, _, _, _) = send(&dp, &frame(B, A, 80));
    assert_eq!(verdict, TC_ACT_SHOT);
    let g = dp.global_counters().unwrap();
    assert_eq!(
        (g.unlinked_packets, g.unlinked_bytes, g.unmatched_packets),
        (1, 80, 0)
    );
    // Not strict: the same frame passes, counted as unmatched.
    dp.set_options(DatapathOptions {
        strict: false,
        ..DatapathOptions::default()
    })
    .unwrap();
    assert_eq!(send(&dp, &frame(B, A, 80)).0, TC_ACT_OK);
    assert_eq!(dp.global_counters().unwrap().unmatched_packets, 1);
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn counters_match_what_was_sent_exactly() {
    let mut dp = load(true);
    let ba = LinkKey { src: B, dst: A };
    dp.upsert_link(AB, LOOPBACK, &LinkShape::default()).unwrap();
    dp.upsert_link(
        ba,
        LOOPBACK,
        &LinkShape {
            latency: Duration::from_micros(10),
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..300 {
        send(&dp, &frame(A, B, 60 + i));
    }
    for _ in 0..77 {
        send(&dp, &frame(B, A, 1000));
    }
    let sum_ab: u64 = (0..300).map(|i| 60 + i as u64).sum();
    assert_eq!(
        dp.link_counters(&AB).unwrap(),
        LinkCounters {
            packets: 300,
            bytes: sum_ab,
            ..Default::default()
        }
    );
    assert_eq!(
        dp.link_counters(&ba).unwrap(),
        LinkCounters {
            packets: 77,
            bytes: 77_000,
            ..Default::default()
        }
    );
    // A removed link's slot starts clean when reused.
    dp.remove_link(&AB).unwrap();
    dp.upsert_link(AB, LOOPBACK, &LinkShape::default()).unwrap();
    assert_eq!(dp.link_counters(&AB).unwrap(), LinkCounters::default());
}

fn sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    (
        mean,
        (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt(),
    )
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn independent_normal_jitter_has_the_configured_spread_in_the_kernel() {
    let mut dp = load(true);
    let shape = LinkShape {
        latency: Duration::from_millis(50),
        jitter: Duration::from_millis(10),
        jitter_dist: JitterDist::Normal,
        jitter_correlation: None,
        ..Default::default()
    };
    dp.upsert_link(AB, LOOPBACK, &shape).unwrap();
    let f = frame(A, B, 100);
    let delays: Vec<f64> = (0..4000)
        .map(|_| {
            let (_, t, before, after) = send(&dp, &f);
            t as f64 - (before + after) as f64 / 2.0
        })
        .collect();
    let (mean, sd) = sd(&delays);
    assert!((mean - 50e6).abs() < 1e6, "mean {mean}");
    assert!((sd - 10e6).abs() < 0.5e6, "sd {sd}");
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn correlated_jitter_never_departs_out_of_order() {
    let mut dp = load(true);
    let shape = LinkShape {
        latency: Duration::from_millis(50),
        jitter: Duration::from_millis(10),
        ..Default::default()
    };
    dp.upsert_link(AB, LOOPBACK, &shape).unwrap();
    let f = frame(A, B, 100);
    let stamps: Vec<u64> = (0..2000).map(|_| send(&dp, &f).1).collect();
    assert!(
        stamps.windows(2).all(|w| w[0] <= w[1]),
        "departures went backwards"
    );
    // The jitter is really applied: departures are not just now + 50 ms.
    assert!(stamps.iter().any(|&t| t != stamps[0]));
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn copies_flooded_to_other_ports_are_dropped_and_counted_on_no_link() {
    let mut dp = load(true);
    // The link's destination sits behind another port than the one this copy leaves by.
    dp.upsert_link(AB, 99, &LinkShape::default()).unwrap();
    dp.upsert_node(A, 1, 98).unwrap();
    dp.upsert_node(B, 2, 99).unwrap();
    assert_eq!(send(&dp, &frame(A, B, 100)).0, TC_ACT_SHOT);
    // Unlinked in the other direction, and also not this port's: a flood copy too.
    assert_eq!(send(&dp, &frame(B, A, 100)).0, TC_ACT_SHOT);
    let g = dp.global_counters().unwrap();
    assert_eq!((g.flooded_packets, g.unlinked_packets), (2, 0));
    assert_eq!(dp.link_counters(&AB).unwrap(), LinkCounters::default());
}
