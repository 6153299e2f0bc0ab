//! `tc`, for the baselines meshsim is measured against (netem, the seed's way of shaping):
//! the baseline may use `tc`, the product never does.

use std::{io::Write as _, process::Stdio};

use meshsim::net::NetNs;

/// Runs `batch` (one `tc` command per line) with `tc -batch` inside `ns`; the error says
/// what tc said.
pub fn tc_batch(ns: &NetNs, batch: &str) -> Result<(), String> {
    let mut child = ns
        .command("tc")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting tc -batch in {}: {e}", ns.name()))?;
    let written = child
        .stdin
        .take()
        .expect("tc's stdin is piped")
        .write_all(batch.as_bytes());
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for tc -batch in {}: {e}", ns.name()))?;
    if !out.status.success() {
        return Err(format!(
            "tc -batch in {} failed ({}): {}",
            ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    written.map_err(|e| format!("writing to tc -batch in {}: {e}", ns.name()))
}
