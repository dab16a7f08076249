//! Batched generation: one prefill forward over every prompt of the batch (prompts of any
//! lengths, each with its own KV cache and positions), then one decode forward per step over
//! the sequences still running, each stopping at a stop token or after `max_new_tokens`.

use super::sampling::{argmax, sample, Sampling};
use crate::model::{KvCache, Qwen2};
use anyhow::{bail, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token was produced (it is the last generated token).
    Stop,
    /// `max_new_tokens` was reached.
    Length,
}

/// What one prompt produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generated {
    /// New tokens, the stop token included when there is one (as transformers returns them).
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
}

/// Generation settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationSettings {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    pub stop_ids: Vec<u32>,
}

/// Generates a continuation of every prompt. Sequence `i` samples from its own stream seeded
/// with `seed + i`, so results do not depend on batch composition.
///
/// The loop runs on a rayon worker thread (`rayon::scope`): the many small parallel loops of a
/// decode step then split work inside the pool instead of each handing off from, and waking,
/// the calling thread.
pub fn generate(model: &Qwen2, prompts: &[Vec<u32>], s: &GenerationSettings) -> Result<Vec<Generated>> {
    rayon::scope(|_| generate_on_pool(model, prompts, s))
}

fn generate_on_pool(model: &Qwen2, prompts: &[Vec<u32>], s: &GenerationSettings) -> Result<Vec<Generated>> {
    if prompts.iter().any(|p| p.is_empty()) {
        bail!("a prompt has no tokens");
    }
    let cfg = &model.config;
    let row = cfg.num_kv_heads() * cfg.head_dim();
    let mut caches: Vec<KvCache> = prompts
        .iter()
        .map(|p| KvCache::new(cfg.num_hidden_layers, row, p.len() + s.max_new_tokens))
        .collect();
    let mut rngs: Vec<ChaCha8Rng> = (0..prompts.len())
        .map(|i| ChaCha8Rng::seed_from_u64(s.sampling.seed.wrapping_add(i as u64)))
        .collect();
    let mut out: Vec<Generated> = prompts
        .iter()
        .map(|_| Generated {
            token_ids: vec![],
            finish_reason: FinishReason::Length,
        })
        .collect();
    if s.max_new_tokens == 0 {
        return Ok(out);
    }
    let inputs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
    let mut logits = model.forward_cached(&inputs, &mut caches)?;
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    loop {
        let rows: Vec<Vec<f32>> = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        let mut still = Vec::with_capacity(active.len());
        for (r, &i) in active.iter().enumerate() {
            let tok = if s.sampling.is_greedy() {
                argmax(&rows[r])
            } else {
                sample(&rows[r], s.sampling.temperature, s.sampling.top_p, &mut rngs[i])
            };
            out[i].token_ids.push(tok);
            if s.stop_ids.contains(&tok) {
                out[i].finish_reason = FinishReason::Stop;
            } else if out[i].token_ids.len() < s.max_new_tokens {
                still.push(i);
            }
        }
        active = still;
        if active.is_empty() {
            return Ok(out);
        }
        let next: Vec<[u32; 1]> = active
            .iter()
            .map(|&i| [*out[i].token_ids.last().expect("one token per step")])
            .collect();
        let inputs: Vec<&[u32]> = next.iter().map(|t| t.as_slice()).collect();
        // Run only the active sequences' caches, in order.
        let mut taken: Vec<KvCache> = active.iter().map(|&i| std::mem::take(&mut caches[i])).collect();
        let result = model.forward_cached(&inputs, &mut taken);
        for (&i, c) in active.iter().zip(taken) {
            caches[i] = c;
        }
        logits = result?;
    }
}
