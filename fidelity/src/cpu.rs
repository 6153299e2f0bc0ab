//! CPU time of the whole VM from /proc/stat, for the cost section.

use super::*;

/// CPU time of the whole VM from /proc/stat (all CPUs).
///
/// Busy time is wall time times CPUs minus idle and iowait: the kernel accounts idle time
/// exactly (from the clock, at each idle entry and exit, with NO_HZ), while user, system,
/// irq and softirq are sampled at the tick, which under emulation and with bursty packet
/// work swings by several times between identical runs. softirq is still read, as sampled.
pub(crate) struct CpuTimes {
    pub(crate) at: Instant,
    pub(crate) idle: u64,
    pub(crate) softirq: u64,
}

impl CpuTimes {
    pub(crate) fn read() -> Result<CpuTimes> {
        let stat = fs::read_to_string("/proc/stat")?;
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("no cpu line in /proc/stat")?;
        // user nice system idle iowait irq softirq steal ...
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        ensure!(v.len() >= 8, "short cpu line in /proc/stat: {line}");
        Ok(CpuTimes {
            at: Instant::now(),
            idle: v[3] + v[4],
            softirq: v[6],
        })
    }

    /// (busy, softirq) ns from `self` to `later`.
    pub(crate) fn until(&self, later: &CpuTimes) -> (f64, f64) {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let tick_ns = 1e9 / hz;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let wall = later.at.duration_since(self.at).as_nanos() as f64 * cpus;
        let idle = (later.idle - self.idle) as f64 * tick_ns;
        let softirq = (later.softirq - self.softirq) as f64 * tick_ns;
        ((wall - idle).max(0.0), softirq)
    }
}
