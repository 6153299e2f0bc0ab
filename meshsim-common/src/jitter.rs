//! The per-link delay process behind jitter, in integers so the classifier can run it.
//!
//! The delay of a link is `latency + jitter * Q(z(t))`, where `z(t)` is a standard normal
//! process and `Q` maps it onto the chosen distribution through its quantiles
//! (`Q(z) = F⁻¹(Φ(z))`), so uniform and pareto keep their shape too.
//!
//! `z(t)` blends independent N(0,1) knots `z_k` placed every `T` (the link's correlation time):
//! inside a segment, `z(t) = cos(θ) z_k + sin(θ) z_{k+1}` with `θ = π/2 · (t - t_k) / T`.
//! As `cos² + sin² = 1`, `z(t)` is exactly N(0,1) at every instant: the marginal delay
//! distribution is the configured one. The correlation of two packets falls from 1 at gap 0 to
//! 0 at gap 2T. And `z` moves smoothly (its slope is bounded, unlike an Ornstein–Uhlenbeck
//! process, whose steps grow like the square root of the gap and so outrun short gaps): packets
//! close in time see nearly the same delay, so the delay falls more slowly than time passes and
//! departures stay in order without the per-link clamp having to act. Clamping independent
//! samples instead distorts the distribution (docs/architecture.md, "Jitter": N(50,10) became
//! mean 52.3, sd 8.4), because fq releases a flow's packets in time order.
//!
//! Read-only tables, generated in user space at start-up, make this integer-only:
//! - `NORMAL`: `NORMAL_LEN` standard normal quantiles at `(i + 0.5) / NORMAL_LEN`, Q16, so a
//!   uniform random index is a N(0,1) draw;
//! - `BLEND`: `cos θ` and `sin θ` for `BLEND_LEN` phases of a segment, Q16;
//! - `DIST`: per distribution, `Q(z)` for `z` in bins of 1/256 over [-8, 8), Q16.

use crate::link::{LINK_F_INDEPENDENT_JITTER, LinkParams, LinkState};

pub const Q16_SHIFT: u32 = 16;
pub const Q16_ONE: i64 = 1 << Q16_SHIFT;

pub const NORMAL_LEN: u32 = 4096;
/// `log2(NORMAL_LEN)`: the bits of a draw that pick a normal value.
pub const NORMAL_BITS: u32 = NORMAL_LEN.trailing_zeros();
/// Phases per segment: `θ` is resolved to 1/1024 of a quarter turn.
pub const BLEND_SHIFT: u32 = 10;
pub const BLEND_LEN: u32 = 1 << BLEND_SHIFT;
/// `z` in Q16 plus this, shifted right by `DIST_BIN_SHIFT`, is the bin index.
pub const DIST_Z_OFFSET: i64 = 8 * Q16_ONE;
pub const DIST_BIN_SHIFT: u32 = 8;
pub const DIST_LEN: u32 = 4096;
pub const DIST_COUNT: u32 = 4;

/// The multiplier that turns a time into a segment into a `BLEND` phase (0 for no segment).
pub const fn jitter_phase_q32(jitter_corr_ns: u64) -> u64 {
    if jitter_corr_ns == 0 {
        return 0;
    }
    ((BLEND_LEN as u64) << 32) / jitter_corr_ns
}

/// One entry of the `BLEND` table: the weights of the segment's two knots at one phase.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Blend {
    pub cos_q16: u32,
    pub sin_q16: u32,
}

const _: () = assert!(core::mem::size_of::<Blend>() == 8);

/// Read access to the three tables; the classifier backs it with array maps, tests with slices.
pub trait JitterTables {
    /// `i < NORMAL_LEN`.
    fn normal(&self, i: u32) -> Option<i32>;
    /// `phase < BLEND_LEN`.
    fn blend(&self, phase: u32) -> Option<Blend>;
    /// `dist < DIST_COUNT`, `bin < DIST_LEN`.
    fn dist(&self, dist: u32, bin: u32) -> Option<i32>;
}

/// Advances the link's delay process to `now` and returns this packet's jitter in ns.
/// `draw` is uniform random; only its low `log2(NORMAL_LEN)` bits are used. `more_draws`
/// gives fresh random numbers when the process must skip past whole segments.
#[inline(always)]
pub fn jitter_offset<T: JitterTables>(
    tables: &T,
    params: &LinkParams,
    state: &mut LinkState,
    now: u64,
    draw: u32,
    more_draws: impl Fn() -> u32,
) -> i64 {
    if params.jitter_ns == 0 {
        return 0;
    }
    let normal = |d: u32| tables.normal(d & (NORMAL_LEN - 1)).map(|z| z as i64);
    let Some(fresh) = normal(draw) else {
        return 0;
    };
    let segment_ns = params.jitter_corr_ns;
    let z = if params.flags & LINK_F_INDEPENDENT_JITTER != 0 || segment_ns == 0 {
        // Two independent draws blended at a random phase: N(0,1) too (for every phase the
        // weights' squares sum to 1), but reaching sqrt(2) times further than the table's
        // last entry (3.56), which a heavy tail needs: one draw cut pareto's sd to 9.4 of 10.
        let extra = more_draws();
        let Some(other) = normal(extra) else {
            return 0;
        };
        let Some(w) = tables.blend((extra >> NORMAL_BITS) & (BLEND_LEN - 1)) else {
            return 0;
        };
        (w.cos_q16 as i64 * fresh + w.sin_q16 as i64 * other + (1 << 15)) >> Q16_SHIFT
    } else {
        // Another CPU may have moved the segment past `now`: then no time has passed here.
        let elapsed = now.saturating_sub(state.jitter_at_ns);
        if state.jitter_at_ns == 0 || elapsed >= 2 * segment_ns {
            // Never used, or idle for two segments: both knots are new, from now on.
            let Some(other) = normal(more_draws()) else {
                return 0;
            };
            state.jitter_from = other;
            state.jitter_to = fresh;
            state.jitter_at_ns = now;
        } else if elapsed >= segment_ns {
            state.jitter_from = state.jitter_to;
            state.jitter_to = fresh;
            state.jitter_at_ns += segment_ns;
        }
        let into = now.saturating_sub(state.jitter_at_ns);
        let phase = ((into * params.jitter_phase_q32) >> 32) as u32;
        let Some(w) = tables.blend(phase) else {
            return 0;
        };
        (w.cos_q16 as i64 * state.jitter_from + w.sin_q16 as i64 * state.jitter_to + (1 << 15))
            >> Q16_SHIFT
    };
    let bin = ((z + DIST_Z_OFFSET) >> DIST_BIN_SHIFT).clamp(0, DIST_LEN as i64 - 1) as u32;
    match tables.dist(params.jitter_dist, bin) {
        Some(q) => (q as i64 * params.jitter_ns as i64) >> Q16_SHIFT,
        None => 0,
    }
}
