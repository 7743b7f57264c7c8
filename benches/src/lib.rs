//! Benchmarks live in `benches/`; this crate only carries them.
