//! A fake host for the Sim's unit tests: a runtime and a shaper that keep what they were
//! told in one shared [`World`], log every call in order, and fail on request, so tests can
//! check the apply order, the undo of a failed change and that the host always equals the
//! model, all without root.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{Arc, Mutex, MutexGuard},
};

use meshsim_common::{GlobalCounters, LinkCounters, LinkKey};
use tokio::sync::Semaphore;

use super::{
    HostError, NodeFacts, NodeRuntime, ReadCounters, Refusal, RouteChange, RunInfo, Shaper,
    ShaperCapacity,
};
use crate::{
    model::{HOST, LinkParams, NodeId},
    workload::NodeWorkload,
};

/// What the fake host holds.
#[derive(Debug, Default)]
pub struct World {
    /// Nodes the runtime made, with what they run and their port.
    pub nodes: BTreeMap<NodeId, (NodeWorkload, u32)>,
    /// Each node's routing table: destination -> next hop.
    pub routes: BTreeMap<NodeId, BTreeMap<NodeId, NodeId>>,
    /// Ports with the classifier.
    pub attached: BTreeSet<u32>,
    /// The datapath's nodes: MAC -> (id, port).
    pub known: BTreeMap<[u8; 6], (NodeId, u32)>,
    /// Directed links: key -> (destination port, parameters).
    pub links: BTreeMap<LinkKey, (u32, LinkParams)>,
    /// Every call, in order: `create n1`, `link n1>n2`, `routes n1`, `unlink n1>n2`, ...
    pub log: Vec<String>,
    /// Calls made so far, and the one that will fail (counted from 1).
    calls: u64,
    fail_at: Option<u64>,
    /// Calls whose name starts with this fail (once armed), e.g. `attach`.
    fail_named: Option<String>,
    next_port: u32,
    /// The runtime refuses ids above this (`admit`).
    pub max_id: u32,
}

/// The MAC the fake gives node `id`.
pub fn mac(id: NodeId) -> [u8; 6] {
    let [a, b, c, d] = id.0.to_be_bytes();
    [0x02, 0, a, b, c, d]
}

fn id_of(mac: &[u8; 6]) -> NodeId {
    NodeId(u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]))
}

impl World {
    pub fn new() -> Arc<Mutex<World>> {
        Arc::new(Mutex::new(World {
            next_port: 100,
            max_id: u32::MAX,
            ..World::default()
        }))
    }

    /// The call after `n` more calls fails (`n` = 0: the next one).
    pub fn fail_after(&mut self, n: u64) {
        self.fail_at = Some(self.calls + n + 1);
    }

    /// No call fails (unless asked again).
    pub fn disarm(&mut self) {
        self.fail_at = None;
        self.fail_named = None;
    }

    /// The next call whose name starts with `name` fails.
    pub fn fail_on(&mut self, name: &str) {
        self.fail_named = Some(name.to_owned());
    }

    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Logs a call, or fails it as asked.
    fn call(&mut self, what: String) -> Result<(), HostError> {
        self.calls += 1;
        let by_count = self.fail_at == Some(self.calls);
        let by_name = self
            .fail_named
            .as_deref()
            .is_some_and(|name| what.starts_with(name));
        if by_count || by_name {
            if by_count {
                self.fail_at = None;
            } else {
                self.fail_named = None;
            }
            self.log.push(format!("FAILED {what}"));
            return Err(HostError::new(format!("the fake host fails {what}")));
        }
        self.log.push(what);
        Ok(())
    }
}

fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|e| e.into_inner())
}

/// The runtime half. `gate`, when set, holds every `create_node` until a permit is added.
pub struct FakeRuntime {
    pub world: Arc<Mutex<World>>,
    pub gate: Option<Arc<Semaphore>>,
    /// Whether the host has client links (a port of its own, as netns has).
    pub host: bool,
}

/// The fake host's port.
pub const HOST_PORT: u32 = 9999;

impl NodeRuntime for FakeRuntime {
    fn run_info(&self) -> RunInfo {
        RunInfo {
            backend: "fake",
            workload: "none",
            database: None,
            profile: None,
            launch: None,
            ksm: false,
        }
    }

    fn host(&self) -> Option<NodeFacts> {
        self.host.then(|| NodeFacts {
            id: HOST,
            name: "host".into(),
            ip: std::net::Ipv4Addr::new(10, 77, 0, 1),
            mac: mac(HOST),
            port: HOST_PORT,
            workload: NodeWorkload::None,
        })
    }

    fn admit(&self, id: NodeId, _nodes: usize) -> Result<(), Refusal> {
        if id.0 > lock(&self.world).max_id {
            return Err(Refusal {
                node: Some(id),
                reason: format!("{id} does not fit"),
            });
        }
        Ok(())
    }

    async fn create_node(
        &mut self,
        id: NodeId,
        workload: NodeWorkload,
    ) -> Result<NodeFacts, HostError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("the gate stays open").forget();
        }
        let mut w = lock(&self.world);
        w.call(format!("create {id}"))?;
        assert!(!w.nodes.contains_key(&id), "{id} made twice");
        w.next_port += 1;
        let port = w.next_port;
        w.nodes.insert(id, (workload, port));
        w.routes.insert(id, BTreeMap::new());
        Ok(NodeFacts {
            id,
            name: id.name(),
            ip: Ipv4Addr::from(0x0a00_0000 + id.0),
            mac: mac(id),
            port,
            workload,
        })
    }

    async fn remove_node(&mut self, id: NodeId) -> Result<(), HostError> {
        let mut w = lock(&self.world);
        w.call(format!("remove {id}"))?;
        assert!(w.nodes.remove(&id).is_some(), "{id} removed but not there");
        w.routes.remove(&id);
        Ok(())
    }

    async fn set_routes(&mut self, id: NodeId, changes: &[RouteChange]) -> Result<(), HostError> {
        let mut w = lock(&self.world);
        w.call(format!("routes {id}"))?;
        let table = w.routes.get_mut(&id).expect("routes of a node that exists");
        for change in changes {
            match *change {
                RouteChange::Replace { dst, via } => {
                    table.insert(dst, via);
                }
                RouteChange::Delete { dst } => {
                    table.remove(&dst);
                }
            }
        }
        Ok(())
    }

    async fn shutdown(&mut self) -> Result<(), HostError> {
        let mut w = lock(&self.world);
        w.call("shutdown".to_owned())?;
        w.nodes.clear();
        w.routes.clear();
        Ok(())
    }
}

/// The datapath half.
pub struct FakeShaper {
    pub world: Arc<Mutex<World>>,
    pub capacity: ShaperCapacity,
}

impl FakeShaper {
    pub fn new(world: Arc<Mutex<World>>) -> Self {
        FakeShaper {
            world,
            capacity: ShaperCapacity {
                nodes: 4096,
                directed_links: 16384,
            },
        }
    }
}

fn pair(key: &LinkKey) -> String {
    format!("{}>{}", id_of(&key.src), id_of(&key.dst))
}

impl Shaper for FakeShaper {
    fn delays_enforced(&self) -> bool {
        true
    }

    fn capacity(&self) -> ShaperCapacity {
        self.capacity
    }

    async fn attach_port(&mut self, port: u32) -> Result<(), HostError> {
        let mut w = lock(&self.world);
        w.call(format!("attach {port}"))?;
        w.attached.insert(port);
        Ok(())
    }

    fn detach_port(&mut self, port: u32) -> Result<(), HostError> {
        let mut w = lock(&self.world);
        w.call(format!("detach {port}"))?;
        w.attached.remove(&port);
        Ok(())
    }

    fn upsert_node(&mut self, mac: [u8; 6], id: NodeId, port: u32) -> Result<(), HostError> {
        let mut w = lock(&self.world);
        w.call(format!("know {id}"))?;
        // Full as the kernel's NODES hash map is: a new key past its size fails (E2BIG).
        if !w.known.contains_key(&mac) && w.known.len() >= self.capacity.nodes {
            return Err(HostError::new(format!("NODES is full: no room for {id}")));
        }
        w.known.insert(mac, (id, port));
        Ok(())
    }

    fn remove_node(&mut self, mac: &[u8; 6]) -> Result<(), HostError> {
        let mut w = lock(&self.world);
        w.call(format!("forget {}", id_of(mac)))?;
        w.known.remove(mac);
        Ok(())
    }

    fn upsert_link(
        &mut self,
        key: LinkKey,
        port: u32,
        params: &LinkParams,
    ) -> Result<(), HostError> {
        let mut w = lock(&self.world);
        w.call(format!("link {}", pair(&key)))?;
        if !w.links.contains_key(&key) && w.links.len() >= self.capacity.directed_links {
            return Err(HostError::new(format!(
                "LINKS is full: no room for {}",
                pair(&key)
            )));
        }
        w.links.insert(key, (port, *params));
        Ok(())
    }

    fn remove_link(&mut self, key: &LinkKey) -> Result<(), HostError> {
        let mut w = lock(&self.world);
        w.call(format!("unlink {}", pair(key)))?;
        assert!(
            w.links.remove(key).is_some(),
            "{} removed but not there",
            pair(key)
        );
        Ok(())
    }

    fn link_slots(&self) -> Vec<(LinkKey, u32)> {
        lock(&self.world)
            .links
            .keys()
            .enumerate()
            .map(|(i, k)| (*k, i as u32))
            .collect()
    }

    fn link_counters(&self) -> Result<Vec<(LinkKey, LinkCounters)>, HostError> {
        Ok(lock(&self.world)
            .links
            .keys()
            .map(|k| (*k, LinkCounters::default()))
            .collect())
    }

    fn global_counters(&self) -> Result<GlobalCounters, HostError> {
        Ok(GlobalCounters::default())
    }

    fn counter_reader(&self) -> Result<Box<dyn ReadCounters>, HostError> {
        Ok(Box::new(NoCounters))
    }
}

struct NoCounters;

impl ReadCounters for NoCounters {
    fn link(&self, _slot: u32) -> Result<LinkCounters, HostError> {
        Ok(LinkCounters::default())
    }

    fn global(&self) -> Result<GlobalCounters, HostError> {
        Ok(GlobalCounters::default())
    }
}
