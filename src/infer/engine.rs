//! Batched generation: one prefill forward over every prompt of the batch (prompts of any
//! lengths, each with its own KV cache and positions), then one decode forward per step over
//! the sequences still running, each stopping at a stop token, after its `max_new_tokens`, or
//! when the caller's per-token callback says so (stop strings, a client gone). Each sequence has
//! its own settings and sampling stream, so requests of a server batch together.

use super::sampling::{argmax, sample, Sampling};
use crate::model::{KvCache, KvPlacement, Qwen2};
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

/// One sequence to generate: its prompt, its settings, and the seed of its sampling stream.
#[derive(Clone, Copy, Debug)]
pub struct Job<'a> {
    pub prompt: &'a [u32],
    pub settings: &'a GenerationSettings,
    pub seed: u64,
}

/// What the per-token callback decides for a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// End this sequence now (`FinishReason::Stop`).
    Stop,
}

/// Generates a continuation of every prompt. Sequence `i` samples from its own stream seeded
/// with `seed + i`, so results do not depend on batch composition.
///
/// The loop runs on a rayon worker thread (`rayon::scope`): the many small parallel loops of a
/// decode step then split work inside the pool instead of each handing off from, and waking,
/// the calling thread.
pub fn generate(model: &Qwen2, prompts: &[Vec<u32>], s: &GenerationSettings) -> Result<Vec<Generated>> {
    generate_placed(model, prompts, s, KvPlacement::for_device(model.device()))
}

/// `generate` with the KV caches placed as told (the default places them on the model's
/// device: host memory for a CPU model); tests run the device path on the CPU with it.
pub fn generate_placed(
    model: &Qwen2,
    prompts: &[Vec<u32>],
    s: &GenerationSettings,
    placement: KvPlacement,
) -> Result<Vec<Generated>> {
    let jobs: Vec<Job> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Job {
            prompt: p,
            settings: s,
            seed: s.sampling.seed.wrapping_add(i as u64),
        })
        .collect();
    rayon::scope(|_| generate_on_pool(model, &jobs, placement, &mut |_, _| Next::Continue))
}

/// Generates every job together; `on_token(job, tokens so far)` runs after each new token and
/// may end that job's sequence.
pub fn generate_jobs(
    model: &Qwen2,
    jobs: &[Job],
    on_token: &mut (dyn FnMut(usize, &[u32]) -> Next + Send),
) -> Result<Vec<Generated>> {
    let placement = KvPlacement::for_device(model.device());
    rayon::scope(|_| generate_on_pool(model, jobs, placement, on_token))
}

fn generate_on_pool(
    model: &Qwen2,
    jobs: &[Job],
    placement: KvPlacement,
    on_token: &mut (dyn FnMut(usize, &[u32]) -> Next + Send),
) -> Result<Vec<Generated>> {
    if jobs.iter().any(|j| j.prompt.is_empty()) {
        bail!("a prompt has no tokens");
    }
    let cfg = &model.config;
    let row = cfg.num_kv_heads() * cfg.head_dim();
    let mut caches: Vec<KvCache> = jobs
        .iter()
        .map(|j| {
            KvCache::placed(
                placement,
                cfg.num_hidden_layers,
                row,
                j.prompt.len() + j.settings.max_new_tokens,
            )
        })
        .collect();
    let mut rngs: Vec<ChaCha8Rng> = jobs.iter().map(|j| ChaCha8Rng::seed_from_u64(j.seed)).collect();
    let mut out: Vec<Generated> = jobs
        .iter()
        .map(|_| Generated {
            token_ids: vec![],
            finish_reason: FinishReason::Length,
        })
        .collect();
    // Jobs with no tokens to generate are finished before they start.
    let mut active: Vec<usize> = (0..jobs.len())
        .filter(|&i| jobs[i].settings.max_new_tokens > 0)
        .collect();
    if active.is_empty() {
        return Ok(out);
    }
    let inputs: Vec<&[u32]> = active.iter().map(|&i| jobs[i].prompt).collect();
    let mut taken: Vec<KvCache> = active.iter().map(|&i| std::mem::take(&mut caches[i])).collect();
    let result = model.forward_cached(&inputs, &mut taken);
    for (&i, c) in active.iter().zip(taken) {
        caches[i] = c;
    }
    let mut logits = result?;
    loop {
        let rows: Vec<Vec<f32>> = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        let mut still = Vec::with_capacity(active.len());
        for (r, &i) in active.iter().enumerate() {
            let s = jobs[i].settings;
            let tok = if s.sampling.is_greedy() {
                argmax(&rows[r])
            } else {
                sample(&rows[r], s.sampling.temperature, s.sampling.top_p, &mut rngs[i])
            };
            out[i].token_ids.push(tok);
            let next = on_token(i, &out[i].token_ids);
            if s.stop_ids.contains(&tok) || next == Next::Stop {
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
