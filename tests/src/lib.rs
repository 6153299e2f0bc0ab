//! What every privileged test tier (and the benchmarks) share: labs with their cleanup
//! guards and meshsim's run lock, topology fixtures, polling with a deadline, temporary
//! directories, and the real Matrix client the Synapse tests drive.
//!
//! - [`hub`]: node namespaces on a bridge in a namespace of the test's own, with the
//!   classifier at each port: datapath tests that never touch the host's links.
//! - [`mesh`]: the real Sim with a real runtime (netns or Docker) and the classifier, under
//!   meshsim's run lock, swept on drop.
//! - [`serving`]: a [`mesh::MeshLab`] behind the real HTTP server.
//! - [`browser`]: the canvas in Chromium through chromedriver, on a meshsim process.
//! - [`ws`]: a client of the canvas's WebSocket feed.
//! - [`matrix`]: matrix-nio (a Matrix client that is not ours) in a cached venv.
//! - [`faults`]: random moments to kill meshsim at, and the check that nothing of a run is
//!   left.
//! - [`dockerd`]: a Docker daemon for the Docker tier when none runs;
//! - [`Running`]: a process a test started (meshsim, chromedriver), ended with its guard.
//!
//! Every lab removes what it made when dropped, also when the test fails.

pub mod browser;
pub mod dockerd;
pub mod faults;
pub mod fixtures;
pub mod hub;
pub mod matrix;
pub mod mesh;
mod process;
pub mod serving;
pub mod tc;
mod util;
pub mod ws;

pub use process::{Running, spawn_meshsim, spawn_meshsim_with, wait_for_exit, wait_for_line};
pub use util::{
    Sweep, TempDir, assert_carried, assert_runs_as_node, eventually, growth, id, leftovers,
    leftovers_of, meshsim_bin, pgrep, processes_in, target_dir,
};
