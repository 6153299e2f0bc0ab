//! meshsim's benchmarks live in `benches/` (`cargo xtask bench` runs them); this library is
//! empty, as cargo wants one target besides them.
