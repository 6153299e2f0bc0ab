//! Any bytes as a scenario file (meshsim::fuzzing::parsers::scenario_file).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshsim::fuzzing::parsers::scenario_file(data));
