//! `meshsim run SCENARIO --out DIR`: a scenario run headless, once or `--repeat N` times,
//! each run leaving its results in its own directory.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, Result, anyhow, bail};
use meshsim::scenario::{
    self, Scenario,
    desk::Desk,
    report::Figures,
    run::Ports,
    session::{self, Session},
};
use serde_json::json;

use crate::{
    RunOptions,
    mesh::{self, StopSignals, Then},
};

/// One run of a scenario into a directory; holds its figures once it ran.
pub struct Job {
    pub scenario: Scenario,
    dir: PathBuf,
    overrides: Vec<String>,
    figures: Option<Figures>,
    /// Shared with the server, so the canvas shows the run's timeline.
    pub desk: Arc<Desk>,
}

pub async fn run(
    path: &Path,
    out: &Path,
    repeat: u32,
    set: &[String],
    options: RunOptions,
) -> Result<()> {
    if repeat == 0 {
        bail!("--repeat 0 runs nothing: give 1 or more");
    }
    // Every mistake in the file or the overrides stops here, before anything is made.
    let mut scenario = scenario::read(path)?;
    for assignment in set {
        scenario.set(assignment)?;
    }
    empty_dir(out)?;
    if repeat == 1 {
        let figures = once(&scenario, out, set, options).await?;
        return outcome(&figures);
    }
    let mut all = Vec::new();
    let mut first_error = None;
    for k in 1..=repeat {
        eprintln!("meshsim: run {k} of {repeat}");
        let dir = out.join(k.to_string());
        empty_dir(&dir)?;
        match once(&scenario, &dir, set, options.clone()).await {
            Ok(figures) => {
                if let Some(why) = &figures.failure {
                    first_error.get_or_insert_with(|| anyhow!("run {k}: {why}"));
                }
                all.push((k, Some(figures)));
            }
            Err(e) => {
                eprintln!("meshsim: run {k}: {e:#}");
                first_error.get_or_insert(e.context(format!("run {k}")));
                all.push((k, None));
            }
        }
    }
    let summary = out.join("summary.md");
    fs::write(&summary, summary_text(&scenario, &all))
        .with_context(|| format!("writing {}", summary.display()))?;
    eprintln!("meshsim: the summary is {}", summary.display());
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A new or empty directory; anything in it would be mixed with this run's results.
fn empty_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    if entries.next().is_some() {
        bail!(
            "{} is not empty: give --out a new or empty directory (results are never mixed \
             with an earlier run's)",
            dir.display()
        );
    }
    Ok(())
}

async fn once(
    scenario: &Scenario,
    dir: &Path,
    set: &[String],
    options: RunOptions,
) -> Result<Figures> {
    fs::write(dir.join("scenario.toml"), &scenario.text)
        .with_context(|| format!("writing into {}", dir.display()))?;
    let run_json = json!({
        "scenario": scenario.path.display().to_string(),
        "meshsim": crate::version(),
        "overrides": set,
        "settings": scenario.file.topology.settings,
        "client": scenario.file.topology.client,
        // The flags that shape the run (never the token).
        "options": {
            "backend": options.backend.map(|b| format!("{b:?}").to_lowercase()),
            "workload": options.workload,
            "node_cmd": options.node_cmd,
            "node_cmd_as_root": options.node_cmd_as_root,
            "image": options.image,
            "subnet": options.subnet.to_string(),
            "prefix": options.prefix.to_string(),
            "loose": options.loose,
        },
    });
    fs::write(
        dir.join("run.json"),
        serde_json::to_string_pretty(&run_json).expect("JSON values serialise"),
    )?;
    let mut job = Job {
        scenario: scenario.clone(),
        dir: dir.to_owned(),
        overrides: set.to_vec(),
        figures: None,
        desk: Desk::new(),
    };
    let result = mesh::run_with(
        Some(scenario.file.clone()),
        options,
        Then::Scenario(&mut job),
    )
    .await;
    match (result, job.figures) {
        (Ok(()), Some(figures)) => Ok(figures),
        (Ok(()), None) => Err(anyhow!("the run stopped before its scenario started")),
        // The scenario ran and wrote its report; its failure is in the figures.
        (Err(_), Some(figures)) if figures.failure.is_some() => Ok(figures),
        (Err(e), _) => Err(e),
    }
}

fn outcome(figures: &Figures) -> Result<()> {
    match &figures.failure {
        Some(why) => Err(anyhow!("the scenario did not finish: {why}")),
        None => Ok(()),
    }
}

impl Job {
    /// Runs the steps on the running mesh, then writes the results, also when a step failed
    /// or the run was interrupted.
    pub async fn run(&mut self, ports: Ports, stop: &mut StopSignals) -> Result<()> {
        eprintln!(
            "meshsim: running {} ({} steps); results go to {}",
            self.scenario.path.display(),
            self.scenario.steps.len(),
            self.dir.display()
        );
        let progress = |line: String| eprintln!("meshsim: {line}");
        let session = Session {
            ports: &ports,
            desk: &self.desk,
            dir: &self.dir,
            overrides: &self.overrides,
            version: crate::version(),
        };
        // Ctrl-C, SIGTERM, or Stop on the canvas's timeline.
        let stopped = async {
            tokio::select! {
                () = stop.wait() => {}
                () = self.desk.stop_requested() => {}
            }
        };
        let figures = session::run_into(&self.scenario, session, &progress, stopped)
            .await
            .with_context(|| format!("writing the results into {}", self.dir.display()))?;
        eprintln!(
            "meshsim: {}; the report is {}",
            match &figures.failure {
                None => format!("all {} steps ran", figures.steps_total),
                Some(why) => format!("stopped: {why}"),
            },
            self.dir.join("report.md").display()
        );
        let failure = figures.failure.clone();
        self.figures = Some(figures);
        match failure {
            Some(why) => Err(anyhow!("{why}")),
            None => Ok(()),
        }
    }
}

fn summary_text(scenario: &Scenario, runs: &[(u32, Option<Figures>)]) -> String {
    let ms = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1}"));
    let mut s = String::new();
    let _ = writeln!(s, "# {} runs of {}\n", runs.len(), scenario.path.display());
    let _ = writeln!(
        s,
        "| run | steps | step late p99 (ms) | messages | delivery p50 (ms) | delivery p95 (ms) | not delivered | converged after heal (ms) | outcome |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for (k, figures) in runs {
        match figures {
            Some(f) => {
                let _ = writeln!(
                    s,
                    "| [{k}]({k}/report.md) | {}/{} | {} | {} | {} | {} | {} | {} | {} |",
                    f.steps_done,
                    f.steps_total,
                    ms(f.late_p99_ms),
                    f.messages,
                    ms(f.delivery_p50_ms),
                    ms(f.delivery_p95_ms),
                    f.undelivered,
                    ms(f.converged_after_ms),
                    f.failure.as_deref().unwrap_or("ok").replace('|', "\\|")
                );
            }
            None => {
                let _ = writeln!(s, "| {k} | – | – | – | – | – | – | – | did not start |");
            }
        }
    }
    let values = |get: fn(&Figures) -> Option<f64>| -> Vec<f64> {
        runs.iter()
            .filter_map(|(_, f)| f.as_ref().and_then(get))
            .collect()
    };
    let spread = |v: Vec<f64>| {
        if v.is_empty() {
            "–".to_owned()
        } else {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            format!("mean {mean:.1}, from {min:.1} to {max:.1}")
        }
    };
    let _ = writeln!(s, "\nAcross runs (ms):\n");
    let _ = writeln!(
        s,
        "- delivery p50: {}",
        spread(values(|f| f.delivery_p50_ms))
    );
    let _ = writeln!(
        s,
        "- delivery p95: {}",
        spread(values(|f| f.delivery_p95_ms))
    );
    let _ = writeln!(
        s,
        "- converged after heal: {}",
        spread(values(|f| f.converged_after_ms))
    );
    s
}
