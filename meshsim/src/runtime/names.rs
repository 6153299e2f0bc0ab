//! The names meshsim gives what it makes on the host, so `meshsim down` finds exactly its own.

/// Namespaces and host-side veths of nodes (`ms-n1`), and the bridge, carry this prefix.
pub const PREFIX: &str = "ms-";
/// The netns backend's bridge.
pub const BRIDGE: &str = "ms-br0";
