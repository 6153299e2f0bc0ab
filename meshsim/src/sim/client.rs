//! The host's client links in the Sim: the host joins the datapath as [`HOST`] when the
//! runtime has a port for it, every node gets its two directed client links (host -> node,
//! node -> host) with the node's settings or the default, and a settings change rewrites
//! them, all or nothing.

use super::{NodeRuntime, Refusal, Shaper, Sim, SimError};
use crate::model::{ClientLink, ClientLinks, HOST, ModelError, NodeId};

impl<R: NodeRuntime, S: Shaper> Sim<R, S> {
    /// Puts the host into the datapath when the runtime has a port for it: the classifier
    /// on its port, its MAC known. Without it (a failure is logged) the host's traffic
    /// passes unshaped, as before client links.
    pub(super) async fn join_host(&mut self) {
        let Some(host) = self.runtime.host() else {
            return;
        };
        if let Err(e) = self.shaper.attach_port(host.port).await {
            tracing::error!("the host's client links cannot be shaped: {e}");
            return;
        }
        if let Err(e) = self.shaper.upsert_node(host.mac, HOST, host.port) {
            tracing::error!("the host's client links cannot be shaped: {e}");
            let _ = self.shaper.detach_port(host.port);
            return;
        }
        self.host = Some(host);
        self.publish();
    }

    /// Writes `node`'s two client links with `link`; on a failure, what was written is put
    /// back as `was`.
    pub(super) fn write_client(
        &mut self,
        node: NodeId,
        link: &ClientLink,
        was: Option<&ClientLink>,
    ) -> Result<(), SimError> {
        let (up, down) = link.directions();
        self.set_link(HOST, node, &up)?;
        if let Err(e) = self.set_link(node, HOST, &down) {
            match was {
                Some(was) => {
                    let _ = self.set_link(HOST, node, &was.directions().0);
                }
                None => {
                    if let Some(key) = self.key(HOST, node) {
                        let _ = self.shaper.remove_link(&key);
                    }
                }
            }
            return Err(e);
        }
        Ok(())
    }

    fn needs_host(&self) -> Result<(), SimError> {
        if self.host.is_none() {
            return Err(SimError::Refused(Refusal {
                node: None,
                reason: format!(
                    "this run has no client links: the {} backend has no shaped link to the \
                     host (use --backend netns)",
                    self.runtime.run_info().backend
                ),
            }));
        }
        Ok(())
    }

    pub(super) fn set_client(
        &mut self,
        id: NodeId,
        link: Option<ClientLink>,
    ) -> Result<(), SimError> {
        self.needs_host()?;
        if self.model.node(id).is_none() {
            return Err(SimError::Model(ModelError::UnknownNode(id)));
        }
        let mut new = self.clients.clone();
        match link {
            Some(link) => {
                link.validate()?;
                new.nodes.insert(id, link);
            }
            None => new.forget(id),
        }
        self.replace_clients(new)
    }

    pub(super) fn set_client_default(&mut self, link: ClientLink) -> Result<(), SimError> {
        self.needs_host()?;
        link.validate()?;
        let mut new = self.clients.clone();
        new.default = link;
        self.replace_clients(new)
    }

    /// Whether a loaded document's client links can be had: it sets none, or the host has
    /// client links (checked before the load, so a refused document changes nothing).
    pub(super) fn admit_clients(&self, clients: &ClientLinks) -> Result<(), SimError> {
        if *clients == ClientLinks::default() {
            return Ok(());
        }
        self.needs_host()
    }

    /// Makes every node's client links what `new` says, all or nothing, and publishes.
    pub(super) fn replace_clients(&mut self, mut new: ClientLinks) -> Result<(), SimError> {
        let model = &self.model;
        new.nodes.retain(|id, _| model.node(*id).is_some());
        if self.host.is_some() {
            let old = self.clients.clone();
            let changed: Vec<NodeId> = self
                .facts
                .keys()
                .copied()
                .filter(|&id| old.of(id) != new.of(id))
                .collect();
            for (i, &id) in changed.iter().enumerate() {
                if let Err(e) = self.write_client(id, &new.of(id), Some(&old.of(id))) {
                    // The nodes already changed go back as they were.
                    for &done in &changed[..i] {
                        let _ = self.write_client(done, &old.of(done), Some(&new.of(done)));
                    }
                    return Err(e);
                }
            }
        }
        self.clients = new;
        self.publish();
        Ok(())
    }
}
