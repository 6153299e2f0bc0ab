//! Any sequence of model operations keeps the model's invariants (meshsim::fuzzing::model_ops).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshsim::fuzzing::model_ops::check(data));
