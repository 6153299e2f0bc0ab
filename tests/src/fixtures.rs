//! Topologies the tiers use.

use std::path::{Path, PathBuf};

use meshsim::{model::Topology, topology_file};

/// `examples/` of the repository.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// `examples/mesh6.toml`: six nodes, n1 reaches n6 over three hops.
pub fn mesh6() -> Topology {
    example("mesh6.toml")
}

pub fn example(file: &str) -> Topology {
    topology_file::read(&examples_dir().join(file)).expect("an example topology")
}

/// Three nodes in a line, 100 px apart at 1 ms per px: n1 - n2 - n3 at 100 ms per link;
/// n1 and n3 are 200 ms apart, beyond `max_latency_ms`, so they are not linked and talk
/// through n2.
pub const LINE: &str = r#"
[settings]
max_latency_ms = 150.0
latency_scale_pct = 100.0
bandwidth_bps = 10_000_000

[[nodes]]
name = "n1"
x = 100
y = 100

[[nodes]]
name = "n2"
x = 200
y = 100

[[nodes]]
name = "n3"
x = 300
y = 100
"#;

pub fn line() -> Topology {
    topology_file::parse(Path::new("line.toml"), LINE).expect("the line parses")
}

/// Checks [`LINE`]'s promise in the model: 100 ms links n1 - n2 - n3, none between n1 and n3.
pub fn check_line(topology: &Topology) {
    use meshsim::model::Model;
    let model = Model::from_topology(topology).unwrap();
    let (n1, n2, n3) = (crate::id("n1"), crate::id("n2"), crate::id("n3"));
    for (a, b) in [(n1, n2), (n2, n3)] {
        assert_eq!(model.link(a, b).expect("linked").params.latency_ms, 100.0);
    }
    assert!(model.link(n1, n3).is_none(), "n1 and n3 must not be linked");
    assert_eq!(model.next_hop(n1, n3), Some(n2));
    assert_eq!(model.next_hop(n3, n1), Some(n2));
}

/// A square standing on a corner: n1 and n4 at opposite corners, 200 ms apart (beyond
/// `max_latency_ms`, so not linked), n2 above and n3 below; every side is 141 ms. n1 reaches
/// n4 over n2 or over n3 at the same cost; ties go through the lowest id, n2. n2 and n3 are
/// 200 ms apart too, so without n2 the only path is n1 - n3 - n4.
pub const SQUARE: &str = r#"
[settings]
max_latency_ms = 150.0
latency_scale_pct = 100.0
bandwidth_bps = 10_000_000

[[nodes]]
name = "n1"
x = 100
y = 200

[[nodes]]
name = "n2"
x = 200
y = 100

[[nodes]]
name = "n3"
x = 200
y = 300

[[nodes]]
name = "n4"
x = 300
y = 200
"#;

pub fn square() -> Topology {
    topology_file::parse(Path::new("square.toml"), SQUARE).expect("the square parses")
}
