//! Kernel samepage merging for node processes (`--ksm`), as the original meshsim used it to
//! fit many homeservers: ksmd merges identical pages of processes that asked for it
//! (`prctl(PR_SET_MEMORY_MERGE)`, which every process meshsim then spawns on netns nodes
//! does, and which their children inherit).
//!
//! The host's settings are saved before the first run with `--ksm` changes them, in
//! `/run/meshsim-ksm.host`, and put back when the last such run ends; each run marks that it
//! uses KSM with `/run/meshsim-<prefix>.ksm`, so `meshsim down` after kill -9 can do the
//! same.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

use super::names::{LOCK_DIR, RunPrefix};

/// The kernel's knobs.
pub const KSM_DIR: &str = "/sys/kernel/mm/ksm";
/// Pages ksmd scans per wake-up while a run uses it, and how long it sleeps in between:
/// 50,000 pages (~200 MiB) a second, so a few hundred homeservers are scanned in minutes
/// at a cost of a fraction of one core. The kernel's default (100 per 20 ms) would take
/// an hour.
const PAGES_TO_SCAN: u32 = 1000;
const SLEEP_MILLISECS: u32 = 20;

/// Whether processes spawned now ask to be merged.
static MERGING: AtomicBool = AtomicBool::new(false);

/// Read by the spawn path before it forks.
pub fn merging() -> bool {
    MERGING.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum KsmError {
    #[error(
        "--ksm: this kernel has no samepage merging ({KSM_DIR} is missing; it needs \
         CONFIG_KSM): run without --ksm"
    )]
    Unavailable,
    #[error("--ksm: could not {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--ksm: {path} holds {text:?}, not saved KSM settings: remove it (the host's settings before meshsim changed them are lost)"
    )]
    BadSaved { path: PathBuf, text: String },
}

/// The knobs meshsim changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KsmSettings {
    pub run: u32,
    pub pages_to_scan: u32,
    pub sleep_millisecs: u32,
}

impl KsmSettings {
    const FIELDS: [&'static str; 3] = ["run", "pages_to_scan", "sleep_millisecs"];

    fn values(&self) -> [u32; 3] {
        [self.run, self.pages_to_scan, self.sleep_millisecs]
    }

    /// `run=0\npages_to_scan=100\nsleep_millisecs=20\n`, as saved.
    pub fn to_text(&self) -> String {
        Self::FIELDS
            .iter()
            .zip(self.values())
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect()
    }

    /// The saved form back; `None` unless every field is there once with a number.
    pub fn from_text(text: &str) -> Option<Self> {
        let mut values = [None; 3];
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (name, value) = line.split_once('=')?;
            let at = Self::FIELDS.iter().position(|f| *f == name.trim())?;
            if values[at].is_some() {
                return None;
            }
            values[at] = Some(value.trim().parse().ok()?);
        }
        Some(KsmSettings {
            run: values[0]?,
            pages_to_scan: values[1]?,
            sleep_millisecs: values[2]?,
        })
    }

    /// What the kernel has now.
    pub fn read(dir: &Path) -> Result<Self, KsmError> {
        let mut values = [0; 3];
        for (value, name) in values.iter_mut().zip(Self::FIELDS) {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
            *value = text.trim().parse().map_err(|_| KsmError::BadSaved {
                path: path.clone(),
                text: text.clone(),
            })?;
        }
        Ok(KsmSettings {
            run: values[0],
            pages_to_scan: values[1],
            sleep_millisecs: values[2],
        })
    }

    /// Sets the kernel's knobs, scan rate first so ksmd starts at it.
    fn write(&self, dir: &Path) -> Result<(), KsmError> {
        for (name, value) in Self::FIELDS.iter().zip(self.values()).rev() {
            let path = dir.join(name);
            std::fs::write(&path, value.to_string()).map_err(io("write", &path))?;
        }
        Ok(())
    }
}

/// What `meshsim check` says.
pub fn describe() -> String {
    let dir = Path::new(KSM_DIR);
    if !dir.is_dir() {
        return format!("not available ({KSM_DIR} is missing): --ksm cannot be used");
    }
    match KsmSettings::read(dir) {
        Ok(now) => {
            let state = if now.run == 1 { "running" } else { "stopped" };
            let saved = Path::new(&saved_path()).exists();
            format!(
                "available, ksmd {state} ({} pages per {} ms){}: --ksm merges node processes' \
                 pages",
                now.pages_to_scan,
                now.sleep_millisecs,
                if saved {
                    "; a run with --ksm holds it"
                } else {
                    ""
                }
            )
        }
        Err(e) => format!("present but unreadable: {e}"),
    }
}

/// KSM in use by one run, given back when dropped.
pub struct Ksm {
    prefix: RunPrefix,
}

impl Ksm {
    /// Saves the host's settings (unless another run already did), marks this run, starts
    /// ksmd at meshsim's scan rate, and makes every process spawned from now on mergeable.
    pub fn enable(prefix: &RunPrefix) -> Result<Self, KsmError> {
        let dir = Path::new(KSM_DIR);
        if !dir.is_dir() {
            return Err(KsmError::Unavailable);
        }
        let saved = saved_path();
        if !saved.exists() {
            let host = KsmSettings::read(dir)?;
            std::fs::write(&saved, host.to_text()).map_err(io("write", &saved))?;
        }
        let marker = marker_path(prefix);
        std::fs::write(&marker, b"").map_err(io("write", &marker))?;
        let ours = KsmSettings {
            run: 1,
            pages_to_scan: PAGES_TO_SCAN,
            sleep_millisecs: SLEEP_MILLISECS,
        };
        if let Err(e) = ours.write(dir) {
            let _ = release(prefix);
            return Err(e);
        }
        MERGING.store(true, Ordering::Relaxed);
        tracing::info!(
            "KSM on: ksmd scans {PAGES_TO_SCAN} pages every {SLEEP_MILLISECS} ms; node \
             processes ask to be merged (the host's settings come back when the run ends)"
        );
        Ok(Ksm {
            prefix: prefix.clone(),
        })
    }
}

impl Drop for Ksm {
    /// Processes spawned from now on are not merged; the host's settings come back unless
    /// another run still uses KSM.
    fn drop(&mut self) {
        MERGING.store(false, Ordering::Relaxed);
        if let Err(e) = release(&self.prefix) {
            tracing::warn!("{e}");
        }
    }
}

/// Ends `prefix`'s use of KSM (also after kill -9, from `meshsim down`): removes its mark
/// and, when no run is left using KSM, puts the host's saved settings back. Returns
/// whether the settings were restored.
pub fn release(prefix: &RunPrefix) -> Result<bool, KsmError> {
    let marker = marker_path(prefix);
    match std::fs::remove_file(&marker) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove", &marker)(e)),
    }
    if other_runs_use_it() {
        return Ok(false);
    }
    let saved = saved_path();
    let text = match std::fs::read_to_string(&saved) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io("read", &saved)(e)),
    };
    let host = KsmSettings::from_text(&text).ok_or_else(|| KsmError::BadSaved {
        path: saved.clone(),
        text,
    })?;
    host.write(Path::new(KSM_DIR))?;
    std::fs::remove_file(&saved).map_err(io("remove", &saved))?;
    tracing::info!("KSM: the host's settings are back (run = {})", host.run);
    Ok(true)
}

fn other_runs_use_it() -> bool {
    std::fs::read_dir(LOCK_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("meshsim-") && name.ends_with(".ksm")
        })
}

fn saved_path() -> PathBuf {
    Path::new(LOCK_DIR).join("meshsim-ksm.host")
}

fn marker_path(prefix: &RunPrefix) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("meshsim-{prefix}.ksm"))
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KsmError {
    let path = path.to_owned();
    move |source| KsmError::Io { what, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_their_saved_form() {
        let host = KsmSettings {
            run: 0,
            pages_to_scan: 100,
            sleep_millisecs: 20,
        };
        assert_eq!(
            host.to_text(),
            "run=0\npages_to_scan=100\nsleep_millisecs=20\n"
        );
        assert_eq!(KsmSettings::from_text(&host.to_text()), Some(host));
    }

    #[test]
    fn a_damaged_saved_form_is_refused() {
        for text in [
            "",
            "run=0\npages_to_scan=100\n",
            "run=0\npages_to_scan=100\nsleep_millisecs=x\n",
            "run=0\nrun=1\npages_to_scan=100\nsleep_millisecs=20\n",
            "run=0\npages_to_scan=100\nsleep_millisecs=20\nmerge=1\n",
            "garbage",
        ] {
            assert_eq!(KsmSettings::from_text(text), None, "{text:?}");
        }
    }
}
