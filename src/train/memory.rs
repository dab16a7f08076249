//! The memory a run needs, from the config alone (no weights loaded): parameters, f32
//! gradient buffers, AdamW state, the activations one micro-batch keeps for its backward (as
//! `model::training` keeps them, with or without activation checkpointing), the largest working
//! set on top of them, and the runtime's own overhead. `syncoder plan` prints it; the trainer
//! refuses a run whose peak exceeds the machine's memory (host RAM for CPU runs, the card's
//! memory for CUDA runs) with a message naming the keys to change, instead of being killed by
//! the OOM killer or failing hours in.
//!
//! `sharded` gives the same run's memory per rank when it is data-parallel over W ranks: plain
//! (replicated) data parallelism, ZeRO-1 (AdamW state sharded) and ZeRO-2 (gradients too), for
//! `syncoder plan --world-size W`, from the same estimate. The trainer's `"zero2"` does not
//! shard the gradient buffers yet (it needs ZeRO-1's memory); the ZeRO-2 figures are the design's.

use super::config::RunConfig;
use crate::model::training::Checkpointing;
use crate::model::Qwen2Config;
use anyhow::{bail, Result};

/// What the estimate depends on besides the model's shape.
#[derive(Clone, Copy, Debug)]
pub struct MemoryInput {
    /// Bytes per parameter (4 f32, 2 bf16/f16); activations have the same dtype.
    pub param_bytes: u64,
    /// Tokens per micro-batch (`micro_batch_rows × seq_len`).
    pub tokens: u64,
    /// Tokens per chunk of the fused output projection + loss.
    pub loss_chunk: u64,
    pub checkpointing: Checkpointing,
    /// A CUDA run (logits stay in the activation dtype; the CUDA runtime's overhead).
    pub gpu: bool,
}

/// Bytes by kind (`peak` is their worst-case sum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub parameters: u64,
    /// f32 gradient buffers (AdamW reads them as they are).
    pub gradients: u64,
    /// AdamW moments and (for non-f32 parameters) f32 master weights.
    pub optimizer: u64,
    /// What the forward of one micro-batch keeps for its backward.
    pub activations: u64,
    /// The largest working set on top of the kept activations: the loss's logits chunk, one
    /// layer's backward, a recomputed span; or the optimizer's update of the largest parameter.
    pub working: u64,
    /// The process itself: the CUDA context and cuBLAS workspace, or the binary, tokenizer and
    /// data pipeline of a CPU run.
    pub runtime: u64,
}

impl MemoryEstimate {
    /// Weights, gradients and optimizer state: what stays for the whole run.
    pub fn state(&self) -> u64 {
        self.parameters + self.gradients + self.optimizer
    }

    pub fn peak(&self) -> u64 {
        self.state() + self.activations + self.working + self.runtime
    }
}

/// Saved bytes per token of one layer's forward (see `DecoderLayer::forward`): the two fused
/// norm outputs `[2, T, h]` (sum and normed share a buffer), q and the attention output, k and v
/// after RoPE, gate and up, and the attention's f32 log-sum-exp.
fn layer_bytes_per_token(cfg: &Qwen2Config, b: u64) -> u64 {
    let Widths { h, i, q, kv, .. } = Widths::of(cfg);
    b * (4 * h + 2 * q + 2 * kv + 2 * i) + 4 * cfg.num_attention_heads as u64
}

/// A model's widths in elements: hidden, intermediate, vocabulary, all query heads, all kv heads.
pub struct Widths {
    pub h: u64,
    pub i: u64,
    pub v: u64,
    pub q: u64,
    pub kv: u64,
}

impl Widths {
    pub fn of(cfg: &Qwen2Config) -> Self {
        Self {
            h: cfg.hidden_size as u64,
            i: cfg.intermediate_size as u64,
            v: cfg.vocab_size as u64,
            q: (cfg.num_attention_heads * cfg.head_dim()) as u64,
            kv: (cfg.num_kv_heads() * cfg.head_dim()) as u64,
        }
    }
}

pub fn estimate(cfg: &Qwen2Config, m: MemoryInput) -> MemoryEstimate {
    let p = cfg.num_parameters() as u64;
    let b = m.param_bytes;
    let t = m.tokens;
    let layers = cfg.num_hidden_layers as u64;
    let Widths { h, i, v, q, kv } = Widths::of(cfg);
    let low = b != 4;
    let parameters = p * b;
    let gradients = p * 4;
    let optimizer = p * 8 + if low { p * 4 } else { 0 };

    let per_layer = t * layer_bytes_per_token(cfg, b);
    // The embedding output, and per span's input the residual buffer and the pending delta.
    let embed = t * h * b;
    let (activations, recomputed) = match m.checkpointing {
        Checkpointing::None => (embed + layers * per_layer, 0),
        Checkpointing::Every(n) => {
            let n = (n as u64).clamp(1, layers.max(1));
            let spans = layers.div_ceil(n);
            (embed + spans * 3 * t * h * b, n * per_layer)
        }
    };
    // The loss: the final norm's output, the chunk's logits and their scaled gradient (f32 on
    // the CPU, the activation dtype on a GPU), the hidden gradient's chunks and their concat.
    let chunk = m.loss_chunk.min(t).max(1);
    let logit_bytes = if m.gpu { b } else { 4 };
    let loss = 2 * t * h * b + 2 * chunk * v * logit_bytes + 2 * t * h * b;
    // One layer's backward: the recomputed MLP product and its gradient, the gate/up gradients,
    // a recomputed norm output and the residual gradients; or the attention's gradients.
    let mlp_bwd = t * b * (4 * i + 4 * h);
    // On a GPU the flash kernel's backward also holds each query head's f32 share of dK and dV
    // (`[T, q]` twice) until they are summed per kv head.
    let shares = if m.gpu { 2 * t * q * 4 } else { 0 };
    let attn_bwd = t * b * (2 * (q + 2 * kv) + 4 * h) + shares;
    let backward = recomputed + mlp_bwd.max(attn_bwd);
    // The unfused AdamW of a CPU run makes new master, m and v of one parameter at a time.
    let largest = v * h;
    let update = if m.gpu { 0 } else { 3 * 4 * largest };
    let working = loss.max(backward).max(update.saturating_sub(activations));
    let runtime = if m.gpu { 1 << 30 } else { 192 << 20 };
    MemoryEstimate {
        parameters,
        gradients,
        optimizer,
        activations,
        working,
        runtime,
    }
}

/// How a data-parallel run spreads its training state over the ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharding {
    /// Plain data parallelism: every rank holds everything; gradients are all-reduced in place.
    Replicated,
    /// ZeRO-1: each rank holds 1/W of the AdamW state (moments and f32 masters) and updates
    /// that share of the parameters, which are then all-gathered.
    Zero1,
    /// ZeRO-2: also 1/W of the f32 gradients; each layer's gradients are reduce-scattered into
    /// the shard as its backward finishes.
    Zero2,
}

impl Sharding {
    pub const ALL: [Sharding; 3] = [Sharding::Replicated, Sharding::Zero1, Sharding::Zero2];

    pub fn name(self) -> &'static str {
        match self {
            Sharding::Replicated => "plain DP",
            Sharding::Zero1 => "ZeRO-1",
            Sharding::Zero2 => "ZeRO-2",
        }
    }
}

/// One rank's memory when the run of `single` (one process) is data-parallel over `world` ranks
/// with `sharding`. Parameters, activations and the working set are per rank as before. ZeRO-1
/// divides the AdamW state; ZeRO-2 also the gradients, but keeps the full-size gradients in
/// flight: the output projection's / embedding's `[vocab, hidden]` (written by the loss at the
/// start of the backward, by the embedding at its end when tied) and two layers' (one being
/// reduce-scattered while the next is computed).
pub fn sharded(cfg: &Qwen2Config, single: MemoryEstimate, world: u64, sharding: Sharding) -> MemoryEstimate {
    let world = world.max(1);
    let share = |b: u64| b.div_ceil(world);
    match sharding {
        Sharding::Replicated => single,
        Sharding::Zero1 => MemoryEstimate {
            optimizer: share(single.optimizer),
            ..single
        },
        Sharding::Zero2 => {
            let Widths { h, v, .. } = Widths::of(cfg);
            let p = cfg.num_parameters() as u64;
            let embeddings = if cfg.tie_word_embeddings { v * h } else { 2 * v * h };
            let per_layer = p.saturating_sub(embeddings + h) / (cfg.num_hidden_layers as u64).max(1);
            let in_flight = 4 * (v * h + 2 * per_layer);
            MemoryEstimate {
                optimizer: share(single.optimizer),
                gradients: (share(single.gradients) + in_flight).min(single.gradients),
                ..single
            }
        }
    }
}

impl MemoryInput {
    /// The input for parameters in `dtype`, micro-batches of `tokens` and the loss's chunk
    /// (`None`: the automatic one `linear_cross_entropy` picks).
    pub fn new(
        model: &Qwen2Config,
        dtype: candle_core::DType,
        tokens: usize,
        loss_chunk: Option<usize>,
        checkpointing: Checkpointing,
        gpu: bool,
    ) -> Self {
        let chunk = loss_chunk.unwrap_or_else(|| {
            crate::ops::linear_cross_entropy::default_chunk_tokens(tokens, model.vocab_size, model.hidden_size)
        });
        Self {
            param_bytes: dtype.size_in_bytes() as u64,
            tokens: tokens as u64,
            loss_chunk: chunk as u64,
            checkpointing,
            gpu,
        }
    }
}

/// The estimate for a run config and its model.
pub fn for_run(cfg: &RunConfig, model: &Qwen2Config, gpu: bool) -> MemoryEstimate {
    let input = MemoryInput::new(
        model,
        cfg.run.dtype.dtype(),
        cfg.batch.micro_batch_rows * cfg.data.seq_len,
        cfg.model.loss_chunk_tokens,
        cfg.train.activation_checkpointing,
        gpu,
    );
    estimate(model, input)
}

/// `MemAvailable` of `/proc/meminfo` in bytes (`None` where it cannot be read).
pub fn available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// What to change when a run does not fit, in order of what costs least.
pub fn remedies(cfg: &RunConfig) -> String {
    let mut out = Vec::new();
    if cfg.train.activation_checkpointing == Checkpointing::None {
        out.push(
            "set train.activation_checkpointing = \"layers\" (recompute each layer's forward in the backward)"
                .to_string(),
        );
    }
    if cfg.batch.micro_batch_rows > 1 {
        out.push(format!(
            "lower batch.micro_batch_rows (now {}; the global batch stays the same through more accumulation)",
            cfg.batch.micro_batch_rows
        ));
    }
    out.push(format!("lower data.seq_len (now {})", cfg.data.seq_len));
    if cfg.run.dtype.dtype() == candle_core::DType::F32 && cfg.run.device != crate::device::DeviceSpec::Cpu {
        out.push("set run.dtype = \"bf16\"".into());
    }
    out.push("use a smaller model".into());
    out.join("; ")
}

/// Refuses a run whose estimated peak exceeds `capacity` bytes of `what`.
pub fn check_fits(cfg: &RunConfig, model: &Qwen2Config, gpu: bool, capacity: u64, what: &str) -> Result<()> {
    let need = for_run(cfg, model, gpu);
    if need.peak() > capacity {
        bail!(
            "out of memory ahead: this run needs about {:.1} GiB ({:.1} GiB of weights, gradients and AdamW state, \
             {:.1} GiB of activations for batch.micro_batch_rows = {} × data.seq_len = {} tokens with \
             train.activation_checkpointing = {}, {:.1} GiB working memory) but {what} has {:.1} GiB; {} \
             (`syncoder plan --config FILE` prints the estimate for other settings)",
            gib(need.peak()),
            gib(need.state()),
            gib(need.activations),
            cfg.batch.micro_batch_rows,
            cfg.data.seq_len,
            cfg.train.activation_checkpointing,
            gib(need.working),
            gib(capacity),
            remedies(cfg),
        );
    }
    Ok(())
}

/// Refuses a CPU run whose estimated memory exceeds what the machine has available.
pub fn check_host_memory(cfg: &RunConfig, model: &Qwen2Config) -> Result<()> {
    match available() {
        Some(avail) => check_fits(cfg, model, false, avail, "the machine (MemAvailable)"),
        None => Ok(()),
    }
}

/// Adds what to change to an out-of-memory error of the device.
pub fn oom_hint(e: anyhow::Error, cfg: &RunConfig) -> anyhow::Error {
    let text = format!("{e:#}").to_lowercase();
    if text.contains("out of memory") || text.contains("out_of_memory") {
        e.context(format!(
            "out of device memory with batch.micro_batch_rows = {} and data.seq_len = {}: {}",
            cfg.batch.micro_batch_rows,
            cfg.data.seq_len,
            remedies(cfg)
        ))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Qwen2Config {
        Qwen2Config::from_json(
            r#"{"vocab_size": 640, "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 4,
                "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
                "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "model_type": "qwen2"}"#,
        )
        .unwrap()
    }

    fn input(tokens: u64, checkpointing: Checkpointing, param_bytes: u64) -> MemoryInput {
        MemoryInput {
            param_bytes,
            tokens,
            loss_chunk: 256,
            checkpointing,
            gpu: false,
        }
    }

    #[test]
    fn activations_grow_with_tokens_and_shrink_with_checkpointing() {
        let cfg = tiny();
        let a = estimate(&cfg, input(1024, Checkpointing::None, 4));
        let b = estimate(&cfg, input(2048, Checkpointing::None, 4));
        assert_eq!(b.activations, 2 * a.activations);
        assert_eq!(a.state(), b.state());
        let layers = estimate(&cfg, input(2048, Checkpointing::Every(1), 4));
        let two = estimate(&cfg, input(2048, Checkpointing::Every(2), 4));
        assert!(two.activations < layers.activations && layers.activations < b.activations);
        assert!(layers.working >= b.working && two.working > layers.working);
    }

    #[test]
    fn low_precision_counts_f32_masters_and_gradients() {
        let cfg = tiny();
        let p = cfg.num_parameters() as u64;
        let f32 = estimate(&cfg, input(1024, Checkpointing::None, 4));
        let bf16 = estimate(&cfg, input(1024, Checkpointing::None, 2));
        assert_eq!(f32.state(), p * 16);
        assert_eq!(bf16.state(), p * (2 + 4 + 8 + 4));
    }

    #[test]
    fn zero_divides_the_optimizer_state_then_the_gradients() {
        let cfg = tiny();
        let one = estimate(&cfg, input(1024, Checkpointing::None, 2));
        assert_eq!(sharded(&cfg, one, 8, Sharding::Replicated), one);
        for s in Sharding::ALL {
            assert_eq!(sharded(&cfg, one, 1, s), one, "{s:?} over one rank");
        }
        let z1 = sharded(&cfg, one, 8, Sharding::Zero1);
        assert_eq!(z1.optimizer, one.optimizer.div_ceil(8));
        assert_eq!(
            (z1.gradients, z1.activations, z1.parameters),
            (one.gradients, one.activations, one.parameters)
        );
        let z2 = sharded(&cfg, one, 8, Sharding::Zero2);
        assert_eq!(z2.optimizer, z1.optimizer);
        assert!(z2.gradients <= one.gradients);
        // A model whose layers outweigh its embedding: ZeRO-2's shard plus what is in flight is
        // well under the full gradients.
        let deep = Qwen2Config::from_json(
            r#"{"vocab_size": 640, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 32,
                "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
                "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "model_type": "qwen2"}"#,
        )
        .unwrap();
        let one = estimate(&deep, input(1024, Checkpointing::None, 2));
        let z2 = sharded(&deep, one, 8, Sharding::Zero2);
        assert!(
            z2.gradients < one.gradients / 4,
            "{} vs {}",
            z2.gradients,
            one.gradients
        );
        assert!(z2.gradients > one.gradients / 8);
        assert!(z2.peak() < sharded(&deep, one, 8, Sharding::Zero1).peak());
    }

    #[test]
    fn reads_available_memory() {
        assert!(available().unwrap_or(1) > 0);
    }
}
