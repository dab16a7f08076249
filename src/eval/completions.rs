//! Base-model samples: each problem's prompt continued by the model as it is (no chat
//! template), stopped at the first of the problem's stop tokens (MultiPL-E's, EvalPlus's for
//! Python) — how base models are scored. Kept in `OUT/completions/NAME.jsonl`, one line per
//! sample, appended and fsynced as each batch finishes; a killed run resumes, and completions of
//! another model or setting under the same name are refused unless told to overwrite them.

use super::benchmark::Problem;
use super::program::{truncate_at_stops, SampleText};
use super::samples::{sample_id, Sample};
use crate::arena::answers::{question_seed, AnswerModel, AnswerSettings, Provenance};
use crate::infer::model_ref::tokenizer_dir;
use crate::infer::{generate_jobs, GenerationSettings, Job, LoadedModel, Next, Sampling};
use crate::io::jsonl::{self, AppendLog};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub sample_id: String,
    pub completion: String,
    pub tokens: usize,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    pub model_dir: PathBuf,
    #[serde(flatten)]
    pub provenance: Provenance,
}

pub fn completions_path(out: &Path, name: &str) -> PathBuf {
    out.join("completions").join(format!("{name}.jsonl"))
}

/// `n` completions of every problem by the model `m`.
pub fn generate(
    m: &AnswerModel,
    name: &str,
    problems: &[Problem],
    n: usize,
    out: &Path,
    s: &AnswerSettings,
) -> Result<Vec<Sample>> {
    let path = completions_path(out, name);
    let provenance = Provenance::of(&m.dir, &tokenizer_dir(&m.dir, m.tokenizer.as_deref())?)?;
    let existing: Vec<Completion> = jsonl::read(&path)?;
    if let Some(old) = existing
        .iter()
        .find(|c| c.provenance != provenance || c.max_new_tokens != s.max_new_tokens || c.sampling != s.sampling)
    {
        if !s.overwrite {
            bail!(
                "{} holds completions of {name:?} by {} (max_new_tokens {}, {:?}); you asked for {} (max_new_tokens \
                 {}, {:?}). Use another --name or --out, or pass --overwrite",
                path.display(),
                old.model_dir.display(),
                old.max_new_tokens,
                old.sampling,
                m.dir.display(),
                s.max_new_tokens,
                s.sampling
            );
        }
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let (mut log, done) = AppendLog::open::<Completion>(&path)?;
    let done: HashMap<String, Completion> = done.into_iter().map(|c| (c.sample_id.clone(), c)).collect();
    let todo: Vec<(&Problem, usize, String)> = problems
        .iter()
        .flat_map(|p| (0..n).map(move |i| (p, i, sample_id(&p.id, i, n))))
        .filter(|(_, _, id)| !done.contains_key(id))
        .collect();
    let mut made: HashMap<String, Completion> = HashMap::new();
    if !todo.is_empty() {
        let spec = m.dir.to_string_lossy().to_string();
        let loaded = LoadedModel::load(&spec, m.tokenizer.as_deref(), &m.device)
            .with_context(|| format!("loading {} for completions", m.dir.display()))?;
        let format = &loaded.format;
        let context = loaded.model.config.max_position_embeddings;
        let bar = crate::io::progress::counting_bar(&format!("completing {name}"), "samples", todo.len() as u64);
        for batch in todo.chunks(s.batch_size.max(1)) {
            let prompts: Vec<Vec<u32>> = batch
                .iter()
                .map(|(p, _, _)| format.encode(&p.prompt))
                .collect::<Result<_>>()?;
            if let Some(((p, _, _), _)) = batch.iter().zip(&prompts).find(|(_, ids)| ids.len() >= context) {
                bail!("{}: the prompt fills the model's context of {context} tokens", p.id);
            }
            let settings: Vec<GenerationSettings> = prompts
                .iter()
                .map(|ids| GenerationSettings {
                    max_new_tokens: s.max_new_tokens.min(context - ids.len()),
                    sampling: s.sampling,
                    stop_ids: format.stop_ids().to_vec(),
                })
                .collect();
            let jobs: Vec<Job> = prompts
                .iter()
                .zip(&settings)
                .zip(batch)
                .map(|((ids, st), (_, _, id))| Job {
                    prompt: ids,
                    settings: st,
                    seed: question_seed(s.sampling.seed, id),
                })
                .collect();
            // Every 8 tokens, a sequence whose text has reached a stop token ends.
            let stops: Vec<&Vec<String>> = batch.iter().map(|(p, _, _)| &p.stop_tokens).collect();
            let mut on_token = |job: usize, ids: &[u32]| {
                if !ids.len().is_multiple_of(8) {
                    return Next::Continue;
                }
                match format.decode(ids) {
                    Ok(text) if stops[job].iter().any(|t| !t.is_empty() && text.contains(t.as_str())) => Next::Stop,
                    _ => Next::Continue,
                }
            };
            let generated = generate_jobs(&loaded.model, &jobs, &mut on_token)?;
            for ((p, _, id), g) in batch.iter().zip(generated) {
                let text = format.decode(&g.token_ids)?;
                let c = Completion {
                    sample_id: id.clone(),
                    completion: truncate_at_stops(&text, &p.stop_tokens),
                    tokens: g.token_ids.len(),
                    max_new_tokens: s.max_new_tokens,
                    sampling: s.sampling,
                    model_dir: m.dir.clone(),
                    provenance: provenance.clone(),
                };
                log.append(&c)?;
                made.insert(id.clone(), c);
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
    }
    eprintln!("{name}: {} new completions, {} present before", made.len(), done.len());
    let mut out_samples = Vec::new();
    for p in problems {
        for i in 0..n {
            let id = sample_id(&p.id, i, n);
            let c = made
                .get(&id)
                .or_else(|| done.get(&id))
                .with_context(|| format!("no completion for {id}"))?;
            out_samples.push(Sample {
                task_id: p.id.clone(),
                index: i,
                text: SampleText::Completion(c.completion.clone()),
            });
        }
    }
    Ok(out_samples)
}
