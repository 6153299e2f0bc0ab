//! Generates the jitter tables the classifier reads (see `meshsim_common::jitter`).
//!
//! Method, per table:
//! - `NORMAL`: the standard normal quantile at the centre of each of `NORMAL_LEN` equal
//!   probability slices (Acklam's rational approximation, relative error < 1.2e-9), rescaled
//!   so the table's own variance is exactly 1: a uniform index is then a N(0,1) draw.
//! - `BLEND`: `cos θ` and `sin θ` for `θ = π/2 · (i + 0.5) / BLEND_LEN`.
//! - `DIST`: for each distribution, `F⁻¹(Φ(z))` at the centre of each z bin, standardised so
//!   the distribution has mean 0 and standard deviation 1 (uniform: the range [-1, 1], i.e.
//!   `jitter` is its half-width, as netem has it). Pareto has shape 3 (netem's choice);
//!   paretonormal is netem's mix `0.25 * normal + 0.75 * pareto`, whose quantiles are found
//!   by inverting its CDF, computed by numerical convolution on a grid.

use meshsim_common::{
    JitterDist,
    jitter::{
        BLEND_LEN, Blend, DIST_BIN_SHIFT, DIST_COUNT, DIST_LEN, DIST_Z_OFFSET, JitterTables,
        NORMAL_LEN, Q16_ONE,
    },
};

/// All three tables, as the classifier's array maps hold them.
#[derive(Clone, Debug)]
pub struct Tables {
    pub normal: Vec<i32>,
    pub blend: Vec<Blend>,
    /// `DIST_COUNT` tables of `DIST_LEN`, in `JitterDist` order.
    pub dist: Vec<i32>,
}

impl Tables {
    pub fn generate() -> Self {
        let mut dist = Vec::with_capacity((DIST_COUNT * DIST_LEN) as usize);
        for d in JitterDist::ALL {
            dist.extend(dist_table(d));
        }
        Tables {
            normal: normal_table(),
            blend: blend_table(),
            dist,
        }
    }
}

impl JitterTables for Tables {
    fn normal(&self, i: u32) -> Option<i32> {
        self.normal.get(i as usize).copied()
    }
    fn blend(&self, phase: u32) -> Option<Blend> {
        self.blend.get(phase as usize).copied()
    }
    fn dist(&self, dist: u32, bin: u32) -> Option<i32> {
        if dist >= DIST_COUNT || bin >= DIST_LEN {
            return None;
        }
        self.dist.get((dist * DIST_LEN + bin) as usize).copied()
    }
}

fn to_q16(x: f64) -> i32 {
    (x * Q16_ONE as f64)
        .round()
        .clamp(i32::MIN as f64, i32::MAX as f64) as i32
}

fn normal_table() -> Vec<i32> {
    let n = NORMAL_LEN as usize;
    let raw: Vec<f64> = (0..n)
        .map(|i| inverse_normal_cdf((i as f64 + 0.5) / n as f64))
        .collect();
    // The centre quantiles are a little narrower than N(0,1); the mean is 0 by symmetry.
    let sd = (raw.iter().map(|x| x * x).sum::<f64>() / n as f64).sqrt();
    raw.iter().map(|x| to_q16(x / sd)).collect()
}

fn blend_table() -> Vec<Blend> {
    (0..BLEND_LEN)
        .map(|i| {
            let theta = std::f64::consts::FRAC_PI_2 * (i as f64 + 0.5) / BLEND_LEN as f64;
            Blend {
                cos_q16: to_q16(theta.cos()) as u32,
                sin_q16: to_q16(theta.sin()) as u32,
            }
        })
        .collect()
}

/// The z value at the centre of DIST bin `bin`.
pub fn bin_centre(bin: u32) -> f64 {
    let width = (1u64 << DIST_BIN_SHIFT) as f64 / Q16_ONE as f64;
    (bin as f64 + 0.5) * width - DIST_Z_OFFSET as f64 / Q16_ONE as f64
}

fn dist_table(d: JitterDist) -> Vec<i32> {
    let quantile: Box<dyn Fn(f64) -> f64> = match d {
        JitterDist::Uniform => Box::new(|u| 2.0 * u - 1.0),
        JitterDist::Normal => Box::new(inverse_normal_cdf),
        JitterDist::Pareto => Box::new(pareto_quantile),
        JitterDist::ParetoNormal => {
            let cdf = ParetoNormalCdf::new();
            Box::new(move |u| cdf.quantile(u))
        }
    };
    (0..DIST_LEN)
        .map(|b| {
            let z = bin_centre(b);
            if matches!(d, JitterDist::Normal) {
                // Exact, and keeps the extreme tails that Φ rounds to 0 or 1.
                return to_q16(z);
            }
            let u = normal_cdf(z).clamp(1e-12, 1.0 - 1e-12);
            to_q16(quantile(u))
        })
        .collect()
}

const PARETO_SHAPE: f64 = 3.0;

/// Pareto(shape 3, scale 1) has mean 1.5 and standard deviation sqrt(3)/2.
fn pareto_mean_sd() -> (f64, f64) {
    let a = PARETO_SHAPE;
    (
        a / (a - 1.0),
        (a / ((a - 1.0) * (a - 1.0) * (a - 2.0))).sqrt(),
    )
}

fn pareto_quantile(u: f64) -> f64 {
    let (mean, sd) = pareto_mean_sd();
    ((1.0 - u).powf(-1.0 / PARETO_SHAPE) - mean) / sd
}

fn pareto_cdf(x: f64) -> f64 {
    let (mean, sd) = pareto_mean_sd();
    let raw = x * sd + mean;
    if raw <= 1.0 {
        0.0
    } else {
        1.0 - raw.powf(-PARETO_SHAPE)
    }
}

/// CDF of `(0.25 N + 0.75 P) / sd` on a grid, with P the standardised pareto.
struct ParetoNormalCdf {
    xs: Vec<f64>,
    cdf: Vec<f64>,
}

impl ParetoNormalCdf {
    const NORMAL_WEIGHT: f64 = 0.25;
    const PARETO_WEIGHT: f64 = 0.75;

    fn new() -> Self {
        let sd = (Self::NORMAL_WEIGHT.powi(2) + Self::PARETO_WEIGHT.powi(2)).sqrt();
        let (lo, hi, points) = (-6.0, 60.0, 6000);
        let xs: Vec<f64> = (0..=points)
            .map(|i| lo + (hi - lo) * i as f64 / points as f64)
            .collect();
        // P(aN + bP <= y) = ∫ φ(n) F_P((y - a n) / b) dn, midpoint rule over n in [-8, 8].
        let (steps, span) = (800, 16.0);
        let dn = span / steps as f64;
        let ns: Vec<(f64, f64)> = (0..steps)
            .map(|i| {
                let n = -span / 2.0 + (i as f64 + 0.5) * dn;
                (
                    n,
                    (-n * n / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt() * dn,
                )
            })
            .collect();
        let cdf = xs
            .iter()
            .map(|&x| {
                let y = x * sd;
                ns.iter()
                    .map(|&(n, w)| {
                        w * pareto_cdf((y - Self::NORMAL_WEIGHT * n) / Self::PARETO_WEIGHT)
                    })
                    .sum::<f64>()
            })
            .collect();
        ParetoNormalCdf { xs, cdf }
    }

    fn quantile(&self, u: f64) -> f64 {
        let i = self.cdf.partition_point(|&c| c < u);
        if i == 0 {
            return self.xs[0];
        }
        if i >= self.xs.len() {
            // Beyond the grid only the pareto tail matters.
            let sd = (Self::NORMAL_WEIGHT.powi(2) + Self::PARETO_WEIGHT.powi(2)).sqrt();
            return Self::PARETO_WEIGHT * pareto_quantile(u) / sd;
        }
        let (c0, c1) = (self.cdf[i - 1], self.cdf[i]);
        let t = if c1 > c0 { (u - c0) / (c1 - c0) } else { 0.0 };
        self.xs[i - 1] + t * (self.xs[i] - self.xs[i - 1])
    }
}

/// Φ(z).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// Φ⁻¹(p) for p in (0, 1): Acklam's rational approximation in three regions.
#[expect(
    clippy::excessive_precision,
    reason = "the published coefficients, digit for digit"
)]
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383577518672690e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    const LOW: f64 = 0.02425;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use meshsim_common::{LinkParams, LinkState, Verdict, schedule};
    use meshsim_stats::ks;

    use super::*;
    use crate::datapath::{DEFAULT_JITTER_CORRELATION, LinkShape};

    /// Mean and sd of a DIST table under the N(0,1) weight of its z bins.
    fn weighted_moments(t: &Tables, d: JitterDist) -> (f64, f64) {
        let (mut w_sum, mut m1, mut m2) = (0.0, 0.0, 0.0);
        for b in 0..DIST_LEN {
            let z = bin_centre(b);
            let w = (-z * z / 2.0).exp();
            let v = t.dist(d as u32, b).unwrap() as f64 / Q16_ONE as f64;
            w_sum += w;
            m1 += w * v;
            m2 += w * v * v;
        }
        let mean = m1 / w_sum;
        (mean, (m2 / w_sum - mean * mean).sqrt())
    }

    #[test]
    fn normal_table_is_standard_normal() {
        let t = Tables::generate();
        let n = t.normal.len() as f64;
        let vals: Vec<f64> = t
            .normal
            .iter()
            .map(|&v| v as f64 / Q16_ONE as f64)
            .collect();
        let mean = vals.iter().sum::<f64>() / n;
        let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 1e-4, "mean {mean}");
        assert!((sd - 1.0).abs() < 1e-4, "sd {sd}");
        assert!(
            t.normal.windows(2).all(|w| w[0] <= w[1]),
            "quantiles must be sorted"
        );
    }

    #[test]
    fn distribution_tables_have_mean_zero_and_configured_spread() {
        let t = Tables::generate();
        for (d, want_sd) in [
            (JitterDist::Normal, 1.0),
            (JitterDist::Pareto, 1.0),
            (JitterDist::ParetoNormal, 1.0),
            // Uniform on [-1, 1].
            (JitterDist::Uniform, 1.0 / 3f64.sqrt()),
        ] {
            let (mean, sd) = weighted_moments(&t, d);
            // Pareto's heavy tail is cut where Φ(z) rounds off; its sd converges slowly.
            let tol = if matches!(d, JitterDist::Pareto | JitterDist::ParetoNormal) {
                0.03
            } else {
                0.002
            };
            assert!(mean.abs() < tol, "{d:?} mean {mean}");
            assert!(
                (sd - want_sd).abs() < tol * 2.0,
                "{d:?} sd {sd} want {want_sd}"
            );
        }
    }

    #[test]
    fn inverse_normal_cdf_inverts_normal_cdf() {
        for p in [1e-9, 0.001, 0.02425, 0.1, 0.5, 0.9, 0.999] {
            let z = inverse_normal_cdf(p);
            assert!((normal_cdf(z) - p).abs() / p < 1e-6, "p {p} z {z}");
        }
    }

    #[test]
    fn blend_weights_keep_unit_variance() {
        let t = Tables::generate();
        for w in &t.blend {
            let (c, s) = (w.cos_q16 as f64 / 65536.0, w.sin_q16 as f64 / 65536.0);
            assert!((c * c + s * s - 1.0).abs() < 1e-4);
        }
        assert!(t.blend.windows(2).all(|w| w[0].cos_q16 >= w[1].cos_q16));
    }

    /// A simple deterministic generator, so the statistical tests never flake.
    struct XorShift(std::cell::Cell<u64>);
    impl XorShift {
        fn next(&self) -> u32 {
            let mut x = self.0.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0.set(x);
            (x >> 32) as u32
        }
    }

    /// Sends `n` packets `gap_ns` apart over a jitter-only link; returns the one-way delays.
    fn delays(params: &LinkParams, n: usize, gap_ns: u64) -> Vec<f64> {
        let t = Tables::generate();
        let mut s = LinkState::default();
        let rng = XorShift(0x9e37_79b9_7f4a_7c15.into());
        (0..n)
            .map(|i| {
                let now = 1_000_000_000 + i as u64 * gap_ns;
                match schedule(&t, params, &mut s, now, 100, || rng.next()) {
                    Verdict::Send { depart_ns } => (depart_ns - now) as f64,
                    v => panic!("unexpected {v:?}"),
                }
            })
            .collect()
    }

    fn ks_normal(samples: &[f64], mean: f64, sd: f64) -> f64 {
        ks(samples, |x| normal_cdf((x - mean) / sd))
    }

    /// N(50 ms, 10 ms) with the default correlation, or independent samples.
    fn jitter_link(correlated: bool) -> LinkParams {
        LinkShape {
            latency: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            jitter_correlation: correlated.then_some(DEFAULT_JITTER_CORRELATION),
            ..Default::default()
        }
        .to_params(0)
    }

    /// Departures that the per-link clamp had to hold back (a reordering avoided by force).
    fn clamped(delays: &[f64], gap_ns: f64) -> usize {
        delays.windows(2).filter(|w| w[1] + gap_ns <= w[0]).count()
    }

    #[test]
    fn correlated_jitter_keeps_the_configured_distribution_without_reordering() {
        // 100 packets/s for 2000 s: 40,000 correlation times, plenty for a tight KS.
        let d = delays(&jitter_link(true), 200_000, 10_000_000);
        let ks = ks_normal(&d, 50e6, 10e6);
        assert!(ks < 0.01, "KS {ks}");
        let held = clamped(&d, 10e6);
        assert!(held < 5, "the clamp acted {held} times in 200,000");
    }

    #[test]
    fn correlated_jitter_holds_its_shape_at_high_packet_rates() {
        // 10,000 packets/s: consecutive delays differ by far less than the gap.
        let d = delays(&jitter_link(true), 1_000_000, 100_000);
        let ks = ks_normal(&d, 50e6, 10e6);
        assert!(ks < 0.03, "KS {ks}");
        let held = clamped(&d, 1e5);
        assert!(held < 1000, "the clamp acted {held} times in 1,000,000");
    }

    #[test]
    fn independent_jitter_is_netem_like_and_reorders() {
        let d = delays(&jitter_link(false), 50_000, 10_000_000);
        let ks = ks_normal(&d, 50e6, 10e6);
        assert!(ks < 0.02, "KS {ks}");
        let reordered = d.windows(2).filter(|w| w[1] + 10e6 < w[0]).count();
        assert!(
            reordered > 1000,
            "independent samples 10 ms apart must reorder, got {reordered}"
        );
    }

    /// 50 ms ± 10 ms of a heavy-tailed distribution, correlated.
    fn heavy_link_shape(dist: JitterDist) -> LinkShape {
        LinkShape {
            latency: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            jitter_dist: dist,
            ..Default::default()
        }
    }

    fn heavy_link(dist: JitterDist) -> LinkParams {
        heavy_link_shape(dist).to_params(0)
    }

    #[test]
    fn heavy_tailed_jitter_gets_a_correlation_time_that_keeps_the_clamp_rare() {
        let pn = ParetoNormalCdf::new();
        let standard_cdf = |dist: JitterDist, x: f64| match dist {
            JitterDist::Pareto => pareto_cdf(x),
            _ => {
                let i = pn.xs.partition_point(|&v| v < x).min(pn.xs.len() - 1);
                pn.cdf[i]
            }
        };
        for dist in [JitterDist::Pareto, JitterDist::ParetoNormal] {
            let link = heavy_link(dist);
            // 100 and 1000 packets/s, 200,000 packets each.
            for gap in [10_000_000u64, 1_000_000] {
                let d = delays(&link, 200_000, gap);
                let held = clamped(&d, gap as f64);
                assert!(
                    held < 200,
                    "{dist:?} every {gap} ns: the clamp acted {held} times"
                );
                if gap == 10_000_000 {
                    let ks = ks(&d, |x| standard_cdf(dist, (x - 50e6) / 10e6));
                    assert!(ks < 0.02, "{dist:?}: KS {ks}");
                }
            }
            // Why the longer time: at normal's 8 × the jitter the clamp acts on ~1%.
            let mut short = link;
            short.jitter_corr_ns = 80_000_000;
            short.jitter_phase_q32 = meshsim_common::jitter_phase_q32(short.jitter_corr_ns);
            let held = clamped(&delays(&short, 200_000, 10_000_000), 10e6);
            assert!(held > 1000, "{dist:?} at 8 × the jitter: {held} clamps");
        }
    }

    #[test]
    fn independent_pareto_keeps_its_tail() {
        // Pareto's variance lives far out in its tail: one normal table entry reaches z = 3.56
        // (pareto at 21.6 sd) and left an sd of 9.4 of 10; two blended reach further.
        let link = LinkShape {
            jitter_correlation: None,
            ..heavy_link_shape(JitterDist::Pareto)
        }
        .to_params(0);
        let d = delays(&link, 1_000_000, 1_000_000);
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / d.len() as f64).sqrt();
        assert!((mean - 50e6).abs() < 0.1e6, "mean {mean}");
        assert!(sd > 9.5e6 && sd < 10.3e6, "sd {sd}");
    }
}
