//! The gradients of one optimizer step over its micro-batches. The loss of the step is the sum
//! of per-token losses over every supervised token of all micro-batches divided by their total
//! count, so accumulating k micro-batches gives the gradients of one batch k times larger (not
//! a mean of per-micro-batch means).

use crate::data::pack::PackedRow;
use crate::model::training::{Checkpointing, GradBuffers};
use crate::model::{PackedBatch, Qwen2};
use crate::ops::{device_calls, IGNORE_INDEX};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};

/// Host counts of a micro-batch's rows (every rank knows them for every micro-batch of a step).
#[derive(Clone, Copy, Debug, Default)]
pub struct RowCounts {
    /// Targets that carry loss.
    pub supervised: usize,
    /// Row tokens (padding included).
    pub tokens: usize,
    pub padding: usize,
}

/// Packed rows on the device (the model's view: ids, positions, document segments) with their
/// next-token targets. This is where the data path's rows become model input.
pub struct MicroBatch {
    pub batch: PackedBatch,
    pub targets: Tensor,
    /// Targets that carry loss.
    pub supervised: usize,
    /// Row tokens (padding included).
    pub tokens: usize,
    pub padding: usize,
}

impl MicroBatch {
    pub fn counts(&self) -> RowCounts {
        RowCounts {
            supervised: self.supervised,
            tokens: self.tokens,
            padding: self.padding,
        }
    }

    pub fn new(rows: &[PackedRow], device: &Device) -> Result<Self> {
        let ids: Vec<u32> = rows.iter().flat_map(|r| r.ids.iter().copied()).collect();
        let positions: Vec<u32> = rows.iter().flat_map(|r| r.positions.iter().copied()).collect();
        let mask: Vec<bool> = rows.iter().flat_map(|r| r.mask.iter().copied()).collect();
        let batch = PackedBatch::new(ids, positions, rows.len(), device)?;
        // Counted on the host, before the targets go to the device.
        let ids = batch.next_token_target_ids(Some(&mask))?;
        let supervised = ids.iter().filter(|&&t| t != IGNORE_INDEX).count();
        let targets = Tensor::new(ids.as_slice(), device)?;
        Ok(Self {
            tokens: rows.iter().map(|r| r.ids.len()).sum(),
            padding: rows.iter().map(|r| r.padding()).sum(),
            batch,
            targets,
            supervised,
        })
    }
}

/// Summed gradients of a step, in the model's variable order (f32 from the explicit step).
pub struct StepGradients {
    pub grads: Vec<Tensor>,
    /// Σ per-token loss over the step's supervised tokens.
    pub loss_sum: f64,
    pub supervised: usize,
}

impl StepGradients {
    /// The step's loss: mean over its supervised tokens.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.supervised.max(1) as f64
    }
}

/// The step's gradients through the explicit training step (`model::training`) into fresh
/// f32 buffers: see `step_gradients_into`.
pub fn step_gradients(
    model: &Qwen2,
    micros: &[MicroBatch],
    loss_factor: f64,
    before_micro: &mut dyn FnMut(usize),
) -> Result<StepGradients> {
    let grads = GradBuffers::new(&model.config, model.device())?;
    step_gradients_into(model, &grads, micros, loss_factor, Checkpointing::None, before_micro)
}

/// Forward and backward of every micro-batch through the explicit step, each loss scaled by
/// `loss_factor / (the step's total supervised count)`, the gradients summed in place in the
/// f32 buffers `grads` (zeroed first; the trainer allocates them once). `loss_factor` is 1 in
/// training (the fault injection of tests uses NaN). `before_micro(i)` runs before micro-batch
/// `i`. The returned gradients are the f32 buffers themselves (valid until the next call).
pub fn step_gradients_into(
    model: &Qwen2,
    grads: &GradBuffers,
    micros: &[MicroBatch],
    loss_factor: f64,
    checkpointing: Checkpointing,
    before_micro: &mut dyn FnMut(usize),
) -> Result<StepGradients> {
    let total: usize = micros.iter().map(|m| m.supervised).sum();
    share_gradients_into(
        model,
        grads,
        micros,
        total,
        loss_factor,
        checkpointing,
        before_micro,
        &mut |_| Ok(()),
    )
}

/// One rank's share of a data-parallel step: like `step_gradients_into` over this rank's
/// micro-batches, each loss divided by `total`, the step's supervised tokens over all ranks, so
/// that the sum of every rank's buffers is the step's gradient. `loss_sum` is this rank's part
/// and `supervised` is `total`. `last_layer_done(l)` runs when the last micro-batch's backward
/// has finished layer `l` (its gradients are then final on this rank).
#[allow(clippy::too_many_arguments)]
pub fn share_gradients_into(
    model: &Qwen2,
    grads: &GradBuffers,
    micros: &[MicroBatch],
    total: usize,
    loss_factor: f64,
    checkpointing: Checkpointing,
    before_micro: &mut dyn FnMut(usize),
    last_layer_done: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<StepGradients> {
    grads.zero()?;
    // The loss and the out-of-vocabulary counts stay on the device until the step's end.
    let mut loss_acc: Option<Tensor> = None;
    let mut bad_targets = Vec::new();
    for (i, mb) in micros.iter().enumerate() {
        before_micro(i);
        let scale = loss_factor / total.max(1) as f64;
        let last = i + 1 == micros.len();
        let out = if last {
            model.forward_backward_hooked(&mb.batch, &mb.targets, scale, grads, checkpointing, last_layer_done)
        } else {
            model.forward_backward(&mb.batch, &mb.targets, scale, grads, checkpointing)
        }
        .with_context(|| format!("micro-batch {i}"))?;
        let l = (out.loss_sum.to_dtype(DType::F64)? * loss_factor)?;
        loss_acc = Some(match loss_acc {
            None => l,
            Some(a) => (a + l)?,
        });
        bad_targets.push(out.bad_targets);
    }
    let loss_sum = finish_loss(loss_acc, bad_targets)?;
    if model.parameters().len() != grads.named.len() {
        anyhow::bail!(
            "{} gradient buffers for {} parameters",
            grads.named.len(),
            model.parameters().len()
        );
    }
    // The f32 buffers themselves: AdamW and the gradient norm read them as they are.
    let grads = grads.named.iter().map(|(_, g)| g.clone()).collect();
    Ok(StepGradients {
        grads,
        loss_sum,
        supervised: total,
    })
}

/// The step's summed loss on the host, after checking the device-side counts of targets
/// outside the vocabulary (the step's one synchronisation).
fn finish_loss(loss_acc: Option<Tensor>, bad_targets: Vec<Option<Tensor>>) -> Result<f64> {
    // The micro-batches' device-side counts summed on the device: one read for all of them.
    let mut bad_sum: Option<Tensor> = None;
    for bad in bad_targets.into_iter().flatten() {
        let bad = bad.to_dtype(DType::F64)?;
        bad_sum = Some(match bad_sum {
            None => bad,
            Some(s) => (s + bad)?,
        });
    }
    if let Some(bad) = bad_sum {
        device_calls::host_read();
        let n = bad.to_scalar::<f64>()?;
        if n > 0.0 {
            anyhow::bail!("{n} target id(s) outside the model's vocabulary in this step's micro-batches");
        }
    }
    Ok(match loss_acc {
        Some(t) => {
            device_calls::host_read();
            t.to_scalar::<f64>()?
        }
        None => 0.0,
    })
}

/// The same gradients through candle's autograd over the model's variables: the reference the
/// explicit step is tested against (not used in training).
pub fn autograd_step_gradients(model: &Qwen2, micros: &[MicroBatch], loss_factor: f64) -> Result<StepGradients> {
    let total: usize = micros.iter().map(|m| m.supervised).sum();
    let params = model.parameters();
    let mut grads: Vec<Option<Tensor>> = vec![None; params.len()];
    let mut loss_acc: Option<Tensor> = None;
    let mut bad_targets = Vec::new();
    for mb in micros {
        let out = model.loss_counted(&mb.batch, &mb.targets, mb.supervised)?;
        let l = (out.loss_sum.detach().to_dtype(DType::F64)? * loss_factor)?;
        loss_acc = Some(match loss_acc {
            None => l,
            Some(a) => (a + l)?,
        });
        bad_targets.push(out.bad_targets.clone());
        let scaled = (out.loss_sum * (loss_factor / total.max(1) as f64))?;
        let store = scaled.backward().context("backward pass")?;
        for ((name, g), acc) in model.named_grads(&store)?.into_iter().zip(grads.iter_mut()) {
            let g = g
                .with_context(|| format!("no gradient reached {name}"))?
                .to_dtype(DType::F32)?;
            *acc = Some(match acc.take() {
                None => g,
                Some(a) => (a + g)?,
            });
        }
    }
    let loss_sum = finish_loss(loss_acc, bad_targets)?;
    let grads = grads
        .into_iter()
        .zip(params)
        .map(|(g, (_, p))| match g {
            Some(g) => Ok(g.to_dtype(p.dtype())?),
            None => Ok(p.zeros_like()?),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(StepGradients {
        grads,
        loss_sum,
        supervised: total,
    })
}
