//! What the benches that build meshes share: the run lock and a clean host around the work.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use meshsim::runtime::{
    cleanup::remove_leftovers,
    lock::{self, LockError, RunLock},
};

/// How long a bench waits for a meshsim or a test to let go of the run lock.
const LOCK_WAIT: Duration = Duration::from_secs(300);

/// Runs `work` holding the run lock, with no `ms-` namespace or interface before or after it.
pub async fn isolated<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    let _lock = run_lock().await?;
    let removed = remove_leftovers()
        .await
        .context("removing what an earlier run left")?;
    if !removed.is_empty() {
        eprintln!(
            "removed leftovers first: {} namespaces, {} interfaces, {} processes",
            removed.namespaces.len(),
            removed.links.len(),
            removed.processes
        );
    }
    let result = work.await;
    let cleaned = remove_leftovers()
        .await
        .context("removing what the bench made");
    match (result, cleaned) {
        (Ok(value), Ok(_)) => Ok(value),
        (Err(e), Ok(_)) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), Err(cleanup)) => {
            eprintln!("also: {cleanup:#}");
            Err(e)
        }
    }
}

async fn run_lock() -> Result<RunLock> {
    let deadline = Instant::now() + LOCK_WAIT;
    let mut said = false;
    loop {
        match lock::acquire() {
            Ok(lock) => return Ok(lock),
            Err(LockError::Held) if Instant::now() < deadline => {
                if !said {
                    eprintln!("the run lock is held (a meshsim or a test is running): waiting");
                    said = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context("taking the run lock"),
        }
    }
}
