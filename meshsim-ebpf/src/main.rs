//! The meshsim tc classifier, attached at egress of every node's host-side veth.
//!
//! A frame from node A to its next hop B leaves the bridge through B's host-side veth, so here
//! its Ethernet header names the directed link A→B. The program counts the frame on that link
//! and gives it an Earliest Departure Time (`skb->tstamp`) that `fq` on the same device honours.
#![no_std]
#![no_main]
// The entry points `#[classifier]` generates take the kernel's raw context pointer.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_clone_redirect, bpf_get_prandom_u32, bpf_ktime_get_ns},
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::TcContext,
};
use meshsim_common::{
    CLONE_MARK, CONFIG_F_ORPHAN, CONFIG_F_STRICT, Config, LinkCounters, LinkKey, LinkParams,
    LinkState, MAX_LINKS, MAX_NODES, NodeInfo, Verdict, global,
    jitter::{BLEND_LEN, Blend, DIST_COUNT, DIST_LEN, JitterTables, NORMAL_LEN},
    schedule,
};

#[map]
static LINKS: HashMap<LinkKey, LinkParams> = HashMap::with_max_entries(MAX_LINKS, 0);
#[map]
static LINK_STATE: Array<LinkState> = Array::with_max_entries(MAX_LINKS, 0);
#[map]
static LINK_COUNTERS: PerCpuArray<LinkCounters> = PerCpuArray::with_max_entries(MAX_LINKS, 0);
/// MAC -> node index: tells node frames from the host's and from broadcasts.
#[map]
static NODES: HashMap<[u8; 6], NodeInfo> = HashMap::with_max_entries(MAX_NODES, 0);
#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
#[map]
static GLOBAL_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(global::COUNT, 0);
#[map]
static JITTER_NORMAL: Array<i32> = Array::with_max_entries(NORMAL_LEN, 0);
#[map]
static JITTER_BLEND: Array<Blend> = Array::with_max_entries(BLEND_LEN, 0);
#[map]
static JITTER_DIST: Array<i32> = Array::with_max_entries(DIST_COUNT * DIST_LEN, 0);

struct MapTables;

impl JitterTables for MapTables {
    #[inline(always)]
    fn normal(&self, i: u32) -> Option<i32> {
        JITTER_NORMAL.get(i).copied()
    }
    #[inline(always)]
    fn blend(&self, phase: u32) -> Option<Blend> {
        JITTER_BLEND.get(phase).copied()
    }
    #[inline(always)]
    fn dist(&self, dist: u32, bin: u32) -> Option<i32> {
        if dist >= DIST_COUNT {
            return None;
        }
        JITTER_DIST.get(dist * DIST_LEN + bin).copied()
    }
}

#[classifier]
pub fn meshsim_egress(ctx: TcContext) -> i32 {
    let skb = ctx.as_ptr() as *mut __sk_buff;
    // SAFETY: the context pointer is the kernel's __sk_buff for this call; the verifier
    // rewrites each field access.
    unsafe {
        if (*skb).mark == CLONE_MARK && (*skb).cb[3] == CLONE_MARK {
            return release_clone(skb);
        }
        shape(&ctx, skb)
    }
}

/// The harness's own cost in the benchmark: a classifier that does nothing.
#[classifier]
pub fn meshsim_empty(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

/// The benchmark's floor: reading the clock, which every shaped packet must do.
#[classifier]
pub fn meshsim_clock(_ctx: TcContext) -> i32 {
    (unsafe { bpf_ktime_get_ns() } & 1) as i32
}

#[inline(always)]
unsafe fn shape(ctx: &TcContext, skb: *mut __sk_buff) -> i32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 12 > end {
        return TC_ACT_OK;
    }
    // SAFETY: bounds checked above. The Ethernet header starts with dst, then src; indexing
    // each byte keeps LLVM from calling memcpy (a BPF subprogram call per packet).
    let h = unsafe { core::ptr::read_unaligned(data as *const [u8; 12]) };
    let key = LinkKey {
        dst: [h[0], h[1], h[2], h[3], h[4], h[5]],
        src: [h[6], h[7], h[8], h[9], h[10], h[11]],
    };
    let wire_len = unsafe { (*skb).wire_len };
    // SAFETY: map values are only read or written through these pointers for this packet.
    let Some(params) = (unsafe { LINKS.get(&key) }) else {
        return unsafe { unmatched(skb, &key, wire_len) };
    };
    if params.port_ifindex != unsafe { (*skb).ifindex } {
        count_global(global::FLOODED_PACKETS, 1);
        return TC_ACT_SHOT;
    }
    let (Some(state), Some(counters)) = (
        LINK_STATE.get_ptr_mut(params.index),
        LINK_COUNTERS.get_ptr_mut(params.index),
    ) else {
        return TC_ACT_OK;
    };
    let (state, counters) = unsafe { (&mut *state, &mut *counters) };
    // A GSO packet is several segments on the wire.
    let segs = match unsafe { (*skb).gso_segs } {
        0 => 1,
        n => n as u64,
    };
    if params.is_transparent() {
        counters.packets += segs;
        counters.bytes += wire_len as u64;
        return TC_ACT_OK;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let random = || unsafe { bpf_get_prandom_u32() };
    match schedule(&MapTables, params, state, now, wire_len, random) {
        Verdict::DropQueue => {
            counters.dropped_queue += segs;
            TC_ACT_SHOT
        }
        Verdict::DropLoss => {
            counters.dropped_loss += segs;
            TC_ACT_SHOT
        }
        Verdict::Send { depart_ns } => {
            counters.packets += segs;
            counters.bytes += wire_len as u64;
            unsafe { hand_to_fq(skb, depart_ns) }
        }
    }
}

/// Sets the departure time. fq holds the packet until then; but a held packet still belongs to
/// its socket (on the veth + bridge path nothing orphans it), so TCP small queues and UDP send
/// buffers would throttle the sender to a fraction of the link (DESIGN.md, trap 1). netem
/// orphans on enqueue; fq does not. So the packet goes to fq as a clone, which carries no
/// socket, and the original is dropped (freed, which releases the socket's charge). The
/// redirect clears `tstamp`, so the clone carries its departure time in `cb` and gets it back
/// on its second pass through this program (`release_clone`).
#[inline(always)]
unsafe fn hand_to_fq(skb: *mut __sk_buff, depart_ns: u64) -> i32 {
    unsafe {
        (*skb).tstamp = depart_ns;
        let orphan = CONFIG
            .get(0)
            .is_some_and(|c| c.flags & CONFIG_F_ORPHAN != 0);
        if !orphan {
            return TC_ACT_OK;
        }
        let mark = (*skb).mark;
        (*skb).cb[0] = depart_ns as u32;
        (*skb).cb[1] = (depart_ns >> 32) as u32;
        (*skb).cb[2] = mark;
        (*skb).cb[3] = CLONE_MARK;
        (*skb).mark = CLONE_MARK;
        let ret = bpf_clone_redirect(skb, (*skb).ifindex, 0);
        (*skb).mark = mark;
        (*skb).cb[3] = 0;
        if ret == 0 {
            // The original must not leave too. TCX knows no "stolen" verdict (anything but
            // pass, drop or redirect means "next program", then pass), so drop it: its
            // caller is the bridge, which ignores the result, never the sending socket.
            return TC_ACT_SHOT;
        }
        count_global(global::CLONE_FAILED, 1);
        TC_ACT_OK
    }
}

#[inline(always)]
unsafe fn release_clone(skb: *mut __sk_buff) -> i32 {
    unsafe {
        (*skb).tstamp = (*skb).cb[0] as u64 | ((*skb).cb[1] as u64) << 32;
        (*skb).mark = (*skb).cb[2];
        (*skb).cb[3] = 0;
    }
    TC_ACT_OK
}

/// A frame that is no link: pass it, unless it is between two nodes that are not linked and
/// the topology is strict.
#[inline(always)]
unsafe fn unmatched(skb: *mut __sk_buff, key: &LinkKey, wire_len: u32) -> i32 {
    let strict = CONFIG
        .get(0)
        .is_some_and(|c| c.flags & CONFIG_F_STRICT != 0);
    if strict
        && unsafe { NODES.get(&key.src).is_some() }
        && let Some(dst) = unsafe { NODES.get(&key.dst) }
    {
        if dst.port_ifindex != unsafe { (*skb).ifindex } {
            count_global(global::FLOODED_PACKETS, 1);
        } else {
            count_global(global::UNLINKED_PACKETS, 1);
            count_global(global::UNLINKED_BYTES, wire_len as u64);
        }
        return TC_ACT_SHOT;
    }
    count_global(global::UNMATCHED_PACKETS, 1);
    count_global(global::UNMATCHED_BYTES, wire_len as u64);
    TC_ACT_OK
}

#[inline(always)]
fn count_global(slot: u32, n: u64) {
    if let Some(c) = GLOBAL_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, and tc runs with bottom halves off: no concurrent writer.
        unsafe { *c += n };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
