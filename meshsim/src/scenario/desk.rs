//! Where a running meshsim keeps its scenario business, shared by the runner, the API and
//! the canvas's timeline: the scenario running now (its steps and where it stands), pausing
//! it, and the recording of what people do on the canvas.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::sync::watch;

use super::{
    Scenario,
    step::{Action, When},
    write,
};
use crate::model::Topology;

/// One step as the timeline shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepView {
    pub index: usize,
    pub line: usize,
    pub kind: &'static str,
    pub what: String,
    /// When it is due, ms since the start: known for `at` steps from the beginning, for
    /// `after` steps once the step before ended.
    pub due_ms: Option<f64>,
    pub started_ms: Option<f64>,
    pub done_ms: Option<f64>,
    pub error: Option<String>,
}

/// Where the scenario stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Idle,
    Running,
    Paused,
    Done,
    Failed,
}

/// The timeline's whole picture, sent to the canvas on every change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub state: RunState,
    /// The scenario's file (or what the canvas loaded).
    pub scenario: Option<String>,
    pub steps: Vec<StepView>,
    /// The step running now, or the next one due.
    pub current: Option<usize>,
    /// The scenario's start, ms since the epoch: the canvas counts the time from it.
    pub started_wall_ms: Option<f64>,
    /// Time spent paused so far, ms.
    pub paused_ms: f64,
    /// While paused: the scenario's time (ms since its start, less earlier pauses) when the
    /// pause began, where the timeline holds its cursor.
    pub held_at_ms: Option<f64>,
    /// Where the results go.
    pub out: Option<String>,
    pub failure: Option<String>,
    /// Whether what people do is being recorded.
    pub recording: bool,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            state: RunState::Idle,
            scenario: None,
            steps: Vec::new(),
            current: None,
            started_wall_ms: None,
            paused_ms: 0.0,
            held_at_ms: None,
            out: None,
            failure: None,
            recording: false,
        }
    }
}

/// A recording: the mesh when it began, and every change since with its time.
struct Recording {
    start: Instant,
    topology: Topology,
    workload: String,
    steps: Vec<(Duration, Action)>,
}

/// The desk; shared (`Arc`) by whoever needs it.
pub struct Desk {
    status: watch::Sender<Status>,
    paused: watch::Sender<bool>,
    recording: Mutex<Option<Recording>>,
    /// Counts requests to stop the scenario running now (it ends as interrupted, its
    /// results written); a runner waits for the count to change.
    stop: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Desk {
    fn default() -> Self {
        Desk {
            status: watch::Sender::new(Status::default()),
            paused: watch::Sender::new(false),
            recording: Mutex::new(None),
            stop: watch::Sender::new(0),
        }
    }
}

impl Desk {
    pub fn new() -> Arc<Self> {
        Arc::new(Desk::default())
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    pub fn snapshot(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Whether a scenario is running (or paused).
    pub fn busy(&self) -> bool {
        matches!(
            self.status.borrow().state,
            RunState::Running | RunState::Paused
        )
    }

    /// A scenario begins: its steps, their `at` times, where its results go.
    pub fn begin(&self, scenario: &Scenario, started_wall_ms: f64, out: Option<String>) {
        self.paused.send_replace(false);
        self.status.send_modify(|s| {
            *s = Status {
                state: RunState::Running,
                scenario: Some(scenario.path.display().to_string()),
                steps: scenario
                    .steps
                    .iter()
                    .map(|step| StepView {
                        index: step.index,
                        line: step.line,
                        kind: step.action.kind(),
                        what: step.action.describe(),
                        due_ms: match step.when {
                            When::At(t) => Some(t.as_secs_f64() * 1000.0),
                            When::After(_) => None,
                        },
                        started_ms: None,
                        done_ms: None,
                        error: None,
                    })
                    .collect(),
                current: (!scenario.steps.is_empty()).then_some(0),
                started_wall_ms: Some(started_wall_ms),
                paused_ms: 0.0,
                held_at_ms: None,
                out,
                failure: None,
                recording: s.recording,
            };
        });
    }

    /// Step `index` is due at `due_ms` (known once the step before ended).
    pub fn due(&self, index: usize, due_ms: f64) {
        self.status.send_modify(|s| {
            if let Some(step) = s.steps.get_mut(index) {
                step.due_ms = Some(due_ms);
            }
            s.current = Some(index);
        });
    }

    pub fn started(&self, index: usize, t_ms: f64) {
        self.status.send_modify(|s| {
            if let Some(step) = s.steps.get_mut(index) {
                step.started_ms = Some(t_ms);
            }
            s.current = Some(index);
        });
    }

    pub fn done(&self, index: usize, t_ms: f64, error: Option<String>) {
        self.status.send_modify(|s| {
            if let Some(step) = s.steps.get_mut(index) {
                step.done_ms = Some(t_ms);
                step.error = error;
            }
            s.current = (index + 1 < s.steps.len()).then_some(index + 1);
        });
    }

    /// The scenario ended, with its failure if it had one.
    pub fn end(&self, failure: Option<String>) {
        self.paused.send_replace(false);
        self.status.send_modify(|s| {
            s.state = if failure.is_some() {
                RunState::Failed
            } else {
                RunState::Done
            };
            s.failure = failure;
        });
    }

    /// Holds the steps (a running step finishes; background flaps and streams go on).
    pub fn pause(&self) -> bool {
        if self.status.borrow().state != RunState::Running {
            return false;
        }
        self.paused.send_replace(true);
        let now = super::record::wall_ms();
        self.status.send_modify(|s| {
            s.state = RunState::Paused;
            s.held_at_ms = s.started_wall_ms.map(|t0| now - t0 - s.paused_ms);
        });
        true
    }

    pub fn resume(&self) -> bool {
        if self.status.borrow().state != RunState::Paused {
            return false;
        }
        self.paused.send_replace(false);
        self.status.send_modify(|s| {
            s.state = RunState::Running;
            s.held_at_ms = None;
        });
        true
    }

    /// What the runner watches to hold its steps.
    pub fn paused(&self) -> watch::Receiver<bool> {
        self.paused.subscribe()
    }

    /// Adds time spent paused.
    pub fn add_paused(&self, d: Duration) {
        self.status
            .send_modify(|s| s.paused_ms += d.as_secs_f64() * 1000.0);
    }

    /// Asks the scenario running now to stop; false when none runs.
    pub fn stop(&self) -> bool {
        if !self.busy() {
            return false;
        }
        self.stop.send_modify(|n| *n += 1);
        true
    }

    /// Resolves when [`Desk::stop`] is asked after this is first polled.
    pub async fn stop_requested(&self) {
        let mut requests = self.stop.subscribe();
        requests.borrow_and_update();
        let _ = requests.changed().await;
    }

    /// Starts recording from the mesh as it is now (`workload`: the run's).
    pub fn start_recording(&self, topology: Topology, workload: &str) -> bool {
        let mut recording = lock(&self.recording);
        if recording.is_some() {
            return false;
        }
        *recording = Some(Recording {
            start: Instant::now(),
            topology,
            workload: workload.to_owned(),
            steps: Vec::new(),
        });
        self.status.send_modify(|s| s.recording = true);
        true
    }

    pub fn recording(&self) -> bool {
        lock(&self.recording).is_some()
    }

    /// Records one change, now; nothing when not recording.
    pub fn record(&self, action: Action) {
        if let Some(r) = lock(&self.recording).as_mut() {
            r.steps.push((r.start.elapsed(), action));
        }
    }

    /// The recording so far as a scenario file; `stop` ends it. `None` when not recording.
    pub fn recorded(&self, stop: bool) -> Option<String> {
        let mut recording = lock(&self.recording);
        let text = recording
            .as_ref()
            .map(|r| write::to_toml(&r.topology, Some(&r.workload), &r.steps));
        if stop && recording.take().is_some() {
            self.status.send_modify(|s| s.recording = false);
        }
        text
    }
}
