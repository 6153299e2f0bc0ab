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
use aya_log_ebpf::warn;
use meshsim_common::{
    CLONE_MARK, CONFIG_F_DEBUG_LOG, CONFIG_F_ORPHAN, CONFIG_F_STRICT, Config, LinkCounters,
    LinkKey, LinkParams, LinkState, MAX_LINKS, MAX_NODES, NodeInfo, Verdict, global,
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
    // SAFETY: the context pointer is the kernel's __sk_buff for this call, valid for the
    // whole run; the verifier rewrites each field access into a checked context access.
    unsafe {
        if (*skb).mark == CLONE_MARK && (*skb).cb[3] == CLONE_MARK {
            return release_clone(skb);
        }
        shape(&ctx, skb)
    }
}

/// Whether `flag` is set in the program-wide `CONFIG`.
#[inline(always)]
fn config(flag: u32) -> bool {
    CONFIG.get(0).is_some_and(|c| c.flags & flag != 0)
}

/// # Safety
/// `skb` must be the context of the running program (see `meshsim_egress`).
#[inline(always)]
unsafe fn shape(ctx: &TcContext, skb: *mut __sk_buff) -> i32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 12 > end {
        return TC_ACT_OK;
    }
    // SAFETY: `data + 12 <= data_end` was checked above, so the 12 bytes are in the packet;
    // an unaligned read of a byte array needs no alignment. Reading them as one array (then
    // indexing) keeps LLVM from calling memcpy, a BPF subprogram call per packet.
    let h = unsafe { core::ptr::read_unaligned(data as *const [u8; 12]) };
    // The Ethernet header starts with dst, then src.
    let key = LinkKey {
        dst: [h[0], h[1], h[2], h[3], h[4], h[5]],
        src: [h[6], h[7], h[8], h[9], h[10], h[11]],
    };
    // SAFETY: `skb` is this run's context (the caller's contract); a plain field read.
    let (wire_len, ifindex, gso_segs) =
        unsafe { ((*skb).wire_len, (*skb).ifindex, (*skb).gso_segs) };
    // SAFETY: the value is read only for this packet; user space replaces a link's value as
    // a whole (one map update), so a concurrent update gives the old or the new one.
    let Some(params) = (unsafe { LINKS.get(&key) }) else {
        // SAFETY: `skb` is this run's context.
        return unsafe { unmatched(ctx, skb, &key, wire_len) };
    };
    if params.port_ifindex != ifindex {
        count_global(global::FLOODED_PACKETS, 1);
        return TC_ACT_SHOT;
    }
    let (Some(state), Some(counters)) = (
        LINK_STATE.get_ptr_mut(params.index),
        LINK_COUNTERS.get_ptr_mut(params.index),
    ) else {
        return TC_ACT_OK;
    };
    // SAFETY: both pointers come from the maps for an index the verifier bounds-checked,
    // and stay valid for the run. The per-CPU counters have no other writer (tc runs with
    // bottom halves off). The link's state is shared between CPUs: a race between two
    // CPUs' packets on one link can lose one update of `next_free_ns`, which costs at most
    // one packet's serialisation time, as Cilium's EDT tolerates (READ_ONCE/WRITE_ONCE).
    let (state, counters) = unsafe { (&mut *state, &mut *counters) };
    // A GSO packet is several segments on the wire.
    let segs = match gso_segs {
        0 => 1,
        n => n as u64,
    };
    if params.is_transparent() {
        counters.packets += segs;
        counters.bytes += wire_len as u64;
        return TC_ACT_OK;
    }
    // SAFETY: a helper without arguments that reads the monotonic clock.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a helper without arguments that returns a pseudo-random number.
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
            // SAFETY: `skb` is this run's context.
            unsafe { hand_to_fq(ctx, skb, depart_ns, params.index) }
        }
    }
}

/// Sets the departure time. fq holds the packet until then; but a held packet still belongs to
/// its socket (on the veth + bridge path nothing orphans it), so TCP small queues and UDP send
/// buffers would throttle the sender to a fraction of the link (docs/architecture.md, "The
/// socket charge"). netem orphans on enqueue; fq does not. So the packet goes to fq as a
/// clone, which carries no socket, and the original is dropped (freed, which releases the
/// socket's charge). The redirect clears `tstamp`, so the clone carries its departure time in
/// `cb` and gets it back on its second pass through this program (`release_clone`).
///
/// # Safety
/// `skb` must be the context of the running program.
#[inline(always)]
unsafe fn hand_to_fq(ctx: &TcContext, skb: *mut __sk_buff, depart_ns: u64, slot: u32) -> i32 {
    // SAFETY: `skb` is this run's context (the caller's contract): field writes the verifier
    // allows for tc programs (tstamp, mark, cb), and a clone-redirect of it to its own device.
    unsafe {
        (*skb).tstamp = depart_ns;
        if !config(CONFIG_F_ORPHAN) {
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
    }
    count_global(global::CLONE_FAILED, 1);
    // A rare path: the kernel would not clone (out of memory). Say so when asked to.
    if config(CONFIG_F_DEBUG_LOG) {
        warn!(
            ctx,
            "link slot {}: clone failed, the packet leaves with its socket", slot
        );
    }
    TC_ACT_OK
}

/// # Safety
/// `skb` must be the context of the running program.
#[inline(always)]
unsafe fn release_clone(skb: *mut __sk_buff) -> i32 {
    // SAFETY: `skb` is this run's context (the caller's contract); field reads and writes
    // the verifier allows for tc programs.
    unsafe {
        (*skb).tstamp = (*skb).cb[0] as u64 | ((*skb).cb[1] as u64) << 32;
        (*skb).mark = (*skb).cb[2];
        (*skb).cb[3] = 0;
    }
    TC_ACT_OK
}

/// A frame that is no link: pass it, unless it is between two nodes that are not linked and
/// the topology is strict.
///
/// # Safety
/// `skb` must be the context of the running program.
#[inline(always)]
unsafe fn unmatched(ctx: &TcContext, skb: *mut __sk_buff, key: &LinkKey, wire_len: u32) -> i32 {
    // SAFETY: map values read only for this packet (see `shape`); the lookups run only in
    // strict mode, and the second only when the first found a node.
    if config(CONFIG_F_STRICT)
        && unsafe { NODES.get(&key.src).is_some() }
        && let Some(dst) = unsafe { NODES.get(&key.dst) }
    {
        // SAFETY: `skb` is this run's context (the caller's contract).
        if dst.port_ifindex != unsafe { (*skb).ifindex } {
            count_global(global::FLOODED_PACKETS, 1);
        } else {
            count_global(global::UNLINKED_PACKETS, 1);
            count_global(global::UNLINKED_BYTES, wire_len as u64);
            // A rare path: a node sent to one it has no link to. Say so when asked to.
            if config(CONFIG_F_DEBUG_LOG) {
                warn!(
                    ctx,
                    "strict mode: dropped a frame {:mac} -> {:mac} (not linked)", key.src, key.dst
                );
            }
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
        // SAFETY: the pointer is the map's per-CPU slot for an index it bounds-checked, and
        // tc runs with bottom halves off: no concurrent writer on this CPU.
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
