//! RMSNorm, `y = w * x / sqrt(mean(x^2) + eps)` over the last dimension, with its backward, and
//! the residual-fused form `add_rms_norm` (the residual add and the next norm in one pass).
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

/// `s = x + delta` and `rms_norm(s, w)` in one pass over the rows: a residual add followed by
/// the next norm, as every decoder layer has twice. Returns `(s, normed)`; gradients reach `x`,
/// `delta` and `w`.
pub fn add_rms_norm(x: &Tensor, delta: &Tensor, w: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let hidden = x.dim(D::Minus1)?;
    if w.dims() != [hidden] || delta.shape() != x.shape() {
        candle_core::bail!(
            "add_rms_norm: x {:?}, delta {:?} and weight {:?} do not fit",
            x.dims(),
            delta.dims(),
            w.dims()
        );
    }
    let both = x
        .contiguous()?
        .apply_op3(&delta.contiguous()?, &w.contiguous()?, AddRmsNorm { eps: eps as f32 })?;
    Ok((both.get(0)?, both.get(1)?))
}

/// Output `[2, ...shape]`: the sum, then its norm.
struct AddRmsNorm {
    eps: f32,
}

impl CustomOp3 for AddRmsNorm {
    fn name(&self) -> &'static str {
        "add_rms_norm"
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
        let x = cpu_f32("add_rms_norm", s1, l1)?;
        let d = cpu_f32("add_rms_norm", s2, l2)?;
        let w = cpu_f32("add_rms_norm", s3, l3)?;
        let (n, h) = (x.len(), w.len());
        let mut out = vec![0f32; 2 * n];
        let (sum, y) = out.split_at_mut(n);
        sum.par_chunks_mut(h)
            .zip(y.par_chunks_mut(h))
            .zip(x.par_chunks(h).zip(d.par_chunks(h)))
            .for_each(|((sr, yr), (xr, dr))| {
                for i in 0..h {
                    sr[i] = xr[i] + dr[i];
                }
                let r = inv_rms(sr, self.eps);
                for i in 0..h {
                    yr[i] = w[i] * (sr[i] * r);
                }
            });
        let mut dims = vec![2];
        dims.extend_from_slice(l1.dims());
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let out = crate::dispatch_kernel_dtype!(
            "add_rms_norm",
            s1.dtype(),
            cuda::add_fwd(s1, l1, s2, l2, s3, l3, self.eps)
        )?;
        let mut dims = vec![2];
        dims.extend_from_slice(l1.dims());
        Ok((out, Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _delta: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (ds, dw) = add_rms_norm_backward(&res.get(0)?, w, Some(&grad.get(0)?), &grad.get(1)?, self.eps as f64)?;
        debug_assert_eq!(ds.shape(), x.shape());
        Ok((Some(ds.clone()), Some(ds), Some(dw)))
    }
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

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let y = crate::dispatch_kernel_dtype!("rms_norm", s1.dtype(), fwd(s1, l1, s2, l2, self.eps))?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = rms_norm_backward(x, w, grad, self.eps as f64)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// The gradients `(dx, dw)` of `y = rms_norm(x, w)` from `dy`, outside autograd (the explicit
/// training step; the autograd op calls it too). Nothing but `x` is needed: the reciprocal RMS
/// is recomputed per row.
pub fn rms_norm_backward(x: &Tensor, w: &Tensor, dy: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let h = w.dim(0)?;
    let rows = x.elem_count() / h.max(1);
    let both = x
        .contiguous()?
        .apply_op3_no_bwd(w, &dy.contiguous()?, &RmsNormBwd { eps: eps as f32 })?;
    let dx = both.narrow(0, 0, rows)?.reshape(x.shape())?;
    let dw = both.narrow(0, rows, 1)?.reshape(h)?;
    Ok((dx, dw))
}

/// The gradients of `(s, y) = add_rms_norm(x, delta, w)` from the gradients of its two outputs,
/// outside autograd: `(ds, dw)`, where `ds` is the gradient of both `x` and `delta` (`d_sum`
/// `None`: the sum's own gradient is zero). `sum` is the forward's first output.
pub fn add_rms_norm_backward(
    sum: &Tensor,
    w: &Tensor,
    d_sum: Option<&Tensor>,
    d_normed: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let (dnorm, dw) = rms_norm_backward(sum, w, d_normed, eps)?;
    let ds = match d_sum {
        Some(d) => (d + dnorm)?,
        None => dnorm,
    };
    Ok((ds, dw))
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

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let h = l2.shape().elem_count();
        let rows = l1.shape().elem_count() / h.max(1);
        let out = crate::dispatch_kernel_dtype!("rms_norm_bwd", s1.dtype(), bwd(s1, l1, s2, l2, s3, l3, self.eps))?;
        Ok((out, Shape::from((rows + 1, h))))
    }
}

#[cfg(feature = "cuda")]
use cuda::{bwd, fwd};

/// The launches of `kernels/rms_norm.cu`, written once for every `KernelRunner` (the GPU and
/// the CPU kernel harness of the tests).
pub mod launch {
    use crate::ops::kernel_launch::args::{AddRmsNormFwd, RmsNormBwd, RmsNormDwReduce, RmsNormFwd};
    use crate::ops::kernel_launch::{int_arg, DevPtr, KernelFloat, KernelRunner, LaunchDims, MAX_DYNAMIC_SHARED};
    use candle_core::{bail, Result};

    /// Blocks of the backward: each accumulates the weight gradient of its rows (a fixed
    /// function of the row count, so the summation order is reproducible).
    pub const MAX_BWD_BLOCKS: usize = 1024;
    /// The backward keeps one f32 weight-gradient accumulator per column in dynamic shared
    /// memory, beside the 33-float static reduction scratch, within the 48 KiB every GPU gives.
    pub const MAX_HIDDEN: usize = (MAX_DYNAMIC_SHARED - 33 * 4) / 4;

    /// `y = rmsnorm(x) * w` over `rows` rows of `h`.
    pub fn fwd<R: KernelRunner, T: KernelFloat>(
        r: &R,
        x: DevPtr<T>,
        w: DevPtr<T>,
        rows: usize,
        h: usize,
        eps: f32,
    ) -> Result<R::Buf<T>> {
        let mut y = r.alloc::<T>(rows * h)?;
        let args = RmsNormFwd {
            x,
            w,
            y: r.output(&mut y, 0),
            rows: int_arg("rms_norm", "rows", rows)?,
            h: int_arg("rms_norm", "hidden", h)?,
            eps,
        };
        r.launch(&args, LaunchDims::rows(rows, 0))?;
        Ok(y)
    }

    /// `[x + delta | rmsnorm(x + delta) * w]`, `2 * rows * h` elements.
    #[allow(clippy::too_many_arguments)]
    pub fn add_fwd<R: KernelRunner, T: KernelFloat>(
        r: &R,
        x: DevPtr<T>,
        delta: DevPtr<T>,
        w: DevPtr<T>,
        rows: usize,
        h: usize,
        eps: f32,
    ) -> Result<R::Buf<T>> {
        let mut out = r.alloc::<T>(2 * rows * h)?;
        let args = AddRmsNormFwd {
            x,
            delta,
            w,
            out: r.output(&mut out, 0),
            rows: int_arg("add_rms_norm", "rows", rows)?,
            h: int_arg("add_rms_norm", "hidden", h)?,
            eps,
        };
        r.launch(&args, LaunchDims::rows(rows, 0))?;
        Ok(out)
    }

    /// `[dx (rows x h) | dw (h)]`: the backward, then the fixed-order sum of the per-block
    /// weight-gradient partials.
    #[allow(clippy::too_many_arguments)]
    pub fn bwd<R: KernelRunner, T: KernelFloat>(
        r: &R,
        x: DevPtr<T>,
        w: DevPtr<T>,
        g: DevPtr<T>,
        rows: usize,
        h: usize,
        eps: f32,
    ) -> Result<R::Buf<T>> {
        if h > MAX_HIDDEN {
            bail!("rms_norm_bwd: hidden size {h} is above the kernel's {MAX_HIDDEN}");
        }
        let blocks = rows.clamp(1, MAX_BWD_BLOCKS);
        let mut out = r.alloc::<T>((rows + 1) * h)?;
        let mut partial = r.alloc::<f32>(blocks * h)?;
        let (rows_i, h_i) = (
            int_arg("rms_norm_bwd", "rows", rows)?,
            int_arg("rms_norm_bwd", "hidden", h)?,
        );
        let args = RmsNormBwd {
            x,
            w,
            g,
            dx: r.output(&mut out, 0),
            partial: r.output(&mut partial, 0),
            rows: rows_i,
            h: h_i,
            eps,
        };
        let dims = LaunchDims {
            grid: blocks as u32,
            block: crate::ops::kernel_launch::BLOCK,
            shared_bytes: (h * 4) as u32,
        };
        r.launch(&args, dims)?;
        let reduce = RmsNormDwReduce::<T> {
            partial: r.input(&partial, 0),
            dw: r.output(&mut out, rows * h),
            blocks: blocks as i32,
            h: h_i,
        };
        r.launch(&reduce, LaunchDims::elementwise(h))?;
        Ok(out)
    }
}

/// `kernels/rms_norm.cu` on candle's CUDA storages.
#[cfg(feature = "cuda")]
mod cuda {
    use crate::ops::cuda::{input, CudaRunner, KernelDType};
    use candle_core::cuda_backend::CudaStorage;
    use candle_core::{Layout, Result};

    pub fn fwd<T: KernelDType>(
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        eps: f32,
    ) -> Result<CudaStorage> {
        let r = CudaRunner { dev: &s1.device };
        let h = l2.shape().elem_count();
        let rows = l1.shape().elem_count() / h.max(1);
        let (x, w) = (input::<T>("rms_norm", s1, l1)?, input::<T>("rms_norm", s2, l2)?);
        let y = super::launch::fwd(&r, x, w, rows, h, eps)?;
        Ok(CudaStorage::wrap_cuda_slice(y, s1.device.clone()))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn add_fwd<T: KernelDType>(
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
        eps: f32,
    ) -> Result<CudaStorage> {
        let r = CudaRunner { dev: &s1.device };
        let h = l3.shape().elem_count();
        let rows = l1.shape().elem_count() / h.max(1);
        let x = input::<T>("add_rms_norm", s1, l1)?;
        let d = input::<T>("add_rms_norm", s2, l2)?;
        let w = input::<T>("add_rms_norm", s3, l3)?;
        let out = super::launch::add_fwd(&r, x, d, w, rows, h, eps)?;
        Ok(CudaStorage::wrap_cuda_slice(out, s1.device.clone()))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn bwd<T: KernelDType>(
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
        eps: f32,
    ) -> Result<CudaStorage> {
        let r = CudaRunner { dev: &s1.device };
        let h = l2.shape().elem_count();
        let rows = l1.shape().elem_count() / h.max(1);
        let x = input::<T>("rms_norm_bwd", s1, l1)?;
        let w = input::<T>("rms_norm_bwd", s2, l2)?;
        let g = input::<T>("rms_norm_bwd", s3, l3)?;
        let out = super::launch::bwd(&r, x, w, g, rows, h, eps)?;
        Ok(CudaStorage::wrap_cuda_slice(out, s1.device.clone()))
    }
}

/// The composed reference of the two norms and their cases in the kernel checks.
pub mod check {
    use super::super::check::{Input, Suite};
    use candle_core::{Result, Tensor, D};

    /// `w * x / sqrt(mean(x^2) + eps)` over the last dimension, composed from tensor ops.
    pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
    }

    /// `rms_norm` at two widths (one not a multiple of the block) and with more rows than the
    /// backward has blocks (its grid-stride path, which real runs take), and the
    /// residual-fused `add_rms_norm` against a plain add followed by the reference norm.
    pub fn selftest(s: &mut Suite) -> anyhow::Result<()> {
        for (rows, h) in [(37, 1000), (5, 2304), (super::launch::MAX_BWD_BLOCKS + 77, 96)] {
            let inputs = vec![
                Input::var(s.randn(&[rows, h], 1.0)?),
                Input::var(s.near_one(&[h], 0.1)?),
            ];
            s.compare_with_grads(
                &format!("rms_norm [{rows}x{h}]"),
                inputs,
                &|t| super::rms_norm(&t[0], &t[1], 1e-6),
                &|t| rms_norm(&t[0], &t[1], 1e-6),
            )?;
        }
        let (rows, h) = (29, 1000);
        let inputs = vec![
            Input::var(s.randn(&[rows, h], 1.0)?),
            Input::var(s.randn(&[rows, h], 0.5)?),
            Input::var(s.near_one(&[h], 0.1)?),
        ];
        s.compare_with_grads(
            &format!("add_rms_norm (residual-fused) [{rows}x{h}]"),
            inputs,
            &|t| {
                let (sum, n) = super::add_rms_norm(&t[0], &t[1], &t[2], 1e-6)?;
                Tensor::stack(&[sum, n], 0)
            },
            &|t| {
                let sum = (&t[0] + &t[1])?;
                let n = rms_norm(&sum, &t[2], 1e-6)?;
                Tensor::stack(&[sum, n], 0)
            },
        )
    }
}
