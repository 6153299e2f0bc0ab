//! `meshsim check`: what this machine has of what meshsim needs, each with a fix.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, bail};
use meshsim::{
    datapath::{Datapath, DatapathOptions},
    net::{FqSupport, probe_fq},
    workload::SynapseOptions,
};

use crate::files;

struct Line {
    ok: bool,
    /// A missing piece meshsim can run without (reduced), rather than a failure.
    soft: bool,
    what: &'static str,
    detail: String,
}

pub async fn run() -> Result<()> {
    let mut lines = Vec::new();
    let root = nix::unistd::geteuid().is_root();
    lines.push(Line {
        soft: false,
        ok: root,
        what: "privileges",
        detail: if root {
            "running as root".into()
        } else {
            "not root: run with sudo".into()
        },
    });
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    lines.push(Line {
        soft: false,
        ok: btf,
        what: "kernel BTF",
        detail: if btf {
            "/sys/kernel/btf/vmlinux".into()
        } else {
            "missing: use a kernel built with CONFIG_DEBUG_INFO_BTF=y".into()
        },
    });
    let classifier = if root {
        Datapath::load(DatapathOptions::default()).map(|_| ())
    } else {
        Ok(())
    };
    lines.push(match classifier {
        _ if !root => Line {
            ok: false,
            soft: false,
            what: "eBPF classifier",
            detail: "not tried: needs root".into(),
        },
        Ok(()) => Line {
            ok: true,
            soft: false,
            what: "eBPF classifier",
            detail: "loads and passes the verifier (embedded: bpf-linker is not needed to run)"
                .into(),
        },
        Err(e) => Line {
            ok: false,
            soft: false,
            what: "eBPF classifier",
            detail: e.to_string(),
        },
    });
    let fq = if root {
        probe_fq().await
    } else {
        FqSupport::Unknown("needs root".into())
    };
    lines.push(match fq {
        FqSupport::Available => Line { ok: true, soft: true, what: "sch_fq", detail: "present: link delays are enforced".into() },
        FqSupport::Missing => Line {
            ok: false,
            soft: true,
            what: "sch_fq",
            detail: "missing: links are counted but NOT delayed; `modprobe sch_fq`, or use a kernel with CONFIG_NET_SCH_FQ".into(),
        },
        FqSupport::Unknown(why) => Line { ok: false, soft: true, what: "sch_fq", detail: format!("unknown: {why}") },
    });
    let confinable = mount_setattr_exists();
    lines.push(Line {
        ok: confinable,
        soft: true,
        what: "confinement",
        detail: if confinable {
            "mount_setattr(2) present: processes in namespace nodes run as their node's user on a read-only host".into()
        } else {
            "mount_setattr(2) missing (Linux before 5.12): homeservers and node commands on namespace nodes cannot be confined and will not start; use a newer kernel (`--node-cmd-as-root` runs a node command unconfined)".into()
        },
    });
    let docker = std::os::unix::net::UnixStream::connect("/var/run/docker.sock");
    lines.push(Line {
        ok: docker.is_ok(),
        soft: true,
        what: "Docker",
        detail: match docker {
            Ok(_) => "reachable at /var/run/docker.sock".into(),
            Err(e) => format!(
                "not reachable ({e}): only the docker backend needs it; install docker.io and start dockerd"
            ),
        },
    });
    let warnings = bridge_filter_warnings(
        iptables_forward_policy().as_deref(),
        bridge_nf_call_iptables(),
    );
    for l in &lines {
        let status = match (l.ok, l.soft) {
            (true, _) => "ok",
            (false, true) => "reduced",
            (false, false) => "MISSING",
        };
        println!("{status:<8} {:<16} {}", l.what, l.detail);
    }
    if warnings.is_empty() {
        println!(
            "{:<8} {:<16} bridged frames are not filtered by iptables",
            "ok", "host firewall"
        );
    }
    for w in &warnings {
        println!("{:<8} {:<16} {w}", "WARNING", "host firewall");
    }
    for (what, place) in installed_files() {
        println!("{:<8} {what:<16} {place}", "info");
    }
    if lines.iter().any(|l| !l.ok && !l.soft) {
        bail!("some checks failed: see the lines above for what to do");
    }
    Ok(())
}

/// Whether the kernel has `mount_setattr(2)` (5.12), which confinement makes the host
/// read-only with (`runtime/confine.rs`).
fn mount_setattr_exists() -> bool {
    // SAFETY: an invalid call on purpose (no path, no attributes): the kernel refuses it
    // before touching anything, with ENOSYS only when the call does not exist.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            std::ptr::null::<libc::c_char>(),
            0,
            std::ptr::null::<u8>(),
            0,
        )
    };
    !(r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
}

/// Where meshsim's own files are: the binary, the man page, the completions, the examples
/// and the Synapse cache.
fn installed_files() -> Vec<(&'static str, String)> {
    let shown = |p: Option<PathBuf>, missing: &str| {
        p.map_or_else(|| missing.to_owned(), |p| p.display().to_string())
    };
    let not_installed = "not installed (sudo ./x install, or the .deb)";
    let completions: Vec<String> = ["meshsim.bash", "_meshsim", "meshsim.fish"]
        .iter()
        .filter_map(|f| files::installed(f))
        .map(|p| p.display().to_string())
        .collect();
    let synapse = SynapseOptions::default().venv();
    vec![
        ("binary", shown(std::env::current_exe().ok(), "unknown")),
        (
            "man page",
            shown(files::installed("meshsim.1"), not_installed),
        ),
        (
            "completions",
            if completions.is_empty() {
                not_installed.to_owned()
            } else {
                completions.join(", ")
            },
        ),
        ("examples", shown(files::examples(), not_installed)),
        (
            "Synapse",
            if synapse.dir.is_dir() {
                format!("{} (cached)", synapse.dir.display())
            } else {
                format!(
                    "{} (installed there on first use of --workload synapse)",
                    synapse.dir.display()
                )
            },
        ),
        (
            "Postgres",
            match meshsim::workload::postgres::find_binaries() {
                Ok(bin) => format!("{} (for --database postgres)", bin.display()),
                Err(_) => {
                    "not installed: `apt-get install postgresql` for --database postgres".to_owned()
                }
            },
        ),
        ("KSM", meshsim::runtime::ksm::describe()),
    ]
}

/// Where the kernel says whether frames crossing a bridge go through iptables; it exists only
/// while `br_netfilter` is loaded.
const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// `Some(true)` when br_netfilter is loaded and hands bridged IPv4 frames to iptables;
/// `None` when it is not loaded (or the file cannot be read).
fn bridge_nf_call_iptables() -> Option<bool> {
    let value = std::fs::read_to_string(BRIDGE_NF_CALL_IPTABLES).ok()?;
    Some(value.trim() != "0")
}

/// The policy of the iptables FORWARD chain (`ACCEPT`, `DROP`), if iptables is installed
/// and answers.
///
/// This runs `iptables -S FORWARD`, a read-only diagnostic of `check` only. The chain lives
/// in one of two kernel interfaces, chosen by which `iptables` the host has: nf_tables (read
/// over netlink) or legacy x_tables (read through getsockopt on a raw socket); dockerd writes
/// its rules through that same binary. Asking the binary sees what dockerd set whichever
/// backend it is; reading one interface directly would miss the other.
fn iptables_forward_policy() -> Option<String> {
    let out = Command::new("iptables")
        .args(["-S", "FORWARD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    forward_policy(&String::from_utf8_lossy(&out.stdout)).map(str::to_owned)
}

/// The policy in `iptables -S FORWARD`'s output, whose policy line is `-P FORWARD DROP`.
fn forward_policy(listing: &str) -> Option<&str> {
    listing.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("-P"), Some("FORWARD"), Some(policy)) => Some(policy),
            _ => None,
        }
    })
}

/// One line per sign of a dockerd that manages iptables, each with its fix. Such a dockerd
/// loads br_netfilter, turns on bridge-nf-call-iptables and sets FORWARD to DROP, so the
/// frames between netns nodes on the mesh bridge meet its filter rules and are dropped.
fn bridge_filter_warnings(forward_policy: Option<&str>, bridge_nf: Option<bool>) -> Vec<String> {
    let mut warnings = Vec::new();
    if forward_policy == Some("DROP") {
        warnings.push(
            "the iptables FORWARD policy is DROP (a dockerd that manages iptables sets it): it \
             drops the netns backend's frames once bridged frames reach iptables; fix: start \
             dockerd with --iptables=false, or `iptables -P FORWARD ACCEPT`"
                .to_owned(),
        );
    }
    if bridge_nf == Some(true) {
        warnings.push(format!(
            "br_netfilter is loaded and {BRIDGE_NF_CALL_IPTABLES} is 1: frames between netns \
             nodes on the mesh bridge go through iptables, whose FORWARD rules can drop them; \
             fix: `sysctl -w net.bridge.bridge-nf-call-iptables=0`, or start dockerd with \
             --iptables=false"
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_setattr_is_found_on_kernels_that_have_it() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut numbers = release
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let version = (numbers.next().unwrap(), numbers.next().unwrap());
        assert_eq!(
            mount_setattr_exists(),
            version >= (5, 12),
            "kernel {release}"
        );
    }

    #[test]
    fn the_forward_policy_is_read_from_iptables_listing() {
        let docker = "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-FORWARD\n";
        assert_eq!(forward_policy(docker), Some("DROP"));
        assert_eq!(forward_policy("-P FORWARD ACCEPT\n"), Some("ACCEPT"));
        // A rule that mentions the chain is not its policy.
        assert_eq!(forward_policy("-A FORWARD -j ACCEPT\n"), None);
        assert_eq!(forward_policy(""), None);
    }

    #[test]
    fn a_dockerd_firewall_warns_with_its_fix() {
        assert!(bridge_filter_warnings(Some("ACCEPT"), Some(false)).is_empty());
        assert!(bridge_filter_warnings(None, None).is_empty());

        let drop = bridge_filter_warnings(Some("DROP"), None);
        assert_eq!(drop.len(), 1);
        assert!(drop[0].contains("FORWARD policy is DROP"), "{}", drop[0]);
        assert!(drop[0].contains("--iptables=false"), "{}", drop[0]);

        let bridged = bridge_filter_warnings(Some("ACCEPT"), Some(true));
        assert_eq!(bridged.len(), 1);
        assert!(
            bridged[0].contains("bridge-nf-call-iptables=0"),
            "{}",
            bridged[0]
        );

        let both = bridge_filter_warnings(Some("DROP"), Some(true));
        assert_eq!(both.len(), 2);
        assert!(both.iter().all(|w| !w.contains('\n')), "{both:?}");
    }
}
