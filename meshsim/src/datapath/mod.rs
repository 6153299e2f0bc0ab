//! The eBPF datapath: loads the classifier once, attaches it at egress of node veths, and owns
//! its maps. Links and nodes change by single map operations, never by re-attaching.

mod counters;
mod debug_log;
mod port;
mod shape;
mod skb;
mod slots;
pub mod tables;
mod test_run;

use std::collections::HashMap as StdHashMap;

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, tc,
        tc::{NlOptions, SchedClassifierLinkId, TcAttach},
    },
    util::nr_cpus,
};
use meshsim_common::{
    CONFIG_F_DEBUG_LOG, CONFIG_F_ORPHAN, CONFIG_F_STRICT, Config, GlobalCounters, LinkCounters,
    LinkKey, LinkParams, LinkState, MAX_LINKS, NodeInfo,
};

pub use self::{
    counters::CounterReader,
    shape::{DEFAULT_JITTER_CORRELATION, DEFAULT_QUEUE, LinkShape},
    skb::SkBuffCtx,
    tables::Tables,
    test_run::{Baseline, BaselineProgram, TestRunOutcome},
};
use crate::net::{FqOptions, Netlink, NetlinkError};

/// The classifier object, built by build.rs from `meshsim-ebpf`.
static CLASSIFIER_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/meshsim"));

const EGRESS_PROGRAM: &str = "meshsim_egress";

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "this meshsim was built without its eBPF classifier (AYA_BUILD_SKIP was set): rebuild without it"
    )]
    NoClassifier,
    #[error("loading the eBPF classifier failed (are you root? does the kernel have BTF?): {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the classifier object has no {0}: it does not match this meshsim")]
    Missing(&'static str),
    #[error("eBPF program: {0}")]
    Program(#[from] ProgramError),
    #[error("eBPF map: {0}")]
    Map(#[from] MapError),
    #[error("cannot tell how many CPUs this machine has: {0}")]
    Cpus(std::io::Error),
    #[error("all {MAX_LINKS} link slots are in use: remove links or links per node")]
    LinksFull,
    #[error("no link {0:?}")]
    NoSuchLink(LinkKey),
    #[error("the classifier is not attached to interface {0}")]
    NotAttached(u32),
    #[error("cannot turn on the kernel's eBPF run-time statistics (needs Linux >= 5.8): {0}")]
    Stats(#[from] aya::sys::SyscallError),
    #[error(transparent)]
    Qdisc(#[from] NetlinkError),
    #[error("the classifier's debug log: {0}")]
    DebugLog(String),
}

/// What the kernel has measured of the egress classifier while run-time statistics were on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub run_time: std::time::Duration,
    pub runs: u64,
}

pub type Result<T, E = DatapathError> = std::result::Result<T, E>;

/// Program-wide switches.
#[derive(Clone, Copy, Debug)]
pub struct DatapathOptions {
    /// Drop frames between known nodes that are not linked.
    pub strict: bool,
    /// Hand shaped packets to fq as socket-less clones (see the classifier). Off only to
    /// measure the shaping arithmetic alone.
    pub orphan: bool,
    /// Put `fq` on every port the datapath attaches to, so departure times are honoured
    /// (the kernel must have sch_fq: `net::probe_fq`). Without it links are only counted.
    pub fq: bool,
    /// Log the classifier's rare events (a failed clone, a strict-mode drop) to meshsim's
    /// log, as warnings from `meshsim::classifier`. Needs a tokio runtime.
    pub debug_log: bool,
}

impl Default for DatapathOptions {
    fn default() -> Self {
        DatapathOptions {
            strict: true,
            orphan: true,
            fq: false,
            debug_log: false,
        }
    }
}

pub struct Datapath {
    ebpf: Ebpf,
    links: HashMap<MapData, LinkKey, LinkParams>,
    link_state: Array<MapData, LinkState>,
    /// Zeroing a reused slot's counters needs write access; reading goes through `counters`.
    link_counters: PerCpuArray<MapData, LinkCounters>,
    counters: CounterReader,
    nodes: HashMap<MapData, [u8; 6], NodeInfo>,
    config: Array<MapData, Config>,
    slots: slots::Slots,
    installed: StdHashMap<LinkKey, u32>,
    attached: StdHashMap<u32, SchedClassifierLinkId>,
    cpus: usize,
    /// Where fq goes with every attached port, when it does (see [`DatapathOptions::fq`]).
    fq: Option<FqOptions>,
    /// The root namespace's netlink, made on the first port that needs fq.
    root: Option<Netlink>,
    /// With [`DatapathOptions::debug_log`]: the task that reads the classifier's log.
    _debug_log: Option<debug_log::LogReader>,
}

impl Datapath {
    /// Loads the classifier, fills its jitter tables and sets its switches. Needs root.
    pub fn load(options: DatapathOptions) -> Result<Self> {
        if CLASSIFIER_OBJECT.is_empty() {
            return Err(DatapathError::NoClassifier);
        }
        let mut ebpf = Ebpf::load(CLASSIFIER_OBJECT)?;
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(DatapathError::Missing(name));
        let links = take("LINKS")?.try_into()?;
        let link_state = take("LINK_STATE")?.try_into()?;
        let link_counters: PerCpuArray<MapData, LinkCounters> =
            take("LINK_COUNTERS")?.try_into()?;
        let nodes = take("NODES")?.try_into()?;
        let config = take("CONFIG")?.try_into()?;
        let counters = CounterReader::new(
            counters::reopen(aya::maps::IterableMap::map(&link_counters))?,
            take("GLOBAL_COUNTERS")?.try_into()?,
        );
        let mut normal: Array<MapData, i32> = take("JITTER_NORMAL")?.try_into()?;
        let mut blend: Array<MapData, _> = take("JITTER_BLEND")?.try_into()?;
        let mut dist: Array<MapData, i32> = take("JITTER_DIST")?.try_into()?;
        let tables = Tables::generate();
        for (i, v) in tables.normal.iter().enumerate() {
            normal.set(i as u32, v, 0)?;
        }
        for (i, v) in tables.blend.iter().enumerate() {
            blend.set(i as u32, v, 0)?;
        }
        for (i, v) in tables.dist.iter().enumerate() {
            dist.set(i as u32, v, 0)?;
        }
        // Taken before the programs load: they refer to the log's ring buffer.
        let debug_log = if options.debug_log {
            Some(debug_log::start(&mut ebpf)?)
        } else {
            None
        };
        classifier(&mut ebpf, EGRESS_PROGRAM)?.load()?;
        let mut dp = Datapath {
            ebpf,
            links,
            link_state,
            link_counters,
            counters,
            nodes,
            config,
            slots: slots::Slots::new(MAX_LINKS),
            installed: StdHashMap::new(),
            attached: StdHashMap::new(),
            cpus: nr_cpus().map_err(|(_, e)| DatapathError::Cpus(e))?.get() as usize,
            fq: options.fq.then(FqOptions::default),
            root: None,
            _debug_log: debug_log,
        };
        dp.set_options(options)?;
        Ok(dp)
    }

    pub fn set_options(&mut self, options: DatapathOptions) -> Result<()> {
        let mut flags = 0;
        if options.strict {
            flags |= CONFIG_F_STRICT;
        }
        if options.orphan {
            flags |= CONFIG_F_ORPHAN;
        }
        if options.debug_log {
            flags |= CONFIG_F_DEBUG_LOG;
        }
        self.config.set(0, &Config { flags, _pad: 0 }, 0)?;
        Ok(())
    }

    /// Attaches the classifier at egress of `ifindex` (TCX where the kernel has it).
    pub fn attach_egress(&mut self, ifindex: u32) -> Result<()> {
        if self.attached.contains_key(&ifindex) {
            return Ok(());
        }
        let prog = classifier(&mut self.ebpf, EGRESS_PROGRAM)?;
        // A filter on a clsact qdisc, not TCX: a TCX attach, and a TCX device's removal,
        // each wait a full RCU grace period under the rtnl lock (~12 ms here), which made
        // bringing up and taking down a big mesh mostly waiting. The clsact qdisc may exist
        // already (a port whose classifier was detached): then adding it fails, fine.
        let _ = tc::qdisc_add_clsact(ifindex);
        let id = prog.attach(
            ifindex,
            TcAttach::Netlink {
                parent: TcAttachType::Egress.into(),
                options: NlOptions::default(),
            },
        )?;
        self.attached.insert(ifindex, id);
        Ok(())
    }

    /// Attaches the classifier at egress of a port in the root namespace and, with
    /// [`DatapathOptions::fq`], puts fq there as its root qdisc: the shaping of a node port.
    pub async fn attach_port(&mut self, ifindex: u32) -> Result<()> {
        self.attach_egress(ifindex)?;
        if let Some(fq) = self.fq {
            let root = match &self.root {
                Some(root) => root.clone(),
                None => self.root.insert(Netlink::connect()?).clone(),
            };
            root.replace_root_fq(ifindex, &fq).await?;
        }
        Ok(())
    }

    /// Whether ports get fq, so that delays are enforced.
    pub fn enforces_delays(&self) -> bool {
        self.fq.is_some()
    }

    pub fn detach_egress(&mut self, ifindex: u32) -> Result<()> {
        let id = self
            .attached
            .remove(&ifindex)
            .ok_or(DatapathError::NotAttached(ifindex))?;
        classifier(&mut self.ebpf, EGRESS_PROGRAM)?.detach(id)?;
        Ok(())
    }

    pub fn attached(&self) -> impl Iterator<Item = u32> + '_ {
        self.attached.keys().copied()
    }

    /// Adds a link or changes it in place (one map update: its queue and timing carry on).
    /// `port` is the destination node's bridge port, where the link's frames leave the bridge.
    pub fn upsert_link(&mut self, key: LinkKey, port: u32, shape: &LinkShape) -> Result<u32> {
        let (index, fresh) = match self.installed.get(&key) {
            Some(&i) => (i, false),
            None => (self.slots.take().ok_or(DatapathError::LinksFull)?, true),
        };
        if fresh {
            // The slot may have served a removed link: start from a clean state.
            self.link_state.set(index, &LinkState::default(), 0)?;
            self.link_counters.set(index, self.zero_counters()?, 0)?;
        }
        let params = LinkParams {
            port_ifindex: port,
            ..shape.to_params(index)
        };
        if let Err(e) = self.links.insert(&key, &params, 0) {
            if fresh {
                self.slots.give_back(index);
            }
            return Err(e.into());
        }
        self.installed.insert(key, index);
        Ok(index)
    }

    /// Removes a link with its state; its frames become unmatched (or unlinked, if strict).
    pub fn remove_link(&mut self, key: &LinkKey) -> Result<()> {
        let index = self
            .installed
            .remove(key)
            .ok_or(DatapathError::NoSuchLink(*key))?;
        self.links.remove(key)?;
        self.link_state.set(index, &LinkState::default(), 0)?;
        self.slots.give_back(index);
        Ok(())
    }

    pub fn links(&self) -> impl Iterator<Item = (&LinkKey, &u32)> {
        self.installed.iter()
    }

    pub fn link_params(&self, key: &LinkKey) -> Result<LinkParams> {
        Ok(self.links.get(key, 0)?)
    }

    /// Makes `mac` a node: `port` is its bridge port (host-side veth).
    pub fn upsert_node(&mut self, mac: [u8; 6], index: u32, port: u32) -> Result<()> {
        let info = NodeInfo {
            index,
            port_ifindex: port,
        };
        Ok(self.nodes.insert(&mac, &info, 0)?)
    }

    pub fn remove_node(&mut self, mac: &[u8; 6]) -> Result<()> {
        match self.nodes.remove(mac) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A link's counters, summed over CPUs.
    pub fn link_counters(&self, key: &LinkKey) -> Result<LinkCounters> {
        let index = *self
            .installed
            .get(key)
            .ok_or(DatapathError::NoSuchLink(*key))?;
        self.counters_at(index)
    }

    pub fn all_link_counters(&self) -> Result<Vec<(LinkKey, LinkCounters)>> {
        self.installed
            .iter()
            .map(|(k, &i)| Ok((*k, self.counters_at(i)?)))
            .collect()
    }

    fn counters_at(&self, index: u32) -> Result<LinkCounters> {
        self.counters.link(index)
    }

    pub fn global_counters(&self) -> Result<GlobalCounters> {
        self.counters.global()
    }

    /// Turns on the kernel's accounting of time spent in eBPF programs (`BPF_ENABLE_STATS`), for
    /// as long as the returned descriptor is open. It costs two clock reads per run, so only
    /// benchmarks use it.
    pub fn enable_run_stats() -> Result<std::os::fd::OwnedFd> {
        Ok(aya::sys::enable_stats(aya::sys::Stats::RunTime)?)
    }

    /// The egress classifier's run count and total run time so far (zero unless
    /// [`Datapath::enable_run_stats`] is in effect).
    pub fn run_stats(&self) -> Result<RunStats> {
        let info = self
            .ebpf
            .program(EGRESS_PROGRAM)
            .ok_or(DatapathError::Missing(EGRESS_PROGRAM))?
            .info()?;
        Ok(RunStats {
            run_time: info.run_time(),
            runs: info.run_count(),
        })
    }

    /// A reader of the counters for another task (telemetry).
    pub fn counter_reader(&self) -> Result<CounterReader> {
        self.counters.try_clone()
    }

    /// The counter slot of every installed link.
    pub fn slots(&self) -> impl Iterator<Item = (LinkKey, u32)> + '_ {
        self.installed.iter().map(|(k, &i)| (*k, i))
    }

    fn zero_counters(&self) -> Result<PerCpuValues<LinkCounters>> {
        PerCpuValues::try_from(vec![LinkCounters::default(); self.cpus])
            .map_err(DatapathError::Cpus)
    }
}

fn classifier<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut SchedClassifier> {
    Ok(ebpf
        .program_mut(name)
        .ok_or(DatapathError::Missing(name))?
        .try_into()?)
}
