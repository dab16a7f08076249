//! `Mlp { gate_proj, up_proj, down_proj }`: `down(silu(gate(h)) * up(h))`. The forward keeps
//! the gate and up projections for the backward, which recomputes their product instead of
//! keeping it.

use super::linear::Linear;
use super::params::ParamSource;
use crate::ops::swiglu;
use crate::ops::swiglu::swiglu_backward;
use anyhow::Result;
use candle_core::Tensor;

#[derive(Clone, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

/// What `Mlp::backward` needs from the forward.
pub struct MlpSaved {
    gate: Tensor,
    up: Tensor,
}

impl Mlp {
    pub fn new(src: &ParamSource, hidden: usize, intermediate: usize) -> Result<Self> {
        Ok(Self {
            gate_proj: Linear::new(&src.pp("gate_proj"), hidden, intermediate, false)?,
            up_proj: Linear::new(&src.pp("up_proj"), hidden, intermediate, false)?,
            down_proj: Linear::new(&src.pp("down_proj"), intermediate, hidden, false)?,
        })
    }

    /// `h [n, hidden]` → `[n, hidden]`, and what the backward needs.
    pub fn forward(&self, h: &Tensor) -> Result<(Tensor, MlpSaved)> {
        let gate = self.gate_proj.forward(h)?;
        let up = self.up_proj.forward(h)?;
        let y = self.down_proj.forward(&swiglu(&gate, &up)?)?;
        Ok((y, MlpSaved { gate, up }))
    }

    /// Adds the parameter gradients into `grads` and returns the gradient of `h`.
    pub fn backward(&self, h: &Tensor, saved: &MlpSaved, dy: &Tensor, grads: &Mlp) -> Result<Tensor> {
        let m = swiglu(&saved.gate, &saved.up)?;
        let dm = self.down_proj.backward(&m, dy, &grads.down_proj)?;
        drop(m);
        let (dgate, dup) = swiglu_backward(&saved.gate, &saved.up, &dm)?;
        let dh = self.gate_proj.backward(h, &dgate, &grads.gate_proj)?;
        Ok((dh + self.up_proj.backward(h, &dup, &grads.up_proj)?)?)
    }
}
