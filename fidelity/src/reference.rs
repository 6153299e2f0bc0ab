//! The configured distributions, as each shaper defines them: what KS measures against.

use super::*;

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Shaper {
    Meshsim,
    Netem,
}

/// The distribution a shaper was configured with, in ms of one-way delay.
#[derive(Clone)]
pub(crate) enum Reference {
    Normal {
        mean: f64,
        sd: f64,
    },
    Uniform {
        lo: f64,
        hi: f64,
    },
    /// meshsim's pareto: shape 3, standardised to mean 0 and sd 1, times the jitter.
    Pareto {
        latency: f64,
        jitter: f64,
    },
    /// netem's table (sorted jitter multiples), times the jitter.
    Table {
        latency: f64,
        jitter: f64,
        values: Vec<f64>,
    },
}

pub(crate) const PARETO_SD: f64 = 0.866_025_403_784_438_6; // sqrt(3)/2, of Pareto(3, 1)

impl Reference {
    pub(crate) fn new(dist: JitterDist, shaper: Shaper, netem_pareto: &[f64]) -> Reference {
        let latency = JITTER_LATENCY.as_secs_f64() * 1e3;
        let jitter = JITTER.as_secs_f64() * 1e3;
        match (dist, shaper) {
            (JitterDist::Uniform, _) => Reference::Uniform {
                lo: latency - jitter,
                hi: latency + jitter,
            },
            (JitterDist::Pareto, Shaper::Meshsim) => Reference::Pareto { latency, jitter },
            (JitterDist::Pareto, Shaper::Netem) => Reference::Table {
                latency,
                jitter,
                values: netem_pareto.to_vec(),
            },
            _ => Reference::Normal {
                mean: latency,
                sd: jitter,
            },
        }
    }

    pub(crate) fn cdf(&self, x: f64) -> f64 {
        match self {
            Reference::Normal { mean, sd } => normal_cdf((x - mean) / sd),
            Reference::Uniform { lo, hi } => ((x - lo) / (hi - lo)).clamp(0.0, 1.0),
            Reference::Pareto { latency, jitter } => {
                let p = 1.5 + PARETO_SD * (x - latency) / jitter;
                if p < 1.0 { 0.0 } else { 1.0 - p.powi(-3) }
            }
            Reference::Table {
                latency,
                jitter,
                values,
            } => {
                let z = (x - latency) / jitter;
                values.partition_point(|&v| v <= z) as f64 / values.len() as f64
            }
        }
    }

    pub(crate) fn density(&self, x: f64) -> f64 {
        match self {
            Reference::Normal { mean, sd } => {
                let z = (x - mean) / sd;
                (-0.5 * z * z).exp() / (sd * (2.0 * std::f64::consts::PI).sqrt())
            }
            Reference::Uniform { lo, hi } => {
                if x >= *lo && x < *hi {
                    1.0 / (hi - lo)
                } else {
                    0.0
                }
            }
            Reference::Pareto { latency, jitter } => {
                let p = 1.5 + PARETO_SD * (x - latency) / jitter;
                if p < 1.0 {
                    0.0
                } else {
                    3.0 * PARETO_SD / jitter * p.powi(-4)
                }
            }
            // Over a 1 ms bin centred on x.
            Reference::Table { .. } => self.cdf(x + 0.5) - self.cdf(x - 0.5),
        }
    }

    /// Where the density jumps.
    pub(crate) fn jumps(&self) -> Vec<f64> {
        match self {
            Reference::Uniform { lo, hi } => vec![*lo, *hi],
            // The lower end of the pareto: 1.5 + PARETO_SD · (x − latency) / jitter = 1.
            Reference::Pareto { latency, jitter } => vec![latency - 0.5 * jitter / PARETO_SD],
            Reference::Normal { .. } | Reference::Table { .. } => Vec::new(),
        }
    }

    pub(crate) fn mean_sd(&self) -> (f64, f64) {
        match self {
            Reference::Normal { mean, sd } => (*mean, *sd),
            Reference::Uniform { lo, hi } => ((lo + hi) / 2.0, (hi - lo) / 12f64.sqrt()),
            Reference::Pareto { latency, jitter } => (*latency, *jitter),
            Reference::Table {
                latency,
                jitter,
                values,
            } => {
                let (m, s) = mean_sd(values);
                (latency + m * jitter, s * jitter)
            }
        }
    }
}

/// netem's distribution table `name`, as sorted jitter multiples.
pub(crate) fn netem_table(name: &str) -> Result<Vec<f64>> {
    for dir in TC_LIB_DIRS {
        let path = Path::new(dir).join(format!("{name}.dist"));
        if let Ok(text) = fs::read_to_string(&path) {
            let values: Vec<f64> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .flat_map(|l| l.split_whitespace())
                .map(|v| v.parse::<f64>().map(|v| v / NETEM_DIST_SCALE))
                .collect::<Result<_, _>>()
                .with_context(|| format!("reading {}", path.display()))?;
            ensure!(!values.is_empty(), "{} is empty", path.display());
            return Ok(sorted(&values));
        }
    }
    bail!("netem's {name}.dist is in none of {TC_LIB_DIRS:?} (install iproute2)")
}
