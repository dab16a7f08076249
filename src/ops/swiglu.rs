//! SwiGLU activation `silu(gate) * up` (the Qwen2 MLP's elementwise core), with its backward,
//! over the stacked gate/up projection: each row of `gu [.., 2·I]` holds the gate then the up
//! projection (`Mlp`'s one GEMM writes them side by side), so neither pass splits or copies it,
//! and the backward writes `[dgate | dup]` rows in the same layout for the stacked GEMMs.

use super::cpu_f32;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Rows per parallel block at least (and ~4096 elements).
const BLOCK: usize = 4096;

/// The width `I` of a stacked `[.., 2·I]` input.
fn half_width(op: &str, shape: &Shape) -> Result<usize> {
    let w = shape.dims().last().copied().unwrap_or(0);
    if w == 0 || !w.is_multiple_of(2) {
        bail!("{op}: the last dimension ({w}) must hold gate and up side by side (even, non-zero)");
    }
    Ok(w / 2)
}

/// `silu(gate) * up` for `gu [.., 2·I]` (gate in the first `I` columns of each row, up in the
/// last `I`) → `[.., I]`.
pub fn swiglu(gu: &Tensor) -> Result<Tensor> {
    half_width("swiglu", gu.shape())?;
    gu.contiguous()?.apply_op1(SwiGlu)
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Rows per parallel chunk for width `w`.
fn rows_per_chunk(w: usize) -> usize {
    (BLOCK / w.max(1)).max(1)
}

fn out_shape(shape: &Shape, width: usize) -> Shape {
    let mut dims = shape.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = width;
    }
    Shape::from(dims)
}

struct SwiGlu;

impl CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let w = half_width("swiglu", l.shape())?;
        let gu = cpu_f32("swiglu", s, l)?;
        let mut y = vec![0f32; gu.len() / 2];
        let rows = rows_per_chunk(w);
        y.par_chunks_mut(rows * w)
            .zip(gu.par_chunks(rows * 2 * w))
            .for_each(|(yb, gb)| {
                for (yr, gr) in yb.chunks_mut(w).zip(gb.chunks(2 * w)) {
                    let (g, u) = gr.split_at(w);
                    for j in 0..w {
                        yr[j] = g[j] * sigmoid(g[j]) * u[j];
                    }
                }
            });
        Ok((CpuStorage::F32(y), out_shape(l.shape(), w)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let w = half_width("swiglu", l.shape())?;
        let y = crate::dispatch_kernel_dtype!("swiglu", s.dtype(), cuda::fwd(s, l, w))?;
        Ok((y, out_shape(l.shape(), w)))
    }

    fn bwd(&self, gu: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(swiglu_backward(gu, grad)?))
    }
}

/// The gradient `[dgate | dup]` rows of `swiglu(gu)` from `dy [.., I]`, outside autograd, in
/// `gu`'s stacked layout; the product itself is not needed (recomputed in the same pass).
pub fn swiglu_backward(gu: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let w = half_width("swiglu_bwd", gu.shape())?;
    if dy.shape() != &out_shape(gu.shape(), w) {
        bail!("swiglu_bwd: gu {:?} and dy {:?} do not fit", gu.dims(), dy.dims());
    }
    gu.contiguous()?.apply_op2_no_bwd(&dy.contiguous()?, &SwiGluBwd)
}

/// Backward of SwiGLU: `[dgate | dup]` per row, the shape of `gu`.
struct SwiGluBwd;

impl CustomOp2 for SwiGluBwd {
    fn name(&self) -> &'static str {
        "swiglu_bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let w = half_width("swiglu_bwd", l1.shape())?;
        let gu = cpu_f32("swiglu_bwd", s1, l1)?;
        let dy = cpu_f32("swiglu_bwd", s2, l2)?;
        let mut out = vec![0f32; gu.len()];
        let rows = rows_per_chunk(w);
        out.par_chunks_mut(rows * 2 * w)
            .zip(gu.par_chunks(rows * 2 * w).zip(dy.par_chunks(rows * w)))
            .for_each(|(ob, (gb, db))| {
                for (or, (gr, dr)) in ob.chunks_mut(2 * w).zip(gb.chunks(2 * w).zip(db.chunks(w))) {
                    let (g, u) = gr.split_at(w);
                    let (dg, du) = or.split_at_mut(w);
                    for j in 0..w {
                        let s = sigmoid(g[j]);
                        du[j] = dr[j] * g[j] * s;
                        dg[j] = dr[j] * u[j] * s * (1.0 + g[j] * (1.0 - s));
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
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
        let w = half_width("swiglu_bwd", l1.shape())?;
        let out = crate::dispatch_kernel_dtype!("swiglu_bwd", s1.dtype(), cuda::bwd(s1, l1, s2, l2, w))?;
        Ok((out, l1.shape().clone()))
    }
}

/// The launches of `kernels/swiglu.cu`, written once for every `KernelRunner`.
pub mod launch {
    use crate::ops::kernel_launch::args::{SwigluBwd, SwigluFwd};
    use crate::ops::kernel_launch::{int_arg, DevPtr, KernelFloat, KernelRunner, LaunchDims};
    use candle_core::Result;

    /// `silu(g) * u` for `rows` stacked rows `[g | u]` of `2 · width` → `[rows, width]`.
    pub fn fwd<R: KernelRunner, T: KernelFloat>(r: &R, gu: DevPtr<T>, rows: usize, width: usize) -> Result<R::Buf<T>> {
        let mut y = r.alloc::<T>(rows * width)?;
        let args = SwigluFwd {
            gu,
            y: r.output(&mut y, 0),
            rows: rows as i64,
            width: int_arg("swiglu", "width", width)?,
        };
        r.launch(&args, LaunchDims::elementwise(rows * width))?;
        Ok(y)
    }

    /// `[dgate | dup]` rows, `rows · 2 · width` elements.
    pub fn bwd<R: KernelRunner, T: KernelFloat>(
        r: &R,
        gu: DevPtr<T>,
        dy: DevPtr<T>,
        rows: usize,
        width: usize,
    ) -> Result<R::Buf<T>> {
        let mut dgu = r.alloc::<T>(rows * 2 * width)?;
        let args = SwigluBwd {
            gu,
            dy,
            dgu: r.output(&mut dgu, 0),
            rows: rows as i64,
            width: int_arg("swiglu_bwd", "width", width)?,
        };
        r.launch(&args, LaunchDims::elementwise(rows * width))?;
        Ok(dgu)
    }
}

/// `kernels/swiglu.cu` on candle's CUDA storages.
#[cfg(feature = "cuda")]
mod cuda {
    use crate::ops::cuda::{input, CudaRunner, KernelDType};
    use candle_core::cuda_backend::CudaStorage;
    use candle_core::{Layout, Result};

    pub fn fwd<T: KernelDType>(s: &CudaStorage, l: &Layout, w: usize) -> Result<CudaStorage> {
        let r = CudaRunner { dev: &s.device };
        let gu = input::<T>("swiglu", s, l)?;
        let y = super::launch::fwd(&r, gu, l.shape().elem_count() / (2 * w), w)?;
        Ok(CudaStorage::wrap_cuda_slice(y, s.device.clone()))
    }

    pub fn bwd<T: KernelDType>(
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        w: usize,
    ) -> Result<CudaStorage> {
        let r = CudaRunner { dev: &s1.device };
        let gu = input::<T>("swiglu_bwd", s1, l1)?;
        let dy = input::<T>("swiglu_bwd", s2, l2)?;
        let out = super::launch::bwd(&r, gu, dy, l1.shape().elem_count() / (2 * w), w)?;
        Ok(CudaStorage::wrap_cuda_slice(out, s1.device.clone()))
    }
}

/// The composed reference of SwiGLU and its case in the kernel checks.
pub mod check {
    use super::super::check::{Input, Suite};
    use candle_core::{Result, Tensor, D};

    /// `silu(gate) * up` of the stacked `gu`, with silu spelled out as `g / (1 + exp(-g))`.
    pub fn swiglu(gu: &Tensor) -> Result<Tensor> {
        let w = gu.dim(D::Minus1)? / 2;
        let gate = gu.narrow(D::Minus1, 0, w)?;
        let up = gu.narrow(D::Minus1, w, w)?;
        let silu = (&gate / (gate.neg()?.exp()? + 1.0)?)?;
        silu * up
    }

    /// A width that is not a multiple of the block, gate and up at different scales.
    pub fn selftest(s: &mut Suite) -> anyhow::Result<()> {
        let (rows, w) = (41, 1003);
        let gu = Tensor::cat(&[s.randn(&[rows, w], 2.0)?, s.randn(&[rows, w], 1.0)?], 1)?;
        let inputs = vec![Input::var(gu)];
        s.compare_with_grads(
            &format!("swiglu [{rows}x2x{w}]"),
            inputs,
            &|t| super::swiglu(&t[0]),
            &|t| swiglu(&t[0]),
        )
    }
}
