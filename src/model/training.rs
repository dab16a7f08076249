//! The explicit training step of the whole model, without candle's autograd: the forward keeps
//! exactly what each layer's backward needs (or, with activation checkpointing, only the inputs
//! of every N-th layer, recomputing the rest in the backward), the loss hands back the hidden
//! states' gradient already scaled, and every parameter gradient is added in place into f32
//! buffers allocated once (`GradBuffers`) — across micro-batches too.

use super::decoder_layer::LayerSaved;
use super::params::ParamSource;
use super::qwen2::Modules;
use super::{PackedBatch, Qwen2, Qwen2Config};
use crate::ops::embedding::add_embedding_grad;
use crate::ops::grad_accumulate::zero;
use crate::ops::linear_cross_entropy::linear_cross_entropy_backward;
use crate::ops::RopeTable;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// One f32 gradient per parameter, as the module tree over zero tensors (so every module finds
/// its gradient in the same place as its weight; with tied embeddings the output projection's
/// gradient lands in the embedding's buffer).
pub struct GradBuffers {
    pub modules: Modules,
    /// The buffers by Hugging Face name, in `param_specs` order.
    pub named: Vec<(String, Tensor)>,
}

impl GradBuffers {
    /// Zero buffers for a model of `cfg` on `device`.
    pub fn new(cfg: &Qwen2Config, device: &Device) -> Result<Self> {
        let src = ParamSource::zeros(device);
        let modules = Modules::new(&src, cfg)?;
        Ok(Self {
            modules,
            named: src.taken().params,
        })
    }

    /// Sets every buffer to zero in place (the start of an optimizer step).
    pub fn zero(&self) -> Result<()> {
        for (_, t) in &self.named {
            zero(t)?;
        }
        Ok(())
    }
}

/// How much of the forward the backward recomputes (`train.activation_checkpointing`:
/// `"none"`, `"layers"` = every layer, or a number N of layers per recomputed span). The
/// gradients are the same bits whichever is chosen; only memory and time change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CheckpointingRepr", into = "CheckpointingRepr")]
pub enum Checkpointing {
    /// Keep every layer's saved activations.
    #[default]
    None,
    /// Keep only the input of every `n`-th layer (1: of every layer); the backward recomputes
    /// each span of `n` layers' forward from its input just before going back through it.
    Every(usize),
}

/// The config's spelling of `Checkpointing`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum CheckpointingRepr {
    Name(String),
    Every(usize),
}

impl TryFrom<CheckpointingRepr> for Checkpointing {
    type Error = String;

    fn try_from(r: CheckpointingRepr) -> std::result::Result<Self, String> {
        match r {
            CheckpointingRepr::Name(n) if n == "none" => Ok(Checkpointing::None),
            CheckpointingRepr::Name(n) if n == "layers" => Ok(Checkpointing::Every(1)),
            CheckpointingRepr::Every(n) if n >= 1 => Ok(Checkpointing::Every(n)),
            CheckpointingRepr::Name(n) => Err(format!(
                "expected \"none\", \"layers\" or a number of layers per span (≥ 1), got {n:?}"
            )),
            CheckpointingRepr::Every(_) => Err("the number of layers per span must be at least 1".into()),
        }
    }
}

impl From<Checkpointing> for CheckpointingRepr {
    fn from(c: Checkpointing) -> Self {
        match c {
            Checkpointing::None => CheckpointingRepr::Name("none".into()),
            Checkpointing::Every(1) => CheckpointingRepr::Name("layers".into()),
            Checkpointing::Every(n) => CheckpointingRepr::Every(n),
        }
    }
}

/// The config's spelling: `"none"`, `"layers"` or the span length.
impl std::fmt::Display for Checkpointing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match CheckpointingRepr::from(*self) {
            CheckpointingRepr::Name(n) => write!(f, "{n:?}"),
            CheckpointingRepr::Every(n) => write!(f, "{n}"),
        }
    }
}

impl Checkpointing {
    /// Layers per recomputed span (the whole model when not checkpointing).
    fn span(self, layers: usize) -> usize {
        match self {
            Checkpointing::None => layers.max(1),
            Checkpointing::Every(n) => n.clamp(1, layers.max(1)),
        }
    }
}

/// The loss of one micro-batch of the explicit step; its gradients are in the buffers.
pub struct MicroLoss {
    /// Σ per-token loss (unscaled), an f32 scalar on the device.
    pub loss_sum: Tensor,
    /// Device-side count of targets outside the vocabulary (CUDA), checked at the step's end.
    pub bad_targets: Option<Tensor>,
}

/// The input of a span of layers: the residual stream and the delta still to be added to it.
struct SpanInput {
    x: Tensor,
    pending: Option<Tensor>,
}

impl Qwen2 {
    /// Forward and backward of one micro-batch through the explicit step: the loss summed over
    /// its supervised targets, and `scale ·` (its gradient) added into `grads` for every
    /// parameter. `scale` is the step's `1 / supervised tokens` (all micro-batches together).
    pub fn forward_backward(
        &self,
        batch: &PackedBatch,
        targets: &Tensor,
        scale: f64,
        grads: &GradBuffers,
        checkpointing: Checkpointing,
    ) -> Result<MicroLoss> {
        self.forward_backward_hooked(batch, targets, scale, grads, checkpointing, &mut |_| Ok(()))
    }

    /// `forward_backward`, calling `layer_done(l)` as soon as layer `l`'s backward has added
    /// its gradients (last layer first): where a data-parallel step starts reducing that
    /// layer's gradients while the backward goes on.
    pub fn forward_backward_hooked(
        &self,
        batch: &PackedBatch,
        targets: &Tensor,
        scale: f64,
        grads: &GradBuffers,
        checkpointing: Checkpointing,
        layer_done: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<MicroLoss> {
        let cfg = &self.config;
        let m = self.plain_modules();
        let g = &grads.modules;
        if g.layers.len() != m.layers.len() {
            bail!(
                "gradient buffers for {} layers, the model has {}",
                g.layers.len(),
                m.layers.len()
            );
        }
        let table = RopeTable::new(&batch.positions, cfg.head_dim(), cfg.rope_theta(), self.device())?;
        let segs = &batch.segments;
        let attend = || super::attention::Attend::Train(segs);
        let span = checkpointing.span(m.layers.len());
        let keep_all = checkpointing == Checkpointing::None;

        // Forward: the input of every span; with no checkpointing, every layer's saved state.
        let mut inputs: Vec<SpanInput> = Vec::new();
        let mut saved: Vec<LayerSaved> = Vec::new();
        let mut x = crate::ops::embedding(&m.embed_tokens, &batch.tokens)?;
        let mut pending: Option<Tensor> = None;
        for (l, layer) in m.layers.iter().enumerate() {
            if l % span == 0 {
                inputs.push(SpanInput {
                    x: x.clone(),
                    pending: pending.clone(),
                });
            }
            let (x1, d, s) = layer.forward(&x, pending.as_ref(), &table, attend())?;
            if keep_all {
                saved.push(s.context("the training forward saved nothing")?);
            }
            (x, pending) = (x1, Some(d));
        }
        let (xf, hf) = m.norm.forward(&x, pending.as_ref())?;
        drop((x, pending));

        // Loss: the output projection's gradient goes into its buffer chunk by chunk.
        let loss = linear_cross_entropy_backward(
            &hf,
            m.lm_head_weight(),
            targets,
            self.loss_chunk_tokens,
            scale,
            g.lm_head_weight(),
        )
        .context("loss")?;
        drop(hf);
        let mut ds = m.norm.backward(&xf, None, &loss.dhidden, &g.norm)?;
        drop(xf);

        // Backward, span by span from the last, recomputing a span's saved state if needed.
        for (i, input) in inputs.into_iter().enumerate().rev() {
            let first = i * span;
            let end = (first + span).min(m.layers.len());
            let mut states = if keep_all {
                std::mem::take(&mut saved)
            } else {
                let mut states = Vec::with_capacity(end - first);
                let (mut x, mut pending) = (input.x, input.pending);
                for layer in &m.layers[first..end] {
                    let (x1, d, s) = layer.forward(&x, pending.as_ref(), &table, attend())?;
                    states.push(s.context("the training forward saved nothing")?);
                    (x, pending) = (x1, Some(d));
                }
                states
            };
            for l in (first..end).rev() {
                let s = states.pop().context("a layer's saved state is missing")?;
                ds = m.layers[l]
                    .backward(s, &table, &ds, &g.layers[l])
                    .with_context(|| format!("backward of layer {l}"))?;
                layer_done(l)?;
            }
        }
        add_embedding_grad(&g.embed_tokens, &ds, &batch.tokens).context("embedding gradient")?;
        Ok(MicroLoss {
            loss_sum: loss.loss_sum,
            bad_targets: loss.bad_targets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Checkpointing;

    #[derive(serde::Deserialize, serde::Serialize)]
    struct T {
        c: Checkpointing,
    }

    fn parse(v: &str) -> Result<Checkpointing, String> {
        toml::from_str::<T>(&format!("c = {v}"))
            .map(|t| t.c)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn checkpointing_reads_none_layers_or_a_span() {
        assert_eq!(parse("\"none\""), Ok(Checkpointing::None));
        assert_eq!(parse("\"layers\""), Ok(Checkpointing::Every(1)));
        assert_eq!(parse("3"), Ok(Checkpointing::Every(3)));
        assert!(parse("0").unwrap_err().contains("at least 1"));
        assert!(parse("\"all\"").unwrap_err().contains("\"layers\""));
        for c in [Checkpointing::None, Checkpointing::Every(1), Checkpointing::Every(4)] {
            let text = toml::to_string(&T { c }).unwrap();
            assert_eq!(toml::from_str::<T>(&text).unwrap().c, c, "{text}");
        }
    }
}
