//! Low-level network plumbing: named network namespaces, interfaces, addresses, routes,
//! qdiscs and sysctls, all through syscalls and rtnetlink (never `ip` or `tc` processes).
//!
//! - [`NetNs`]: `ip netns`-compatible namespaces, and running code or commands inside one.
//! - [`Netlink`]: one rtnetlink connection per namespace, driven by the tokio runtime.
//! - [`sysctl`]: forwarding and redirect settings inside a namespace.
//! - [`probe_fq`]: whether this kernel has the `fq` qdisc the datapath relies on.
//!
//! Everything here needs root (CAP_SYS_ADMIN for namespaces, CAP_NET_ADMIN for the rest).

mod addr;
mod link;
mod names;
mod neigh;
mod netns;
mod probe;
mod qdisc;
mod route;
pub mod rps;
mod rtnl;
pub mod sysctl;

pub use link::{LinkInfo, MacDisplay, check_mac};
pub use names::{MAX_IFNAME_LEN, MAX_NETNS_NAME_LEN, NameError, check_ifname, check_netns_name};
pub use netns::{NETNS_DIR, NetNs, NetNsError};
pub use probe::{FqSupport, PROBE_PREFIX, probe_fq, scratch_name, scratch_owner};
pub use qdisc::FqOptions;
pub use route::Route4;
pub use rtnl::{Netlink, NetlinkError};
pub use sysctl::SysctlError;
