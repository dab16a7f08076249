//! CodeArena evaluation: questions, model answers, the pairwise LLM judge (two games with
//! positions swapped), verdicts, CodeArena scores with bootstrap confidence intervals and a
//! Bradley–Terry win probability, and the reports.

pub mod answers;
pub mod evaluate;
pub mod games;
pub mod jsonl;
pub mod judge_client;
pub mod judge_prompt;
#[cfg(test)]
mod judge_test_server;
pub mod questions;
pub mod report;
pub mod score;
pub mod stats;
pub mod verdict;
