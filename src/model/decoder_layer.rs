//! `DecoderLayer { input_layernorm, self_attn, post_attention_layernorm, mlp }`, one body for
//! training, full forwards and cached generation:
//!
//! ```text
//! (x, h)   = input_layernorm(x_in + pending)      pending: the previous layer's MLP output
//! (x1, h1) = post_attention_layernorm(x + self_attn(h))
//! return (x1, mlp(h1))                            the next norm adds them
//! ```
//!
//! Each residual add is fused with the norm after it, so a layer hands its MLP output on
//! un-added. The explicit backward takes the gradient of that next sum (the same for both
//! outputs) and returns the gradient of `x_in` (also that of `pending`).

use super::attention::{Attend, Attention, AttentionState, Heads};
use super::mlp::{Mlp, MlpSaved};
use super::params::ParamSource;
use super::rms_norm::RmsNorm;
use super::Qwen2Config;
use crate::ops::RopeTable;
use anyhow::{Context, Result};
use candle_core::Tensor;

#[derive(Clone, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

/// What `DecoderLayer::backward` needs: the two residual sums (the norms' outputs are
/// recomputed from them), the attention's state and the MLP's.
pub struct LayerSaved {
    x: Tensor,
    x1: Tensor,
    attn: AttentionState,
    mlp: MlpSaved,
}

impl DecoderLayer {
    pub fn new(src: &ParamSource, cfg: &Qwen2Config) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        let heads = Heads {
            q: cfg.num_attention_heads,
            kv: cfg.num_kv_heads(),
            dim: cfg.head_dim(),
        };
        Ok(Self {
            input_layernorm: RmsNorm::new(&src.pp("input_layernorm"), h, eps)?,
            self_attn: Attention::new(&src.pp("self_attn"), h, heads)?,
            post_attention_layernorm: RmsNorm::new(&src.pp("post_attention_layernorm"), h, eps)?,
            mlp: Mlp::new(&src.pp("mlp"), h, cfg.intermediate_size)?,
        })
    }

    /// The same parameters outside autograd (shared storage).
    pub fn detached(&self) -> Self {
        Self {
            input_layernorm: self.input_layernorm.detached(),
            self_attn: self.self_attn.detached(),
            post_attention_layernorm: self.post_attention_layernorm.detached(),
            mlp: self.mlp.detached(),
        }
    }

    /// `(x1, mlp output)` of the layer for residual input `x_in` plus `pending`; with
    /// `Attend::Train`, also what the backward needs.
    pub fn forward(
        &self,
        x_in: &Tensor,
        pending: Option<&Tensor>,
        table: &RopeTable,
        attend: Attend<'_>,
    ) -> Result<(Tensor, Tensor, Option<LayerSaved>)> {
        let (x, h) = self.input_layernorm.forward(x_in, pending)?;
        let (a, attn) = self.self_attn.forward(&h, table, attend)?;
        drop(h);
        let (x1, h1) = self.post_attention_layernorm.forward(&x, Some(&a))?;
        let (m, mlp) = self.mlp.forward(&h1)?;
        let saved = attn.map(|attn| LayerSaved {
            x,
            x1: x1.clone(),
            attn,
            mlp,
        });
        Ok((x1, m, saved))
    }

    /// From the gradient `ds` of `x1 + mlp output` (the next norm's input): adds the layer's
    /// parameter gradients into `grads` and returns the gradient of `x_in` (and `pending`).
    pub fn backward(&self, saved: LayerSaved, table: &RopeTable, ds: &Tensor, grads: &DecoderLayer) -> Result<Tensor> {
        let LayerSaved { x, x1, attn, mlp } = saved;
        let h1 = self.post_attention_layernorm.normed(&x1)?;
        let dh1 = self.mlp.backward(&h1, &mlp, ds, &grads.mlp).context("mlp backward")?;
        drop((h1, mlp));
        let ds1 = self
            .post_attention_layernorm
            .backward(&x1, Some(ds), &dh1, &grads.post_attention_layernorm)?;
        drop((x1, dh1));
        let h = self.input_layernorm.normed(&x)?;
        let dh = self
            .self_attn
            .backward(&h, table, &attn, &ds1, &grads.self_attn)
            .context("attention backward")?;
        drop((h, attn));
        self.input_layernorm
            .backward(&x, Some(&ds1), &dh, &grads.input_layernorm)
    }
}
