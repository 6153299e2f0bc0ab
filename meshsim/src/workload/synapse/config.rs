//! Synapse's files: the install options, the per-node directory and configuration meshsim
//! writes, and the run directory they live in.
//!
//! Every option in `homeserver_yaml` is one of Synapse's documented configuration options;
//! docs/synapse.md says why each choice was made.

use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine as _;

use crate::{
    random::{random_bytes, random_hex},
    workload::{
        WorkloadError, marked,
        pki::{NodeCert, RunCa},
        postgres::{DatabaseArgs, POOL_MAX, POOL_MAX_WORKERS, POOL_MIN},
        restart::Restart,
        synapse::workers::{self, Profile},
        venv::{VenvError, VenvSpec},
    },
};

/// The Synapse release meshsim installs (from PyPI: there is no Debian package).
pub const SYNAPSE_VERSION: &str = "1.163.2";
/// The Postgres driver Synapse uses, installed next to it.
pub const PSYCOPG2_VERSION: &str = "2.9.13";
/// Federation, over TLS, as on the real network.
pub const FEDERATION_PORT: u16 = 8448;
/// Plain HTTP for clients, registration and health checks: client and federation resources,
/// so `/_matrix/federation/v1/version` can be asked without TLS. Servers never use it.
pub const CLIENT_PORT: u16 = 8008;
/// Written into a run directory meshsim made, so it may empty it again.
pub const RUN_MARKER: &str = ".meshsim-run";

/// How Synapse nodes are set up; the defaults suit `--workload synapse`.
#[derive(Clone, Debug, PartialEq)]
pub struct SynapseOptions {
    /// The `matrix-synapse` release to install.
    pub version: String,
    /// The Python that makes the venv.
    pub python: String,
    /// Where venvs are kept between runs.
    pub cache_dir: PathBuf,
    /// Where each node's configuration, keys and database go (`<run_dir>/<name>/`); emptied
    /// at the start and the end of a run.
    pub run_dir: PathBuf,
    /// The user made on every node at start (`@<user>:<node>`), and its password.
    pub user: String,
    pub password: String,
    /// How long a node may take to answer before it counts as failed.
    pub start_timeout: Duration,
    /// Where each node keeps its data.
    pub database: Database,
    /// Where the run's Postgres cluster goes, for `Database::Postgres` (emptied at the start
    /// and removed at the end of a run).
    pub postgres_dir: PathBuf,
    /// Workers by this profile, behind nginx (`--workload synapse-workers`); `None` for one
    /// process. Workers need `Database::Postgres`.
    pub workers: Option<Profile>,
    /// How homeservers start on namespace nodes.
    pub launch: Launch,
    /// Whether a homeserver that ends on its own starts again: the run's default, which a
    /// node may override.
    pub restart: Restart,
}

/// How a homeserver process starts.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Launch {
    /// Forked from the run's zygote, which imported Synapse once: faster, and a fraction of
    /// the memory. For one-process homeservers on namespace nodes; the others start cold.
    #[default]
    Fork,
    /// A Python of its own that imports Synapse itself.
    Cold,
}

impl Launch {
    pub fn name(self) -> &'static str {
        match self {
            Launch::Fork => "fork",
            Launch::Cold => "cold",
        }
    }
}

/// Where a homeserver keeps its data.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Database {
    /// A file in the node's directory (Synapse's default).
    #[default]
    Sqlite,
    /// A database of its own in the run's Postgres cluster, as in production.
    Postgres,
}

impl Database {
    pub fn name(self) -> &'static str {
        match self {
            Database::Sqlite => "sqlite",
            Database::Postgres => "postgres",
        }
    }
}

impl Default for SynapseOptions {
    fn default() -> Self {
        SynapseOptions {
            version: SYNAPSE_VERSION.to_owned(),
            python: "python3".to_owned(),
            cache_dir: default_cache_dir(),
            run_dir: PathBuf::from("/tmp/meshsim/run"),
            user: "meshsim".to_owned(),
            password: "meshsim".to_owned(),
            start_timeout: Duration::from_secs(180),
            database: Database::Sqlite,
            postgres_dir: PathBuf::from("/tmp/meshsim/postgres"),
            workers: None,
            launch: Launch::Fork,
            restart: Restart::OnFailure,
        }
    }
}

/// `$XDG_CACHE_HOME/meshsim` when set, else `/var/cache/meshsim` (meshsim runs as root).
pub fn default_cache_dir() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("meshsim"),
        _ => PathBuf::from("/var/cache/meshsim"),
    }
}

impl SynapseOptions {
    /// Homeservers with workers by `profile`: on Postgres, which workers share.
    pub fn with_workers(profile: Profile) -> Self {
        SynapseOptions {
            workers: Some(profile),
            database: Database::Postgres,
            ..SynapseOptions::default()
        }
    }

    /// The run's CA certificate: every node's TLS certificate is signed by it, so a client
    /// of the mesh (`curl --cacert`, a test, a bench) trusts the nodes through it.
    pub fn ca_path(&self) -> PathBuf {
        self.run_dir.join("ca.pem")
    }

    /// The cached venv for this version.
    pub fn venv(&self) -> VenvSpec {
        VenvSpec {
            dir: self.cache_dir.join(format!(
                "synapse-venv-{}-redis-pg{PSYCOPG2_VERSION}",
                self.version
            )),
            python: self.python.clone(),
            // Redis's client for workers (Synapse's `redis` extra); psycopg2 as a wheel:
            // the source package would need a compiler and libpq's headers. Synapse imports
            // the module, which both provide.
            packages: vec![
                format!("matrix-synapse[redis]=={}", self.version),
                format!("psycopg2-binary=={PSYCOPG2_VERSION}"),
            ],
            what: format!("synapse {}", self.version),
            approx_mb: 240,
        }
    }

    /// Installs Synapse unless the cache has it. Blocks (about 20 s the first time).
    pub fn prepare(&self, progress: &mut dyn FnMut(&str)) -> Result<VenvSpec, VenvError> {
        let venv = self.venv();
        venv.ensure(progress)?;
        Ok(venv)
    }
}

/// One node's files, under `<run_dir>/<name>/`.
#[derive(Clone, Debug)]
pub struct NodeDir {
    pub name: String,
    pub dir: PathBuf,
    /// The directory was left by an earlier node of the same name in this run and kept as
    /// it was: the server comes back as itself, with its database, keys and users.
    pub reused: bool,
}

impl NodeDir {
    pub fn config(&self) -> PathBuf {
        self.dir.join("homeserver.yaml")
    }
}

/// What differs between nodes of a run, and what they share.
pub struct NodeConfig<'a> {
    pub name: &'a str,
    /// The mesh's subnet, which Synapse must be allowed to reach (it refuses private
    /// addresses by default).
    pub mesh_cidr: &'a str,
    pub ca_path: &'a Path,
    pub registration_secret: &'a str,
    /// Its Postgres database; `None` for SQLite in its directory.
    pub postgres: Option<&'a DatabaseArgs>,
    /// Its workers; `None` for one process.
    pub workers: Option<Profile>,
}

/// Whether `<run_dir>/<name>/` holds a node an earlier node of this name finished writing:
/// its configuration and signing key are there (both are written last).
pub fn node_dir_written(run_dir: &Path, name: &str) -> bool {
    let dir = run_dir.join(name);
    dir.join("homeserver.yaml").is_file() && dir.join("signing.key").is_file()
}

/// Writes a node's directory: TLS certificate and key (from the run's CA), signing key,
/// `homeserver.yaml`. A directory an earlier node of the same name wrote in this run is
/// kept as it is (the run directory is emptied when a run starts, so it can only be this
/// run's): a node removed and added again returns as the same server, with its rooms,
/// users and signing key, so its peers' federation with it resumes. A half-written one is
/// replaced.
pub fn write_node_dir(
    run_dir: &Path,
    config: &NodeConfig<'_>,
    ca: &RunCa,
) -> Result<NodeDir, WorkloadError> {
    let dir = run_dir.join(config.name);
    let node = |reused| NodeDir {
        name: config.name.to_owned(),
        dir: dir.clone(),
        reused,
    };
    if node_dir_written(run_dir, config.name) {
        return Ok(node(true));
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(WorkloadError::io("remove", &dir))?;
    }
    fs::create_dir_all(dir.join("media")).map_err(WorkloadError::io("create", &dir))?;
    let NodeCert { cert_pem, key_pem } = ca.issue(config.name)?;
    let write = |file: &str, text: &str| {
        let path = dir.join(file);
        fs::write(&path, text).map_err(WorkloadError::io("write", path))
    };
    write("tls.crt", &cert_pem)?;
    write("tls.key", &key_pem)?;
    // A key id of its own: should a server ever be made anew under a name its peers have
    // seen (its directory removed by hand), peers cache keys by id for the key's validity,
    // a day, and would take the new server's signatures under a reused id as forged.
    let key_id = format!("a_{}", random_hex(4));
    write("signing.key", &signing_key(&random_bytes(32), &key_id))?;
    if let Some(profile) = config.workers {
        write_worker_files(&dir, profile)?;
    }
    write(
        "homeserver.yaml",
        &homeserver_yaml(config, &dir, &Secrets::random()),
    )?;
    Ok(node(false))
}

/// Each worker's configuration, nginx's, and the directories for sockets and nginx's files.
fn write_worker_files(dir: &Path, profile: Profile) -> Result<(), WorkloadError> {
    for sub in ["sockets", "workers", "nginx"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(WorkloadError::io("create", &path))?;
    }
    // Only the node's user (and root) reaches the sockets (each is 0600 too): replication
    // and Redis trust whoever connects.
    let sockets = dir.join("sockets");
    fs::set_permissions(&sockets, fs::Permissions::from_mode(0o700))
        .map_err(WorkloadError::io("restrict", &sockets))?;
    let write = |path: PathBuf, text: &str| {
        fs::write(&path, text).map_err(WorkloadError::io("write", path))
    };
    for w in workers::workers(profile) {
        write(
            dir.join("workers").join(format!("{}.yaml", w.name)),
            &workers::worker_yaml(dir, &w, &yaml_string),
        )?;
    }
    write(
        dir.join("nginx").join("nginx.conf"),
        &workers::nginx_conf(dir, profile),
    )
}

/// Synapse's signing key file: `ed25519 <key id> <unpadded base64 of the 32-byte seed>`.
pub fn signing_key(seed: &[u8], key_id: &str) -> String {
    let seed = base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed);
    format!("ed25519 {key_id} {seed}\n")
}

/// The node's `homeserver.yaml`.
/// A node's own secrets, written into its configuration.
pub struct Secrets {
    pub macaroon: String,
    pub form: String,
    /// Workers and the main process authenticate replication requests with it.
    pub replication: String,
}

impl Secrets {
    pub fn random() -> Self {
        Secrets {
            macaroon: random_hex(24),
            form: random_hex(24),
            replication: random_hex(24),
        }
    }

    #[cfg(test)]
    fn fixed() -> Self {
        Secrets {
            macaroon: "mac".to_owned(),
            form: "form".to_owned(),
            replication: "repl".to_owned(),
        }
    }
}

pub fn homeserver_yaml(node: &NodeConfig<'_>, dir: &Path, secrets: &Secrets) -> String {
    let q = |s: &str| yaml_string(s);
    let p = |file: &str| yaml_string(&dir.join(file).to_string_lossy());
    let mut y = String::new();
    let _ = write!(
        y,
        "\
# Written by meshsim for node {name} of this run (see README, \"Synapse nodes\").
server_name: {server_name}
public_baseurl: {baseurl}
pid_file: {pid}
report_stats: false

{listeners}
tls_certificate_path: {tls_crt}
tls_private_key_path: {tls_key}
federation_verify_certificates: true
federation_custom_ca_list: [{ca}]
federation_client_minimum_tls_version: \"1.2\"

# Keys come from the servers themselves, never from matrix.org.
trusted_key_servers: []
suppress_key_server_warning: true
signing_key_path: {signing_key}

# Synapse refuses private addresses by default; the mesh is one.
ip_range_whitelist: [{cidr}]

{database}
enable_media_repo: false
media_store_path: {media}
url_preview_enabled: false
enable_metrics: false

enable_registration: false
registration_shared_secret: {registration_secret}
# Rate limits out of the way: an experiment measures the network, not Synapse's limiter.
# The defaults allow 10 messages and then one every 5 s, 10 joins (also auto-accepted
# invites) and 5 logins, then minutes between more; a lab sends bursts from a few users.
rc_message: {{per_second: 10000, burst_count: 100000}}
rc_room_creation: {{per_second: 10000, burst_count: 100000}}
rc_joins:
  local: {{per_second: 10000, burst_count: 100000}}
  remote: {{per_second: 10000, burst_count: 100000}}
rc_joins_per_room: {{per_second: 10000, burst_count: 100000}}
rc_invites:
  per_room: {{per_second: 10000, burst_count: 100000}}
  per_user: {{per_second: 10000, burst_count: 100000}}
  per_issuer: {{per_second: 10000, burst_count: 100000}}
rc_login:
  address: {{per_second: 10000, burst_count: 100000}}
  account: {{per_second: 10000, burst_count: 100000}}
  failed_attempts: {{per_second: 10000, burst_count: 100000}}
rc_federation: {{window_size: 1000, sleep_limit: 100000, sleep_delay: 1, reject_limit: 100000, concurrent: 100}}

# Test users join every room they are invited to (also over federation), so a room a
# person's own client makes and invites @meshsim:<node> into is observed too.
auto_accept_invites:
  enabled: true
  only_for_direct_messages: false
  only_from_local_users: false

macaroon_secret_key: {macaroon}
form_secret: {form}

# Retry soon after a link or node comes back (the defaults back off for days).
federation:
  client_timeout: 30s
  max_short_retry_delay: 2s
  max_long_retry_delay: 10s
  max_short_retries: 3
  max_long_retries: 5
  destination_min_retry_interval: 5s
  destination_retry_multiplier: 2
  destination_max_retry_interval: 1m
",
        name = node.name,
        server_name = q(node.name),
        baseurl = q(&format!("http://{}:{CLIENT_PORT}/", node.name)),
        pid = p("homeserver.pid"),
        listeners = match node.workers {
            None => single_listeners(),
            Some(profile) => workers::shared_yaml(dir, profile, &secrets.replication, &q),
        },
        tls_crt = p("tls.crt"),
        tls_key = p("tls.key"),
        ca = q(&node.ca_path.to_string_lossy()),
        signing_key = p("signing.key"),
        cidr = q(node.mesh_cidr),
        database = database_yaml(node.postgres, &p("homeserver.db"), pool_max(node.workers)),
        media = p("media"),
        registration_secret = q(node.registration_secret),
        macaroon = q(&secrets.macaroon),
        form = q(&secrets.form),
    );
    y
}

/// A single process's listeners: federation over TLS on 8448, clients on 8008.
fn single_listeners() -> String {
    format!(
        "\
listeners:
  # Federation, over TLS with a certificate from the run's CA.
  - port: {FEDERATION_PORT}
    type: http
    tls: true
    bind_addresses: [\"0.0.0.0\"]
    resources:
      - names: [federation]
        compress: false
  # Clients, registration and health checks, plain HTTP.
  - port: {CLIENT_PORT}
    type: http
    tls: false
    bind_addresses: [\"0.0.0.0\"]
    resources:
      - names: [client, federation]
        compress: false
"
    )
}

/// Connections each process of a node may hold: fewer with workers, which are several
/// processes, so the cluster's `max_connections` still holds a few hundred nodes.
fn pool_max(workers: Option<Profile>) -> u32 {
    match workers {
        None => POOL_MAX,
        Some(_) => POOL_MAX_WORKERS,
    }
}

/// The `database` section: SQLite at `sqlite_path` (quoted), or the node's Postgres
/// database over the cluster's socket.
fn database_yaml(postgres: Option<&DatabaseArgs>, sqlite_path: &str, cp_max: u32) -> String {
    match postgres {
        None => format!("database:\n  name: sqlite3\n  args:\n    database: {sqlite_path}\n"),
        Some(db) => format!(
            "database:\n  name: psycopg2\n  args:\n    user: {user}\n    password: {password}\n    \
             dbname: {dbname}\n    host: {host}\n    cp_min: {POOL_MIN}\n    cp_max: {cp_max}\n",
            user = yaml_string(&db.user),
            password = yaml_string(&db.password),
            dbname = yaml_string(&db.dbname),
            host = yaml_string(&db.socket_dir.to_string_lossy()),
        ),
    }
}

/// A YAML double-quoted scalar.
fn yaml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Prepares the run directory: makes it, or empties one a previous run left (only if
/// meshsim made it), and marks it as meshsim's.
pub fn prepare_run_dir(run_dir: &Path) -> Result<(), WorkloadError> {
    if run_dir.exists() {
        if !marked::is_ours(run_dir, RUN_MARKER) {
            return Err(WorkloadError::ForeignRunDir {
                path: run_dir.to_owned(),
                marker: RUN_MARKER,
            });
        }
        marked::remove(run_dir, RUN_MARKER).map_err(WorkloadError::io("empty", run_dir))?;
    }
    marked::make(
        run_dir,
        RUN_MARKER,
        "made by meshsim; removed when the run stops\n",
    )
    .map_err(WorkloadError::io("create", run_dir))
}

/// Removes the run directory, its marker last (see `workload::marked`).
pub fn remove_run_dir(run_dir: &Path) -> std::io::Result<()> {
    marked::remove(run_dir, RUN_MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signing_key_is_in_synapses_format() {
        let key = signing_key(&[0u8; 32], "a_mesh");
        assert_eq!(
            key,
            "ed25519 a_mesh AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
        );
    }

    #[test]
    fn the_config_names_the_node_and_its_files() {
        let node = NodeConfig {
            name: "n3",
            mesh_cidr: "10.77.0.0/16",
            ca_path: Path::new("/tmp/meshsim/run/ca.pem"),
            registration_secret: "s3cret",
            postgres: None,
            workers: None,
        };
        let y = homeserver_yaml(&node, Path::new("/tmp/meshsim/run/n3"), &Secrets::fixed());
        for want in [
            "server_name: \"n3\"",
            "tls_certificate_path: \"/tmp/meshsim/run/n3/tls.crt\"",
            "federation_custom_ca_list: [\"/tmp/meshsim/run/ca.pem\"]",
            "trusted_key_servers: []",
            "ip_range_whitelist: [\"10.77.0.0/16\"]",
            "database: \"/tmp/meshsim/run/n3/homeserver.db\"",
            "registration_shared_secret: \"s3cret\"",
            "report_stats: false",
            "  - port: 8448\n    type: http\n    tls: true",
            "rc_message: {per_second: 10000, burst_count: 100000}",
            "auto_accept_invites:\n  enabled: true",
        ] {
            assert!(y.contains(want), "missing {want:?} in\n{y}");
        }
    }

    #[test]
    fn a_postgres_node_names_its_database_and_the_clusters_socket() {
        let db = DatabaseArgs {
            socket_dir: PathBuf::from("/tmp/meshsim/postgres"),
            dbname: "n3".to_owned(),
            user: "n3".to_owned(),
            password: "0123abcd".to_owned(),
        };
        let node = NodeConfig {
            name: "n3",
            mesh_cidr: "10.77.0.0/16",
            ca_path: Path::new("/tmp/meshsim/run/ca.pem"),
            registration_secret: "s3cret",
            postgres: Some(&db),
            workers: None,
        };
        let y = homeserver_yaml(&node, Path::new("/tmp/meshsim/run/n3"), &Secrets::fixed());
        let want = "database:\n  name: psycopg2\n  args:\n    user: \"n3\"\n    \
                    password: \"0123abcd\"\n    dbname: \"n3\"\n    host: \"/tmp/meshsim/postgres\"\n    cp_min: 1\n    \
                    cp_max: 4\n";
        assert!(y.contains(want), "missing {want:?} in\n{y}");
        assert!(!y.contains("sqlite3"));
    }

    #[test]
    fn yaml_strings_are_escaped() {
        assert_eq!(yaml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\x0a\"");
    }

    #[test]
    fn a_node_written_again_in_the_same_run_keeps_its_identity() {
        let run_dir = std::env::temp_dir().join(format!("meshsim-nodedir-{}", std::process::id()));
        let _remove = RemoveOnDrop(run_dir.clone());
        prepare_run_dir(&run_dir).unwrap();
        let ca = RunCa::new("test").unwrap();
        let ca_path = run_dir.join("ca.pem");
        let node = NodeConfig {
            name: "n4",
            mesh_cidr: "10.77.0.0/16",
            ca_path: &ca_path,
            registration_secret: "s3cret",
            postgres: None,
            workers: None,
        };
        let read = |dir: &NodeDir, file: &str| fs::read_to_string(dir.dir.join(file)).unwrap();
        let first = write_node_dir(&run_dir, &node, &ca).unwrap();
        assert!(!first.reused, "a new node gets a new directory");
        // What the first server left: its database.
        fs::write(first.dir.join("homeserver.db"), "rooms").unwrap();
        let files = ["signing.key", "homeserver.yaml", "tls.crt", "tls.key"];
        let before: Vec<String> = files.iter().map(|f| read(&first, f)).collect();

        let again = write_node_dir(&run_dir, &node, &ca).unwrap();
        assert!(again.reused, "the directory of this run is reused");
        assert_eq!(again.dir, first.dir);
        let after: Vec<String> = files.iter().map(|f| read(&again, f)).collect();
        assert_eq!(before, after, "the same keys and configuration");
        assert_eq!(read(&again, "homeserver.db"), "rooms");

        // One that was never finished is written anew, with a key of its own.
        fs::remove_file(again.dir.join("homeserver.yaml")).unwrap();
        let anew = write_node_dir(&run_dir, &node, &ca).unwrap();
        assert!(!anew.reused);
        assert!(!anew.dir.join("homeserver.db").exists());
        assert_ne!(read(&anew, "signing.key"), before[0]);
    }

    /// Removes a test's directory, also when the test fails.
    struct RemoveOnDrop(PathBuf);

    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_run_dir_that_is_not_meshsims_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("meshsim-rundir-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("precious"), "x").unwrap();
        let err = prepare_run_dir(&dir).unwrap_err();
        assert!(err.to_string().contains("not made by meshsim"), "{err}");
        assert!(dir.join("precious").exists());
        fs::remove_file(dir.join("precious")).unwrap();
        fs::remove_dir(&dir).unwrap();
        prepare_run_dir(&dir).unwrap();
        fs::write(dir.join("stale"), "x").unwrap();
        prepare_run_dir(&dir).unwrap();
        assert!(
            !dir.join("stale").exists(),
            "meshsim's own run dir is emptied"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
