//! Batched generation: one prefill forward over every prompt of the batch (prompts of any
//! lengths, each with its own KV cache and positions), then one decode forward per step over
//! the sequences still running, each stopping at a stop token, after its `max_new_tokens` (cut
//! to the model's context), or when the caller's per-token callback says so (stop strings, a
//! client gone). Each sequence has its own settings and sampling stream. The steps are
//! `running::RunningBatch`'s, which the server drives with sequences joining and leaving.

use super::running::RunningBatch;
use super::sampling::Sampling;
use crate::model::{KvPlacement, Qwen2};
use anyhow::{Context, Result};
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
    let mut batch = RunningBatch::new(placement, model.config.max_position_embeddings);
    for (i, j) in jobs.iter().enumerate() {
        batch
            .join(model, i, j.prompt.to_vec(), j.settings.clone(), j.seed)
            .map_err(|(_, e)| e.context(format!("prompt {i} of {}", jobs.len())))?;
    }
    let mut out: Vec<Option<Generated>> = vec![None; jobs.len()];
    while !batch.is_empty() {
        for (i, g) in batch.step(model, &mut |i, tokens| on_token(*i, tokens))? {
            out[i] = Some(g);
        }
    }
    out.into_iter()
        .map(|g| g.context("a sequence left the batch unfinished"))
        .collect()
}
