//! Iteration-level scheduling (continuous batching, as vLLM and TGI schedule): a set of running
//! sequences, each with its own KV cache, settings and sampling stream, advanced together one
//! token per `step`. Sequences join between steps — a new one's first step runs its whole
//! prompt in the same forward as the others' next token — and leave as soon as they finish, so
//! a long generation never holds a short one back.
//!
//! Every token of a sequence depends only on its own prompt, settings and stream: the forward
//! keeps sequences apart (own cache, own positions), so greedy results are token-identical
//! whatever else is in the batch. `engine::generate` runs on this same path.

use super::engine::{FinishReason, Generated, GenerationSettings, Next};
use super::sampling::{argmax, sample};
use crate::model::{KvCache, KvPlacement, Qwen2};
use anyhow::{bail, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// One running sequence and what its owner attached to it (`tag`).
pub struct Sequence<T> {
    pub tag: T,
    prompt: Vec<u32>,
    settings: GenerationSettings,
    /// New tokens it may still produce: `max_new_tokens`, capped by the model's context.
    limit: usize,
    rng: ChaCha8Rng,
    cache: KvCache,
    tokens: Vec<u32>,
    /// Set by the step that ends it.
    ended: Option<FinishReason>,
}

impl<T> Sequence<T> {
    /// Tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}

/// The sequences generating together.
pub struct RunningBatch<T> {
    seqs: Vec<Sequence<T>>,
    placement: KvPlacement,
    /// Prompt + new tokens a sequence may hold (the model's positions).
    context: usize,
}

impl<T> RunningBatch<T> {
    /// An empty batch for `model`, its caches placed as `placement` says, no sequence longer
    /// than `context` tokens.
    pub fn new(placement: KvPlacement, context: usize) -> Self {
        Self {
            seqs: vec![],
            placement,
            context,
        }
    }

    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Adds a sequence; its first step prefills `prompt`. A prompt that leaves no room in the
    /// context is refused; `max_new_tokens` beyond the context is cut to what fits (the
    /// sequence then ends with `FinishReason::Length`).
    /// A refused sequence comes back with its tag.
    pub fn join(
        &mut self,
        model: &Qwen2,
        tag: T,
        prompt: Vec<u32>,
        settings: GenerationSettings,
        seed: u64,
    ) -> std::result::Result<(), (T, anyhow::Error)> {
        if let Err(e) = self.admits(prompt.len()) {
            return Err((tag, e));
        }
        let cfg = &model.config;
        let limit = settings.max_new_tokens.min(self.context - prompt.len());
        let cache = KvCache::placed(
            self.placement,
            cfg.num_hidden_layers,
            cfg.num_kv_heads() * cfg.head_dim(),
            prompt.len() + limit,
        );
        self.seqs.push(Sequence {
            tag,
            prompt,
            settings,
            limit,
            rng: ChaCha8Rng::seed_from_u64(seed),
            cache,
            tokens: vec![],
            ended: None,
        });
        Ok(())
    }

    /// Whether a prompt of `len` tokens can join (it must leave room for a reply).
    pub fn admits(&self, len: usize) -> Result<()> {
        if len == 0 {
            bail!("a prompt has no tokens");
        }
        if len >= self.context {
            bail!(
                "the prompt has {len} tokens; the model's context of {} leaves no room for a reply",
                self.context
            );
        }
        Ok(())
    }

    /// Removes the sequences `drop` picks (a client gone, a deadline passed) and returns them.
    pub fn remove_where(&mut self, mut drop: impl FnMut(&Sequence<T>) -> bool) -> Vec<Sequence<T>> {
        let (gone, kept) = std::mem::take(&mut self.seqs).into_iter().partition(|s| drop(s));
        self.seqs = kept;
        gone
    }

    /// Removes every sequence (after a failed step, say) and returns their tags.
    pub fn clear(&mut self) -> Vec<T> {
        self.seqs.drain(..).map(|s| s.tag).collect()
    }

    /// One forward over every sequence (a new one's prompt, the others' last token), one new
    /// token each; `on_token(tag, tokens so far)` may end a sequence. Returns the sequences that
    /// finished, with what they generated, out of the batch. A sequence with nothing to
    /// generate finishes without a forward.
    pub fn step(
        &mut self,
        model: &Qwen2,
        on_token: &mut dyn FnMut(&mut T, &[u32]) -> Next,
    ) -> Result<Vec<(T, Generated)>> {
        let mut done = vec![];
        let empty = self.remove_where(|s| s.limit == 0);
        done.extend(empty.into_iter().map(|s| finished(s, FinishReason::Length)));
        if self.seqs.is_empty() {
            return Ok(done);
        }
        let mut caches: Vec<KvCache> = self.seqs.iter_mut().map(|s| std::mem::take(&mut s.cache)).collect();
        let inputs: Vec<&[u32]> = self
            .seqs
            .iter()
            .map(|s| match s.tokens.last() {
                None => s.prompt.as_slice(),
                Some(t) => std::slice::from_ref(t),
            })
            .collect();
        let result = model.forward_cached(&inputs, &mut caches);
        drop(inputs);
        for (s, c) in self.seqs.iter_mut().zip(caches) {
            s.cache = c;
        }
        let rows: Vec<Vec<f32>> = result?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        for (s, row) in self.seqs.iter_mut().zip(&rows) {
            let tok = if s.settings.sampling.is_greedy() {
                argmax(row)
            } else {
                sample(
                    row,
                    s.settings.sampling.temperature,
                    s.settings.sampling.top_p,
                    &mut s.rng,
                )
            };
            s.tokens.push(tok);
            let next = on_token(&mut s.tag, &s.tokens);
            s.ended = if s.settings.stop_ids.contains(&tok) || next == Next::Stop {
                Some(FinishReason::Stop)
            } else if s.tokens.len() >= s.limit {
                Some(FinishReason::Length)
            } else {
                None
            };
        }
        for s in self.remove_where(|s| s.ended.is_some()) {
            let reason = s.ended.unwrap_or(FinishReason::Length);
            done.push(finished(s, reason));
        }
        Ok(done)
    }
}

fn finished<T>(s: Sequence<T>, reason: FinishReason) -> (T, Generated) {
    (
        s.tag,
        Generated {
            token_ids: s.tokens,
            finish_reason: reason,
        },
    )
}
