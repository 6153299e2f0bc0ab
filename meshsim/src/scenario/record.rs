//! The run's event log: one JSON object per line, each with the run's monotonic time
//! (`t_ms`, from the scenario's start) and the wall time (`wall_ms`, ms since the epoch),
//! written by one task so that whoever records never waits for the disk.

use std::{
    io::Write as _,
    path::Path,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{Map, Value};
use tokio::sync::mpsc;

/// The run's clock: the scenario's start, on the monotonic clock and on the wall clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub start: Instant,
    /// The wall clock at `start`, ms since the epoch.
    pub start_wall_ms: f64,
}

impl Clock {
    pub fn now() -> Self {
        Clock {
            start: Instant::now(),
            start_wall_ms: wall_ms(),
        }
    }

    /// Ms since the start.
    pub fn t_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// A wall time (ms since the epoch) as ms since the start.
    pub fn from_wall(&self, wall_ms: f64) -> f64 {
        wall_ms - self.start_wall_ms
    }
}

/// The wall clock, ms since the epoch.
pub fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Where records go; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    clock: Clock,
    tx: mpsc::UnboundedSender<Value>,
}

impl Recorder {
    /// A recorder writing to `path`, and the task that writes (it ends when every recorder
    /// is dropped, after writing everything).
    pub fn create(
        path: &Path,
        clock: Clock,
    ) -> std::io::Result<(Self, tokio::task::JoinHandle<std::io::Result<()>>)> {
        let file = std::fs::File::create(path)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
        let writer = tokio::task::spawn_blocking(move || {
            let mut out = std::io::BufWriter::new(file);
            while let Some(record) = rx.blocking_recv() {
                serde_json::to_writer(&mut out, &record)?;
                out.write_all(b"\n")?;
            }
            out.flush()
        });
        Ok((Recorder { clock, tx }, writer))
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Records `fields` as a `kind` record, now.
    pub fn record(&self, kind: &str, fields: Value) {
        self.record_at(kind, self.clock.t_ms(), fields);
    }

    /// Records `fields` as a `kind` record at `t_ms` (ms since the start).
    pub fn record_at(&self, kind: &str, t_ms: f64, fields: Value) {
        let mut record = Map::new();
        record.insert("t_ms".into(), round3(t_ms).into());
        record.insert(
            "wall_ms".into(),
            round3(self.clock.start_wall_ms + t_ms).into(),
        );
        record.insert("kind".into(), kind.into());
        if let Value::Object(fields) = fields {
            record.extend(fields);
        }
        // The writer ends only when every recorder is gone.
        let _ = self.tx.send(Value::Object(record));
    }
}

/// To the microsecond: enough for ms figures, and short lines.
pub fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}
