//! A homeserver laid out as production runs it (`--workload synapse-workers`): the main
//! process and workers by a profile, Redis for their replication, nginx in front routing each
//! endpoint to its worker, all talking over unix sockets in the node's directory, and nginx
//! listening on the node's 8008 and 8448 like a plain Synapse node, so nothing else in
//! meshsim cares which layout a node runs. Workers need Postgres (they share one database).
//!
//! The node's one process is a bash script (`node.sh`, written here) that starts Redis, the
//! main process, the workers and nginx, in that order, each waiting for the socket of the one
//! before, and then waits for any of them to exit: it says which one, with the end of its log,
//! and stops the rest. Everything it starts is in the node's process group, so stopping the
//! node stops all of it.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use super::config::{CLIENT_PORT, FEDERATION_PORT};

/// Which workers a node runs.
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
pub enum Profile {
    /// The least that shows the split: a client/sync worker, a federation reader and a
    /// federation sender beside the main process.
    #[default]
    Small,
    /// The layout most admins follow: sync and client (room) workers, a federation reader,
    /// four federation senders, an event persister (a stream writer, in the instance map) and
    /// a background-tasks worker.
    Full,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Small => "small",
            Profile::Full => "full",
        }
    }
}

/// What one worker does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Worker {
    pub name: String,
    /// Listener resources it serves to nginx (none: it serves nobody).
    pub serves: &'static [&'static str],
    /// nginx location regexes sent to it.
    pub routes: &'static [&'static str],
    /// It writes a stream: it has a replication listener and is in the instance map.
    pub replication: bool,
}

/// Sync and the long polls like it (Synapse's worker documentation, "synchrotron").
const SYNC_ROUTES: &[&str] = &[
    "^/_matrix/client/(r0|v3)/sync$",
    "^/_matrix/client/(api/v1|r0|v3)/events$",
    "^/_matrix/client/(api/v1|r0|v3)/initialSync$",
    "^/_matrix/client/(api/v1|r0|v3)/rooms/[^/]+/initialSync$",
    "^/_matrix/client/unstable/org.matrix.simplified_msc3575/sync$",
];
/// Room reads and event sending, which generic workers handle.
const CLIENT_ROUTES: &[&str] = &[
    "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/(messages|context|members|joined_members|event|relations|aliases|timestamp_to_event)",
    "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/(send|state/|redact|join|invite|leave|kick|ban|unban)",
    "^/_matrix/client/(api/v1|r0|v3|unstable)/(join|knock)/",
    "^/_matrix/client/(api/v1|r0|v3|unstable)/(createRoom|joined_rooms|publicRooms)$",
    "^/_matrix/client/(r0|v3|unstable)/(profile/|keys/query|keys/changes)",
];
/// Inbound federation, and the server's keys.
const FEDERATION_ROUTES: &[&str] = &["^/_matrix/(federation|key)/"];

fn worker(name: &str, serves: &'static [&'static str], routes: &'static [&'static str]) -> Worker {
    Worker {
        name: name.to_owned(),
        serves,
        routes,
        replication: false,
    }
}

/// The workers of `profile`, in the order they start.
pub fn workers(profile: Profile) -> Vec<Worker> {
    match profile {
        Profile::Small => vec![
            worker("sync1", &["client"], SYNC_ROUTES),
            worker("federation_reader1", &["federation"], FEDERATION_ROUTES),
            worker("federation_sender1", &[], &[]),
        ],
        Profile::Full => {
            let mut all = vec![
                Worker {
                    replication: true,
                    ..worker("event_persister1", &[], &[])
                },
                worker("sync1", &["client"], SYNC_ROUTES),
                worker("client1", &["client"], CLIENT_ROUTES),
                worker("federation_reader1", &["federation"], FEDERATION_ROUTES),
            ];
            for i in 1..=4 {
                all.push(worker(&format!("federation_sender{i}"), &[], &[]));
            }
            all.push(worker("background1", &[], &[]));
            all
        }
    }
}

/// Where a process's socket is: `<dir>/sockets/<name>.sock`.
pub fn socket(dir: &Path, name: &str) -> String {
    dir.join("sockets")
        .join(format!("{name}.sock"))
        .to_string_lossy()
        .into_owned()
}

/// The socket of `name`'s replication listener.
fn replication_socket(dir: &Path, name: &str) -> String {
    socket(dir, &format!("{name}-replication"))
}

/// One HTTP listener on the unix socket `path` (quoted) serving `names`; only its owner (the
/// node's user) may use it. Client and federation resources are not compressed, as in the single-process
/// listeners; replication keeps Synapse's default.
fn unix_listener(path: &str, names: &str) -> String {
    let compress = if names == "replication" {
        ""
    } else {
        "        compress: false\n"
    };
    format!(
        "  - path: {path}\n    mode: 0600\n    type: http\n    resources:\n      - names: [{names}]\n{compress}"
    )
}

/// The main process's listeners and what every process of the node shares (Redis, the
/// instance map, who sends federation, who writes which stream), for `homeserver.yaml`.
/// `q` quotes a YAML string.
pub fn shared_yaml(
    dir: &Path,
    profile: Profile,
    replication_secret: &str,
    q: &dyn Fn(&str) -> String,
) -> String {
    let workers = workers(profile);
    let mut y = String::new();
    y.push_str("listeners:\n  # For nginx, which serves 8008 and 8448.\n");
    y.push_str(&unix_listener(
        &q(&socket(dir, "main")),
        "client, federation",
    ));
    y.push_str("  # Replication, for the workers.\n");
    y.push_str(&unix_listener(
        &q(&replication_socket(dir, "main")),
        "replication",
    ));
    let _ = writeln!(y, "worker_replication_secret: {}", q(replication_secret));
    let _ = writeln!(
        y,
        "\nredis:\n  enabled: true\n  path: {}",
        q(&socket(dir, "redis"))
    );
    let _ = writeln!(
        y,
        "instance_map:\n  main:\n    path: {}",
        q(&replication_socket(dir, "main"))
    );
    for w in workers.iter().filter(|w| w.replication) {
        let _ = writeln!(
            y,
            "  {}:\n    path: {}",
            w.name,
            q(&replication_socket(dir, &w.name))
        );
    }
    let senders: Vec<&str> = workers
        .iter()
        .filter(|w| w.name.starts_with("federation_sender"))
        .map(|w| w.name.as_str())
        .collect();
    let _ = writeln!(y, "federation_sender_instances: [{}]", senders.join(", "));
    if let Some(persister) = workers
        .iter()
        .find(|w| w.name.starts_with("event_persister"))
    {
        let _ = writeln!(y, "stream_writers:\n  events: [{}]", persister.name);
    }
    if let Some(background) = workers.iter().find(|w| w.name.starts_with("background")) {
        let _ = writeln!(y, "run_background_tasks_on: {}", background.name);
    }
    y
}

/// A worker's own configuration, read after `homeserver.yaml`.
pub fn worker_yaml(dir: &Path, worker: &Worker, q: &dyn Fn(&str) -> String) -> String {
    let mut y = format!(
        "# Written by meshsim: worker {name} (see docs/synapse.md, \"Workers\").\nworker_app: synapse.app.generic_worker\nworker_name: {name}\n",
        name = worker.name
    );
    let mut listeners = Vec::new();
    if !worker.serves.is_empty() {
        listeners.push(unix_listener(
            &q(&socket(dir, &worker.name)),
            &worker.serves.join(", "),
        ));
    }
    if worker.replication {
        listeners.push(unix_listener(
            &q(&replication_socket(dir, &worker.name)),
            "replication",
        ));
    }
    if listeners.is_empty() {
        y.push_str("worker_listeners: []\n");
    } else {
        y.push_str("worker_listeners:\n");
        for l in listeners {
            y.push_str(&l);
        }
    }
    y
}

/// nginx for the node: TLS on 8448 with the node's certificate, plain HTTP on 8008, each
/// route to its worker and the rest to the main process.
pub fn nginx_conf(dir: &Path, profile: Profile) -> String {
    let d = dir.to_string_lossy();
    let mut locations = String::new();
    for w in workers(profile) {
        for route in w.routes {
            let _ = write!(
                locations,
                "        location ~ {route} {{\n            proxy_pass http://unix:{}:;\n        }}\n",
                socket(dir, &w.name)
            );
        }
    }
    format!(
        "# Written by meshsim: this node's reverse proxy (see docs/synapse.md, \"Workers\").
# It runs as the node's user, as every process of the node: the sockets are in a directory
# only that user reaches, and each is 0600.
worker_processes 1;
daemon off;
pid {d}/nginx/nginx.pid;
error_log {d}/nginx/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    client_body_temp_path {d}/nginx/body;
    proxy_temp_path {d}/nginx/proxy;
    fastcgi_temp_path {d}/nginx/fastcgi;
    uwsgi_temp_path {d}/nginx/uwsgi;
    scgi_temp_path {d}/nginx/scgi;
    client_max_body_size 50m;
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    # Synapse's unix listeners take the client's address from here.
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
    # Long polls (sync) hold a request open for up to 30 s.
    proxy_read_timeout 120s;
    server {{
        listen {CLIENT_PORT};
        listen {FEDERATION_PORT} ssl;
        ssl_certificate {d}/tls.crt;
        ssl_certificate_key {d}/tls.key;
{locations}        location / {{
            proxy_pass http://unix:{main}:;
        }}
    }}
}}
",
        main = socket(dir, "main"),
    )
}

/// Every process the node's script starts, by the name its log carries.
pub fn processes(profile: Profile) -> Vec<String> {
    let mut all = vec!["redis".to_owned(), "main".to_owned()];
    all.extend(workers(profile).into_iter().map(|w| w.name));
    all.push("nginx".to_owned());
    all
}

/// The log of the node's process `process`: `<logs>/<node>.<process>.log`.
pub fn process_log(logs: &Path, node: &str, process: &str) -> PathBuf {
    logs.join(format!("{node}.{process}.log"))
}

/// The programs the node's script starts.
pub struct Binaries<'a> {
    pub python: &'a Path,
    pub redis: &'a Path,
    pub nginx: &'a Path,
}

/// The node's script (see the module's text). Its own output is the node's log; each
/// process logs to `<logs>/<node>.<process>.log`.
pub fn node_script(
    dir: &Path,
    node: &str,
    logs: &Path,
    profile: Profile,
    bin: &Binaries<'_>,
) -> String {
    let sh = |p: &Path| shell_quote(&p.to_string_lossy());
    let log = |process: &str| shell_quote(&process_log(logs, node, process).to_string_lossy());
    let sock = |name: &str| shell_quote(&socket(dir, name));
    let config = sh(&dir.join("homeserver.yaml"));
    let mut s = format!(
        "#!/bin/bash
# Written by meshsim: node {node}'s homeserver with workers ({profile} profile). Starts each
# process after the socket of the one before is there, then waits for any to exit, says which
# with the end of its log, and stops the rest (docs/synapse.md, \"Workers\").
set -u
declare -A names logs
pids=()
started() {{ pids+=(\"$1\"); names[$1]=$2; logs[$1]=$3; }}
stop_all() {{ kill -TERM \"${{pids[@]}}\" 2>/dev/null; wait; }}
trap 'stop_all; exit 0' TERM INT
# Waits until socket $2 exists, as long as process $1 runs.
await_socket() {{
    for _ in $(seq 1 1200); do
        [ -S \"$2\" ] && return 0
        kill -0 \"$1\" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}}
fail() {{
    echo \"meshsim: ${{names[$1]}} of {node} $2; the end of ${{logs[$1]}}:\"
    tail -n 20 \"${{logs[$1]}}\"
    stop_all
    exit 1
}}
rm -f {sockets}/*.sock {sockets}/*.sock.lock
{redis} --port 0 --unixsocket {redis_sock} --unixsocketperm 700 --save '' --appendonly no \\
    --dir {dir_q} >{redis_log} 2>&1 &
started $! redis {redis_log}
await_socket $! {redis_sock} || fail $! 'did not start'
{python} -m synapse.app.homeserver --config-path {config} >{main_log} 2>&1 &
started $! main {main_log}
await_socket $! {main_sock} || fail $! 'did not start'
",
        profile = profile.name(),
        sockets = sh(&dir.join("sockets")),
        redis = sh(bin.redis),
        redis_sock = sock("redis"),
        redis_log = log("redis"),
        dir_q = sh(dir),
        python = sh(bin.python),
        main_log = log("main"),
        main_sock = sock("main"),
    );
    for w in workers(profile) {
        let _ = write!(
            s,
            "{python} -m synapse.app.generic_worker --config-path {config} --config-path {wc} \
             >{wlog} 2>&1 &\nstarted $! {name} {wlog}\n",
            python = sh(bin.python),
            wc = sh(&dir.join("workers").join(format!("{}.yaml", w.name))),
            wlog = log(&w.name),
            name = w.name,
        );
        if !w.serves.is_empty() {
            let _ = writeln!(
                s,
                "await_socket $! {} || fail $! 'did not start'",
                sock(&w.name)
            );
        }
    }
    let _ = write!(
        s,
        "{nginx} -e {elog} -c {conf} >{nlog} 2>&1 &
started $! nginx {nlog}
echo \"meshsim: {node}: redis, main, {count} workers and nginx started\"
wait -n -p exited \"${{pids[@]}}\"
status=$?
fail \"$exited\" \"exited (status $status)\"
",
        nginx = sh(bin.nginx),
        conf = sh(&dir.join("nginx").join("nginx.conf")),
        // Given before nginx reads its configuration: its built-in one is under /var/log.
        elog = sh(&dir.join("nginx").join("error.log")),
        nlog = log("nginx"),
        count = workers(profile).len(),
    );
    s
}

/// A word for bash, in single quotes.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> String {
        format!("\"{s}\"")
    }

    #[test]
    fn the_small_profile_splits_sync_federation_in_and_out() {
        let names: Vec<String> = workers(Profile::Small)
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(names, ["sync1", "federation_reader1", "federation_sender1"]);
        let y = shared_yaml(Path::new("/r/n1"), Profile::Small, "s3cret", &q);
        for want in [
            "  - path: \"/r/n1/sockets/main.sock\"\n    mode: 0600\n    type: http",
            "worker_replication_secret: \"s3cret\"",
            "redis:\n  enabled: true\n  path: \"/r/n1/sockets/redis.sock\"",
            "instance_map:\n  main:\n    path: \"/r/n1/sockets/main-replication.sock\"",
            "federation_sender_instances: [federation_sender1]",
        ] {
            assert!(y.contains(want), "missing {want:?} in\n{y}");
        }
        assert!(!y.contains("stream_writers"));
    }

    #[test]
    fn the_full_profile_has_four_senders_and_its_stream_writer_in_the_instance_map() {
        let y = shared_yaml(Path::new("/r/n1"), Profile::Full, "s3cret", &q);
        for want in [
            "federation_sender_instances: [federation_sender1, federation_sender2, federation_sender3, federation_sender4]",
            "stream_writers:\n  events: [event_persister1]",
            "  event_persister1:\n    path: \"/r/n1/sockets/event_persister1-replication.sock\"",
            "run_background_tasks_on: background1",
        ] {
            assert!(y.contains(want), "missing {want:?} in\n{y}");
        }
        let persister = &workers(Profile::Full)[0];
        let wy = worker_yaml(Path::new("/r/n1"), persister, &q);
        assert!(wy.contains("names: [replication]"), "{wy}");
    }

    #[test]
    fn nginx_routes_each_endpoint_to_its_worker_and_the_rest_to_main() {
        let conf = nginx_conf(Path::new("/r/n1"), Profile::Small);
        assert!(conf.contains(
            "location ~ ^/_matrix/client/(r0|v3)/sync$ {\n            proxy_pass http://unix:/r/n1/sockets/sync1.sock:;"
        ));
        assert!(conf.contains(
            "location ~ ^/_matrix/(federation|key)/ {\n            proxy_pass http://unix:/r/n1/sockets/federation_reader1.sock:;"
        ));
        assert!(conf.contains(
            "location / {\n            proxy_pass http://unix:/r/n1/sockets/main.sock:;"
        ));
        assert!(conf.contains("listen 8448 ssl;") && conf.contains("listen 8008;"));
    }

    #[test]
    fn a_worker_without_listeners_says_so() {
        let sender = &workers(Profile::Small)[2];
        let y = worker_yaml(Path::new("/r/n1"), sender, &q);
        assert!(y.contains("worker_name: federation_sender1\n"));
        assert!(y.contains("worker_listeners: []\n"));
    }

    #[test]
    fn words_are_quoted_for_bash() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
