//! syncoder: supervised fine-tuning and CodeArena evaluation of Qwen2.5-Coder-style models.
//!
//! `model` holds the training-grade Qwen2 decoder, `ops` the fused ops it runs on (each with its
//! own backward), `data` the path from shards to packed batches, `config` the run config,
//! `train` the trainer, `selftest` the kernel-vs-twin checks, `bench` the training-step
//! benchmark, `cli` the command-line front end that `src/main.rs` calls.

pub mod arena;
pub mod bench;
pub mod cli;
pub mod config;
pub mod data;
pub mod infer;
pub mod model;
pub mod ops;
pub mod selftest;
pub mod testing;
pub mod train;
