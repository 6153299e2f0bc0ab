//! Node names for nodes: there is no public DNS in the mesh, yet Synapse federates by server
//! name (`n3`), so every node must resolve every other node's name to its address.
//!
//! Two files, one per run, are bind-mounted over `/etc/hosts` and `/etc/resolv.conf` in each
//! node's own mount namespace (what `ip netns exec` does with `/etc/netns/NAME/`):
//!
//! - `hosts` lists every node. It is rewritten *in place* when nodes come and go: a bind
//!   mount pins the inode, so a new file renamed over it would go unseen by the nodes.
//! - `resolv.conf` names 127.0.0.1, where meshsim answers DNS inside each node (see `dns`).
//!   Synapse asks DNS for `_matrix-fed._tcp.<name>` SRV records before it connects, through
//!   its own resolver, which reads no hosts file for SRV; an unreachable nameserver (the
//!   host's, outside the node) makes that lookup fail with an error and the federation
//!   request with it. A quick "no such name" lets it fall back to `<name>:8448`.
//!
//! The same table answers the DNS questions, so a reader that catches the hosts file half
//! rewritten still gets the address from DNS.

use std::{
    collections::BTreeMap,
    fs::OpenOptions,
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
};

const HOSTS_HEADER: &str = "\
# meshsim: every node of this run, bind-mounted over /etc/hosts in each node.
# Rewritten in place as nodes come and go.
127.0.0.1\tlocalhost
";

const RESOLV_CONF: &str = "\
# meshsim: the mesh has no DNS server; meshsim answers on 127.0.0.1:53 inside each node,
# with node names and \"no such name\" for everything else.
nameserver 127.0.0.1
options timeout:1 attempts:1
";

/// The run's node names, shared by the hosts file and every node's DNS answerer.
#[derive(Clone, Debug)]
pub struct MeshNames {
    table: Arc<RwLock<BTreeMap<String, Ipv4Addr>>>,
    hosts: PathBuf,
    resolv: PathBuf,
}

impl MeshNames {
    /// Writes `hosts` (no nodes yet) and `resolv.conf` into `dir`.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        let names = MeshNames {
            table: Arc::default(),
            hosts: dir.join("hosts"),
            resolv: dir.join("resolv.conf"),
        };
        std::fs::write(&names.resolv, RESOLV_CONF)?;
        std::fs::write(&names.hosts, HOSTS_HEADER)?;
        Ok(names)
    }

    pub fn hosts_path(&self) -> &Path {
        &self.hosts
    }

    pub fn resolv_path(&self) -> &Path {
        &self.resolv
    }

    /// Adds (or moves) a name, and rewrites the hosts file.
    pub fn insert(&self, name: &str, ip: Ipv4Addr) -> std::io::Result<()> {
        let text = {
            let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
            table.insert(name.to_ascii_lowercase(), ip);
            hosts_text(&table)
        };
        self.rewrite(&text)
    }

    /// Removes a name, and rewrites the hosts file.
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        let text = {
            let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
            table.remove(&name.to_ascii_lowercase());
            hosts_text(&table)
        };
        self.rewrite(&text)
    }

    /// The address of a node name (any case, trailing dot or not).
    pub fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&name)
            .copied()
    }

    /// Same inode, new content, one write.
    fn rewrite(&self, text: &str) -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.hosts)?;
        file.write_all(text.as_bytes())
    }
}

fn hosts_text(table: &BTreeMap<String, Ipv4Addr>) -> String {
    let mut text = HOSTS_HEADER.to_owned();
    for (name, ip) in table {
        text.push_str(&format!("{ip}\t{name}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn the_hosts_file_follows_the_nodes_in_place() {
        let dir = std::env::temp_dir().join(format!("meshsim-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let names = MeshNames::create(&dir).unwrap();
        let inode = std::fs::metadata(names.hosts_path()).unwrap().ino();
        names.insert("n1", Ipv4Addr::new(10, 77, 0, 2)).unwrap();
        names.insert("n3", Ipv4Addr::new(10, 77, 0, 4)).unwrap();
        let text = std::fs::read_to_string(names.hosts_path()).unwrap();
        assert!(text.contains("10.77.0.2\tn1\n") && text.contains("10.77.0.4\tn3\n"));
        names.remove("n1").unwrap();
        let text = std::fs::read_to_string(names.hosts_path()).unwrap();
        assert!(!text.contains("\tn1\n") && text.contains("localhost"));
        assert_eq!(
            std::fs::metadata(names.hosts_path()).unwrap().ino(),
            inode,
            "rewritten, not replaced: bind mounts keep the inode"
        );
        assert_eq!(names.lookup("N3."), Some(Ipv4Addr::new(10, 77, 0, 4)));
        assert_eq!(names.lookup("n1"), None);
        let resolv = std::fs::read_to_string(names.resolv_path()).unwrap();
        assert!(resolv.contains("nameserver 127.0.0.1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
