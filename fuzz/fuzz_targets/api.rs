//! API requests through the real router on the fake host: no panic, no 5xx
//! (meshsim::fuzzing::api).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshsim::fuzzing::api::check(data));
