//! RMSNorm, `y = w * x / sqrt(mean(x^2) + eps)` over the last dimension, with its backward.
//!
//! Reductions run in f32 and the weight gradient is summed over fixed row blocks in a fixed
//! order, so results are bit-for-bit reproducible whatever the thread count.

use super::cpu_f32;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Rows per parallel block for the weight-gradient partial sums (fixed: determinism).
const ROW_BLOCK: usize = 32;

/// Applies RMSNorm over the last dimension of `x` with weight `w` (shape `[hidden]`).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let hidden = x.dim(D::Minus1)?;
    if w.dims() != [hidden] {
        candle_core::bail!(
            "rms_norm: weight shape {:?} does not match hidden size {hidden}",
            w.dims()
        );
    }
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps: eps as f32 })
}

struct RmsNorm {
    eps: f32,
}

fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ss = super::dot(row, row);
    1.0 / (ss / row.len() as f32 + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms_norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32("rms_norm", s1, l1)?;
        let w = cpu_f32("rms_norm", s2, l2)?;
        let h = w.len();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(h).zip(x.par_chunks(h)).for_each(|(yr, xr)| {
            let r = inv_rms(xr, self.eps);
            for i in 0..h {
                yr[i] = w[i] * (xr[i] * r);
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let h = w.dim(0)?;
        let rows = x.elem_count() / h;
        let both = x.apply_op3_no_bwd(w, &grad.contiguous()?, &RmsNormBwd { eps: self.eps })?;
        let dx = both.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = both.narrow(0, rows, 1)?.reshape(h)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// Backward of RMSNorm: returns `[rows + 1, hidden]`, the input gradient rows then the weight
/// gradient as the last row.
struct RmsNormBwd {
    eps: f32,
}

impl CustomOp3 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "rms_norm_bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32("rms_norm_bwd", s1, l1)?;
        let w = cpu_f32("rms_norm_bwd", s2, l2)?;
        let g = cpu_f32("rms_norm_bwd", s3, l3)?;
        let h = w.len();
        let rows = x.len() / h;
        let mut out = vec![0f32; (rows + 1) * h];
        let (dx, _) = out.split_at_mut(rows * h);
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(ROW_BLOCK * h)
            .zip(x.par_chunks(ROW_BLOCK * h).zip(g.par_chunks(ROW_BLOCK * h)))
            .map(|(dxb, (xb, gb))| {
                let mut dw = vec![0f32; h];
                for ((dxr, xr), gr) in dxb.chunks_mut(h).zip(xb.chunks(h)).zip(gb.chunks(h)) {
                    let r = inv_rms(xr, self.eps);
                    // c = sum_i g_i w_i x_i / h
                    let mut c = 0f32;
                    for i in 0..h {
                        c += gr[i] * w[i] * xr[i];
                        dw[i] += gr[i] * xr[i] * r;
                    }
                    let c = c * r * r * r / h as f32;
                    for i in 0..h {
                        dxr[i] = gr[i] * w[i] * r - xr[i] * c;
                    }
                }
                dw
            })
            .collect();
        let dw = &mut out[rows * h..];
        for p in &partials {
            for i in 0..h {
                dw[i] += p[i];
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 1, h))))
    }
}
