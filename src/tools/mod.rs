//! Tools that check or measure the library rather than train or evaluate with it: `selftest`
//! (every kernel against its CPU twin and a training step, on a device) and `bench` (the
//! training-step and attention benchmarks). They sit above `train`; nothing below imports them.

pub mod bench;
pub mod bench_attention;
pub mod selftest;
