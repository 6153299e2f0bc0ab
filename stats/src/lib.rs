//! The statistics meshsim's measurements share: the jitter-table unit tests, the kernel and
//! VM tiers and the fidelity report compute their figures with these, so a figure means the
//! same wherever it is printed.

/// `v` sorted ascending (NaN last).
pub fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// The `q` quantile of sorted data (nearest rank); NaN for no data.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

/// The median (the upper one for an even count), of unsorted data.
pub fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    s[s.len() / 2]
}

/// Mean and (population) standard deviation.
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Kolmogorov-Smirnov distance between sorted data and a CDF: the largest gap between the
/// empirical CDF (on either side of each step) and `cdf`.
pub fn ks_sorted(sorted: &[f64], cdf: impl Fn(f64) -> f64) -> f64 {
    let n = sorted.len() as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = cdf(x);
            (f - i as f64 / n).max((i + 1) as f64 / n - f)
        })
        .fold(0.0, f64::max)
}

/// [`ks_sorted`] of unsorted data.
pub fn ks(samples: &[f64], cdf: impl Fn(f64) -> f64) -> f64 {
    ks_sorted(&sorted(samples), cdf)
}

/// The distance that `n` independent samples of the right distribution stay under 99% of the
/// time (the KS test's critical value, 1.63 / √n).
pub fn ks_noise(n: usize) -> f64 {
    1.63 / (n.max(1) as f64).sqrt()
}

/// The 99% interval of Binomial(n, p): its 0.5% and 99.5% quantiles, computed exactly.
pub fn binomial_interval(n: u64, p: f64) -> (u64, u64) {
    let ln_ratio = (p / (1.0 - p)).ln();
    // ln pmf(k) up to a constant, by pmf(k+1)/pmf(k) = (n-k)/(k+1) · p/(1-p).
    let mut ln_pmf = Vec::with_capacity(n as usize + 1);
    let mut acc = 0.0;
    ln_pmf.push(acc);
    for k in 0..n {
        acc += ((n - k) as f64 / (k + 1) as f64).ln() + ln_ratio;
        ln_pmf.push(acc);
    }
    let top = ln_pmf.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let pmf: Vec<f64> = ln_pmf.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = pmf.iter().sum();
    let (mut cdf, mut lo, mut hi) = (0.0, None, n);
    for (k, w) in pmf.iter().enumerate() {
        cdf += w / total;
        if lo.is_none() && cdf >= 0.005 {
            lo = Some(k as u64);
        }
        if cdf >= 0.995 {
            hi = k as u64;
            break;
        }
    }
    (lo.unwrap_or(0), hi)
}

/// Pairs that arrive out of order: how many values are smaller than one before them in
/// `sequence` (a sequence number read in arrival order), counted once each.
pub fn reordered(sequence: &[u64]) -> usize {
    let mut highest = None;
    let mut late = 0;
    for &s in sequence {
        match highest {
            Some(h) if s < h => late += 1,
            _ => highest = Some(s),
        }
    }
    late
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_moments() {
        let v = [3.0, 1.0, 2.0, 4.0];
        let s = sorted(&v);
        assert_eq!(s, [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(quantile(&s, 0.5), 2.0);
        assert_eq!(quantile(&s, 1.0), 4.0);
        assert_eq!(median(&v), 3.0);
        let (mean, sd) = mean_sd(&v);
        assert_eq!(mean, 2.5);
        assert!((sd - 1.25f64.sqrt()).abs() < 1e-12);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn ks_of_a_uniform_grid_is_small_and_of_a_shift_is_large() {
        let grid: Vec<f64> = (0..1000).map(|i| (i as f64 + 0.5) / 1000.0).collect();
        let uniform = |x: f64| x.clamp(0.0, 1.0);
        assert!(ks(&grid, uniform) <= 0.0005 + 1e-12);
        let shifted: Vec<f64> = grid.iter().map(|x| x * 0.5).collect();
        assert!((ks(&shifted, uniform) - 0.5).abs() < 0.01);
        assert!((ks_noise(10_000) - 0.0163).abs() < 1e-12);
    }

    #[test]
    fn the_binomial_interval_holds_its_mean() {
        // Binomial(20000, 0.1): mean 2000, sd 42.4; the 99% interval is about ±2.576 sd.
        let (lo, hi) = binomial_interval(20_000, 0.1);
        assert!(
            (1885..=1895).contains(&lo) && (2105..=2115).contains(&hi),
            "{lo}..{hi}"
        );
    }

    #[test]
    fn late_arrivals_are_counted_once() {
        assert_eq!(reordered(&[1, 2, 3, 4]), 0);
        assert_eq!(reordered(&[1, 3, 2, 4]), 1);
        assert_eq!(reordered(&[5, 1, 2, 3, 4, 6]), 4);
    }
}
