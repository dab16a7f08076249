//! `Mlp { gate_proj, up_proj, down_proj }`: `down(silu(gate(h)) * up(h))`. `gate_proj` and
//! `up_proj` are one stacked `Linear` (`gate_up`): one GEMM writes each row's gate and up side by
//! side, SwiGLU reads them there, and the backward hands `[dgate | dup]` rows to one GEMM for
//! the weight gradient and one for the input gradient. The forward keeps the stacked
//! projection; the backward recomputes the product instead of keeping it.

use super::linear::Linear;
use super::params::ParamSource;
use crate::ops::swiglu;
use crate::ops::swiglu::swiglu_backward;
use anyhow::Result;
use candle_core::Tensor;

#[derive(Clone, Debug)]
pub struct Mlp {
    /// `gate_proj` then `up_proj`, stacked: `[2 · intermediate, hidden]`.
    pub gate_up: Linear,
    pub down_proj: Linear,
}

/// What `Mlp::backward` needs from the forward: the stacked gate/up projection.
pub struct MlpSaved {
    gate_up: Tensor,
}

impl Mlp {
    pub fn new(src: &ParamSource, hidden: usize, intermediate: usize) -> Result<Self> {
        Ok(Self {
            gate_up: Linear::stacked(
                src,
                &[("gate_proj", intermediate), ("up_proj", intermediate)],
                hidden,
                false,
            )?,
            down_proj: Linear::new(&src.pp("down_proj"), intermediate, hidden, false)?,
        })
    }

    /// The same parameters outside autograd (shared storage).
    pub fn detached(&self) -> Self {
        Self {
            gate_up: self.gate_up.detached(),
            down_proj: self.down_proj.detached(),
        }
    }

    /// `h [n, hidden]` → `[n, hidden]`, and what the backward needs.
    pub fn forward(&self, h: &Tensor) -> Result<(Tensor, MlpSaved)> {
        let gate_up = self.gate_up.forward(h)?;
        let y = self.down_proj.forward(&swiglu(&gate_up)?)?;
        Ok((y, MlpSaved { gate_up }))
    }

    /// Adds the parameter gradients into `grads` and returns the gradient of `h`.
    pub fn backward(&self, h: &Tensor, saved: &MlpSaved, dy: &Tensor, grads: &Mlp) -> Result<Tensor> {
        let m = swiglu(&saved.gate_up)?;
        let dm = self.down_proj.backward(&m, dy, &grads.down_proj)?;
        drop(m);
        let dgate_up = swiglu_backward(&saved.gate_up, &dm)?;
        self.gate_up.backward(h, &dgate_up, &grads.gate_up)
    }
}
