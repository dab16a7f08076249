//! SwiGLU activation `silu(gate) * up` (the Qwen2 MLP's elementwise core), with its backward.

use super::cpu_f32;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel block.
const BLOCK: usize = 4096;

/// `silu(gate) * up`, elementwise; `gate` and `up` have the same shape.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.shape() != up.shape() {
        bail!("swiglu: gate {:?} and up {:?} differ in shape", gate.dims(), up.dims());
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = cpu_f32("swiglu", s1, l1)?;
        let u = cpu_f32("swiglu", s2, l2)?;
        let mut y = vec![0f32; g.len()];
        y.par_chunks_mut(BLOCK)
            .zip(g.par_chunks(BLOCK).zip(u.par_chunks(BLOCK)))
            .for_each(|(yb, (gb, ub))| {
                for i in 0..yb.len() {
                    yb[i] = gb[i] * sigmoid(gb[i]) * ub[i];
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
        let y = crate::dispatch_kernel_dtype!("swiglu", s1.dtype(), cuda::fwd(s1, l1, s2, l2))?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dgate, dup) = swiglu_backward(gate, up, grad)?;
        Ok((Some(dgate), Some(dup)))
    }
}

/// The gradients `(dgate, dup)` of `swiglu(gate, up)` from `dy`, outside autograd; the product
/// itself is not needed (recomputed from `gate` and `up` in the same pass).
pub fn swiglu_backward(gate: &Tensor, up: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    let both = gate
        .contiguous()?
        .apply_op3_no_bwd(&up.contiguous()?, &dy.contiguous()?, &SwiGluBwd)?;
    Ok((both.get(0)?, both.get(1)?))
}

/// Backward of SwiGLU: returns `[2, ...shape]`, the gate gradient then the up gradient.
struct SwiGluBwd;

impl CustomOp3 for SwiGluBwd {
    fn name(&self) -> &'static str {
        "swiglu_bwd"
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
        let g = cpu_f32("swiglu_bwd", s1, l1)?;
        let u = cpu_f32("swiglu_bwd", s2, l2)?;
        let dy = cpu_f32("swiglu_bwd", s3, l3)?;
        let n = g.len();
        let mut out = vec![0f32; 2 * n];
        let (dg, du) = out.split_at_mut(n);
        dg.par_chunks_mut(BLOCK)
            .zip(du.par_chunks_mut(BLOCK))
            .zip(g.par_chunks(BLOCK).zip(u.par_chunks(BLOCK)).zip(dy.par_chunks(BLOCK)))
            .for_each(|((dgb, dub), ((gb, ub), dyb))| {
                for i in 0..dgb.len() {
                    let s = sigmoid(gb[i]);
                    let silu = gb[i] * s;
                    dub[i] = dyb[i] * silu;
                    dgb[i] = dyb[i] * ub[i] * s * (1.0 + gb[i] * (1.0 - s));
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
        let out = crate::dispatch_kernel_dtype!("swiglu_bwd", s1.dtype(), cuda::bwd(s1, l1, s2, l2, s3, l3))?;
        let mut dims = vec![2];
        dims.extend_from_slice(l1.dims());
        Ok((out, Shape::from(dims)))
    }
}

/// The launches of `kernels/swiglu.cu`, written once for every `KernelRunner`.
pub mod launch {
    use crate::ops::kernel_launch::args::{SwigluBwd, SwigluFwd};
    use crate::ops::kernel_launch::{DevPtr, KernelFloat, KernelRunner, LaunchDims};
    use candle_core::Result;

    /// `silu(g) * u` over `n` elements.
    pub fn fwd<R: KernelRunner, T: KernelFloat>(r: &R, g: DevPtr<T>, u: DevPtr<T>, n: usize) -> Result<R::Buf<T>> {
        let mut y = r.alloc::<T>(n)?;
        let args = SwigluFwd {
            g,
            u,
            y: r.output(&mut y, 0),
            n: n as i64,
        };
        r.launch(&args, LaunchDims::elementwise(n))?;
        Ok(y)
    }

    /// `[dgate | dup]`, `2 n` elements.
    pub fn bwd<R: KernelRunner, T: KernelFloat>(
        r: &R,
        g: DevPtr<T>,
        u: DevPtr<T>,
        dy: DevPtr<T>,
        n: usize,
    ) -> Result<R::Buf<T>> {
        let mut out = r.alloc::<T>(2 * n)?;
        let args = SwigluBwd {
            g,
            u,
            dy,
            out: r.output(&mut out, 0),
            n: n as i64,
        };
        r.launch(&args, LaunchDims::elementwise(n))?;
        Ok(out)
    }
}

/// `kernels/swiglu.cu` on candle's CUDA storages.
#[cfg(feature = "cuda")]
mod cuda {
    use crate::ops::cuda::{input, CudaRunner, KernelDType};
    use candle_core::cuda_backend::CudaStorage;
    use candle_core::{Layout, Result};

    pub fn fwd<T: KernelDType>(s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<CudaStorage> {
        let r = CudaRunner { dev: &s1.device };
        let (g, u) = (input::<T>("swiglu", s1, l1)?, input::<T>("swiglu", s2, l2)?);
        let y = super::launch::fwd(&r, g, u, l1.shape().elem_count())?;
        Ok(CudaStorage::wrap_cuda_slice(y, s1.device.clone()))
    }

    pub fn bwd<T: KernelDType>(
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<CudaStorage> {
        let r = CudaRunner { dev: &s1.device };
        let g = input::<T>("swiglu_bwd", s1, l1)?;
        let u = input::<T>("swiglu_bwd", s2, l2)?;
        let dy = input::<T>("swiglu_bwd", s3, l3)?;
        let out = super::launch::bwd(&r, g, u, dy, l1.shape().elem_count())?;
        Ok(CudaStorage::wrap_cuda_slice(out, s1.device.clone()))
    }
}

/// The composed reference of SwiGLU and its case in the kernel checks.
pub mod check {
    use super::super::check::{Input, Suite};
    use candle_core::{Result, Tensor};

    /// `silu(gate) * up` with silu spelled out as `g / (1 + exp(-g))`.
    pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        let silu = (gate / (gate.neg()?.exp()? + 1.0)?)?;
        silu * up
    }

    /// A width that is not a multiple of the block.
    pub fn selftest(s: &mut Suite) -> anyhow::Result<()> {
        let shape = [41, 1003];
        let inputs = vec![Input::var(s.randn(&shape, 2.0)?), Input::var(s.randn(&shape, 1.0)?)];
        s.compare_with_grads("swiglu [41x1003]", inputs, &|t| super::swiglu(&t[0], &t[1]), &|t| {
            swiglu(&t[0], &t[1])
        })
    }
}
