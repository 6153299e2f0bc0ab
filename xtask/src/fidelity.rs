//! `cargo xtask fidelity`: the fidelity report (the `meshsim-fidelity` crate), meshsim's
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
//!
//! A full run (neither of those) also puts the report into docs/fidelity.md, between the
//! `<!-- fidelity:start -->` and `<!-- fidelity:end -->` markers, and its plot at
//! `docs/fidelity.png`, so that page always shows the latest full table.

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
const DOC_START: &str = "<!-- fidelity:start -->";
const DOC_END: &str = "<!-- fidelity:end -->";
/// The page a full run refreshes, and its plot (linked from the page by file name).
const DOC: &str = "docs/fidelity.md";
const DOC_PLOT: &str = "docs/fidelity.png";
const DOC_PLOT_LINK: &str = "fidelity.png";
/// How often the host's load average is sampled while the VM runs.
const LOAD_EVERY: Duration = Duration::from_secs(10);

pub fn run() -> Result<()> {
    let exe = cargo::binary(
        &["build", "--release", "-p", "meshsim-fidelity"],
        "meshsim-fidelity",
    )?;
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
    let mut full = true;
    if std::env::var_os(QUICK_ENV).is_some_and(|v| v != "0") {
        args.push("--quick".to_owned());
        full = false;
    }
    if let Ok(only) = std::env::var(ONLY_ENV) {
        args.push(format!("--only={only}"));
        full = false;
    }
    wait_for_other_vms();
    eprintln!(
        "fidelity: the report takes ~14 minutes in the VM (vm.rs allows 20); progress follows"
    );
    let stop = AtomicBool::new(false);
    let (result, loads) = std::thread::scope(|s| {
        let follower = s.spawn(|| follow(&progress, &stop));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = vm::run(&args);
        stop.store(true, Ordering::Relaxed);
        (result, follower.join().unwrap_or_default())
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
    let md_path = out.join("fidelity.md");
    let md = with_host_load(&fs::read_to_string(&md_path)?, &loads);
    fs::write(&md_path, &md)?;
    if full {
        update_doc(&root, &md)?;
        if out.join("fidelity.png").exists() {
            fs::create_dir_all(root.join("docs"))?;
            fs::copy(out.join("fidelity.png"), root.join(DOC_PLOT))?;
        }
        println!("{DOC}: now shows this run; plot at {DOC_PLOT}");
    }
    Ok(())
}

/// The report with a line on the host's load while it ran: the VM's figures depend on it.
fn with_host_load(md: &str, loads: &[f64]) -> String {
    if loads.is_empty() {
        return md.to_owned();
    }
    let mut sorted = loads.to_vec();
    sorted.sort_by(f64::total_cmp);
    let line = format!(
        "Host load while it ran (1-minute load average, sampled every {} s, the emulated VM included): median {:.1}, max {:.1}.",
        LOAD_EVERY.as_secs(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
    // After the paragraph that says where the run came from.
    match md
        .find("\n\n")
        .and_then(|h| md[h + 2..].find("\n\n").map(|p| h + 2 + p))
    {
        Some(at) => format!("{}\n\n{line}{}", &md[..at], &md[at..]),
        None => format!("{md}\n{line}\n"),
    }
}

/// Puts `md` into the fidelity page between its markers.
fn update_doc(root: &Path, md: &str) -> Result<()> {
    let path = root.join(DOC);
    let page = fs::read_to_string(&path).with_context(|| format!("reading {DOC}"))?;
    fs::write(&path, splice(&page, md)?)?;
    Ok(())
}

/// `page` with `md` (its title dropped: the page has its own) and the plot between the
/// markers.
fn splice(page: &str, md: &str) -> Result<String> {
    let (Some(start), Some(end)) = (page.find(DOC_START), page.find(DOC_END)) else {
        bail!(
            "{DOC} has no {DOC_START} ... {DOC_END} markers: add them where the fidelity table belongs"
        );
    };
    let body: String = md
        .lines()
        .filter(|l| !l.starts_with("# "))
        .map(|l| format!("{l}\n"))
        .collect();
    Ok(format!(
        "{}{DOC_START}\n{}\n![Delay distributions: configured, meshsim, netem]({DOC_PLOT_LINK})\n\n{}",
        &page[..start],
        body.trim(),
        &page[end..]
    ))
}

/// Prints the complete lines `path` gains until `stop` is set (and once more after); returns
/// the host's load average, sampled every `LOAD_EVERY`.
fn follow(path: &Path, stop: &AtomicBool) -> Vec<f64> {
    let mut shown = 0;
    let mut loads = Vec::new();
    let mut last_load: Option<std::time::Instant> = None;
    loop {
        if last_load.is_none_or(|t| t.elapsed() >= LOAD_EVERY) {
            last_load = Some(std::time::Instant::now());
            if let Some(load) = fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
            {
                loads.push(load);
            }
        }
        let last = stop.load(Ordering::Relaxed);
        if let Ok(text) = fs::read(path)
            && let Some(end) = text.iter().rposition(|&b| b == b'\n')
            && end + 1 > shown
        {
            eprint!("{}", String::from_utf8_lossy(&text[shown..=end]));
            shown = end + 1;
        }
        if last {
            return loads;
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

#[cfg(test)]
mod tests {
    use super::*;

    const MD: &str =
        "# Fidelity: meshsim vs netem\n\nRun 2026-11-22.\n\nBoth columns.\n\n## Loss\n\n| a |\n";

    #[test]
    fn the_host_load_goes_after_the_first_paragraph() {
        let md = with_host_load(MD, &[2.0, 3.5, 2.5]);
        assert!(
            md.contains("Run 2026-11-22.\n\nHost load while it ran"),
            "{md}"
        );
        assert!(md.contains("median 2.5, max 3.5"), "{md}");
        assert_eq!(with_host_load(MD, &[]), MD);
    }

    #[test]
    fn the_page_gets_the_report_between_its_markers_and_nothing_else_changes() {
        let page = format!("# Fidelity\nintro\n{DOC_START}\nold\n{DOC_END}\n## Layout\n");
        let new = splice(&page, MD).unwrap();
        assert!(new.starts_with("# Fidelity\nintro\n"), "{new}");
        assert!(new.ends_with(&format!("{DOC_END}\n## Layout\n")), "{new}");
        assert!(!new.contains("old"), "{new}");
        assert!(!new.contains("# Fidelity: meshsim"), "{new}");
        assert!(new.contains("\n## Loss\n"), "{new}");
        assert!(new.contains(DOC_PLOT_LINK), "{new}");
        // Splicing again replaces, never accumulates.
        assert_eq!(splice(&new, MD).unwrap(), new);
        assert!(splice("no markers", MD).is_err());
    }
}
