//! The Matrix tier: real homeservers (Synapse) on netns and Docker nodes, driven by a real
//! Matrix client that is not ours (matrix-nio). Needs root, Python 3 with venv, Docker and
//! the node images, and PyPI the first time: `cargo xtask test` runs it.

mod browser;
mod client;
mod docker;
mod dockerd;
mod events;
mod faults;
mod postgres;
mod restart;
mod scenario;
mod synapse;
mod workers;
