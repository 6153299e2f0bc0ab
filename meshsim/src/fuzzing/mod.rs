//! The checks behind the fuzz targets (`fuzz/`, run by cargo-fuzz): each takes any bytes and
//! panics on a finding (a panic anywhere in meshsim, a 5xx, a broken model invariant). The
//! fuzz targets call them, and the unit tier replays the committed seeds and every input a
//! fuzzer ever found (`fuzz/regressions/<target>/`) through the very same functions.
//!
//! Only with the `fuzzing` feature (and in unit tests): nothing here is in a normal build.

pub mod api;
pub mod model_ops;
pub mod parsers;
#[cfg(test)]
mod tests;
pub mod ws;

use std::{cell::Cell, net::SocketAddr, path::PathBuf, sync::Once};

/// Bytes read front to back; reading past the end gives zeros, so every input decodes.
pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self(data)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }
}

thread_local! {
    /// Panics on this thread so far, also those tokio caught in a task.
    static PANICS: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` and panics if anything on this thread panicked meanwhile: tokio catches a panic
/// in a spawned task (a WebSocket session, a connection) and the request would simply look
/// dropped. The targets run their runtime on the current thread, so every task's panic is
/// counted here. (libFuzzer's own hook aborts on any panic first; this is for the replays.)
pub fn no_panic_on_this_thread<T>(f: impl FnOnce() -> T) -> T {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
    let before = PANICS.with(Cell::get);
    let out = f();
    let after = PANICS.with(Cell::get);
    assert_eq!(
        before, after,
        "something panicked while handling this input"
    );
    out
}

/// A runtime of one thread for one input: whatever an input started ends with it.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

/// The address the in-process server pretends to listen on (its `Host` check uses it).
pub const ADDR: &str = "127.0.0.1:3000";

fn addr() -> SocketAddr {
    ADDR.parse().expect("a socket address")
}

/// Where scenarios started through the API write their results: one folder per process,
/// emptied after every input.
fn results_dir() -> PathBuf {
    std::env::temp_dir().join(format!("meshsim-fuzz-{}", std::process::id()))
}

/// A Sim on the fake host (with client links, as on netns) and the real router on it.
async fn server() -> crate::server::InProcess {
    use std::sync::Arc;

    use crate::{
        model::Settings,
        server::{Server, ServerOptions},
        sim::{
            Sim,
            fake::{FakeRuntime, FakeShaper, World},
        },
    };
    let world = World::new();
    let runtime = FakeRuntime {
        world: Arc::clone(&world),
        gate: None,
        host: true,
    };
    let (sim, _task) = Sim::spawn(runtime, FakeShaper::new(world), Settings::default())
        .expect("the default settings are valid");
    let options = ServerOptions {
        results_dir: results_dir(),
        ..ServerOptions::default()
    };
    Server::in_process(addr(), sim, options)
        .await
        .expect("a server on the fake host")
}

/// Removes what scenarios started by an input wrote.
fn clean_results() {
    let dir = results_dir();
    if dir.exists() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
