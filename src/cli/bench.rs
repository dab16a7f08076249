//! `syncoder bench ...`: benchmarks that print a table (results go in BENCHMARKS.md, not tests).

use crate::device::{describe_device, DeviceSpec, Precision};
use crate::model::Qwen2Config;
use crate::tools::bench::{bench_train, table, TrainBenchOptions};
use crate::tools::bench_attention::{attention_table, bench_attention, AttentionBenchOptions};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time full training steps of a randomly initialised model (no download): tokens/s, MFU,
    /// peak memory, and the time of each op family.
    Train(BenchTrainArgs),
    /// Time the training attention alone (forward, backward, TFLOP/s) at one shape, for each
    /// implementation the device has (on CUDA: the flash kernel and the chunked cuBLAS path).
    Attention(BenchAttentionArgs),
}

#[derive(Args, Debug)]
pub struct BenchAttentionArgs {
    /// `cuda`, `cuda:N` or `cpu`.
    #[arg(long, default_value = "cuda")]
    pub device: DeviceSpec,
    /// Tokens per row (one causal document per row).
    #[arg(long, default_value_t = 4096)]
    pub seq_len: usize,
    /// Rows.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Query heads.
    #[arg(long, default_value_t = 16)]
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than --heads).
    #[arg(long, default_value_t = 16)]
    pub kv_heads: usize,
    /// Head dim (the flash kernel is built for 64 and 128).
    #[arg(long, default_value_t = 128)]
    pub head_dim: usize,
    /// Timed calls.
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Untimed calls first (at least one).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// `bf16` (the GPU default) or `f32` (the only CPU dtype).
    #[arg(long, value_enum)]
    pub dtype: Option<Precision>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    /// `cuda`, `cuda:N` or `cpu`.
    #[arg(long, default_value = "cuda")]
    pub device: DeviceSpec,
    /// A Hugging Face `config.json` of the model shape (e.g. configs/models/qwen2.5-coder-0.5b.json).
    #[arg(long)]
    pub model_config: PathBuf,
    /// Tokens per row.
    #[arg(long, default_value_t = 4096)]
    pub seq_len: usize,
    /// Rows per step (one micro-batch).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// `bf16` (the GPU default) or `f32` (the only CPU dtype).
    #[arg(long, value_enum)]
    pub dtype: Option<Precision>,
    /// The card's dense bf16 peak in TFLOP/s for MFU (default: looked up from its name).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Skip the per-op-family timings.
    #[arg(long)]
    pub no_op_times: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Train(a) => train(a),
        BenchCommand::Attention(a) => attention(a),
    }
}

fn attention(a: BenchAttentionArgs) -> Result<()> {
    let (device, dtype) = device_and_dtype(&a.device, a.dtype)?;
    if a.seq_len == 0 || a.batch == 0 || a.heads == 0 || a.head_dim == 0 || a.reps == 0 {
        bail!("--seq-len, --batch, --heads, --head-dim and --reps must be positive");
    }
    let label = describe_device(&device, &a.device.to_string());
    let opts = AttentionBenchOptions {
        device,
        device_label: label,
        dtype,
        seq_len: a.seq_len,
        batch: a.batch,
        heads: a.heads,
        kv_heads: a.kv_heads,
        head_dim: a.head_dim,
        warmup: a.warmup,
        reps: a.reps,
    };
    let report = bench_attention(&opts)?;
    print!("{}", attention_table(&report));
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The device of `--device` and the dtype of `--dtype` (bf16 on a GPU, f32 on the CPU by
/// default), or an error naming the option.
fn device_and_dtype(spec: &DeviceSpec, dtype: Option<Precision>) -> Result<(candle_core::Device, candle_core::DType)> {
    let device = spec.open().context("--device")?;
    let precision = dtype.unwrap_or(if device.is_cpu() {
        Precision::F32
    } else {
        Precision::Bf16
    });
    match precision.trainable_on(&device) {
        Ok(dtype) => Ok((device, dtype)),
        Err(why) => bail!("--dtype {precision}: {why}"),
    }
}

fn train(a: BenchTrainArgs) -> Result<()> {
    let (device, dtype) = device_and_dtype(&a.device, a.dtype)?;
    if a.seq_len == 0 || a.batch == 0 || a.steps == 0 {
        bail!("--seq-len, --batch and --steps must be positive");
    }
    let config = Qwen2Config::from_file(&a.model_config)
        .with_context(|| format!("--model-config {}", a.model_config.display()))?;
    let label = describe_device(&device, &a.device.to_string());
    let opts = TrainBenchOptions {
        device,
        device_label: label,
        dtype,
        config,
        seq_len: a.seq_len,
        batch: a.batch,
        warmup: a.warmup,
        steps: a.steps,
        peak_tflops: a.peak_tflops,
        op_times: !a.no_op_times,
    };
    let report = bench_train(&opts)?;
    print!("{}", table(&report));
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
