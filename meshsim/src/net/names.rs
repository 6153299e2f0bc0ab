//! Checks for interface and namespace names, done before any request is sent.
//!
//! The kernel rejects a bad interface name with a bare `EINVAL` (or, for a long name
//! inside a veth peer, `ERANGE`), which says nothing about which name was wrong. Checking
//! here gives an error that names the culprit and the rule it broke.

/// The longest interface name Linux accepts: `IFNAMSIZ` (16) less the terminating NUL.
pub const MAX_IFNAME_LEN: usize = 15;

/// The longest network namespace name: one file name under `/run/netns` (`NAME_MAX`).
pub const MAX_NETNS_NAME_LEN: usize = 255;

/// A name that the kernel (or `/run/netns`) would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{what} name is empty: give it a name")]
    Empty {
        /// "interface" or "network namespace".
        what: &'static str,
    },
    /// The name is longer than the kernel allows.
    #[error("{what} name {name:?} is {len} bytes long: the limit is {max}; use a shorter name")]
    TooLong {
        /// "interface" or "network namespace".
        what: &'static str,
        /// The rejected name.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The name contains a character the kernel refuses.
    #[error(
        "{what} name {name:?} contains {ch:?}, which Linux refuses there: \
         use letters, digits, '-', '_' or '.'"
    )]
    BadChar {
        /// "interface" or "network namespace".
        what: &'static str,
        /// The rejected name.
        name: String,
        /// The first offending character.
        ch: char,
    },
    /// `.` and `..` name directories, not interfaces or namespaces.
    #[error("{what} name {name:?} is reserved: pick another name")]
    Reserved {
        /// "interface" or "network namespace".
        what: &'static str,
        /// The rejected name.
        name: String,
    },
}

/// Checks an interface name the way the kernel's `dev_valid_name` does: 1 to 15 bytes,
/// not `.` or `..`, and no `/`, `:`, whitespace or NUL.
pub fn check_ifname(name: &str) -> Result<(), NameError> {
    const WHAT: &str = "interface";
    check_common(WHAT, name, MAX_IFNAME_LEN)?;
    match name.chars().find(|&c| c == ':' || c.is_whitespace()) {
        Some(ch) => Err(NameError::BadChar {
            what: WHAT,
            name: name.to_owned(),
            ch,
        }),
        None => Ok(()),
    }
}

/// Checks a network namespace name: one file name under `/run/netns`, as `ip netns add`
/// requires (no `/`, not `.` or `..`, no NUL).
pub fn check_netns_name(name: &str) -> Result<(), NameError> {
    check_common("network namespace", name, MAX_NETNS_NAME_LEN)
}

fn check_common(what: &'static str, name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            what,
            name: name.to_owned(),
            len: name.len(),
            max,
        });
    }
    if name == "." || name == ".." {
        return Err(NameError::Reserved {
            what,
            name: name.to_owned(),
        });
    }
    match name.chars().find(|&c| c == '/' || c == '\0') {
        Some(ch) => Err(NameError::BadChar {
            what,
            name: name.to_owned(),
            ch,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_accepts_kernel_style_names() {
        for name in [
            "eth0",
            "ms-br0",
            "ms-n12",
            "veth.1_a",
            "a",
            "ms-t1234567-9br",
        ] {
            assert_eq!(check_ifname(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn ifname_rejects_sixteen_bytes() {
        let err = check_ifname("abcdefghijklmnop").unwrap_err();
        assert!(
            matches!(
                err,
                NameError::TooLong {
                    len: 16,
                    max: 15,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("shorter"), "{err}");
    }

    #[test]
    fn ifname_rejects_what_dev_valid_name_rejects() {
        assert!(matches!(check_ifname(""), Err(NameError::Empty { .. })));
        assert!(matches!(check_ifname("."), Err(NameError::Reserved { .. })));
        assert!(matches!(
            check_ifname(".."),
            Err(NameError::Reserved { .. })
        ));
        for (name, ch) in [
            ("a/b", '/'),
            ("a:b", ':'),
            ("a b", ' '),
            ("a\tb", '\t'),
            ("a\0", '\0'),
        ] {
            assert_eq!(
                check_ifname(name),
                Err(NameError::BadChar {
                    what: "interface",
                    name: name.to_owned(),
                    ch
                }),
            );
        }
    }

    #[test]
    fn netns_name_allows_long_names_and_colons_but_not_slashes() {
        assert_eq!(check_netns_name("msprobe-4194304-17"), Ok(()));
        assert_eq!(check_netns_name("a:b"), Ok(()));
        assert!(matches!(
            check_netns_name("../etc"),
            Err(NameError::BadChar { ch: '/', .. })
        ));
        assert!(matches!(
            check_netns_name(".."),
            Err(NameError::Reserved { .. })
        ));
        assert!(matches!(
            check_netns_name(&"x".repeat(256)),
            Err(NameError::TooLong { .. })
        ));
    }
}
