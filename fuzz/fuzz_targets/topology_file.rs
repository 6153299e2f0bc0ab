//! Any bytes as a topology file (meshsim::fuzzing::parsers::topology_file).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshsim::fuzzing::parsers::topology_file(data));
