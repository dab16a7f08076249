//! `syncoder data ...`: commands over instruction shards.

use crate::data::validate::validate_sources;
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Check every record of the given shard files or directories; print each bad record as
    /// FILE:LINE: reason and exit non-zero if there is any.
    Validate(ValidateArgs),
    /// Train a small byte-level BPE tokenizer (with the ChatML special tokens) on chat-rendered
    /// records; writes tokenizer.json and tokenizer_config.json (with the chat template).
    TrainTokenizer(TrainTokenizerArgs),
}

#[derive(Args, Debug)]
pub struct TrainTokenizerArgs {
    /// Shard files or directories.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// Vocabulary size, special tokens included.
    #[arg(long, default_value_t = 2048)]
    pub vocab_size: usize,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Render records without the Qwen2.5 default system turn.
    #[arg(long)]
    pub no_default_system: bool,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Shard files (.jsonl, .jsonl.zst, .jsonl.gz) or directories holding them.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::TrainTokenizer(a) => {
            let system = (!a.no_default_system).then_some(crate::data::QWEN25_DEFAULT_SYSTEM);
            let tok = crate::data::tokenizer_train::train_tokenizer(&a.sources, a.vocab_size, system, &a.out)?;
            println!(
                "wrote a tokenizer of {} tokens to {}",
                tok.get_vocab_size(true),
                a.out.display()
            );
            Ok(())
        }
        DataCommand::Validate(args) => {
            let report = validate_sources(&args.sources, |file, line, msg| {
                if line == 0 {
                    println!("{}: {msg}", file.display());
                } else {
                    println!("{}:{line}: {msg}", file.display());
                }
            })?;
            println!(
                "{} records in {} files, {} bad",
                report.records, report.files, report.bad
            );
            if report.bad > 0 {
                bail!("{} bad records", report.bad);
            }
            Ok(())
        }
    }
}
