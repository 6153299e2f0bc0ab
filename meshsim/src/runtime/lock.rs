//! One meshsim at a time: runs share the bridge and the names. The lock is an flock, so it
//! goes away with the process, also after kill -9.

use std::fs::{File, OpenOptions};

use nix::fcntl::{Flock, FlockArg};

pub const LOCK_FILE: &str = "/run/meshsim.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another meshsim is running on this host: stop it first (Ctrl-C in its terminal cleans up)"
    )]
    Held,
    #[error("cannot lock {LOCK_FILE} (are you root?): {0}")]
    Io(std::io::Error),
}

/// Held while a meshsim (or a test that builds meshes) runs.
pub struct RunLock {
    _lock: Flock<File>,
}

pub fn acquire() -> Result<RunLock, LockError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(LockError::Io)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(RunLock { _lock: lock }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(LockError::Held),
        Err((_, e)) => Err(LockError::Io(e.into())),
    }
}
