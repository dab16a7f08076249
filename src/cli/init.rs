//! `syncoder init`: write a randomly initialised model in Hugging Face layout.

use crate::device::Precision;
use crate::model::qwen2::SaveOptions;
use crate::model::{Qwen2, Qwen2Config};
use anyhow::{bail, Result};
use candle_core::{DType, Device};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InitArgs {
    /// A Hugging Face Qwen2 `config.json`.
    #[arg(long)]
    pub config: PathBuf,
    /// Output directory (created; must not already hold a model unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Random seed; the same seed and config always give the same weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// dtype of the written weights.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub dtype: Precision,
    /// Shard the weights above this many bytes.
    #[arg(long, default_value_t = crate::model::weights::DEFAULT_MAX_SHARD_BYTES)]
    pub max_shard_bytes: usize,
    /// Overwrite a model already in --out.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: InitArgs) -> Result<()> {
    let dtype = args.dtype.dtype();
    let config = Qwen2Config::from_file(&args.config)?;
    let has_model = ["config.json", "model.safetensors", "model.safetensors.index.json"]
        .iter()
        .any(|f| args.out.join(f).exists());
    if has_model && !args.force {
        bail!(
            "{} already holds a model; pass --force to overwrite it",
            args.out.display()
        );
    }
    let model = Qwen2::random(config, args.seed, DType::F32, &Device::Cpu, false)?;
    model.save(
        &args.out,
        &SaveOptions {
            dtype: Some(dtype),
            max_shard_bytes: args.max_shard_bytes,
        },
    )?;
    println!(
        "wrote a random Qwen2 model ({} parameters, {:?}, seed {}) to {}",
        model.config.num_parameters(),
        dtype,
        args.seed,
        args.out.display()
    );
    Ok(())
}
