//! A route-netlink connection bound to one network namespace, and its error type.
//!
//! The operations live next door, one file per object kind: `link.rs`, `addr.rs`,
//! `route.rs`, `qdisc.rs`.

use std::{fmt, io, sync::Arc};

use futures_util::StreamExt as _;
use rtnetlink::{
    Handle,
    packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload},
    packet_route::RouteNetlinkMessage,
};

use super::{
    names::NameError,
    netns::{NetNs, NetNsError},
};

/// What went wrong talking to the kernel, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// `connect`/`connect_in` need a runtime to drive the socket.
    #[error(
        "no tokio runtime: call Netlink::connect/connect_in from inside a tokio runtime \
         (e.g. an async fn run by #[tokio::main])"
    )]
    NoRuntime,
    /// The netlink socket could not be opened.
    #[error("could not open a netlink socket in {ns}: {source}")]
    Socket {
        /// The namespace it was meant for.
        ns: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Entering the namespace failed.
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    /// A name the kernel would refuse.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A MAC address no Ethernet interface can have.
    #[error(
        "invalid MAC address {mac}: {reason}; use a unicast address, e.g. a locally \
         administered one starting with 02"
    )]
    InvalidMac {
        /// The address, formatted.
        mac: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// An IPv4 prefix length above 32.
    #[error("invalid IPv4 prefix length /{0}: it must be 0 to 32")]
    InvalidPrefix(u8),
    /// The kernel refused a request.
    #[error("{op}: {source}; {hint}")]
    Kernel {
        /// What was being done, and in which namespace.
        op: String,
        /// The positive errno.
        errno: i32,
        /// The errno as an I/O error (for its text).
        #[source]
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The kernel has no `fq` qdisc.
    #[error(
        "{op}: this kernel has no sch_fq (the `fq` qdisc; the kernel answered ENOENT, \
         \"unknown qdisc kind\"); load it with `modprobe sch_fq`, or use a kernel built with \
         CONFIG_NET_SCH_FQ=y or =m"
    )]
    FqUnsupported {
        /// What was being done, and in which namespace.
        op: String,
    },
    /// The connection's background task is gone.
    #[error(
        "{op}: the netlink connection is closed (was the tokio runtime that drives it shut \
         down?); connect again"
    )]
    ConnectionClosed {
        /// What was being done, and in which namespace.
        op: String,
    },
    /// The kernel answered something rtnetlink could not make sense of.
    #[error("{op}: unexpected netlink answer: {source}")]
    Protocol {
        /// What was being done, and in which namespace.
        op: String,
        /// rtnetlink's error.
        #[source]
        source: rtnetlink::Error,
    },
    /// A request succeeded but its result could not be found right after.
    #[error(
        "{op}: the kernel accepted it but {what} is gone; another process may have removed it, retry"
    )]
    Vanished {
        /// What was being done, and in which namespace.
        op: String,
        /// What went missing.
        what: String,
    },
}

impl NetlinkError {
    /// The errno the kernel answered with, if this is a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            Self::FqUnsupported { .. } => Some(libc::ENOENT),
            _ => None,
        }
    }

    /// Sorts an rtnetlink error into a variant that says what to do.
    pub(crate) fn from_rtnetlink(op: String, err: rtnetlink::Error) -> Self {
        match err {
            rtnetlink::Error::NetlinkError(msg) if msg.raw_code() != 0 => {
                let errno = msg.raw_code().abs();
                Self::Kernel {
                    op,
                    errno,
                    source: io::Error::from_raw_os_error(errno),
                    hint: hint(errno),
                }
            }
            rtnetlink::Error::RequestFailed => Self::ConnectionClosed { op },
            other => Self::Protocol { op, source: other },
        }
    }
}

/// A hint per errno, for the errors these requests commonly get.
fn hint(errno: i32) -> &'static str {
    match errno {
        libc::EPERM | libc::EACCES => "run as root (changing the network needs CAP_NET_ADMIN)",
        libc::EEXIST => "it already exists: delete it first or pick another name",
        libc::ENODEV => "no such interface here: it was deleted, or lives in another namespace",
        libc::ENETUNREACH => "the gateway is not reachable through that interface",
        libc::ENETDOWN => "the interface is down: bring it up first",
        libc::EADDRNOTAVAIL => "the kernel refused the address for that interface",
        libc::EBUSY => "the interface is busy (in use by another master or operation)",
        libc::EOPNOTSUPP => "this kernel or this kind of interface does not support it",
        libc::ENOENT | libc::ESRCH => "it does not exist",
        libc::ENOMEM | libc::ENOBUFS => "the kernel is out of memory",
        libc::EINVAL | libc::ERANGE => "the kernel refused a value in the request",
        _ => "see the kernel log (dmesg) for details",
    }
}

/// A route-netlink connection whose socket lives in one network namespace.
///
/// A netlink socket belongs to the namespace of the thread that created it, for its whole
/// life, whichever thread uses it later. So one `Netlink` per namespace, created once and
/// driven by the ordinary tokio runtime: no per-namespace runtime or thread is needed.
/// Clones share the connection; it closes when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Netlink {
    pub(crate) handle: Handle,
    ns: Arc<str>,
}

impl Netlink {
    /// Connects in the calling thread's namespace (the root namespace, on any thread that
    /// has not moved itself elsewhere). The connection is driven by a task spawned on the
    /// current tokio runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        let ns = "the current network namespace";
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetlinkError::Socket {
                ns: ns.to_owned(),
                source,
            })?;
        runtime.spawn(connection);
        Ok(Self {
            handle,
            ns: Arc::from(ns),
        })
    }

    /// Connects inside `ns`: the socket is created on a thread that entered `ns`, then
    /// driven by a task on the current tokio runtime like any other. Blocks for a thread
    /// spawn and join.
    pub fn connect_in(ns: &NetNs) -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        let label = format!("network namespace {:?}", ns.name());
        let (connection, handle) = ns
            .run(|| {
                // The socket registers with the runtime's reactor when it is created.
                let _enter = runtime.enter();
                rtnetlink::new_connection().map(|(connection, handle, _)| (connection, handle))
            })?
            .map_err(|source| NetlinkError::Socket {
                ns: label.clone(),
                source,
            })?;
        runtime.spawn(connection);
        Ok(Self {
            handle,
            ns: Arc::from(label),
        })
    }

    /// The underlying rtnetlink handle, for requests this type does not wrap.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Names an operation for error messages: "OP in NAMESPACE".
    pub(crate) fn op(&self, what: fmt::Arguments<'_>) -> String {
        format!("{what} in {}", self.ns)
    }

    /// Sends a request that expects only an acknowledgement, for messages rtnetlink has no
    /// builder for.
    pub(crate) async fn request_ack(
        &self,
        mut message: NetlinkMessage<RouteNetlinkMessage>,
    ) -> Result<(), rtnetlink::Error> {
        message.header.flags |= NLM_F_REQUEST | NLM_F_ACK;
        let mut responses = self.handle.clone().request(message)?;
        while let Some(response) = responses.next().await {
            if let NetlinkPayload::Error(err) = response.payload
                && err.code.is_some()
            {
                return Err(rtnetlink::Error::NetlinkError(err));
            }
        }
        Ok(())
    }
}

/// `true` if `err` is the kernel's answer `errno`.
pub(crate) fn is_errno(err: &rtnetlink::Error, errno: i32) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(msg) if msg.raw_code() == -errno)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroI32;

    use rtnetlink::packet_core::ErrorMessage;

    use super::*;

    fn kernel_error(errno: i32) -> rtnetlink::Error {
        let mut msg = ErrorMessage::default();
        msg.code = NonZeroI32::new(-errno);
        rtnetlink::Error::NetlinkError(msg)
    }

    #[test]
    fn kernel_errors_keep_their_errno_and_get_a_hint() {
        let err = NetlinkError::from_rtnetlink(
            "create bridge \"br0\"".into(),
            kernel_error(libc::EEXIST),
        );
        assert_eq!(err.errno(), Some(libc::EEXIST));
        let text = err.to_string();
        assert!(text.starts_with("create bridge \"br0\": "), "{text}");
        assert!(text.contains("delete it first"), "{text}");
        let err = NetlinkError::from_rtnetlink("x".into(), kernel_error(libc::EPERM));
        assert!(err.to_string().contains("run as root"), "{err}");
    }

    #[test]
    fn a_closed_connection_says_so() {
        let err = NetlinkError::from_rtnetlink("x".into(), rtnetlink::Error::RequestFailed);
        assert!(matches!(err, NetlinkError::ConnectionClosed { .. }));
        assert_eq!(err.errno(), None);
    }

    #[test]
    fn is_errno_matches_the_negative_code() {
        assert!(is_errno(&kernel_error(libc::ENODEV), libc::ENODEV));
        assert!(!is_errno(&kernel_error(libc::ENODEV), libc::ENOENT));
        assert!(!is_errno(&rtnetlink::Error::RequestFailed, libc::ENODEV));
    }

    #[test]
    fn connect_outside_a_runtime_is_an_error_not_a_panic() {
        assert!(matches!(Netlink::connect(), Err(NetlinkError::NoRuntime)));
    }
}
