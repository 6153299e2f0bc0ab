//! Cached Python virtualenvs: made once per package set (the directory name carries the
//! pinned versions), reused by every later run. Synapse has no Debian package, so it comes
//! from PyPI this way; tests put their Matrix client in one too.
//!
//! A venv is complete when its marker file exists: an install that died half-way is thrown
//! away and made again, never used. Venvs cannot be moved (their scripts name their own
//! path), so the install happens in place, under an flock that keeps two meshsims from
//! building the same one at once.

use std::{
    fs::{self, File, OpenOptions},
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::fcntl::{Flock, FlockArg};

/// Written last: its presence means the venv is usable.
const MARKER: &str = ".meshsim-complete";
/// How often a running install says it is still going.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// A venv to have: where, from which interpreter, with what.
#[derive(Clone, Debug)]
pub struct VenvSpec {
    pub dir: PathBuf,
    /// The interpreter that makes it (`python3`, or a path).
    pub python: String,
    /// pip requirements, pinned (`matrix-synapse==1.163.2`).
    pub packages: Vec<String>,
    /// For progress lines: `synapse 1.163.2`.
    pub what: String,
    /// Its rough size, for the progress line (MB).
    pub approx_mb: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum VenvError {
    #[error(
        "{python} was not found: install Python 3 with venv and pip \
         (Debian: `apt-get install python3 python3-venv`)"
    )]
    NoPython { python: String },
    #[error(
        "{python} cannot make virtualenvs ({detail}): install its venv module \
         (Debian: `apt-get install python3-venv`)"
    )]
    NoVenv { python: String, detail: String },
    #[error(
        "pip could not install {what} ({detail}); PyPI must be reachable. \
         The whole output is in {log}"
    )]
    Pip {
        what: String,
        detail: String,
        log: PathBuf,
    },
    #[error("could not {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VenvError {
    let path = path.to_owned();
    move |source| VenvError::Io { what, path, source }
}

impl VenvSpec {
    /// The venv's interpreter.
    pub fn python_bin(&self) -> PathBuf {
        self.dir.join("bin/python")
    }

    /// The installation of Python the venv was made from (`/usr`, or a pyenv version under
    /// /root): a confined homeserver must be able to read its standard library.
    pub fn base_prefix(&self) -> Option<PathBuf> {
        let real = std::fs::canonicalize(self.python_bin()).ok()?;
        Some(real.parent()?.parent()?.to_owned())
    }

    /// A script the venv installed (`register_new_matrix_user`).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }

    /// `<dir>.<suffix>` (not `with_extension`: version numbers have dots).
    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.dir.as_os_str().to_owned();
        name.push(".");
        name.push(suffix);
        PathBuf::from(name)
    }

    /// Whether the venv is complete and its interpreter is still there (the Python it was
    /// made from may have been removed since).
    pub fn is_ready(&self) -> bool {
        self.dir.join(MARKER).is_file() && fs::metadata(self.python_bin()).is_ok()
    }

    /// Makes the venv unless it is ready; `progress` gets a few human lines (nothing when
    /// the cache is used). Blocks: run it on a blocking thread.
    pub fn ensure(&self, progress: &mut dyn FnMut(&str)) -> Result<(), VenvError> {
        if self.is_ready() {
            return Ok(());
        }
        let parent = self.dir.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(parent).map_err(io("create", parent))?;
        let lock_path = self.sibling("lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        let _lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((file, _)) => {
                progress(&format!(
                    "waiting for another meshsim that is installing {}…",
                    self.what
                ));
                Flock::lock(file, FlockArg::LockExclusive)
                    .map_err(|(_, e)| io("lock", &lock_path)(e.into()))?
            }
        };
        // The other one may have finished it meanwhile.
        if self.is_ready() {
            return Ok(());
        }
        let started = Instant::now();
        check_python(&self.python)?;
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir).map_err(io("remove the unfinished venv", &self.dir))?;
        }
        progress(&format!(
            "installing {} (once, ~{} MB) into {}…",
            self.what,
            self.approx_mb,
            self.dir.display()
        ));
        let out = Command::new(&self.python)
            .args(["-m", "venv"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(io("run", Path::new(&self.python)))?;
        if !out.status.success() {
            return Err(VenvError::NoVenv {
                python: self.python.clone(),
                detail: last_line(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        self.pip_install(progress)?;
        fs::write(self.dir.join(MARKER), self.packages.join("\n") + "\n")
            .map_err(io("write", &self.dir.join(MARKER)))?;
        progress(&format!(
            "{} installed in {:.0} s ({} MB)",
            self.what,
            started.elapsed().as_secs_f64(),
            dir_size(&self.dir) / 1_000_000
        ));
        Ok(())
    }

    /// `pip install`, its output summarised: a line every few seconds with how many
    /// packages it has collected, everything in a log next to the venv.
    fn pip_install(&self, progress: &mut dyn FnMut(&str)) -> Result<(), VenvError> {
        let log_path = self.sibling("pip.log");
        let log = File::create(&log_path).map_err(io("create", &log_path))?;
        let mut child = Command::new(self.python_bin())
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
            ])
            .args(&self.packages)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().map_err(io("open", &log_path))?)
            .spawn()
            .map_err(io("run pip from", &self.dir))?;
        let stdout = child.stdout.take().expect("piped");
        let mut log = log;
        let mut collected = 0;
        let mut last_report = Instant::now();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            use std::io::Write as _;
            let _ = writeln!(log, "{line}");
            if line.starts_with("Collecting ") {
                collected += 1;
            }
            if last_report.elapsed() >= PROGRESS_EVERY {
                progress(&format!("  … {collected} packages collected"));
                last_report = Instant::now();
            }
        }
        let status = child.wait().map_err(io("wait for pip in", &self.dir))?;
        if status.success() {
            return Ok(());
        }
        let mut text = String::new();
        let _ = File::open(&log_path).and_then(|mut f| f.read_to_string(&mut text));
        let detail = text
            .lines()
            .rev()
            .find(|l| l.starts_with("ERROR") || l.contains("Error"))
            .map(str::to_owned)
            .unwrap_or_else(|| format!("exit status {status}"));
        Err(VenvError::Pip {
            what: self.packages.join(" "),
            detail,
            log: log_path,
        })
    }
}

/// Python is there and can make venvs with pip in them (Debian splits `venv`/`ensurepip`
/// into python3-venv).
fn check_python(python: &str) -> Result<(), VenvError> {
    let out = match Command::new(python)
        .args(["-c", "import venv, ensurepip"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VenvError::NoPython {
                python: python.to_owned(),
            });
        }
        Err(e) => return Err(io("run", Path::new(python))(e)),
    };
    if out.status.success() {
        Ok(())
    } else {
        Err(VenvError::NoVenv {
            python: python.to_owned(),
            detail: last_line(&String::from_utf8_lossy(&out.stderr)),
        })
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_owned()
}

/// Bytes in files under `dir` (symlinks not followed).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_python_says_what_to_install() {
        let err = check_python("/nonexistent/python3").unwrap_err();
        assert!(matches!(err, VenvError::NoPython { .. }));
        assert!(err.to_string().contains("apt-get install python3"), "{err}");
    }

    #[test]
    fn an_unfinished_venv_is_not_ready() {
        let dir = std::env::temp_dir().join(format!("meshsim-venv-test-{}", std::process::id()));
        fs::create_dir_all(dir.join("bin")).unwrap();
        let spec = VenvSpec {
            dir: dir.clone(),
            python: "python3".into(),
            packages: vec![],
            what: "nothing".into(),
            approx_mb: 0,
        };
        // An interpreter but no marker: a dead install.
        fs::write(dir.join("bin/python"), "").unwrap();
        assert!(!spec.is_ready());
        fs::write(dir.join(MARKER), "").unwrap();
        assert!(spec.is_ready());
        fs::remove_dir_all(&dir).unwrap();
    }
}
