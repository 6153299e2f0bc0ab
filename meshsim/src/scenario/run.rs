//! Running a scenario's steps against a running mesh: each step at its time, through the
//! Sim (and the Matrix view for sends and waits), with everything recorded: the steps, every
//! change the Sim publishes, every Matrix sighting, and each link's counters once a second.
//!
//! The steps run one after another on one task; a flap and a stream of messages run in
//! the background, so a later step can happen while they go on. A step that fails ends the
//! run (a failed `wait until` included); what was recorded up to then is kept.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::json;
use tokio::{sync::watch, task::JoinSet, time::Instant};

use super::{
    Scenario,
    desk::Desk,
    file::{patch_settings, show},
    record::{Clock, Recorder, round3},
    step::{Action, Condition, Step, When},
};
use crate::{
    model::{CutChange, HOST, NodeId},
    sim::{MeshState, SimError, SimHandle},
    workload::{
        NodeState, NodeWorkload, WorkloadStatus,
        matrix::{EventRecord, Matrix},
    },
};

/// What a scenario runs against.
#[derive(Clone)]
pub struct Ports {
    pub sim: SimHandle,
    pub matrix: Option<Arc<Matrix>>,
    pub workloads: watch::Receiver<WorkloadStatus>,
}

/// How often each link's counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One step as it ran.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub index: usize,
    pub line: usize,
    pub action: Action,
    pub kind: &'static str,
    pub what: String,
    /// When it was due, ms since the start.
    pub due_ms: f64,
    pub started_ms: f64,
    pub done_ms: f64,
    pub error: Option<String>,
}

/// One message a step sent.
#[derive(Debug, Clone)]
pub struct SentMessage {
    pub step: usize,
    pub from: String,
    pub event_id: String,
    pub t_ms: f64,
}

/// The counters of every directed link at one time.
#[derive(Debug, Clone)]
pub struct Sample {
    pub t_ms: f64,
    /// By (from, to) name; the host is `host`.
    pub links: BTreeMap<(String, String), meshsim_common::LinkCounters>,
}

/// A flapping link going down or up.
#[derive(Debug, Clone)]
pub struct FlapEdge {
    pub t_ms: f64,
    pub a: String,
    pub b: String,
    pub down: bool,
}

/// Everything a run gathered, for the report.
#[derive(Debug, Clone)]
pub struct RunData {
    pub clock: Clock,
    pub steps: Vec<StepRecord>,
    pub total_steps: usize,
    pub sent: Vec<SentMessage>,
    pub samples: Vec<Sample>,
    pub flaps: Vec<FlapEdge>,
    /// Every Matrix event seen during the run, as last known, by id.
    pub events: BTreeMap<String, EventRecord>,
    pub ended_ms: f64,
    /// Why the run stopped early, if it did.
    pub failure: Option<String>,
}

/// Shared between the step task and the background ones.
#[derive(Default)]
struct Gathered {
    sent: Vec<SentMessage>,
    samples: Vec<Sample>,
    flaps: Vec<FlapEdge>,
    events: BTreeMap<String, EventRecord>,
    /// A background task's failure (a flap whose link went away, a send that failed).
    background_errors: Vec<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `scenario`'s steps (the topology is up already), recording into `recorder`, until
/// the last step is done, a step fails, or `stop` resolves. `progress` gets one line per
/// step and, while a wait goes on, what it waits for.
pub async fn run(
    scenario: &Scenario,
    ports: &Ports,
    recorder: Recorder,
    desk: &Desk,
    progress: &(dyn Fn(String) + Send + Sync),
    stop: impl Future<Output = ()>,
) -> RunData {
    let clock = recorder.clock();
    let gathered = Arc::new(Mutex::new(Gathered::default()));
    let mut background = JoinSet::new();
    background.spawn(watch_changes(ports.sim.clone(), recorder.clone()));
    background.spawn(sample_counters(
        ports.sim.clone(),
        clock,
        Arc::clone(&gathered),
    ));
    if let Some(matrix) = &ports.matrix {
        background.spawn(watch_matrix(
            Arc::clone(matrix),
            recorder.clone(),
            Arc::clone(&gathered),
        ));
    }
    recorder.record(
        "start",
        json!({ "scenario": scenario.path.display().to_string(), "steps": scenario.steps.len() }),
    );

    let mut runner = StepRunner {
        ports,
        recorder: recorder.clone(),
        gathered: Arc::clone(&gathered),
        background: JoinSet::new(),
        total: scenario.steps.len(),
        progress,
        desk,
        paused: desk.paused(),
        paused_for: Duration::ZERO,
    };
    let mut steps = Vec::new();
    let mut failure = None;
    tokio::select! {
        () = runner.all(&scenario.steps, &mut steps, &mut failure) => {}
        () = stop => {
            failure = Some("interrupted before its last step (Ctrl-C, SIGTERM or Stop)".to_owned());
            recorder.record("interrupted", json!({}));
        }
    }
    // Flaps and message streams still going are stopped; a flapping link is left up.
    runner.background.abort_all();
    while runner.background.join_next().await.is_some() {}
    let flaps = lock(&gathered).flaps.clone();
    for edge in flaps {
        if edge.down
            && let (Ok(a), Ok(b)) = (edge.a.parse::<NodeId>(), edge.b.parse::<NodeId>())
        {
            let _ = ports.sim.cut(CutChange::Up(a, b)).await;
        }
    }
    // One last sample, so the counters cover the whole run.
    sample_once(&ports.sim, clock, &gathered).await;
    background.abort_all();
    while background.join_next().await.is_some() {}
    if let Some(matrix) = &ports.matrix {
        // Sightings the broadcast dropped (a slow reader) are still in the log.
        let mut g = lock(&gathered);
        for record in matrix.latest_events(usize::MAX) {
            if record.sent_ms().is_some_and(|t| t >= clock.start_wall_ms) {
                g.events.insert(record.id.clone(), record);
            }
        }
    }
    let ended_ms = clock.t_ms();
    let background_errors = lock(&gathered).background_errors.clone();
    if failure.is_none()
        && let Some(first) = background_errors.first()
    {
        failure = Some(first.clone());
    }
    recorder.record("end", json!({ "failure": failure }));
    let g = std::mem::take(&mut *lock(&gathered));
    RunData {
        clock,
        total_steps: scenario.steps.len(),
        steps,
        sent: g.sent,
        samples: g.samples,
        flaps: g.flaps,
        events: g.events,
        ended_ms,
        failure,
    }
}

struct StepRunner<'a> {
    ports: &'a Ports,
    recorder: Recorder,
    gathered: Arc<Mutex<Gathered>>,
    background: JoinSet<()>,
    total: usize,
    progress: &'a (dyn Fn(String) + Send + Sync),
    desk: &'a Desk,
    /// Whether the desk holds the steps, and for how long they were held: `at` times move
    /// by it.
    paused: watch::Receiver<bool>,
    paused_for: Duration,
}

impl StepRunner<'_> {
    async fn all(
        &mut self,
        steps: &[Step],
        done: &mut Vec<StepRecord>,
        failure: &mut Option<String>,
    ) {
        let clock = self.recorder.clock();
        let mut previous_end = clock.start;
        for step in steps {
            let due = match step.when {
                When::At(t) => clock.start + t + self.paused_for,
                When::After(d) => previous_end + d,
            };
            let ms_of = |due: std::time::Instant| {
                due.saturating_duration_since(clock.start).as_secs_f64() * 1000.0
            };
            self.desk.due(step.index, ms_of(due));
            let held = self.sleep_until(due).await;
            let due = due + held;
            if !held.is_zero() {
                self.desk.due(step.index, ms_of(due));
            }
            let due_ms = ms_of(due);
            let started_ms = clock.t_ms();
            self.desk.started(step.index, started_ms);
            (self.progress)(format!(
                "[step {}/{}, {:.1}s] {}",
                step.index + 1,
                self.total,
                started_ms / 1000.0,
                step.action.describe()
            ));
            let result = self.one(step).await;
            let done_ms = clock.t_ms();
            self.desk
                .done(step.index, done_ms, result.as_ref().err().cloned());
            previous_end = std::time::Instant::now();
            let record = StepRecord {
                index: step.index,
                line: step.line,
                action: step.action.clone(),
                kind: step.action.kind(),
                what: step.action.describe(),
                due_ms,
                started_ms,
                done_ms,
                error: result.as_ref().err().cloned(),
            };
            self.recorder.record_at(
                "step",
                started_ms,
                json!({
                    "index": step.index,
                    "line": step.line,
                    "action": record.kind,
                    "what": record.what,
                    "due_ms": round3(due_ms),
                    "late_ms": round3(started_ms - due_ms),
                    "done_ms": round3(done_ms),
                    "error": record.error,
                }),
            );
            done.push(record);
            if let Err(e) = result {
                *failure = Some(format!(
                    "step {} (line {}, {}) failed: {e}",
                    step.index + 1,
                    step.line,
                    step.action.kind()
                ));
                return;
            }
            let errors = lock(&self.gathered).background_errors.clone();
            if let Some(e) = errors.first() {
                *failure = Some(e.clone());
                return;
            }
        }
    }

    async fn one(&mut self, step: &Step) -> Result<(), String> {
        let sim = &self.ports.sim;
        let sim_error = |e: SimError| e.to_string();
        match &step.action {
            Action::Add { id, x, y } => {
                let node = sim.add_node(*x, *y).await.map_err(sim_error)?;
                if node.id != *id {
                    return Err(format!(
                        "the new node is {} where the scenario expected {id}",
                        node.id
                    ));
                }
                Ok(())
            }
            Action::Move { node, x, y } => sim.move_node(*node, *x, *y).await.map_err(sim_error),
            Action::Remove(node) => sim.remove_node(*node).await.map_err(sim_error),
            Action::Pin { a, b, pins } => sim.pin(*a, *b, *pins).await.map_err(sim_error),
            Action::Unpin { a, b, field } => sim.unpin(*a, *b, *field).await.map_err(sim_error),
            Action::Settings(patch) => {
                let current = sim.state().borrow().snapshot.settings.clone();
                let settings = patch_settings(&current, patch)
                    .map_err(|(key, message)| format!("settings.{key}: {message}"))?;
                sim.set_settings(settings).await.map_err(sim_error)
            }
            Action::Client { node, link } => match node {
                Some(node) => sim.set_client(*node, Some(*link)).await.map_err(sim_error),
                None => sim.set_client_default(*link).await.map_err(sim_error),
            },
            Action::Cut(change) => sim.cut(change.clone()).await.map_err(sim_error),
            Action::Flap {
                a,
                b,
                period,
                duration,
            } => {
                self.background.spawn(flap(
                    sim.clone(),
                    (*a, *b),
                    *period,
                    *duration,
                    self.recorder.clone(),
                    Arc::clone(&self.gathered),
                ));
                Ok(())
            }
            Action::Send {
                from,
                body,
                room,
                count,
                every,
            } => {
                let matrix = self.matrix()?;
                let send = Sender {
                    matrix,
                    step: step.index,
                    from: from.name(),
                    body: body.clone(),
                    room: room.clone(),
                    recorder: self.recorder.clone(),
                    gathered: Arc::clone(&self.gathered),
                };
                if *count == 1 {
                    send.one(1).await
                } else {
                    self.background.spawn(send.many(*count, *every));
                    Ok(())
                }
            }
            Action::WaitFor(d) => {
                self.sleep_until(std::time::Instant::now() + *d).await;
                Ok(())
            }
            Action::WaitUntil { condition, timeout } => {
                self.wait_until(step, *condition, *timeout).await
            }
            Action::Mark(name) => {
                self.recorder.record("mark", json!({ "name": name }));
                Ok(())
            }
        }
    }

    /// Sleeps until `due`, moved on by the time spent paused meanwhile (returned, and added
    /// to the run's paused time, which moves every later `at` too).
    async fn sleep_until(&mut self, mut due: std::time::Instant) -> Duration {
        let mut held_for = Duration::ZERO;
        loop {
            if *self.paused.borrow_and_update() {
                let held = Instant::now();
                while *self.paused.borrow_and_update() {
                    if self.paused.changed().await.is_err() {
                        break;
                    }
                }
                let d = held.elapsed();
                held_for += d;
                self.paused_for += d;
                due += d;
                self.desk.add_paused(d);
            }
            tokio::select! {
                () = tokio::time::sleep_until(Instant::from_std(due)) => return held_for,
                changed = self.paused.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep_until(Instant::from_std(due)).await;
                        return held_for;
                    }
                }
            }
        }
    }

    fn matrix(&self) -> Result<Arc<Matrix>, String> {
        self.ports.matrix.clone().ok_or_else(|| {
            "this step needs homeservers: run with workload = \"synapse\" ([run] in the file, \
             or --workload synapse)"
                .to_owned()
        })
    }

    async fn wait_until(
        &self,
        step: &Step,
        condition: Condition,
        timeout: Duration,
    ) -> Result<(), String> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut last_told = start;
        loop {
            let missing = match condition {
                Condition::Ready => self.not_ready(),
                Condition::Converged => self.not_converged().await?,
                Condition::Delivered => self.not_delivered()?,
            };
            let Some(missing) = missing else {
                return Ok(());
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "not {} after {}: {missing}",
                    match condition {
                        Condition::Ready => "ready",
                        Condition::Converged => "converged",
                        Condition::Delivered => "delivered",
                    },
                    show(timeout)
                ));
            }
            if now - last_told >= Duration::from_secs(5) {
                last_told = now;
                (self.progress)(format!(
                    "[step {}/{}, {:.1}s] waiting: {missing} (gives up in {:.0}s)",
                    step.index + 1,
                    self.total,
                    self.recorder.clock().t_ms() / 1000.0,
                    (deadline - now).as_secs_f64()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The nodes whose workload does not answer yet; `None` when all do. A node whose
    /// workload failed fails the wait at once.
    fn not_ready(&self) -> Option<String> {
        let state = self.ports.sim.state().borrow().clone();
        let status = self.ports.workloads.borrow().clone();
        if state.run.workload == "none" {
            return None;
        }
        let mut waiting = Vec::new();
        for facts in state.nodes.values() {
            if facts.workload == NodeWorkload::None {
                continue;
            }
            let ready = match status.get(&facts.id).map(|s| &s.state) {
                Some(NodeState::Ready) => self
                    .ports
                    .matrix
                    .as_ref()
                    .is_none_or(|m| m.is_ready(&facts.name)),
                Some(NodeState::Failed(why)) => {
                    waiting.push(format!("{} failed ({why})", facts.name));
                    false
                }
                Some(NodeState::Restarting { why, .. }) => {
                    let how = why.lines().next().unwrap_or_default();
                    waiting.push(format!("{} restarting ({how})", facts.name));
                    continue;
                }
                _ => false,
            };
            if !ready {
                waiting.push(facts.name.clone());
            }
        }
        (!waiting.is_empty()).then(|| format!("waiting for {}", summarise(&waiting)))
    }

    async fn not_converged(&self) -> Result<Option<String>, String> {
        let matrix = self.matrix()?;
        let Some(room) = matrix.mesh_room() else {
            return Ok(Some("no mesh room yet".to_owned()));
        };
        let state = self.ports.sim.state().borrow().clone();
        let homeservers: Vec<String> = state
            .nodes
            .values()
            .filter(|f| f.workload == NodeWorkload::Run)
            .map(|f| f.name.clone())
            .collect();
        let members = matrix.members(&room);
        let outside: Vec<String> = homeservers
            .iter()
            .filter(|n| !members.contains(*n))
            .cloned()
            .collect();
        if !outside.is_empty() {
            return Ok(Some(format!(
                "not in the mesh room: {}",
                summarise(&outside)
            )));
        }
        if !matrix.converged(&room).await {
            return Ok(Some(
                "the servers do not all know each other in the mesh room yet".to_owned(),
            ));
        }
        Ok(None)
    }

    /// Messages sent by the scenario that a server in their room has not seen yet.
    fn not_delivered(&self) -> Result<Option<String>, String> {
        let matrix = self.matrix()?;
        let g = lock(&self.gathered);
        let mut pending = 0;
        let mut awaiting: BTreeMap<String, usize> = BTreeMap::new();
        for sent in &g.sent {
            let Some(record) = g.events.get(&sent.event_id) else {
                // Not even its origin's observer has seen it yet.
                pending += 1;
                *awaiting.entry(sent.from.clone()).or_default() += 1;
                continue;
            };
            let nodes = matrix.awaiting(record);
            if !nodes.is_empty() {
                pending += 1;
            }
            for node in nodes {
                *awaiting.entry(node).or_default() += 1;
            }
        }
        if pending == 0 {
            return Ok(None);
        }
        let by_node: Vec<String> = awaiting
            .iter()
            .map(|(node, n)| format!("{node} awaits {n}"))
            .collect();
        Ok(Some(format!(
            "{pending} of {} messages not everywhere ({})",
            g.sent.len(),
            summarise(&by_node)
        )))
    }
}

/// At most eight items, then how many more.
fn summarise(items: &[String]) -> String {
    if items.len() <= 8 {
        items.join(", ")
    } else {
        format!("{}, and {} more", items[..8].join(", "), items.len() - 8)
    }
}

/// Sends a step's messages.
struct Sender {
    matrix: Arc<Matrix>,
    step: usize,
    from: String,
    body: Option<String>,
    room: Option<String>,
    recorder: Recorder,
    gathered: Arc<Mutex<Gathered>>,
}

impl Sender {
    async fn one(&self, k: u32) -> Result<(), String> {
        let body = match &self.body {
            Some(body) => body.clone(),
            None => format!("message {k} of step {} from {}", self.step + 1, self.from),
        };
        let t_ms = self.recorder.clock().t_ms();
        let sent = self
            .matrix
            .send(&self.from, self.room.as_deref(), &body)
            .await
            .map_err(|e| e.to_string())?;
        self.recorder.record_at(
            "sent",
            t_ms,
            json!({ "step": self.step, "from": self.from, "room": sent.room, "event": sent.event_id, "body": body }),
        );
        lock(&self.gathered).sent.push(SentMessage {
            step: self.step,
            from: self.from.clone(),
            event_id: sent.event_id,
            t_ms,
        });
        Ok(())
    }

    async fn many(self, count: u32, every: Duration) {
        let start = Instant::now();
        for k in 1..=count {
            tokio::time::sleep_until(start + every * (k - 1)).await;
            if let Err(e) = self.one(k).await {
                lock(&self.gathered).background_errors.push(format!(
                    "message {k} of step {} from {} failed: {e}",
                    self.step + 1,
                    self.from
                ));
                return;
            }
        }
    }
}

/// Takes the link down for half of each period and up for the other half, ending up.
async fn flap(
    sim: SimHandle,
    (a, b): (NodeId, NodeId),
    period: Duration,
    duration: Duration,
    recorder: Recorder,
    gathered: Arc<Mutex<Gathered>>,
) {
    let half = period / 2;
    let mut at = Instant::now();
    let end = at + duration;
    // Whole periods only: down for a half, then up for a half.
    while at + period <= end {
        for (down, next) in [(true, at + half), (false, at + period)] {
            tokio::time::sleep_until(at).await;
            let change = if down {
                CutChange::Down(a, b)
            } else {
                CutChange::Up(a, b)
            };
            let t_ms = recorder.clock().t_ms();
            if let Err(e) = sim.cut(change).await {
                lock(&gathered)
                    .background_errors
                    .push(format!("flapping {a}-{b}: {e}"));
                return;
            }
            recorder.record_at(
                "flap",
                t_ms,
                json!({ "a": a.name(), "b": b.name(), "down": down }),
            );
            lock(&gathered).flaps.push(FlapEdge {
                t_ms,
                a: a.name(),
                b: b.name(),
                down,
            });
            at = next;
        }
    }
}

/// Records every state the Sim publishes, in short.
async fn watch_changes(sim: SimHandle, recorder: Recorder) {
    let mut state = sim.state();
    loop {
        let s: Arc<MeshState> = state.borrow_and_update().clone();
        recorder.record(
            "change",
            json!({
                "version": s.version,
                "nodes": s.snapshot.nodes.len(),
                "links": s.snapshot.links.len(),
                "cut_links": s.snapshot.links.iter().filter(|l| l.cut).count(),
                "partitions": s.snapshot.partitions.iter().map(|p| p.iter().map(|id| id.name()).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "apply_ms": round3(
                    (s.last_apply.runtime + s.last_apply.datapath + s.last_apply.routes).as_secs_f64() * 1000.0
                ),
            }),
        );
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// Records every Matrix sighting and keeps the latest record of each event.
async fn watch_matrix(matrix: Arc<Matrix>, recorder: Recorder, gathered: Arc<Mutex<Gathered>>) {
    let clock = recorder.clock();
    let mut updates = matrix.subscribe();
    loop {
        let observed = match updates.recv().await {
            Ok(o) => o,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(skipped)) => {
                // The sightings themselves are still in the run's event log, which
                // deliveries.csv and the report are made from; this log says a gap is here.
                recorder.record("matrix_lagged", json!({ "skipped_updates": skipped }));
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let record = &observed.record;
        let seen: BTreeMap<&String, f64> = record
            .seen
            .iter()
            .map(|(node, wall)| (node, round3(clock.from_wall(*wall))))
            .collect();
        recorder.record(
            "matrix",
            json!({
                "event": record.id,
                "type": record.event_type,
                "origin": record.origin,
                "sent_ms": record.sent_ms().map(|t| round3(clock.from_wall(t))),
                "seen_ms": seen,
                "deliveries": observed.deliveries.iter().map(|d| json!({"node": d.node, "ms": round3(d.ms)})).collect::<Vec<_>>(),
            }),
        );
        lock(&gathered)
            .events
            .insert(record.id.clone(), record.clone());
    }
}

async fn sample_counters(sim: SimHandle, clock: Clock, gathered: Arc<Mutex<Gathered>>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sample_once(&sim, clock, &gathered).await;
    }
}

async fn sample_once(sim: &SimHandle, clock: Clock, gathered: &Mutex<Gathered>) {
    let Ok(reader) = sim.counter_reader().await else {
        return;
    };
    let state = sim.state().borrow().clone();
    let name = |id: NodeId| {
        if id == HOST {
            "host".to_owned()
        } else {
            id.name()
        }
    };
    let t_ms = clock.t_ms();
    let links = state
        .link_slots
        .iter()
        .filter_map(|(&(from, to), &slot)| Some(((name(from), name(to)), reader.link(slot).ok()?)))
        .collect();
    lock(gathered).samples.push(Sample { t_ms, links });
}
