//! Running a classifier on a frame without a device (`BPF_PROG_TEST_RUN`): the tests check
//! its decisions this way and the benchmark times it, against baselines that live in an
//! object of their own (`meshsim-ebpf/src/baseline.rs`), never loaded by a running mesh.

use aya::{Ebpf, TestRun as _, TestRunOptions, programs::SchedClassifier};

use super::{Datapath, DatapathError, EGRESS_PROGRAM, Result, SkBuffCtx, classifier};

/// The benchmark's baselines, built beside the classifier.
static BASELINE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/meshsim-baseline"));

/// What one `BPF_PROG_TEST_RUN` gave back.
#[derive(Clone, Copy, Debug)]
pub struct TestRunOutcome {
    /// The tc verdict (`TC_ACT_*`).
    pub verdict: i32,
    /// The context after the run: `tstamp` holds the departure time.
    pub ctx: SkBuffCtx,
    /// Average time per run, as the kernel measured it.
    pub duration: std::time::Duration,
}

impl Datapath {
    /// Runs the classifier once per `repeat` on `frame`: no device, no qdisc, but the real
    /// maps. With `orphan` on, the clone is really sent on `ctx.ifindex` (loopback when 0).
    pub fn test_run(&self, frame: &[u8], ctx: &SkBuffCtx, repeat: u32) -> Result<TestRunOutcome> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(EGRESS_PROGRAM)
            .ok_or(DatapathError::Missing(EGRESS_PROGRAM))?
            .try_into()?;
        run(prog, frame, ctx, repeat)
    }
}

/// A baseline program of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaselineProgram {
    /// Does nothing: the test-run harness's own cost.
    Empty,
    /// Only reads the clock: the floor under any shaped packet's cost.
    Clock,
}

impl BaselineProgram {
    fn name(self) -> &'static str {
        match self {
            BaselineProgram::Empty => "meshsim_empty",
            BaselineProgram::Clock => "meshsim_clock",
        }
    }
}

/// The baselines, loaded (not attached anywhere) for test runs.
pub struct Baseline {
    ebpf: Ebpf,
}

impl Baseline {
    pub fn load() -> Result<Self> {
        if BASELINE_OBJECT.is_empty() {
            return Err(DatapathError::NoClassifier);
        }
        let mut ebpf = Ebpf::load(BASELINE_OBJECT)?;
        for program in [BaselineProgram::Empty, BaselineProgram::Clock] {
            classifier(&mut ebpf, program.name())?.load()?;
        }
        Ok(Baseline { ebpf })
    }

    pub fn test_run(
        &self,
        program: BaselineProgram,
        frame: &[u8],
        ctx: &SkBuffCtx,
        repeat: u32,
    ) -> Result<TestRunOutcome> {
        let name = program.name();
        let prog: &SchedClassifier = self
            .ebpf
            .program(name)
            .ok_or(DatapathError::Missing(name))?
            .try_into()?;
        run(prog, frame, ctx, repeat)
    }
}

fn run(
    prog: &SchedClassifier,
    frame: &[u8],
    ctx: &SkBuffCtx,
    repeat: u32,
) -> Result<TestRunOutcome> {
    let mut out = SkBuffCtx::default();
    let mut data_out = vec![0u8; frame.len() + 256];
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut data_out),
        ctx_in: Some(ctx.as_bytes()),
        ctx_out: Some(out.as_bytes_mut()),
        repeat,
        ..Default::default()
    })?;
    Ok(TestRunOutcome {
        verdict: r.return_value as i32,
        ctx: out,
        duration: r.duration,
    })
}
