//! The trainer: accumulation and the optimizer, the run config, what a run leaves, crash-safe
//! exact resume, and the `[arena]` hand-off during training.

#[path = "../common/mod.rs"]
mod common;

mod accumulation;
mod arena_handoff;
mod config;
mod data_parallel;
mod memory_plan;
mod resume;
mod run;
mod tiny_run;
