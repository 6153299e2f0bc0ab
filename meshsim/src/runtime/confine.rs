//! A node process's own view of the host: a mount namespace where the run's covers are bound
//! over their targets, and, when the workload asks for it ([`Confinement`]), where every
//! mount is read-only but the node's directory (and the few paths it writes), `/tmp` and
//! `/dev/shm` are fresh tmpfs of its own (so is any directory the node's user could not
//! pass through, with what it reads there bound back: a [`Plan`]'s masks), and a fresh
//! `/proc` shows only its own processes (`hidepid=invisible`); then it drops root: no new
//! privileges, no capabilities, no supplementary groups, the node's uid and gid.
//!
//! Everything is prepared before the fork ([`PrivateMounts::new`]); [`PrivateMounts::enter`]
//! runs between fork and exec and only makes system calls on memory that already exists.
//! `zygote.py` does the same steps for the homeservers it forks: keep the two in step.

use std::{
    ffi::{CStr, CString},
    io,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use crate::workload::host::{Confinement, Cover};

/// `mount_setattr(2)`'s argument (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// What a confined child does, worked out before the fork from a [`Confinement`] and the
/// host's files: the same plan for `enter` here and for `zygote.py`, which gets it as JSON.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub uid: u32,
    pub gid: u32,
    /// Where it starts.
    pub dir: PathBuf,
    /// Fresh tmpfs mounts, with their mode, shallowest first: `/tmp` (1777) and any
    /// directory the node's user could not pass through (`/root`, 0700, over a Python
    /// installed there, say: 0755, with just that installation bound back inside).
    pub masks: Vec<(PathBuf, u32)>,
    /// What is bound back (over itself), shallowest first: the writable paths, and the
    /// readable ones a mask hides.
    pub binds: Vec<Bind>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Bind {
    pub path: PathBuf,
    pub writable: bool,
    pub is_dir: bool,
}

/// Whether others (the node's user is neither owner nor, but for the Postgres socket's
/// directory, group) may pass through `dir`.
fn passable(dir: &Path) -> bool {
    std::fs::metadata(dir).is_ok_and(|m| m.mode() & 0o001 != 0)
}

impl Plan {
    pub fn of(c: &Confinement) -> io::Result<Self> {
        Self::with(c, passable)
    }

    fn with(c: &Confinement, passable: impl Fn(&Path) -> bool) -> io::Result<Self> {
        let tmp = Path::new("/tmp");
        let mut masks: Vec<(PathBuf, u32)> = vec![(tmp.to_owned(), 0o1777)];
        let mut kept: Vec<(PathBuf, bool)> = vec![(c.dir.clone(), true)];
        kept.extend(c.writable.iter().map(|p| (p.clone(), true)));
        kept.extend(c.readable.iter().map(|p| (p.clone(), false)));
        for (path, _) in &kept {
            // The topmost directory above it the node could not pass (under /tmp it is
            // made anew anyway).
            let closed = path
                .ancestors()
                .skip(1)
                .filter(|a| a.parent().is_some() && !a.starts_with(tmp))
                .filter(|a| !passable(a))
                .last();
            if let Some(closed) = closed
                && !masks.iter().any(|(m, _)| closed.starts_with(m))
            {
                masks.retain(|(m, _)| !m.starts_with(closed));
                masks.push((closed.to_owned(), 0o755));
            }
        }
        masks.sort_by_key(|(p, _)| p.components().count());
        let mut binds = Vec::new();
        for (path, writable) in kept {
            if !writable && !masks.iter().any(|(m, _)| path.starts_with(m)) {
                // It sees it where it is, read-only like the rest.
                continue;
            }
            let meta = std::fs::metadata(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            binds.push(Bind {
                path,
                writable,
                is_dir: meta.is_dir(),
            });
        }
        binds.sort_by_key(|b| b.path.components().count());
        Ok(Plan {
            uid: c.uid,
            gid: c.gid,
            dir: c.dir.clone(),
            masks,
            binds,
        })
    }
}

/// A bind of the plan, ready for the child.
struct Kept {
    path: CString,
    /// Every directory above it, top down: made in a fresh tmpfs before the bind.
    ancestors: Vec<CString>,
    is_dir: bool,
    writable: bool,
}

/// What a node process's mount namespace and credentials become, ready for the child.
pub struct PrivateMounts {
    covers: Vec<(CString, CString)>,
    confined: Option<Confined>,
}

struct Confined {
    uid: libc::uid_t,
    gid: libc::gid_t,
    dir: CString,
    /// Each with `mode=<octal>` for tmpfs.
    masks: Vec<(CString, CString)>,
    kept: Vec<Kept>,
    /// The descriptors of `kept`, opened in the child (a descriptor opened before the
    /// child's `unshare` names a mount of the host's namespace, which cannot be bound).
    fds: Vec<libc::c_int>,
    shm: bool,
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::other(format!("{} contains a NUL byte", p.display())))
}

impl PrivateMounts {
    /// `None` when there is nothing to do: no covers and no confinement.
    pub fn new(covers: &[Cover], confinement: Option<&Confinement>) -> io::Result<Option<Self>> {
        if covers.is_empty() && confinement.is_none() {
            return Ok(None);
        }
        let covers = covers
            .iter()
            .map(|c| Ok((c_path(&c.file)?, c_path(&c.target)?)))
            .collect::<io::Result<_>>()?;
        let confined = confinement
            .map(|c| Confined::new(&Plan::of(c)?))
            .transpose()?;
        Ok(Some(PrivateMounts { covers, confined }))
    }

    /// In the child, between fork and exec, after it entered the node's network namespace.
    ///
    /// # Safety
    ///
    /// Only in a forked child: it changes the calling process's namespaces and credentials.
    /// It is async-signal-safe: system calls on strings and vectors that exist already
    /// (the descriptors are written in place), no allocation, no lock.
    pub unsafe fn enter(&mut self) -> io::Result<()> {
        // SAFETY: the caller is a forked child; each call below is a system call on
        // NUL-terminated strings that live as long as `self`.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Slave first, so nothing mounted here propagates back to the host's tree (which
            // is `shared` on systemd hosts), while unmounts on the host (a deleted namespace
            // under /run/netns) still reach us.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_SLAVE | libc::MS_REC,
                std::ptr::null(),
            ))?;
            for (file, target) in &self.covers {
                bind(file.as_ptr(), target.as_ptr())?;
            }
            if let Some(confined) = &mut self.confined {
                confined.enter()?;
            }
        }
        Ok(())
    }
}

impl Confined {
    fn new(plan: &Plan) -> io::Result<Self> {
        let kept = plan
            .binds
            .iter()
            .map(|b| {
                Ok(Kept {
                    ancestors: b
                        .path
                        .ancestors()
                        .skip(1)
                        .filter(|a| a.parent().is_some())
                        .map(c_path)
                        .collect::<io::Result<Vec<_>>>()?
                        .into_iter()
                        .rev()
                        .collect(),
                    path: c_path(&b.path)?,
                    is_dir: b.is_dir,
                    writable: b.writable,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let masks = plan
            .masks
            .iter()
            .map(|(path, mode)| {
                let data = CString::new(format!("mode={mode:o}")).expect("no NUL");
                Ok((c_path(path)?, data))
            })
            .collect::<io::Result<_>>()?;
        Ok(Confined {
            uid: plan.uid,
            gid: plan.gid,
            dir: c_path(&plan.dir)?,
            masks,
            fds: vec![-1; kept.len()],
            kept,
            shm: Path::new("/dev/shm").is_dir(),
        })
    }

    /// SAFETY (for the caller): a forked child, as [`PrivateMounts::enter`].
    unsafe fn enter(&mut self) -> io::Result<()> {
        // SAFETY: system calls on strings and buffers owned by `self` or the stack.
        unsafe {
            // Held before /tmp is covered: a kept path under /tmp is bound back from here.
            for (kept, fd) in self.kept.iter().zip(self.fds.iter_mut()) {
                *fd = libc::open(kept.path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if *fd < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let attr = MountAttr {
                attr_set: MOUNT_ATTR_RDONLY,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            check(libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                c"/".as_ptr(),
                libc::AT_RECURSIVE as libc::c_uint,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            ) as libc::c_int)?;
            for (target, data) in &self.masks {
                tmpfs(target, data)?;
            }
            if self.shm {
                tmpfs(c"/dev/shm", c"mode=1777")?;
            }
            // Mount points it must pass through, whatever umask meshsim was started with.
            let umask = libc::umask(0o022);
            for (kept, &fd) in self.kept.iter().zip(&self.fds) {
                // A path under a mask needs its mount point made in the fresh tmpfs;
                // elsewhere it exists (and the read-only tree refuses these, which is fine).
                for dir in &kept.ancestors {
                    libc::mkdir(dir.as_ptr(), 0o755);
                }
                if kept.is_dir {
                    libc::mkdir(kept.path.as_ptr(), 0o755);
                } else {
                    let made = libc::open(
                        kept.path.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    );
                    if made >= 0 {
                        libc::close(made);
                    }
                }
                let mut buf = [0u8; 32];
                bind(fd_path(fd, &mut buf).as_ptr(), kept.path.as_ptr())?;
                let ro = if kept.writable { 0 } else { libc::MS_RDONLY };
                check(libc::mount(
                    std::ptr::null(),
                    kept.path.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV | ro,
                    std::ptr::null(),
                ))?;
                libc::close(fd);
            }
            libc::umask(umask);
            // Its own /proc: the processes of other users (meshsim's, other nodes') are not
            // there at all.
            check(libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"hidepid=invisible".as_ptr().cast(),
            ))?;
            // Where it starts: the node's directory as bound above (a working directory
            // chosen before the binds is the read-only one beneath).
            check(libc::chdir(self.dir.as_ptr()))?;
            // No exec may grant anything from now on: not a setuid binary, not a file's
            // capabilities. (The bounding set is left as it is: emptied, it would make the
            // kernel refuse to run a binary with file capabilities at all, `ping` among them,
            // while with no new privileges those run, without their capabilities.)
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(self.gid, self.gid, self.gid))?;
            // From root to another uid: the permitted, effective and ambient capabilities
            // are cleared.
            check(libc::setresuid(self.uid, self.uid, self.uid))?;
        }
        Ok(())
    }
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// SAFETY (for the caller): both are NUL-terminated.
unsafe fn bind(source: *const libc::c_char, target: *const libc::c_char) -> io::Result<()> {
    // SAFETY: see above.
    check(unsafe {
        libc::mount(
            source,
            target,
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    })
}

/// A fresh tmpfs on `target`, its root with `data`'s mode.
fn tmpfs(target: &CStr, data: &CStr) -> io::Result<()> {
    // SAFETY: a system call on two NUL-terminated strings.
    check(unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    })
}

/// `/proc/self/fd/<fd>` written into `buf`, without allocating.
fn fd_path(fd: libc::c_int, buf: &mut [u8; 32]) -> &CStr {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut n = fd.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
    CStr::from_bytes_until_nul(&buf[..]).expect("a NUL was written")
}

/// Hands `dir` and everything in it to `uid`:`gid` and makes `dir` reachable by them alone
/// (root aside): what the node writes is its own, and no other node reads it.
pub fn hand_over(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    fn walk(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        let meta = std::fs::symlink_metadata(path)?;
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(path)? {
                walk(&entry?.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    walk(dir, uid, gid)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptors_path_is_written_in_place() {
        let mut buf = [0u8; 32];
        assert_eq!(fd_path(7, &mut buf), c"/proc/self/fd/7");
        assert_eq!(fd_path(1234567, &mut buf), c"/proc/self/fd/1234567");
        assert_eq!(fd_path(0, &mut buf), c"/proc/self/fd/0");
    }

    fn confinement(dir: &str, writable: &[&str], readable: &[&str]) -> Confinement {
        Confinement {
            uid: 2_000_000_001,
            gid: 2_000_000_000,
            dir: dir.into(),
            writable: writable.iter().map(PathBuf::from).collect(),
            readable: readable.iter().map(PathBuf::from).collect(),
        }
    }

    fn paths(plan: &Plan) -> Vec<&str> {
        plan.binds
            .iter()
            .map(|b| b.path.to_str().unwrap())
            .collect()
    }

    #[test]
    fn what_a_private_tmp_hides_is_bound_back_shallowest_first() {
        let root = PathBuf::from(format!("/tmp/meshsim-confine-{}", std::process::id()));
        let node = root.join("run").join("n1");
        std::fs::create_dir_all(&node).unwrap();
        std::fs::write(root.join("ca.pem"), "").unwrap();
        let c = Confinement {
            readable: vec![root.join("ca.pem"), "/usr".into()],
            writable: vec![root.clone()],
            ..confinement(node.to_str().unwrap(), &[], &[])
        };
        let plan = Plan::with(&c, |_| true).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(plan.masks, [(PathBuf::from("/tmp"), 0o1777)]);
        let (root, ca, node) = (root.to_str().unwrap(), root.join("ca.pem"), node);
        // /usr it reads where it is; the CA is under the private /tmp.
        assert_eq!(
            paths(&plan),
            [root, ca.to_str().unwrap(), node.to_str().unwrap()]
        );
        assert!(plan.binds[0].writable && plan.binds[0].is_dir);
        assert!(!plan.binds[1].writable && !plan.binds[1].is_dir);
        let kept = &Confined::new(&plan).unwrap().kept[2];
        // Every directory from the top (not `/`) down to its parent.
        assert_eq!(
            kept.ancestors.len(),
            plan.binds[2].path.components().count() - 2
        );
    }

    #[test]
    fn a_directory_the_node_cannot_pass_is_masked_and_what_it_reads_there_bound_back() {
        // A Python installed under /root (0700), as pyenv does.
        let python = "/usr/lib/os-release";
        let c = confinement("/tmp", &[], &[python]);
        let plan = Plan::with(&c, |p| p != Path::new("/usr")).unwrap();
        assert_eq!(
            plan.masks,
            [
                (PathBuf::from("/tmp"), 0o1777),
                (PathBuf::from("/usr"), 0o755)
            ]
        );
        assert_eq!(paths(&plan), ["/tmp", python]);
        // A deeper closed directory under the mask changes nothing; the topmost counts.
        let plan = Plan::with(&c, |p| !p.starts_with("/usr")).unwrap();
        assert_eq!(plan.masks[1], (PathBuf::from("/usr"), 0o755));
        assert_eq!(plan.masks.len(), 2);
    }
}
