//! The GPU suite (built only with the `cuda` feature; each test skips without a device).

#[path = "../common/mod.rs"]
mod common;

mod cuda_kernels;
