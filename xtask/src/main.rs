//! `cargo xtask`: the commands README names, so a fresh machine and CI run the same steps.

mod cargo;
mod fidelity;
mod fuzz;
mod images;
mod install;
mod vm;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "meshsim's build, test and benchmark helpers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole test suite: unit, BPF_PROG_TEST_RUN, network-namespace, Matrix, package
    /// and VM tiers, then the fuzz stage (the package tier needs cargo-deb, the fuzz stage
    /// cargo-fuzz: ./x test installs both).
    Test {
        /// Skip the VM tier (which boots Debian's kernel under qemu, ~1-3 minutes).
        #[arg(long)]
        no_vm: bool,
    },
    /// The fuzz targets (fuzz/, cargo-fuzz): builds them and runs each for SECONDS (or until
    /// RUNS executions), failing on any crash; prints the executions per target.
    Fuzz {
        /// Seconds per target: 20 by default, no limit when only --runs is given.
        #[arg(long)]
        seconds: Option<u64>,
        /// Executions per target (such as 1000000, the goal the README's figures meet).
        #[arg(long)]
        runs: Option<u64>,
        /// Only these targets (topology_file, scenario_file, model_ops, api, ws).
        targets: Vec<String>,
    },
    /// Only the VM tier: tests that need sch_fq, in Debian's kernel under qemu.
    VmTest {
        /// Only the tests whose name contains this.
        filter: Option<String>,
    },
    /// Lints: rustfmt and clippy (-D warnings) for the workspace and, apart, the classifier.
    Lint,
    /// The docker backend's images (meshsim/base, meshsim/synapse), from a locally debootstrapped Debian; images that exist are kept.
    Images,
    /// The fidelity report: meshsim's classifier against netem, side by side, in the VM.
    Fidelity,
    /// Builds the release binary and installs it with its man pages, shell completions and
    /// examples under PREFIX, listing every file in PREFIX/share/meshsim/installed-files.
    Install {
        #[arg(long, default_value = "/usr/local")]
        prefix: String,
    },
    /// Removes exactly what `install` installed under PREFIX.
    Uninstall {
        #[arg(long, default_value = "/usr/local")]
        prefix: String,
    },
    /// Builds the Debian package (cargo-deb) into target/debian/.
    Package,
    /// Benchmarks that print figures: the classifier's cost per packet; mesh bring-up and
    /// link changes (host); a 1000-link change against the seed's `tc` way (VM).
    Bench,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Test { no_vm } => {
            require_root("the tests load eBPF programs and create network namespaces")?;
            // The CLI and browser tiers run the binary itself; the package tier installs the
            // .deb into a clean Debian root.
            cargo::run(&["build", "-p", "meshsim"])?;
            let deb = install::package()?;
            cargo::run_with_env(
                &[
                    "test",
                    "--workspace",
                    "--exclude",
                    "meshsim-ebpf",
                    "--",
                    "--include-ignored",
                    "--test-threads=1",
                ],
                &[("MESHSIM_DEB", deb.as_os_str())],
            )?;
            if !no_vm {
                vm::test(None)?;
            }
            fuzz::run(fuzz::Budget::test(), &[])
        }
        Command::VmTest { filter } => {
            require_root("the VM tests load eBPF programs")?;
            vm::test(filter.as_deref())
        }
        Command::Fidelity => {
            require_root("the report loads eBPF programs")?;
            fidelity::run()
        }
        Command::Fuzz {
            seconds,
            runs,
            targets,
        } => fuzz::run(fuzz::Budget::new(seconds, runs), &targets),
        Command::Images => images::run(),
        Command::Install { prefix } => {
            require_root("installing writes under the prefix")?;
            install::install(&prefix)
        }
        Command::Uninstall { prefix } => {
            require_root("uninstalling removes files under the prefix")?;
            install::uninstall(&prefix)
        }
        Command::Package => install::package().map(drop),
        Command::Lint => {
            cargo::run(&["fmt", "--all", "--check"])?;
            cargo::run(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
            cargo::run(&[
                "clippy",
                "-p",
                "meshsim-ebpf",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ])
        }
        Command::Bench => {
            require_root("the benchmarks load eBPF programs")?;
            cargo::run(&["bench", "-p", "meshsim-bench", "--bench", "classifier"])?;
            cargo::run(&["bench", "-p", "meshsim-bench", "--bench", "mesh"])?;
            // Density: cold starts are the baseline the zygote and KSM are measured against.
            for layout in [
                &["--database", "sqlite", "--launch", "cold"][..],
                &["--database", "sqlite"],
                &["--database", "sqlite", "--ksm"],
                &["--database", "postgres", "--launch", "cold"],
                &["--database", "postgres"],
                &["--workers", "small"],
            ] {
                let mut args = vec!["bench", "-p", "meshsim-bench", "--bench", "synapse", "--"];
                args.extend(layout);
                cargo::run(&args)?;
            }
            cargo::run(&["bench", "-p", "meshsim-bench", "--bench", "events"])?;
            cargo::run(&["bench", "-p", "meshsim-bench", "--bench", "client"])?;
            cargo::run(&["bench", "-p", "meshsim-bench", "--bench", "scenario"])?;
            // The soak runs the real binary, for an hour.
            cargo::run(&["build", "--release", "-p", "meshsim"])?;
            cargo::run(&["bench", "-p", "meshsim-bench", "--bench", "soak"])?;
            // The seed's way needs netem, which only the VM's kernel has.
            vm::bench("mesh", &["vm"])
        }
    }
}

fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root ({why}): sudo -E cargo xtask ...");
    }
    Ok(())
}
