//! What a user configures for a link, turned into the classifier's `LinkParams`.

use std::time::Duration;

use meshsim_common::{
    JitterDist, LINK_F_INDEPENDENT_JITTER, LinkParams, jitter_phase_q32, ns_per_byte_q20,
};

/// Default correlation time of the jitter process: short enough that a few seconds of traffic
/// see the whole distribution, long enough that packets a few ms apart are not reordered.
pub const DEFAULT_JITTER_CORRELATION: Duration = Duration::from_millis(50);
/// The correlation time is at least this many times the jitter (normal, uniform). The delay's
/// slope is `π/2 · jitter / T · R · Q'(z)` with `R² = z_k² + z_{k+1}²` (chi-squared, 2
/// degrees of freedom); for normal `Q' = 1`, so at 8 it outruns real time (and the clamp must
/// act) only where `R > 5.1`: in 2 of a million segments, at any packet rate. Uniform's `Q'`
/// is below 1.
pub const MIN_CORRELATION_PER_JITTER: u32 = 8;
/// The same for pareto and paretonormal, whose quantile function is steep in the tail
/// (`Q'(z)` grows like `Q(z) · z / 3`): at 8 × the jitter the clamp held back 0.8% of packets at
/// 100 pkt/s and 1.3% at 1000 pkt/s, which raised the mean by 0.2-0.5 × jitter/10 and the sd by
/// up to 30%; at 32 × it acts on 0.06% and 0.03% (the unit tests in `tables` measure it).
pub const MIN_CORRELATION_PER_JITTER_PARETO: u32 = 32;

/// The shortest correlation time a link with this jitter gets.
pub fn min_correlation(dist: JitterDist, jitter: Duration) -> Duration {
    let per_jitter = match dist {
        JitterDist::Normal | JitterDist::Uniform => MIN_CORRELATION_PER_JITTER,
        JitterDist::Pareto | JitterDist::ParetoNormal => MIN_CORRELATION_PER_JITTER_PARETO,
    };
    jitter * per_jitter
}

/// The queue a link has when none is configured: 200 ms of data, but never less than ten
/// full-size frames (so slow links still carry TCP), and never more than `queue_ns` can hold.
pub const DEFAULT_QUEUE: Duration = Duration::from_millis(200);
const MIN_QUEUE_FRAMES: u64 = 10;
const FULL_FRAME_BYTES: u64 = 1514;

/// One directed link's shaping, in user units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkShape {
    pub latency: Duration,
    /// Standard deviation (normal, pareto, paretonormal) or half-width (uniform).
    pub jitter: Duration,
    pub jitter_dist: JitterDist,
    /// `None`: independent samples per packet (netem-like, reorders).
    pub jitter_correlation: Option<Duration>,
    /// Bytes per second; 0 = unlimited.
    pub bandwidth_bytes_per_s: u64,
    /// Fraction of packets lost, 0.0 ..= 1.0.
    pub loss: f64,
    /// How long a packet may wait for the link; `None` = [`DEFAULT_QUEUE`] rules.
    pub queue: Option<Duration>,
}

impl Default for LinkShape {
    fn default() -> Self {
        LinkShape {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            jitter_dist: JitterDist::Normal,
            jitter_correlation: Some(DEFAULT_JITTER_CORRELATION),
            bandwidth_bytes_per_s: 0,
            loss: 0.0,
            queue: None,
        }
    }
}

impl From<&crate::model::LinkParams> for LinkShape {
    /// A model link's parameters, in both directions: the model's units (ms, bit/s, %)
    /// become the datapath's; distribution, correlation and queue keep their defaults.
    fn from(p: &crate::model::LinkParams) -> Self {
        LinkShape {
            latency: Duration::from_secs_f64(p.latency_ms / 1000.0),
            jitter: Duration::from_secs_f64(p.jitter_ms / 1000.0),
            bandwidth_bytes_per_s: p.bandwidth_bps / 8,
            loss: p.loss_pct / 100.0,
            ..Default::default()
        }
    }
}

impl LinkShape {
    /// The queue this link gets, in ns.
    pub fn queue_ns(&self) -> u32 {
        let ns = match self.queue {
            Some(q) => q.as_nanos(),
            None if self.bandwidth_bytes_per_s == 0 => DEFAULT_QUEUE.as_nanos(),
            None => {
                let frames = MIN_QUEUE_FRAMES * FULL_FRAME_BYTES * 1_000_000_000
                    / self.bandwidth_bytes_per_s;
                DEFAULT_QUEUE.as_nanos().max(frames as u128)
            }
        };
        ns.min(u32::MAX as u128) as u32
    }

    pub fn to_params(&self, index: u32) -> LinkParams {
        let (flags, corr) = match self.jitter_correlation {
            Some(c) if !c.is_zero() => (
                0,
                c.max(min_correlation(self.jitter_dist, self.jitter))
                    .as_nanos() as u64,
            ),
            _ => (LINK_F_INDEPENDENT_JITTER, 0),
        };
        LinkParams {
            latency_ns: self.latency.as_nanos() as u64,
            jitter_ns: self.jitter.as_nanos() as u64,
            bandwidth_bytes_per_s: self.bandwidth_bytes_per_s,
            jitter_corr_ns: corr,
            ns_per_byte_q20: ns_per_byte_q20(self.bandwidth_bytes_per_s),
            jitter_phase_q32: jitter_phase_q32(corr),
            loss_ppm: (self.loss.clamp(0.0, 1.0) * 1_000_000.0).round() as u32,
            queue_ns: self.queue_ns(),
            index,
            jitter_dist: self.jitter_dist as u32,
            flags,
            port_ifindex: 0,
            _pad: [0; 2],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_queue_is_200ms_or_ten_frames() {
        let fast = LinkShape {
            bandwidth_bytes_per_s: 12_500_000,
            ..Default::default()
        };
        assert_eq!(fast.queue_ns(), 200_000_000);
        // 64 kbit/s = 8000 B/s: ten 1514-byte frames take 1.8925 s.
        let slow = LinkShape {
            bandwidth_bytes_per_s: 8_000,
            ..Default::default()
        };
        assert_eq!(slow.queue_ns(), 1_892_500_000);
        let crawl = LinkShape {
            bandwidth_bytes_per_s: 1,
            ..Default::default()
        };
        assert_eq!(crawl.queue_ns(), u32::MAX);
    }

    #[test]
    fn params_carry_every_field() {
        let s = LinkShape {
            latency: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            jitter_dist: JitterDist::Pareto,
            jitter_correlation: None,
            bandwidth_bytes_per_s: 125_000,
            loss: 0.1,
            queue: Some(Duration::from_millis(30)),
        };
        let p = s.to_params(7);
        assert_eq!(p.latency_ns, 50_000_000);
        assert_eq!(p.jitter_ns, 10_000_000);
        assert_eq!(p.jitter_dist, JitterDist::Pareto as u32);
        assert_eq!(p.flags, LINK_F_INDEPENDENT_JITTER);
        assert_eq!(p.bandwidth_bytes_per_s, 125_000);
        assert_eq!(p.loss_ppm, 100_000);
        assert_eq!(p.queue_ns, 30_000_000);
        assert_eq!(p.index, 7);
        let correlated = LinkShape::default().to_params(0);
        assert_eq!(correlated.flags, 0);
        assert_eq!(
            correlated.jitter_corr_ns,
            DEFAULT_JITTER_CORRELATION.as_nanos() as u64
        );
        let wide = LinkShape {
            jitter: Duration::from_millis(100),
            ..Default::default()
        }
        .to_params(0);
        assert_eq!(wide.jitter_corr_ns, 800_000_000);
        let heavy = LinkShape {
            jitter: Duration::from_millis(10),
            jitter_dist: JitterDist::Pareto,
            ..Default::default()
        }
        .to_params(0);
        assert_eq!(heavy.jitter_corr_ns, 320_000_000);
    }
}
