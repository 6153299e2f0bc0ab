//! The names meshsim gives what it makes on the host, so `meshsim down` finds exactly its own
//! and two runs side by side never touch each other's.
//!
//! Every run has a prefix (`ms`, the default, or `--prefix`); everything it makes carries it:
//! node namespaces and their host-side veths (`ms-n1`), the bridges (`ms-br0`), the host's
//! link (`ms-host`, `ms-hostp`), trunks, the run lock, its directory under /tmp, and for
//! Docker the network, its bridge and the containers (also labelled with the prefix).

use std::{fmt, path::PathBuf, str::FromStr};

use crate::model::NodeId;

/// The default run's prefix.
pub const DEFAULT_PREFIX: &str = "ms";
/// Node names and links of the default run begin with this (`ms-n1`).
pub const PREFIX: &str = "ms-";
/// Docker containers, networks and volumes of meshsim carry the prefix in this label.
pub const PREFIX_LABEL: &str = "org.meshsim.prefix";
/// Where each run's lock lives: `/run/meshsim-<prefix>.lock`. The files stay after a run,
/// so `meshsim down --all` finds the prefixes that were used.
pub const LOCK_DIR: &str = "/run";
/// The longest prefix: with `-hostp` it must fit an interface name (15 bytes).
pub const MAX_PREFIX_LEN: usize = 5;

/// A run's prefix: 1 to 5 lowercase letters and digits, beginning with a letter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunPrefix(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "run prefix {0:?}: use 1 to {MAX_PREFIX_LEN} lowercase letters and digits, beginning with \
     a letter (e.g. --prefix exp2)"
)]
pub struct PrefixError(pub String);

impl Default for RunPrefix {
    fn default() -> Self {
        RunPrefix(DEFAULT_PREFIX.to_owned())
    }
}

impl FromStr for RunPrefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=MAX_PREFIX_LEN).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(RunPrefix(s.to_owned()))
        } else {
            Err(PrefixError(s.to_owned()))
        }
    }
}

impl fmt::Display for RunPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl RunPrefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_PREFIX
    }

    /// What every namespace and link name of the run begins with: `ms-`.
    pub fn names(&self) -> String {
        format!("{}-", self.0)
    }

    /// Node `id`'s namespace, and the host side of its veth: `ms-n1`.
    pub fn node(&self, id: NodeId) -> String {
        format!("{}-{}", self.0, id.name())
    }

    /// The `n`th bridge of the netns backend: `ms-br0`.
    pub fn bridge(&self, n: usize) -> String {
        format!("{}-br{n}", self.0)
    }

    /// One end (`a` on the first bridge, `b` on bridge `n`) of the trunk to bridge `n`.
    pub fn trunk(&self, n: usize, end: char) -> String {
        format!("{}-tk{n}{end}", self.0)
    }

    /// The host's end of its client links, with the host's mesh address: `ms-host`.
    pub fn host_link(&self) -> String {
        format!("{}-host", self.0)
    }

    /// Its peer, a port of the first bridge: `ms-hostp`.
    pub fn host_port(&self) -> String {
        format!("{}-hostp", self.0)
    }

    /// `/run/meshsim-ms.lock`.
    pub fn lock_file(&self) -> PathBuf {
        PathBuf::from(format!("{LOCK_DIR}/meshsim-{}.lock", self.0))
    }

    /// The run's files under /tmp (logs, Synapse's run directory): `/tmp/meshsim` for the
    /// default run, `/tmp/meshsim-<prefix>` for others.
    pub fn tmp_dir(&self) -> PathBuf {
        if self.is_default() {
            PathBuf::from("/tmp/meshsim")
        } else {
            PathBuf::from(format!("/tmp/meshsim-{}", self.0))
        }
    }

    /// The homeservers' directory: a directory per node, the CA, the name files.
    pub fn run_dir(&self) -> PathBuf {
        self.tmp_dir().join("run")
    }

    /// `--node-cmd`'s node directories: `<tmp_dir>/nodes/<name>`, each the node's own.
    pub fn node_dirs(&self) -> PathBuf {
        self.tmp_dir().join("nodes")
    }

    /// The run's Postgres cluster (data and socket), when homeservers use it.
    pub fn postgres_dir(&self) -> PathBuf {
        self.tmp_dir().join("postgres")
    }

    /// The Docker network: `meshsim`, or `meshsim-<prefix>`.
    pub fn docker_network(&self) -> String {
        if self.is_default() {
            "meshsim".to_owned()
        } else {
            format!("meshsim-{}", self.0)
        }
    }

    /// The Docker network's bridge: `meshsim0`, or `meshsim-<prefix>` (not the run's link
    /// prefix: Docker removes it with its network).
    pub fn docker_bridge(&self) -> String {
        if self.is_default() {
            "meshsim0".to_owned()
        } else {
            format!("meshsim-{}", self.0)
        }
    }

    /// Node `id`'s container: `meshsim-n1`, or `meshsim-<prefix>-n1`.
    pub fn container(&self, id: NodeId) -> String {
        if self.is_default() {
            format!("meshsim-{}", id.name())
        } else {
            format!("meshsim-{}-{}", self.0, id.name())
        }
    }

    /// The prefixes whose lock files exist: every run this host has had since boot.
    pub fn known() -> Vec<RunPrefix> {
        let mut found: Vec<RunPrefix> = std::fs::read_dir(LOCK_DIR)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix("meshsim-")?
                    .strip_suffix(".lock")?
                    .parse()
                    .ok()
            })
            .collect();
        if !found.contains(&RunPrefix::default()) {
            found.push(RunPrefix::default());
        }
        found.sort();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{MAX_IFNAME_LEN, check_ifname};

    #[test]
    fn no_run_prefix_covers_the_fq_probe() {
        // A run's names start with `<prefix>-`, so the only prefix that could cover a probe's
        // namespace is the probe name's own first characters: try each length a prefix has.
        let probe = crate::net::scratch_name(4_194_304, 17);
        for len in 1..=MAX_PREFIX_LEN {
            if let Ok(prefix) = probe[..len].parse::<RunPrefix>() {
                assert!(
                    !probe.starts_with(&prefix.names()),
                    "{prefix} covers {probe}"
                );
            }
        }
        assert!(!probe.starts_with(PREFIX));
    }

    #[test]
    fn prefixes_are_short_lowercase_words() {
        for good in ["ms", "a", "exp2", "abcde"] {
            assert_eq!(good.parse::<RunPrefix>().unwrap().as_str(), good);
        }
        for bad in ["", "2x", "Ms", "ab-c", "abcdef", "a_b", "ms "] {
            assert!(bad.parse::<RunPrefix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_longest_names_fit_an_interface_name() {
        let p: RunPrefix = "abcde".parse().unwrap();
        for name in [
            p.node(NodeId(65_535)),
            p.host_port(),
            p.bridge(99),
            p.trunk(99, 'a'),
            p.docker_bridge(),
        ] {
            assert!(name.len() <= MAX_IFNAME_LEN, "{name}");
            check_ifname(&name).unwrap();
        }
    }

    #[test]
    fn the_default_run_keeps_its_names_and_others_never_share_them() {
        let d = RunPrefix::default();
        assert_eq!(
            (
                d.node(NodeId(1)),
                d.bridge(0),
                d.host_link(),
                d.docker_network(),
                d.container(NodeId(1))
            ),
            (
                "ms-n1".into(),
                "ms-br0".into(),
                "ms-host".into(),
                "meshsim".into(),
                "meshsim-n1".into()
            )
        );
        assert_eq!(d.names(), PREFIX);
        let m: RunPrefix = "m".parse().unwrap();
        // `m-` is not a prefix of `ms-...`, nor the reverse.
        assert!(!d.node(NodeId(1)).starts_with(&m.names()));
        assert!(!m.node(NodeId(1)).starts_with(&d.names()));
        assert_ne!(m.docker_network(), d.docker_network());
        assert_ne!(m.tmp_dir(), d.tmp_dir());
    }
}
