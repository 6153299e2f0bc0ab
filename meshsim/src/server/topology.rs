//! `/api/topology`: the whole mesh as a document, to save and to load.

use axum::{Router, extract::State, routing::get};

use super::{ApiError, AppState, extract::Json, state::StateBody};
use crate::model::{LinkField, Model, NodeDoc, PinDoc, Snapshot, Topology};

pub fn router() -> Router<AppState> {
    Router::new().route("/topology", get(save).put(load))
}

async fn save(State(app): State<AppState>) -> axum::Json<Topology> {
    axum::Json(topology_of(&app.sim.state().borrow().snapshot))
}

/// Replaces the whole mesh with the document's; answers with the new state (as
/// `GET /api/state`). Errors name the document's field, e.g. `nodes[2].x`.
async fn load(
    State(app): State<AppState>,
    Json(topology): Json<Topology>,
) -> Result<axum::Json<StateBody>, ApiError> {
    app.sim.load(topology, None).await?;
    Ok(axum::Json(StateBody::new(&app.sim.state().borrow())))
}

/// The document of a published snapshot: settings, nodes, and the pins of the links.
///
/// The published state carries the pins of linked pairs only (as the links' pinned fields);
/// a pin kept for a pair that is not linked right now is not in it, so it is not saved.
pub fn topology_of(snapshot: &Snapshot) -> Topology {
    let nodes = snapshot
        .nodes
        .iter()
        .map(|n| NodeDoc {
            id: Some(n.id),
            name: Some(n.name.clone()),
            x: n.x,
            y: n.y,
        })
        .collect();
    let pins = snapshot
        .links
        .iter()
        .filter(|l| !l.pinned.is_empty())
        .map(|l| {
            let pinned = |f: LinkField| l.pinned.contains(&f);
            PinDoc {
                a: l.pair.a().name(),
                b: l.pair.b().name(),
                latency_ms: pinned(LinkField::LatencyMs).then_some(l.params.latency_ms),
                jitter_ms: pinned(LinkField::JitterMs).then_some(l.params.jitter_ms),
                bandwidth_bps: pinned(LinkField::BandwidthBps).then_some(l.params.bandwidth_bps),
                loss_pct: pinned(LinkField::LossPct).then_some(l.params.loss_pct),
            }
        })
        .collect();
    Topology {
        settings: snapshot.settings.clone(),
        nodes,
        pins,
    }
}

/// A model with the snapshot's inputs: the same links and routes as the Sim's model, since
/// links follow from settings and positions alone and a pinned field's value is its pin.
pub fn model_of(snapshot: &Snapshot) -> Result<Model, ApiError> {
    Model::from_topology(&topology_of(snapshot))
        .map_err(|e| ApiError::Internal(format!("the published state does not load back: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LinkPins, NodeId, Settings};

    #[test]
    fn a_snapshot_round_trips_through_its_document() {
        let mut model = Model::new(Settings {
            neighbours: 2,
            ..Settings::default()
        })
        .unwrap();
        for (x, y) in [
            (0.0, 0.0),
            (50.0, 0.0),
            (100.0, 10.0),
            (60.0, 70.0),
            (10.0, 90.0),
        ] {
            model.add_node(x, y).unwrap();
        }
        let link = model.links().next().unwrap().pair;
        let pins = LinkPins {
            latency_ms: Some(250.0),
            loss_pct: Some(3.0),
            ..LinkPins::default()
        };
        model.pin(link.a(), link.b(), &pins).unwrap();
        let again = model_of(&model.snapshot()).unwrap();
        assert_eq!(again.snapshot(), model.snapshot());
        assert_eq!(
            again.routes().collect::<Vec<_>>(),
            model.routes().collect::<Vec<_>>()
        );
        assert_eq!(again.node(NodeId(3)), model.node(NodeId(3)));
    }
}
