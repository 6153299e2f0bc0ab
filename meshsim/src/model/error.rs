//! The one error type of the model, and the range checks that produce it.
//!
//! Every rejection of a value names the field it came from, because the HTTP API answers
//! `{ "error": ..., "field": ... }` and `meshsim up` must point at the culprit in a file.

use super::NodeId;

/// Why the model refused an operation. A refused operation changes nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A value is not a number, out of range, or inconsistent with the rest of its input.
    /// `field` is a path such as `x`, `settings.loss_pct` or `nodes[2].name`.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The operation names a node that does not exist (any more).
    #[error("no node {0}")]
    UnknownNode(NodeId),
    /// Pinning needs a link to pin; a pair that is not linked has none.
    #[error("{0} and {1} are not linked")]
    NotLinked(NodeId, NodeId),
    /// A link joins two different nodes.
    #[error("a link joins two different nodes, got {0} twice")]
    SameNode(NodeId),
    /// Every `u32` id has been handed out in this run; ids are never reused.
    #[error("node ids are exhausted")]
    IdsExhausted,
}

impl ModelError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The input field the error is about, if it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Places the field inside a document: `x` within `nodes[2]` becomes `nodes[2].x`.
    pub(crate) fn within(self, prefix: &str) -> Self {
        match self {
            Self::Invalid { field, reason } => Self::Invalid {
                field: format!("{prefix}.{field}"),
                reason,
            },
            other => other,
        }
    }
}

/// Largest latency or jitter accepted, in ms (one hour). Far beyond any mesh worth simulating,
/// and small enough that a sum of latencies along any path stays exact in u64 nanoseconds.
pub const MAX_MS: f64 = 3_600_000.0;

/// Largest bandwidth accepted, in bit/s (1 Tbit/s): routing by bandwidth costs
/// `10^12 / bandwidth` and is exact up to it, and no veth carries more.
pub const MAX_BANDWIDTH_BPS: u64 = 1_000_000_000_000;

/// Largest latency per pixel accepted, in percent (100 ms per pixel): beyond it every link
/// would exceed any reach.
pub const MAX_LATENCY_SCALE_PCT: f64 = 10_000.0;

/// Checks a bandwidth in bit/s: at most [`MAX_BANDWIDTH_BPS`] (0 is unlimited).
pub(crate) fn check_bandwidth(field: &str, value: u64) -> Result<(), ModelError> {
    if value > MAX_BANDWIDTH_BPS {
        return Err(ModelError::invalid(
            field,
            format!("must be at most {MAX_BANDWIDTH_BPS} (1 Tbit/s; 0 is unlimited), got {value}"),
        ));
    }
    Ok(())
}

/// Checks a duration in ms: finite, not negative, at most [`MAX_MS`].
pub(crate) fn check_ms(field: &str, value: f64) -> Result<(), ModelError> {
    check_range(field, value, 0.0, MAX_MS)
}

/// Checks a percentage: finite and within 0..=100.
pub(crate) fn check_pct(field: &str, value: f64) -> Result<(), ModelError> {
    check_range(field, value, 0.0, 100.0)
}

/// Checks that `value` is a finite number within `min..=max`.
pub(crate) fn check_range(field: &str, value: f64, min: f64, max: f64) -> Result<(), ModelError> {
    if !value.is_finite() {
        return Err(ModelError::invalid(
            field,
            format!("must be a finite number, got {value}"),
        ));
    }
    if value < min || value > max {
        return Err(ModelError::invalid(
            field,
            format!("must be within {min}..={max}, got {value}"),
        ));
    }
    Ok(())
}
