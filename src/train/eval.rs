//! Validation loss on a held-out source: the source packed exactly like training data (same
//! template, mask and row length), read once in order, loss summed over every supervised token
//! and divided by their count.

use super::step::MicroBatch;
use crate::data::loader::{Loader, LoaderConfig};
use crate::data::SampleBuilder;
use crate::model::Qwen2;
use anyhow::Result;
use std::path::PathBuf;
use std::sync::Arc;

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
        let mut loader = Loader::new(self.loader.clone(), self.files.clone(), builder.clone())?;
        let (mut sum, mut count, mut rows) = (0f64, 0usize, 0usize);
        while let Some(batch) = loader.next_batch()? {
            rows += batch.rows.len();
            let mb = MicroBatch::new(&batch, model.device())?;
            let out = model.loss(&mb.batch, &mb.targets)?;
            sum += out
                .loss_sum
                .detach()
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            count += out.supervised;
            if self.max_rows.is_some_and(|m| rows >= m) {
                break;
            }
        }
        Ok((count > 0).then(|| sum / count as f64))
    }
}
