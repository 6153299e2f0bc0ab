//! `meshsim check`: what this machine has of what meshsim needs, each with a fix.

use std::path::Path;

use anyhow::{Result, bail};
use meshsim::{
    datapath::{Datapath, DatapathOptions},
    net::{FqSupport, probe_fq},
};

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
    for l in &lines {
        let status = match (l.ok, l.soft) {
            (true, _) => "ok",
            (false, true) => "reduced",
            (false, false) => "MISSING",
        };
        println!("{status:<8} {:<16} {}", l.what, l.detail);
    }
    if lines.iter().any(|l| !l.ok && !l.soft) {
        bail!("some checks failed: see the lines above for what to do");
    }
    Ok(())
}
