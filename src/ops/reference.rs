//! Plain composed-candle versions of the fused ops, written for clarity, not speed. The tests
//! compare every fused op's forward and input gradients against these; on CPU nothing on the
//! training path calls them (`adamw` serves other devices until they have a kernel).

use super::linear_cross_entropy::IGNORE_INDEX;
use candle_core::{DType, Result, Tensor, D};

/// `w * x / sqrt(mean(x^2) + eps)` over the last dimension.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

/// Rotate-half RoPE of `x [N, H, D]` with per-token `cos, sin [N, D/2]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}

/// `silu(gate) * up` with silu spelled out as `g / (1 + exp(-g))`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let silu = (gate / (gate.neg()?.exp()? + 1.0)?)?;
    silu * up
}

/// Summed cross-entropy of the full logits `hidden · weightᵀ` over non-ignored targets.
pub fn linear_cross_entropy(hidden: &Tensor, weight: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = hidden.matmul(&weight.t()?)?;
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let keep = targets.ne(IGNORE_INDEX)?;
    let safe = keep.where_cond(targets, &targets.zeros_like()?)?;
    let picked = log_probs.gather(&safe.unsqueeze(1)?, 1)?.squeeze(1)?;
    (picked * keep.to_dtype(DType::F32)?)?.sum_all()?.neg()
}

/// AdamW (PyTorch's formula) spelled out with tensor ops: returns `(master, m, v)`.
pub fn adamw(
    master: &Tensor,
    m: &Tensor,
    v: &Tensor,
    grad: &Tensor,
    h: &super::adamw::AdamWStep,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (decay, step_size, bc2_sqrt) = h.factors();
    let g = (grad.to_dtype(DType::F32)? * h.grad_scale)?;
    let m = (m + ((&g - m)? * (1.0 - h.beta1))?)?;
    let v = ((v * h.beta2)? + (g.sqr()? * (1.0 - h.beta2))?)?;
    let denom = ((v.sqrt()? / bc2_sqrt)? + h.eps)?;
    let p = ((master * decay)? - ((&m / denom)? * step_size)?)?;
    Ok((p, m, v))
}

/// Σ x² in f64 through a plain f64 tensor sum.
pub fn sum_squares(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()
}

/// Causal attention of `q [n, H, D]` (positions `start..start+n`) over all cached `k, v
/// [start+n, Hkv, D]`, composed from tensor ops.
pub fn cached_attention(q: &Tensor, k: &Tensor, v: &Tensor, start: usize, scale: f64) -> Result<Tensor> {
    let (n, hq, d) = q.dims3()?;
    let (t, hkv, _) = k.dims3()?;
    let group = hq / hkv;
    let repeat = |x: &Tensor| -> Result<Tensor> {
        x.unsqueeze(2)?
            .broadcast_as((t, hkv, group, d))?
            .reshape((t, hq, d))?
            .transpose(0, 1)?
            .contiguous()
    };
    let (k, v) = (repeat(k)?, repeat(v)?);
    let q = q.transpose(0, 1)?.contiguous()?;
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| (0..t).map(move |j| if j <= start + i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    let mask = Tensor::from_vec(mask, (1, n, t), q.device())?;
    let probs = candle_nn::ops::softmax(&scores.broadcast_add(&mask)?, D::Minus1)?;
    probs.matmul(&v)?.transpose(0, 1)
}
