//! Rotary position embedding (rotate-half form, as Qwen2 and transformers apply it) with its
//! backward, driven by per-token position ids so positions restart in each packed document.
//!
//! RoPE runs where q, k and v come out of the attention's stacked projection (`qkv_rope`): one
//! pass reads the GEMM's `[tokens, (q + 2 kv heads) · d]` rows, adds the bias, rotates q and k,
//! and writes q, k and v each contiguous `[tokens, heads, d]` (the attention's layout) — the
//! bias add, the three splits and the two rotations of the composed form in one kernel. The
//! backward (`qkv_rope_backward`) rotates the q and k gradients back and packs them with v's
//! into the stacked layout the projection's GEMMs take (the bias gradient is their column sum).

use super::cpu_f32;
use super::with_cpu_f32;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Tensor};
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

/// Head counts of one stacked q/k/v projection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QkvHeads {
    pub q: usize,
    pub kv: usize,
}

impl QkvHeads {
    fn slots(self) -> usize {
        self.q + 2 * self.kv
    }
}

/// Checks the table against `tokens` rows of head dim `d` and returns the pair count `d / 2`.
fn check_table(op: &str, table: &RopeTable, tokens: usize, d: usize) -> Result<usize> {
    if d == 0 || !d.is_multiple_of(2) || table.cos.dims() != [tokens, d / 2] || table.sin.dims() != [tokens, d / 2] {
        bail!(
            "{op}: table {:?} does not fit {tokens} tokens of head dim {d}",
            table.cos.dims()
        );
    }
    Ok(d / 2)
}

/// `(q, k, v)` `[tokens, heads, d]` from the stacked projection `qkv [tokens, (q + 2 kv) · d]`
/// (without its bias) and the stacked `bias`: bias added, q and k rotated by the table.
pub fn qkv_rope(qkv: &Tensor, bias: &Tensor, table: &RopeTable, heads: QkvHeads) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, w) = qkv.dims2()?;
    if heads.q == 0 || heads.kv == 0 || !w.is_multiple_of(heads.slots()) || bias.dims() != [w] {
        bail!(
            "qkv_rope: qkv {:?} and bias {:?} do not fit {} q and {} kv heads",
            qkv.dims(),
            bias.dims(),
            heads.q,
            heads.kv
        );
    }
    let d = w / heads.slots();
    check_table("qkv_rope", table, n, d)?;
    let op = QkvRope {
        table: table.clone(),
        heads,
    };
    let out = qkv.contiguous()?.apply_op2(&bias.contiguous()?, op)?;
    let (qn, kn) = (n * heads.q * d, n * heads.kv * d);
    Ok((
        out.narrow(0, 0, qn)?.reshape((n, heads.q, d))?,
        out.narrow(0, qn, kn)?.reshape((n, heads.kv, d))?,
        out.narrow(0, qn + kn, kn)?.reshape((n, heads.kv, d))?,
    ))
}

/// The gradient of `qkv_rope`'s `qkv` input (`[tokens, (q + 2 kv) · d]`) from the gradients
/// of q, k and v, outside autograd (the bias gradient is its column sum).
pub fn qkv_rope_backward(dq: &Tensor, dk: &Tensor, dv: &Tensor, table: &RopeTable) -> Result<Tensor> {
    let (n, _, d) = dq.dims3()?;
    let (_, hkv, _) = dk.dims3()?;
    if dk.dims() != [n, hkv, d] || dv.dims() != [n, hkv, d] {
        bail!(
            "qkv_rope_bwd: dq {:?}, dk {:?} and dv {:?} do not fit",
            dq.dims(),
            dk.dims(),
            dv.dims()
        );
    }
    check_table("qkv_rope_bwd", table, n, d)?;
    let op = QkvRopeBwd { table: table.clone() };
    dq.contiguous()?
        .apply_op3_no_bwd(&dk.contiguous()?, &dv.contiguous()?, &op)
}

/// Forward: `(qkv, bias)` → `[q block | k block | v block]`, flat.
struct QkvRope {
    table: RopeTable,
    heads: QkvHeads,
}

/// Backward: `(dq, dk, dv)` → `[tokens, (q + 2 kv) · d]`.
struct QkvRopeBwd {
    table: RopeTable,
}

impl CustomOp2 for QkvRope {
    fn name(&self) -> &'static str {
        "qkv_rope"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = cpu_f32("qkv_rope", s1, l1)?;
        let bias = cpu_f32("qkv_rope", s2, l2)?;
        let (n, w) = l1.shape().dims2()?;
        let h = self.heads;
        let d = w / h.slots();
        let half = d / 2;
        let mut out = vec![0f32; n * w];
        let (qb, rest) = out.split_at_mut(n * h.q * d);
        let (kb, vb) = rest.split_at_mut(n * h.kv * d);
        with_cpu_f32("qkv_rope (cos table)", &self.table.cos, |cos| {
            with_cpu_f32("qkv_rope (sin table)", &self.table.sin, |sin| {
                // Each block (q, k, v) is `[tokens, heads, d]`; its heads are the stacked row's
                // slots from `first` on.
                for (block, first, heads, rotate) in
                    [(qb, 0, h.q, true), (kb, h.q, h.kv, true), (vb, h.q + h.kv, h.kv, false)]
                {
                    block.par_chunks_mut(heads * d).enumerate().for_each(|(t, yt)| {
                        let (c, sn) = (&cos[t * half..(t + 1) * half], &sin[t * half..(t + 1) * half]);
                        for (j, y) in yt.chunks_mut(d).enumerate() {
                            let s = first + j;
                            let x = &qkv[t * w + s * d..][..d];
                            let b = &bias[s * d..][..d];
                            for i in 0..half {
                                let (x1, x2) = (x[i] + b[i], x[i + half] + b[i + half]);
                                if rotate {
                                    y[i] = x1 * c[i] - x2 * sn[i];
                                    y[i + half] = x2 * c[i] + x1 * sn[i];
                                } else {
                                    y[i] = x1;
                                    y[i + half] = x2;
                                }
                            }
                        }
                    });
                }
                Ok(())
            })
        })?;
        Ok((CpuStorage::F32(out), Shape::from(n * w)))
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
        let (n, w) = l1.shape().dims2()?;
        let y = crate::dispatch_kernel_dtype!(
            "qkv_rope",
            s1.dtype(),
            cuda::fwd(s1, l1, s2, l2, &self.table, self.heads)
        )?;
        Ok((y, Shape::from(n * w)))
    }

    fn bwd(
        &self,
        _qkv: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = self.table.cos.dim(0)?;
        let h = self.heads;
        let d = grad.elem_count() / (n * h.slots());
        let (qn, kn) = (n * h.q * d, n * h.kv * d);
        let grad = grad.contiguous()?;
        let dq = grad.narrow(0, 0, qn)?.reshape((n, h.q, d))?;
        let dk = grad.narrow(0, qn, kn)?.reshape((n, h.kv, d))?;
        let dv = grad.narrow(0, qn + kn, kn)?.reshape((n, h.kv, d))?;
        let dqkv = qkv_rope_backward(&dq, &dk, &dv, &self.table)?;
        let dbias = dqkv.sum(0)?;
        Ok((Some(dqkv), Some(dbias)))
    }
}

impl CustomOp3 for QkvRopeBwd {
    fn name(&self) -> &'static str {
        "qkv_rope_bwd"
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
        let dq = cpu_f32("qkv_rope_bwd", s1, l1)?;
        let dk = cpu_f32("qkv_rope_bwd", s2, l2)?;
        let dv = cpu_f32("qkv_rope_bwd", s3, l3)?;
        let (n, hq, d) = l1.shape().dims3()?;
        let hkv = l2.shape().dims3()?.1;
        let h = QkvHeads { q: hq, kv: hkv };
        let (w, half) = (h.slots() * d, d / 2);
        let mut out = vec![0f32; n * w];
        with_cpu_f32("qkv_rope_bwd (cos table)", &self.table.cos, |cos| {
            with_cpu_f32("qkv_rope_bwd (sin table)", &self.table.sin, |sin| {
                out.par_chunks_mut(w).enumerate().for_each(|(t, row)| {
                    let (c, sn) = (&cos[t * half..(t + 1) * half], &sin[t * half..(t + 1) * half]);
                    for s in 0..h.slots() {
                        let (src, rotate): (&[f32], bool) = if s < hq {
                            (&dq[(t * hq + s) * d..][..d], true)
                        } else if s < hq + hkv {
                            (&dk[(t * hkv + s - hq) * d..][..d], true)
                        } else {
                            (&dv[(t * hkv + s - hq - hkv) * d..][..d], false)
                        };
                        let y = &mut row[s * d..(s + 1) * d];
                        for i in 0..half {
                            let (g1, g2) = (src[i], src[i + half]);
                            if rotate {
                                y[i] = g1 * c[i] + g2 * sn[i];
                                y[i + half] = g2 * c[i] - g1 * sn[i];
                            } else {
                                y[i] = g1;
                                y[i + half] = g2;
                            }
                        }
                    }
                });
                Ok(())
            })
        })?;
        Ok((CpuStorage::F32(out), Shape::from((n, w))))
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
        let (n, hq, d) = l1.shape().dims3()?;
        let hkv = l2.shape().dims3()?.1;
        let y = crate::dispatch_kernel_dtype!(
            "qkv_rope_bwd",
            s1.dtype(),
            cuda::bwd(s1, l1, s2, l2, s3, l3, &self.table)
        )?;
        Ok((y, Shape::from((n, (hq + 2 * hkv) * d))))
    }
}

/// The launches of `kernels/rope.cu`, written once for every `KernelRunner`.
pub mod launch {
    use super::QkvHeads;
    use crate::ops::kernel_launch::args::{QkvRopeBwd, QkvRopeFwd};
    use crate::ops::kernel_launch::{int_arg, DevPtr, KernelFloat, KernelRunner, LaunchDims};
    use candle_core::Result;

    /// The kernels' shape arguments `(tokens, hq, hkv, d)` as the `int`s they take.
    fn shape(op: &str, tokens: usize, heads: QkvHeads, d: usize) -> Result<[i32; 4]> {
        Ok([
            int_arg(op, "tokens", tokens)?,
            int_arg(op, "q heads", heads.q)?,
            int_arg(op, "kv heads", heads.kv)?,
            int_arg(op, "head dim", d)?,
        ])
    }

    /// `[q block | k block | v block]` from `tokens` stacked rows `qkv` and the stacked `bias`.
    #[allow(clippy::too_many_arguments)]
    pub fn fwd<R: KernelRunner, T: KernelFloat>(
        r: &R,
        qkv: DevPtr<T>,
        bias: DevPtr<T>,
        cos: DevPtr<f32>,
        sin: DevPtr<f32>,
        tokens: usize,
        heads: QkvHeads,
        d: usize,
    ) -> Result<R::Buf<T>> {
        let [tokens_i, hq, hkv, d_i] = shape("qkv_rope", tokens, heads, d)?;
        let mut out = r.alloc::<T>(tokens * heads.slots() * d)?;
        let args = QkvRopeFwd {
            qkv,
            bias,
            c: cos,
            s: sin,
            out: r.output(&mut out, 0),
            tokens: tokens_i,
            hq,
            hkv,
            d: d_i,
        };
        r.launch(&args, LaunchDims::elementwise(tokens * heads.slots() * d / 2))?;
        Ok(out)
    }

    /// The stacked `[tokens, (q + 2 kv) · d]` gradient from `dq`, `dk`, `dv`.
    #[allow(clippy::too_many_arguments)]
    pub fn bwd<R: KernelRunner, T: KernelFloat>(
        r: &R,
        dq: DevPtr<T>,
        dk: DevPtr<T>,
        dv: DevPtr<T>,
        cos: DevPtr<f32>,
        sin: DevPtr<f32>,
        tokens: usize,
        heads: QkvHeads,
        d: usize,
    ) -> Result<R::Buf<T>> {
        let [tokens_i, hq, hkv, d_i] = shape("qkv_rope_bwd", tokens, heads, d)?;
        let mut out = r.alloc::<T>(tokens * heads.slots() * d)?;
        let args = QkvRopeBwd {
            dq,
            dk,
            dv,
            c: cos,
            s: sin,
            dqkv: r.output(&mut out, 0),
            tokens: tokens_i,
            hq,
            hkv,
            d: d_i,
        };
        r.launch(&args, LaunchDims::elementwise(tokens * heads.slots() * d / 2))?;
        Ok(out)
    }
}

/// `kernels/rope.cu` on candle's CUDA storages.
#[cfg(feature = "cuda")]
mod cuda {
    use super::{QkvHeads, RopeTable};
    use crate::ops::cuda::{input, tensor_input, CudaRunner, KernelDType};
    use candle_core::cuda_backend::CudaStorage;
    use candle_core::{Layout, Result};

    pub fn fwd<T: KernelDType>(
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        table: &RopeTable,
        heads: QkvHeads,
    ) -> Result<CudaStorage> {
        let r = CudaRunner { dev: &s1.device };
        let (n, w) = l1.shape().dims2()?;
        let qkv = input::<T>("qkv_rope", s1, l1)?;
        let bias = input::<T>("qkv_rope (bias)", s2, l2)?;
        let cos = tensor_input::<f32>("qkv_rope (cos table)", &table.cos)?;
        let sin = tensor_input::<f32>("qkv_rope (sin table)", &table.sin)?;
        let y = super::launch::fwd(&r, qkv, bias, cos, sin, n, heads, w / heads.slots())?;
        Ok(CudaStorage::wrap_cuda_slice(y, s1.device.clone()))
    }

    pub fn bwd<T: KernelDType>(
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
        table: &RopeTable,
    ) -> Result<CudaStorage> {
        let r = CudaRunner { dev: &s1.device };
        let (n, hq, d) = l1.shape().dims3()?;
        let hkv = l2.shape().dims3()?.1;
        let dq = input::<T>("qkv_rope_bwd", s1, l1)?;
        let dk = input::<T>("qkv_rope_bwd", s2, l2)?;
        let dv = input::<T>("qkv_rope_bwd", s3, l3)?;
        let cos = tensor_input::<f32>("qkv_rope_bwd (cos table)", &table.cos)?;
        let sin = tensor_input::<f32>("qkv_rope_bwd (sin table)", &table.sin)?;
        let heads = QkvHeads { q: hq, kv: hkv };
        let y = super::launch::bwd(&r, dq, dk, dv, cos, sin, n, heads, d)?;
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

    /// `qkv_rope` composed from tensor ops: the bias added, q, k and v split off, q and k
    /// rotated; returned flat as `[q | k | v]` (the fused op's layout).
    pub fn qkv_rope(qkv: &Tensor, bias: &Tensor, cos: &Tensor, sin: &Tensor, heads: super::QkvHeads) -> Result<Tensor> {
        let (n, w) = qkv.dims2()?;
        let d = w / heads.slots();
        let x = qkv.broadcast_add(bias)?;
        let part = |first: usize, count: usize| x.narrow(1, first * d, count * d)?.reshape((n, count, d));
        let q = rope(&part(0, heads.q)?, cos, sin)?;
        let k = rope(&part(heads.q, heads.kv)?, cos, sin)?;
        let v = part(heads.q + heads.kv, heads.kv)?;
        Tensor::cat(&[q.flatten_all()?, k.flatten_all()?, v.flatten_all()?], 0)
    }

    /// The fused op's q, k and v flattened into one `[q | k | v]` tensor.
    pub fn qkv_rope_flat(qkv: &Tensor, bias: &Tensor, table: &RopeTable, heads: super::QkvHeads) -> Result<Tensor> {
        let (q, k, v) = super::qkv_rope(qkv, bias, table, heads)?;
        Tensor::cat(&[q.flatten_all()?, k.flatten_all()?, v.flatten_all()?], 0)
    }

    /// Positions that restart (packed documents), four q and two kv heads of dim 80, a bias.
    pub fn selftest(s: &mut Suite) -> anyhow::Result<()> {
        let (n, d) = (29, 80);
        let heads = super::QkvHeads { q: 4, kv: 2 };
        let positions: Vec<u32> = (0..n as u32).map(|p| (p * 7) % 23).collect();
        let table = RopeTable::new(&positions, d, 1_000_000.0, &Device::Cpu)?;
        let w = (heads.q + 2 * heads.kv) * d;
        let inputs = vec![
            Input::var(s.randn(&[n, w], 1.0)?),
            Input::var(s.randn(&[w], 0.5)?),
            Input::fixed(table.cos.clone()),
            Input::fixed(table.sin.clone()),
        ];
        s.compare_with_grads(
            &format!("qkv_rope [{n}x(4+2+2)x{d}]"),
            inputs,
            &|t| {
                let table = RopeTable {
                    cos: t[2].clone(),
                    sin: t[3].clone(),
                };
                qkv_rope_flat(&t[0], &t[1], &table, heads)
            },
            &|t| qkv_rope(&t[0], &t[1], &t[2], &t[3], heads),
        )
    }
}
