//! Attention over packed rows that is causal within each document and never crosses a
//! document boundary ("varlen" attention), with grouped-query heads and its backward.
//!
//! Tokens are flattened to `[tokens, heads, head_dim]`; `DocSegments` gives, for every token,
//! the first token it may attend to. On CPU a fused op computes scores one query at a time and
//! never materialises a `[T, T]` mask; on CUDA, bf16 with head dim 64 or 128 runs the
//! tensor-core kernel of `flash_attention` (this CPU op is its twin), anything else
//! `chunked_attention`, a block of heads at a time with recomputation in the backward.

use super::gemm::{matmul, MatMut, MatRef};
use super::{dot, with_cpu_f32};
use candle_core::{bail, CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// Document structure of a packed batch of `rows × seq_len` tokens.
#[derive(Clone, Debug)]
pub struct DocSegments {
    /// For each flattened token, the flattened index of its document's first token.
    pub start: Arc<Vec<u32>>,
    pub rows: usize,
    pub seq_len: usize,
    /// The device mask (`device_mask`), built once per batch and shared by every layer's
    /// forward and backward.
    mask: Arc<OnceLock<Tensor>>,
    /// `start` on the device (`device_starts`), uploaded once per batch.
    device_start: Arc<OnceLock<Tensor>>,
}

impl PartialEq for DocSegments {
    fn eq(&self, other: &Self) -> bool {
        self.start == other.start && self.rows == other.rows && self.seq_len == other.seq_len
    }
}
impl Eq for DocSegments {}

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
        Ok(Self {
            start: Arc::new(start),
            rows,
            seq_len,
            mask: Arc::new(OnceLock::new()),
            device_start: Arc::new(OnceLock::new()),
        })
    }

    /// `start` as a `[tokens]` u32 tensor on `device` (what the flash-attention kernel reads),
    /// uploaded on first use and then shared by every layer's forward and backward.
    pub fn device_starts(&self, device: &Device) -> Result<Tensor> {
        if let Some(t) = self.device_start.get().filter(|t| t.device().same_device(device)) {
            return Ok(t.clone());
        }
        let t = Tensor::from_slice(self.start.as_slice(), self.start.len(), device)?;
        let _ = self.device_start.set(t.clone());
        Ok(t)
    }

    /// `[rows, 1, seq_len, seq_len]` f32 on `device`: 0 where query q may see key k (same
    /// document, k <= q), -inf elsewhere; built on the device from the documents' first tokens
    /// on first use, then reused (the batch's attention calls all ask for it).
    pub fn device_mask(&self, device: &Device) -> Result<Tensor> {
        if let Some(m) = self.mask.get().filter(|m| m.device().same_device(device)) {
            return Ok(m.clone());
        }
        let (rows, t) = (self.rows, self.seq_len);
        let starts: Vec<u32> = self
            .start
            .iter()
            .enumerate()
            .map(|(i, &s)| s - ((i / t) * t) as u32)
            .collect();
        let starts = Tensor::from_vec(starts, (rows, t, 1), device)?;
        let keys = Tensor::arange(0u32, t as u32, device)?.reshape((1, 1, t))?;
        let queries = Tensor::arange(0u32, t as u32, device)?.reshape((1, t, 1))?;
        let after_start = keys.broadcast_ge(&starts)?;
        let not_future = keys.broadcast_le(&queries)?.broadcast_as((rows, t, t))?;
        let allowed = (after_start.broadcast_as((rows, t, t))? * not_future)?;
        let zeros = Tensor::zeros((rows, t, t), candle_core::DType::F32, device)?;
        let neg = Tensor::full(f32::NEG_INFINITY, (rows, t, t), device)?;
        let m = allowed.where_cond(&zeros, &neg)?.unsqueeze(1)?;
        let _ = self.mask.set(m.clone());
        Ok(m)
    }

    /// Whether the device mask has been built (tests: it is built once per batch).
    pub fn has_device_mask(&self) -> bool {
        self.mask.get().is_some()
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
    let d = check_shapes("attention", q, k, v, segs)?;
    match AttentionKernel::for_call(q.device(), q.dtype(), d) {
        AttentionKernel::CpuFused => q.contiguous()?.apply_op3(
            &k.contiguous()?,
            &v.contiguous()?,
            VarlenAttention {
                segs: segs.clone(),
                scale: scale as f32,
                lse: OnceLock::new(),
            },
        ),
        AttentionKernel::Flash => super::flash_attention::flash_attention(q, k, v, segs, scale),
        AttentionKernel::Chunked => super::chunked_attention::chunked_attention(q, k, v, segs, scale, None),
    }
}

/// `varlen_causal_attention` outside autograd (the explicit training step): the output and
/// what its backward needs. Same kernels as the autograd op on every device.
pub fn attention_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segs: &DocSegments,
    scale: f64,
) -> Result<(Tensor, AttentionSaved)> {
    let d = check_shapes("attention", q, k, v, segs)?;
    let (q, k, v) = (q.detach(), k.detach(), v.detach());
    match AttentionKernel::for_call(q.device(), q.dtype(), d) {
        AttentionKernel::CpuFused => AttentionSaved::run(
            VarlenAttention {
                segs: segs.clone(),
                scale: scale as f32,
                lse: OnceLock::new(),
            },
            q.contiguous()?,
            k.contiguous()?,
            v.contiguous()?,
        ),
        AttentionKernel::Flash => super::flash_attention::flash_attention_forward(&q, &k, &v, segs, scale),
        AttentionKernel::Chunked => super::chunked_attention::chunked_attention_forward(&q, &k, &v, segs, scale),
    }
}

/// What the backward of one `attention_forward` needs: the op that ran it (holding its
/// log-sum-exp) and the tensors it read and wrote.
pub struct AttentionSaved {
    op: Box<dyn CustomOp3 + Send + Sync>,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
}

impl AttentionSaved {
    /// Runs `op` on `q, k, v` and keeps it with its inputs and output.
    pub(crate) fn run<C: CustomOp3 + Send + Sync + 'static>(
        op: C,
        q: Tensor,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Self)> {
        let o = q.apply_op3_no_bwd(&k, &v, &op)?;
        Ok((o.clone(), Self::new(Box::new(op), q, k, v, o)))
    }

    /// An op whose forward already ran, with its inputs and output.
    pub(crate) fn new(op: Box<dyn CustomOp3 + Send + Sync>, q: Tensor, k: Tensor, v: Tensor, o: Tensor) -> Self {
        Self { op, q, k, v, o }
    }

    /// `(dq, dk, dv)` from the output gradient.
    pub fn backward(&self, dout: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let name = self.op.name();
        match self.op.bwd(&self.q, &self.k, &self.v, &self.o, dout)? {
            (Some(dq), Some(dk), Some(dv)) => Ok((dq, dk, dv)),
            _ => bail!("{name}: the backward returned no gradient for q, k or v"),
        }
    }
}

/// The implementation `varlen_causal_attention` runs for a device, dtype and head dim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// The CPU op of this file.
    CpuFused,
    /// `kernels/flash_attention.cu` (CUDA, bf16, head dim 64 or 128).
    Flash,
    /// `chunked_attention` (any other device case).
    Chunked,
}

impl AttentionKernel {
    pub fn for_call(device: &Device, dtype: candle_core::DType, head_dim: usize) -> Self {
        if device.is_cpu() {
            Self::CpuFused
        } else if super::flash_attention::supported(device, dtype, head_dim) {
            Self::Flash
        } else {
            Self::Chunked
        }
    }

    /// A short name for check and benchmark labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::CpuFused => "fused CPU op",
            Self::Flash => "flash kernel",
            Self::Chunked => "chunked cuBLAS",
        }
    }
}

/// The head dim of `q [N, Hq, D]`, `k, v [N, Hkv, D]` over the `N` tokens of `segs` (`Hq` a
/// multiple of `Hkv`), or an error naming `op` and the shapes: the kernels index k, v and the
/// document starts by q's token count, so a mismatch must stop before any launch.
pub fn check_shapes(op: &str, q: &Tensor, k: &Tensor, v: &Tensor, segs: &DocSegments) -> Result<usize> {
    let (n, hq, d) = q.dims3()?;
    let (nk, hkv, dk) = k.dims3()?;
    if nk != n || dk != d || v.dims() != k.dims() || hkv == 0 || !hq.is_multiple_of(hkv) || segs.len() != n {
        bail!(
            "{op}: incompatible shapes q {:?} k {:?} v {:?} for {} tokens",
            q.dims(),
            k.dims(),
            v.dims(),
            segs.len()
        );
    }
    Ok(d)
}

/// Device-generic attention from candle primitives: per row, `softmax(q kᵀ · scale + mask) v`
/// with a block-diagonal causal mask. Used on devices without a fused implementation and as the
/// tests' reference.
pub fn composed_attention(q: &Tensor, k: &Tensor, v: &Tensor, segs: &DocSegments, scale: f64) -> Result<Tensor> {
    let (n, hq, d) = q.dims3()?;
    let hkv = k.dim(1)?;
    let (rows, t) = (segs.rows, segs.seq_len);
    let group = hq / hkv;
    let to_heads =
        |x: &Tensor, h: usize| -> Result<Tensor> { x.reshape((rows, t, h, d))?.transpose(1, 2)?.contiguous() };
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

/// Query rows per tile: a tile's scores are `QUERY_TILE × keys`, so memory stays bounded for
/// long documents.
const QUERY_TILE: usize = 128;

/// One unit of parallel work: a document `[start, end)` and one kv head with its query heads.
#[derive(Clone, Copy)]
struct Unit {
    start: usize,
    len: usize,
    kv_head: usize,
}

impl Dims {
    fn group(&self) -> usize {
        self.hq / self.hkv
    }

    /// Query (or output) rows of head `h` for tokens `start + a .. start + a + rows`.
    fn q_rows<'a>(&self, data: &'a [f32], start: usize, a: usize, rows: usize, h: usize) -> MatRef<'a> {
        MatRef::new(
            data,
            ((start + a) * self.hq + h) * self.d,
            rows,
            self.d,
            self.hq * self.d,
            1,
        )
    }

    /// Key (or value) rows of kv head `g` for tokens `start .. start + rows`.
    fn kv_rows<'a>(&self, data: &'a [f32], start: usize, rows: usize, g: usize) -> MatRef<'a> {
        MatRef::new(
            data,
            (start * self.hkv + g) * self.d,
            rows,
            self.d,
            self.hkv * self.d,
            1,
        )
    }
}

/// Scores of query tile `[a, a + bt)` against keys `[0, a + bt)` of one document, scaled, with the
/// causal part masked to -inf: `s` is `bt × (a + bt)`, row-major.
#[allow(clippy::too_many_arguments)]
fn tile_scores(dims: Dims, unit: Unit, h: usize, q: &[f32], k: &[f32], a: usize, bt: usize, scale: f32, s: &mut [f32]) {
    let kl = a + bt;
    let qm = dims.q_rows(q, unit.start, a, bt, h);
    let km = dims.kv_rows(k, unit.start, kl, unit.kv_head);
    matmul(MatMut::new(s, 0, bt, kl, kl, 1), qm, km.t(), scale, false);
    for i in 0..bt {
        s[i * kl + a + i + 1..(i + 1) * kl].fill(f32::NEG_INFINITY);
    }
}

impl VarlenAttention {
    fn dims(&self, l1: &Layout, l2: &Layout) -> Result<Dims> {
        let (n, hq, d) = l1.shape().dims3()?;
        let (_, hkv, _) = l2.shape().dims3()?;
        Ok(Dims { n, hq, hkv, d })
    }

    /// Documents × kv heads, in a fixed order.
    fn units(&self, dims: Dims) -> Vec<Unit> {
        let start = &self.segs.start;
        let mut docs = vec![];
        for i in 0..dims.n {
            if start[i] as usize == i {
                docs.push((i, 1));
            } else if let Some(last) = docs.last_mut() {
                last.1 += 1;
            }
        }
        docs.iter()
            .flat_map(|&(s, len)| {
                (0..dims.hkv).map(move |g| Unit {
                    start: s,
                    len,
                    kv_head: g,
                })
            })
            .collect()
    }

    /// Returns the output `[N, Hq, D]` and the log-sum-exp `[Hq, N]`.
    fn forward(&self, dims: Dims, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let Dims { n, hq, d, .. } = dims;
        let group = dims.group();
        let units = self.units(dims);
        // Per unit: output rows [len, group * d] and lse [group, len].
        let parts: Vec<(Vec<f32>, Vec<f32>)> = units
            .par_iter()
            .map(|&u| {
                let mut o = vec![0f32; u.len * group * d];
                let mut lse = vec![0f32; group * u.len];
                let mut s = vec![0f32; QUERY_TILE.min(u.len) * u.len];
                for r in 0..group {
                    let h = u.kv_head * group + r;
                    for a in (0..u.len).step_by(QUERY_TILE) {
                        let bt = QUERY_TILE.min(u.len - a);
                        let kl = a + bt;
                        tile_scores(dims, u, h, q, k, a, bt, self.scale, &mut s);
                        for i in 0..bt {
                            let row = &mut s[i * kl..(i + 1) * kl];
                            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                            let mut sum = 0f32;
                            for x in row.iter_mut() {
                                *x = (*x - m).exp();
                                sum += *x;
                            }
                            let inv = 1.0 / sum;
                            row.iter_mut().for_each(|x| *x *= inv);
                            lse[r * u.len + a + i] = m + sum.ln();
                        }
                        let pm = MatRef::new(&s, 0, bt, kl, kl, 1);
                        let vm = dims.kv_rows(v, u.start, kl, u.kv_head);
                        matmul(
                            MatMut::new(&mut o, a * group * d + r * d, bt, d, group * d, 1),
                            pm,
                            vm,
                            1.0,
                            false,
                        );
                    }
                }
                (o, lse)
            })
            .collect();
        let mut out = vec![0f32; n * hq * d];
        let mut lse = vec![0f32; hq * n];
        for (u, (o_u, lse_u)) in units.iter().zip(&parts) {
            let h0 = u.kv_head * group;
            for i in 0..u.len {
                let t = u.start + i;
                out[(t * hq + h0) * d..(t * hq + h0 + group) * d]
                    .copy_from_slice(&o_u[i * group * d..(i + 1) * group * d]);
                for r in 0..group {
                    lse[(h0 + r) * n + t] = lse_u[r * u.len + i];
                }
            }
        }
        (out, lse)
    }

    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        dims: Dims,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: &[f32],
        dout: &[f32],
        lse: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let Dims { n, hq, hkv, d } = dims;
        let group = dims.group();
        let units = self.units(dims);
        let scale = self.scale;
        // Per unit: dq [len, group * d], dk [len, d], dv [len, d].
        let parts: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = units
            .par_iter()
            .map(|&u| {
                let (mut dq, mut dk, mut dv) = (
                    vec![0f32; u.len * group * d],
                    vec![0f32; u.len * d],
                    vec![0f32; u.len * d],
                );
                let tile = QUERY_TILE.min(u.len);
                let (mut p, mut dp) = (vec![0f32; tile * u.len], vec![0f32; tile * u.len]);
                for r in 0..group {
                    let h = u.kv_head * group + r;
                    for a in (0..u.len).step_by(QUERY_TILE) {
                        let bt = QUERY_TILE.min(u.len - a);
                        let kl = a + bt;
                        tile_scores(dims, u, h, q, k, a, bt, scale, &mut p);
                        for i in 0..bt {
                            let l = lse[h * n + u.start + a + i];
                            p[i * kl..(i + 1) * kl].iter_mut().for_each(|x| *x = (*x - l).exp());
                        }
                        let pm = MatRef::new(&p, 0, bt, kl, kl, 1);
                        let dom = dims.q_rows(dout, u.start, a, bt, h);
                        // dV += Pᵀ dO
                        matmul(MatMut::new(&mut dv, 0, kl, d, d, 1), pm.t(), dom, 1.0, true);
                        // dP = dO Vᵀ
                        let vm = dims.kv_rows(v, u.start, kl, u.kv_head);
                        matmul(MatMut::new(&mut dp, 0, bt, kl, kl, 1), dom, vm.t(), 1.0, false);
                        // dS = P ∘ (dP − rowsum(dO ∘ O)) · scale, written over dP.
                        for i in 0..bt {
                            let row = ((u.start + a + i) * hq + h) * d;
                            let di = dot(&dout[row..row + d], &o[row..row + d]);
                            for (dpx, px) in dp[i * kl..(i + 1) * kl].iter_mut().zip(&p[i * kl..(i + 1) * kl]) {
                                *dpx = px * (*dpx - di) * scale;
                            }
                        }
                        let dsm = MatRef::new(&dp, 0, bt, kl, kl, 1);
                        // dQ = dS K
                        let km = dims.kv_rows(k, u.start, kl, u.kv_head);
                        matmul(
                            MatMut::new(&mut dq, a * group * d + r * d, bt, d, group * d, 1),
                            dsm,
                            km,
                            1.0,
                            false,
                        );
                        // dK += dSᵀ Q
                        let qm = dims.q_rows(q, u.start, a, bt, h);
                        matmul(MatMut::new(&mut dk, 0, kl, d, d, 1), dsm.t(), qm, 1.0, true);
                    }
                }
                (dq, dk, dv)
            })
            .collect();
        let mut dq = vec![0f32; n * hq * d];
        let mut dk = vec![0f32; n * hkv * d];
        let mut dv = vec![0f32; n * hkv * d];
        for (u, (dq_u, dk_u, dv_u)) in units.iter().zip(&parts) {
            let (g, h0) = (u.kv_head, u.kv_head * group);
            for i in 0..u.len {
                let t = u.start + i;
                dq[(t * hq + h0) * d..(t * hq + h0 + group) * d]
                    .copy_from_slice(&dq_u[i * group * d..(i + 1) * group * d]);
                dk[(t * hkv + g) * d..(t * hkv + g + 1) * d].copy_from_slice(&dk_u[i * d..(i + 1) * d]);
                dv[(t * hkv + g) * d..(t * hkv + g + 1) * d].copy_from_slice(&dv_u[i * d..(i + 1) * d]);
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
        let (q, k, v) = (
            super::cpu_f32(name, s1, l1)?,
            super::cpu_f32(name, s2, l2)?,
            super::cpu_f32(name, s3, l3)?,
        );
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
