//! Model answers to the questions: `EVAL_DIR/model_answer/NAME.jsonl`, one line per question
//! (id, answer, token count, generation settings), appended and fsynced as each batch is
//! produced; questions already answered are skipped, so a killed run resumes.

use super::questions::Question;
use crate::infer::{generate, ChatFormat, FinishReason, GenerationSettings, Sampling};
use crate::io::jsonl::{self, AppendLog};
use crate::model::Qwen2;
use anyhow::{Context, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// The model directory the answer came from.
    pub model_dir: PathBuf,
}

pub fn answers_path(eval_dir: &Path, name: &str) -> PathBuf {
    eval_dir.join("model_answer").join(format!("{name}.jsonl"))
}

/// The answers of `name` so far, by question id.
pub fn read_answers(eval_dir: &Path, name: &str) -> Result<BTreeMap<String, Answer>> {
    let list: Vec<Answer> = jsonl::read(&answers_path(eval_dir, name))?;
    Ok(list.into_iter().map(|a| (a.question_id.clone(), a)).collect())
}

/// Tokens an answer may have, unless told otherwise.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 1024;
/// Questions generated together, unless told otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 8;

/// Generation settings of `arena answer`.
#[derive(Clone, Debug)]
pub struct AnswerSettings {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Questions generated together.
    pub batch_size: usize,
}

/// Answers every question not answered yet (too-long questions are skipped); returns how many
/// were generated now.
pub fn answer_questions(
    model_dir: &Path,
    name: &str,
    questions: &[Question],
    eval_dir: &Path,
    s: &AnswerSettings,
) -> Result<usize> {
    let (mut log, done) = AppendLog::open::<Answer>(&answers_path(eval_dir, name))?;
    let done: std::collections::HashSet<String> = done.into_iter().map(|a| a.question_id).collect();
    let todo: Vec<&Question> = questions
        .iter()
        .filter(|q| !q.too_long() && !done.contains(&q.id))
        .collect();
    if todo.is_empty() {
        return Ok(0);
    }
    let format = ChatFormat::from_dir(model_dir)?;
    let model = Qwen2::load(model_dir, DType::F32, &Device::Cpu, false)
        .with_context(|| format!("loading {} for answering", model_dir.display()))?;
    let prompts: Vec<Vec<u32>> = todo
        .iter()
        .map(|q| format.chat_ids(&q.messages))
        .collect::<Result<_>>()?;
    let settings = GenerationSettings {
        max_new_tokens: s.max_new_tokens,
        sampling: s.sampling,
        stop_ids: format.stop_ids().to_vec(),
    };
    let bar = crate::io::progress::counting_bar(&format!("answering {name}"), "questions", todo.len() as u64);
    let started = Instant::now();
    let mut produced = 0;
    for (qs, batch) in todo
        .chunks(s.batch_size.max(1))
        .zip(prompts.chunks(s.batch_size.max(1)))
    {
        let out = generate(&model, batch, &settings)?;
        for (q, g) in qs.iter().zip(out) {
            let answer = Answer {
                question_id: q.id.clone(),
                model: name.to_string(),
                answer: format.decode(&g.token_ids)?,
                tokens: g.token_ids.len(),
                finish_reason: g.finish_reason,
                max_new_tokens: s.max_new_tokens,
                sampling: s.sampling,
                model_dir: model_dir.to_path_buf(),
            };
            log.append(&answer)?;
            produced += 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    eprintln!(
        "{name}: {produced} answers in {:.1} s ({} already there)",
        started.elapsed().as_secs_f64(),
        done.len()
    );
    Ok(produced)
}
