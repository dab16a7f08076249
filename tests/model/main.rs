//! The model and its ops: every fused op against its composed reference (on the CPU, and on
//! CUDA when present), the Qwen2 decoder against transformers, packing, configs and weight
//! errors, and generation.

#[path = "../common/mod.rs"]
mod common;

mod explicit_step;
mod generation;
mod model_configs;
mod model_errors;
mod ops;
mod packing;
mod parity;
