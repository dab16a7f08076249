//! Causal attention of new query tokens against a sequence's key/value cache (inference):
//! query `i` of the new block, at absolute position `start + i`, attends to cached positions
//! `0..=start + i`. GQA: query head `h` reads kv head `h / (heads / kv_heads)`. Rows are
//! `[tokens, heads * head_dim]` f32, as the KV cache stores them. Work is split over
//! (query, head) pairs; each softmax runs in f32 with the max subtracted.

use super::dot;
use rayon::prelude::*;

/// Shapes of one cached-attention call.
#[derive(Clone, Copy, Debug)]
pub struct CachedAttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Position of the first new query (= cached tokens before this block).
    pub start: usize,
    pub scale: f32,
}

/// `out[i, h] = softmax(q[i, h] · K[0..=start+i, kv(h)]ᵀ · scale) · V[..]`, for `q` of `n` new
/// tokens; `k` and `v` hold at least `start + n` cached rows.
pub fn cached_attention_cpu(q: &[f32], k: &[f32], v: &[f32], s: CachedAttentionShape, out: &mut [f32]) {
    let n = q.len() / (s.heads * s.head_dim);
    cached_attention_batch_cpu(q, &[(k, v, s.start, n)], s, out);
}

/// The same for several sequences in one parallel pass: `seqs[j] = (keys, values, start, new
/// tokens)`, their queries stacked in `q` in order (`shape.start` is ignored). One pass keeps
/// the thread hand-offs per layer constant however many sequences a decode step has.
pub fn cached_attention_batch_cpu(
    q: &[f32],
    seqs: &[(&[f32], &[f32], usize, usize)],
    s: CachedAttentionShape,
    out: &mut [f32],
) {
    let (hq, hkv, d) = (s.heads, s.kv_heads, s.head_dim);
    let group = hq / hkv;
    let (qw, kw) = (hq * d, hkv * d);
    // Per stacked query row: its sequence and its index within the sequence's new tokens.
    let rows: Vec<(usize, usize)> = seqs
        .iter()
        .enumerate()
        .flat_map(|(j, &(_, _, _, n))| (0..n).map(move |i| (j, i)))
        .collect();
    out.par_chunks_mut(d).enumerate().for_each(|(idx, o)| {
        let (r, h) = (idx / hq, idx % hq);
        let (j, i) = rows[r];
        let (k, v, start, _) = seqs[j];
        let kvh = h / group;
        let qrow = &q[r * qw + h * d..r * qw + (h + 1) * d];
        let visible = start + i + 1;
        let mut scores: Vec<f32> = (0..visible)
            .map(|j| dot(qrow, &k[j * kw + kvh * d..j * kw + (kvh + 1) * d]) * s.scale)
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for x in scores.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        o.fill(0.0);
        for (j, p) in scores.iter().enumerate() {
            let w = p / sum;
            let vrow = &v[j * kw + kvh * d..j * kw + (kvh + 1) * d];
            for (a, b) in o.iter_mut().zip(vrow) {
                *a += w * b;
            }
        }
    });
}

/// The same attention composed from tensor ops on any device (the path of KV caches kept on
/// the GPU): `q [n, H, D]` at positions `start..start+n` over the cached `k, v [start+n, Hkv,
/// D]` in any dtype, computed in f32; returns `[n, H, D]` f32. GQA repeats the kv heads; the
/// causal mask is only built when a block has more than one query.
pub fn composed_cached_attention(
    q: &candle_core::Tensor,
    k: &candle_core::Tensor,
    v: &candle_core::Tensor,
    start: usize,
    scale: f64,
) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::{DType, Tensor};
    let (q, k, v) = (
        q.to_dtype(DType::F32)?,
        k.to_dtype(DType::F32)?,
        v.to_dtype(DType::F32)?,
    );
    let (n, hq, d) = q.dims3()?;
    let (t, hkv, _) = k.dims3()?;
    let group = hq / hkv;
    let repeat = |x: &Tensor| -> candle_core::Result<Tensor> {
        x.unsqueeze(2)?
            .broadcast_as((t, hkv, group, d))?
            .reshape((t, hq, d))?
            .transpose(0, 1)?
            .contiguous()
    };
    let (k, v) = (repeat(&k)?, repeat(&v)?);
    let q = q.transpose(0, 1)?.contiguous()?;
    let mut scores = (q.matmul(&k.t()?)? * scale)?;
    if n > 1 {
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| (0..t).map(move |j| if j <= start + i { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        scores = scores.broadcast_add(&Tensor::from_vec(mask, (1, n, t), q.device())?)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores.contiguous()?)?;
    probs.matmul(&v)?.transpose(0, 1)?.contiguous()
}

/// The composed reference of cached attention (the tests compare the CPU op with it).
pub mod check {
    use candle_core::{Result, Tensor};

    /// Causal attention of `q [n, H, D]` (positions `start..start+n`) over all cached `k, v
    /// [start+n, Hkv, D]`, composed from tensor ops (`super::composed_cached_attention`).
    pub fn cached_attention(q: &Tensor, k: &Tensor, v: &Tensor, start: usize, scale: f64) -> Result<Tensor> {
        super::composed_cached_attention(q, k, v, start, scale)
    }
}
