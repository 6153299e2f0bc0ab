//! The meshsim command.

mod check;
mod exec;
mod experiment;
mod files;
mod mesh;

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Result;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};
use meshsim::{
    run_config::Addressing,
    runtime::names::{DEFAULT_PREFIX, RunPrefix},
    workload::{
        restart::Restart,
        synapse::{Database, Launch, SYNAPSE_VERSION, workers::Profile},
    },
};

#[derive(Parser)]
#[command(
    version,
    about = "A network lab for Matrix homeserver meshes: eBPF-shaped links between nodes on one host"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run an empty mesh until Ctrl-C (the default), with the canvas on http://127.0.0.1:3000.
    Serve(RunOptions),
    /// Start the topology in FILE (TOML, see examples/) and run it until Ctrl-C, with the
    /// canvas served as by `serve`. The file's `[run]` table may set the backend, workload,
    /// node command and image; a flag given here overrides it.
    Up {
        file: PathBuf,
        #[command(flatten)]
        options: RunOptions,
    },
    /// Run the experiment in SCENARIO (a topology file with `[[step]]`s, see
    /// examples/scenarios/) without anyone at the canvas, and leave its event log, counters,
    /// plots and report.md in DIR. Exits non-zero when a step fails (a `wait` that times
    /// out) or the run is interrupted; what was gathered until then is still written.
    Run {
        scenario: PathBuf,
        /// Where the results go: a new or empty directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Run it N times, into DIR/1 … DIR/N, with a summary across runs in DIR/summary.md.
        #[arg(long, default_value_t = 1, value_name = "N")]
        repeat: u32,
        /// Override a setting of the scenario: settings.<field>=VALUE or client.<field>=VALUE
        /// (e.g. client.bandwidth_down_bps=64000); may be given more than once.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[command(flatten)]
        options: RunOptions,
    },
    /// Remove everything a previous run left behind: namespaces, veths, the bridge (with their
    /// qdiscs and programs), processes still running in those namespaces, and (when Docker
    /// is reachable) its containers and network. Only the default run's (prefix `ms`) unless
    /// told otherwise; a run that is still running is left alone.
    Down {
        /// The run whose leftovers to remove (its --prefix).
        #[arg(long, default_value = DEFAULT_PREFIX, conflicts_with = "all")]
        prefix: RunPrefix,
        /// Every run's that is not running.
        #[arg(long)]
        all: bool,
    },
    /// Check that this machine can run meshsim: privileges, BTF, the classifier, sch_fq,
    /// and where meshsim's installed files are.
    Check,
    /// Run a command inside a node: meshsim exec n1 -- ping 10.77.0.3
    Exec {
        /// The run the node belongs to (its --prefix).
        #[arg(long, default_value = DEFAULT_PREFIX)]
        prefix: RunPrefix,
        node: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Write the man pages and the bash, zsh and fish completions into DIR, laid out as they
    /// go under PREFIX (for installers: `./x install`, `./x package`).
    #[command(hide = true)]
    GenerateFiles {
        dir: PathBuf,
        #[arg(long, default_value = "/usr/local")]
        prefix: String,
    },
}

impl Command {
    /// Whether the command changes the host's network (everything but `check` and
    /// `generate-files`).
    fn needs_root(command: Option<&Command>) -> bool {
        !matches!(
            command,
            Some(Command::Check | Command::GenerateFiles { .. })
        )
    }
}

/// `0.1.0 (commit 1a2b3c4d5e6f, installs Synapse 1.163.2)`.
pub(crate) fn version() -> String {
    format!(
        "{} (commit {}, installs Synapse {SYNAPSE_VERSION})",
        env!("CARGO_PKG_VERSION"),
        env!("MESHSIM_COMMIT")
    )
}

/// The command line, with the version that names the commit and the Synapse release.
fn parse() -> Cli {
    // clap keeps the version for the life of the process: one small leak, once.
    let command = Cli::command().version(&*version().leak());
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Where nodes live.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    /// A network namespace per node (needs nothing but the kernel).
    Netns,
    /// A Docker container per node, from a local image (`cargo xtask images` builds them).
    Docker,
}

impl From<Backend> for meshsim::run_config::BackendKind {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Netns => Self::Netns,
            Backend::Docker => Self::Docker,
        }
    }
}

/// The run's flags. `--backend`, `--image`, `--workload` and `--node-cmd` override what a
/// topology file's `[run]` table says; left out, the file's value (or the default) holds.
#[derive(Args, Clone, Debug)]
struct RunOptions {
    /// Where nodes live: network namespaces (the default), or Docker containers
    /// `meshsim-<name>` on the network `meshsim` (the daemon must run). Overrides the
    /// topology file's `backend`.
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// With `--backend docker`: the image (default: meshsim/base, or meshsim/synapse for
    /// `--workload synapse`). Overrides the topology file's `image`.
    #[arg(long)]
    image: Option<String>,
    /// The mesh subnet; the host is .1 on the bridge, node nK is address K + 1.
    #[arg(long, default_value = "10.77.0.0/16")]
    subnet: Addressing,
    /// What nodes run: `none` (the default), `synapse`, a Synapse homeserver whose server
    /// name is the node's name (installed from PyPI once; README, "Synapse nodes"), or
    /// `synapse-workers`, the same with workers, Redis and nginx, on Postgres.
    /// A node may still run nothing (the canvas, the API, `workload = "none"` in a file).
    /// With `--node-cmd`, overrides the topology file's `workload` and `node_cmd`.
    #[arg(long, value_name = "none|synapse|synapse-workers")]
    workload: Option<String>,
    /// Where Synapse nodes keep their data: `sqlite` (the default, a file in the node's
    /// directory) or `postgres` (a database per node in one Postgres cluster of the run, on
    /// a unix socket; Debian's postgresql must be installed). Overrides the file's `database`.
    #[arg(long, value_enum)]
    database: Option<Database>,
    /// With `--workload synapse-workers`: which workers each homeserver runs, `small` (the
    /// default: a sync worker, a federation reader, a federation sender) or `full` (the
    /// production layout; docs/synapse.md, "Workers"). Overrides the file's `profile`.
    #[arg(long, value_enum)]
    profile: Option<Profile>,
    /// How homeservers start on netns nodes: `fork` (the default: forked from one process
    /// of the run that imported Synapse once, so they start in about a second and share
    /// its memory) or `cold` (each imports Synapse itself). Workers and containers always
    /// start cold. Overrides the file's `launch`.
    #[arg(long, value_enum)]
    launch: Option<Launch>,
    /// Whether a homeserver that ends on its own (exits, is killed) starts again:
    /// `on-failure` (the default: after 1 s, doubling to 1 min, from its own data) or
    /// `never`. The run's default; a node may choose its own (the file's `restart` in its
    /// table, `PUT /api/nodes/{id}/restart`, the canvas). Overrides the file's `restart`.
    #[arg(long, value_enum)]
    restart: Option<Restart>,
    /// Let the kernel merge identical memory pages of node processes (KSM), for more
    /// homeservers per GiB; ksmd then uses some CPU. The host's KSM settings come back
    /// when the run ends (or with `meshsim down`). `meshsim check` says whether this
    /// kernel has KSM.
    #[arg(long)]
    ksm: bool,
    /// A command to run in nodes, with {name} and {ip} filled in; output goes to
    /// LOG_DIR/<name>.log and it stops with the node. Overrides the topology file's
    /// `workload` and `node_cmd`.
    #[arg(long)]
    node_cmd: Option<String>,
    /// Run the node command as root, seeing and writing the host as meshsim does, for a
    /// command that needs it (one that changes the node's routes, say). Without it, the
    /// command runs as the node's own unprivileged user (uid 2000000000 + K for node nK),
    /// confined to its directory (/tmp/meshsim/nodes/<name>). Overrides the file's
    /// `node_cmd_as_root`, with `--node-cmd`.
    #[arg(long)]
    node_cmd_as_root: bool,
    /// Where per-node logs go (default: /tmp/meshsim/logs, or /tmp/meshsim-PREFIX/logs).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// What everything this run makes on the host is named after (`ms`: namespaces ms-n1,
    /// bridge ms-br0, ...). Two runs at once on one host need two prefixes and two subnets.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: RunPrefix,
    /// Let frames between nodes that are not linked pass (routes still follow links).
    #[arg(long)]
    loose: bool,
    /// Log the classifier's rare events (a clone the kernel refused, a frame strict mode
    /// dropped) as warnings: for debugging the datapath, off by default.
    #[arg(long)]
    debug_classifier: bool,
    /// Where the canvas, the API and /metrics are served (default 127.0.0.1:3000; `run`
    /// takes a free port when that one is taken). Anything but loopback lets others reshape
    /// this host's mesh: set --token then.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Require this bearer token on /api, /ws and /metrics (in the canvas: open /?token=...).
    #[arg(long, env = "MESHSIM_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: a log file (a service, CI, the tests)
        // stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = parse();
    if Command::needs_root(cli.command.as_ref()) && !nix::unistd::geteuid().is_root() {
        eprintln!(
            "meshsim: needs root: it makes network namespaces, links and routes and loads an \
             eBPF program into the kernel; run it with sudo (`meshsim check` works without)"
        );
        return std::process::ExitCode::FAILURE;
    }
    if let Some(Command::GenerateFiles { dir, prefix }) = &cli.command {
        return match files::generate(Cli::command().version(&*version().leak()), dir, prefix) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meshsim: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    // `exec` replaces this process: no runtime, no threads (setns needs a single thread).
    if let Some(Command::Exec {
        prefix,
        node,
        command,
    }) = &cli.command
    {
        let e = exec::run(prefix, node, command);
        eprintln!("meshsim: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    raise_open_files_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshsim: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshsim: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A thousand WebSocket clients and a few thousand nodes' sockets pass the usual soft limit
/// of 1024 open files; the hard limit (set by the admin) is the real bound.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let result = getrlimit(Resource::RLIMIT_NOFILE).and_then(|(soft, hard)| {
        if soft < hard {
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        } else {
            Ok(())
        }
    });
    if let Err(e) = result {
        tracing::warn!(
            "cannot raise the open files limit ({e}): large meshes or many WebSocket clients may fail with EMFILE"
        );
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => mesh::run(None, default_options()).await,
        Some(Command::Serve(options)) => mesh::run(None, options).await,
        Some(Command::Up { file, options }) => mesh::run(Some(file), options).await,
        Some(Command::Run {
            scenario,
            out,
            repeat,
            set,
            options,
        }) => experiment::run(&scenario, &out, repeat, &set, options).await,
        Some(Command::Down { prefix, all }) => mesh::down(&prefix, all).await,
        Some(Command::Check) => check::run().await,
        Some(Command::Exec { .. } | Command::GenerateFiles { .. }) => {
            unreachable!("handled before the runtime starts")
        }
    }
}

fn default_options() -> RunOptions {
    RunOptions {
        backend: None,
        image: None,
        subnet: Addressing::default(),
        workload: None,
        node_cmd: None,
        node_cmd_as_root: false,
        database: None,
        profile: None,
        launch: None,
        restart: None,
        ksm: false,
        log_dir: None,
        prefix: RunPrefix::default(),
        loose: false,
        debug_classifier: false,
        listen: None,
        token: std::env::var("MESHSIM_TOKEN").ok(),
    }
}
