//! Rotary position embedding (rotate-half form, as Qwen2 and transformers apply it) with its
//! backward, driven by per-token position ids so positions restart in each packed document.

use super::cpu_f32;
use candle_core::{bail, CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Per-token cosines and sines, `[tokens, head_dim / 2]` each, computed once per forward and
/// shared by every layer.
#[derive(Clone, Debug)]
pub struct RopeTable {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl RopeTable {
    /// Builds the table for `positions` exactly as transformers does in f32:
    /// `inv_freq[i] = 1 / theta^(2i / head_dim)`, angle = position * inv_freq.
    pub fn new(positions: &[u32], head_dim: usize, theta: f64, device: &Device) -> Result<Self> {
        if !head_dim.is_multiple_of(2) {
            bail!("rope: head_dim must be even, got {head_dim}");
        }
        let half = head_dim / 2;
        let base = theta as f32;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let mut cos = vec![0f32; positions.len() * half];
        let mut sin = vec![0f32; positions.len() * half];
        cos.par_chunks_mut(half)
            .zip(sin.par_chunks_mut(half))
            .zip(positions.par_iter())
            .for_each(|((c, s), &p)| {
                for i in 0..half {
                    let angle = p as f32 * inv_freq[i];
                    c[i] = angle.cos();
                    s[i] = angle.sin();
                }
            });
        let n = positions.len();
        Ok(Self {
            cos: Tensor::from_vec(cos, (n, half), device)?,
            sin: Tensor::from_vec(sin, (n, half), device)?,
        })
    }
}

/// Rotates `x` of shape `[tokens, heads, head_dim]` by the table's per-token angles.
pub fn rope(x: &Tensor, table: &RopeTable) -> Result<Tensor> {
    let (n, _h, d) = x.dims3()?;
    if table.cos.dims() != [n, d / 2] {
        bail!("rope: table {:?} does not fit input {:?}", table.cos.dims(), x.dims());
    }
    x.contiguous()?
        .apply_op3(&table.cos, &table.sin, Rope { inverse: false })
}

/// `inverse: false` rotates by +angle; `true` by -angle, which is the backward (a rotation's
/// transpose is its inverse).
struct Rope {
    inverse: bool,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "rope"
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
        let x = cpu_f32("rope", s1, l1)?;
        let cos = cpu_f32("rope", s2, l2)?;
        let sin = cpu_f32("rope", s3, l3)?;
        let (_n, h, d) = l1.shape().dims3()?;
        let half = d / 2;
        let sign = if self.inverse { -1.0 } else { 1.0 };
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(h * d)
            .zip(x.par_chunks(h * d))
            .enumerate()
            .for_each(|(t, (yt, xt))| {
                let c = &cos[t * half..(t + 1) * half];
                let s = &sin[t * half..(t + 1) * half];
                for (yh, xh) in yt.chunks_mut(d).zip(xt.chunks(d)) {
                    for i in 0..half {
                        let (x1, x2) = (xh[i], xh[i + half]);
                        let si = sign * s[i];
                        yh[i] = x1 * c[i] - x2 * si;
                        yh[i + half] = x2 * c[i] + x1 * si;
                    }
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
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let sign = if self.inverse { -1.0f32 } else { 1.0 };
        let y = crate::dispatch_kernel_dtype!("rope", s1.dtype(), cuda::rope(s1, l1, s2, l2, s3, l3, sign))?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = grad
            .contiguous()?
            .apply_op3_no_bwd(cos, sin, &Rope { inverse: !self.inverse })?;
        Ok((Some(dx), None, None))
    }
}

/// The gradient of `rope(x, table)` from `dy`, outside autograd: the inverse rotation.
pub fn rope_backward(dy: &Tensor, table: &RopeTable) -> Result<Tensor> {
    dy.contiguous()?
        .apply_op3_no_bwd(&table.cos, &table.sin, &Rope { inverse: true })
}

/// The launch of `kernels/rope.cu`, written once for every `KernelRunner`.
pub mod launch {
    use crate::ops::kernel_launch::args::Rope;
    use crate::ops::kernel_launch::{int_arg, DevPtr, KernelFloat, KernelRunner, LaunchDims};
    use candle_core::Result;

    /// Rotates `x` `[tokens, heads, d]` by the per-token tables `[tokens, d/2]` (`sign` -1: the
    /// backward).
    #[allow(clippy::too_many_arguments)]
    pub fn rope<R: KernelRunner, T: KernelFloat>(
        r: &R,
        x: DevPtr<T>,
        cos: DevPtr<f32>,
        sin: DevPtr<f32>,
        tokens: usize,
        heads: usize,
        d: usize,
        sign: f32,
    ) -> Result<R::Buf<T>> {
        let mut y = r.alloc::<T>(tokens * heads * d)?;
        let args = Rope {
            x,
            c: cos,
            s: sin,
            y: r.output(&mut y, 0),
            tokens: int_arg("rope", "tokens", tokens)?,
            heads: int_arg("rope", "heads", heads)?,
            d: int_arg("rope", "head dim", d)?,
            sign,
        };
        r.launch(&args, LaunchDims::elementwise(tokens * heads * d / 2))?;
        Ok(y)
    }
}

/// `kernels/rope.cu` on candle's CUDA storages.
#[cfg(feature = "cuda")]
mod cuda {
    use crate::ops::cuda::{input, CudaRunner, KernelDType};
    use candle_core::cuda_backend::CudaStorage;
    use candle_core::{Layout, Result};

    pub fn rope<T: KernelDType>(
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
        sign: f32,
    ) -> Result<CudaStorage> {
        let r = CudaRunner { dev: &s1.device };
        let (n, h, d) = l1.shape().dims3()?;
        let x = input::<T>("rope", s1, l1)?;
        let cos = input::<f32>("rope (cos table)", s2, l2)?;
        let sin = input::<f32>("rope (sin table)", s3, l3)?;
        let y = super::launch::rope(&r, x, cos, sin, n, h, d, sign)?;
        Ok(CudaStorage::wrap_cuda_slice(y, s1.device.clone()))
    }
}

/// The composed reference of RoPE and its case in the kernel checks.
pub mod check {
    use super::super::check::{Input, Suite};
    use super::RopeTable;
    use candle_core::{Device, Result, Tensor, D};

    /// Rotate-half RoPE of `x [N, H, D]` with per-token `cos, sin [N, D/2]`, composed from
    /// tensor ops.
    pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let d = x.dim(D::Minus1)?;
        let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
        let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
        let x1 = x.narrow(D::Minus1, 0, d / 2)?;
        let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    }

    /// Positions that restart (packed documents), three heads, a head dim of 80.
    pub fn selftest(s: &mut Suite) -> anyhow::Result<()> {
        let (n, heads, d) = (29, 3, 80);
        let positions: Vec<u32> = (0..n as u32).map(|p| (p * 7) % 23).collect();
        let table = RopeTable::new(&positions, d, 1_000_000.0, &Device::Cpu)?;
        let inputs = vec![
            Input::var(s.randn(&[n, heads, d], 1.0)?),
            Input::fixed(table.cos.clone()),
            Input::fixed(table.sin.clone()),
        ];
        s.compare_with_grads(
            &format!("rope [{n}x{heads}x{d}]"),
            inputs,
            &|t| {
                let table = RopeTable {
                    cos: t[1].clone(),
                    sin: t[2].clone(),
                };
                super::rope(&t[0], &table)
            },
            &|t| rope(&t[0], &t[1], &t[2]),
        )
    }
}
