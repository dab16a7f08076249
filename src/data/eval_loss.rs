//! Mean next-token loss of a model over a data source, computed with exactly the template, mask
//! and model code of training (what `syncoder loss` prints).

use super::record::Record;
use super::sample::SampleBuilder;
use super::shard::{resolve_sources, ShardLines};
use crate::model::{PackedBatch, Qwen2};
use anyhow::{anyhow, Result};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LossReport {
    /// Mean cross-entropy over supervised tokens.
    pub loss: f64,
    pub supervised_tokens: usize,
    pub samples: usize,
}

/// Runs every record of `sources` through `builder` and `model`, one sample per forward.
pub fn mean_loss(model: &Qwen2, builder: &SampleBuilder, sources: &[PathBuf]) -> Result<LossReport> {
    let (mut sum, mut tokens, mut samples) = (0f64, 0usize, 0usize);
    for file in resolve_sources(sources)? {
        for line in ShardLines::open(&file)? {
            let line = line?;
            let record = Record::parse(&line.text).map_err(|e| anyhow!("{}:{}: {e}", file.display(), line.line))?;
            let Ok(sample) = builder.build(&record)? else { continue };
            let batch = PackedBatch::single(&sample.ids, model.device())?;
            let targets = batch.next_token_targets(Some(&sample.mask))?;
            let out = model.loss(&batch, &targets)?;
            sum += out.loss_sum.to_scalar::<f32>()? as f64;
            tokens += out.supervised;
            samples += 1;
        }
    }
    if tokens == 0 {
        anyhow::bail!("the data holds no supervised token");
    }
    Ok(LossReport {
        loss: sum / tokens as f64,
        supervised_tokens: tokens,
        samples,
    })
}
