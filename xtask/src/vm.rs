//! The VM tier: boots Debian's kernel (which has sch_fq and sch_netem as modules) under qemu
//! with virtme-ng, sharing this machine's root read-only, and runs test or bench binaries
//! built here inside it.
//!
//! Software emulation (`--disable-kvm`): /dev/kvm on the development VMs is a nested PVM
//! that cannot run a normal kernel. Boot takes ~25 s; timers are coarser than on hardware,
//! which the tests and benches account for by measuring against a baseline in the same VM.
//!
//! Success is read from a file the guest writes last, not from vng's exit code: vng may
//! exit 0 when the guest never ran the command (see `guest_script`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::cargo;

/// Modules the guest loads before running anything.
const MODULES: &[&str] = &["sch_fq", "sch_netem"];
// The fidelity report takes ~14 minutes under emulation.
const BOOT_AND_RUN_TIMEOUT: Duration = Duration::from_secs(1200);

/// Builds the VM tests and runs them in the VM (those whose name contains `filter`, if
/// given).
pub fn test(filter: Option<&str>) -> Result<()> {
    let exes = cargo::test_executables(&[
        "test",
        "-p",
        "meshsim-tests",
        "--features",
        "vm-tests",
        "--test",
        "vm",
    ])?;
    let [exe] = exes.as_slice() else {
        bail!("expected one VM test binary, cargo built {exes:?}")
    };
    let exe = exe.display().to_string();
    let mut args = vec![
        exe.as_str(),
        "--include-ignored",
        "--test-threads=1",
        "--nocapture",
    ];
    args.extend(filter);
    run(&args)
}

/// Builds the bench `name` (meshsim-bench) and runs it in the VM with `args`.
pub fn bench(name: &str, args: &[&str]) -> Result<()> {
    let exes = cargo::bench_executables(&["bench", "-p", "meshsim-bench", "--bench", name])?;
    let [exe] = exes.as_slice() else {
        bail!("expected one {name} bench binary, cargo built {exes:?}")
    };
    let exe = exe.display().to_string();
    let mut command = vec![exe.as_str()];
    command.extend_from_slice(args);
    run(&command)
}

/// Runs `command` inside the VM as root, streaming nothing: its output is printed when it
/// ends, and its exit code is the result.
pub fn run(command: &[&str]) -> Result<()> {
    let kernel = debian_kernel()?;
    let vng = which("vng")
        .context("virtme-ng is not installed: run `sudo ./x setup` (or `pip install virtme-ng`)")?;
    let out = std::env::current_dir()?.join("target/vm");
    fs::create_dir_all(&out)?;
    for f in ["status", "rc", "guest.log", "console.log"] {
        let _ = fs::remove_file(out.join(f));
    }
    let script = guest_script(&out, command)?;
    eprintln!(
        "vm: booting {} under qemu (software emulation, ~25 s), then: {}",
        kernel.vmlinuz.display(),
        command.join(" ")
    );
    let started = Instant::now();
    // Append: qemu reopens its output several times, and would overwrite its own text.
    let console = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("console.log"))?;
    // setsid first, then timeout: vng does not pass a kill on to qemu, but timeout kills the
    // whole session it leads.
    let mut vng_cmd = Command::new("setsid");
    vng_cmd
        .args([
            "timeout",
            "-k",
            "10",
            &BOOT_AND_RUN_TIMEOUT.as_secs().to_string(),
        ])
        .arg(&vng)
        .arg("-r")
        .arg(&kernel.vmlinuz)
        .args([
            "--disable-kvm",
            "--force-9p",
            "--cpus",
            "2",
            "--memory",
            "1G",
            "--verbose",
        ])
        .arg("--rwdir")
        .arg(&out)
        .args(["--exec", &script]);
    if Path::new("/bin/busybox").exists() {
        vng_cmd.args(["--busybox", "/bin/busybox"]);
    }
    // vng runs virtme-run from its own directory; no terminal in CI.
    let path = format!(
        "{}:{}",
        vng.parent().unwrap_or(Path::new("/")).display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = vng_cmd
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .status()
        .context("starting vng")?;
    let log = fs::read_to_string(out.join("guest.log")).unwrap_or_default();
    print!("{log}");
    eprintln!("vm: finished in {:.0} s", started.elapsed().as_secs_f64());
    if matches!(status.code(), Some(124 | 137)) {
        bail!(
            "the VM did not finish within {} s; see {}",
            BOOT_AND_RUN_TIMEOUT.as_secs(),
            out.join("console.log").display()
        );
    }
    let finished =
        fs::read_to_string(out.join("status")).is_ok_and(|s| s.trim() == "init: success");
    if !finished {
        bail!(
            "the guest never finished its command (vng: {status}); see {}",
            out.join("console.log").display()
        );
    }
    let rc = fs::read_to_string(out.join("rc"))?.trim().to_owned();
    if rc != "0" {
        bail!("in the VM, `{}` failed (exit {rc})", command.join(" "));
    }
    Ok(())
}

struct Kernel {
    vmlinuz: PathBuf,
}

/// The newest installed kernel that has sch_fq as a module (Debian's linux-image-amd64).
fn debian_kernel() -> Result<Kernel> {
    let mut versions: Vec<String> = fs::read_dir("/lib/modules")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    for v in versions.iter().rev() {
        let vmlinuz = PathBuf::from(format!("/boot/vmlinuz-{v}"));
        let sched = PathBuf::from(format!("/lib/modules/{v}/kernel/net/sched"));
        let has_fq = fs::read_dir(&sched)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().starts_with("sch_fq.ko"))
            })
            .unwrap_or(false);
        if vmlinuz.exists() && has_fq {
            return Ok(Kernel { vmlinuz });
        }
    }
    bail!(
        "no kernel with sch_fq under /boot and /lib/modules: run `sudo ./x setup` (installs linux-image-amd64)"
    )
}

/// What the guest runs: load modules, run the command with its output to a file, record
/// its exit code, then the success marker (last, so its presence means the rest is there).
fn guest_script(out: &Path, command: &[&str]) -> Result<String> {
    let cwd = std::env::current_dir()?;
    let quoted: Vec<String> = command.iter().map(|a| shell_quote(a)).collect();
    let out = out.display();
    Ok(format!(
        "cd {cwd}; export HOME=/tmp; (modprobe -a {modules} && {cmd}) > {out}/guest.log 2>&1; rc=$?; echo $rc > {out}/rc; echo 'init: success' > {out}/status; exit $rc",
        cwd = shell_quote(&cwd.display().to_string()),
        modules = MODULES.join(" "),
        cmd = quoted.join(" "),
    ))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}
