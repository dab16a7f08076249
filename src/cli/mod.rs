//! The `syncoder` command line: argument definitions (clap derive) and dispatch. Each
//! subcommand lives in its own file and only parses options before calling the library.

mod arena;
mod bench;
mod ckpt;
mod compare;
mod data;
mod endpoint;
mod exec_eval;
mod generate;
mod init;
mod launch;
mod loss;
mod plan;
mod selftest;
mod serve;
mod synth;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// `--version`: the crate version, the commit it was built from, and whether it has CUDA.
#[cfg(feature = "cuda")]
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SYNCODER_COMMIT"),
    "; features: cuda)"
);
#[cfg(not(feature = "cuda"))]
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SYNCODER_COMMIT"),
    "; features: none, CPU only)"
);

#[derive(Parser, Debug)]
#[command(
    name = "syncoder",
    version = VERSION,
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
    /// Start this node's ranks of a multi-GPU job (one per GPU, like torchrun) and supervise them.
    Launch(launch::LaunchArgs),
    /// Print the memory a run config needs (weights, gradients, AdamW, activations, peak) and
    /// whether it fits; reads no weights, downloads nothing.
    Plan(plan::PlanArgs),
    /// Generate a reply with a model (greedy or sampled; chat template unless --raw).
    Generate(generate::GenerateArgs),
    /// Serve a model over an OpenAI-compatible HTTP API (127.0.0.1 by default).
    Serve(serve::ServeArgs),
    /// CodeArena evaluation: answer, judge, report.
    #[command(subcommand)]
    Arena(arena::ArenaCommand),
    /// Execution benchmarks (HumanEval(+), MBPP(+), MultiPL-E): generate, run in a sandbox, pass@k.
    ExecEval(exec_eval::ExecEvalArgs),
    /// Make instruction data from code-related web text with an OpenAI-compatible model
    /// (recall, instruct, respond, validate, dedup, decontaminate); resumable.
    Synth(synth::SynthArgs),
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
        Command::Launch(args) => launch::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Ckpt(cmd) => ckpt::run(cmd),
        Command::Generate(args) => generate::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Arena(cmd) => arena::run(cmd),
        Command::ExecEval(args) => exec_eval::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Synth(args) => synth::run(args),
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

    /// Every flag and positional argument of every command says what it is.
    #[test]
    fn every_argument_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = vec![];
        walk(&Cli::command(), "syncoder", &mut missing);
        assert!(missing.is_empty(), "arguments without a description: {missing:#?}");
    }

    /// The main commands' --help ends with examples.
    #[test]
    fn main_commands_show_examples() {
        let cli = Cli::command();
        for path in [
            &["train"][..],
            &["generate"],
            &["serve"],
            &["compare"],
            &["arena", "answer"],
            &["arena", "judge"],
            &["data", "prepare"],
        ] {
            let mut cmd = &cli;
            for name in path {
                cmd = cmd.find_subcommand(name).unwrap();
            }
            let after = cmd.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(after.contains("Example"), "{path:?} has no examples");
        }
    }
}
