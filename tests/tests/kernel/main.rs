//! The kernel tier: the classifier through `BPF_PROG_TEST_RUN`, real traffic through node
//! namespaces on a bridge, the example mesh through the library, and the `meshsim` command
//! as a user runs it. Needs root (eBPF, namespaces): `cargo xtask test` runs it.

mod classifier;
mod cli;
mod client;
mod confine;
mod faults;
mod mesh;
mod net;
mod scenario;
mod traffic;
