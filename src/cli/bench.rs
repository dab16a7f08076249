//! `syncoder bench ...`: benchmarks that print a table (results go in BENCHMARKS.md, not tests).

use crate::device::{describe_device, DeviceSpec, Precision};
use crate::model::Qwen2Config;
use crate::tools::bench::{bench_train, table, TrainBenchOptions};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time full training steps of a randomly initialised model (no download): tokens/s, MFU,
    /// peak memory, and the time of each op family.
    Train(BenchTrainArgs),
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
    }
}

fn train(a: BenchTrainArgs) -> Result<()> {
    let device = a.device.open().context("--device")?;
    let precision = a.dtype.unwrap_or(if device.is_cpu() {
        Precision::F32
    } else {
        Precision::Bf16
    });
    let dtype = match precision.trainable_on(&device) {
        Ok(dtype) => dtype,
        Err(why) => bail!("--dtype {precision}: {why}"),
    };
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
