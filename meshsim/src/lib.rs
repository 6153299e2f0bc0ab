//! meshsim: a network lab for Matrix homeserver meshes on one Linux host.
//!
//! docs/architecture.md says how the pieces fit: the `server` drives the `sim`, which owns
//! the `model` and applies its changes to the `runtime` (nodes, with their `workload`) and
//! the `datapath` (the eBPF classifier and its maps), both through traits the Sim owns;
//! `net` is the plumbing under them (namespaces, links, addresses, routes, qdiscs).

pub mod datapath;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod model;
pub mod net;
pub mod random;
pub mod run_config;
pub mod runtime;
pub mod scenario;
pub mod server;
pub mod sim;
pub mod topology_file;
pub mod workload;
