//! `syncoder synth --config FILE`: run (or continue) a synthesis pipeline.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  syncoder synth --config configs/synth/stage1.toml
  OPENAI_API_KEY=... syncoder synth --config configs/synth/stage2.toml   # rerun after a kill: continues")]
pub struct SynthArgs {
    /// The synthesis config (TOML; docs/synth.md).
    #[arg(long)]
    pub config: PathBuf,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: SynthArgs) -> Result<()> {
    use std::io::IsTerminal;
    let cfg = crate::synth::SynthConfig::load(&args.config)?;
    let s = crate::synth::run(&cfg, !args.quiet && std::io::stderr().is_terminal())?;
    let dropped: u64 = s.dropped.values().sum();
    println!(
        "{} documents: {} records kept in {} shards under {}, {dropped} dropped (summary.md)",
        s.documents,
        s.kept,
        s.shards.len(),
        cfg.output.dir.join("shards").display()
    );
    Ok(())
}
