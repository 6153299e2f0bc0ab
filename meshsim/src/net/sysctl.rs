//! Network sysctls of a namespace.
//!
//! `/proc/sys/net/...` resolves to the namespace of the thread that opens the file, so
//! every read and write happens on a thread that has entered the namespace
//! ([`NetNs::run`]); a file opened anywhere else would change another namespace.

use std::{
    fs,
    io::{self, Write as _},
    path::PathBuf,
};

use nix::{
    fcntl::{self, OFlag},
    sys::stat::Mode,
};

use super::{
    names::{NameError, check_ifname},
    netns::{NetNs, NetNsError},
};

const NET: &str = "/proc/sys/net";
const IPV4: &str = "/proc/sys/net/ipv4";

/// What went wrong with a sysctl, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// Entering the namespace failed.
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    /// An interface name the kernel would refuse.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A key that is not a path below `/proc/sys/net/ipv4`.
    #[error(
        "invalid sysctl key {0:?}: give a path below /proc/sys/net/ipv4 such as \"conf/all/forwarding\""
    )]
    BadKey(String),
    /// Reading or writing the file failed.
    #[error("could not {action} {path} in network namespace {ns:?}: {source}; {hint}")]
    Io {
        /// "read" or "write 1 to".
        action: String,
        /// The file.
        path: PathBuf,
        /// The namespace.
        ns: String,
        /// The underlying error.
        #[source]
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
}

impl SysctlError {
    fn io(action: String, path: PathBuf, ns: &NetNs, source: io::Error) -> Self {
        let hint = match source.kind() {
            io::ErrorKind::NotFound => {
                "no such setting: check that the interface exists in that namespace"
            }
            io::ErrorKind::PermissionDenied => "run as root",
            _ => "check the value",
        };
        Self::Io {
            action,
            path,
            ns: ns.name().to_owned(),
            source,
            hint,
        }
    }
}

/// Settings below `/proc/sys/net` to write into one namespace, in order, on one trip.
///
/// Every namespace has its own `/proc/sys/net`, and all of them hang under the one
/// `/proc/sys`: each lookup of `net` there compares against every namespace's entry, so with
/// thousands of nodes a full path costs milliseconds. One trip opens `net` once and finds the
/// rest from it.
#[derive(Debug, Default)]
pub struct NetSettings {
    /// Paths relative to `/proc/sys/net`, and their values.
    writes: Vec<(PathBuf, String)>,
}

impl NetSettings {
    /// Turns on IPv4 forwarding. Writing `ip_forward` is the same as `conf/all/forwarding`,
    /// and the kernel copies it to `default` and every interface.
    ///
    /// Any change of `ip_forward` also sets `conf/all/accept_redirects` to its opposite
    /// (`inet_forward_change`), so add [`NetSettings::disable_redirects`] after it.
    pub fn enable_forwarding(self) -> Self {
        self.push("ipv4/ip_forward", "1")
    }

    /// No ICMP redirects sent or accepted, on `all`, `default` and each of `ifnames`.
    ///
    /// A meshsim node forwards out of the same interface it received on (everything hangs
    /// on one bridge), which is exactly when the kernel sends redirects telling the sender
    /// to skip the hop, and the sender would take that shortcut around the configured
    /// topology. `send_redirects` is on if `all` *or* the interface says so (IN_DEV_ORCONF),
    /// hence every interface; `default` covers interfaces created later.
    pub fn disable_redirects(mut self, ifnames: &[&str]) -> Result<Self, SysctlError> {
        let mut scopes = vec!["all", "default"];
        for name in ifnames {
            check_ifname(name)?;
            scopes.push(name);
        }
        for scope in scopes {
            for key in ["send_redirects", "accept_redirects"] {
                self = self.push(&format!("ipv4/conf/{scope}/{key}"), "0");
            }
        }
        Ok(self)
    }

    /// IPv6 off (all, default and lo). Nodes talk IPv4; IPv6 would add router solicitations
    /// and neighbour discovery that nobody asked to see on the links.
    pub fn disable_ipv6(mut self) -> Self {
        for scope in ["all", "default", "lo"] {
            self = self.push(&format!("ipv6/conf/{scope}/disable_ipv6"), "1");
        }
        self
    }

    /// `value` for `/proc/sys/net/ipv4/KEY`.
    pub fn ipv4(self, key: &str, value: &str) -> Result<Self, SysctlError> {
        ipv4_path(key)?;
        Ok(self.push(&format!("ipv4/{key}"), value))
    }

    fn push(mut self, path: &str, value: &str) -> Self {
        self.writes.push((PathBuf::from(path), value.to_owned()));
        self
    }

    /// Writes every setting in `ns`, in order; stops at the first failure.
    pub fn write(&self, ns: &NetNs) -> Result<(), SysctlError> {
        let full = |path: &PathBuf| PathBuf::from(NET).join(path);
        ns.run(|| {
            let net = fs::File::open(NET)
                .map_err(|e| SysctlError::io("open".to_owned(), PathBuf::from(NET), ns, e))?;
            for (path, value) in &self.writes {
                let action = || format!("write {value} to");
                let file = fcntl::openat(
                    &net,
                    path,
                    OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| SysctlError::io(action(), full(path), ns, e.into()))?;
                fs::File::from(file)
                    .write_all(value.as_bytes())
                    .map_err(|e| SysctlError::io(action(), full(path), ns, e))?;
            }
            Ok(())
        })?
    }
}

/// Turns on IPv4 forwarding in `ns` (see [`NetSettings::enable_forwarding`]).
pub fn enable_forwarding(ns: &NetNs) -> Result<(), SysctlError> {
    NetSettings::default().enable_forwarding().write(ns)
}

/// Stops `ns` from sending or accepting ICMP redirects (see
/// [`NetSettings::disable_redirects`]).
pub fn disable_redirects(ns: &NetNs, ifnames: &[&str]) -> Result<(), SysctlError> {
    NetSettings::default().disable_redirects(ifnames)?.write(ns)
}

/// Turns IPv6 off in `ns` (see [`NetSettings::disable_ipv6`]).
pub fn disable_ipv6(ns: &NetNs) -> Result<(), SysctlError> {
    NetSettings::default().disable_ipv6().write(ns)
}

/// Writes `value` to `/proc/sys/net/ipv4/KEY` in `ns`.
pub fn write_ipv4(ns: &NetNs, key: &str, value: &str) -> Result<(), SysctlError> {
    NetSettings::default().ipv4(key, value)?.write(ns)
}

/// Reads `/proc/sys/net/ipv4/KEY` in `ns`, without the trailing newline.
pub fn read_ipv4(ns: &NetNs, key: &str) -> Result<String, SysctlError> {
    let path = ipv4_path(key)?;
    ns.run(|| fs::read_to_string(&path))?
        .map(|text| text.trim_end().to_owned())
        .map_err(|e| SysctlError::io("read".to_owned(), path.clone(), ns, e))
}

fn ipv4_path(key: &str) -> Result<PathBuf, SysctlError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\0')
        || key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(SysctlError::BadKey(key.to_owned()));
    }
    Ok(PathBuf::from(IPV4).join(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_below_net_ipv4() {
        assert_eq!(
            ipv4_path("conf/eth0/forwarding").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0/forwarding")
        );
        for key in [
            "",
            "/etc/passwd",
            "../ipv6/x",
            "conf//all",
            "conf/./all",
            "a\0b",
        ] {
            assert!(
                matches!(ipv4_path(key), Err(SysctlError::BadKey(_))),
                "{key:?}"
            );
        }
    }
}
