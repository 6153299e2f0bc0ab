//! `/api/cuts`: partitions and links taken down. `GET` shows them; `POST` makes one change,
//! written as a scenario step is: `{"partition": ["n1", "n2"]}`, `{"heal": ["n1"]}` or
//! `{"heal": "all"}`, `{"down": ["n1", "n2"]}`, `{"up": ["n1", "n2"]}`. Nodes are named or
//! numbered, as everywhere in the API.

use axum::{Router, extract::State, routing::get};
use serde::{Deserialize, Serialize};

use super::{
    ApiError, AppState,
    extract::{Json, resolve_node},
};
use crate::{
    model::{CutChange, NodeId},
    scenario::step::Action,
    sim::MeshState,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/cuts", get(read).post(change))
}

/// `{partitions: [["n1", "n2"], ...], down: [["n3", "n4"], ...]}`.
#[derive(Debug, Serialize)]
pub struct CutsBody {
    partitions: Vec<Vec<String>>,
    down: Vec<[String; 2]>,
}

fn cuts(state: &MeshState) -> CutsBody {
    let names = |ids: &[NodeId]| ids.iter().map(|id| id.name()).collect();
    CutsBody {
        partitions: state
            .snapshot
            .partitions
            .iter()
            .map(|side| names(side))
            .collect(),
        down: state
            .snapshot
            .down
            .iter()
            .map(|pair| [pair.a().name(), pair.b().name()])
            .collect(),
    }
}

async fn read(State(app): State<AppState>) -> axum::Json<CutsBody> {
    axum::Json(cuts(&app.sim.state().borrow()))
}

/// One change; exactly one key.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum CutRequest {
    Partition(Vec<String>),
    Heal(Heal),
    Down([String; 2]),
    Up([String; 2]),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Heal {
    All(AllWord),
    Nodes(Vec<String>),
}

/// The word `"all"`, and nothing else.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AllWord {
    All,
}

async fn change(
    State(app): State<AppState>,
    Json(request): Json<CutRequest>,
) -> Result<axum::Json<CutsBody>, ApiError> {
    let change = {
        let state = app.sim.state().borrow().clone();
        let resolve = |field: &str, names: &[String]| -> Result<Vec<NodeId>, ApiError> {
            names
                .iter()
                .map(|name| resolve_node(field, name, &state))
                .collect()
        };
        match &request {
            CutRequest::Partition(names) => CutChange::Partition(resolve("partition", names)?),
            CutRequest::Heal(Heal::All(AllWord::All)) => CutChange::Heal(None),
            CutRequest::Heal(Heal::Nodes(names)) => CutChange::Heal(Some(resolve("heal", names)?)),
            CutRequest::Down(pair) => {
                let ids = resolve("down", pair)?;
                CutChange::Down(ids[0], ids[1])
            }
            CutRequest::Up(pair) => {
                let ids = resolve("up", pair)?;
                CutChange::Up(ids[0], ids[1])
            }
        }
    };
    app.sim.cut(change.clone()).await.map_err(|e| match e {
        crate::sim::SimError::Model(crate::model::ModelError::NotLinked(a, b)) => {
            ApiError::invalid("down", format!("{a} and {b} are not linked"))
        }
        crate::sim::SimError::Model(crate::model::ModelError::SameNode(a)) => ApiError::invalid(
            "down",
            format!("a link joins two different nodes, got {a} twice"),
        ),
        e => ApiError::from_sim(e, &[]),
    })?;
    app.desk.record(Action::Cut(change));
    Ok(axum::Json(cuts(&app.sim.state().borrow())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::extract::parse;

    #[test]
    fn each_change_is_one_key() {
        for body in [
            r#"{"partition": ["n1", "2"]}"#,
            r#"{"heal": "all"}"#,
            r#"{"heal": ["n1"]}"#,
            r#"{"down": ["n1", "n2"]}"#,
            r#"{"up": ["n1", "n2"]}"#,
        ] {
            parse::<CutRequest>(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e:?}"));
        }
        for body in [
            r#"{"partition": ["n1"], "heal": "all"}"#,
            r#"{"heal": "some"}"#,
            r#"{"down": ["n1"]}"#,
            r#"{"cut": ["n1"]}"#,
        ] {
            assert!(parse::<CutRequest>(body.as_bytes()).is_err(), "{body}");
        }
    }
}
