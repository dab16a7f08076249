//! Sharded training state in a data-parallel run (`train.optimizer_sharding`):
//!
//! - **ZeRO-1** (`"zero1"`): each rank keeps the AdamW moments (and fp32 masters) of only its
//!   share of every parameter — 1/W of the 12 bytes per parameter that are most of a full
//!   fine-tune's memory — updates that share after the gradient sum, and the ranks all-gather
//!   the updated parameters.
//! - **ZeRO-2** (`"zero2"`): the same, and the gradients are reduce-scattered instead of
//!   all-reduced, so each rank receives only its block of the summed gradient (half the bytes
//!   an all-reduce moves); the global gradient norm is the sum of the ranks' block norms.
//!
//! The numbers are those of plain data parallelism (AdamW is element-wise).
//!
//! A parameter of N elements, flattened, is cut into W blocks of ⌈N/W⌉ (the last ones short or
//! empty); rank r owns block r. Checkpoints keep the cut: every rank writes its blocks to
//! `training_state/optimizer-rank-R-of-W.safetensors`, and loading joins the W files back into
//! whole tensors, so a run resumes at any world size and with or without sharding (each rank
//! cuts its own share again).
//!
//! Not built: freeing the whole f32 gradient buffers bucket by bucket during the backward (the
//! memory half of ZeRO-2: each rank still accumulates its own micro-batches' gradients in
//! whole buffers, so "zero2" needs ZeRO-1's memory today), and loading only the blocks a rank
//! needs (each rank reads the whole state once at resume).

use crate::dist::Comm;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `train.optimizer_sharding`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerSharding {
    /// Every rank holds the whole optimizer state (plain data parallelism).
    #[default]
    None,
    /// Each rank holds the AdamW state of its share of every parameter.
    Zero1,
    /// Also the gradients: reduce-scattered, each rank receives its block of the sum.
    Zero2,
}

/// The block of a flattened parameter that one rank owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub start: usize,
    pub len: usize,
    /// Elements per block (⌈N/W⌉): the size every rank sends in the all-gather.
    pub block: usize,
    pub world: usize,
}

impl Shard {
    /// Rank `rank`'s block of `numel` elements over `world` ranks.
    pub fn of(numel: usize, rank: usize, world: usize) -> Self {
        let block = numel.div_ceil(world).max(1);
        let start = (rank * block).min(numel);
        let end = ((rank + 1) * block).min(numel);
        Self {
            start,
            len: end - start,
            block,
            world,
        }
    }

    /// This rank's block of `t` (flattened, a contiguous copy).
    pub fn take(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.flatten_all()?.narrow(0, self.start, self.len)?.contiguous()?)
    }

    /// This rank's block of the sum over the ranks of `whole` (a gradient, flattened and padded
    /// to W blocks for the reduce-scatter), f32. An overlapped collective: the block holds the
    /// sum after `comm.wait_async()`.
    pub fn scatter_sum(&self, whole: &Tensor, comm: &dyn Comm) -> Result<Tensor> {
        let flat = whole.flatten_all()?.to_dtype(DType::F32)?;
        let padded = self.block * self.world;
        let src = if flat.elem_count() == padded {
            flat.contiguous()?
        } else {
            let pad = Tensor::zeros(padded - flat.elem_count(), DType::F32, flat.device())?;
            Tensor::cat(&[&flat, &pad], 0)?
        };
        let mine = Tensor::zeros(self.block, DType::F32, flat.device())?;
        comm.reduce_scatter_sum_async(&src, &mine)?;
        Ok(mine.narrow(0, 0, self.len)?)
    }

    /// `param` ← every rank's block of the updated values, all-gathered (`mine`: this rank's
    /// block, f32).
    pub fn gather_into(&self, mine: &Tensor, param: &Tensor, comm: &dyn Comm) -> Result<()> {
        let src = if self.len == self.block {
            mine.contiguous()?
        } else {
            let pad = Tensor::zeros(self.block - self.len, DType::F32, mine.device())?;
            Tensor::cat(&[mine, &pad], 0)?
        };
        let all = Tensor::zeros(self.block * self.world, DType::F32, mine.device())?;
        comm.all_gather(&src, &all)?;
        let whole = all
            .narrow(0, 0, param.elem_count())?
            .reshape(param.shape())?
            .to_dtype(param.dtype())?;
        param.slice_set(&whole, 0, 0)?;
        Ok(())
    }
}

/// The optimizer-state file of rank `rank` of `world` in a checkpoint's training-state folder.
pub fn shard_file(training_dir: &Path, rank: usize, world: usize) -> PathBuf {
    training_dir.join(format!("optimizer-rank-{rank:05}-of-{world:05}.safetensors"))
}

/// The ranks' optimizer-state files of a checkpoint, joined into whole (flattened) tensors by
/// name, or `None` when the checkpoint has none. Every file of the world its names give must be
/// there, and hold the same tensor names.
pub fn read_shards(training_dir: &Path, device: &Device) -> Result<Option<HashMap<String, Tensor>>> {
    let Some(world) = shard_world(training_dir)? else {
        return Ok(None);
    };
    let mut parts: HashMap<String, Vec<Tensor>> = HashMap::new();
    for rank in 0..world {
        let path = shard_file(training_dir, rank, world);
        if !path.is_file() {
            bail!(
                "{}: missing — the checkpoint's optimizer state is cut in {world} and this part is gone",
                path.display()
            );
        }
        let tensors = candle_core::safetensors::load(&path, device)
            .with_context(|| format!("{}: corrupt optimizer shard", path.display()))?;
        if rank > 0 && tensors.len() != parts.len() {
            bail!(
                "{}: {} tensors where rank 0 wrote {}",
                path.display(),
                tensors.len(),
                parts.len()
            );
        }
        for (name, t) in tensors {
            if rank > 0 && !parts.contains_key(&name) {
                bail!("{}: tensor {name:?} that rank 0 did not write", path.display());
            }
            parts.entry(name).or_default().push(t);
        }
    }
    let mut out = HashMap::new();
    for (name, blocks) in parts {
        let refs: Vec<&Tensor> = blocks.iter().collect();
        out.insert(name, Tensor::cat(&refs, 0)?);
    }
    Ok(Some(out))
}

/// The world size W of the optimizer parts `optimizer-rank-R-of-W.safetensors` in a
/// checkpoint's training-state folder (`None`: there are none). Parts of two world sizes are an
/// error.
pub fn shard_world(training_dir: &Path) -> Result<Option<usize>> {
    let mut worlds = Vec::new();
    if training_dir.is_dir() {
        for e in std::fs::read_dir(training_dir).with_context(|| format!("listing {}", training_dir.display()))? {
            let name = e?.file_name().to_string_lossy().to_string();
            if let Some(world) = parse_shard_name(&name) {
                worlds.push(world);
            }
        }
    }
    let Some(&world) = worlds.first() else {
        return Ok(None);
    };
    if worlds.iter().any(|&w| w != world) {
        bail!(
            "{}: optimizer shards of different world sizes ({worlds:?})",
            training_dir.display()
        );
    }
    Ok(Some(world))
}

/// `optimizer-rank-R-of-W.safetensors` → W.
fn parse_shard_name(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("optimizer-rank-")?.strip_suffix(".safetensors")?;
    let (rank, world) = rest.split_once("-of-")?;
    rank.parse::<usize>().ok()?;
    world.parse().ok().filter(|&w: &usize| w > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_every_element_once() {
        for (numel, world) in [(10, 3), (7, 7), (3, 4), (1, 2), (896, 8)] {
            let shards: Vec<Shard> = (0..world).map(|r| Shard::of(numel, r, world)).collect();
            let mut next = 0;
            for s in &shards {
                assert_eq!(s.start, next.min(numel));
                assert!(s.len <= s.block);
                next = s.start + s.len;
            }
            assert_eq!(next, numel, "{numel} over {world}");
        }
        assert_eq!(Shard::of(3, 3, 4).len, 0);
    }

    #[test]
    fn shard_files_are_joined_in_rank_order_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let whole: Vec<f32> = (0..10).map(|i| i as f32).collect();
        for rank in 0..3 {
            let s = Shard::of(10, rank, 3);
            let t = Tensor::new(&whole[s.start..s.start + s.len], &Device::Cpu).unwrap();
            candle_core::safetensors::save(
                &HashMap::from([("exp_avg.w".to_string(), t)]),
                shard_file(dir.path(), rank, 3),
            )
            .unwrap();
        }
        let got = read_shards(dir.path(), &Device::Cpu).unwrap().unwrap();
        assert_eq!(got["exp_avg.w"].to_vec1::<f32>().unwrap(), whole);
        std::fs::remove_file(shard_file(dir.path(), 1, 3)).unwrap();
        let e = format!("{:#}", read_shards(dir.path(), &Device::Cpu).unwrap_err());
        assert!(
            e.contains("optimizer-rank-00001-of-00003") && e.contains("missing"),
            "{e}"
        );
    }
}
