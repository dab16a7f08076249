//! The loader's resumable state, by reference: the position in the data (epoch, shard, line),
//! the shuffle RNG's position, counters, and *which* samples sit in the shuffle buffer, the
//! packer and the rows not yet emitted — as `SampleRef`s (shard, line, checksum), never as
//! token ids. Its size is a few small integers per buffered sample; restoring re-reads those
//! samples from their shards (`reread`).
//!
//! A batch's snapshot is a `StateDelta`: the shuffle buffer's changes since the previous batch
//! (samples taken out, samples added) and the small rest, so taking one costs O(samples moved),
//! not O(buffer). Whoever keeps the state after the last consumed batch (the trainer) applies
//! the deltas in order to the state it started from.

use super::loader::LoaderStats;
use super::pack::PackStrategy;
use super::sample_ref::{RefList, SampleRef};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything needed to continue exactly where a loader stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoaderState {
    pub files: Vec<PathBuf>,
    /// Packed row length and strategy the state was taken with (a resume must match them).
    pub seq_len: usize,
    pub pack: PackStrategy,
    /// The shuffle buffer, in its order.
    pub buffer: RefList,
    #[serde(flatten)]
    pub position: Position,
}

/// All of the state but the files, the packing settings and the shuffle buffer: small, and
/// sent whole with every batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub epoch: usize,
    /// Index into this epoch's shard order.
    pub shard_pos: usize,
    /// Lines (or prepared documents) already read from the current shard.
    pub line: usize,
    /// Samples already taken from the record after `line` (`data.mask = "per_turn"`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub part: usize,
    /// Position of the shuffle-buffer RNG stream (a u128, as a decimal string).
    pub rng_word_pos: String,
    /// Samples in the packer, not yet in a row.
    pub pending: RefList,
    /// Rows packed but not yet emitted, each as its samples in order.
    pub ready: Vec<RefList>,
    pub exhausted: bool,
    pub stats: LoaderStats,
}

/// One change to the shuffle buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferOp {
    /// `swap_remove` of this index.
    Take(usize),
    /// Appended at the end.
    Push(SampleRef),
}

/// The change of a loader's state over one batch: the buffer's changes, in order, and the
/// position after them.
#[derive(Clone, Debug, PartialEq)]
pub struct StateDelta {
    pub ops: Vec<BufferOp>,
    pub position: Position,
}

impl LoaderState {
    /// This state moved on by `d` (the delta of the batch that follows it).
    pub fn apply(&mut self, d: StateDelta) -> Result<()> {
        let buf = &mut self.buffer.0;
        for op in d.ops {
            match op {
                BufferOp::Take(i) if i < buf.len() => {
                    buf.swap_remove(i);
                }
                BufferOp::Take(i) => bail!(
                    "loader state delta takes buffer entry {i} of {} (deltas applied out of order?)",
                    buf.len()
                ),
                BufferOp::Push(r) => buf.push(r),
            }
        }
        self.position = d.position;
        Ok(())
    }

    /// Every sample the state names (buffer, packer, ready rows), possibly repeated.
    pub fn all_refs(&self) -> impl Iterator<Item = &SampleRef> {
        self.buffer
            .0
            .iter()
            .chain(&self.position.pending.0)
            .chain(self.position.ready.iter().flat_map(|r| &r.0))
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
