//! The datapath as the Sim's [`Shaper`]: model links become directed links in the maps.

use meshsim_common::{GlobalCounters, LinkCounters, LinkKey, MAX_LINKS, MAX_NODES};

use super::{CounterReader, Datapath, DatapathError, LinkShape};
use crate::{
    model::{LinkParams, NodeId},
    sim::{HostError, ReadCounters, Shaper, ShaperCapacity},
};

impl From<DatapathError> for HostError {
    fn from(e: DatapathError) -> Self {
        HostError::new(e)
    }
}

impl Shaper for Datapath {
    fn delays_enforced(&self) -> bool {
        self.enforces_delays()
    }

    fn capacity(&self) -> ShaperCapacity {
        ShaperCapacity {
            nodes: MAX_NODES as usize,
            directed_links: MAX_LINKS as usize,
        }
    }

    async fn attach_port(&mut self, port: u32) -> Result<(), HostError> {
        Ok(Datapath::attach_port(self, port).await?)
    }

    fn detach_port(&mut self, port: u32) -> Result<(), HostError> {
        Ok(self.detach_egress(port)?)
    }

    fn upsert_node(&mut self, mac: [u8; 6], id: NodeId, port: u32) -> Result<(), HostError> {
        Ok(Datapath::upsert_node(self, mac, id.0, port)?)
    }

    fn remove_node(&mut self, mac: &[u8; 6]) -> Result<(), HostError> {
        Ok(Datapath::remove_node(self, mac)?)
    }

    fn upsert_link(
        &mut self,
        key: LinkKey,
        port: u32,
        params: &LinkParams,
    ) -> Result<(), HostError> {
        Datapath::upsert_link(self, key, port, &LinkShape::from(params))?;
        Ok(())
    }

    fn remove_link(&mut self, key: &LinkKey) -> Result<(), HostError> {
        Ok(Datapath::remove_link(self, key)?)
    }

    fn link_slots(&self) -> Vec<(LinkKey, u32)> {
        self.slots().collect()
    }

    fn link_counters(&self) -> Result<Vec<(LinkKey, LinkCounters)>, HostError> {
        Ok(self.all_link_counters()?)
    }

    fn global_counters(&self) -> Result<GlobalCounters, HostError> {
        Ok(Datapath::global_counters(self)?)
    }

    fn counter_reader(&self) -> Result<Box<dyn ReadCounters>, HostError> {
        Ok(Box::new(Datapath::counter_reader(self)?))
    }
}

impl ReadCounters for CounterReader {
    fn link(&self, slot: u32) -> Result<LinkCounters, HostError> {
        Ok(CounterReader::link(self, slot)?)
    }

    fn global(&self) -> Result<GlobalCounters, HostError> {
        Ok(CounterReader::global(self)?)
    }
}
