//! Program-wide settings and counters that belong to no link.

/// In strict mode a frame between two known nodes that are not linked is dropped.
pub const CONFIG_F_STRICT: u32 = 1 << 0;
/// Hand shaped packets to fq as socket-less clones (see the classifier for why).
pub const CONFIG_F_ORPHAN: u32 = 1 << 1;
/// Log the classifier's rare events (a failed clone, a strict-mode drop) through aya-log.
pub const CONFIG_F_DEBUG_LOG: u32 = 1 << 2;

/// Value of the single-entry `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub flags: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<Config>() == 8);

/// Slots of the per-CPU `GLOBAL_COUNTERS` array.
pub mod global {
    /// Frames whose (src, dst) pair is no link: ARP broadcasts, host traffic.
    pub const UNMATCHED_PACKETS: u32 = 0;
    pub const UNMATCHED_BYTES: u32 = 1;
    /// Frames between two known nodes that are not linked, dropped in strict mode.
    pub const UNLINKED_PACKETS: u32 = 2;
    pub const UNLINKED_BYTES: u32 = 3;
    /// Shaped packets the kernel refused to clone; they were sent still charged to their socket.
    pub const CLONE_FAILED: u32 = 4;
    /// Copies of a node-to-node frame at a port that is not its destination's: the bridge
    /// flooded it before learning where the destination is. Dropped, as the node behind
    /// that port would drop it, and so counted on no link.
    pub const FLOODED_PACKETS: u32 = 5;
    pub const COUNT: u32 = 6;
}

/// The counters that belong to no link, summed over CPUs (user space's view of
/// `GLOBAL_COUNTERS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalCounters {
    pub unmatched_packets: u64,
    pub unmatched_bytes: u64,
    pub unlinked_packets: u64,
    pub unlinked_bytes: u64,
    pub clone_failed: u64,
    pub flooded_packets: u64,
}

/// Capacity of the link maps; a 500-node mesh with 5 neighbours uses about 2,500 directed links.
pub const MAX_LINKS: u32 = 16384;
/// Capacity of the `NODES` map.
pub const MAX_NODES: u32 = 4096;

/// Marker the classifier puts on the clone it hands back to itself (in `mark`, with the
/// departure time in `cb[0..2]` and the original mark in `cb[2]`).
pub const CLONE_MARK: u32 = 0x6d73_696d; // "msim"
