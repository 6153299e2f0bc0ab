//! Topology and scenario files: any bytes give a value or an error, never a panic; a topology
//! that parses is written back (`to_toml`) and parses to the same topology.

use std::path::Path;

use crate::{scenario, topology_file};

/// `meshsim up <file>`'s parser.
pub fn topology_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz.toml");
    let Ok(parsed) = topology_file::parse_file(path, &text) else {
        return;
    };
    let written = topology_file::to_toml(&parsed.topology);
    let again = topology_file::parse(path, &written)
        .unwrap_or_else(|e| panic!("a written topology does not parse: {e}\n{written}"));
    assert_eq!(
        again, parsed.topology,
        "a topology changed on its way through to_toml:\n{written}"
    );
}

/// `meshsim run <file>`'s (and `POST /api/scenario`'s) parser.
pub fn scenario_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = scenario::parse(Path::new("fuzz.toml"), &text);
}
