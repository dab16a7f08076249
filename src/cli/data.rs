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
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Shard files (.jsonl, .jsonl.zst, .jsonl.gz) or directories holding them.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
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
