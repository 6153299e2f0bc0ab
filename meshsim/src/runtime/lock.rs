//! One meshsim per prefix at a time: a run owns the names its prefix makes. The lock is an
//! flock on `/run/meshsim-<prefix>.lock`, so it goes away with the process, also after
//! kill -9; the file stays, so `meshsim down --all` knows which prefixes were used.

use std::{
    fs::{File, OpenOptions},
    path::PathBuf,
    time::{Duration, Instant},
};

use nix::fcntl::{Flock, FlockArg};

use super::names::RunPrefix;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another meshsim with the prefix {0} is running on this host: stop it first (Ctrl-C in \
         its terminal cleans up), or run this one beside it with --prefix NAME and --subnet"
    )]
    Held(RunPrefix),
    #[error("cannot lock {} (are you root?): {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Held while a meshsim (or a test that builds meshes) runs.
pub struct RunLock {
    _lock: Flock<File>,
}

/// How long a held lock is waited for before it counts as another run's. A meshsim killed
/// the moment it forked a node process leaves that child holding the lock's descriptor
/// until it notices and exits (or execs), a few milliseconds later: a `down` or start right
/// after the kill must not take that for a live run.
const SETTLE: Duration = Duration::from_secs(2);

/// Takes the lock of runs with `prefix`.
pub fn acquire(prefix: &RunPrefix) -> Result<RunLock, LockError> {
    let deadline = Instant::now() + SETTLE;
    loop {
        match try_acquire(prefix) {
            Err(LockError::Held(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Takes the lock if it is free now (for callers that wait their own way).
pub fn try_acquire(prefix: &RunPrefix) -> Result<RunLock, LockError> {
    let path = prefix.lock_file();
    let io = |error: std::io::Error| LockError::Io {
        path: path.clone(),
        error,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(RunLock { _lock: lock }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(LockError::Held(prefix.clone())),
        Err((_, e)) => Err(io(e.into())),
    }
}
