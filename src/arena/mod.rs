//! CodeArena evaluation: questions, model answers, the pairwise LLM judge (two games with
//! positions swapped), verdicts, CodeArena scores with bootstrap confidence intervals and a
//! Bradley–Terry win probability, and the reports. `config` is a run's `[arena]` table and
//! `judge_settings` the judge's settings, shared by that table and the `--judge-*` flags.

pub mod answers;
pub mod config;
pub mod evaluate;
pub mod games;
pub mod interchange;
pub mod judge_client;
pub mod judge_config;
pub mod judge_prompt;
pub mod judge_settings;
#[cfg(test)]
mod judge_test_server;
pub mod official_files;
pub mod protocol;
pub mod questions;
pub mod report;
pub mod score;
pub mod stats;
pub mod verdict;

pub use config::{ArenaConfig, RunOpponent};
pub use judge_settings::JudgeSettings;
