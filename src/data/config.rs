//! `[data]` of a run config: how records become rows (sample length, overflow, packing) and the
//! order they are read in (shuffling, prefetch). The section builds the loader settings of a
//! stage; `train::RunConfig` only composes it.

use super::loader::{LoaderConfig, OnBadRecord};
use super::mask_policy::MaskPolicy;
use super::pack::PackStrategy;
use super::sample::Overflow;
use crate::config::{ensure, ConfigError};
use serde::{Deserialize, Serialize};

/// How samples are packed into rows (`data.pack`; `best_fit` considers `data.pack_window`
/// samples together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackKind {
    BestFit,
    Greedy,
}

/// `[data]`: tokenisation, packing and the data order.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Tokens per packed row.
    pub seq_len: usize,
    /// Longest sample (default: `seq_len`).
    pub max_seq_len: Option<usize>,
    /// `truncate` or `drop` samples longer than `max_seq_len`.
    pub overflow: Overflow,
    /// Which text is trained on: `auto`, `generation`, `prefix`, `last_assistant_turn` or
    /// `per_turn` (`mask_policy`).
    pub mask: MaskPolicy,
    /// `best_fit` or `greedy`.
    pub pack: PackKind,
    /// Samples considered together by `best_fit`.
    pub pack_window: usize,
    pub shuffle_buffer: usize,
    pub shuffle_shards: bool,
    /// `fail` or `skip` on a malformed record.
    pub on_bad_record: OnBadRecord,
    /// Batches prepared ahead on a background thread.
    pub prefetch: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            seq_len: 2048,
            max_seq_len: None,
            overflow: Overflow::Truncate,
            mask: MaskPolicy::Auto,
            pack: PackKind::BestFit,
            pack_window: 64,
            shuffle_buffer: 10_000,
            shuffle_shards: true,
            on_bad_record: OnBadRecord::Fail,
            prefetch: 4,
        }
    }
}

impl DataConfig {
    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.seq_len >= 2, "data.seq_len", || "must be at least 2".into())?;
        if let Some(max) = self.max_seq_len {
            ensure(max > 0 && max <= self.seq_len, "data.max_seq_len", || {
                format!("{max} must be in 1..=data.seq_len ({})", self.seq_len)
            })?;
        }
        ensure(
            self.pack == PackKind::Greedy || self.pack_window > 0,
            "data.pack_window",
            || "must be at least 1".into(),
        )?;
        ensure(self.shuffle_buffer > 0, "data.shuffle_buffer", || {
            "must be at least 1 (1 means no shuffling)".into()
        })
    }

    /// The longest sample kept whole.
    pub fn max_sample_len(&self) -> usize {
        self.max_seq_len.unwrap_or(self.seq_len)
    }

    pub fn pack_strategy(&self) -> PackStrategy {
        match self.pack {
            PackKind::Greedy => PackStrategy::Greedy,
            PackKind::BestFit => PackStrategy::BestFit {
                window: self.pack_window,
            },
        }
    }

    /// The loader settings of a stage: `seed` orders its data, `rows_per_batch` rows make a
    /// batch, `pad_id` fills the rows' ends, and the loader stops after `max_epochs` passes.
    pub fn loader(&self, seed: u64, rows_per_batch: usize, pad_id: u32, max_epochs: Option<usize>) -> LoaderConfig {
        LoaderConfig {
            seed,
            shuffle_shards: self.shuffle_shards,
            shuffle_buffer: self.shuffle_buffer,
            seq_len: self.seq_len,
            rows_per_batch,
            pack: self.pack_strategy(),
            pad_id,
            on_bad_record: self.on_bad_record,
            max_epochs,
        }
    }
}
