//! Client frames on /ws through the real session (meshsim::fuzzing::ws).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshsim::fuzzing::ws::check(data));
