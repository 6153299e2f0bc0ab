//! One Postgres cluster per run, for homeservers that keep their data in Postgres: Debian's
//! `postgresql` binaries, a cluster made in the run's directory, listening only on a unix
//! socket there (database traffic is local in a real deployment, so it never crosses a
//! shaped link; namespace nodes share the host's files, containers get the directory
//! mounted), one database per node. The host's own Postgres, if any, is never touched.
//!
//! Who may connect (`pg_hba.conf`): the superuser `postgres` only as root or the `postgres`
//! system user (peer authentication: meshsim and its tests); each node as its own role
//! (named as the node) with a password of its own, made for the run and written only in the
//! node's configuration, to its own database only (`CONNECT` is revoked from everyone
//! else). A homeserver can reach the socket, but not another node's data.
//!
//! Postgres refuses to run as root, so the cluster runs as the `postgres` system user the
//! Debian package makes. Its postmaster is the leader of its own process group; `stop` ends
//! it, and a run killed with -9 leaves its pid file, which [`remove_leftover`] reads.

use std::{
    collections::HashMap,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::{Gid, Pid, User, chown},
};

use super::host::NODE_GID;

/// Who may connect, and how: see the module's comment. Peer authentication maps the
/// connecting process's system user through `pg_ident.conf`'s `meshsim` map.
const HBA: &str = "\
# Written by meshsim for this run's cluster (unix socket only).
local all postgres peer map=meshsim
local sameuser all scram-sha-256
";
const IDENT: &str = "\
meshsim root postgres
meshsim postgres postgres
";
/// Where Debian installs each major version's binaries.
const DEBIAN_BIN_DIRS: &str = "/usr/lib/postgresql";
/// The system user the cluster runs as.
const SYSTEM_USER: &str = "postgres";
/// Enough for ~500 homeservers at `POOL_MAX` connections each.
pub const MAX_CONNECTIONS: u32 = 2048;
/// Connections per homeserver process (Synapse's `cp_min`/`cp_max`): idle nodes hold one.
pub const POOL_MIN: u32 = 1;
pub const POOL_MAX: u32 = 4;
/// With workers, per process: `small` is 4 Synapse processes (~250 nodes), `full` 10
/// (~100 nodes).
pub const POOL_MAX_WORKERS: u32 = 2;
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "Postgres is not installed (no {DEBIAN_BIN_DIRS}/<version>/bin/postgres): install \
         Debian's postgresql (`apt-get install postgresql`), or keep SQLite \
         (`database = \"sqlite\"`, the default)"
    )]
    NotInstalled,
    #[error(
        "there is no `{SYSTEM_USER}` user for Postgres to run as (it refuses root): install \
         Debian's postgresql, which makes it"
    )]
    NoUser,
    #[error("could not {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed; the end of {log}:\n{tail}")]
    Failed {
        what: String,
        log: PathBuf,
        tail: String,
    },
    #[error("Postgres of this run did not accept connections within {}s: see {log}", START_TIMEOUT.as_secs())]
    Timeout { log: PathBuf },
    #[error("Postgres of this run: could not {what}: {detail}")]
    Sql { what: String, detail: String },
}

/// The server's own message when there is one (`tokio_postgres::Error` alone says only
/// "db error").
fn sql(what: String) -> impl Fn(tokio_postgres::Error) -> PostgresError {
    move |e| PostgresError::Sql {
        what: what.clone(),
        detail: match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => e.to_string(),
        },
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PostgresError {
    let path = path.to_owned();
    move |source| PostgresError::Io { what, path, source }
}

/// How a homeserver reaches its database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseArgs {
    /// The directory with the cluster's socket (libpq's `host`).
    pub socket_dir: PathBuf,
    pub dbname: String,
    /// The node's own role, and its password for the run.
    pub user: String,
    pub password: String,
}

/// The run's cluster, running.
pub struct Postgres {
    dir: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    postmaster: Mutex<Option<Child>>,
    /// Each node's role's password, made the first time the node is asked for.
    passwords: Mutex<HashMap<String, String>>,
}

/// The newest Postgres Debian installed: its `bin` directory.
pub fn find_binaries() -> Result<PathBuf, PostgresError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_BIN_DIRS)
        .map_err(|_| PostgresError::NotInstalled)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("postgres").is_file() && bin.join("initdb").is_file())
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(PostgresError::NotInstalled)
}

/// The directory inside `dir` that holds the cluster's data (and its `postmaster.pid`).
fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

impl Postgres {
    /// Makes a cluster in `dir` (which must not hold one) and starts it; its log goes to
    /// `log`. Takes a few seconds. Nothing is left when it fails.
    pub async fn start(dir: PathBuf, log: PathBuf) -> Result<Self, PostgresError> {
        let bin = find_binaries()?;
        let user = User::from_name(SYSTEM_USER)
            .ok()
            .flatten()
            .ok_or(PostgresError::NoUser)?;
        let made = Self::make_and_start(&bin, &user, dir.clone(), log).await;
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        made
    }

    async fn make_and_start(
        bin: &Path,
        user: &User,
        dir: PathBuf,
        log: PathBuf,
    ) -> Result<Self, PostgresError> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io("empty", &dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        // Only the cluster's user, root and the nodes' group (homeservers run as their
        // node's user, `host::NODE_GID`) may reach the socket. The group may only pass
        // through (no listing, no writing).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o710))
            .map_err(io("restrict", &dir))?;
        chown(&dir, Some(user.uid), Some(Gid::from_raw(NODE_GID)))
            .map_err(|e| io("hand to the postgres user", &dir)(e.into()))?;
        let log_file = std::fs::File::create(&log).map_err(io("create", &log))?;
        chown(&log, Some(user.uid), Some(user.gid))
            .map_err(|e| io("hand to the postgres user", &log)(e.into()))?;
        let as_postgres = |program: &str| {
            let mut cmd = Command::new(bin.join(program));
            cmd.uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .current_dir(&dir)
                .env("LC_ALL", "C")
                .stdin(Stdio::null());
            cmd
        };
        let data = data_dir(&dir);
        let mut initdb = as_postgres("initdb");
        initdb
            .arg("--pgdata")
            .arg(&data)
            .args([
                "--username=postgres",
                "--auth-local=peer",
                "--auth-host=reject",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdout(log_file.try_clone().map_err(io("write", &log))?)
            .stderr(log_file.try_clone().map_err(io("write", &log))?);
        let status = tokio::task::spawn_blocking(move || initdb.status())
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
            .map_err(io("run initdb for", &data))?;
        if !status.success() {
            return Err(PostgresError::Failed {
                what: format!("initdb ({status})"),
                tail: super::log_tail(&log, 12),
                log,
            });
        }
        for (file, text) in [("pg_hba.conf", HBA), ("pg_ident.conf", IDENT)] {
            let path = data.join(file);
            std::fs::write(&path, text).map_err(io("write", &path))?;
        }
        let mut postgres = as_postgres("postgres");
        postgres
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            // The socket's name carries the port: the default, whatever the environment says.
            .args(["-p", "5432"])
            .args(["-c", "listen_addresses="])
            .args(["-c", &format!("max_connections={MAX_CONNECTIONS}")])
            // A lab's data: speed over durability (a run's cluster goes with the run).
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .stdout(log_file.try_clone().map_err(io("write", &log))?)
            .stderr(log_file)
            // Its own process group: a signal to meshsim's group does not reach it, and
            // `stop` can end it with every backend.
            .process_group(0);
        let child = postgres.spawn().map_err(io("start postgres for", &data))?;
        let cluster = Postgres {
            socket_dir: dir.clone(),
            dir,
            log,
            postmaster: Mutex::new(Some(child)),
            passwords: Mutex::new(HashMap::new()),
        };
        if let Err(e) = cluster.wait_ready().await {
            cluster.stop();
            return Err(e);
        }
        tracing::info!(
            socket = %cluster.socket_dir.display(),
            log = %cluster.log.display(),
            "Postgres for this run's homeservers is up"
        );
        Ok(cluster)
    }

    async fn wait_ready(&self) -> Result<(), PostgresError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.connect("postgres").await.is_ok() {
                return Ok(());
            }
            let exited = self
                .postmaster
                .lock()
                .unwrap()
                .as_mut()
                .map(|c| c.try_wait().ok().flatten());
            if let Some(Some(status)) = exited {
                return Err(PostgresError::Failed {
                    what: format!("postgres ({status})"),
                    log: self.log.clone(),
                    tail: super::log_tail(&self.log, 12),
                });
            }
            if Instant::now() >= deadline {
                return Err(PostgresError::Timeout {
                    log: self.log.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn connect(&self, dbname: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(&self.socket_dir)
            .port(5432)
            .user("postgres")
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(5))
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("a connection to the run's Postgres ended: {e}");
            }
        });
        Ok(client)
    }

    /// How node `name` reaches its database: as its own role, with its password.
    pub fn args(&self, name: &str) -> DatabaseArgs {
        let password = self
            .passwords
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_insert_with(|| crate::random::random_hex(16))
            .clone();
        DatabaseArgs {
            socket_dir: self.socket_dir.clone(),
            dbname: name.to_owned(),
            user: name.to_owned(),
            password,
        }
    }

    /// Makes the role and database of node `name`, or keeps the database there is when
    /// `keep` (the node comes back as itself). Synapse needs the C collation.
    pub async fn ensure_database(&self, name: &str, keep: bool) -> Result<(), PostgresError> {
        let sql_error = sql(format!("make the database of {name}"));
        let client = self.connect("postgres").await.map_err(&sql_error)?;
        let role = quote_ident(name);
        // Hex: nothing to escape in the literal.
        let password = self.args(name).password;
        let has_role = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
            .await
            .map_err(&sql_error)?
            .is_some();
        let verb = if has_role { "ALTER" } else { "CREATE" };
        client
            .batch_execute(&format!("{verb} ROLE {role} LOGIN PASSWORD '{password}'"))
            .await
            .map_err(&sql_error)?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .map_err(&sql_error)?
            .is_some();
        if keep && exists {
            return Ok(());
        }
        // Two statements: each of them refuses to run inside a transaction, which one
        // batch of both would be.
        let quoted = quote_ident(name);
        if exists {
            client
                // A node's earlier Synapse may still hold a connection.
                .batch_execute(&format!("DROP DATABASE {quoted} WITH (FORCE)"))
                .await
                .map_err(&sql_error)?;
        }
        client
            .batch_execute(&format!(
                "CREATE DATABASE {quoted} OWNER {role} TEMPLATE template0 ENCODING 'UTF8' \
                 LC_COLLATE 'C' LC_CTYPE 'C'"
            ))
            .await
            .map_err(&sql_error)?;
        // Every role may connect to a new database; only its node's may to this one.
        client
            .batch_execute(&format!("REVOKE ALL ON DATABASE {quoted} FROM PUBLIC"))
            .await
            .map_err(&sql_error)
    }

    /// The directory with the socket: containers need it mounted.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the cluster (fast shutdown: sessions end, no waiting for clients), then every
    /// process of its group; waits for it. Safe to call again.
    pub fn stop(&self) {
        let Some(mut child) = self.postmaster.lock().unwrap().take() else {
            return;
        };
        let group = Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(group, Signal::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever is left of it (a backend that outlived the postmaster, or the postmaster
        // itself after the timeout).
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait();
    }

    /// Stops the cluster and removes its directory: the run's databases go with the run.
    pub fn finish(&self) {
        self.stop();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!("could not remove {}: {e}", self.dir.display());
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A SQL identifier in double quotes.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// After a run killed with -9: kills the cluster whose data is in `dir` (its postmaster's
/// group, named by its pid file, if that process is a postgres) and removes `dir`. Says
/// whether a process was killed.
pub fn remove_leftover(dir: &Path) -> bool {
    let mut killed = false;
    let data = data_dir(dir);
    if let Some(pid) = postmaster_pid(&data)
        && is_postmaster_of(pid, &data)
    {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        // The group is gone once its leader is: wait until /proc says so.
        let deadline = Instant::now() + STOP_TIMEOUT;
        while crate::runtime::process::pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        killed = true;
    }
    // A cluster caught starting (no pid file yet) or a straggler of it can still write into
    // the directory while it is removed: kill whatever postgres works in it, and remove
    // until it stays gone.
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        for pid in crate::runtime::process::all_pids() {
            if works_in(pid, dir) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                killed = true;
            }
        }
        match std::fs::remove_dir_all(dir) {
            Ok(()) if !dir.exists() => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) if Instant::now() >= deadline => {
                tracing::warn!("could not remove {}: {e}", dir.display());
                break;
            }
            _ if Instant::now() >= deadline => {
                tracing::warn!(
                    "could not remove {}: something keeps writing in it",
                    dir.display()
                );
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    killed
}

/// Whether `pid` is a Postgres program (the server, `initdb`, `pg_ctl`) working in `dir`.
fn works_in(pid: u32, dir: &Path) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
        exe.file_name()
            .is_some_and(|n| n == "postgres" || n == "initdb" || n == "pg_ctl")
    }) && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
}

/// The first line of `postmaster.pid`.
fn postmaster_pid(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Whether `pid` is a postgres working in `data`: a pid reused by another process, even the
/// host's own postmaster, is left alone.
fn is_postmaster_of(pid: u32, data: &Path) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|exe| exe.file_name().is_some_and(|n| n == "postgres"))
        && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("n1"), "\"n1\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn the_pid_file_names_the_postmaster() {
        let dir = std::env::temp_dir().join(format!("meshsim-pgpid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(postmaster_pid(&dir), None);
        std::fs::write(
            dir.join("postmaster.pid"),
            "4242\n/tmp/x/data\n1700000000\n",
        )
        .unwrap();
        assert_eq!(postmaster_pid(&dir), Some(4242));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_leftover_that_is_not_postgres_is_not_killed() {
        let dir = std::env::temp_dir().join(format!("meshsim-pgleft-{}", std::process::id()));
        std::fs::create_dir_all(data_dir(&dir)).unwrap();
        // Our own pid: a live process that is not a postgres.
        std::fs::write(
            data_dir(&dir).join("postmaster.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert!(!remove_leftover(&dir));
        assert!(!dir.exists(), "the directory goes all the same");
    }
}
