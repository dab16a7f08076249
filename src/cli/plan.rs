//! `syncoder plan`: the memory estimate of a run config (`train::memory_plan`).

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  syncoder plan --config configs/qwen2.5-coder-7b.toml                 # which cards it fits
  syncoder plan --config configs/qwen2.5-coder-0.5b.toml --set data.seq_len=8192 --gpu-memory-gib 80
  syncoder plan --config my.toml --model-config /models/custom/config.json
  syncoder plan --config configs/qwen2.5-coder-7b.toml --world-size 8   # per GPU: plain DP, ZeRO-1, ZeRO-2

Exit codes: 0 fits (or no size to check against); 2 does not fit the given memory; 1 error.")]
pub struct PlanArgs {
    /// The run config (see docs/config.md).
    #[arg(long)]
    pub config: PathBuf,
    /// Override a config key, as with `train` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// The model's config.json, when the config's model source has none locally (a Hub model
    /// other than the built-in Qwen2.5-Coder shapes).
    #[arg(long, value_name = "FILE")]
    pub model_config: Option<PathBuf>,
    /// Check against this much memory per process (GiB); default: a list of common cards for
    /// GPU runs, the machine's available memory for CPU runs.
    #[arg(long, value_name = "GIB")]
    pub gpu_memory_gib: Option<f64>,
    /// Also print the memory per rank of the run data-parallel over this many ranks (plain
    /// DP, ZeRO-1, ZeRO-2); the same as `--set run.world_size=W`.
    #[arg(long, value_name = "W")]
    pub world_size: Option<usize>,
}

pub fn run(args: PlanArgs) -> Result<()> {
    let mut sets = args.sets;
    if let Some(w) = args.world_size {
        sets.push(format!("run.world_size={w}"));
    }
    let fits = crate::train::memory_plan::run(&args.config, &sets, args.model_config.as_ref(), args.gpu_memory_gib)?;
    if !fits {
        std::process::exit(2);
    }
    Ok(())
}
