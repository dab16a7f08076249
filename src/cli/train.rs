//! `syncoder train`: runs or resumes a fine-tuning run from a TOML config.

use crate::train::{dry_run, print_summary, run, TrainOptions};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  syncoder train --config configs/smoke.toml                       # the CPU smoke fine-tune
  syncoder train --config configs/qwen2.5-coder-0.5b.toml --dry-run  # check everything, print the plan
  syncoder train --config configs/smoke.toml --set optim.lr=1e-4 --set stage.0.steps=100 --run-name lr1e-4
  syncoder train --config checkpoints/lr1e-4/run.toml --resume latest  # after Ctrl-C / pre-emption

Exit codes: 0 done; 1 failed; 130 / 143 stopped by SIGINT / SIGTERM with a checkpoint saved.
Config keys: docs/config.md; every key's resolved value: --dry-run.")]
pub struct TrainArgs {
    /// The run config (see docs/config.md), e.g. configs/smoke.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// Override a config key, e.g. `--set optim.lr=1e-4 --set stage.0.steps=100` (repeatable;
    /// `--set model.init_config=` removes an optional key).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Resume from `latest` (the run's newest checkpoint), a run directory or a step directory.
    #[arg(long, value_name = "latest|DIR")]
    pub resume: Option<String>,
    /// The run directory name under run.output_dir (overrides run.name).
    #[arg(long)]
    pub run_name: Option<String>,
    /// Resume even if keys that change the run's numbers differ from the checkpoint's, or into a
    /// --run-name directory that holds checkpoints of another run.
    #[arg(long)]
    pub force: bool,
    /// Load and check the config, data paths, tokenizer and model, print the resolved config and
    /// the plan (parameters, tokens per step, steps, run directory), and exit writing nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run_cmd(args: TrainArgs) -> Result<()> {
    let opts = TrainOptions {
        config: args.config,
        sets: args.sets,
        resume: args.resume,
        run_name: args.run_name,
        force: args.force,
        dry_run: args.dry_run,
    };
    if opts.dry_run {
        return dry_run(&opts);
    }
    let summary = run(opts)?;
    if summary.rank == 0 {
        print_summary(&summary);
    }
    Ok(())
}
