//! `/api/links/{a}/{b}`: read a link, pin some of its parameters (both directions), unpin.

use std::str::FromStr;

use axum::{Router, extract::State, http::StatusCode, routing::get};
use serde::Deserialize;

use super::{
    ApiError, AppState,
    extract::{Json, PairPath, Query, present},
};
use crate::{
    model::{Link, LinkField, LinkPins, NodeId, Pair},
    scenario::step::Action,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/links/{a}/{b}", get(read).put(pin).delete(unpin))
}

async fn read(
    State(app): State<AppState>,
    PairPath(a, b): PairPath,
) -> Result<axum::Json<Link>, ApiError> {
    linked(&app, a, b)?
        .map(axum::Json)
        .ok_or_else(|| ApiError::NoRoute(format!("/api/links/{}/{}: not linked", a.0, b.0)))
}

/// `PUT /api/links/{a}/{b}`: the fields to pin; absent fields keep their current pin or
/// derived value. An explicit `null` is refused (see [`present`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinRequest {
    #[serde(default, deserialize_with = "present")]
    latency_ms: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    jitter_ms: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    bandwidth_bps: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    loss_pct: Option<f64>,
}

impl PinRequest {
    fn pins(&self) -> LinkPins {
        LinkPins {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            bandwidth_bps: self.bandwidth_bps,
            loss_pct: self.loss_pct,
        }
    }
}

async fn pin(
    State(app): State<AppState>,
    PairPath(a, b): PairPath,
    Json(request): Json<PinRequest>,
) -> Result<axum::Json<Link>, ApiError> {
    let pins = request.pins();
    if pins.is_empty() {
        return Err(ApiError::Invalid {
            field: None,
            message: "give at least one of latency_ms, jitter_ms, bandwidth_bps, loss_pct".into(),
        });
    }
    app.sim
        .pin(a, b, pins)
        .await
        .map_err(|e| ApiError::from_sim(e, &[("a", a), ("b", b)]))?;
    app.desk.record(Action::Pin { a, b, pins });
    linked(&app, a, b)?
        .map(axum::Json)
        .ok_or_else(|| ApiError::Conflict("the link went away while it was pinned".into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnpinQuery {
    field: Option<String>,
}

async fn unpin(
    State(app): State<AppState>,
    PairPath(a, b): PairPath,
    Query(query): Query<UnpinQuery>,
) -> Result<StatusCode, ApiError> {
    let field = query
        .field
        .as_deref()
        .map(LinkField::from_str)
        .transpose()
        .map_err(|e| ApiError::Invalid {
            field: Some("field".into()),
            message: e.to_string(),
        })?;
    app.sim
        .unpin(a, b, field)
        .await
        .map_err(|e| ApiError::from_sim(e, &[("a", a), ("b", b)]))?;
    app.desk.record(Action::Unpin { a, b, field });
    Ok(StatusCode::NO_CONTENT)
}

/// The link between `a` and `b` in the latest state, if they are linked.
fn linked(app: &AppState, a: NodeId, b: NodeId) -> Result<Option<Link>, ApiError> {
    let pair = Pair::new(a, b).map_err(|e| ApiError::invalid("b", e.to_string()))?;
    Ok(app
        .sim
        .state()
        .borrow()
        .snapshot
        .links
        .iter()
        .find(|l| l.pair == pair)
        .cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::extract::parse;

    #[test]
    fn null_is_refused_not_skipped() {
        let e = parse::<PinRequest>(br#"{"latency_ms": null, "loss_pct": 5}"#).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field(), Some("latency_ms"));
    }

    #[test]
    fn absent_fields_are_not_pinned() {
        let request = parse::<PinRequest>(br#"{"loss_pct": 5}"#).unwrap();
        assert_eq!(request.pins().fields(), [LinkField::LossPct]);
    }

    #[test]
    fn negative_or_fractional_bandwidth_is_refused() {
        for body in [r#"{"bandwidth_bps": -1}"#, r#"{"bandwidth_bps": 1.5}"#] {
            let e = parse::<PinRequest>(body.as_bytes()).unwrap_err();
            assert_eq!(e.field(), Some("bandwidth_bps"), "{body}");
        }
    }
}
