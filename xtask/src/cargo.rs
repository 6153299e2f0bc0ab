//! Running cargo from xtask.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};
use cargo_metadata::Message;

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cargo ARGS`, failing if it fails.
pub fn run(args: &[&str]) -> Result<()> {
    run_with_env(args, &[])
}

/// Runs `cargo ARGS` with `env` set, failing if it fails.
pub fn run_with_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Result<()> {
    let status = cargo()
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds test targets with `cargo ARGS --no-run` and returns their executables.
pub fn test_executables(args: &[&str]) -> Result<Vec<PathBuf>> {
    let mut child = cargo()
        .args(args)
        .args(["--no-run", "--message-format=json-render-diagnostics"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cargo test --no-run")?;
    let stdout = std::io::BufReader::new(child.stdout.take().context("cargo's stdout")?);
    let mut executables = Vec::new();
    for message in Message::parse_stream(stdout) {
        if let Message::CompilerArtifact(artifact) = message?
            && artifact.profile.test
        {
            executables.extend(artifact.executable.map(PathBuf::from));
        }
    }
    if !child.wait()?.success() {
        bail!("building the tests failed: cargo {}", args.join(" "));
    }
    Ok(executables)
}

/// Builds bench targets with `cargo ARGS --no-run` and returns their executables.
pub fn bench_executables(args: &[&str]) -> Result<Vec<PathBuf>> {
    let mut child = cargo()
        .args(args)
        .args(["--no-run", "--message-format=json-render-diagnostics"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cargo bench --no-run")?;
    let stdout = std::io::BufReader::new(child.stdout.take().context("cargo's stdout")?);
    let mut executables = Vec::new();
    for message in Message::parse_stream(stdout) {
        if let Message::CompilerArtifact(artifact) = message?
            && artifact.target.is_bench()
        {
            executables.extend(artifact.executable.map(PathBuf::from));
        }
    }
    if !child.wait()?.success() {
        bail!("building the benches failed: cargo {}", args.join(" "));
    }
    Ok(executables)
}

/// Builds with `cargo ARGS` and returns the path of the binary target `name`.
pub fn binary(args: &[&str], name: &str) -> Result<PathBuf> {
    let mut child = cargo()
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cargo {}", args.join(" ")))?;
    let stdout = std::io::BufReader::new(child.stdout.take().context("cargo's stdout")?);
    let mut found = None;
    for message in Message::parse_stream(stdout) {
        if let Message::CompilerArtifact(artifact) = message?
            && artifact.target.name == name
            && artifact.target.is_bin()
        {
            found = artifact.executable.map(PathBuf::from);
        }
    }
    if !child.wait()?.success() {
        bail!("building {name} failed: cargo {}", args.join(" "));
    }
    found.with_context(|| format!("cargo built no binary {name}"))
}
