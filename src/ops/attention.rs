//! Attention over packed rows that is causal within each document and never crosses a
//! document boundary ("varlen" attention), with grouped-query heads and its backward.
//!
//! Tokens are flattened to `[tokens, heads, head_dim]`; `DocSegments` gives, for every token,
//! the first token it may attend to. On CPU a fused op computes scores one query at a time and
//! never materialises a `[T, T]` mask; other devices use the composed path with a block-diagonal
//! mask per row.

use super::{axpy, dot, with_cpu_f32};
use candle_core::{bail, CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// Document structure of a packed batch of `rows × seq_len` tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocSegments {
    /// For each flattened token, the flattened index of its document's first token.
    pub start: Arc<Vec<u32>>,
    pub rows: usize,
    pub seq_len: usize,
}

impl DocSegments {
    /// Derives documents from position ids (`rows × seq_len`, row-major): a new document starts
    /// at the beginning of each row and wherever the position does not continue the previous
    /// one (`pos[t] != pos[t-1] + 1`).
    pub fn from_positions(positions: &[u32], rows: usize, seq_len: usize) -> Result<Self> {
        if positions.len() != rows * seq_len {
            bail!(
                "position ids hold {} tokens, expected rows × seq_len = {rows} × {seq_len}",
                positions.len()
            );
        }
        let mut start = Vec::with_capacity(positions.len());
        for r in 0..rows {
            let mut s = r * seq_len;
            for t in 0..seq_len {
                let i = r * seq_len + t;
                if t > 0 && positions[i] != positions[i - 1].wrapping_add(1) {
                    s = i;
                }
                start.push(s as u32);
            }
        }
        Ok(Self { start: Arc::new(start), rows, seq_len })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }

    /// `[rows, 1, seq_len, seq_len]` additive mask: 0 where query t may see key s, -inf elsewhere.
    pub fn additive_mask(&self, device: &Device) -> Result<Tensor> {
        let (rows, t) = (self.rows, self.seq_len);
        let mut m = vec![f32::NEG_INFINITY; rows * t * t];
        for r in 0..rows {
            for q in 0..t {
                let gq = r * t + q;
                let first = self.start[gq] as usize - r * t;
                for k in first..=q {
                    m[(r * t + q) * t + k] = 0.0;
                }
            }
        }
        Tensor::from_vec(m, (rows, 1, t, t), device)
    }
}

/// Softmax attention of `q [N, Hq, D]` over `k, v [N, Hkv, D]` (`Hq` a multiple of `Hkv`),
/// causal within documents. Returns `[N, Hq, D]`.
pub fn varlen_causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, segs: &DocSegments, scale: f64) -> Result<Tensor> {
    let (n, hq, d) = q.dims3()?;
    let (nk, hkv, dk) = k.dims3()?;
    if nk != n || dk != d || v.dims() != k.dims() || hkv == 0 || hq % hkv != 0 || segs.len() != n {
        bail!(
            "attention: incompatible shapes q {:?} k {:?} v {:?} for {} tokens",
            q.dims(),
            k.dims(),
            v.dims(),
            segs.len()
        );
    }
    match q.device() {
        Device::Cpu => q.contiguous()?.apply_op3(
            &k.contiguous()?,
            &v.contiguous()?,
            VarlenAttention { segs: segs.clone(), scale: scale as f32, lse: OnceLock::new() },
        ),
        _ => composed_attention(q, k, v, segs, scale),
    }
}

/// Device-generic attention from candle primitives: per row, `softmax(q kᵀ · scale + mask) v`
/// with a block-diagonal causal mask. Used on devices without a fused implementation and as the
/// tests' reference.
pub fn composed_attention(q: &Tensor, k: &Tensor, v: &Tensor, segs: &DocSegments, scale: f64) -> Result<Tensor> {
    let (n, hq, d) = q.dims3()?;
    let hkv = k.dim(1)?;
    let (rows, t) = (segs.rows, segs.seq_len);
    let group = hq / hkv;
    let to_heads = |x: &Tensor, h: usize| -> Result<Tensor> { x.reshape((rows, t, h, d))?.transpose(1, 2)?.contiguous() };
    let q4 = to_heads(q, hq)?;
    let repeat = |x: &Tensor| -> Result<Tensor> {
        let x = to_heads(x, hkv)?;
        if group == 1 {
            return Ok(x);
        }
        x.unsqueeze(2)?
            .broadcast_as((rows, hkv, group, t, d))?
            .reshape((rows, hq, t, d))?
            .contiguous()
    };
    let (k4, v4) = (repeat(k)?, repeat(v)?);
    let scores = (q4.matmul(&k4.t()?)? * scale)?;
    let scores = scores.broadcast_add(&segs.additive_mask(q.device())?.to_dtype(scores.dtype())?)?;
    let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
    probs.matmul(&v4)?.transpose(1, 2)?.reshape((n, hq, d))
}

struct VarlenAttention {
    segs: DocSegments,
    scale: f32,
    /// Log-sum-exp of every (head, query) row, head-major, saved by the forward for the backward.
    lse: OnceLock<Vec<f32>>,
}

/// Shapes of one attention call.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    hq: usize,
    hkv: usize,
    d: usize,
}

impl Dims {
    fn q(&self, i: usize, h: usize) -> std::ops::Range<usize> {
        let o = (i * self.hq + h) * self.d;
        o..o + self.d
    }
    fn kv(&self, j: usize, g: usize) -> std::ops::Range<usize> {
        let o = (j * self.hkv + g) * self.d;
        o..o + self.d
    }
}

/// Forward for one query head: writes `o_h [N, D]` and `lse_h [N]`.
fn forward_head(h: usize, dims: Dims, q: &[f32], k: &[f32], v: &[f32], start: &[u32], scale: f32, o_h: &mut [f32], lse_h: &mut [f32]) {
    let g = h / (dims.hq / dims.hkv);
    let mut p: Vec<f32> = Vec::new();
    for i in 0..dims.n {
        let s = start[i] as usize;
        let qi = &q[dims.q(i, h)];
        p.clear();
        let mut m = f32::NEG_INFINITY;
        for j in s..=i {
            let sc = scale * dot(qi, &k[dims.kv(j, g)]);
            m = m.max(sc);
            p.push(sc);
        }
        let mut l = 0f32;
        for x in p.iter_mut() {
            *x = (*x - m).exp();
            l += *x;
        }
        let oi = &mut o_h[i * dims.d..(i + 1) * dims.d];
        oi.fill(0.0);
        for (jj, &pj) in p.iter().enumerate() {
            axpy(pj / l, &v[dims.kv(s + jj, g)], oi);
        }
        lse_h[i] = m + l.ln();
    }
}

impl VarlenAttention {
    fn dims(&self, l1: &Layout, l2: &Layout) -> Result<Dims> {
        let (n, hq, d) = l1.shape().dims3()?;
        let (_, hkv, _) = l2.shape().dims3()?;
        Ok(Dims { n, hq, hkv, d })
    }

    fn forward(&self, dims: Dims, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let Dims { n, hq, d, .. } = dims;
        let mut o_hm = vec![0f32; hq * n * d];
        let mut lse = vec![0f32; hq * n];
        o_hm.par_chunks_mut(n * d)
            .zip(lse.par_chunks_mut(n))
            .enumerate()
            .for_each(|(h, (o_h, lse_h))| forward_head(h, dims, q, k, v, &self.segs.start, self.scale, o_h, lse_h));
        // Head-major -> token-major [N, Hq, D].
        let mut o = vec![0f32; n * hq * d];
        o.par_chunks_mut(hq * d).enumerate().for_each(|(i, oi)| {
            for h in 0..hq {
                oi[h * d..(h + 1) * d].copy_from_slice(&o_hm[(h * n + i) * d..(h * n + i + 1) * d]);
            }
        });
        (o, lse)
    }

    #[allow(clippy::too_many_arguments)]
    fn backward(&self, dims: Dims, q: &[f32], k: &[f32], v: &[f32], o: &[f32], dout: &[f32], lse: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let Dims { n, hq, hkv, d } = dims;
        let group = hq / hkv;
        let start = &self.segs.start;
        let scale = self.scale;
        // Per query head: dq_h, dk_h, dv_h, each [N, D].
        let per_head: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..hq)
            .into_par_iter()
            .map(|h| {
                let g = h / group;
                let (mut dq, mut dk, mut dv) = (vec![0f32; n * d], vec![0f32; n * d], vec![0f32; n * d]);
                for i in 0..n {
                    let s = start[i] as usize;
                    let (qi, doi) = (&q[dims.q(i, h)], &dout[dims.q(i, h)]);
                    let di = dot(doi, &o[dims.q(i, h)]);
                    let l = lse[h * n + i];
                    let dqi = &mut dq[i * d..(i + 1) * d];
                    for j in s..=i {
                        let (kj, vj) = (&k[dims.kv(j, g)], &v[dims.kv(j, g)]);
                        let p = (scale * dot(qi, kj) - l).exp();
                        let ds = p * (dot(doi, vj) - di);
                        axpy(scale * ds, kj, dqi);
                        axpy(scale * ds, qi, &mut dk[j * d..(j + 1) * d]);
                        axpy(p, doi, &mut dv[j * d..(j + 1) * d]);
                    }
                }
                (dq, dk, dv)
            })
            .collect();
        let mut dq = vec![0f32; n * hq * d];
        let mut dk = vec![0f32; n * hkv * d];
        let mut dv = vec![0f32; n * hkv * d];
        for (h, (dq_h, dk_h, dv_h)) in per_head.iter().enumerate() {
            let g = h / group;
            for i in 0..n {
                dq[dims.q(i, h)].copy_from_slice(&dq_h[i * d..(i + 1) * d]);
                axpy(1.0, &dk_h[i * d..(i + 1) * d], &mut dk[dims.kv(i, g)]);
                axpy(1.0, &dv_h[i * d..(i + 1) * d], &mut dv[dims.kv(i, g)]);
            }
        }
        (dq, dk, dv)
    }
}

impl CustomOp3 for VarlenAttention {
    fn name(&self) -> &'static str {
        "varlen_causal_attention"
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
        let name = self.name();
        let (q, k, v) = (super::cpu_f32(name, s1, l1)?, super::cpu_f32(name, s2, l2)?, super::cpu_f32(name, s3, l3)?);
        let dims = self.dims(l1, l2)?;
        let (o, lse) = self.forward(dims, q, k, v);
        let _ = self.lse.set(lse);
        Ok((CpuStorage::F32(o), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = "varlen_causal_attention_bwd";
        let grad = grad.contiguous()?;
        let (n, hq, d) = q.dims3()?;
        let hkv = k.dim(1)?;
        let dims = Dims { n, hq, hkv, d };
        let (dq, dk, dv) = with_cpu_f32(name, q, |qs| {
            with_cpu_f32(name, k, |ks| {
                with_cpu_f32(name, v, |vs| {
                    with_cpu_f32(name, res, |os| {
                        with_cpu_f32(name, &grad, |gs| {
                            let lse = match self.lse.get() {
                                Some(lse) => lse.clone(),
                                None => self.forward(dims, qs, ks, vs).1,
                            };
                            Ok(self.backward(dims, qs, ks, vs, os, gs, &lse))
                        })
                    })
                })
            })
        })?;
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, (n, hq, d), dev)?),
            Some(Tensor::from_vec(dk, (n, hkv, d), dev)?),
            Some(Tensor::from_vec(dv, (n, hkv, d), dev)?),
        ))
    }
}
