//! Interchange with the official CodeArena files, so that official answers or judgments can be
//! scored by syncoder and syncoder's by the official `judge_models.py`:
//!
//! ```text
//! DIR/results.jsonl        one line per answered question: the dataset record + `model` + `response`
//! DIR/results.jsonl.judge  one line per judged question: that record + `question` (the first
//!                          message's text, in a list) + `id` (the line's index in results.jsonl)
//!                          + `games`: [{user_prompt, judgment, score}] — the baseline as A first,
//!                          then the model as A
//! ```
//!
//! In an official `judgment` each reply is appended after a newline (`"\n" + reply`, then
//! `"\n" + reply to the re-ask`), and `score` is the verdict the pattern found (a string) or
//! null. syncoder's game 1 (the model in position B) is the official first game and its game 2
//! the second. Imported judgments carry the protocol `imported:<SHA-256 of the file>`, so that
//! judging more games into the same file under a live protocol is refused and a report never
//! mixes them; imported answers record where they came from, with token counts unknown (0).

use super::answers::{answers_path, read_answers, Answer, Provenance};
use super::evaluate::{judgments_path, write_questions_meta, Opponent};
use super::games::{GameJob, Judgment};
use super::judge_config::JudgeConfig;
use super::questions::{self, Categories, QuestionSource, Record};
use super::verdict::{Label, Position};
use crate::infer::{FinishReason, Sampling};
use crate::io::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The official answers file's name.
pub const RESULTS: &str = "results.jsonl";
/// The official judgments file's name.
pub const JUDGE: &str = "results.jsonl.judge";

/// What `export` is asked to write.
pub struct ExportRequest<'a> {
    /// The evaluation directory to read.
    pub eval_dir: &'a Path,
    /// The questions, with their dataset records, in the dataset's order.
    pub records: &'a [Record],
    /// The model whose answers and judgments are written.
    pub model: &'a str,
    /// The stored baseline it was judged against.
    pub baseline: &'a str,
    /// The judge's name (its directory under `model_judgment/`).
    pub judge: &'a str,
    /// Renders each game's `user_prompt` when given (else it is null: syncoder does not keep
    /// the rendered prompt, and the official scoring does not read it).
    pub prompt: Option<&'a JudgeConfig>,
    /// Where the two files go.
    pub out_dir: &'a Path,
}

/// What `export` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    /// Lines of results.jsonl.
    pub answers: usize,
    /// Lines of results.jsonl.judge.
    pub judged: usize,
    /// Questions without an answer of the model (left out of both files).
    pub unanswered: usize,
}

/// Writes `results.jsonl` and, when the pairing has judgments, `results.jsonl.judge`.
pub fn export(req: &ExportRequest) -> Result<ExportSummary> {
    let answers = read_answers(req.eval_dir, req.model)?;
    if answers.is_empty() {
        bail!(
            "no answers of {:?} in {} (see `{}`)",
            req.model,
            req.eval_dir.display(),
            answers_path(req.eval_dir, req.model).display()
        );
    }
    let judged = judgments_by_question(req)?;
    let known: std::collections::HashSet<&str> = req.records.iter().map(|r| r.question.id.as_str()).collect();
    if let Some(id) = judged.keys().find(|id| !known.contains(id.as_str())) {
        bail!("question {id} was judged but is not among --questions: give the question set the pairing was judged on");
    }
    let (mut results, mut judge_lines) = (String::new(), String::new());
    let (mut n, mut unanswered, mut n_judged) = (0usize, 0usize, 0usize);
    for rec in req.records {
        let q = &rec.question;
        let Some(answer) = answers.get(&q.id) else {
            unanswered += 1;
            continue;
        };
        let mut obj = rec.raw.clone();
        obj.insert("model".into(), Value::String(req.model.to_string()));
        obj.insert("response".into(), Value::String(answer.answer.clone()));
        results.push_str(&Value::Object(obj.clone()).to_string());
        results.push('\n');
        // A question is written to the judgments when both its games were judged.
        let both = judged.get(&q.id).and_then(|g| Some((g.get(&1)?, g.get(&2)?)));
        if let Some((first, second)) = both {
            let baseline = q
                .baselines
                .get(req.baseline)
                .ok_or_else(|| anyhow!("question {}: the record holds no `{}_response`", q.id, req.baseline))?;
            let text = q.text();
            let prompt = |a: &str, b: &str| -> Result<Value> {
                Ok(match req.prompt {
                    Some(cfg) => cfg
                        .render(&text, a, b)?
                        .get(1)
                        .map(|m| Value::String(m.content.clone()))
                        .unwrap_or(Value::Null),
                    None => Value::Null,
                })
            };
            let first_message = rec
                .raw
                .get("messages")
                .and_then(|m| m.pointer("/0/content"))
                .cloned()
                .unwrap_or(Value::Null);
            obj.insert("question".into(), Value::Array(vec![first_message]));
            obj.insert("id".into(), json!(n));
            obj.insert(
                "games".into(),
                json!([
                    official_game(first, prompt(baseline, &answer.answer)?),
                    official_game(second, prompt(&answer.answer, baseline)?)
                ]),
            );
            judge_lines.push_str(&Value::Object(obj).to_string());
            judge_lines.push('\n');
            n_judged += 1;
        }
        n += 1;
    }
    std::fs::create_dir_all(req.out_dir).with_context(|| format!("creating {}", req.out_dir.display()))?;
    write_atomic(&req.out_dir.join(RESULTS), results.as_bytes())?;
    if !judged.is_empty() {
        write_atomic(&req.out_dir.join(JUDGE), judge_lines.as_bytes())?;
    }
    Ok(ExportSummary {
        answers: n,
        judged: n_judged,
        unanswered,
    })
}

/// The pairing's judgments by question and game; checks that game 1 had the model in B.
fn judgments_by_question(req: &ExportRequest) -> Result<BTreeMap<String, BTreeMap<u8, Judgment>>> {
    let path = judgments_path(
        req.eval_dir,
        req.judge,
        req.model,
        &Opponent::Baseline(req.baseline.to_string()),
    );
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let list: Vec<Judgment> = crate::io::jsonl::read(&path)?;
    super::protocol::of_file(&path, &list)?;
    let mut out: BTreeMap<String, BTreeMap<u8, Judgment>> = BTreeMap::new();
    for j in list {
        let expected = if j.game == 1 { Position::B } else { Position::A };
        if j.model_position != expected {
            bail!(
                "{}: question {} game {} has the model in position {:?}; the official order is the baseline as A \
                 in the first game",
                path.display(),
                j.question_id,
                j.game,
                j.model_position
            );
        }
        out.entry(j.question_id.clone()).or_default().insert(j.game, j);
    }
    Ok(out)
}

/// One game as the official script writes it.
fn official_game(j: &Judgment, user_prompt: Value) -> Value {
    let mut judgment = format!("\n{}", j.judgment);
    if let Some(r) = &j.reask {
        judgment.push('\n');
        judgment.push_str(r);
    }
    json!({
        "user_prompt": user_prompt,
        "judgment": judgment,
        "score": j.label.map(|l| l.as_str()),
    })
}

/// What `import` is asked to read.
pub struct ImportRequest<'a> {
    /// `results.jsonl`, or the directory holding it (and perhaps `results.jsonl.judge`).
    pub from: &'a Path,
    /// The evaluation directory to write into.
    pub eval_dir: &'a Path,
    /// The name the answers are filed under.
    pub name: &'a str,
    /// The baseline the judgments compare with (`<baseline>_response` in each record).
    pub baseline: &'a str,
    /// The judge's name to file the judgments under.
    pub judge: &'a str,
    /// Task-type map for the categories (else each record's `level`).
    pub categories: Option<&'a Categories>,
    /// Recorded as the questions' categories source.
    pub categories_name: Option<String>,
}

/// What `import` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportSummary {
    pub answers: usize,
    /// Questions with both games imported.
    pub judged: usize,
    /// Of their games, those without a verdict (`score: null` or an unknown label).
    pub unparsable: usize,
    /// Where the judgments went, when there were any.
    pub judgments_file: Option<PathBuf>,
}

/// Reads the official files into `eval_dir`: the questions (from the records), the answers as
/// `model_answer/NAME.jsonl`, the judgments (when `results.jsonl.judge` is there) as the
/// pairing NAME vs `baseline` under `judge`. Refuses to overwrite answers or judgments there.
pub fn import(req: &ImportRequest) -> Result<ImportSummary> {
    let results = if req.from.is_dir() {
        req.from.join(RESULTS)
    } else {
        req.from.to_path_buf()
    };
    let judge_file = PathBuf::from(format!("{}.judge", results.display()));
    let text = std::fs::read_to_string(&results).with_context(|| format!("reading {}", results.display()))?;
    let mut records: Vec<(Record, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |e: anyhow::Error| anyhow!("{}:{}: {e}", results.display(), i + 1);
        let raw = questions::parse_object(line).map_err(at)?;
        let question = questions::question_of(&raw, req.categories).map_err(at)?;
        let response = match raw.get("response") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(at(anyhow!("field `response`: expected the answer's text"))),
            None => return Err(at(anyhow!("field `response`: missing (not an answers file?)"))),
        };
        if !seen.insert(question.id.clone()) {
            return Err(at(anyhow!("field `id`: {:?} appears twice", question.id)));
        }
        records.push((Record { question, raw }, response));
    }
    if records.is_empty() {
        bail!("{}: holds no answers", results.display());
    }
    let answers_file = answers_path(req.eval_dir, req.name);
    refuse_existing(&answers_file)?;
    let opponent = Opponent::Baseline(req.baseline.to_string());
    let judgments_file = judgments_path(req.eval_dir, req.judge, req.name, &opponent);
    let judgments = if judge_file.exists() {
        refuse_existing(&judgments_file)?;
        Some(read_judgments(&judge_file, &records, req)?)
    } else {
        None
    };

    let questions: Vec<_> = records.iter().map(|(r, _)| r.question.clone()).collect();
    write_questions_meta(req.eval_dir, &questions)?;
    let mut source = QuestionSource::new(results.display().to_string(), &results, &text);
    source.categories = req.categories_name.clone();
    questions::record_source(req.eval_dir, &source)?;
    let mut lines = String::new();
    for (rec, response) in &records {
        let model = rec.raw.get("model").and_then(Value::as_str).unwrap_or("unknown");
        let answer = Answer {
            question_id: rec.question.id.clone(),
            model: req.name.to_string(),
            answer: response.clone(),
            tokens: 0,
            finish_reason: FinishReason::Stop,
            max_new_tokens: 0,
            sampling: Sampling::greedy(),
            model_dir: PathBuf::from(model),
            provenance: Provenance {
                endpoint: Some(format!("imported from {} (model {model})", results.display())),
                ..Provenance::default()
            },
        };
        lines.push_str(&serde_json::to_string(&answer)?);
        lines.push('\n');
    }
    write_new(&answers_file, &lines)?;
    let mut summary = ImportSummary {
        answers: records.len(),
        judged: 0,
        unparsable: 0,
        judgments_file: None,
    };
    if let Some(js) = judgments {
        let mut out = String::new();
        for j in &js {
            out.push_str(&serde_json::to_string(j)?);
            out.push('\n');
        }
        write_new(&judgments_file, &out)?;
        summary.judged = js.len() / 2;
        summary.unparsable = js.iter().filter(|j| j.label.is_none()).count();
        summary.judgments_file = Some(judgments_file);
    }
    Ok(summary)
}

/// Writes `text` to `path` whole, creating its directory.
fn write_new(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_atomic(path, text.as_bytes())
}

/// An error when `path` exists and is not empty.
fn refuse_existing(path: &Path) -> Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        bail!(
            "{} exists: importing would mix with what is there; import into another --out, or under another \
             --name",
            path.display()
        );
    }
    Ok(())
}

/// The judgments of `results.jsonl.judge`, each line's `id` naming its line of results.jsonl.
fn read_judgments(path: &Path, records: &[(Record, String)], req: &ImportRequest) -> Result<Vec<Judgment>> {
    use sha2::{Digest, Sha256};
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let protocol = format!("imported:{:x}", Sha256::digest(text.as_bytes()));
    let mut out = Vec::new();
    let mut done = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |e: String| anyhow!("{}:{}: {e}", path.display(), i + 1);
        let obj: Map<String, Value> = serde_json::from_str(line).map_err(|e| at(format!("invalid JSON: {e}")))?;
        let index = obj
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| at("field `id`: expected the line index in results.jsonl".into()))?;
        let (rec, response) = records.get(index as usize).ok_or_else(|| {
            at(format!(
                "field `id`: {index} is past the {} answers of results.jsonl",
                records.len()
            ))
        })?;
        let first = |o: &Map<String, Value>| o.get("messages").and_then(|m| m.pointer("/0/content")).cloned();
        if first(&obj) != first(&rec.raw) {
            return Err(at(format!(
                "field `id`: {index} names line {} of results.jsonl, whose question differs (not the answers this \
                 file judged)",
                index + 1
            )));
        }
        if !done.insert(index) {
            return Err(at(format!("field `id`: {index} appears twice")));
        }
        let games = match obj.get("games") {
            Some(Value::Array(g)) if g.len() == 2 => g,
            _ => return Err(at("field `games`: expected the two games".into())),
        };
        let q = &rec.question;
        let baseline = q.baselines.get(req.baseline).ok_or_else(|| {
            at(format!(
                "question {}: no `{}_response` to compare with (give --baseline)",
                q.id, req.baseline
            ))
        })?;
        for (k, g) in games.iter().enumerate() {
            let judgment = g
                .get("judgment")
                .and_then(Value::as_str)
                .ok_or_else(|| at(format!("field `games[{k}].judgment`: expected text")))?;
            let label = match g.get("score") {
                Some(Value::String(s)) => Label::from_candidate(s),
                Some(Value::Null) | None => None,
                Some(_) => return Err(at(format!("field `games[{k}].score`: expected a label or null"))),
            };
            let (game, model_position, a, b) = if k == 0 {
                (1, Position::B, baseline, response)
            } else {
                (2, Position::A, response, baseline)
            };
            let job = GameJob {
                question_id: q.id.clone(),
                game,
                model_position,
                question: q.text(),
                answer_a: a.clone(),
                answer_b: b.clone(),
            };
            out.push(Judgment {
                question_id: q.id.clone(),
                game,
                model: req.name.to_string(),
                opponent: req.baseline.to_string(),
                judge: req.judge.to_string(),
                model_position,
                label,
                judgment: judgment.strip_prefix('\n').unwrap_or(judgment).to_string(),
                reask: None,
                usage: vec![],
                prompt_digest: String::new(),
                protocol: protocol.clone(),
                judge_reported: None,
                answers_sha256: job.answers_digest(),
            });
        }
    }
    Ok(out)
}
