//! `cargo xtask fidelity`: the fidelity report (`meshsim/benches/fidelity.rs`), meshsim's
//! classifier and `tc netem` on the same kind of link, side by side.
//!
//! The bench needs sch_fq and sch_netem, which only the VM's Debian kernel has, so it is built
//! here and run there. The guest can write only under `target/vm/`: the bench writes its
//! report into `target/vm/fidelity/` and this copies it to `target/fidelity/`. `vm::run` shows
//! the guest's output only once the VM ends, so the bench also writes progress lines to a file
//! there, which is followed here while the VM runs.
//!
//! `MESHSIM_FIDELITY_QUICK=1` makes a smoke run (every count and duration a tenth), to check
//! the machinery in ~3 minutes; its report says so. `MESHSIM_FIDELITY_ONLY=rate,loss` runs only
//! those sections (delay, jitter, reorder, tcp, rate, loss, cost, reconf).

use std::{
    fs,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, vm};

const QUICK_ENV: &str = "MESHSIM_FIDELITY_QUICK";
const ONLY_ENV: &str = "MESHSIM_FIDELITY_ONLY";
const FILES: [&str; 2] = ["fidelity.md", "fidelity.png"];

pub fn run() -> Result<()> {
    let exes = cargo::bench_executables(&["bench", "-p", "meshsim", "--bench", "fidelity"])?;
    let [exe] = exes.as_slice() else {
        bail!("expected one fidelity bench binary, cargo built {exes:?}")
    };
    let root = std::env::current_dir()?;
    let guest_out = root.join("target/vm/fidelity");
    let _ = fs::remove_dir_all(&guest_out);
    fs::create_dir_all(&guest_out).with_context(|| format!("creating {}", guest_out.display()))?;
    let progress = guest_out.join("progress.log");
    let mut args = vec![
        exe.display().to_string(),
        guest_out.display().to_string(),
        format!("--progress={}", progress.display()),
        format!("--host={}", host()),
    ];
    if std::env::var_os(QUICK_ENV).is_some_and(|v| v != "0") {
        args.push("--quick".to_owned());
    }
    if let Ok(only) = std::env::var(ONLY_ENV) {
        args.push(format!("--only={only}"));
    }
    wait_for_other_vms();
    eprintln!(
        "fidelity: the report takes ~14 minutes in the VM (vm.rs allows 20); progress follows"
    );
    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let follower = s.spawn(|| follow(&progress, &stop));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = vm::run(&args);
        stop.store(true, Ordering::Relaxed);
        let _ = follower.join();
        result
    });
    result?;
    let out = root.join("target/fidelity");
    fs::create_dir_all(&out)?;
    for f in FILES {
        let from = guest_out.join(f);
        // A run of some sections without jitter makes no plot: leave no older one beside it.
        if f.ends_with(".png") && !from.exists() {
            let _ = fs::remove_file(out.join(f));
            continue;
        }
        fs::copy(&from, out.join(f))
            .with_context(|| format!("the VM wrote no {f} in {}", guest_out.display()))?;
        println!("{f}: {}", out.join(f).display());
    }
    Ok(())
}

/// Prints the complete lines `path` gains until `stop` is set (and once more after).
fn follow(path: &Path, stop: &AtomicBool) {
    let mut shown = 0;
    loop {
        let last = stop.load(Ordering::Relaxed);
        if let Ok(text) = fs::read(path)
            && let Some(end) = text.iter().rposition(|&b| b == b'\n')
            && end + 1 > shown
        {
            eprint!("{}", String::from_utf8_lossy(&text[shown..=end]));
            shown = end + 1;
        }
        if last {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One VM at a time: two would share `target/vm/` and halve each other's emulated CPU, which
/// the figures would show.
fn wait_for_other_vms() {
    let mut said = false;
    while qemu_running() {
        if !said {
            eprintln!("fidelity: another VM (qemu-system) is running; waiting for it to end");
            said = true;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

fn qemu_running() -> bool {
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    procs.filter_map(|e| e.ok()).any(|e| {
        fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            let program = c.split(|&b| b == 0).next().unwrap_or_default();
            String::from_utf8_lossy(program).contains("qemu-system")
        })
    })
}

/// The machine the VM runs on, for the report: CPU model, cores, memory, kernel.
fn host() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .map_or("unknown CPU".to_owned(), |m| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kib: f64 = m
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib / (1024.0 * 1024.0))
        })
        .unwrap_or(0.0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}
