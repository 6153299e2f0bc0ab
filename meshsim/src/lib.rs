//! meshsim: a network lab for Matrix homeserver meshes on one Linux host.
//!
//! See DESIGN.md for how the pieces fit: `datapath` (the eBPF classifier and its maps) and
//! `net` (namespaces, links, addresses, routes and qdiscs over rtnetlink).

pub mod datapath;
pub mod model;
pub mod net;
pub mod runtime;
pub mod server;
pub mod sim;
pub mod topology_file;
pub mod workload;
