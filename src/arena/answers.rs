//! Model answers to the questions: `EVAL_DIR/model_answer/NAME.jsonl`, one line per question
//! (id, answer, token count, generation settings, and what produced it: the SHA-256 of the
//! weights and of the tokenizer and chat template), appended and fsynced as each batch is
//! produced; questions already answered are skipped, so a killed run resumes. Answers of another
//! model, tokenizer or generation settings under the same name are never reused: the command
//! refuses, naming both, unless told to overwrite them (which also drops the judgments made
//! of them).

use super::judge_client::{ChatMessage, JudgeClient, RequestSampling, ENDPOINT};
use super::judge_settings::JudgeSettings;
use super::questions::Question;
use crate::data::Role;
use crate::infer::model_ref::tokenizer_dir;
use crate::infer::{generate_jobs, FinishReason, GenerationSettings, InferDevice, Job, LoadedModel, Next, Sampling};
use crate::io::jsonl::{self, AppendLog};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub question_id: String,
    pub model: String,
    pub answer: String,
    /// Generated tokens (the stop token included).
    pub tokens: usize,
    pub finish_reason: FinishReason,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// The model directory (or, answered through `--endpoint`, the server's URL) the answer
    /// came from.
    pub model_dir: PathBuf,
    /// What produced the answer (absent in answers written before it was recorded).
    #[serde(default, flatten)]
    pub provenance: Provenance,
}

/// What produced an answer: digests of the weights and of the tokenizer and chat template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// SHA-256 over the model's weight files (`*.safetensors` and the index), in name order.
    #[serde(default)]
    pub weights_sha256: String,
    /// SHA-256 over tokenizer.json, tokenizer_config.json, chat_template.jinja (when present)
    /// and the model's generation_config.json (its stop tokens).
    #[serde(default)]
    pub tokenizer_sha256: String,
    /// Answered through an OpenAI-compatible server: its URL and model name (the digests are
    /// then unknown and empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl Provenance {
    /// The digests of the model in `model_dir` with the tokenizer of `tokenizer_dir`.
    pub fn of(model_dir: &Path, tokenizer_dir: &Path) -> Result<Self> {
        let mut weights: Vec<PathBuf> = std::fs::read_dir(model_dir)
            .with_context(|| format!("listing {}", model_dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                n.ends_with(".safetensors") || n == "model.safetensors.index.json"
            })
            .collect();
        weights.sort();
        if weights.is_empty() {
            bail!("{}: no *.safetensors weights", model_dir.display());
        }
        let tokenizer: Vec<PathBuf> = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
            .iter()
            .map(|f| tokenizer_dir.join(f))
            .chain([model_dir.join("generation_config.json")])
            .filter(|p| p.is_file())
            .collect();
        Ok(Self {
            weights_sha256: digest_files(&weights)?,
            tokenizer_sha256: digest_files(&tokenizer)?,
            endpoint: None,
        })
    }

    /// What can be known of a server's model: its URL and name.
    pub fn of_endpoint(cfg: &JudgeSettings) -> Self {
        Self {
            endpoint: Some(format!("{} model {}", cfg.url.trim_end_matches('/'), cfg.model)),
            ..Self::default()
        }
    }
}

/// SHA-256 over each file's name and bytes, streamed.
fn digest_files(files: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        h.update(
            f.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
        );
        h.update([0]);
        let mut file = std::fs::File::open(f).with_context(|| format!("reading {}", f.display()))?;
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("reading {}", f.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The model that answers: its directory, tokenizer and where it runs.
#[derive(Clone, Debug)]
pub struct AnswerModel {
    pub dir: PathBuf,
    /// The tokenizer's directory (default: the model's).
    pub tokenizer: Option<PathBuf>,
    pub device: InferDevice,
}

/// Where answers come from.
#[derive(Clone, Debug)]
pub enum AnswerSource {
    /// A model loaded here.
    Local(AnswerModel),
    /// An OpenAI-compatible server (vLLM, `syncoder serve`, ...) that applies the model's own
    /// chat template: its URL, model name, key variable, concurrency, timeout and retries.
    Endpoint(JudgeSettings),
}

impl AnswerSource {
    fn provenance(&self) -> Result<Provenance> {
        match self {
            Self::Local(m) => Provenance::of(&m.dir, &tokenizer_dir(&m.dir, m.tokenizer.as_deref())?),
            Self::Endpoint(cfg) => Ok(Provenance::of_endpoint(cfg)),
        }
    }

    /// What the answers' `model_dir` records.
    fn origin(&self) -> PathBuf {
        match self {
            Self::Local(m) => m.dir.clone(),
            Self::Endpoint(cfg) => PathBuf::from(cfg.url.trim_end_matches('/')),
        }
    }
}

impl From<AnswerModel> for AnswerSource {
    fn from(m: AnswerModel) -> Self {
        Self::Local(m)
    }
}

pub fn answers_path(eval_dir: &Path, name: &str) -> PathBuf {
    eval_dir.join("model_answer").join(format!("{name}.jsonl"))
}

/// The answers of `name` so far, by question id.
pub fn read_answers(eval_dir: &Path, name: &str) -> Result<BTreeMap<String, Answer>> {
    let list: Vec<Answer> = jsonl::read(&answers_path(eval_dir, name))?;
    Ok(list.into_iter().map(|a| (a.question_id.clone(), a)).collect())
}

/// Tokens an answer may have, unless told otherwise: the official evaluation's 16384 (each
/// answer is further capped by what the model's context leaves after the question).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 16384;
/// Questions generated together, unless told otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 8;

/// Generation settings of `arena answer`.
#[derive(Clone, Debug)]
pub struct AnswerSettings {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Questions generated together.
    pub batch_size: usize,
    /// Replace answers of `name` that another model, tokenizer or setting produced (and drop
    /// the judgments made of them) instead of refusing.
    pub overwrite: bool,
}

/// Answers every question not answered yet (too-long questions are skipped); returns how many
/// were generated now. Answers already there from another model, tokenizer or setting are
/// refused (or, with `overwrite`, replaced).
pub fn answer_questions(
    source: &AnswerSource,
    name: &str,
    questions: &[Question],
    eval_dir: &Path,
    s: &AnswerSettings,
) -> Result<usize> {
    let path = answers_path(eval_dir, name);
    let provenance = source.provenance()?;
    let origin = source.origin();
    let mut existing: Vec<Answer> = jsonl::read(&path)?;
    if let Some(old) = existing
        .iter()
        .find(|a| a.provenance != provenance || a.max_new_tokens != s.max_new_tokens || a.sampling != s.sampling)
    {
        let was = describe(&old.model_dir, &old.provenance, old.max_new_tokens, &old.sampling);
        let now = describe(&origin, &provenance, s.max_new_tokens, &s.sampling);
        if !s.overwrite {
            bail!(
                "{} holds answers of {name:?} produced by {was}; you asked for {now}. Use another name (--name, \
                 or another --out), or pass --overwrite to replace them",
                path.display()
            );
        }
        eprintln!("{name}: replacing the answers of {was} (--overwrite)");
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        drop_judgments_of(eval_dir, name)?;
        existing.clear();
    }
    let done: std::collections::HashSet<String> = existing.into_iter().map(|a| a.question_id).collect();
    let todo: Vec<&Question> = questions
        .iter()
        .filter(|q| !q.too_long() && !done.contains(&q.id))
        .collect();
    if todo.is_empty() {
        eprintln!("{name}: 0 new answers, {} present ({})", done.len(), path.display());
        return Ok(0);
    }
    let record = |q: &Question, answer: String, tokens: usize, finish_reason: FinishReason| Answer {
        question_id: q.id.clone(),
        model: name.to_string(),
        answer,
        tokens,
        finish_reason,
        max_new_tokens: s.max_new_tokens,
        sampling: s.sampling,
        model_dir: origin.clone(),
        provenance: provenance.clone(),
    };
    let started = Instant::now();
    let bar = crate::io::progress::counting_bar(&format!("answering {name}"), "questions", todo.len() as u64);
    let produced = match source {
        Source::Local(m) => answer_locally(m, &todo, s, &path, &mut |q, text, n, f| {
            bar.inc(1);
            record(q, text, n, f)
        })?,
        Source::Endpoint(cfg) => answer_through(cfg, &todo, s, &path, &mut |q, text, n, f| {
            bar.inc(1);
            record(q, text, n, f)
        })?,
    };
    bar.finish_and_clear();
    eprintln!(
        "{name}: {produced} new answers in {:.1} s, {} present before",
        started.elapsed().as_secs_f64(),
        done.len()
    );
    Ok(produced)
}

use AnswerSource as Source;

/// The sampling seed of a question: the run's seed mixed with the question's id (FNV-1a), so a
/// question's answer does not depend on which others were answered with it, or on a resume —
/// and several samples of one problem (`#0`, `#1`, ...) differ.
pub fn question_seed(seed: u64, id: &str) -> u64 {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    seed ^ h
}

/// Makes the answer record of a question from its text, token count and finish reason.
type Record<'a> = dyn FnMut(&Question, String, usize, FinishReason) -> Answer + 'a;

/// Answers with the model loaded here, in batches; each question may generate up to what the
/// model's context leaves after it (at most `max_new_tokens`); a question that fills the
/// context by itself is left unanswered, and said.
fn answer_locally(
    m: &AnswerModel,
    todo: &[&Question],
    s: &AnswerSettings,
    path: &Path,
    record: &mut Record,
) -> Result<usize> {
    // The model loads before the answers file is touched: a model that fails to load leaves
    // nothing behind.
    let spec = m.dir.to_string_lossy().to_string();
    let loaded = LoadedModel::load(&spec, m.tokenizer.as_deref(), &m.device)
        .with_context(|| format!("loading {} for answering", m.dir.display()))?;
    let format = &loaded.format;
    let context = loaded.model.config.max_position_embeddings;
    let mut prompts = Vec::with_capacity(todo.len());
    let mut no_room = vec![];
    for q in todo {
        let ids = format.chat_ids(&q.messages)?;
        if ids.len() >= context {
            no_room.push(q.id.clone());
        } else {
            prompts.push((*q, ids));
        }
    }
    if !no_room.is_empty() {
        eprintln!(
            "warning: {} questions leave no room in the model's context of {context} tokens and are not answered: {}",
            no_room.len(),
            no_room.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let (mut log, _) = AppendLog::open::<Answer>(path)?;
    let mut produced = 0;
    for batch in prompts.chunks(s.batch_size.max(1)) {
        let settings: Vec<GenerationSettings> = batch
            .iter()
            .map(|(_, ids)| GenerationSettings {
                max_new_tokens: s.max_new_tokens.min(context - ids.len()),
                sampling: s.sampling,
                stop_ids: format.stop_ids().to_vec(),
            })
            .collect();
        let jobs: Vec<Job> = batch
            .iter()
            .zip(&settings)
            .enumerate()
            .map(|(i, ((_, ids), st))| Job {
                prompt: ids,
                settings: st,
                seed: question_seed(s.sampling.seed, &batch[i].0.id),
            })
            .collect();
        let out = generate_jobs(&loaded.model, &jobs, &mut |_, _| Next::Continue)?;
        for ((q, _), g) in batch.iter().zip(out) {
            let text = format.decode(&g.token_ids)?;
            log.append(&record(q, text, g.token_ids.len(), g.finish_reason))?;
            produced += 1;
        }
    }
    Ok(produced)
}

/// Answers through an OpenAI-compatible server, `concurrency` requests at a time, each answer
/// appended as it arrives. `max_tokens` is sent unless it reaches the context the server
/// reports (vLLM then gives what the context leaves after the question).
fn answer_through(
    cfg: &JudgeSettings,
    todo: &[&Question],
    s: &AnswerSettings,
    path: &Path,
    record: &mut Record,
) -> Result<usize> {
    let client = JudgeClient::new(cfg.clone())?.with_role(ENDPOINT);
    let context = client.check_model()?;
    let max_tokens = match context {
        Some(c) if s.max_new_tokens >= c => None,
        _ => Some(u32::try_from(s.max_new_tokens).unwrap_or(u32::MAX)),
    };
    let (mut log, _) = AppendLog::open::<Answer>(path)?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<super::judge_client::Completion>)>();
    let mut produced = 0;
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..cfg.concurrency.clamp(1, todo.len()) {
            let (tx, client, next, stop) = (tx.clone(), &client, &next, &stop);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= todo.len() || stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let messages: Vec<ChatMessage> = todo[i]
                    .messages
                    .iter()
                    .map(|m| match m.role {
                        Role::System => ChatMessage::system(m.content.clone()),
                        Role::User => ChatMessage::user(m.content.clone()),
                        Role::Assistant => ChatMessage::assistant(m.content.clone()),
                    })
                    .collect();
                let sampling = RequestSampling {
                    temperature: s.sampling.temperature.max(0.0),
                    top_p: s.sampling.top_p,
                    seed: (!s.sampling.is_greedy()).then_some(question_seed(s.sampling.seed, &todo[i].id)),
                    max_tokens,
                };
                if tx.send((i, client.complete_with(&messages, sampling))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (i, reply) in rx {
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                    return Err(e.context(format!("question {}", todo[i].id)));
                }
            };
            let tokens = reply
                .usage
                .as_ref()
                .and_then(|u| u.get("completion_tokens"))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0) as usize;
            let finish = match reply.finish_reason.as_deref() {
                Some("length") => FinishReason::Length,
                _ => FinishReason::Stop,
            };
            log.append(&record(todo[i], reply.text, tokens, finish))?;
            produced += 1;
        }
        Ok(())
    })?;
    Ok(produced)
}

/// "DIR (weights sha256 abcd1234…, tokenizer 5678abcd…, max_new_tokens N, greedy)", or for an
/// endpoint "URL model NAME (max_new_tokens N, greedy)".
fn describe(dir: &Path, p: &Provenance, max_new_tokens: usize, sampling: &Sampling) -> String {
    let short = |d: &str| {
        if d.is_empty() {
            "not recorded".to_string()
        } else {
            format!("{}…", &d[..d.len().min(12)])
        }
    };
    let sampling = if sampling.is_greedy() {
        "greedy".to_string()
    } else {
        format!(
            "temperature {}, top_p {}, seed {}",
            sampling.temperature, sampling.top_p, sampling.seed
        )
    };
    if let Some(e) = &p.endpoint {
        return format!("the server at {e} (max_new_tokens {max_new_tokens}, {sampling})");
    }
    format!(
        "{} (weights sha256 {}, tokenizer {}, max_new_tokens {max_new_tokens}, {sampling})",
        dir.display(),
        short(&p.weights_sha256),
        short(&p.tokenizer_sha256)
    )
}

/// Removes the judgment files in which `name` is the model or the opponent (they judged
/// answers that are being replaced).
fn drop_judgments_of(eval_dir: &Path, name: &str) -> Result<()> {
    let root = eval_dir.join("model_judgment");
    let Ok(judges) = std::fs::read_dir(&root) else {
        return Ok(());
    };
    for judge in judges.flatten().filter(|e| e.path().is_dir()) {
        for file in std::fs::read_dir(judge.path())?.flatten() {
            let p = file.path();
            let Ok(list) = jsonl::read::<serde_json::Value>(&p) else {
                continue;
            };
            let involved = list.iter().any(|j| j["model"] == name || j["opponent"] == name);
            if involved {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
                eprintln!("{name}: removed {} (it judged the replaced answers)", p.display());
            }
        }
    }
    Ok(())
}
