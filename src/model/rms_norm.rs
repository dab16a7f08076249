//! `RMSNorm { weight }` (`input_layernorm`, `post_attention_layernorm`, `model.norm`): the
//! module holds the weight; the residual add that precedes every norm but the first is fused
//! with it (`ops::add_rms_norm`), so the forward takes the pending residual delta.

use super::params::{Init, ParamSource};
use crate::ops::grad_accumulate::add_scaled;
use crate::ops::rms_norm::add_rms_norm_backward;
use crate::ops::{add_rms_norm, rms_norm};
use anyhow::Result;
use candle_core::Tensor;

#[derive(Clone, Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(src: &ParamSource, hidden: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: src.get("weight", &[hidden], Init::Ones)?,
            eps,
        })
    }

    /// The same parameters outside autograd (shared storage).
    pub fn detached(&self) -> Self {
        Self {
            weight: self.weight.detach(),
            eps: self.eps,
        }
    }

    /// `(s, norm(s))` with `s = x + delta` (`s = x` without a delta).
    pub fn forward(&self, x: &Tensor, delta: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        Ok(match delta {
            Some(d) => add_rms_norm(x, d, &self.weight, self.eps)?,
            None => (x.clone(), rms_norm(x, &self.weight, self.eps)?),
        })
    }

    /// The normed output alone, recomputed from the saved sum `s`.
    pub fn normed(&self, s: &Tensor) -> Result<Tensor> {
        Ok(rms_norm(s, &self.weight, self.eps)?)
    }

    /// From the sum `s` and the gradients of the sum (`None`: none flows) and of the normed
    /// output: adds the weight's gradient into `grads` and returns the gradient of `s` (which is
    /// also that of `x` and of `delta`).
    pub fn backward(&self, s: &Tensor, d_sum: Option<&Tensor>, d_normed: &Tensor, grads: &RmsNorm) -> Result<Tensor> {
        let (ds, dw) = add_rms_norm_backward(s, &self.weight, d_sum, d_normed, self.eps)?;
        add_scaled(&grads.weight, &dw, 1.0)?;
        Ok(ds)
    }
}
