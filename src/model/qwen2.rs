//! The Qwen2 decoder for training and inference, written against Hugging Face tensor names.
//!
//! Activations are kept as 2-D `[tokens, features]` matrices (rows of a packed batch
//! flattened), so every projection is one plain matmul; attention is causal within each
//! document of a packed row (see `ops::attention`). The loss goes through
//! `ops::linear_cross_entropy` and never builds the full logits.

use super::attention::Attend;
use super::batch::PackedBatch;
use super::config::Qwen2Config;
use super::decoder_layer::DecoderLayer;
use super::kv_cache::KvCache;
use super::params::{ParamSource, Trainable};
use super::rms_norm::RmsNorm;
use super::weights::{save_weights, WeightFiles, DEFAULT_MAX_SHARD_BYTES};
use crate::ops::{embedding, linear_cross_entropy, CrossEntropyOutput, RopeTable};
use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

pub use super::params::{Init, ParamSpec};

/// Every parameter of a Qwen2 model with this config, in a fixed order (the tree's).
pub fn param_specs(cfg: &Qwen2Config) -> Vec<ParamSpec> {
    let src = ParamSource::specs_only();
    match Modules::new(&src, cfg) {
        Ok(_) => src.taken().specs,
        // A placeholder source cannot fail; a config that breaks the shapes has no parameters.
        Err(_) => Vec::new(),
    }
}

/// The module tree, as Hugging Face names it: `model.embed_tokens`, `model.layers.N`,
/// `model.norm`, and `lm_head` unless tied to the embedding.
#[derive(Clone, Debug)]
pub struct Modules {
    /// `model.embed_tokens.weight` `[vocab, hidden]`.
    pub embed_tokens: Tensor,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// `lm_head.weight` (`None`: tied to the embedding).
    pub lm_head: Option<Tensor>,
}

impl Modules {
    pub fn new(src: &ParamSource, cfg: &Qwen2Config) -> Result<Self> {
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let model = src.pp("model");
        let embed_tokens = model.pp("embed_tokens").get("weight", &[v, h], Init::Normal)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| DecoderLayer::new(&model.pp(format_args!("layers.{l}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(&model.pp("norm"), h, cfg.rms_norm_eps)?;
        let lm_head = if cfg.tie_word_embeddings {
            src.discard("lm_head.weight");
            None
        } else {
            Some(src.pp("lm_head").get("weight", &[v, h], Init::Normal)?)
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    /// The output projection (the embedding when tied).
    pub fn lm_head_weight(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// The same tree over the same storage, outside autograd.
    pub fn detached(&self) -> Self {
        Self {
            embed_tokens: self.embed_tokens.detach(),
            layers: self.layers.iter().map(DecoderLayer::detached).collect(),
            norm: self.norm.detached(),
            lm_head: self.lm_head.as_ref().map(Tensor::detach),
        }
    }
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
    /// The tree over the parameters (variables when trainable: the autograd reference path).
    modules: Modules,
    /// The same tree over the same storage outside autograd (what the explicit step and the
    /// forwards without gradients read).
    plain: Modules,
    /// All parameters by Hugging Face name, in `param_specs` order, outside autograd (views
    /// of the stacked tensors where the tree stacks them).
    params: Vec<(String, Tensor)>,
    /// The variables holding the parameters (empty for an inference-only model): one per
    /// parameter, or per stacked group.
    vars: Vec<Trainable>,
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
        tensors: BTreeMap<String, Tensor>,
        dtype: DType,
        trainable: bool,
    ) -> Result<Self> {
        config.validate()?;
        let src = ParamSource::from_tensors(tensors, dtype, trainable);
        let modules = Modules::new(&src, &config)?;
        let taken = src.taken();
        if let Some(extra) = taken.unused.first() {
            bail!("unexpected tensor {extra:?} (not a parameter of a Qwen2 model with this config)");
        }
        let plain = modules.detached();
        Ok(Self {
            config,
            modules,
            plain,
            params: taken.params.into_iter().map(|(n, t)| (n, t.detach())).collect(),
            vars: taken.vars,
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
        let dtype = opts.dtype.unwrap_or(self.dtype());
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
        Ok(Qwen2 {
            config: self.config.clone(),
            modules: self.plain.clone(),
            plain: self.plain.clone(),
            params: self.params.clone(),
            vars: Vec::new(),
            loss_chunk_tokens: self.loss_chunk_tokens,
        })
    }

    /// Parameters by Hugging Face name, in `param_specs` order (outside autograd; writing
    /// into one in place changes the model).
    pub fn parameters(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Whether the model was built with variables (candle's autograd reaches its parameters).
    pub fn is_trainable(&self) -> bool {
        !self.vars.is_empty()
    }

    /// Every parameter's gradient from candle's autograd (the reference path), by Hugging Face
    /// name in `param_specs` order: a row range of its variable's gradient, `None` where none
    /// reached it.
    pub fn named_grads(&self, store: &GradStore) -> Result<Vec<(String, Option<Tensor>)>> {
        let mut out = Vec::with_capacity(self.params.len());
        for t in &self.vars {
            let g = store.get(t.var.as_tensor());
            for (name, first, rows) in &t.members {
                let part = match g {
                    Some(g) if t.members.len() == 1 => Some(g.clone()),
                    Some(g) => Some(g.narrow(0, *first, *rows)?),
                    None => None,
                };
                out.push((name.clone(), part));
            }
        }
        let order: std::collections::HashMap<&str, usize> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.as_str(), i))
            .collect();
        out.sort_by_key(|(n, _)| order.get(n.as_str()).copied().unwrap_or(usize::MAX));
        Ok(out)
    }

    pub fn device(&self) -> &Device {
        self.modules.embed_tokens.device()
    }

    pub fn dtype(&self) -> DType {
        self.modules.embed_tokens.dtype()
    }

    /// The output projection (the embedding when tied).
    pub fn lm_head_weight(&self) -> &Tensor {
        self.modules.lm_head_weight()
    }

    /// The module tree outside autograd (shares the parameters' storage).
    pub fn plain_modules(&self) -> &Modules {
        &self.plain
    }

    /// Final-normed hidden states `[tokens, hidden]` of a packed batch (through the
    /// variables, so a trainable model's result backpropagates with candle's autograd: the
    /// reference the explicit step is tested against).
    pub fn hidden_states(&self, batch: &PackedBatch) -> Result<Tensor> {
        let cfg = &self.config;
        let m = &self.modules;
        let table = RopeTable::new(&batch.positions, cfg.head_dim(), cfg.rope_theta(), self.device())?;
        let mut x = embedding(&m.embed_tokens, &batch.tokens)?;
        let mut pending: Option<Tensor> = None;
        for layer in &m.layers {
            let (x1, d, _) = layer.forward(&x, pending.as_ref(), &table, Attend::Infer(&batch.segments))?;
            (x, pending) = (x1, Some(d));
        }
        Ok(m.norm.forward(&x, pending.as_ref())?.1)
    }

    /// One generation step over several sequences: `inputs[s]` are the new tokens of sequence
    /// `s` (its whole prompt at prefill, one token when decoding), placed after the
    /// `caches[s].len()` tokens its cache holds. Appends their keys and values to the caches and
    /// returns the logits `[sequences, vocab]` of each sequence's last new token. With host
    /// caches the attention runs on host f32 rows (`ops::cached_attention`); with device caches
    /// it runs on the model's device, composed from tensor ops in f32. The layers are the same
    /// `DecoderLayer` bodies training runs.
    pub fn forward_cached(&self, inputs: &[&[u32]], caches: &mut [KvCache]) -> Result<Tensor> {
        let cfg = &self.config;
        if inputs.len() != caches.len() || inputs.iter().any(|t| t.is_empty()) {
            bail!("forward_cached: one non-empty token list per cache is needed");
        }
        let on_device = caches.first().is_some_and(KvCache::is_on_device);
        if caches.iter().any(|c| c.is_on_device() != on_device) {
            bail!("forward_cached: the caches of one step must all be on the host or all on the device");
        }
        let d = cfg.head_dim();
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
        let m = &self.plain;
        let table = RopeTable::new(&positions, d, cfg.rope_theta(), &dev)?;
        let scale = (1.0 / (d as f64).sqrt()) as f32;
        let host = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?) };
        let mut x = m.embed_tokens.index_select(&Tensor::from_vec(ids, n, &dev)?, 0)?;
        let mut pending: Option<Tensor> = None;
        for (l, layer) in m.layers.iter().enumerate() {
            let mut attend = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<Tensor> {
                if on_device {
                    self.device_attention(l, inputs, caches, q, k, v, scale)
                } else {
                    self.host_attention(l, inputs, caches, &host(q)?, &host(k)?, &host(v)?, scale)
                }
            };
            let (x1, dl, _) = layer.forward(&x, pending.as_ref(), &table, Attend::With(&mut attend))?;
            (x, pending) = (x1, Some(dl));
        }
        let mut last = Vec::with_capacity(inputs.len());
        let mut row = 0u32;
        for (tokens, cache) in inputs.iter().zip(caches.iter_mut()) {
            row += tokens.len() as u32;
            last.push(row - 1);
            cache.commit(tokens.len());
        }
        let last = Tensor::new(last.as_slice(), &dev)?;
        let x = x.index_select(&last, 0)?;
        let pending = pending.map(|p| p.index_select(&last, 0)).transpose()?;
        let h = m.norm.forward(&x, pending.as_ref())?.1;
        Ok(crate::ops::matmul::matmul(&h, &m.lm_head_weight().t()?)?)
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
        Ok(crate::ops::matmul::matmul(
            &self.hidden_states(batch)?,
            &self.lm_head_weight().t()?,
        )?)
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
