//! The run's homeserver zygote (`--launch fork`, the default on netns): one Python process
//! that imports Synapse once and forks every node's homeserver (`zygote.py`). A forked
//! homeserver shares the imported code's pages with the zygote and its siblings until it
//! writes to them, so it starts in about a second instead of several and costs a fraction
//! of a cold start's memory (docs/benchmarks.md, "Density").
//!
//! meshsim writes one JSON request per line on the zygote's stdin and reads one answer per
//! line from its stdout, and between the answers the zygote says how each homeserver it
//! forked ended (it reaps them). The zygote is started like any node process: in a process group of
//! its own, killed by the kernel if meshsim dies, and so are the homeservers it forked.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{ChildStdin, ChildStdout, Command},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use serde::{Deserialize, Serialize};

use super::super::{
    host::{Confinement, NodeEntry, NodeProcess},
    restart::Exit,
};
use crate::runtime::{
    confine::Plan,
    process::{ChildProcess, HostPid, pid_alive},
};

/// The script, written into the run directory at start.
const SCRIPT: &str = include_str!("zygote.py");
/// Importing Synapse takes ~3 s here; a loaded machine gets much longer.
const READY_WITHIN: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ZygoteError {
    #[error("could not start the homeserver zygote ({python}): {source}")]
    Start {
        python: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the homeserver zygote did not get ready ({why}); the end of {log}:\n{tail}\n\
         (`--launch cold` starts every homeserver on its own instead)"
    )]
    NotReady {
        why: String,
        log: PathBuf,
        tail: String,
    },
    #[error("the homeserver zygote: {0}")]
    Fork(String),
}

/// One line meshsim writes: start a homeserver in this node.
#[derive(Serialize)]
struct Request<'a> {
    /// The node's name, for the process's name (`synapse n1` in ps and top).
    name: &'a str,
    netns: &'a Path,
    covers: Vec<(&'a Path, &'a Path)>,
    dir: &'a Path,
    /// The node's user and what it may write, as a plan to carry out (`None`: it stays
    /// root).
    confinement: Option<Plan>,
    log: &'a Path,
    argv: &'a [String],
}

/// What the zygote did to its code before forking (`--unspecialised`): how many code
/// objects it kept from specialising, or why it could not.
#[derive(Deserialize)]
#[serde(untagged)]
enum Unspecialised {
    Kept(u64),
    Not(String),
}

/// One line the zygote writes: an answer, or how a child ended.
#[derive(Deserialize)]
struct Answer {
    ready: Option<f64>,
    unspecialised: Option<Unspecialised>,
    pid: Option<u32>,
    error: Option<String>,
    exited: Option<u32>,
    code: Option<i32>,
    signal: Option<i32>,
}

/// How the zygote's children ended, by pid, as it reported them (it reaps them).
type Exits = Arc<Mutex<HashMap<u32, Exit>>>;

/// The pipes to a running zygote: requests go down `to`; a thread reads every line it
/// writes, keeps the children's ends in `exits` and hands the answers to `answers` in order.
struct Pipes {
    to: ChildStdin,
    answers: mpsc::Receiver<Result<Answer, String>>,
}

impl Pipes {
    fn read(&mut self) -> Result<Answer, String> {
        self.answers
            .recv()
            .unwrap_or_else(|_| Err("it exited".to_owned()))
    }
}

/// Reads the zygote's lines until it closes its stdout.
fn read_lines(from: ChildStdout, exits: Exits, answers: mpsc::Sender<Result<Answer, String>>) {
    let mut from = BufReader::new(from);
    loop {
        let mut line = String::new();
        let answer = match from.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                serde_json::from_str::<Answer>(&line).map_err(|e| format!("it said {line:?}: {e}"))
            }
            Err(e) => Err(format!("reading its answer: {e}")),
        };
        if let Ok(Answer {
            exited: Some(pid),
            code,
            signal,
            ..
        }) = answer
        {
            let exit = match (code, signal) {
                (_, Some(signal)) => Exit::Signal(signal),
                (Some(code), None) => Exit::Code(code),
                (None, None) => Exit::Unknown,
            };
            lock(&exits).insert(pid, exit);
            continue;
        }
        let failed = answer.is_err();
        if answers.send(answer).is_err() || failed {
            return;
        }
    }
}

/// A homeserver the zygote forked: watched by its pid, its end as the zygote reported it.
struct Forked {
    pid: HostPid,
    exits: Exits,
    /// The zygote's pid.
    zygote: u32,
}

impl NodeProcess for Forked {
    fn pid(&self) -> u32 {
        self.pid.pid()
    }

    fn alive(&self) -> bool {
        self.exit().is_none()
    }

    fn exit(&self) -> Option<Exit> {
        if let Some(exit) = lock(&self.exits).get(&self.pid.0) {
            return Some(*exit);
        }
        // While the zygote lives it reports every end (a child it has reaped but not yet
        // reported is ending, not gone); without it, the pid is all there is.
        (!pid_alive(self.zygote) && !self.pid.alive()).then_some(Exit::Unknown)
    }

    fn stop(&self) {
        if lock(&self.exits).contains_key(&self.pid.0) {
            // Reaped: its pid may be another process's by now. What it started keeps its
            // group's id reserved, so only the group is signalled.
            let _ = killpg(Pid::from_raw(self.pid.0 as i32), Signal::SIGKILL);
            return;
        }
        self.pid.stop();
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        lock(&self.exits).remove(&self.pid.0);
    }
}

/// A running zygote. Dropping it does not stop it: [`Zygote::stop`] does, at the run's end.
pub struct Zygote {
    process: ChildProcess,
    pipes: Arc<Mutex<Pipes>>,
    exits: Exits,
}

impl Zygote {
    /// Writes the script into `run_dir`, starts it with `python` (the venv's), and waits
    /// until it has imported Synapse. Its own output goes to `log`.
    ///
    /// With `unspecialised` (the run merges pages, `--ksm`) it keeps the code it imported
    /// from being specialised by the interpreter, which would write a private copy of every
    /// page of code a homeserver runs (`keep_code_unspecialised` in zygote.py).
    ///
    /// Call it where [`ChildProcess::spawn`] may be called: from a thread that lives as long
    /// as the run.
    pub async fn start(
        python: &Path,
        run_dir: &Path,
        log: &Path,
        unspecialised: bool,
    ) -> Result<Self, ZygoteError> {
        let start_error = |source| ZygoteError::Start {
            python: python.to_owned(),
            source,
        };
        let script = run_dir.join("zygote.py");
        std::fs::write(&script, SCRIPT).map_err(start_error)?;
        let mut cmd = Command::new(python);
        cmd.arg(&script).current_dir(run_dir);
        if unspecialised {
            cmd.arg("--unspecialised");
        }
        let (process, to, from) = ChildProcess::spawn_piped(cmd, log).map_err(start_error)?;
        let exits = Exits::default();
        let (answered, answers) = mpsc::channel();
        let reader_exits = Arc::clone(&exits);
        std::thread::Builder::new()
            .name("zygote-reader".into())
            .spawn(move || read_lines(from, reader_exits, answered))
            .map_err(start_error)?;
        let pipes = Arc::new(Mutex::new(Pipes { to, answers }));
        let reading = Arc::clone(&pipes);
        let ready = tokio::time::timeout(
            READY_WITHIN,
            tokio::task::spawn_blocking(move || lock(&reading).read()),
        )
        .await;
        let why = match ready {
            Ok(Ok(Ok(Answer {
                ready: Some(seconds),
                unspecialised,
                ..
            }))) => {
                tracing::info!("the homeserver zygote imported Synapse in {seconds:.1} s");
                match unspecialised {
                    Some(Unspecialised::Kept(n)) => tracing::info!(
                        "--ksm: the zygote keeps {n} code objects unspecialised, so that \
                         homeservers' pages of code stay mergeable"
                    ),
                    Some(Unspecialised::Not(why)) => tracing::warn!(
                        "--ksm: the zygote could not keep its code unspecialised ({why}); \
                         homeservers share less memory"
                    ),
                    None => {}
                }
                return Ok(Zygote {
                    process,
                    pipes,
                    exits,
                });
            }
            Ok(Ok(Ok(_))) => "its first line was not `ready`".to_owned(),
            Ok(Ok(Err(why))) => why,
            Ok(Err(panic)) => std::panic::resume_unwind(panic.into_panic()),
            Err(_) => format!("not within {} s", READY_WITHIN.as_secs()),
        };
        // Its reader ends with it.
        process.stop();
        Err(ZygoteError::NotReady {
            why,
            log: log.to_owned(),
            tail: super::super::log_tail(log, 12),
        })
    }

    /// Forks node `node`'s homeserver into the node `entry` describes, running
    /// `python -m synapse.app.homeserver ARGV` in `dir` with its output appended to `log`,
    /// confined as `confinement` says (as `runtime::confine` does it).
    pub async fn fork(
        &self,
        node: &str,
        entry: &NodeEntry,
        dir: &Path,
        confinement: Option<&Confinement>,
        log: &Path,
        argv: &[String],
    ) -> Result<Box<dyn NodeProcess>, ZygoteError> {
        let confinement = confinement
            .map(Plan::of)
            .transpose()
            .map_err(|e| ZygoteError::Fork(format!("confining {node}: {e}")))?;
        let request = Request {
            name: node,
            netns: &entry.netns,
            covers: entry
                .covers
                .iter()
                .map(|c| (c.file.as_path(), c.target.as_path()))
                .collect(),
            dir,
            confinement,
            log,
            argv,
        };
        let mut line = serde_json::to_string(&request).expect("a request serialises");
        line.push('\n');
        let pipes = Arc::clone(&self.pipes);
        let answer = tokio::task::spawn_blocking(move || {
            let mut pipes = lock(&pipes);
            pipes
                .to
                .write_all(line.as_bytes())
                .map_err(|e| format!("writing to it: {e}"))?;
            pipes.read()
        })
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
        match answer {
            Ok(Answer { pid: Some(pid), .. }) => Ok(Box::new(Forked {
                pid: HostPid(pid),
                exits: Arc::clone(&self.exits),
                zygote: self.process.pid(),
            })),
            Ok(Answer {
                error: Some(why), ..
            }) => Err(ZygoteError::Fork(why)),
            Ok(_) => Err(ZygoteError::Fork("an answer without a pid".to_owned())),
            Err(why) => Err(ZygoteError::Fork(why)),
        }
    }

    /// Stops it (the homeservers it forked are stopped with their nodes).
    pub fn stop(&self) {
        self.process.stop();
    }

    /// Its pid, for tests and messages.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
