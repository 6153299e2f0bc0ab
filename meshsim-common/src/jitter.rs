//! The per-link delay process behind jitter, in integers so the classifier can run it.
//!
//! The delay of a link is `latency + jitter * Q(z)`, where `z` is a standard normal value that
//! evolves over time as an Ornstein–Uhlenbeck process with correlation time `tau`:
//! after a gap `g`, `z' = rho * z + sqrt(1 - rho²) * fresh` with `rho = exp(-g / tau)` and
//! `fresh` a new N(0,1) draw. This keeps `z` exactly N(0,1) at every packet, so the marginal
//! delay distribution is the configured one, while packets close together in time see nearly
//! the same delay and so are not reordered (fq releases a flow's packets in time order, and
//! independent per-packet samples reorder them; clamping those instead distorts the
//! distribution, see DESIGN.md). `Q` maps `z` onto the chosen distribution through its
//! quantiles (`Q(z) = F⁻¹(Φ(z))`), so uniform and pareto keep their shape too.
//!
//! Three read-only tables, generated in user space at start-up, make this integer-only:
//! - `NORMAL`: `NORMAL_LEN` standard normal quantiles at `(i + 0.5) / NORMAL_LEN`, Q16, so a
//!   uniform random index is a N(0,1) draw;
//! - `DECAY`: for `k` steps of `tau / STEPS_PER_TAU`, `rho` and `sqrt(1 - rho²)`, Q16;
//! - `DIST`: per distribution, `Q(z)` for `z` in bins of 1/256 over [-8, 8), Q16.

use crate::link::{LINK_F_INDEPENDENT_JITTER, LinkParams, LinkState};

pub const Q16_SHIFT: u32 = 16;
pub const Q16_ONE: i64 = 1 << Q16_SHIFT;

pub const NORMAL_LEN: u32 = 4096;
/// The delay process moves in steps of `tau / STEPS_PER_TAU` (a shift, not a division).
pub const STEPS_PER_TAU_SHIFT: u32 = 10;
/// After this many steps (8 tau) the old value is forgotten (rho < 0.0004).
pub const DECAY_LEN: u32 = 8 << STEPS_PER_TAU_SHIFT;
/// `z` in Q16 plus this, shifted right by `DIST_BIN_SHIFT`, is the bin index.
pub const DIST_Z_OFFSET: i64 = 8 * Q16_ONE;
pub const DIST_BIN_SHIFT: u32 = 8;
pub const DIST_LEN: u32 = 4096;
pub const DIST_COUNT: u32 = 4;

/// One entry of the `DECAY` table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecayStep {
    pub rho_q16: u32,
    pub innovation_q16: u32,
}

const _: () = assert!(core::mem::size_of::<DecayStep>() == 8);

/// Read access to the three tables; the classifier backs it with array maps, tests with slices.
pub trait JitterTables {
    /// `i < NORMAL_LEN`.
    fn normal(&self, i: u32) -> Option<i32>;
    /// `steps < DECAY_LEN`.
    fn decay(&self, steps: u32) -> Option<DecayStep>;
    /// `dist < DIST_COUNT`, `bin < DIST_LEN`.
    fn dist(&self, dist: u32, bin: u32) -> Option<i32>;
}

/// Advances the link's delay process to `now` and returns this packet's jitter in ns.
/// `draw` is uniform random; only its low `log2(NORMAL_LEN)` bits are used.
#[inline(always)]
pub fn jitter_offset<T: JitterTables>(
    tables: &T,
    params: &LinkParams,
    state: &mut LinkState,
    now: u64,
    draw: u32,
) -> i64 {
    if params.jitter_ns == 0 {
        return 0;
    }
    let Some(fresh) = tables.normal(draw & (NORMAL_LEN - 1)) else {
        return 0;
    };
    let fresh = fresh as i64;
    let step_ns = params.jitter_corr_ns >> STEPS_PER_TAU_SHIFT;
    let z = if params.flags & LINK_F_INDEPENDENT_JITTER != 0 || step_ns == 0 {
        fresh
    } else {
        // Another CPU may have advanced the process past `now`: then nothing has elapsed.
        let steps = now.saturating_sub(state.jitter_at_ns) / step_ns;
        if steps == 0 {
            state.jitter_z
        } else if steps >= DECAY_LEN as u64 {
            state.jitter_at_ns = now;
            state.jitter_z = fresh;
            fresh
        } else {
            let Some(d) = tables.decay(steps as u32) else {
                return 0;
            };
            let z = (d.rho_q16 as i64 * state.jitter_z + d.innovation_q16 as i64 * fresh)
                >> Q16_SHIFT;
            state.jitter_at_ns += steps * step_ns;
            state.jitter_z = z;
            z
        }
    };
    let bin = ((z + DIST_Z_OFFSET) >> DIST_BIN_SHIFT).clamp(0, DIST_LEN as i64 - 1) as u32;
    match tables.dist(params.jitter_dist, bin) {
        Some(q) => (q as i64 * params.jitter_ns as i64) >> Q16_SHIFT,
        None => 0,
    }
}
