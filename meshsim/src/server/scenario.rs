//! The canvas's timeline and recorder:
//!
//! - `GET /api/scenario`: the scenario running now (also a headless `meshsim run`'s): its
//!   steps, where it stands, where its results go.
//! - `POST /api/scenario?name=FILE`, the body a scenario file (TOML): loads its mesh and runs
//!   its steps; the results go to a new folder under the run's results directory.
//! - `POST /api/scenario/pause`, `/resume`, and `DELETE /api/scenario` (stop: it ends as
//!   interrupted, with its results written).
//! - `POST /api/recording` starts recording what is done through the API (the canvas);
//!   `GET` returns the recording so far as a scenario file; `DELETE` ends it and returns it.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;

use super::{ApiError, AppState, extract::Query};
use crate::scenario::{
    self, Scenario,
    desk::Status,
    run::Ports,
    session::{self, Session},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/scenario", get(read).post(start).delete(stop))
        .route("/scenario/pause", post(pause))
        .route("/scenario/resume", post(resume))
        .route(
            "/recording",
            get(recorded).post(start_recording).delete(stop_recording),
        )
}

async fn read(State(app): State<AppState>) -> axum::Json<Status> {
    axum::Json(app.desk.snapshot())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartQuery {
    name: Option<String>,
}

/// Checks the file, loads its mesh and starts its steps; answers 202 with the status.
async fn start(
    State(app): State<AppState>,
    Query(query): Query<StartQuery>,
    body: String,
) -> Result<Response, ApiError> {
    let name = scenario_name(query.name)?;
    let scenario = scenario::parse(&name, &body).map_err(|e| ApiError::Invalid {
        field: e.field().map(str::to_owned),
        message: e.to_string(),
    })?;
    if app.desk.busy() {
        return Err(ApiError::Conflict(
            "a scenario is running: stop it first (DELETE /api/scenario)".into(),
        ));
    }
    if app.desk.recording() {
        return Err(ApiError::Conflict(
            "a recording is on, and a scenario brings a whole new mesh, which no recorded \
             step can replay: stop the recording (DELETE /api/recording) first"
                .into(),
        ));
    }
    let run_workload = app.sim.state().borrow().run.workload;
    if scenario.needs_matrix() && app.matrix.is_none() {
        return Err(ApiError::Invalid {
            field: None,
            message: format!(
                "its steps send messages or wait for Matrix, and this meshsim runs {run_workload}: \
                 start meshsim with --workload synapse"
            ),
        });
    }
    let workloads = scenario
        .file
        .node_workloads(run_workload)
        .map_err(|e| ApiError::Invalid {
            field: e.field().map(str::to_owned),
            message: e.to_string(),
        })?;
    let dir = results_dir(&app.results_dir, &name)?;
    // Its nodes' restart policies (a run without homeservers has none to follow).
    if let Some(restarts) = &app.restarts {
        for (&node, &policy) in &scenario.file.node_restarts {
            restarts.set(node, Some(policy));
        }
    }
    app.sim
        .load_running(scenario.file.topology.clone(), workloads, None)
        .await?;
    let ports = Ports {
        sim: app.sim.clone(),
        matrix: app.matrix.clone(),
        workloads: app
            .workloads
            .clone()
            .unwrap_or_else(|| tokio::sync::watch::channel(Default::default()).1),
    };
    let desk = Arc::clone(&app.desk);
    let version = app.version.to_string();
    // Marked running before the answer, so the canvas sees it at once.
    desk.begin(
        &scenario,
        scenario::record::wall_ms(),
        Some(dir.display().to_string()),
    );
    tokio::spawn(run_in_background(scenario, ports, desk, dir, version));
    Ok((StatusCode::ACCEPTED, axum::Json(app.desk.snapshot())).into_response())
}

/// The longest `?name=` taken: its results folder, `<stem>-<n>`, must fit in a file name.
const MAX_NAME: usize = 200;

/// The scenario's name from `?name=`: only its last component (it names the scenario and
/// its results folder; it is never opened). A name no folder can be made from is the
/// client's mistake, so it is refused here rather than failing later as a 500.
fn scenario_name(name: Option<String>) -> Result<PathBuf, ApiError> {
    let name = name.unwrap_or_else(|| "scenario.toml".to_owned());
    let invalid = |message: String| ApiError::Invalid {
        field: Some("name".into()),
        message,
    };
    if name.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{name:?} holds a control character: name the scenario with printable characters"
        )));
    }
    let name = Path::new(&name)
        .file_name()
        .map_or_else(|| PathBuf::from("scenario.toml"), PathBuf::from);
    if name.as_os_str().len() > MAX_NAME {
        return Err(invalid(format!(
            "is {} bytes long: at most {MAX_NAME} are taken",
            name.as_os_str().len()
        )));
    }
    Ok(name)
}

async fn run_in_background(
    scenario: Scenario,
    ports: Ports,
    desk: Arc<scenario::desk::Desk>,
    dir: PathBuf,
    version: String,
) {
    let progress = |line: String| tracing::info!("scenario: {line}");
    let session = Session {
        ports: &ports,
        desk: &desk,
        dir: &dir,
        overrides: &[],
        version,
    };
    match session::run_into(&scenario, session, &progress, desk.stop_requested()).await {
        Ok(figures) => match figures.failure {
            None => tracing::info!("scenario done; its report is {}/report.md", dir.display()),
            Some(why) => tracing::warn!(
                "scenario stopped: {why}; its report is {}/report.md",
                dir.display()
            ),
        },
        Err(e) => tracing::error!("scenario results in {}: {e}", dir.display()),
    }
}

/// A new folder for one run's results: `<results>/<name>-<n>`.
fn results_dir(root: &Path, name: &Path) -> Result<PathBuf, ApiError> {
    let stem = name
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("scenario");
    let io = |e: std::io::Error| {
        ApiError::Internal(format!(
            "making a results folder under {}: {e}",
            root.display()
        ))
    };
    std::fs::create_dir_all(root).map_err(io)?;
    for n in 1.. {
        let dir = root.join(format!("{stem}-{n}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(e)),
        }
    }
    unreachable!("some number is free")
}

async fn stop(State(app): State<AppState>) -> Result<StatusCode, ApiError> {
    if app.desk.stop() {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::Conflict("no scenario is running".into()))
    }
}

async fn pause(State(app): State<AppState>) -> Result<axum::Json<Status>, ApiError> {
    if app.desk.pause() {
        Ok(axum::Json(app.desk.snapshot()))
    } else {
        Err(ApiError::Conflict("no scenario is running".into()))
    }
}

async fn resume(State(app): State<AppState>) -> Result<axum::Json<Status>, ApiError> {
    if app.desk.resume() {
        Ok(axum::Json(app.desk.snapshot()))
    } else {
        Err(ApiError::Conflict("no scenario is paused".into()))
    }
}

async fn start_recording(State(app): State<AppState>) -> Result<StatusCode, ApiError> {
    let topology = app.sim.topology().await?;
    let workload = app.sim.state().borrow().run.workload;
    if app.desk.start_recording(topology, workload) {
        Ok(StatusCode::CREATED)
    } else {
        Err(ApiError::Conflict("already recording".into()))
    }
}

fn toml_file(text: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/toml; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"recorded.toml\"",
            ),
        ],
        text,
    )
        .into_response()
}

async fn recorded(State(app): State<AppState>) -> Result<Response, ApiError> {
    app.desk
        .recorded(false)
        .map(toml_file)
        .ok_or_else(|| ApiError::Conflict("not recording: POST /api/recording starts".into()))
}

async fn stop_recording(State(app): State<AppState>) -> Result<Response, ApiError> {
    app.desk
        .recorded(true)
        .map(toml_file)
        .ok_or_else(|| ApiError::Conflict("not recording".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the api fuzz target: a NUL in `?name=` made creating the results folder
    /// fail, answered 500.
    #[test]
    fn names_no_folder_can_have_are_refused_as_the_clients_mistake() {
        for bad in [
            "a\0b.toml",
            "\u{1}.toml",
            "x\ny.toml",
            &"a".repeat(MAX_NAME + 1),
        ] {
            let error = scenario_name(Some(bad.to_owned())).unwrap_err();
            assert!(
                matches!(&error, ApiError::Invalid { field: Some(f), .. } if f == "name"),
                "{bad:?}: {error:?}"
            );
        }
        assert_eq!(scenario_name(None).unwrap(), PathBuf::from("scenario.toml"));
        assert_eq!(
            scenario_name(Some("../../etc/flap.toml".into())).unwrap(),
            PathBuf::from("flap.toml")
        );
        assert_eq!(
            scenario_name(Some("..".into())).unwrap(),
            PathBuf::from("scenario.toml")
        );
        let longest = "a".repeat(MAX_NAME);
        assert_eq!(
            scenario_name(Some(longest.clone())).unwrap(),
            PathBuf::from(longest)
        );
    }
}
