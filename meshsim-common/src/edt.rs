//! Earliest Departure Time: what the classifier decides for one packet on one link.
//!
//! The same function runs in the kernel and in the unit tests, so the arithmetic that is
//! tested is the arithmetic that shapes.

use crate::{
    jitter::{JitterTables, jitter_offset},
    link::{LINK_F_INDEPENDENT_JITTER, LinkParams, LinkState},
};

pub const NSEC_PER_SEC: u64 = 1_000_000_000;

/// Bits of the random draw used for loss (the low bits go to jitter).
pub const LOSS_DRAW_BITS: u32 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the packet to fq to leave at `depart_ns` (monotonic clock).
    Send {
        depart_ns: u64,
    },
    /// The link's queue already holds `queue_ns` of data: the link's state is left untouched.
    DropQueue,
    DropLoss,
}

/// Decides one packet of `wire_len` bytes arriving at `now` on a link. `random` gives uniform
/// random numbers; it is called once for a packet that reaches the loss check, rarely twice.
///
/// Races: `state` is shared by all CPUs and updated without a lock, as Cilium's EDT does
/// (`bpf/lib/edt.h`): two packets of one link on two CPUs at the same instant may both see the
/// same `next_free_ns`, which lets one packet through a little early. Links here carry one
/// bridge port's traffic, mostly on one CPU, and the error is bounded by one packet's
/// serialisation time.
#[inline(always)]
pub fn schedule<T: JitterTables>(
    tables: &T,
    params: &LinkParams,
    state: &mut LinkState,
    now: u64,
    wire_len: u32,
    random: impl Fn() -> u32,
) -> Verdict {
    // A link that was idle is free now: its queue does not carry over idle time.
    let start = if state.next_free_ns > now {
        state.next_free_ns
    } else {
        now
    };
    // Unlimited links have 0 here. (A multiply: a 64-bit division costs the hot path ~10 ns.)
    let done = start + ((wire_len as u64 * params.ns_per_byte_q20) >> 20);
    // Check the queue before touching the state, so a dropped packet costs the link nothing.
    if params.queue_ns != 0 && done - now > params.queue_ns as u64 {
        return Verdict::DropQueue;
    }
    state.next_free_ns = done;
    // Links without loss or jitter need no random number.
    let draw = if params.loss_ppm != 0 || params.jitter_ns != 0 {
        random()
    } else {
        0
    };
    // A lost packet still took its time on the wire, as on a real link.
    if is_lost(draw >> (32 - LOSS_DRAW_BITS), params.loss_ppm) {
        return Verdict::DropLoss;
    }
    let jitter = jitter_offset(tables, params, state, now, draw, random);
    let mut depart = (done + params.latency_ns).saturating_add_signed(jitter);
    // Negative jitter cannot make a packet leave before it has been serialised.
    if depart < done {
        depart = done;
    }
    if params.flags & LINK_F_INDEPENDENT_JITTER == 0 && depart < state.last_depart_ns {
        depart = state.last_depart_ns;
    }
    state.last_depart_ns = depart;
    Verdict::Send { depart_ns: depart }
}

/// `draw` is uniform in [0, 2^LOSS_DRAW_BITS).
#[inline(always)]
pub fn is_lost(draw: u32, loss_ppm: u32) -> bool {
    ((draw as u64 * 1_000_000) >> LOSS_DRAW_BITS) < loss_ppm as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jitter::Blend;

    /// Tables are only read when the link has jitter; these tests have none.
    struct NoTables;
    impl JitterTables for NoTables {
        fn normal(&self, _: u32) -> Option<i32> {
            None
        }
        fn blend(&self, _: u32) -> Option<Blend> {
            None
        }
        fn dist(&self, _: u32, _: u32) -> Option<i32> {
            None
        }
    }

    const NOW: u64 = 10 * NSEC_PER_SEC;
    /// A draw whose loss part is the middle of the range.
    const HALF: u32 = 1 << 31;

    fn rated(bandwidth_bytes_per_s: u64, queue_ns: u32) -> LinkParams {
        LinkParams {
            bandwidth_bytes_per_s,
            ns_per_byte_q20: crate::link::ns_per_byte_q20(bandwidth_bytes_per_s),
            queue_ns,
            ..Default::default()
        }
    }

    #[test]
    fn serialisation_time_is_exact_where_it_divides_and_close_everywhere() {
        let q20 = crate::link::ns_per_byte_q20;
        assert_eq!((1250 * q20(125_000)) >> 20, 10_000_000);
        for rate in [
            8u64,
            8_000,
            125_000,
            1_250_000,
            12_500_000,
            125_000_000,
            12_500_000_000,
        ] {
            for len in [60u64, 1514, 65_535] {
                let exact = len as f64 * 1e9 / rate as f64;
                let got = ((len * q20(rate)) >> 20) as f64;
                assert!(
                    (got - exact).abs() <= 1.0 + exact * 1e-6,
                    "rate {rate} len {len}: {got} vs {exact}"
                );
            }
        }
    }

    fn send(p: &LinkParams, s: &mut LinkState, now: u64, len: u32, draw: u32) -> Verdict {
        schedule(&NoTables, p, s, now, len, || draw)
    }

    #[test]
    fn latency_only_delays_by_latency() {
        let p = LinkParams {
            latency_ns: 50_000_000,
            ..Default::default()
        };
        let mut s = LinkState::default();
        assert_eq!(
            send(&p, &mut s, NOW, 1500, HALF),
            Verdict::Send {
                depart_ns: NOW + 50_000_000
            }
        );
        // Unlimited rate: back-to-back packets leave back to back.
        assert_eq!(
            send(&p, &mut s, NOW + 1, 1500, HALF),
            Verdict::Send {
                depart_ns: NOW + 1 + 50_000_000
            }
        );
    }

    #[test]
    fn rate_serialises_and_the_queue_builds_up() {
        // 1 Mbit/s = 125,000 B/s: 1250 bytes take 10 ms.
        let p = rated(125_000, 1_000_000_000);
        let mut s = LinkState::default();
        for i in 1..=5 {
            assert_eq!(
                send(&p, &mut s, NOW, 1250, HALF),
                Verdict::Send {
                    depart_ns: NOW + i * 10_000_000
                }
            );
        }
        // After an idle second the link is free again.
        let later = NOW + NSEC_PER_SEC;
        assert_eq!(
            send(&p, &mut s, later, 1250, HALF),
            Verdict::Send {
                depart_ns: later + 10_000_000
            }
        );
    }

    #[test]
    fn full_queue_drops_without_touching_the_link() {
        let p = rated(125_000, 25_000_000);
        let mut s = LinkState::default();
        assert!(matches!(
            send(&p, &mut s, NOW, 1250, HALF),
            Verdict::Send { .. }
        ));
        assert!(matches!(
            send(&p, &mut s, NOW, 1250, HALF),
            Verdict::Send { .. }
        ));
        let before = s;
        assert_eq!(send(&p, &mut s, NOW, 1250, HALF), Verdict::DropQueue);
        assert_eq!(s, before);
        // Once the first packet is out there is room for one more.
        assert!(matches!(
            send(&p, &mut s, NOW + 10_000_000, 1250, HALF),
            Verdict::Send { .. }
        ));
    }

    #[test]
    fn loss_follows_loss_ppm() {
        let none = LinkParams::default();
        let all = LinkParams {
            loss_ppm: 1_000_000,
            ..Default::default()
        };
        let tenth = LinkParams {
            loss_ppm: 100_000,
            ..Default::default()
        };
        let mut s = LinkState::default();
        let mut lost = 0;
        for i in 0..(1u32 << 16) {
            let draw = i << 16; // loss part sweeps its whole range evenly
            assert!(matches!(
                send(&none, &mut s, NOW, 100, draw),
                Verdict::Send { .. }
            ));
            assert_eq!(send(&all, &mut s, NOW, 100, draw), Verdict::DropLoss);
            lost += (send(&tenth, &mut s, NOW, 100, draw) == Verdict::DropLoss) as u32;
        }
        assert_eq!(lost, 6554, "10% of 65536 draws, rounded up");
    }

    #[test]
    fn departures_never_go_backwards_on_a_link() {
        // The latency shrinks between two packets: the second may not overtake the first.
        let mut p = LinkParams {
            latency_ns: 100_000_000,
            ..Default::default()
        };
        let mut s = LinkState::default();
        let Verdict::Send { depart_ns: first } = send(&p, &mut s, NOW, 100, HALF) else {
            panic!()
        };
        p.latency_ns = 10_000_000;
        let Verdict::Send { depart_ns: second } = send(&p, &mut s, NOW + 1_000, 100, HALF) else {
            panic!()
        };
        assert_eq!(second, first);
        // Independent jitter allows reordering, as netem does.
        p.flags = LINK_F_INDEPENDENT_JITTER;
        s.last_depart_ns = first;
        let Verdict::Send { depart_ns: third } = send(&p, &mut s, NOW + 2_000, 100, HALF) else {
            panic!()
        };
        assert_eq!(third, NOW + 2_000 + 10_000_000);
    }

    #[test]
    fn transparent_links_are_recognised() {
        assert!(LinkParams::default().is_transparent());
        assert!(
            !LinkParams {
                loss_ppm: 1,
                ..Default::default()
            }
            .is_transparent()
        );
    }
}
