//! The fused AdamW update of one parameter: decoupled weight decay, first and second moments,
//! bias correction, applied to fp32 master weights with the gradient scaled by the clipping
//! factor, all in one pass over the elements (PyTorch's `torch.optim.AdamW` formula).
//!
//! `adamw_update` runs the CPU implementation on CPU tensors and the composed reference
//! (`reference::adamw`) elsewhere until the device has its kernel.

use super::reference;
use candle_core::{bail, DType, Device, Result, Tensor};
use rayon::prelude::*;

/// Hyper-parameters of one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay of this parameter (0 for parameters without decay).
    pub weight_decay: f64,
    /// 1-based count of updates, for bias correction.
    pub step: u64,
    /// Factor applied to the gradient first (global-norm clipping).
    pub grad_scale: f64,
}

impl AdamWStep {
    /// `(1 - lr·wd, lr / (1 - β1^t), sqrt(1 - β2^t))` in f64, as PyTorch computes them.
    pub fn factors(&self) -> (f64, f64, f64) {
        let bc1 = 1.0 - self.beta1.powf(self.step as f64);
        let bc2 = 1.0 - self.beta2.powf(self.step as f64);
        (1.0 - self.lr * self.weight_decay, self.lr / bc1, bc2.sqrt())
    }
}

const CHUNK: usize = 1 << 14;

/// In-place update of `master`, `m`, `v` (all f32, same length as `grad`).
pub fn adamw_cpu(master: &mut [f32], m: &mut [f32], v: &mut [f32], grad: &[f32], h: &AdamWStep) {
    let (decay, step_size, bc2_sqrt) = h.factors();
    let (decay, step_size, bc2_sqrt) = (decay as f32, step_size as f32, bc2_sqrt as f32);
    let (b1c, b2, b2c, eps, scale) = (
        (1.0 - h.beta1) as f32,
        h.beta2 as f32,
        (1.0 - h.beta2) as f32,
        h.eps as f32,
        h.grad_scale as f32,
    );
    master
        .par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(grad.par_chunks(CHUNK))
        .for_each(|(((p, m), v), g)| {
            for i in 0..p.len() {
                let g = g[i] * scale;
                m[i] += b1c * (g - m[i]);
                v[i] = v[i] * b2 + b2c * g * g;
                let denom = v[i].sqrt() / bc2_sqrt + eps;
                p[i] = p[i] * decay - step_size * (m[i] / denom);
            }
        });
}

/// The updated `(master, m, v)` of one parameter given its gradient (any float dtype; the
/// update runs in f32).
pub fn adamw_update(
    master: &Tensor,
    m: &Tensor,
    v: &Tensor,
    grad: &Tensor,
    h: &AdamWStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    for (name, t) in [("master", master), ("exp_avg", m), ("exp_avg_sq", v)] {
        if t.dtype() != DType::F32 {
            bail!("adamw: {name} must be f32, got {:?}", t.dtype());
        }
        if t.dims() != grad.dims() {
            bail!("adamw: {name} has shape {:?}, the gradient {:?}", t.dims(), grad.dims());
        }
    }
    let grad = grad.to_dtype(DType::F32)?;
    match master.device() {
        Device::Cpu => {
            let shape = master.shape().clone();
            let mut p = master.flatten_all()?.to_vec1::<f32>()?;
            let mut mm = m.flatten_all()?.to_vec1::<f32>()?;
            let mut vv = v.flatten_all()?.to_vec1::<f32>()?;
            let g = grad.flatten_all()?.to_vec1::<f32>()?;
            adamw_cpu(&mut p, &mut mm, &mut vv, &g, h);
            let dev = Device::Cpu;
            Ok((
                Tensor::from_vec(p, &shape, &dev)?,
                Tensor::from_vec(mm, &shape, &dev)?,
                Tensor::from_vec(vv, &shape, &dev)?,
            ))
        }
        _ => reference::adamw(master, m, v, &grad, h),
    }
}
