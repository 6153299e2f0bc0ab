//! Cost per packet of the classifier, from `BPF_PROG_TEST_RUN` (needs root):
//! `cargo xtask bench` runs it. Each case runs `REPEAT` times in the kernel, which reports the
//! average; the median of `ROUNDS` such averages is printed, next to the empty classifier's
//! (the harness's own cost) and the difference.

use std::time::Duration;

use meshsim::datapath::{Classifier, Datapath, DatapathOptions, LinkShape, SkBuffCtx};
use meshsim_common::LinkKey;

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 5;
/// Target for a link hit minus the empty classifier, on the development machine.
const TARGET_NS: f64 = 50.0;

/// Test runs without a device happen on loopback: links shaped there have it as their port.
const LOOPBACK: u32 = 1;
const A: [u8; 6] = [0x02, 0x6d, 0, 0, 0, 0x01];
const B: [u8; 6] = [0x02, 0x6d, 0, 0, 0, 0x02];
const C: [u8; 6] = [0x02, 0x6d, 0, 0, 0, 0x03];

fn frame(src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 100];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f
}

fn median_ns(dp: &Datapath, which: Classifier, f: &[u8]) -> f64 {
    let mut runs: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let out = dp
                .test_run(which, f, &SkBuffCtx::default(), REPEAT)
                .expect("test_run");
            out.duration.as_nanos() as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[ROUNDS / 2]
}

fn main() -> anyhow::Result<()> {
    let mut dp = Datapath::load(DatapathOptions {
        strict: true,
        orphan: false,
    })?;
    let full = LinkShape {
        latency: Duration::from_millis(50),
        jitter: Duration::from_millis(10),
        // Fast enough that a million packets never fill the queue (a drop is a cheaper path).
        rate_bytes_per_s: 100_000_000_000,
        queue: Some(Duration::from_secs(4)),
        ..Default::default()
    };
    dp.upsert_link(LinkKey { src: A, dst: B }, LOOPBACK, &full)?;
    dp.upsert_link(
        LinkKey { src: A, dst: C },
        LOOPBACK,
        &LinkShape {
            latency: Duration::from_millis(50),
            ..Default::default()
        },
    )?;
    // Enough other links that the hash lookup is not into an almost empty table.
    for i in 0..2000u16 {
        let [hi, lo] = i.to_be_bytes();
        dp.upsert_link(
            LinkKey {
                src: [0x02, 0x6e, 0, 0, hi, lo],
                dst: B,
            },
            LOOPBACK,
            &full,
        )?;
    }
    println!(
        "classifier cost per packet: BPF_PROG_TEST_RUN, repeat {REPEAT}, median of {ROUNDS} runs, 2002 links installed"
    );
    let empty = median_ns(&dp, Classifier::Empty, &frame(A, B));
    let cases = [
        (
            "unmatched frame (host -> node)",
            frame([0x02, 0x6f, 0, 0, 0, 1], A),
            false,
        ),
        ("link hit, latency only", frame(A, C), false),
        ("link hit, rate + latency + jitter", frame(A, B), false),
        (
            "link hit, rate + latency + jitter, with orphaning clone",
            frame(A, B),
            true,
        ),
    ];
    println!("{:<58} {:>8} {:>12}", "case", "ns/pkt", "minus empty");
    println!(
        "{:<58} {:>8.1} {:>12}",
        "empty classifier (the harness's own cost)", empty, "-"
    );
    let clock = median_ns(&dp, Classifier::Clock, &frame(A, B));
    println!(
        "{:<58} {clock:>8.1} {:>+12.1}",
        "clock read only (bpf_ktime_get_ns, the floor)",
        clock - empty
    );
    let mut hit = 0.0;
    for (name, f, orphan) in cases {
        dp.set_options(DatapathOptions {
            strict: true,
            orphan,
        })?;
        let ns = median_ns(&dp, Classifier::Egress, &f);
        println!("{name:<58} {ns:>8.1} {:>+12.1}", ns - empty);
        if name == "link hit, rate + latency + jitter" {
            hit = ns - empty;
        }
    }
    println!(
        "link hit (rate + latency + jitter) minus empty: {hit:.1} ns, target <= {TARGET_NS} ns: {} (ratio to target {:.2})",
        if hit <= TARGET_NS { "met" } else { "NOT met" },
        hit / TARGET_NS
    );
    println!(
        "note: test_run cannot see the clone's second pass through the classifier; the softirq figures below include it."
    );
    Ok(())
}
