//! AdamW over all parameters of a model: fp32 master weights (separate from the parameters
//! whenever those are bf16/f16) and fp32 moments, a per-parameter weight-decay mask, and the
//! update itself through the fused `ops::adamw` op. Its state round-trips through the tensors
//! of `optimizer.safetensors`. Sharded over data-parallel ranks (ZeRO-1, `train::zero`), each
//! parameter's state covers only this rank's block of it.

use super::schedule::ScheduleKind;
use super::zero::Shard;
use crate::config::{ensure, ConfigError};
use crate::dist::Comm;
use crate::model::qwen2::param_specs;
use crate::model::Qwen2;
use crate::ops::{adamw_update, AdamWStep};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `[optim]`: AdamW and the default LR schedule of every stage.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// The schedule decays to `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    pub warmup_steps: u64,
    pub schedule: ScheduleKind,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Also decay norm weights and biases (default: matrices and embeddings only).
    pub decay_norms_and_biases: bool,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 2e-5,
            min_lr_ratio: 0.1,
            warmup_steps: 0,
            schedule: ScheduleKind::Cosine,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            decay_norms_and_biases: false,
            max_grad_norm: 1.0,
        }
    }
}

impl OptimConfig {
    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_lr("optim.lr", self.lr)?;
        check_ratio("optim.min_lr_ratio", self.min_lr_ratio)?;
        for (key, b) in [("optim.beta1", self.beta1), ("optim.beta2", self.beta2)] {
            ensure((0.0..1.0).contains(&b), key, || format!("{b} must be in [0, 1)"))?;
        }
        ensure(self.eps > 0.0 && self.eps.is_finite(), "optim.eps", || {
            "must be positive".into()
        })?;
        ensure(
            self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
            "optim.weight_decay",
            || "must be non-negative".into(),
        )?;
        ensure(
            self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite(),
            "optim.max_grad_norm",
            || "must be non-negative (0: no clipping)".into(),
        )
    }

    /// The factor gradients are multiplied by before the update: global-norm clipping to
    /// `max_grad_norm` (1 when off or not needed).
    pub fn clip_scale(&self, grad_norm: f64) -> f64 {
        let max = self.max_grad_norm;
        if max > 0.0 && grad_norm > max {
            max / (grad_norm + 1e-6)
        } else {
            1.0
        }
    }
}

/// A positive, finite learning rate.
pub fn check_lr(key: &str, lr: f64) -> Result<(), ConfigError> {
    ensure(lr > 0.0 && lr.is_finite(), key, || {
        format!("{lr} must be a positive learning rate")
    })
}

/// A ratio in [0, 1].
pub fn check_ratio(key: &str, r: f64) -> Result<(), ConfigError> {
    ensure((0.0..=1.0).contains(&r), key, || format!("{r} must be in [0, 1]"))
}

struct ParamState {
    name: String,
    /// The model's parameter (a view of its storage), rewritten in place by each update.
    param: Tensor,
    /// fp32 master copy (only when the parameter is not f32 itself).
    master: Option<Tensor>,
    m: Tensor,
    v: Tensor,
    decay: bool,
    /// ZeRO-1: the block of the flattened parameter whose state this rank holds (`master`, `m`
    /// and `v` are then that block, flat).
    shard: Option<Shard>,
}

/// The hyperparameters of update number `step` of one parameter (its weight decay by `decay`).
fn step_of(hp: &OptimConfig, step: u64, decay: bool, lr: f64, grad_scale: f64) -> AdamWStep {
    AdamWStep {
        lr,
        beta1: hp.beta1,
        beta2: hp.beta2,
        eps: hp.eps,
        weight_decay: if decay { hp.weight_decay } else { 0.0 },
        step,
        grad_scale,
    }
}

pub struct AdamW {
    params: Vec<ParamState>,
    hp: OptimConfig,
    /// Updates applied so far (the bias-correction step count).
    pub steps: u64,
}

impl AdamW {
    /// Fresh state (zero moments, masters copied from the parameters) for a trainable model.
    pub fn new(model: &Qwen2, hp: &OptimConfig) -> Result<Self> {
        if !model.is_trainable() {
            bail!("the model was loaded without trainable variables");
        }
        let decay_of: HashMap<String, bool> = param_specs(&model.config)
            .into_iter()
            .map(|s| (s.name, s.decay))
            .collect();
        let mut params = Vec::new();
        for (name, t) in model.parameters() {
            let master = if t.dtype() == DType::F32 {
                None
            } else {
                Some(t.to_dtype(DType::F32)?)
            };
            params.push(ParamState {
                name: name.clone(),
                param: t.clone(),
                master,
                m: t.zeros_like()?.to_dtype(DType::F32)?,
                v: t.zeros_like()?.to_dtype(DType::F32)?,
                decay: hp.decay_norms_and_biases || decay_of.get(name).copied().unwrap_or(true),
                shard: None,
            });
        }
        Ok(Self {
            params,
            hp: hp.clone(),
            steps: 0,
        })
    }

    /// Keeps only rank `rank`'s block of every parameter's state (ZeRO-1 over `world` ranks);
    /// call after loading a checkpoint's whole state.
    pub fn shard(&mut self, rank: usize, world: usize) -> Result<()> {
        for p in &mut self.params {
            let s = Shard::of(p.param.elem_count(), rank, world);
            p.master = p.master.as_ref().map(|m| s.take(m)).transpose()?;
            p.m = s.take(&p.m)?;
            p.v = s.take(&p.v)?;
            p.shard = Some(s);
        }
        Ok(())
    }

    /// Whether the state is sharded over ranks (ZeRO-1).
    pub fn is_sharded(&self) -> bool {
        self.params.iter().any(|p| p.shard.is_some())
    }

    /// This rank's block of every whole gradient (ZeRO-1: every rank holds the summed
    /// gradients), in update order.
    pub fn grad_blocks(&self, grads: &[Tensor]) -> Result<Vec<Tensor>> {
        self.each_shard(grads, |s, g| s.take(g))
    }

    /// This rank's block of every parameter (`None`: the state is whole).
    pub fn shards(&self) -> Option<Vec<Shard>> {
        self.params.iter().map(|p| p.shard).collect()
    }

    fn each_shard(&self, grads: &[Tensor], f: impl Fn(&Shard, &Tensor) -> Result<Tensor>) -> Result<Vec<Tensor>> {
        if grads.len() != self.params.len() {
            bail!("{} gradients for {} parameters", grads.len(), self.params.len());
        }
        self.params
            .iter()
            .zip(grads)
            .map(|(p, g)| {
                let s = p
                    .shard
                    .with_context(|| format!("AdamW: {} is not sharded while others are", p.name))?;
                f(&s, g).with_context(|| format!("the gradient block of {}", p.name))
            })
            .collect()
    }

    /// One update of this rank's blocks (ZeRO-1/2) from `blocks`, this rank's block of every
    /// summed gradient (`grad_blocks`, or ZeRO-2's reduce-scatter), then every parameter all-gathered from
    /// the ranks' blocks.
    pub fn update_sharded(&mut self, blocks: &[Tensor], lr: f64, grad_scale: f64, comm: &dyn Comm) -> Result<()> {
        if blocks.len() != self.params.len() {
            bail!("{} gradient blocks for {} parameters", blocks.len(), self.params.len());
        }
        self.steps += 1;
        for (p, g) in self.params.iter_mut().zip(blocks) {
            let Some(s) = p.shard else {
                bail!("AdamW: {} is not sharded while others are", p.name);
            };
            let h = step_of(&self.hp, self.steps, p.decay, lr, grad_scale);
            // An f32 parameter is its own master: its block is read from it.
            let master = match &p.master {
                Some(m) => m.clone(),
                None => s.take(&p.param)?,
            };
            let (master, m, v) =
                adamw_update(&master, &p.m, &p.v, g, &h).with_context(|| format!("AdamW update of {}", p.name))?;
            s.gather_into(&master, &p.param, comm)
                .with_context(|| format!("gathering {} from the ranks", p.name))?;
            if p.master.is_some() {
                p.master = Some(master);
            }
            p.m = m;
            p.v = v;
        }
        Ok(())
    }

    /// The parameters in update order (the order `grads` must follow).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|p| p.name.as_str())
    }

    /// Whether weight decay applies to each parameter, by name.
    pub fn decay_mask(&self) -> Vec<(String, bool)> {
        self.params.iter().map(|p| (p.name.clone(), p.decay)).collect()
    }

    /// One update with learning rate `lr`, the gradients (in `names` order) multiplied by
    /// `grad_scale` first.
    pub fn update(&mut self, grads: &[Tensor], lr: f64, grad_scale: f64) -> Result<()> {
        if self.is_sharded() {
            bail!("AdamW: the state is sharded over ranks; update it with `update_sharded`");
        }
        if grads.len() != self.params.len() {
            bail!("{} gradients for {} parameters", grads.len(), self.params.len());
        }
        self.steps += 1;
        #[cfg(feature = "cuda")]
        if self.params.first().is_some_and(|p| p.param.device().is_cuda())
            && self
                .params
                .iter()
                .all(|p| matches!(p.param.dtype(), DType::F32 | DType::BF16))
        {
            return self.update_fused(grads, lr, grad_scale);
        }
        for (p, g) in self.params.iter_mut().zip(grads) {
            let h = step_of(&self.hp, self.steps, p.decay, lr, grad_scale);
            let master = match &p.master {
                Some(m) => m.clone(),
                None => p.param.clone(),
            };
            let (master, m, v) =
                adamw_update(&master, &p.m, &p.v, g, &h).with_context(|| format!("AdamW update of {}", p.name))?;
            // In place: the parameter may be a row range of a stacked tensor the layers hold.
            p.param.slice_set(&master.to_dtype(p.param.dtype())?, 0, 0)?;
            if p.master.is_some() {
                p.master = Some(master);
            }
            p.m = m;
            p.v = v;
        }
        Ok(())
    }

    /// The update of every parameter in place with one fused kernel launch per dtype
    /// (`kernels/adamw.cu`): masters and moments updated, bf16 parameters rewritten.
    #[cfg(feature = "cuda")]
    fn update_fused(&mut self, grads: &[Tensor], lr: f64, grad_scale: f64) -> Result<()> {
        use crate::ops::AdamWSlot;
        let slots: Vec<AdamWSlot> = self
            .params
            .iter()
            .zip(grads)
            .map(|(p, g)| AdamWSlot {
                master: p.master.as_ref().unwrap_or(&p.param),
                m: &p.m,
                v: &p.v,
                grad: g,
                param: p.master.as_ref().map(|_| &p.param),
                weight_decay: if p.decay { self.hp.weight_decay } else { 0.0 },
            })
            .collect();
        // Weight decay per parameter is in the slots.
        let h = step_of(&self.hp, self.steps, false, lr, grad_scale);
        crate::ops::adamw::adamw_multi_cuda(&slots, &h).context("fused AdamW update")?;
        Ok(())
    }

    /// The state as named tensors: `exp_avg.NAME`, `exp_avg_sq.NAME` and, for non-f32
    /// parameters, `master.NAME`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for p in &self.params {
            if let Some(m) = &p.master {
                out.push((format!("master.{}", p.name), m.clone()));
            }
            out.push((format!("exp_avg.{}", p.name), p.m.clone()));
            out.push((format!("exp_avg_sq.{}", p.name), p.v.clone()));
        }
        out
    }

    /// Restores the state saved by `state_tensors` after `steps` updates; every tensor must be
    /// present with the parameter's shape (or flat with its element count: joined optimizer
    /// shards), and nothing else.
    pub fn load_state(&mut self, mut tensors: HashMap<String, Tensor>, steps: u64) -> Result<()> {
        for p in &mut self.params {
            let dev = p.param.device().clone();
            let mut take = |key: String| -> Result<Tensor> {
                let mut t = tensors
                    .remove(&key)
                    .with_context(|| format!("the optimizer state has no tensor {key:?}"))?;
                if t.rank() == 1 && t.elem_count() == p.param.elem_count() {
                    t = t.reshape(p.param.shape())?;
                }
                if t.dims() != p.param.dims() || t.dtype() != DType::F32 {
                    bail!(
                        "optimizer tensor {key:?} is {:?} {:?}, expected f32 {:?}",
                        t.dtype(),
                        t.dims(),
                        p.param.dims()
                    );
                }
                Ok(t.to_device(&dev)?)
            };
            if p.master.is_some() {
                p.master = Some(take(format!("master.{}", p.name))?);
            }
            p.m = take(format!("exp_avg.{}", p.name))?;
            p.v = take(format!("exp_avg_sq.{}", p.name))?;
        }
        if let Some(extra) = tensors.keys().next() {
            bail!("the optimizer state has an unexpected tensor {extra:?} (another model or dtype?)");
        }
        self.steps = steps;
        Ok(())
    }
}
