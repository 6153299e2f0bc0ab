//! Named network namespaces, compatible with `ip netns`: a namespace `NAME` is kept alive by
//! a bind mount of its nsfs file at `/run/netns/NAME`, so `ip netns exec NAME ...` works on
//! what meshsim creates and `NetNs::open` works on what `ip netns add` created.
//!
//! Nothing here forks. `setns`/`unshare(CLONE_NEWNET)` move only the calling *thread*, so
//! every namespace switch happens on a fresh OS thread that ends afterwards: never on a
//! tokio worker, which would carry the namespace into unrelated tasks.

use std::{
    ffi::OsStr,
    fs::{self, File, OpenOptions},
    io,
    os::{
        fd::{AsFd, BorrowedFd},
        unix::{fs::OpenOptionsExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex, PoisonError},
};

use nix::{
    errno::Errno,
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
    sys::statfs::{NSFS_MAGIC, fstatfs},
};

use super::names::{NameError, check_netns_name};

/// Where named namespaces live, as iproute2 has it.
pub const NETNS_DIR: &str = "/run/netns";

/// What went wrong with a network namespace, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    /// The name cannot be a file under `/run/netns`.
    #[error(transparent)]
    Name(#[from] NameError),
    /// `create` found the name taken.
    #[error(
        "network namespace {name:?} already exists ({path}): open it with NetNs::open, \
         or delete it first (NetNs::delete, or `ip netns del {name}`)"
    )]
    AlreadyExists {
        /// The namespace name.
        name: String,
        /// Its bind mount.
        path: PathBuf,
    },
    /// `open` found no such namespace.
    #[error(
        "no network namespace {name:?} ({path} does not exist): create it first with NetNs::create"
    )]
    NotFound {
        /// The namespace name.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The file exists but nothing is mounted on it, typically left by a run that died
    /// between creating the file and mounting the namespace on it.
    #[error(
        "{path} is not a namespace (a leftover file from an interrupted run?): \
         remove it with NetNs::delete({name:?}) and create the namespace again"
    )]
    NotANamespace {
        /// The namespace name.
        name: String,
        /// The file that is not an nsfs bind mount.
        path: PathBuf,
    },
    /// The process lacks the privileges namespaces need.
    #[error(
        "permission denied trying to {action} for network namespace {name:?}: run as root \
         (namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    )]
    PermissionDenied {
        /// The namespace name.
        name: String,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `/run/netns` could not be read.
    #[error("could not list {NETNS_DIR}: {source}; run as root")]
    List {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Any other system error.
    #[error("could not {action} for network namespace {name:?}: {source}")]
    Io {
        /// The namespace name.
        name: String,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl NetNsError {
    fn io(name: &str, action: &'static str, source: impl Into<io::Error>) -> Self {
        let source = source.into();
        let name = name.to_owned();
        match source.kind() {
            io::ErrorKind::PermissionDenied => Self::PermissionDenied {
                name,
                action,
                source,
            },
            _ => Self::Io {
                name,
                action,
                source,
            },
        }
    }
}

/// An open handle on a named network namespace.
///
/// Holding it keeps the namespace's file descriptor open (so the namespace outlives a
/// `delete` until the handle is dropped); dropping it does not delete the namespace, just
/// as closing a file does not unlink it. Clones share the descriptor.
#[derive(Debug, Clone)]
pub struct NetNs {
    name: String,
    path: PathBuf,
    file: Arc<File>,
}

impl NetNs {
    /// Creates a new, empty network namespace `name` (only `lo`, down), like
    /// `ip netns add NAME`, and opens it.
    ///
    /// Fails with [`NetNsError::AlreadyExists`] if the name is taken.
    pub fn create(name: &str) -> Result<Self, NetNsError> {
        let path = new_mount_point(name)?;
        if let Err(e) = mount_new_netns(name, &path) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        tracing::debug!(netns = name, "created network namespace");
        Self::open(name)
    }

    /// Names the namespace that `source` (say `/proc/<pid>/ns/net` of a container's
    /// process) refers to: bind-mounts it at `/run/netns/NAME`, as `ip netns attach` does,
    /// and opens it. The namespace then outlives the process until [`NetNs::delete`], and
    /// `ip netns exec NAME` works in it.
    pub fn bind(name: &str, source: &Path) -> Result<Self, NetNsError> {
        let path = new_mount_point(name)?;
        if let Err(e) = mount(
            Some(source),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            let _ = fs::remove_file(&path);
            return Err(NetNsError::io(name, "bind-mount it", e));
        }
        Self::open(name)
    }

    /// Opens an existing named namespace (made by [`NetNs::create`] or `ip netns add`).
    pub fn open(name: &str) -> Result<Self, NetNsError> {
        check_netns_name(name)?;
        let path = path_of(name);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(NetNsError::NotFound {
                    name: name.to_owned(),
                    path,
                });
            }
            Err(e) => return Err(NetNsError::io(name, "open it", e)),
        };
        // A plain file (no mount on it) would make every later setns fail with a bare EINVAL.
        let fs = fstatfs(&file).map_err(|e| NetNsError::io(name, "inspect it", e))?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(NetNsError::NotANamespace {
                name: name.to_owned(),
                path,
            });
        }
        Ok(Self {
            name: name.to_owned(),
            path,
            file: Arc::new(file),
        })
    }

    /// Deletes the named namespace, like `ip netns del NAME`: unmounts and removes
    /// `/run/netns/NAME`. A name that does not exist is not an error (the goal, "no such
    /// namespace", holds), and neither is a leftover file with nothing mounted on it.
    ///
    /// The namespace itself, with every interface in it (veth peers included, which takes
    /// their other ends with them), goes away once nothing else holds it: no open handle,
    /// netlink socket or process inside.
    pub fn delete(name: &str) -> Result<(), NetNsError> {
        check_netns_name(name)?;
        let path = path_of(name);
        // MNT_DETACH: a namespace in use somewhere must not make the delete fail.
        match umount2(&path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point (a leftover file); ENOENT: already gone.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(NetNsError::io(name, "unmount it", e)),
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::debug!(netns = name, "deleted network namespace");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetNsError::io(name, "remove its mount point", e)),
        }
    }

    /// Deletes this namespace (see [`NetNs::delete`]), closing this handle first so that
    /// it does not keep the namespace alive. Other clones of the handle still do.
    pub fn remove(self) -> Result<(), NetNsError> {
        let name = self.name;
        drop(self.file);
        Self::delete(&name)
    }

    /// Names of the namespaces in `/run/netns` that start with `prefix`, sorted; empty if
    /// the directory does not exist yet. Use it to find what a previous run left behind.
    pub fn list_with_prefix(prefix: &str) -> Result<Vec<String>, NetNsError> {
        let entries = match fs::read_dir(NETNS_DIR) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(NetNsError::List { source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| NetNsError::List { source })?;
            if let Some(name) = entry.file_name().to_str()
                && name.starts_with(prefix)
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its bind mount, `/run/netns/NAME`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An open descriptor of the namespace, for `setns` or `IFLA_NET_NS_FD`.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `f` on a new OS thread that has entered this namespace, and returns its result.
    ///
    /// Everything `f` does that resolves a namespace at call time sees this one: sockets it
    /// creates (netlink included, for as long as they live), `/proc/sys/net/...` files it
    /// opens, `/proc/thread-self/net/...`. Note that `/proc/self/net` follows the main
    /// thread, not this one. `f` may borrow from the caller (the thread is scoped). A panic
    /// in `f` is resumed in the caller. Blocks for the thread's lifetime.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetNsError> {
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name(format!("netns {}", self.name))
                .spawn_scoped(scope, || {
                    setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(|e| NetNsError::io(&self.name, "enter it", e))?;
                    Ok(f())
                })
                .map_err(|e| NetNsError::io(&self.name, "start a thread", e))?;
            match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// A [`Command`] whose process runs inside this namespace: a `pre_exec` hook enters it
    /// between fork and exec. Use `tokio::process::Command::from` for an async child.
    ///
    /// Unlike `ip netns exec`, this does not remount `/sys` or bind `/etc/netns/NAME/*`:
    /// the child sees the host's `/sys/class/net`. Use netlink or
    /// `/proc/self/net` (single-threaded children) for namespace-local views.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        // Opened before the fork (it is this handle's descriptor, shared through the Arc),
        // so the child has nothing to open or allocate.
        let ns = Arc::clone(&self.file);
        // SAFETY: the hook runs in the forked child of a possibly multi-threaded process, so
        // it may only make async-signal-safe calls. It makes one: setns(2) on a descriptor
        // that is already open. It neither allocates nor takes a lock: `as_fd` reads a field,
        // and an Errno converts to io::Error without allocating.
        unsafe {
            command.pre_exec(move || {
                setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
            });
        }
        command
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Makes `/run/netns` a shared mount point, as iproute2 does, once per process.
///
/// Why shared: mount namespaces created later (containers, `ip netns exec`) copy our mounts.
/// With shared propagation, unmounting a namespace here also unmounts their copies, so a
/// deleted namespace is really freed instead of being pinned by a copy nobody sees.
fn prepare_netns_dir(name: &str) -> Result<(), NetNsError> {
    static READY: Mutex<bool> = Mutex::new(false);
    let mut ready = READY.lock().unwrap_or_else(PoisonError::into_inner);
    if *ready {
        return Ok(());
    }
    fs::create_dir_all(NETNS_DIR).map_err(|e| NetNsError::io(name, "create /run/netns", e))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    let none = None::<&str>;
    match mount(none, NETNS_DIR, none, shared, none) {
        Ok(()) => {}
        // EINVAL: /run/netns is not a mount point yet; bind it onto itself to make it one.
        Err(Errno::EINVAL) => {
            mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none,
            )
            .and_then(|()| mount(none, NETNS_DIR, none, shared, none))
            .map_err(|e| NetNsError::io(name, "make /run/netns a shared mount", e))?;
        }
        Err(e) => return Err(NetNsError::io(name, "make /run/netns a shared mount", e)),
    }
    *ready = true;
    Ok(())
}

/// Makes the file a namespace `name` is mounted on, `/run/netns/NAME`. O_EXCL makes a name
/// collision an error ([`NetNsError::AlreadyExists`]) instead of silently stacking a second
/// namespace on the first.
fn new_mount_point(name: &str) -> Result<PathBuf, NetNsError> {
    check_netns_name(name)?;
    prepare_netns_dir(name)?;
    let path = path_of(name);
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)
    {
        Ok(_) => Ok(path),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(NetNsError::AlreadyExists {
            name: name.to_owned(),
            path,
        }),
        Err(e) => Err(NetNsError::io(name, "create its mount point", e)),
    }
}

/// Creates a namespace on a throwaway thread and pins it with a bind mount on `path`.
fn mount_new_netns(name: &str, path: &Path) -> Result<(), NetNsError> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("netns create".to_owned())
            .spawn_scoped(scope, || {
                unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| NetNsError::io(name, "unshare a new namespace", e))?;
                // thread-self, not self: /proc/self/ns/net is the main thread's namespace.
                mount(
                    Some("/proc/thread-self/ns/net"),
                    path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| NetNsError::io(name, "bind-mount it", e))
                // The thread ends here; the bind mount keeps the namespace alive.
            })
            .map_err(|e| NetNsError::io(name, "start a thread", e))?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_rejected_before_touching_the_system() {
        assert!(matches!(NetNs::create("a/b"), Err(NetNsError::Name(_))));
        assert!(matches!(NetNs::open(".."), Err(NetNsError::Name(_))));
        assert!(matches!(NetNs::delete(""), Err(NetNsError::Name(_))));
    }

    #[test]
    fn errors_say_what_to_do() {
        let err = NetNsError::io("n1", "enter it", io::Error::from_raw_os_error(libc::EPERM));
        assert!(matches!(err, NetNsError::PermissionDenied { .. }));
        assert!(err.to_string().contains("run as root"), "{err}");
        let err = NetNsError::AlreadyExists {
            name: "n1".into(),
            path: path_of("n1"),
        };
        assert!(err.to_string().contains("NetNs::open"), "{err}");
    }
}
