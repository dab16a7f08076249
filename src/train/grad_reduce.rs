//! How a data-parallel step combines its gradients over the ranks: bucket by bucket — a
//! decoder layer's gradients as soon as the last micro-batch's backward has finished that
//! layer, the rest (final norm, output projection, embedding) after the backward — through the
//! communicator's overlapped collectives, so on GPUs a layer's reduction runs on NCCL's own
//! stream while the backward of the layers below it goes on. `finish` reduces what the
//! backward did not reach (every bucket, on a rank with no micro-batch in this step) and waits.
//!
//! Every rank issues the same collectives in the same order — layers from the last down, then
//! the rest — whichever micro-batches it computed, as collectives require.
//!
//! Plain data parallelism and ZeRO-1 sum each gradient whole (all-reduce); ZeRO-2
//! reduce-scatters it, and each rank gets only its block of the sum.

use super::data_parallel::DataParallel;
use super::zero::Shard;
use anyhow::{Context, Result};
use candle_core::Tensor;

/// One step's reduction in progress.
pub struct GradReduce<'a> {
    dp: &'a DataParallel,
    /// The f32 gradient buffers by name, in update order.
    grads: &'a [(String, Tensor)],
    /// Indices into `grads` of each decoder layer's parameters, and of the others.
    layers: Vec<Vec<usize>>,
    rest: Vec<usize>,
    /// ZeRO-2: this rank's block of every parameter, and the blocks received so far.
    shards: Option<Vec<Shard>>,
    blocks: Vec<Option<Tensor>>,
    reduced: Vec<bool>,
    /// Whether there is anything to reduce (several ranks, or ZeRO-2 in a launch of one).
    active: bool,
}

/// The decoder layer a parameter name belongs to (`model.layers.{l}.…`).
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?.split('.').next()?.parse().ok()
}

impl<'a> GradReduce<'a> {
    /// The reduction of `grads` (named, in update order) for a model of `num_layers` layers;
    /// `shards`: ZeRO-2's blocks (else every gradient is summed whole).
    pub fn new(
        dp: &'a DataParallel,
        grads: &'a [(String, Tensor)],
        num_layers: usize,
        shards: Option<Vec<Shard>>,
    ) -> Self {
        let active = dp.world > 1 || shards.is_some();
        let mut layers = vec![Vec::new(); num_layers];
        let mut rest = Vec::new();
        // One process: nothing to reduce, nothing to sort into buckets.
        for (i, (name, _)) in grads.iter().enumerate().filter(|_| active) {
            match layer_of(name).filter(|&l| l < num_layers) {
                Some(l) => layers[l].push(i),
                None => rest.push(i),
            }
        }
        Self {
            dp,
            grads,
            blocks: vec![None; if shards.is_some() { grads.len() } else { 0 }],
            reduced: vec![false; num_layers],
            layers,
            rest,
            shards,
            active,
        }
    }

    fn reduce(&mut self, idx: &[usize]) -> Result<()> {
        let comm = self.dp.comm();
        for &i in idx {
            let g = &self.grads[i].1;
            match &self.shards {
                Some(s) => self.blocks[i] = Some(s[i].scatter_sum(g, comm)?),
                None => comm.all_reduce_sum_async(g)?,
            }
        }
        Ok(())
    }

    /// Layer `l`'s gradients are final on this rank: start their reduction.
    pub fn layer_done(&mut self, l: usize) -> Result<()> {
        if !self.active || self.reduced.get(l).copied().unwrap_or(true) {
            return Ok(());
        }
        let idx = std::mem::take(&mut self.layers[l]);
        let dp = self.dp;
        let _w = dp.watch("reducing a layer's gradients");
        self.reduce(&idx)
            .with_context(|| format!("reducing layer {l}'s gradients over {} ranks", self.dp.world))?;
        self.reduced[l] = true;
        Ok(())
    }

    /// Reduces every bucket not reduced yet, in the common order, and waits for all: the
    /// buffers then hold the summed gradients (plain, ZeRO-1), or the returned blocks are this
    /// rank's block of each (ZeRO-2).
    pub fn finish(mut self) -> Result<Option<Vec<Tensor>>> {
        if !self.active {
            return Ok(None);
        }
        for l in (0..self.layers.len()).rev() {
            self.layer_done(l)?;
        }
        let rest = std::mem::take(&mut self.rest);
        let dp = self.dp;
        let _w = dp.watch("reducing the gradients");
        self.reduce(&rest)
            .with_context(|| format!("reducing the gradients over {} ranks", self.dp.world))?;
        self.dp
            .comm()
            .wait_async()
            .context("waiting for the gradient reduction")?;
        match self.shards {
            Some(_) => Ok(Some(
                self.blocks
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| b.with_context(|| format!("gradient {i} was not reduced")))
                    .collect::<Result<Vec<_>>>()?,
            )),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::layer_of;

    #[test]
    fn parameters_fall_in_their_layers_bucket() {
        assert_eq!(layer_of("model.layers.11.self_attn.q_proj.weight"), Some(11));
        assert_eq!(layer_of("model.layers.0.mlp.up_proj.weight"), Some(0));
        assert_eq!(layer_of("model.norm.weight"), None);
        assert_eq!(layer_of("lm_head.weight"), None);
        assert_eq!(layer_of("model.embed_tokens.weight"), None);
    }
}
