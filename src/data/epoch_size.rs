//! How many rows one epoch of prepared shards packs into, from the documents' lengths alone
//! (each shard's offsets index, never its tokens), following the loader's order exactly: the
//! seeded shard order, the shuffle buffer's draws, the packer. The LR schedule of a stage given
//! in `epochs` is sized from this instead of from a pass over the data; raw shards still need
//! that pass (their lengths are only known after tokenising).

use super::loader::{shard_order, LoaderConfig};
use super::pack::Packer;
use super::prepared::PreparedShard;
use super::reread::is_prepared;
use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

/// Rows of the first epoch of `files` under `cfg`, or `None` when a file is not a prepared
/// shard.
pub fn prepared_epoch_rows(cfg: &LoaderConfig, files: &[PathBuf]) -> Result<Option<u64>> {
    if files.is_empty() || !files.iter().all(|f| is_prepared(f)) {
        return Ok(None);
    }
    let mut lengths = shard_order(cfg, files.len(), 0)
        .into_iter()
        .map(|i| -> Result<Vec<u32>> { Ok(PreparedShard::open(&files[i])?.lengths()) });
    let mut current: std::vec::IntoIter<u32> = Vec::new().into_iter();
    let mut next_length = || -> Result<Option<u32>> {
        loop {
            if let Some(l) = current.next() {
                return Ok(Some(l));
            }
            match lengths.next() {
                Some(shard) => current = shard?.into_iter(),
                None => return Ok(None),
            }
        }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut packer: Packer<u32> = Packer::new(cfg.seq_len, cfg.pad_id, cfg.pack)?;
    let mut buffer: Vec<u32> = Vec::with_capacity(cfg.shuffle_buffer);
    let mut rows = 0u64;
    loop {
        while buffer.len() < cfg.shuffle_buffer {
            match next_length()? {
                Some(l) => buffer.push(l),
                None => break,
            }
        }
        if buffer.is_empty() {
            break;
        }
        let i = rng.random_range(0..buffer.len());
        rows += packer.push(buffer.swap_remove(i))?.len() as u64;
    }
    Ok(Some(rows + packer.finish().len() as u64))
}
