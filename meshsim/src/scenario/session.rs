//! One run of a scenario into a directory, as `meshsim run` and the canvas's timeline both
//! make it: the event log written as it happens, the desk kept up to date, and the report
//! written at the end, also when a step failed or the run was stopped.

use std::{future::Future, io, path::Path};

use super::{
    Scenario,
    desk::Desk,
    record::{Clock, Recorder},
    report::{self, Figures, RunFacts},
    run::{self, Ports},
};
use crate::workload::NodeWorkload;

/// What a run needs besides the scenario.
pub struct Session<'a> {
    pub ports: &'a Ports,
    pub desk: &'a Desk,
    /// Where the results go (it exists and is empty).
    pub dir: &'a Path,
    /// The `--set` overrides, for the report.
    pub overrides: &'a [String],
    /// meshsim's version, for the report.
    pub version: String,
}

/// Runs `scenario`'s steps on the running mesh until they end, one fails, or `stop`
/// resolves; writes the event log, the counters, the plots and report.md into the session's
/// directory. The figures say whether it finished.
pub async fn run_into(
    scenario: &Scenario,
    session: Session<'_>,
    progress: &(dyn Fn(String) + Send + Sync),
    stop: impl Future<Output = ()>,
) -> io::Result<Figures> {
    let clock = Clock::now();
    let (recorder, writer) = Recorder::create(&session.dir.join("events.jsonl"), clock)?;
    session.desk.begin(
        scenario,
        clock.start_wall_ms,
        Some(session.dir.display().to_string()),
    );
    let data = run::run(
        scenario,
        session.ports,
        recorder,
        session.desk,
        progress,
        stop,
    )
    .await;
    let written = match writer.await {
        Ok(result) => result,
        Err(e) => Err(io::Error::other(format!(
            "the event log's writer failed: {e}"
        ))),
    };
    let state = session.ports.sim.state().borrow().clone();
    let servers = if state.run.workload == "synapse" {
        state
            .nodes
            .values()
            .filter(|f| f.workload == NodeWorkload::Run)
            .map(|f| f.name.clone())
            .collect()
    } else {
        Default::default()
    };
    let facts = RunFacts {
        scenario: scenario.path.display().to_string(),
        version: session.version,
        backend: state.run.backend.to_owned(),
        workload: state.run.workload.to_owned(),
        overrides: session.overrides.to_vec(),
        servers,
    };
    let figures = written.and_then(|()| report::write(session.dir, &data, &facts));
    session.desk.end(match &figures {
        Ok(f) => f.failure.clone(),
        Err(e) => Some(format!("writing the results: {e}")),
    });
    figures
}
