//! `syncoder loss`: mean loss of a model over data, with the training path's template and mask.

use crate::data::sample::Overflow;
use crate::data::SampleBuilder;
use crate::model::Qwen2;
use crate::train::loss_eval::mean_loss;
use anyhow::Result;
use candle_core::{DType, Device};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct LossArgs {
    /// A Hugging Face model directory (config.json, weights, tokenizer.json, tokenizer_config.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Shard files or directories.
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Samples longer than this are truncated.
    #[arg(long, default_value_t = 4096)]
    pub max_seq_len: usize,
}

pub fn run(args: LossArgs) -> Result<()> {
    let model = Qwen2::load(&args.model, DType::F32, &Device::Cpu, false)?;
    let builder = SampleBuilder::from_dir(&args.model, args.max_seq_len, Overflow::Truncate)?;
    let report = mean_loss(&model, &builder, &args.data)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
