//! IPv4 sysctls of a network namespace.
//!
//! `/proc/sys/net/...` resolves to the namespace of the thread that opens the file, so
//! every read and write happens on a thread that has entered the namespace
//! ([`NetNs::run`]); a file opened anywhere else would change another namespace.

use std::{fs, io, path::PathBuf};

use super::{
    names::{NameError, check_ifname},
    netns::{NetNs, NetNsError},
};

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

/// Turns on IPv4 forwarding in `ns`. Writing `ip_forward` is the same as
/// `conf/all/forwarding`, and the kernel copies it to `default` and every interface.
///
/// Any change of `ip_forward` also sets `conf/all/accept_redirects` to its opposite
/// (`inet_forward_change`), so call [`disable_redirects`] after it, not before.
pub fn enable_forwarding(ns: &NetNs) -> Result<(), SysctlError> {
    write_ipv4_all(ns, &[("ip_forward".to_owned(), "1")])
}

/// Stops `ns` from sending or accepting ICMP redirects, on `all`, `default` and each of
/// `ifnames`.
///
/// A meshsim node forwards out of the same interface it received on (everything hangs on
/// one bridge), which is exactly when the kernel sends redirects telling the sender to
/// skip the hop, and the sender would take that shortcut around the configured topology.
/// `send_redirects` is on if `all` *or* the interface says so (IN_DEV_ORCONF), hence
/// every interface; `default` covers interfaces created later.
pub fn disable_redirects(ns: &NetNs, ifnames: &[&str]) -> Result<(), SysctlError> {
    let mut scopes = vec!["all", "default"];
    for name in ifnames {
        check_ifname(name)?;
        scopes.push(name);
    }
    let writes: Vec<(String, &str)> = scopes
        .iter()
        .flat_map(|scope| {
            ["send_redirects", "accept_redirects"].map(|key| (format!("conf/{scope}/{key}"), "0"))
        })
        .collect();
    write_ipv4_all(ns, &writes)
}

/// Turns IPv6 off in `ns` (all, default and lo). Nodes talk IPv4; IPv6 would add router
/// solicitations and neighbour discovery that nobody asked to see on the links.
pub fn disable_ipv6(ns: &NetNs) -> Result<(), SysctlError> {
    ns.run(|| {
        for scope in ["all", "default", "lo"] {
            let path = PathBuf::from(format!("/proc/sys/net/ipv6/conf/{scope}/disable_ipv6"));
            fs::write(&path, "1")
                .map_err(|e| SysctlError::io("write 1 to".to_owned(), path.clone(), ns, e))?;
        }
        Ok(())
    })?
}

/// Writes `value` to `/proc/sys/net/ipv4/KEY` in `ns`.
pub fn write_ipv4(ns: &NetNs, key: &str, value: &str) -> Result<(), SysctlError> {
    write_ipv4_all(ns, &[(key.to_owned(), value)])
}

/// Reads `/proc/sys/net/ipv4/KEY` in `ns`, without the trailing newline.
pub fn read_ipv4(ns: &NetNs, key: &str) -> Result<String, SysctlError> {
    let path = ipv4_path(key)?;
    ns.run(|| fs::read_to_string(&path))?
        .map(|text| text.trim_end().to_owned())
        .map_err(|e| SysctlError::io("read".to_owned(), path.clone(), ns, e))
}

/// All writes on one trip into the namespace; stops at the first failure.
fn write_ipv4_all(ns: &NetNs, writes: &[(String, &str)]) -> Result<(), SysctlError> {
    let writes = writes
        .iter()
        .map(|(key, value)| Ok((ipv4_path(key)?, *value)))
        .collect::<Result<Vec<_>, SysctlError>>()?;
    ns.run(|| {
        for (path, value) in &writes {
            fs::write(path, value)
                .map_err(|e| SysctlError::io(format!("write {value} to"), path.clone(), ns, e))?;
        }
        Ok(())
    })?
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
