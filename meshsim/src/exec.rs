//! `meshsim exec <node> -- <command>`: run a command inside a node's namespace.

use std::os::unix::process::CommandExt as _;

use anyhow::anyhow;
use meshsim::{net::NetNs, runtime::names::RunPrefix};

/// Replaces this process with `command` inside node `node` of the run `prefix`; returns
/// only on failure.
pub fn run(prefix: &RunPrefix, node: &str, command: &[String]) -> anyhow::Error {
    let names = prefix.names();
    let ns = match NetNs::open(&format!("{names}{node}")) {
        Ok(ns) => ns,
        Err(e) => {
            let running = NetNs::list_with_prefix(&names).unwrap_or_default();
            let nodes: Vec<&str> = running
                .iter()
                .filter_map(|n| n.strip_prefix(names.as_str()))
                .filter(|n| n.starts_with('n'))
                .collect();
            return anyhow!(e).context(if nodes.is_empty() {
                format!("no node {node}: is a meshsim running?")
            } else {
                format!("no node {node}; running nodes: {}", nodes.join(" "))
            });
        }
    };
    let (program, args) = command.split_first().expect("clap requires a command");
    let err = ns.command(program).args(args).exec();
    if err.kind() == std::io::ErrorKind::NotFound {
        // A node sees the host's programs: what is missing is missing on the host.
        return anyhow!(
            "`{program}` was not found: a node runs the host's programs, so install it on \
             this host{}",
            install_hint(program)
        );
    }
    anyhow!(err).context(format!("running {program} in {node}"))
}

/// Which Debian package has the programs the README suggests running in a node.
fn install_hint(program: &str) -> &'static str {
    match program {
        "ping" => " (Debian: `apt-get install iputils-ping`)",
        "curl" => " (Debian: `apt-get install curl`)",
        "ip" | "ss" => " (Debian: `apt-get install iproute2`)",
        _ => "",
    }
}
