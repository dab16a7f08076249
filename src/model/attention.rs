//! `Attention { q_proj, k_proj, v_proj, o_proj }` (`self_attn`): projections with bias on q, k
//! and v, RoPE on q and k, grouped-query attention, output projection. What the attention runs
//! over is the caller's (`Attend`): a packed batch's documents (training and full forwards, with
//! or without saving for the backward) or the KV caches of generation — one body for all.

use super::linear::Linear;
use super::params::ParamSource;
use crate::ops::attention::{attention_forward, AttentionSaved};
use crate::ops::rope::rope_backward;
use crate::ops::{rope, varlen_causal_attention, DocSegments, RopeTable};
use anyhow::Result;
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
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
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
            q_proj: Linear::new(&src.pp("q_proj"), hidden, q, true)?,
            k_proj: Linear::new(&src.pp("k_proj"), hidden, kv, true)?,
            v_proj: Linear::new(&src.pp("v_proj"), hidden, kv, true)?,
            o_proj: Linear::new(&src.pp("o_proj"), q, hidden, false)?,
            heads,
        })
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
        let q = rope(&self.q_proj.forward(h)?.reshape((n, hq, d))?, table)?;
        let k = rope(&self.k_proj.forward(h)?.reshape((n, hkv, d))?, table)?;
        let v = self.v_proj.forward(h)?.reshape((n, hkv, d))?;
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
        let Heads { q: hq, kv: hkv, dim: d } = self.heads;
        let da = self.o_proj.backward(&state.out, dy, &grads.o_proj)?;
        let (dq, dk, dv) = state.attn.backward(&da.reshape((n, hq, d))?)?;
        let dq = rope_backward(&dq, table)?.reshape((n, hq * d))?;
        let dk = rope_backward(&dk, table)?.reshape((n, hkv * d))?;
        let dh = self.q_proj.backward(h, &dq, &grads.q_proj)?;
        let dh = (dh + self.k_proj.backward(h, &dk, &grads.k_proj)?)?;
        Ok((dh + self.v_proj.backward(h, &dv.reshape((n, hkv * d))?, &grads.v_proj)?)?)
    }
}
