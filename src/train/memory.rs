//! A rough upper estimate of the host memory a CPU run needs (parameters, gradients, AdamW
//! state, and the activations one micro-batch keeps for its backward), checked against the
//! memory the machine has available before anything is loaded, so a run that cannot fit stops
//! with a message naming the keys to change instead of being killed by the OOM killer.

use super::config::RunConfig;
use crate::model::Qwen2Config;
use anyhow::{bail, Result};

/// Bytes a run needs, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Parameters, summed gradients, a step's gradients, fp32 moments and master copies.
    pub state: u64,
    /// Activations saved for the backward of one micro-batch, plus its transient gradients.
    pub activations: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.state + self.activations
    }
}

/// The estimate for a model with `cfg`, parameters of `param_bytes` bytes each, and
/// micro-batches of `tokens` tokens whose loss is computed `chunk` tokens at a time.
pub fn estimate(cfg: &Qwen2Config, param_bytes: u64, tokens: u64, chunk: u64) -> MemoryEstimate {
    let p = cfg.num_parameters() as u64;
    let master = if param_bytes == 4 { 0 } else { 4 };
    // Parameter, step gradient and running sum (parameter dtype), m and v (f32), master.
    let state = p * (3 * param_bytes + 8 + master);
    let (h, i, v) = (
        cfg.hidden_size as u64,
        cfg.intermediate_size as u64,
        cfg.vocab_size as u64,
    );
    let q = (cfg.num_attention_heads * cfg.head_dim()) as u64;
    let kv = (cfg.num_kv_heads() * cfg.head_dim()) as u64;
    // Saved per token and layer: residual, two norms, attention output, projections
    // (q, k, v before and after RoPE), gate, up and their product, down output.
    let per_layer = 6 * h + 2 * q + 4 * kv + 3 * i;
    let act_bytes = 4u64.max(param_bytes);
    // The backward holds about as much again in transient gradients.
    let activations =
        2 * tokens * (per_layer * cfg.num_hidden_layers as u64 + 2 * h) * act_bytes + 2 * chunk.min(tokens) * v * 4;
    MemoryEstimate { state, activations }
}

/// `MemAvailable` of `/proc/meminfo` in bytes (`None` where it cannot be read).
pub fn available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses a CPU run whose estimated memory exceeds what the machine has available.
pub fn check_host_memory(cfg: &RunConfig, model: &Qwen2Config) -> Result<()> {
    let tokens = (cfg.batch.micro_batch_rows * cfg.data.seq_len) as u64;
    let chunk = cfg.model.loss_chunk_tokens.unwrap_or_else(|| {
        crate::ops::linear_cross_entropy::default_chunk_tokens(tokens as usize, model.vocab_size, model.hidden_size)
    }) as u64;
    let need = estimate(model, 4, tokens, chunk);
    let Some(avail) = available() else {
        return Ok(());
    };
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    if need.total() > avail {
        bail!(
            "out of memory ahead: this run needs about {:.1} GiB ({:.1} GiB of weights, gradients and AdamW state, \
             {:.1} GiB of activations for batch.micro_batch_rows = {} × data.seq_len = {} tokens) but {:.1} GiB are \
             available; lower batch.micro_batch_rows (the global batch stays the same through more accumulation) \
             or data.seq_len, or use a smaller model",
            gib(need.total()),
            gib(need.state),
            gib(need.activations),
            cfg.batch.micro_batch_rows,
            cfg.data.seq_len,
            gib(avail)
        );
    }
    Ok(())
}

/// Adds what to change to an out-of-memory error of the device.
pub fn oom_hint(e: anyhow::Error, cfg: &RunConfig) -> anyhow::Error {
    let text = format!("{e:#}").to_lowercase();
    if text.contains("out of memory") || text.contains("out_of_memory") {
        e.context(format!(
            "out of device memory with batch.micro_batch_rows = {} and data.seq_len = {}: lower \
             batch.micro_batch_rows (the global batch stays the same through more accumulation) or data.seq_len",
            cfg.batch.micro_batch_rows, cfg.data.seq_len
        ))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_tokens_and_counts_masters_only_for_low_precision() {
        let cfg = Qwen2Config::from_json(
            r#"{"vocab_size": 640, "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
                "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "model_type": "qwen2"}"#,
        )
        .unwrap();
        let a = estimate(&cfg, 4, 1024, 256);
        let b = estimate(&cfg, 4, 2048, 256);
        assert!(b.activations > a.activations * 19 / 10);
        assert_eq!(a.state, b.state);
        assert_eq!(estimate(&cfg, 2, 1024, 256).state, cfg.num_parameters() as u64 * 18);
        // The smoke run (8 rows × 256 tokens in micro-batches of 4 rows) peaks at ~143 MiB RSS
        // with the process itself; the estimate for the training part stays well under that.
        assert!(a.total() < 100 << 20, "{a:?}");
    }

    #[test]
    fn reads_available_memory() {
        assert!(available().unwrap_or(1) > 0);
    }
}
