//! The one evaluator of loss: Σ per-token loss over supervised tokens divided by their count,
//! with exactly the template, mask and model code of training. Two readers feed it: the
//! held-out source of `[eval]` packed like training data (validation during a run), and
//! `syncoder loss`, one unpacked sample per forward (what transformers computes per sample).

use super::step::MicroBatch;
use crate::config::{ensure, ConfigError};
use crate::data::loader::{Loader, LoaderConfig};
use crate::data::record::Record;
use crate::data::shard::{resolve_sources, ShardLines};
use crate::data::SampleBuilder;
use crate::model::{PackedBatch, Qwen2};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// `[eval]`: validation loss on a held-out source.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    pub data: Vec<PathBuf>,
    /// Evaluate every this many optimizer steps (and at the end).
    pub every_steps: u64,
    /// Evaluate at most this many packed rows (default: the whole source).
    pub max_rows: Option<usize>,
}

impl EvalConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(!self.data.is_empty(), "eval.data", || "give at least one source".into())?;
        ensure(self.every_steps > 0, "eval.every_steps", || "must be at least 1".into())
    }
}

/// A running sum of loss over supervised tokens.
#[derive(Clone, Copy, Debug, Default)]
struct LossSum {
    sum: f64,
    supervised: usize,
}

impl LossSum {
    /// Adds the loss of one forward pass.
    fn add(&mut self, model: &Qwen2, batch: &PackedBatch, targets: &Tensor) -> Result<()> {
        let out = model.loss(batch, targets)?;
        self.sum += out.loss_sum.detach().to_dtype(DType::F64)?.to_scalar::<f64>()?;
        out.check_targets()?;
        self.supervised += out.supervised;
        Ok(())
    }

    fn mean(&self) -> Option<f64> {
        (self.supervised > 0).then(|| self.sum / self.supervised as f64)
    }
}

/// A held-out source and how to read it.
pub struct Validation {
    pub files: Vec<PathBuf>,
    pub loader: LoaderConfig,
    pub max_rows: Option<usize>,
}

impl Validation {
    /// Mean loss over the source (or its first `max_rows` rows); `None` if it has no
    /// supervised token.
    pub fn loss(&self, model: &Qwen2, builder: &Arc<SampleBuilder>) -> Result<Option<f64>> {
        // Forward only: no backward state, no loss gradients.
        let model = &model.inference_view()?;
        let mut loader = Loader::new(self.loader.clone(), self.files.clone(), builder.clone())?;
        let (mut total, mut rows) = (LossSum::default(), 0usize);
        while let Some(batch) = loader.next_batch()? {
            rows += batch.rows.len();
            let mb = MicroBatch::new(&batch.rows, model.device())?;
            total.add(model, &mb.batch, &mb.targets)?;
            if self.max_rows.is_some_and(|m| rows >= m) {
                break;
            }
        }
        Ok(total.mean())
    }
}

/// What `syncoder loss` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LossReport {
    /// Mean cross-entropy over supervised tokens.
    pub loss: f64,
    pub supervised_tokens: usize,
    pub samples: usize,
}

/// Runs every record of `sources` through `builder` and `model`, one sample per forward.
pub fn mean_loss(model: &Qwen2, builder: &SampleBuilder, sources: &[PathBuf]) -> Result<LossReport> {
    let (mut total, mut samples) = (LossSum::default(), 0usize);
    for file in resolve_sources(sources)? {
        for line in ShardLines::open(&file)? {
            let line = line?;
            let record = Record::parse(&line.text).map_err(|e| anyhow!("{}:{}: {e}", file.display(), line.line))?;
            let built = builder
                .build_all(&record)
                .with_context(|| format!("{}:{}", file.display(), line.line))?;
            for sample in built.into_iter().flatten() {
                let batch = PackedBatch::single(&sample.ids, model.device())?;
                let targets = batch.next_token_targets(Some(&sample.mask))?;
                total.add(model, &batch, &targets)?;
                samples += 1;
            }
        }
    }
    let Some(loss) = total.mean() else {
        bail!("the data holds no supervised token");
    };
    Ok(LossReport {
        loss,
        supervised_tokens: total.supervised,
        samples,
    })
}
