//! The `syncoder` command line: argument definitions (clap derive) and dispatch. Each
//! subcommand lives in its own file and only parses options before calling the library.

mod data;
mod init;
mod loss;

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
    /// Fine-tune a model (not built yet).
    Train {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        rest: Vec<String>,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init(args) => init::run(args),
        Command::Data(cmd) => data::run(cmd),
        Command::Loss(args) => loss::run(args),
        Command::Train { .. } => anyhow::bail!(
            "`syncoder train` is not built yet: this version has the model (`syncoder init`) only; \
             the trainer comes with the data path and trainer milestones"
        ),
    }
}
