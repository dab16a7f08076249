//! syncoder: supervised fine-tuning and CodeArena evaluation of Qwen2.5-Coder-style models.
//!
//! The modules, bottom up; each imports only modules listed before it (the README's
//! architecture section has the table of allowed imports, and a test below checks it):
//!
//! - `io`: atomic files, the crash-safe JSONL log, SVG helpers, the progress bar.
//! - `config`: TOML + `--set` + `ConfigError`; each component owns its own section.
//! - `ops`: fused ops (CPU twin, CUDA launch, backward, composed reference and checks).
//! - `device`: which device and precision, opened and described; peaks and peak memory.
//! - `model`: the Qwen2 decoder in Hugging Face layout; packed batches; init; weights.
//! - `data`: shards → records → chat template + loss mask → packed rows; the loader.
//! - `dist`: a process's place in a multi-process job (rank, world, launcher).
//! - `infer`: generation (KV cache, batching, sampling) and the OpenAI-compatible server.
//! - `arena`: the CodeArena evaluator (answers, judge, scores, reports).
//! - `eval`: execution benchmarks (so far: the sandbox for untrusted programs).
//! - `synth`: making instruction data from web text with an OpenAI-compatible model.
//! - `train`: the trainer and the components it wires together.
//! - `tools`: `selftest` and `bench`.
//! - `cli`: the command line that `src/main.rs` parses and dispatches.

pub mod io;

pub mod config;

pub mod ops;

pub mod device;

pub mod model;

pub mod data;

pub mod dist;

pub mod infer;

pub mod arena;

pub mod eval;

pub mod synth;

pub mod train;

pub mod tools;

pub mod cli;

#[cfg(test)]
mod layering;
