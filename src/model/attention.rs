//! `Attention { q_proj, k_proj, v_proj, o_proj }` (`self_attn`): projections with bias on q, k
//! and v — stacked into one `Linear` (`qkv`), so one GEMM computes all three and one GEMM each
//! gives their weight and input gradients — then one fused pass adds the bias, applies RoPE to
//! q and k and lays q, k, v out for the attention (`ops::qkv_rope`), grouped-query attention,
//! output projection. What the attention runs
//! over is the caller's (`Attend`): a packed batch's documents (training and full forwards, with
//! or without saving for the backward) or the KV caches of generation — one body for all.

use super::linear::Linear;
use super::params::ParamSource;
use crate::ops::attention::{attention_forward, AttentionSaved};
use crate::ops::rope::qkv_rope_backward;
use crate::ops::{qkv_rope, varlen_causal_attention, DocSegments, QkvHeads, RopeTable};
use anyhow::{Context, Result};
use candle_core::Tensor;

/// Head counts and size of one attention block.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub q: usize,
    pub kv: usize,
    pub dim: usize,
}

#[derive(Clone, Debug)]
pub struct Attention {
    /// `q_proj`, `k_proj`, `v_proj` stacked: `[(q + 2 kv heads) · dim, hidden]`, with bias.
    pub qkv: Linear,
    pub o_proj: Linear,
    pub heads: Heads,
}

/// What the attention of one forward attends over.
pub enum Attend<'a> {
    /// The documents of a packed batch, keeping what the backward needs.
    Train(&'a DocSegments),
    /// The documents of a packed batch, keeping nothing.
    Infer(&'a DocSegments),
    /// Anything else (KV caches): `(q, k, v)` after RoPE, `[n, heads, dim]`, to `[n, q heads,
    /// dim]` in any float dtype.
    With(&'a mut dyn FnMut(&Tensor, &Tensor, &Tensor) -> Result<Tensor>),
}

/// What `Attention::backward` needs from the forward (q, k, v and the output are in `attn`).
pub struct AttentionState {
    attn: AttentionSaved,
    /// The attention output as the output projection read it: `[n, heads * dim]`.
    out: Tensor,
}

impl Attention {
    pub fn new(src: &ParamSource, hidden: usize, heads: Heads) -> Result<Self> {
        let (q, kv) = (heads.q * heads.dim, heads.kv * heads.dim);
        Ok(Self {
            qkv: Linear::stacked(src, &[("q_proj", q), ("k_proj", kv), ("v_proj", kv)], hidden, true)?,
            o_proj: Linear::new(&src.pp("o_proj"), q, hidden, false)?,
            heads,
        })
    }

    /// The same parameters outside autograd (shared storage).
    pub fn detached(&self) -> Self {
        Self {
            qkv: self.qkv.detached(),
            o_proj: self.o_proj.detached(),
            heads: self.heads,
        }
    }

    fn scale(&self) -> f64 {
        1.0 / (self.heads.dim as f64).sqrt()
    }

    /// `h [n, hidden]` at the positions of `table` → `[n, hidden]`, and (with
    /// `Attend::Train`) what the backward needs.
    pub fn forward(
        &self,
        h: &Tensor,
        table: &RopeTable,
        attend: Attend<'_>,
    ) -> Result<(Tensor, Option<AttentionState>)> {
        let n = h.dim(0)?;
        let Heads { q: hq, kv: hkv, dim: d } = self.heads;
        let bias = self.qkv.bias.as_ref().context("the q/k/v projection has no bias")?;
        let (q, k, v) = qkv_rope(&self.qkv.project(h)?, bias, table, QkvHeads { q: hq, kv: hkv })?;
        let (a, attn) = match attend {
            Attend::Train(segs) => {
                let (a, saved) = attention_forward(&q, &k, &v, segs, self.scale())?;
                (a, Some(saved))
            }
            Attend::Infer(segs) => (varlen_causal_attention(&q, &k, &v, segs, self.scale())?, None),
            Attend::With(f) => (f(&q, &k, &v)?.to_dtype(h.dtype())?, None),
        };
        let out = a.reshape((n, hq * d))?;
        let y = self.o_proj.forward(&out)?;
        Ok((y, attn.map(|attn| AttentionState { attn, out })))
    }

    /// Adds the parameter gradients into `grads` and returns the gradient of `h`.
    pub fn backward(
        &self,
        h: &Tensor,
        table: &RopeTable,
        state: &AttentionState,
        dy: &Tensor,
        grads: &Attention,
    ) -> Result<Tensor> {
        let n = h.dim(0)?;
        let Heads { q: hq, dim: d, .. } = self.heads;
        let da = self.o_proj.backward(&state.out, dy, &grads.o_proj)?;
        let (dq, dk, dv) = state.attn.backward(&da.reshape((n, hq, d))?)?;
        let dqkv = qkv_rope_backward(&dq, &dk, &dv, table)?;
        self.qkv.backward(h, &dqkv, &grads.qkv)
    }
}
