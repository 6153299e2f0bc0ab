//! The fuzz stage: builds the cargo-fuzz targets (`fuzz/`) and runs each for a fixed time,
//! from the committed seeds (`fuzz/seeds/<target>/`) plus the corpus earlier runs on this
//! machine grew (under the target directory, never committed). Any crash, 5xx, invariant
//! break or hang fails the stage; libFuzzer saves the input under `fuzz/artifacts/<target>/`,
//! and it belongs in `fuzz/regressions/<target>/` with the fix (the unit tier replays those).
//!
//! Built optimised with debug assertions and overflow checks, without a sanitizer: the code
//! under test is safe Rust, and AddressSanitizer would halve the executions per second.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

/// Every target, in `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 5] = ["topology_file", "scenario_file", "model_ops", "api", "ws"];

/// Seconds per target in `cargo xtask test`. The build from scratch dominates the stage: it
/// took 8 minutes on the shared two-core development VM (about 10 CPU-minutes), so the runs
/// are kept short; `cargo xtask fuzz --seconds N` runs longer.
pub const TEST_BUDGET_SECS: u64 = 20;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf()
}

/// cargo-fuzz's builds go beside the workspace's, in a folder of their own (their flags
/// differ, so they share nothing).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), PathBuf::from)
        .join("fuzz")
}

/// The flags of every cargo-fuzz call: the build stays the same between `build` and `run`.
fn build_flags(target_dir: &Path) -> Vec<String> {
    [
        "--release",
        "--debug-assertions",
        "--sanitizer=none",
        "--codegen-units=16",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--target-dir={}", target_dir.display())])
    .collect()
}

fn cargo_fuzz() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .arg("fuzz")
        .current_dir(root())
        // The fuzz targets never load the classifier: meshsim's build script writes empty
        // objects instead of building it (with libFuzzer's flags, which it must not get).
        .env("AYA_BUILD_SKIP", "1");
    command
}

/// How long each target runs: for a time, for a number of executions, or until either.
#[derive(Clone, Copy)]
pub struct Budget {
    seconds: Option<u64>,
    runs: Option<u64>,
}

impl Budget {
    /// `cargo xtask test`'s budget.
    pub fn test() -> Budget {
        Budget {
            seconds: Some(TEST_BUDGET_SECS),
            runs: None,
        }
    }

    /// As asked on the command line: the test budget when nothing is asked, no time limit
    /// when only executions are.
    pub fn new(seconds: Option<u64>, runs: Option<u64>) -> Budget {
        match (seconds, runs) {
            (None, None) => Budget::test(),
            (seconds, runs) => Budget { seconds, runs },
        }
    }

    fn libfuzzer_flags(self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(seconds) = self.seconds {
            flags.push(format!("-max_total_time={seconds}"));
        }
        if let Some(runs) = self.runs {
            flags.push(format!("-runs={runs}"));
        }
        flags
    }
}

/// What one target's run did.
struct Outcome {
    target: &'static str,
    executions: u64,
    per_second: u64,
    seconds: f64,
}

/// Builds every target, then runs each within `budget` (only those named in `only`, if any).
pub fn run(budget: Budget, only: &[String]) -> Result<()> {
    let which = cargo_fuzz().arg("--version").output();
    if !which.is_ok_and(|o| o.status.success()) {
        bail!("cargo-fuzz is missing: cargo install --locked cargo-fuzz (./x test installs it)");
    }
    let targets: Vec<&'static str> = TARGETS
        .into_iter()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == t))
        .collect();
    if targets.is_empty() {
        bail!("no fuzz target named {only:?}: the targets are {TARGETS:?}");
    }
    let target_dir = target_dir();
    let started = Instant::now();
    let status = cargo_fuzz()
        .arg("build")
        .args(build_flags(&target_dir))
        .status()
        .context("cargo fuzz build")?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status})");
    }
    println!(
        "fuzz: built the targets in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(run_one(target, budget, &target_dir)?);
    }
    println!(
        "fuzz: {:<14} {:>12} {:>9} {:>6}",
        "target", "executions", "exec/s", "s"
    );
    for o in &outcomes {
        println!(
            "fuzz: {:<14} {:>12} {:>9} {:>6.0}",
            o.target, o.executions, o.per_second, o.seconds
        );
    }
    println!("fuzz: no crash, 5xx, invariant break or hang in any target");
    Ok(())
}

fn run_one(target: &'static str, budget: Budget, target_dir: &Path) -> Result<Outcome> {
    let corpus = target_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let seeds = root().join("fuzz/seeds").join(target);
    let regressions = root().join("fuzz/regressions").join(target);
    let started = Instant::now();
    let mut command = cargo_fuzz();
    command
        .arg("run")
        .args(build_flags(target_dir))
        .arg(target)
        // New inputs go to the first folder; the committed ones are only read.
        .arg(&corpus)
        .arg(&seeds);
    if regressions.is_dir() {
        command.arg(&regressions);
    }
    let output = command
        .arg("--")
        .args(budget.libfuzzer_flags())
        .args([
            // A hang is a finding too (every input runs in well under a second).
            "-timeout=30",
            "-print_final_stats=1",
        ])
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cargo fuzz run {target}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target {target} failed ({}):\n{}\n\nThe input is under fuzz/artifacts/{target}/: \
             fix the bug, and add the input to fuzz/regressions/{target}/ so the unit tier \
             replays it",
            output.status,
            tail.join("\n")
        );
    }
    let stat = |name: &str| -> Result<u64> {
        log.lines()
            .find_map(|line| line.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("libFuzzer printed no {name} for {target}:\n{log}"))
    };
    Ok(Outcome {
        target,
        executions: stat("number_of_executed_units")?,
        per_second: stat("average_exec_per_sec")?,
        seconds: started.elapsed().as_secs_f64(),
    })
}
