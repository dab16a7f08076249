//! One document through the pipeline: the generator writes a question grounded in the page
//! (`instruct`), then `k` candidate answers (`respond`); the scorer rates each (`validate`,
//! re-asked once when its reply does not parse); where the question's language runs in the
//! execution sandbox, the generator writes tests and a candidate must pass them; the best
//! candidate at or above the threshold is kept. Every request carries a seed derived from the
//! run's seed, the document and the request's place, so a rerun asks exactly the same.

use super::config::SynthConfig;
use super::journal::Entry;
use super::prompts::{fill, Prompts, SCORE_AGAIN};
use super::replies::{parse_instruction, parse_score, Instruction, Score};
use crate::arena::judge_client::{ChatMessage, Completion, JudgeClient, RequestSampling};
use crate::eval::execute::{execute, RunLimits, Verdict};
use crate::eval::extract::extract;
use crate::eval::language::Language;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Mutex;

/// A page of the input.
#[derive(Clone, Debug)]
pub struct Doc {
    pub index: u64,
    pub id: String,
    pub url: Option<String>,
    pub text: String,
}

/// Requests and tokens spent on one model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tokens {
    pub requests: u64,
    pub prompt: u64,
    pub completion: u64,
}

impl Tokens {
    pub fn add(&mut self, o: &Tokens) {
        self.requests += o.requests;
        self.prompt += o.prompt;
        self.completion += o.completion;
    }
}

/// What one document cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub generator: Tokens,
    pub scorer: Tokens,
}

/// The clients and settings every document shares.
pub struct Pipeline<'a> {
    pub cfg: &'a SynthConfig,
    pub prompts: &'a Prompts,
    pub generator: &'a JudgeClient,
    pub scorer: &'a JudgeClient,
}

fn user(content: String) -> ChatMessage {
    ChatMessage {
        role: "user".into(),
        content,
    }
}

/// Mixes the run's seed with a document and a request slot (SplitMix64's finaliser).
fn seed_for(seed: u64, doc: u64, slot: u64) -> u64 {
    let mut z = seed ^ doc.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ slot.wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn count(t: &Mutex<Tokens>, c: &Completion) {
    let n = |k: &str| {
        c.usage
            .as_ref()
            .and_then(|u| u.get(k))
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    };
    let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
    t.requests += 1;
    t.prompt += n("prompt_tokens");
    t.completion += n("completion_tokens");
}

impl Pipeline<'_> {
    /// The document's journal entry; `Err` only when an endpoint failed past its retries (the
    /// document is then left for the next run).
    pub fn process(&self, doc: &Doc) -> Result<Entry> {
        let (gen, score) = (Mutex::new(Tokens::default()), Mutex::new(Tokens::default()));
        let outcome = self.run(doc, &gen, &score);
        let usage = Usage {
            generator: *gen.lock().unwrap_or_else(|p| p.into_inner()),
            scorer: *score.lock().unwrap_or_else(|p| p.into_inner()),
        };
        let mut entry = Entry {
            doc: doc.index,
            source: doc.id.clone(),
            url: doc.url.clone(),
            dropped: None,
            detail: None,
            record: None,
            usage,
        };
        match outcome? {
            Ok(record) => entry.record = Some(record),
            Err((reason, detail)) => {
                entry.dropped = Some(reason.to_string());
                entry.detail = Some(detail);
            }
        }
        Ok(entry)
    }

    /// The kept record, or the drop reason and its detail.
    #[allow(clippy::type_complexity)]
    fn run(
        &self,
        doc: &Doc,
        gen: &Mutex<Tokens>,
        sc: &Mutex<Tokens>,
    ) -> Result<std::result::Result<serde_json::Value, (&'static str, String)>> {
        let cfg = self.cfg;
        let seed = |slot| Some(seed_for(cfg.output.seed, doc.index, slot));
        let g = &cfg.generator;
        let page: String = doc.text.chars().take(cfg.input.max_page_chars).collect();
        let ask_gen = |messages: &[ChatMessage], temperature: f64, top_p: f64, slot: u64| -> Result<String> {
            let c = self.generator.complete_with(
                messages,
                RequestSampling {
                    temperature,
                    top_p,
                    seed: seed(slot),
                    max_tokens: Some(g.max_tokens),
                },
            )?;
            count(gen, &c);
            Ok(c.text)
        };
        // Instruct.
        let reply = ask_gen(
            &[user(fill(&self.prompts.instruct, &[("page", &page)]))],
            g.temperature,
            1.0,
            0,
        )?;
        let (language, question) = match parse_instruction(&reply) {
            Ok(Instruction::Question { language, question }) => (language, question),
            Ok(Instruction::Skip) => return Ok(Err(("instruct:skipped", "the generator found no question".into()))),
            Err(e) => return Ok(Err(("instruct:unparsable", e))),
        };
        // Respond.
        let r = &cfg.respond;
        let ask = fill(
            &self.prompts.respond,
            &[("question", &question), ("language", &language)],
        );
        let mut candidates = Vec::with_capacity(r.candidates);
        for j in 0..r.candidates {
            candidates.push(ask_gen(&[user(ask.clone())], r.temperature, r.top_p, 1 + j as u64)?);
        }
        // Score.
        let s = self.cfg.scorer();
        let mut scores: Vec<Option<Score>> = Vec::with_capacity(candidates.len());
        for (j, answer) in candidates.iter().enumerate() {
            let mut messages = vec![user(fill(
                &self.prompts.score,
                &[("question", &question), ("answer", answer), ("language", &language)],
            ))];
            let mut parsed = None;
            for attempt in 0..2u64 {
                let c = self.scorer.complete_with(
                    &messages,
                    RequestSampling {
                        temperature: s.temperature,
                        top_p: 1.0,
                        seed: seed(100 + 2 * j as u64 + attempt),
                        max_tokens: Some(s.max_tokens),
                    },
                )?;
                count(sc, &c);
                match parse_score(&c.text) {
                    Ok(score) => {
                        parsed = Some(score);
                        break;
                    }
                    Err(_) => {
                        messages.push(ChatMessage {
                            role: "assistant".into(),
                            content: c.text,
                        });
                        messages.push(user(SCORE_AGAIN.into()));
                    }
                }
            }
            scores.push(parsed);
        }
        if scores.iter().all(Option::is_none) {
            return Ok(Err((
                "score:unparsable",
                "no candidate's score parsed, even when asked again".into(),
            )));
        }
        let min = cfg.validate.min_score;
        let mut eligible: Vec<usize> = (0..candidates.len())
            .filter(|&j| scores[j].as_ref().is_some_and(|s| s.score >= min))
            .collect();
        eligible.sort_by_key(|&j| (std::cmp::Reverse(scores[j].as_ref().map_or(0, |s| s.score)), j));
        if eligible.is_empty() {
            let best = scores.iter().flatten().map(|s| s.score).max().unwrap_or(0);
            return Ok(Err(("validate:below_threshold", format!("best score {best} < {min}"))));
        }
        // Execute, where the language runs here.
        let runnable = Language::parse(&language)
            .ok()
            .filter(|l| cfg.validate.execute && l.missing_tool().is_none());
        let mut tests_result = "not_run";
        let mut chosen = eligible[0];
        if let Some(lang) = runnable {
            let ask = fill(&self.prompts.tests, &[("question", &question), ("language", &language)]);
            let reply = ask_gen(&[user(ask)], 0.0, 1.0, 200)?;
            let tests = first_code_block(&reply);
            if tests.trim().is_empty() {
                return Ok(Err((
                    "validate:tests_unusable",
                    "the generator's tests hold no code".into(),
                )));
            }
            let limits = RunLimits {
                run_seconds: cfg.validate.run_seconds,
                ..RunLimits::default()
            };
            let mut passed = None;
            for &j in &eligible {
                let program = format!("{}\n\n{}\n", extract(&candidates[j], lang, None), tests);
                if execute(lang, &program, &limits)?.verdict == Verdict::Passed {
                    passed = Some(j);
                    break;
                }
            }
            match passed {
                Some(j) => {
                    chosen = j;
                    tests_result = "passed";
                }
                None => {
                    return Ok(Err((
                        "validate:tests_failed",
                        format!("{} candidates at or above {min} failed the tests", eligible.len()),
                    )))
                }
            }
        }
        let best = scores[chosen]
            .as_ref()
            .map(|s| (s.score, s.reason.clone()))
            .unwrap_or_default();
        Ok(Ok(json!({
            "id": format!("synth:{}", doc.id),
            "language": language,
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": candidates[chosen]},
            ],
            "meta": {
                "source": doc.id,
                "url": doc.url,
                "generator": g.model,
                "scorer": s.model,
                "score": best.0,
                "reason": best.1,
                "scores": scores.iter().map(|s| s.as_ref().map(|s| s.score)).collect::<Vec<_>>(),
                "candidates": candidates.len(),
                "tests": tests_result,
            }
        })))
    }
}

/// The first fenced code block of `reply` (its body), or the whole reply when it has none: tests
/// are kept whole, top-level statements included (`extract` keeps only definitions).
fn first_code_block(reply: &str) -> String {
    let Some(start) = reply.find("```") else {
        return reply.to_string();
    };
    let after = &reply[start + 3..];
    let body = after.split_once('\n').map_or("", |(_, b)| b);
    body.split("```").next().unwrap_or(body).trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_come_out_of_their_fence_whole() {
        assert_eq!(
            first_code_block("Tests:\n```python\nassert f(1) == 2\nprint('x')\n```\nDone."),
            "assert f(1) == 2\nprint('x')"
        );
        assert_eq!(first_code_block("assert f(1) == 2"), "assert f(1) == 2");
        assert_eq!(first_code_block("```"), "");
    }
}
