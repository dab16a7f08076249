//! The `syncoder` command line: argument definitions (clap derive) and dispatch. Each
//! subcommand lives in its own file and only parses options before calling the library.

mod arena;
mod bench;
mod ckpt;
mod compare;
mod data;
mod generate;
mod init;
mod loss;
mod selftest;
mod serve;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "syncoder",
    version,
    about = "Fine-tune and evaluate Qwen2.5-Coder-style code models"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a randomly initialised model in Hugging Face layout.
    Init(init::InitArgs),
    /// Commands over instruction data shards.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Print the mean loss of a model over data (JSON), with the training template and mask.
    Loss(loss::LossArgs),
    /// Fine-tune a model from a TOML run config (or resume a run).
    Train(train::TrainArgs),
    /// Generate a reply with a model (greedy or sampled; chat template unless --raw).
    Generate(generate::GenerateArgs),
    /// Serve a model over an OpenAI-compatible HTTP API (127.0.0.1 by default).
    Serve(serve::ServeArgs),
    /// CodeArena evaluation: answer, judge, report.
    #[command(subcommand)]
    Arena(arena::ArenaCommand),
    /// Did the fine-tune beat its base? Answers with both, judges tuned vs base, reports.
    Compare(compare::CompareArgs),
    /// Commands over checkpoints.
    #[command(subcommand)]
    Ckpt(ckpt::CkptCommand),
    /// Check every fused kernel against its CPU twin and run a training step (validates a GPU node).
    Selftest(selftest::SelftestArgs),
    /// Benchmarks that print a table (not tests).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init(args) => init::run(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Loss(args) => loss::run(args),
        Command::Train(args) => train::run_cmd(args),
        Command::Ckpt(cmd) => ckpt::run(cmd),
        Command::Generate(args) => generate::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Arena(cmd) => arena::run(cmd),
        Command::Compare(args) => compare::run(args),
        Command::Selftest(args) => selftest::run(args),
        Command::Bench(cmd) => bench::run(cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_subcommand_has_consistent_arguments() {
        Cli::command().debug_assert();
    }
}
