//! Directed links: their key, parameters, per-link state and counters.

/// A directed link, read straight from the Ethernet header of a frame leaving the bridge.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkKey {
    pub src: [u8; 6],
    pub dst: [u8; 6],
}

const _: () = assert!(core::mem::size_of::<LinkKey>() == 12);

/// Samples are independent per packet (netem-like): the link may reorder.
pub const LINK_F_INDEPENDENT_JITTER: u32 = 1 << 0;

/// Jitter distributions, as netem has them. The tables are standardised: `jitter_ns` is the
/// standard deviation for normal, pareto and paretonormal, and the half-width for uniform.
#[repr(u32)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JitterDist {
    Uniform = 0,
    #[default]
    Normal = 1,
    Pareto = 2,
    ParetoNormal = 3,
}

impl JitterDist {
    pub const ALL: [JitterDist; 4] = [
        JitterDist::Uniform,
        JitterDist::Normal,
        JitterDist::Pareto,
        JitterDist::ParetoNormal,
    ];

    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(JitterDist::Uniform),
            1 => Some(JitterDist::Normal),
            2 => Some(JitterDist::Pareto),
            3 => Some(JitterDist::ParetoNormal),
            _ => None,
        }
    }
}

/// What user space configures for one directed link (value of the `LINKS` map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkParams {
    pub latency_ns: u64,
    /// Scale of the jitter distribution (see [`JitterDist`]); 0 = no jitter.
    pub jitter_ns: u64,
    /// 0 = unlimited.
    pub bandwidth_bytes_per_s: u64,
    /// Correlation time of the delay process (its segment length, see `jitter`); 0 behaves
    /// like independent jitter.
    pub jitter_corr_ns: u64,
    /// `NSEC_PER_SEC / bandwidth_bytes_per_s` in Q20, so serialisation is a multiply, not a
    /// division (see [`ns_per_byte_q20`]).
    pub ns_per_byte_q20: u64,
    /// `BLEND_LEN / jitter_corr_ns` in Q32: the phase within a segment, again without dividing
    /// (computed with the jitter module's `jitter_phase_q32`).
    pub jitter_phase_q32: u64,
    /// Packets lost per million.
    pub loss_ppm: u32,
    /// The longest a packet may wait for the link before it is dropped as "queue full".
    pub queue_ns: u32,
    /// Slot of this link in `LINK_STATE` and `LINK_COUNTERS`.
    pub index: u32,
    /// A [`JitterDist`] as u32.
    pub jitter_dist: u32,
    /// `LINK_F_*` bits.
    pub flags: u32,
    /// The bridge port (host-side veth) of the link's destination node: the only device
    /// where this link's frames are shaped. A copy of the frame leaving any other port is a
    /// bridge flood (the bridge has not learnt the destination yet) and is dropped.
    pub port_ifindex: u32,
    pub _pad: [u32; 2],
}

const _: () = assert!(core::mem::size_of::<LinkParams>() == 80);

/// The slowest rate a link can have: below it `ns_per_byte_q20` times a 64 KiB frame overflows.
pub const MIN_BANDWIDTH_BYTES_PER_S: u64 = 8;

/// Serialisation time per byte at `bandwidth_bytes_per_s`, in Q20 nanoseconds (0 for unlimited).
/// At 100 Gbit/s the rounding error is 1e-6, far below what a link could show.
pub const fn ns_per_byte_q20(bandwidth_bytes_per_s: u64) -> u64 {
    if bandwidth_bytes_per_s == 0 {
        return 0;
    }
    let rate = if bandwidth_bytes_per_s < MIN_BANDWIDTH_BYTES_PER_S {
        MIN_BANDWIDTH_BYTES_PER_S
    } else {
        bandwidth_bytes_per_s
    };
    (1_000_000_000u64 << 20) / rate
}

impl LinkParams {
    /// A link that only counts: no delay, no rate, no loss. Such packets are never held.
    pub const fn is_transparent(&self) -> bool {
        self.latency_ns == 0
            && self.jitter_ns == 0
            && self.bandwidth_bytes_per_s == 0
            && self.loss_ppm == 0
    }
}

/// A node, as the classifier knows it (`NODES`, by MAC).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub index: u32,
    /// The node's bridge port (host-side veth).
    pub port_ifindex: u32,
}

const _: () = assert!(core::mem::size_of::<NodeInfo>() == 8);

/// What the classifier remembers about a link between packets (`LINK_STATE`, by index).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkState {
    /// When the link finishes serialising what it has already accepted.
    pub next_free_ns: u64,
    /// Departure time of the last packet: departures never go backwards on a link.
    pub last_depart_ns: u64,
    /// Start of the delay process's current segment (0: never used).
    pub jitter_at_ns: u64,
    /// The segment's two knots, standard normal values in Q16 (see `jitter`).
    pub jitter_from: i64,
    pub jitter_to: i64,
    pub _pad: u64,
}

const _: () = assert!(core::mem::size_of::<LinkState>() == 48);

/// Per-CPU counters of one link (`LINK_COUNTERS`, by index). User space sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub packets: u64,
    pub bytes: u64,
    pub dropped_loss: u64,
    pub dropped_queue: u64,
}

const _: () = assert!(core::mem::size_of::<LinkCounters>() == 32);

impl LinkCounters {
    pub fn add(&mut self, other: &LinkCounters) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.dropped_loss += other.dropped_loss;
        self.dropped_queue += other.dropped_queue;
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), contain only integers and have no implicit padding
    // (sizes are asserted above).
    unsafe impl aya::Pod for super::LinkKey {}
    unsafe impl aya::Pod for super::LinkParams {}
    unsafe impl aya::Pod for super::LinkState {}
    unsafe impl aya::Pod for super::LinkCounters {}
    unsafe impl aya::Pod for super::NodeInfo {}
    unsafe impl aya::Pod for super::super::config::Config {}
    unsafe impl aya::Pod for super::super::jitter::Blend {}
}
