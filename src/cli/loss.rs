//! `syncoder loss`: mean loss of a model over data, with the training path's template and mask.

use crate::data::mask_policy::MaskPolicy;
use crate::data::sample::Overflow;
use crate::data::SampleBuilder;
use crate::infer::model_ref::tokenizer_dir;
use crate::infer::{locate_model, InferDevice};
use crate::model::Qwen2;
use crate::train::loss_eval::mean_loss;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct LossArgs {
    /// The model: a model or checkpoint step directory, a run directory (its latest checkpoint),
    /// or a Hugging Face Hub id (from the HF cache).
    #[arg(long)]
    pub model: String,
    /// A directory with tokenizer.json and tokenizer_config.json (default: the model's).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub device: InferDevice,
    /// Shard files or directories.
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Samples longer than this are truncated.
    #[arg(long, default_value_t = 4096)]
    pub max_seq_len: usize,
    /// Which text the loss is taken over (a run's data.mask; see docs/data-format.md).
    #[arg(long, value_enum, default_value_t = MaskPolicy::Auto)]
    pub mask: MaskPolicy,
}

pub fn run(args: LossArgs) -> Result<()> {
    let dir = locate_model(&args.model)?;
    let tok = tokenizer_dir(&dir, args.tokenizer.as_deref())?;
    let (device, dtype) = args.device.open()?;
    let model = Qwen2::load(&dir, dtype, &device, false).with_context(|| format!("loading {}", dir.display()))?;
    let builder = SampleBuilder::from_dir(&tok, args.max_seq_len, Overflow::Truncate)?.with_mask(args.mask);
    let report = mean_loss(&model, &builder, &args.data)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
