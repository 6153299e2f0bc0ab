//! A Synapse homeserver on every node, whose server name is the node's name.
//!
//! Once per run ([`SynapseRun::prepare`]): the install (a cached venv for namespace nodes;
//! containers have it in their image), the run directory, the run's CA, the registration
//! secret and the name files. Per node ([`SynapseRun::start`]): its name in the hosts file,
//! its directory (kept for the run, so a node added again is the same server), its DNS
//! answerer, the process, and a task that waits for it to answer and makes its test user.
//! All of it through [`NodeHost`], so it is the same on every backend.

mod config;
mod register;
mod supervise;
pub mod workers;
mod zygote;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

pub use config::*;
use supervise::{CurrentProcess, NodeLaunch, StartOutcome};
use tokio::sync::watch;
use zygote::Zygote;
pub use zygote::ZygoteError;

use super::{
    NodeInfo, NodeLogs, NodeStatus, Running, WorkloadError, WorkloadStatus, dns,
    host::{Confinement, Cover, HostKind, NodeHost, NodeNeeds, NodeProcess, Program},
    http::NodeHttp,
    matrix::Matrix,
    names::MeshNames,
    pki::RunCa,
    postgres::Postgres,
    restart::RestartPolicies,
    venv::VenvSpec,
};
use crate::{random::random_hex, run_config::Addressing};

/// What a Synapse node sees of the run instead of the host's files (see `workload::names`).
const HOSTS: &str = "/etc/hosts";
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Where Synapse is inside `meshsim/synapse` (images/synapse/Dockerfile).
const IMAGE_PYTHON: &str = "/opt/synapse/bin/python";
/// The image of Synapse containers.
pub const SYNAPSE_IMAGE: &str = "meshsim/synapse";
/// Redis and nginx, for homeservers with workers: Debian's, on the host and in the image.
const REDIS: &str = "/usr/bin/redis-server";
const NGINX: &str = "/usr/sbin/nginx";
/// How often a starting Synapse is asked whether it answers.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// What every Synapse node of a run shares.
pub struct SynapseRun {
    pub options: SynapseOptions,
    /// The host's install, for namespace nodes (`None` when every node is a container).
    venv: Option<VenvSpec>,
    ca: RunCa,
    ca_path: PathBuf,
    names: MeshNames,
    /// One registration secret for the run: meshsim makes the test users.
    registration_secret: String,
    mesh_cidr: String,
    logs: NodeLogs,
    /// What the nodes' test users see: observers, the event log, the mesh room.
    matrix: Arc<Matrix>,
    /// The run's cluster, when nodes keep their data in Postgres.
    postgres: Option<Postgres>,
    /// What forks one-process homeservers into namespace nodes (`Launch::Fork`).
    zygote: Option<Zygote>,
    /// Whether each node's homeserver starts again when it ends on its own.
    restarts: RestartPolicies,
}

impl SynapseRun {
    /// Installs Synapse for namespace nodes (`host_install`; the first time takes a while and
    /// says so), then makes the run directory, the CA and the name files. Nothing is left
    /// behind when it fails.
    pub async fn prepare(
        options: &SynapseOptions,
        addressing: &Addressing,
        logs: NodeLogs,
        host_install: bool,
    ) -> Result<Self, WorkloadError> {
        for target in [HOSTS, RESOLV_CONF] {
            if !Path::new(target).exists() {
                return Err(WorkloadError::NothingToCover(target.into()));
            }
        }
        let venv = if host_install {
            let install = options.clone();
            let venv = tokio::task::spawn_blocking(move || {
                install.prepare(&mut |line: &str| tracing::info!("{line}"))
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
            Some(venv)
        } else {
            None
        };
        if options.workers.is_some() && host_install {
            for (program, package) in [(REDIS, "redis-server"), (NGINX, "nginx")] {
                if !Path::new(program).is_file() {
                    return Err(WorkloadError::MissingProgram { program, package });
                }
            }
        }
        prepare_run_dir(&options.run_dir)?;
        let logs_dir = logs.dir().to_owned();
        let postgres = match options.database {
            Database::Sqlite => None,
            Database::Postgres => {
                match Postgres::start(options.postgres_dir.clone(), logs_dir.join("postgres.log"))
                    .await
                {
                    Ok(cluster) => Some(cluster),
                    Err(e) => {
                        let _ = config::remove_run_dir(&options.run_dir);
                        return Err(e.into());
                    }
                }
            }
        };
        let made = Self::in_run_dir(options, venv, addressing, logs, postgres);
        if made.is_err() {
            let _ = config::remove_run_dir(&options.run_dir);
        }
        let mut run = made?;
        if let Some(venv) = &run.venv
            && options.launch == Launch::Fork
            && options.workers.is_none()
        {
            match Zygote::start(
                &venv.python_bin(),
                &options.run_dir,
                &logs_dir.join("zygote.log"),
                crate::runtime::ksm::merging(),
            )
            .await
            {
                Ok(zygote) => run.zygote = Some(zygote),
                Err(e) => {
                    run.finish();
                    return Err(e.into());
                }
            }
        }
        tracing::info!(
            version = %options.version,
            run_dir = %options.run_dir.display(),
            logs = %logs_dir.display(),
            database = options.database.name(),
            launch = if run.zygote.is_some() { "fork" } else { "cold" },
            "every node runs Synapse: server name = node name, user @{}:<node>",
            options.user
        );
        Ok(run)
    }

    fn in_run_dir(
        options: &SynapseOptions,
        venv: Option<VenvSpec>,
        addressing: &Addressing,
        logs: NodeLogs,
        postgres: Option<Postgres>,
    ) -> Result<Self, WorkloadError> {
        let ca = RunCa::new(&format!("pid {} {}", std::process::id(), random_hex(4)))?;
        let ca_path = options.ca_path();
        std::fs::write(&ca_path, ca.cert_pem()).map_err(WorkloadError::io("write", &ca_path))?;
        let names = MeshNames::create(&options.run_dir).map_err(WorkloadError::io(
            "write the name files in",
            &options.run_dir,
        ))?;
        Ok(SynapseRun {
            options: options.clone(),
            venv,
            ca,
            ca_path,
            names,
            registration_secret: random_hex(24),
            mesh_cidr: addressing.cidr(),
            logs,
            matrix: Matrix::new(&options.user, &options.password),
            postgres,
            zygote: None,
            restarts: RestartPolicies::new(options.restart),
        })
    }

    /// The run's hosts file over `/etc/hosts` and its resolv.conf over `/etc/resolv.conf`;
    /// containers also get the run and log directories (and Postgres's socket).
    pub fn needs(&self) -> NodeNeeds {
        let mut dirs = vec![self.options.run_dir.clone(), self.logs.dir().to_owned()];
        dirs.extend(self.postgres.as_ref().map(|pg| pg.dir().to_owned()));
        NodeNeeds {
            covers: vec![
                Cover {
                    file: self.names.hosts_path().to_owned(),
                    target: HOSTS.into(),
                },
                Cover {
                    file: self.names.resolv_path().to_owned(),
                    target: RESOLV_CONF.into(),
                },
            ],
            dirs,
            runs_processes: true,
        }
    }

    /// Starts Synapse on a new node: its name, its directory, its DNS answerer, the process,
    /// and the task that watches it start. A failure leaves nothing of it but a directory
    /// an earlier node of the same name left (the node's data, kept for the run).
    pub async fn start(
        self: &Arc<Self>,
        node: &NodeInfo,
        host: Arc<dyn NodeHost>,
        status: &watch::Sender<WorkloadStatus>,
    ) -> Result<Running, WorkloadError> {
        // The name first: the server resolves its own name too.
        self.names
            .insert(&node.name, node.ip)
            .map_err(WorkloadError::io("rewrite", self.names.hosts_path()))?;
        let started = self.start_in(node, host, status).await;
        if started.is_err() {
            let _ = self.names.remove(&node.name);
        }
        started
    }

    async fn start_in(
        self: &Arc<Self>,
        node: &NodeInfo,
        host: Arc<dyn NodeHost>,
        status: &watch::Sender<WorkloadStatus>,
    ) -> Result<Running, WorkloadError> {
        let database = self.postgres.as_ref().map(|pg| pg.args(&node.name));
        let config = NodeConfig {
            name: &node.name,
            mesh_cidr: &self.mesh_cidr,
            ca_path: &self.ca_path,
            registration_secret: &self.registration_secret,
            postgres: database.as_ref(),
            workers: self.options.workers,
        };
        let dir = write_node_dir(&self.options.run_dir, &config, &self.ca)?;
        let remove_new_dir = |dir: &NodeDir| {
            // A reused directory holds the node's data from earlier in the run.
            if !dir.reused {
                let _ = std::fs::remove_dir_all(&dir.dir);
            }
        };
        // Its database goes with its directory: kept when the node comes back as itself.
        if let Some(pg) = &self.postgres
            && let Err(e) = pg.ensure_database(&node.name, dir.reused).await
        {
            remove_new_dir(&dir);
            return Err(e.into());
        }
        let socket = match dns::bind_in(host.netns()) {
            Ok(socket) => socket,
            Err(e) => {
                remove_new_dir(&dir);
                return Err(e.into());
            }
        };
        let dns = tokio::spawn(dns::serve(socket, self.names.clone()));
        // On a namespace node it runs as the node's own user, confined to its directory.
        let confinement = match host.kind() {
            HostKind::Namespace => match self.confinement(node, &dir.dir) {
                Ok(c) => Some(c),
                Err(e) => {
                    dns.abort();
                    remove_new_dir(&dir);
                    return Err(e);
                }
            },
            HostKind::Container => None,
        };
        let python = match host.kind() {
            HostKind::Namespace => self
                .venv
                .as_ref()
                .expect("namespace nodes have the host's install")
                .python_bin(),
            HostKind::Container => PathBuf::from(IMAGE_PYTHON),
        };
        let log = match self.logs.open(&node.name) {
            Ok(log) => log,
            Err(e) => {
                dns.abort();
                remove_new_dir(&dir);
                return Err(e);
            }
        };
        let argv = vec![
            "--config-path".to_owned(),
            dir.config().to_string_lossy().into_owned(),
        ];
        let program = match self.options.workers {
            None => Program::new(python, &["-m", "synapse.app.homeserver"], &log)
                .with_arg(&argv[0])
                .with_arg(&argv[1]),
            Some(profile) => {
                // Rewritten at every start: the install's paths are this run's.
                let script = dir.dir.join("node.sh");
                let text = workers::node_script(
                    &dir.dir,
                    &node.name,
                    self.logs.dir(),
                    profile,
                    &workers::Binaries {
                        python: &python,
                        redis: Path::new(REDIS),
                        nginx: Path::new(NGINX),
                    },
                );
                if let Err(e) = std::fs::write(&script, text) {
                    dns.abort();
                    remove_new_dir(&dir);
                    return Err(WorkloadError::io("write", &script)(e));
                }
                Program::new("/bin/bash", &[], &log).with_arg(script.to_string_lossy())
            }
        };
        let program = match confinement {
            Some(c) => program.confined(c),
            None => program.in_dir(&dir.dir),
        };
        let launch = NodeLaunch {
            node: node.clone(),
            host,
            dir: dir.dir.clone(),
            argv,
            program,
        };
        let process: Arc<dyn NodeProcess> = match self.spawn(&launch).await {
            Ok(process) => Arc::from(process),
            Err((program, source)) => {
                dns.abort();
                remove_new_dir(&dir);
                return Err(WorkloadError::Spawn {
                    node: node.name.clone(),
                    program,
                    source,
                });
            }
        };
        status.send_modify(|s| {
            s.insert(
                node.id,
                NodeStatus::starting(&node.name, process.pid(), log.clone()),
            );
        });
        let current = Arc::new(CurrentProcess::new(process));
        let watcher = tokio::spawn(supervise::supervise(
            Arc::clone(self),
            launch,
            Arc::clone(&current),
            status.clone(),
        ));
        Ok(Running {
            process: current,
            watcher: Some(watcher),
            serving: vec![dns],
        })
    }

    /// What node `node`'s processes may see and write: its directory (handed to its user
    /// here), the run's CA and the Postgres socket's directory to read, and with workers
    /// each process's log, made here and handed to it too.
    fn confinement(&self, node: &NodeInfo, dir: &Path) -> Result<Confinement, WorkloadError> {
        let mut c = Confinement::node(node.id, dir);
        c.hand_over_dir()
            .map_err(WorkloadError::io("hand to the node's user", dir))?;
        c.readable.push(self.ca_path.clone());
        if let Some(venv) = &self.venv {
            c.readable.extend(venv.base_prefix());
        }
        c.readable
            .extend(self.postgres.as_ref().map(|pg| pg.dir().to_owned()));
        if let Some(profile) = self.options.workers {
            for process in workers::processes(profile) {
                let log = workers::process_log(self.logs.dir(), &node.name, &process);
                std::fs::File::create(&log).map_err(WorkloadError::io("create", &log))?;
                std::os::unix::fs::chown(&log, Some(c.uid), Some(c.gid))
                    .map_err(WorkloadError::io("hand to the node's user", &log))?;
                c.writable.push(log);
            }
        }
        Ok(c)
    }

    /// Starts the node's homeserver process: forked by the zygote into a namespace node
    /// when the run has one, else the program itself. On failure, what was run and why.
    async fn spawn(
        &self,
        launch: &NodeLaunch,
    ) -> Result<Box<dyn NodeProcess>, (String, std::io::Error)> {
        let log = &launch.program.log;
        // Again at every start: what meshsim wrote into the directory since is root's.
        let confinement = launch.program.confinement.as_ref();
        if let Some(c) = confinement {
            c.hand_over_dir().map_err(|e| {
                (
                    format!("handing {} to the node's user", launch.dir.display()),
                    e,
                )
            })?;
        }
        match (&self.zygote, launch.host.entry()) {
            (Some(zygote), Some(entry)) => zygote
                .fork(
                    &launch.node.name,
                    &entry,
                    &launch.dir,
                    confinement,
                    log,
                    &launch.argv,
                )
                .await
                .map_err(|e| {
                    let what = format!("a fork of the zygote (pid {})", zygote.pid());
                    (what, std::io::Error::other(e))
                }),
            _ => launch
                .host
                .spawn(&launch.program)
                .await
                .map_err(|e| (launch.program.describe(), e)),
        }
    }

    /// Asks the node until it answers `/_matrix/federation/v1/version` and makes its test
    /// user. Gives up when the process ends or the start timeout passes.
    async fn watch_start(
        &self,
        node: &NodeInfo,
        host: &dyn NodeHost,
        process: &dyn NodeProcess,
        log: &Path,
        at: Instant,
    ) -> StartOutcome {
        let mut http = NodeHttp::new(host.netns().clone(), CLIENT_PORT);
        let deadline = at + self.options.start_timeout;
        let answered = loop {
            let answer = http
                .get(
                    "/_matrix/federation/v1/version",
                    None,
                    Duration::from_secs(2),
                )
                .await;
            if answer.is_ok_and(|a| a.ok()) {
                break at.elapsed();
            }
            if let Some(exit) = process.exit() {
                return StartOutcome::Ended(exit);
            }
            if Instant::now() >= deadline {
                return StartOutcome::Failed(format!(
                    "synapse on {} did not answer within {} s: see {}",
                    node.name,
                    self.options.start_timeout.as_secs(),
                    log.display()
                ));
            }
            tokio::time::sleep(PROBE_EVERY).await;
        };
        match register::test_user(
            &mut http,
            &self.registration_secret,
            &self.options.user,
            &self.options.password,
        )
        .await
        {
            Ok(()) => {
                tracing::info!(
                    node = %node.name,
                    "synapse answers after {:.1} s; @{}:{} is ready",
                    answered.as_secs_f64(),
                    self.options.user,
                    node.name
                );
                StartOutcome::Ready(answered)
            }
            // It may have ended meanwhile: then that is what happened.
            Err(e) => match process.exit() {
                Some(exit) => StartOutcome::Ended(exit),
                None => StartOutcome::Failed(format!(
                    "synapse on {}: making the test user: {e}",
                    node.name
                )),
            },
        }
    }

    /// How this run's homeservers start: forked only when there is a zygote (namespace
    /// nodes, one process each).
    pub fn launch(&self) -> Launch {
        if self.zygote.is_some() {
            Launch::Fork
        } else {
            Launch::Cold
        }
    }

    /// Every node's restart policy, which the API changes.
    pub fn restarts(&self) -> &RestartPolicies {
        &self.restarts
    }

    /// The run's Matrix view: event log, observers, mesh room.
    pub fn matrix(&self) -> &Arc<Matrix> {
        &self.matrix
    }

    /// After the node's process stopped: its line in the hosts file goes. Its directory
    /// stays until the run ends, so the node can be added back as itself.
    pub fn forget(&self, node: &str) {
        self.matrix.forget(node);
        if let Err(e) = self.names.remove(node) {
            tracing::warn!(
                "could not update {}: {e}",
                self.names.hosts_path().display()
            );
        }
    }

    /// When the run ends: the run directory and the Postgres cluster go.
    pub fn finish(&self) {
        if let Some(zygote) = &self.zygote {
            zygote.stop();
        }
        if let Some(pg) = &self.postgres {
            pg.finish();
        }
        if let Err(e) = config::remove_run_dir(&self.options.run_dir) {
            tracing::warn!("could not remove {}: {e}", self.options.run_dir.display());
        }
    }
}
