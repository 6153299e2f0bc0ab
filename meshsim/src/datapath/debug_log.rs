//! The classifier's debug log (`--debug-classifier`): aya-log records from its rare paths (a
//! clone the kernel refused, a strict-mode drop), read by a task and written to meshsim's log.
//! The classifier only logs when `CONFIG_F_DEBUG_LOG` is set, and never on the common path.

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::{io::unix::AsyncFd, task::JoinHandle};

use super::{DatapathError, Result};

/// The reading task; it stops when dropped.
pub struct LogReader(JoinHandle<()>);

impl Drop for LogReader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Takes the classifier's log ring buffer from `ebpf` (before its programs load) and starts
/// a task that forwards its records to the `log` facade, which meshsim's tracing subscriber
/// prints. Needs a tokio runtime.
pub fn start(ebpf: &mut Ebpf) -> Result<LogReader> {
    let fail =
        |what: &str, e: &dyn std::fmt::Display| DatapathError::DebugLog(format!("{what}: {e}"));
    let logger = EbpfLogger::init(ebpf).map_err(|e| fail("opening its ring buffer", &e))?;
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| fail("no async runtime to read it from", &e))?;
    let _enter = runtime.enter();
    // SAFETY: the logger owns its ring buffer's descriptor for its whole life, and neither
    // reading (`flush`) nor anything else it does closes or replaces it; the `AsyncFd` owns
    // the logger, so the descriptor stays open as long as it is registered.
    let mut logger =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            .map_err(|e| fail("watching its ring buffer", &e))?;
    let task = runtime.spawn(async move {
        loop {
            let Ok(mut ready) = logger.readable_mut().await else {
                return;
            };
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    });
    Ok(LogReader(task))
}
