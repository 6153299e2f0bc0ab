//! What the benches that build meshes share: the run lock and a clean host around the work.

use std::future::Future;

use anyhow::{Context as _, Result};
use meshsim::runtime::cleanup::remove_leftovers;

/// Runs `work` holding the run lock, with no `ms-` namespace or interface before or after it.
pub async fn isolated<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    let _lock = meshsim_tests::mesh::run_lock().await;
    let removed = remove_leftovers(&meshsim::runtime::names::RunPrefix::default())
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
    let cleaned = remove_leftovers(&meshsim::runtime::names::RunPrefix::default())
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
