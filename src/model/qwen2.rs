//! The Qwen2 decoder for training and inference, written against Hugging Face tensor names.
//!
//! Activations are kept as 2-D `[tokens, features]` matrices (rows of a packed batch
//! flattened), so every projection is one plain matmul; attention is causal within each
//! document of a packed row (see `ops::attention`). The loss goes through
//! `ops::linear_cross_entropy` and never builds the full logits.

use super::batch::PackedBatch;
use super::config::Qwen2Config;
use super::kv_cache::KvCache;
use super::weights::{save_weights, WeightFiles, DEFAULT_MAX_SHARD_BYTES};
use crate::ops::{
    add_rms_norm, embedding, linear_cross_entropy, rms_norm, rope, swiglu, varlen_causal_attention, CrossEntropyOutput,
    RopeTable,
};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::BTreeMap;
use std::path::Path;

/// How a parameter is initialised (transformers' Qwen2 rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    Normal,
    Zeros,
    Ones,
}

/// One parameter of the model: Hugging Face name, shape, init rule, and whether weight decay
/// applies by default (matrices yes; biases and norm weights no).
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    pub decay: bool,
}

/// Every parameter of a Qwen2 model with this config, in a fixed order.
pub fn param_specs(cfg: &Qwen2Config) -> Vec<ParamSpec> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let q = cfg.num_attention_heads * cfg.head_dim();
    let kv = cfg.num_kv_heads() * cfg.head_dim();
    let spec = |name: String, shape: Vec<usize>, init: Init| ParamSpec {
        name,
        shape,
        init,
        decay: init == Init::Normal,
    };
    let mut out = vec![spec("model.embed_tokens.weight".into(), vec![v, h], Init::Normal)];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.push(spec(format!("{p}.input_layernorm.weight"), vec![h], Init::Ones));
        for (name, out_dim) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            out.push(spec(
                format!("{p}.self_attn.{name}.weight"),
                vec![out_dim, h],
                Init::Normal,
            ));
            out.push(spec(format!("{p}.self_attn.{name}.bias"), vec![out_dim], Init::Zeros));
        }
        out.push(spec(format!("{p}.self_attn.o_proj.weight"), vec![h, q], Init::Normal));
        out.push(spec(
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            Init::Ones,
        ));
        out.push(spec(format!("{p}.mlp.gate_proj.weight"), vec![i, h], Init::Normal));
        out.push(spec(format!("{p}.mlp.up_proj.weight"), vec![i, h], Init::Normal));
        out.push(spec(format!("{p}.mlp.down_proj.weight"), vec![h, i], Init::Normal));
    }
    out.push(spec("model.norm.weight".into(), vec![h], Init::Ones));
    if !cfg.tie_word_embeddings {
        out.push(spec("lm_head.weight".into(), vec![v, h], Init::Normal));
    }
    out
}

struct Layer {
    input_norm: Tensor,
    q_w: Tensor,
    q_b: Tensor,
    k_w: Tensor,
    k_b: Tensor,
    v_w: Tensor,
    v_b: Tensor,
    o_w: Tensor,
    post_norm: Tensor,
    gate_w: Tensor,
    up_w: Tensor,
    down_w: Tensor,
}

/// Options for writing a model in Hugging Face layout.
#[derive(Clone, Debug)]
pub struct SaveOptions {
    /// dtype of the saved weights (`None`: as held).
    pub dtype: Option<DType>,
    /// Shard above this many bytes.
    pub max_shard_bytes: usize,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self {
            dtype: None,
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
        }
    }
}

/// A Qwen2 causal language model.
pub struct Qwen2 {
    pub config: Qwen2Config,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Option<Tensor>,
    /// All parameters by Hugging Face name, in `param_specs` order.
    params: Vec<(String, Tensor)>,
    /// The same parameters as trainable variables (empty for an inference-only model).
    vars: Vec<(String, Var)>,
    /// Tokens per chunk in the fused output projection + loss (`None`: automatic).
    pub loss_chunk_tokens: Option<usize>,
}

/// Name of a dtype as transformers writes it in `torch_dtype`.
pub fn torch_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F64 => "float64",
        _ => "float32",
    }
}

impl Qwen2 {
    /// Builds a model from named tensors (exactly the parameters of `param_specs`, converted to
    /// `dtype`); `trainable` wraps them in variables that receive gradients.
    pub fn from_tensors(
        config: Qwen2Config,
        mut tensors: BTreeMap<String, Tensor>,
        dtype: DType,
        trainable: bool,
    ) -> Result<Self> {
        config.validate()?;
        let mut params = Vec::new();
        let mut vars = Vec::new();
        for spec in param_specs(&config) {
            let t = tensors
                .remove(&spec.name)
                .with_context(|| format!("missing tensor {:?}", spec.name))?;
            if t.dims() != spec.shape.as_slice() {
                bail!(
                    "tensor {:?} has shape {:?}, the config implies {:?}",
                    spec.name,
                    t.dims(),
                    spec.shape
                );
            }
            let t = t.to_dtype(dtype)?.contiguous()?;
            let t = if trainable {
                let var = Var::from_tensor(&t)?;
                let t = var.as_tensor().clone();
                vars.push((spec.name.clone(), var));
                t
            } else {
                t
            };
            params.push((spec.name, t));
        }
        if config.tie_word_embeddings {
            tensors.remove("lm_head.weight");
        }
        if let Some(extra) = tensors.keys().next() {
            bail!("unexpected tensor {extra:?} (not a parameter of a Qwen2 model with this config)");
        }
        let get = |name: &str| -> Result<Tensor> {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .with_context(|| format!("missing tensor {name:?}"))
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("model.layers.{l}");
            layers.push(Layer {
                input_norm: get(&format!("{p}.input_layernorm.weight"))?,
                q_w: get(&format!("{p}.self_attn.q_proj.weight"))?,
                q_b: get(&format!("{p}.self_attn.q_proj.bias"))?,
                k_w: get(&format!("{p}.self_attn.k_proj.weight"))?,
                k_b: get(&format!("{p}.self_attn.k_proj.bias"))?,
                v_w: get(&format!("{p}.self_attn.v_proj.weight"))?,
                v_b: get(&format!("{p}.self_attn.v_proj.bias"))?,
                o_w: get(&format!("{p}.self_attn.o_proj.weight"))?,
                post_norm: get(&format!("{p}.post_attention_layernorm.weight"))?,
                gate_w: get(&format!("{p}.mlp.gate_proj.weight"))?,
                up_w: get(&format!("{p}.mlp.up_proj.weight"))?,
                down_w: get(&format!("{p}.mlp.down_proj.weight"))?,
            });
        }
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(get("lm_head.weight")?)
        };
        Ok(Self {
            embed: get("model.embed_tokens.weight")?,
            norm: get("model.norm.weight")?,
            config,
            layers,
            lm_head,
            params,
            vars,
            loss_chunk_tokens: None,
        })
    }

    /// A randomly initialised model (see `model::init`).
    pub fn random(config: Qwen2Config, seed: u64, dtype: DType, device: &Device, trainable: bool) -> Result<Self> {
        config.validate()?;
        let tensors = super::init::random_tensors(&config, seed, dtype, device)?;
        Self::from_tensors(config, tensors, dtype, trainable)
    }

    /// Loads a Hugging Face model directory (`config.json` + safetensors weights).
    pub fn load(dir: &Path, dtype: DType, device: &Device, trainable: bool) -> Result<Self> {
        let config = Qwen2Config::from_file(&dir.join("config.json"))?;
        let files = WeightFiles::open(dir)?;
        let mut tensors = BTreeMap::new();
        for spec in param_specs(&config) {
            if !files.contains(&spec.name) {
                bail!("{}: the weights have no tensor {:?}", dir.display(), spec.name);
            }
            tensors.insert(spec.name.clone(), files.load(&spec.name, &spec.shape, device)?);
        }
        let known: std::collections::HashSet<String> = param_specs(&config).into_iter().map(|s| s.name).collect();
        for name in files.names() {
            if !(known.contains(&name) || config.tie_word_embeddings && name == "lm_head.weight") {
                bail!("{}: unexpected tensor {name:?} in the weights", dir.display());
            }
        }
        Self::from_tensors(config, tensors, dtype, trainable)
            .with_context(|| format!("loading model {}", dir.display()))
    }

    /// Writes `config.json` and the weights in Hugging Face layout into `dir`.
    pub fn save(&self, dir: &Path, opts: &SaveOptions) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dtype = opts.dtype.unwrap_or(self.embed.dtype());
        let mut tensors = BTreeMap::new();
        for (name, t) in &self.params {
            tensors.insert(name.clone(), t.detach().to_dtype(dtype)?);
        }
        save_weights(dir, &tensors, opts.max_shard_bytes)?;
        let json = self.config.to_saved_json(torch_dtype_name(dtype))?;
        crate::io::write_atomic(&dir.join("config.json"), json.as_bytes())
    }

    /// The same weights (shared, not copied) outside the autograd graph: a forward through it
    /// records no backward state, and its loss computes no gradients (validation).
    pub fn inference_view(&self) -> Result<Qwen2> {
        let tensors = self.params.iter().map(|(n, t)| (n.clone(), t.detach())).collect();
        let mut view = Self::from_tensors(self.config.clone(), tensors, self.embed.dtype(), false)?;
        view.loss_chunk_tokens = self.loss_chunk_tokens;
        Ok(view)
    }

    /// Parameters by Hugging Face name.
    pub fn parameters(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Trainable variables by Hugging Face name (empty for an inference-only model).
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }

    /// The output projection (the embedding when tied).
    pub fn lm_head_weight(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Final-normed hidden states `[tokens, hidden]` of a packed batch.
    pub fn hidden_states(&self, batch: &PackedBatch) -> Result<Tensor> {
        let cfg = &self.config;
        let n = batch.num_tokens();
        let (hq, hkv, d) = (cfg.num_attention_heads, cfg.num_kv_heads(), cfg.head_dim());
        let eps = cfg.rms_norm_eps;
        let table = RopeTable::new(&batch.positions, d, cfg.rope_theta(), self.device())?;
        let scale = 1.0 / (d as f64).sqrt();
        let linear = |x: &Tensor, w: &Tensor| x.matmul(&w.t()?);
        let mut x = embedding(&self.embed, &batch.tokens)?;
        // Each residual add is fused with the norm that follows it (`add_rms_norm`): the
        // attention output with the layer's post-attention norm, the MLP output with the next
        // layer's input norm (or the final norm).
        let mut h = match self.layers.first() {
            Some(layer) => rms_norm(&x, &layer.input_norm, eps)?,
            None => return Ok(rms_norm(&x, &self.norm, eps)?),
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let q = linear(&h, &layer.q_w)?.broadcast_add(&layer.q_b)?.reshape((n, hq, d))?;
            let k = linear(&h, &layer.k_w)?
                .broadcast_add(&layer.k_b)?
                .reshape((n, hkv, d))?;
            let v = linear(&h, &layer.v_w)?
                .broadcast_add(&layer.v_b)?
                .reshape((n, hkv, d))?;
            let q = rope(&q, &table)?;
            let k = rope(&k, &table)?;
            let a = varlen_causal_attention(&q, &k, &v, &batch.segments, scale)?.reshape((n, hq * d))?;
            let (x1, h1) = add_rms_norm(&x, &linear(&a, &layer.o_w)?, &layer.post_norm, eps)?;
            let m = swiglu(&linear(&h1, &layer.gate_w)?, &linear(&h1, &layer.up_w)?)?;
            let next_norm = self.layers.get(i + 1).map_or(&self.norm, |l| &l.input_norm);
            (x, h) = add_rms_norm(&x1, &linear(&m, &layer.down_w)?, next_norm, eps)?;
        }
        Ok(h)
    }

    /// One generation step over several sequences: `inputs[s]` are the new tokens of sequence
    /// `s` (its whole prompt at prefill, one token when decoding), placed after the
    /// `caches[s].len()` tokens its cache holds. Appends their keys and values to the caches and
    /// returns the logits `[sequences, vocab]` of each sequence's last new token. With host
    /// caches the attention runs on host f32 rows (`ops::cached_attention`); with device caches
    /// it runs on the model's device, composed from tensor ops in f32.
    pub fn forward_cached(&self, inputs: &[&[u32]], caches: &mut [KvCache]) -> Result<Tensor> {
        let cfg = &self.config;
        if inputs.len() != caches.len() || inputs.iter().any(|t| t.is_empty()) {
            bail!("forward_cached: one non-empty token list per cache is needed");
        }
        let on_device = caches.first().is_some_and(KvCache::is_on_device);
        if caches.iter().any(|c| c.is_on_device() != on_device) {
            bail!("forward_cached: the caches of one step must all be on the host or all on the device");
        }
        let (hq, hkv, d) = (cfg.num_attention_heads, cfg.num_kv_heads(), cfg.head_dim());
        let ids: Vec<u32> = inputs.iter().flat_map(|t| t.iter().copied()).collect();
        let positions: Vec<u32> = inputs
            .iter()
            .zip(caches.iter())
            .flat_map(|(t, c)| (c.len()..c.len() + t.len()).map(|p| p as u32))
            .collect();
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= cfg.vocab_size) {
            bail!("token id {bad} is outside the vocabulary ({})", cfg.vocab_size);
        }
        let n = ids.len();
        let dev = self.device().clone();
        let table = RopeTable::new(&positions, d, cfg.rope_theta(), &dev)?;
        let eps = cfg.rms_norm_eps;
        let scale = (1.0 / (d as f64).sqrt()) as f32;
        let linear = |x: &Tensor, w: &Tensor| x.matmul(&w.t()?);
        let host = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?) };
        let mut x = self.embed.index_select(&Tensor::from_vec(ids, n, &dev)?, 0)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.input_norm, eps)?;
            let q = linear(&h, &layer.q_w)?.broadcast_add(&layer.q_b)?.reshape((n, hq, d))?;
            let k = linear(&h, &layer.k_w)?
                .broadcast_add(&layer.k_b)?
                .reshape((n, hkv, d))?;
            let v = linear(&h, &layer.v_w)?.broadcast_add(&layer.v_b)?;
            let (q, k) = (rope(&q, &table)?, rope(&k, &table)?);
            let a = if on_device {
                self.device_attention(l, inputs, caches, &q, &k, &v.reshape((n, hkv, d))?, scale)?
            } else {
                self.host_attention(l, inputs, caches, &host(&q)?, &host(&k)?, &host(&v)?, scale)?
            };
            let a = a.reshape((n, hq * d))?.to_dtype(x.dtype())?;
            x = (x + linear(&a, &layer.o_w)?)?;
            let h = rms_norm(&x, &layer.post_norm, eps)?;
            let m = swiglu(&linear(&h, &layer.gate_w)?, &linear(&h, &layer.up_w)?)?;
            x = (x + linear(&m, &layer.down_w)?)?;
        }
        let mut last = Vec::with_capacity(inputs.len());
        let mut row = 0u32;
        for (tokens, cache) in inputs.iter().zip(caches.iter_mut()) {
            row += tokens.len() as u32;
            last.push(row - 1);
            cache.commit(tokens.len());
        }
        let last = x.index_select(&Tensor::new(last.as_slice(), &dev)?, 0)?;
        let h = rms_norm(&last, &self.norm, eps)?;
        Ok(h.matmul(&self.lm_head_weight().t()?)?)
    }

    /// Cached attention of layer `l` on host f32 rows: appends the new keys and values to the
    /// host caches and returns `[n, heads * head_dim]` f32 on the model's device.
    #[allow(clippy::too_many_arguments)]
    fn host_attention(
        &self,
        l: usize,
        inputs: &[&[u32]],
        caches: &mut [KvCache],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        scale: f32,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (hq, hkv, d) = (cfg.num_attention_heads, cfg.num_kv_heads(), cfg.head_dim());
        let mut row = 0;
        for (tokens, cache) in inputs.iter().zip(caches.iter_mut()) {
            let kv_rows = row * hkv * d..(row + tokens.len()) * hkv * d;
            cache.append(l, &k[kv_rows.clone()], &v[kv_rows])?;
            row += tokens.len();
        }
        let seqs = inputs
            .iter()
            .zip(caches.iter())
            .map(|(tokens, cache)| {
                let (ck, cv) = cache.layer(l)?;
                Ok((ck, cv, cache.len(), tokens.len()))
            })
            .collect::<Result<Vec<(&[f32], &[f32], usize, usize)>>>()?;
        let shape = crate::ops::cached_attention::CachedAttentionShape {
            heads: hq,
            kv_heads: hkv,
            head_dim: d,
            start: 0,
            scale,
        };
        let mut out = vec![0f32; row * hq * d];
        crate::ops::cached_attention::cached_attention_batch_cpu(q, &seqs, shape, &mut out);
        Ok(Tensor::from_vec(out, (row, hq * d), self.device())?)
    }

    /// Cached attention of layer `l` on the device: appends each sequence's new keys and
    /// values `[tokens, kv_heads, head_dim]` to its device cache and attends over it; returns
    /// `[n, heads, head_dim]` f32.
    #[allow(clippy::too_many_arguments)]
    fn device_attention(
        &self,
        l: usize,
        inputs: &[&[u32]],
        caches: &mut [KvCache],
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f32,
    ) -> Result<Tensor> {
        let mut outs = Vec::with_capacity(inputs.len());
        let mut row = 0;
        for (tokens, cache) in inputs.iter().zip(caches.iter_mut()) {
            let m = tokens.len();
            let start = cache.len();
            let (ck, cv) = cache.append_tensors(l, &k.narrow(0, row, m)?, &v.narrow(0, row, m)?)?;
            outs.push(crate::ops::cached_attention::composed_cached_attention(
                &q.narrow(0, row, m)?,
                &ck,
                &cv,
                start,
                scale as f64,
            )?);
            row += m;
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    /// Full logits `[tokens, vocab]` (for inference and tests; training uses `loss`).
    pub fn logits(&self, batch: &PackedBatch) -> Result<Tensor> {
        Ok(self.hidden_states(batch)?.matmul(&self.lm_head_weight().t()?)?)
    }

    /// Summed next-token loss over supervised targets (see `PackedBatch::next_token_targets`)
    /// and their count.
    pub fn loss(&self, batch: &PackedBatch, targets: &Tensor) -> Result<CrossEntropyOutput> {
        let hidden = self.hidden_states(batch)?;
        Ok(linear_cross_entropy(
            &hidden,
            self.lm_head_weight(),
            targets,
            self.loss_chunk_tokens,
        )?)
    }

    /// `loss` for a caller that counted the supervised targets on the host (training), so the
    /// loss needs no synchronisation with the device.
    pub fn loss_counted(&self, batch: &PackedBatch, targets: &Tensor, supervised: usize) -> Result<CrossEntropyOutput> {
        let hidden = self.hidden_states(batch)?;
        Ok(crate::ops::linear_cross_entropy::linear_cross_entropy_counted(
            &hidden,
            self.lm_head_weight(),
            targets,
            self.loss_chunk_tokens,
            Some(supervised),
        )?)
    }
}
