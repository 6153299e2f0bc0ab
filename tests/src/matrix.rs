//! matrix-nio, a Matrix client that is not ours, in a cached venv, driven one step per run
//! of `nio_client.py` (`invite`, `join`, `send`, `await`) from inside a node's namespace
//! against that node's homeserver.

use std::{path::PathBuf, process::Output, time::Duration};

use meshsim::{
    model::NodeId,
    workload::{SynapseOptions, synapse::CLIENT_PORT, venv::VenvSpec},
};

use crate::{TempDir, mesh::MeshLab};

pub const NIO_VERSION: &str = "0.26.0";
/// Each step of a conversation gets this long.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(120);

const CLIENT: &str = include_str!("nio_client.py");

/// matrix-nio's venv, beside Synapse's in meshsim's cache.
pub fn nio_venv(options: &SynapseOptions) -> VenvSpec {
    VenvSpec {
        dir: options
            .cache_dir
            .join(format!("matrix-nio-venv-{NIO_VERSION}")),
        python: options.python.clone(),
        packages: vec![format!("matrix-nio=={NIO_VERSION}")],
        what: format!("matrix-nio {NIO_VERSION}"),
        approx_mb: 60,
    }
}

/// The client and its script, in a directory of the test's own.
pub struct Nio {
    pub venv: VenvSpec,
    script: PathBuf,
    _dir: TempDir,
}

impl Nio {
    /// Installs matrix-nio (and, with `with_synapse`, Synapse for namespace nodes) unless
    /// cached, and writes the script.
    pub async fn prepare(options: &SynapseOptions, with_synapse: bool) -> Nio {
        let venv = nio_venv(options);
        let (synapse, spec) = (options.clone(), venv.clone());
        tokio::task::spawn_blocking(move || {
            let mut say = |line: &str| eprintln!("{line}");
            if with_synapse {
                synapse.prepare(&mut say).expect("install Synapse");
            }
            spec.ensure(&mut say).expect("install matrix-nio");
        })
        .await
        .unwrap();
        let dir = TempDir::new("nio");
        let script = dir.path().join("client.py");
        std::fs::write(&script, CLIENT).unwrap();
        Nio {
            venv,
            script,
            _dir: dir,
        }
    }

    /// One step inside `node` against its homeserver, as `@meshsim:<node>`; panics with the
    /// client's words when it fails.
    pub async fn step(
        &self,
        mesh: &MeshLab,
        node: NodeId,
        step: &str,
        arg: &str,
        body: &str,
    ) -> String {
        self.try_step(mesh, node, step, arg, body, STEP_TIMEOUT)
            .await
            .unwrap_or_else(|why| panic!("client step {step} on {node} failed: {why}"))
    }

    /// One step that may fail: its output, or why it failed.
    pub async fn try_step(
        &self,
        mesh: &MeshLab,
        node: NodeId,
        step: &str,
        arg: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let mut cmd = mesh.ns(node).command(self.venv.python_bin());
        cmd.arg(&self.script)
            .arg(step)
            .arg(format!("http://{}:{CLIENT_PORT}", mesh.ip(node)))
            .arg(format!("@meshsim:{}", node.name()))
            .arg("meshsim")
            .arg(arg)
            .arg(body)
            .arg(timeout.as_secs().to_string());
        let out: Output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}
