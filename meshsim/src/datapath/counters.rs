//! Reading the classifier's per-CPU counters, from any task: a reader holds its own handles
//! to the counter maps, so telemetry can poll at 20 Hz without going through the Sim.

use std::os::fd::AsFd as _;

use aya::maps::{IterableMap as _, Map, MapData, MapError, PerCpuArray};
use meshsim_common::{LinkCounters, global};

use super::{GlobalCounters, Result};

pub struct CounterReader {
    links: PerCpuArray<MapData, LinkCounters>,
    global: PerCpuArray<MapData, u64>,
}

impl CounterReader {
    pub(super) fn new(
        links: PerCpuArray<MapData, LinkCounters>,
        global: PerCpuArray<MapData, u64>,
    ) -> Self {
        CounterReader { links, global }
    }

    /// Another reader of the same maps.
    pub fn try_clone(&self) -> Result<Self> {
        Ok(CounterReader {
            links: reopen(self.links.map())?,
            global: reopen(self.global.map())?,
        })
    }

    /// The counters of the link in `slot`, summed over CPUs.
    pub fn link(&self, slot: u32) -> Result<LinkCounters> {
        let mut sum = LinkCounters::default();
        for c in self.links.get(&slot, 0)?.iter() {
            sum.add(c);
        }
        Ok(sum)
    }

    pub fn global(&self) -> Result<GlobalCounters> {
        let slot = |i: u32| -> Result<u64> { Ok(self.global.get(&i, 0)?.iter().sum()) };
        Ok(GlobalCounters {
            unmatched_packets: slot(global::UNMATCHED_PACKETS)?,
            unmatched_bytes: slot(global::UNMATCHED_BYTES)?,
            unlinked_packets: slot(global::UNLINKED_PACKETS)?,
            unlinked_bytes: slot(global::UNLINKED_BYTES)?,
            clone_failed: slot(global::CLONE_FAILED)?,
            flooded_packets: slot(global::FLOODED_PACKETS)?,
        })
    }
}

pub(super) fn reopen<V: aya::Pod>(map: &MapData) -> Result<PerCpuArray<MapData, V>> {
    let fd = map.fd().as_fd().try_clone_to_owned().map_err(|e| {
        MapError::SyscallError(aya::sys::SyscallError {
            call: "dup",
            io_error: e,
        })
    })?;
    Ok(Map::PerCpuArray(MapData::from_fd(fd)?).try_into()?)
}
