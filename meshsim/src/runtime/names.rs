//! The names meshsim gives what it makes on the host, so `meshsim down` finds exactly its own.

/// Namespaces and host-side veths of nodes (`ms-n1`), and the bridge, carry this prefix.
pub const PREFIX: &str = "ms-";
/// The netns backend's bridge.
pub const BRIDGE: &str = "ms-br0";
/// The host's end of its client links (it holds the host's mesh address and MAC) and its
/// peer, a port of the first bridge where the classifier shapes node -> host frames.
pub const HOST_LINK: &str = "ms-host";
pub const HOST_PORT: &str = "ms-hostp";
