//! Mesh-wide settings: the link rule's knobs and the defaults every link starts from.

use serde::{Deserialize, Serialize};

use super::error::{
    MAX_LATENCY_SCALE_PCT, ModelError, check_bandwidth, check_ms, check_pct, check_range,
};

/// How a derived link's bandwidth depends on its length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BandwidthMode {
    /// Every link gets `bandwidth_bps`.
    #[default]
    Fixed,
    /// `bandwidth_bps * (max_latency_ms - latency_ms) / max_latency_ms`: long links are slow,
    /// as radio links are. See [`Settings::derived_bandwidth_bps`] for the edge cases.
    DecayWithDistance,
}

/// What a shortest path minimises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostMetric {
    /// The sum of link latencies.
    #[default]
    Latency,
    /// The sum of `1 / bandwidth` over the links: prefers fast links, then fewer of them.
    Bandwidth,
}

/// Mesh-wide settings. Every field has a default, so a document may give any subset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The most links a node may have (at least 1).
    pub neighbours: u32,
    /// Pairs whose distance latency is above this are never linked.
    pub max_latency_ms: f64,
    /// Latency per pixel of canvas distance, in percent: `latency_ms = distance * pct / 100`.
    pub latency_scale_pct: f64,
    /// Link bandwidth in bits per second; 0 means unlimited, as in the datapath.
    pub bandwidth_bps: u64,
    pub bandwidth_mode: BandwidthMode,
    /// Default jitter of every link.
    pub jitter_ms: f64,
    /// Default loss of every link, 0..=100.
    pub loss_pct: f64,
    /// What routing minimises.
    pub cost: CostMetric,
}

impl Default for Settings {
    /// The defaults of matrix-org's meshsim: five neighbours, 300 ms reach, 512 kbit/s.
    fn default() -> Self {
        Self {
            neighbours: 5,
            max_latency_ms: 300.0,
            latency_scale_pct: 100.0,
            bandwidth_bps: 512_000,
            bandwidth_mode: BandwidthMode::Fixed,
            jitter_ms: 0.0,
            loss_pct: 0.0,
            cost: CostMetric::Latency,
        }
    }
}

impl Settings {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.neighbours == 0 {
            return Err(ModelError::invalid(
                "neighbours",
                "must be at least 1, got 0",
            ));
        }
        check_ms("max_latency_ms", self.max_latency_ms)?;
        check_range(
            "latency_scale_pct",
            self.latency_scale_pct,
            0.0,
            MAX_LATENCY_SCALE_PCT,
        )?;
        check_bandwidth("bandwidth_bps", self.bandwidth_bps)?;
        check_ms("jitter_ms", self.jitter_ms)?;
        check_pct("loss_pct", self.loss_pct)
    }

    /// The latency of a pair `distance` pixels apart.
    pub fn latency_ms(&self, distance: f64) -> f64 {
        distance * self.latency_scale_pct / 100.0
    }

    /// The bandwidth of a derived link with distance latency `latency_ms`.
    ///
    /// In decay mode an unlimited (0) bandwidth stays unlimited, and a limited one never decays
    /// below 1 bit/s: at exactly `max_latency_ms` the formula gives 0, which the datapath would
    /// read as "unlimited" and make the longest link the fastest. With `max_latency_ms == 0`
    /// only zero-length links exist and they keep the full bandwidth.
    pub fn derived_bandwidth_bps(&self, latency_ms: f64) -> u64 {
        match self.bandwidth_mode {
            BandwidthMode::Fixed => self.bandwidth_bps,
            BandwidthMode::DecayWithDistance if self.bandwidth_bps == 0 => 0,
            BandwidthMode::DecayWithDistance => {
                let factor = if self.max_latency_ms > 0.0 {
                    ((self.max_latency_ms - latency_ms) / self.max_latency_ms).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                // `as` saturates; the product never exceeds bandwidth_bps since factor <= 1.
                ((self.bandwidth_bps as f64 * factor).floor() as u64).max(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn bad_settings_name_the_field() {
        type Spoil = fn(&mut Settings);
        let cases: [(&str, Spoil); 7] = [
            ("neighbours", |s| s.neighbours = 0),
            ("max_latency_ms", |s| s.max_latency_ms = -1.0),
            ("max_latency_ms", |s| s.max_latency_ms = f64::NAN),
            ("latency_scale_pct", |s| s.latency_scale_pct = f64::INFINITY),
            ("jitter_ms", |s| s.jitter_ms = -0.5),
            ("loss_pct", |s| s.loss_pct = 100.5),
            ("loss_pct", |s| s.loss_pct = f64::NAN),
        ];
        for (field, spoil) in cases {
            let mut settings = Settings::default();
            spoil(&mut settings);
            assert_eq!(settings.validate().unwrap_err().field(), Some(field));
        }
    }

    #[test]
    fn bandwidth_decays_with_distance_but_never_to_unlimited() {
        let settings = Settings {
            bandwidth_mode: BandwidthMode::DecayWithDistance,
            bandwidth_bps: 1000,
            max_latency_ms: 200.0,
            ..Settings::default()
        };
        assert_eq!(settings.derived_bandwidth_bps(0.0), 1000);
        assert_eq!(settings.derived_bandwidth_bps(50.0), 750);
        assert_eq!(settings.derived_bandwidth_bps(200.0), 1);
        let unlimited = Settings {
            bandwidth_bps: 0,
            ..settings
        };
        assert_eq!(unlimited.derived_bandwidth_bps(50.0), 0);
    }

    #[test]
    fn unknown_settings_fields_are_refused() {
        use serde::de::{IntoDeserializer, value::MapDeserializer};
        let fields = [("neighbours", 3u32), ("neighbors", 3u32)];
        let de: MapDeserializer<'_, _, serde::de::value::Error> =
            MapDeserializer::new(fields.into_iter().map(|(k, v)| (k, v.into_deserializer())));
        let err = Settings::deserialize(de).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `neighbors`"),
            "{err}"
        );
    }

    #[test]
    fn missing_settings_fields_take_defaults() {
        use serde::de::{IntoDeserializer, value::MapDeserializer};
        let fields = [("neighbours", 3u32)];
        let de: MapDeserializer<'_, _, serde::de::value::Error> =
            MapDeserializer::new(fields.into_iter().map(|(k, v)| (k, v.into_deserializer())));
        let settings = Settings::deserialize(de).unwrap();
        assert_eq!(
            settings,
            Settings {
                neighbours: 3,
                ..Settings::default()
            }
        );
    }
}
