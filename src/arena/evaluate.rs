//! The CodeArena steps over an evaluation directory: judging a model's answers against an
//! opponent (a baseline's stored answers or another model's answers) in two games per question,
//! and turning every judgment file into reports (`report.md`, `report.json`, `report.svg`).
//!
//! ```text
//! EVAL_DIR/questions.json                          id, category, languages, difficulty, words
//! EVAL_DIR/model_answer/NAME.jsonl                 answers (see `answers`)
//! EVAL_DIR/model_judgment/JUDGE/NAME.jsonl         NAME vs a stored baseline, both games
//! EVAL_DIR/model_judgment/JUDGE/NAME_vs_OTHER.jsonl  NAME vs another model's answers
//! ```

use super::answers::read_answers;
use super::games::{pending, run_games, GameJob, GameMeta, Judgment, JudgmentLog};
use super::judge_client::JudgeClient;
use super::protocol::Protocol;
use super::questions::{Question, QuestionMeta};
use super::report::{build_report, render_markdown, render_svg, QuestionResult, Report, ReportInput};
use super::score::GameVerdict;
use super::verdict::Position;
use crate::io::write_atomic;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Whom a model is judged against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opponent {
    /// The stored answers of a baseline model in the questions file (`<name>_response`).
    Baseline(String),
    /// Another model's answers in `EVAL_DIR/model_answer/`.
    Model(String),
}

impl Opponent {
    pub fn name(&self) -> &str {
        match self {
            Opponent::Baseline(n) | Opponent::Model(n) => n,
        }
    }
}

/// A file-name-safe form of a model or judge name.
pub fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn judgments_path(eval_dir: &Path, judge: &str, model: &str, opponent: &Opponent) -> PathBuf {
    let dir = eval_dir.join("model_judgment").join(safe_name(judge));
    match opponent {
        Opponent::Baseline(_) => dir.join(format!("{}.jsonl", safe_name(model))),
        Opponent::Model(o) => dir.join(format!("{}_vs_{}.jsonl", safe_name(model), safe_name(o))),
    }
}

/// Records the questions' metadata for `report` (merged with what is there).
pub fn write_questions_meta(eval_dir: &Path, questions: &[Question]) -> Result<()> {
    let path = eval_dir.join("questions.json");
    let mut all: BTreeMap<String, QuestionMeta> = read_questions_meta(eval_dir)
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.id.clone(), m))
        .collect();
    for q in questions {
        all.insert(q.id.clone(), q.meta());
    }
    std::fs::create_dir_all(eval_dir).with_context(|| format!("creating {}", eval_dir.display()))?;
    let list: Vec<&QuestionMeta> = all.values().collect();
    write_atomic(&path, serde_json::to_string_pretty(&list)?.as_bytes())
}

fn read_questions_meta(eval_dir: &Path) -> Result<Vec<QuestionMeta>> {
    let path = eval_dir.join("questions.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (run `arena answer` or `arena judge` first)", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a questions list", path.display()))
}

/// What a judging run did.
#[derive(Clone, Debug, Default)]
pub struct JudgeSummary {
    pub judged: usize,
    pub already_done: usize,
    pub failed: usize,
    /// The errors of the failed games.
    pub failures: Vec<String>,
    /// Questions left out because an answer is missing.
    pub missing_answers: usize,
    pub skipped_too_long: usize,
    /// Games of the pairing judged so far (before and now).
    pub total_judged: usize,
    /// Of those, games whose verdict could not be parsed.
    pub unparsable: usize,
    /// The judge's reply of one unparsable game, to show.
    pub unparsable_sample: Option<String>,
}

/// Judges `model`'s answers against `opponent` on every question (two games each, positions
/// swapped), skipping games already in the judgment file.
pub fn judge(
    eval_dir: &Path,
    questions: &[Question],
    model: &str,
    opponent: &Opponent,
    client: &JudgeClient,
    protocol: &Protocol,
    concurrency: usize,
) -> Result<JudgeSummary> {
    write_questions_meta(eval_dir, questions)?;
    let answers = read_answers(eval_dir, model)?;
    if answers.is_empty() {
        bail!(
            "no answers of {model:?} in {} (run `arena answer` first)",
            eval_dir.display()
        );
    }
    let other = match opponent {
        Opponent::Model(o) => Some(read_answers(eval_dir, o)?),
        Opponent::Baseline(_) => None,
    };
    let mut summary = JudgeSummary::default();
    let mut jobs = Vec::new();
    for q in questions {
        if q.too_long() {
            summary.skipped_too_long += 1;
            continue;
        }
        let mine = answers.get(&q.id).map(|a| a.answer.clone());
        let theirs = match (&other, opponent) {
            (Some(o), _) => o.get(&q.id).map(|a| a.answer.clone()),
            (None, Opponent::Baseline(b)) => q.baselines.get(b).cloned(),
            (None, Opponent::Model(_)) => None,
        };
        let (Some(mine), Some(theirs)) = (mine, theirs) else {
            summary.missing_answers += 1;
            continue;
        };
        let text = q.text();
        // Game 1: the opponent as A; game 2: the model as A.
        jobs.push(GameJob {
            question_id: q.id.clone(),
            game: 1,
            model_position: Position::B,
            question: text.clone(),
            answer_a: theirs.clone(),
            answer_b: mine.clone(),
        });
        jobs.push(GameJob {
            question_id: q.id.clone(),
            game: 2,
            model_position: Position::A,
            question: text,
            answer_a: mine,
            answer_b: theirs,
        });
    }
    if let Opponent::Baseline(b) = opponent {
        if jobs.is_empty() && summary.missing_answers > 0 {
            bail!("the questions hold no answers of baseline {b:?} (keys `{b}_response`)");
        }
    }
    let judge_name = client.config().model.clone();
    let log_path = judgments_path(eval_dir, &judge_name, model, opponent);
    let (mut log, done) = JudgmentLog::open(&log_path)?;
    let digest = super::protocol::digest(protocol, client.config());
    super::protocol::ensure_same(&log_path, &done, &digest)?;
    ensure_same_answers(&log_path, &jobs, &done)?;
    let total = jobs.len();
    let todo = pending(jobs, &done);
    summary.already_done = total - todo.len();
    let bar = crate::io::progress::counting_bar(
        &format!("judging {model} vs {}", opponent.name()),
        "games",
        todo.len() as u64,
    );
    let meta = GameMeta {
        model: model.to_string(),
        opponent: opponent.name().to_string(),
        judge: judge_name,
        protocol: digest,
    };
    summary.unparsable = done.iter().filter(|j| j.label.is_none()).count();
    summary.unparsable_sample = done.iter().find(|j| j.label.is_none()).map(|j| j.judgment.clone());
    let (mut unparsable_now, mut sample_now) = (0, None);
    let run = run_games(client, protocol, todo, &meta, concurrency, &mut log, &mut |j| {
        if j.label.is_none() {
            unparsable_now += 1;
            sample_now.get_or_insert_with(|| j.judgment.clone());
        }
        bar.inc(1)
    })?;
    bar.finish_and_clear();
    summary.unparsable += unparsable_now;
    summary.unparsable_sample = sample_now.or(summary.unparsable_sample);
    summary.total_judged = summary.already_done + run.judged;
    summary.judged = run.judged;
    summary.failed = run.failed.len();
    summary.failures = run.failed.iter().map(|f| f.2.clone()).collect();
    for (id, game, err) in run.failed.iter().take(5) {
        eprintln!("question {id} game {game}: {err}");
    }
    Ok(summary)
}

/// Refuses to resume a judgment file whose games judged other answers than today's (an
/// answers file rewritten since, e.g. with another model under the same name).
fn ensure_same_answers(log_path: &Path, jobs: &[GameJob], done: &[Judgment]) -> Result<()> {
    let now: BTreeMap<(&str, u8), String> = jobs
        .iter()
        .map(|j| ((j.question_id.as_str(), j.game), j.answers_digest()))
        .collect();
    let stale: Vec<String> = done
        .iter()
        .filter(|j| !j.answers_sha256.is_empty())
        .filter(|j| {
            now.get(&(j.question_id.as_str(), j.game))
                .is_some_and(|d| *d != j.answers_sha256)
        })
        .map(|j| format!("{} game {}", j.question_id, j.game))
        .collect();
    if !stale.is_empty() {
        bail!(
            "{}: {} games were judged on answers that have changed since ({}{}); their verdicts do not apply to \
             today's answers. Remove that file to judge again, or judge into another --out",
            log_path.display(),
            stale.len(),
            stale.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
            if stale.len() > 3 { ", …" } else { "" }
        );
    }
    Ok(())
}

/// Reports of every judgment file under `EVAL_DIR/model_judgment/` (of `only_model`'s pairings
/// when given), in file-name order.
pub fn reports(eval_dir: &Path, resamples: usize, seed: u64, only_model: Option<&str>) -> Result<Vec<Report>> {
    let metas: BTreeMap<String, QuestionMeta> = read_questions_meta(eval_dir)?
        .into_iter()
        .map(|m| (m.id.clone(), m))
        .collect();
    let source = super::questions::read_source(eval_dir)?.map(|s| s.describe());
    let root = eval_dir.join("model_judgment");
    let mut files: Vec<PathBuf> = Vec::new();
    for judge in
        std::fs::read_dir(&root).with_context(|| format!("listing {} (nothing judged yet?)", root.display()))?
    {
        let judge = judge?.path();
        if judge.is_dir() {
            for f in std::fs::read_dir(&judge)?.flatten() {
                if f.path().extension().is_some_and(|e| e == "jsonl") {
                    files.push(f.path());
                }
            }
        }
    }
    files.sort();
    let skipped = metas
        .values()
        .filter(|m| m.words >= super::questions::MAX_QUESTION_WORDS)
        .count();
    let mut out = Vec::new();
    for file in files {
        let judgments: Vec<Judgment> = crate::io::jsonl::read(&file)?;
        super::protocol::of_file(&file, &judgments)?;
        // One file holds one pairing; group anyway, in case files were concatenated.
        let mut pairs: BTreeMap<(String, String, String), BTreeMap<String, Vec<GameVerdict>>> = BTreeMap::new();
        for j in judgments {
            pairs
                .entry((j.model.clone(), j.opponent.clone(), j.judge.clone()))
                .or_default()
                .entry(j.question_id.clone())
                .or_default()
                .push(GameVerdict {
                    model_position: j.model_position,
                    label: j.label,
                });
        }
        for ((model, opponent, judge), by_q) in pairs {
            if only_model.is_some_and(|m| m != model) {
                continue;
            }
            // Answers of the scored questions cut at the token limit (model's, and opponent's
            // when it is a model of this directory).
            let truncated = |name: &str| -> Result<usize> {
                Ok(read_answers(eval_dir, name)?
                    .values()
                    .filter(|a| {
                        a.finish_reason == crate::infer::FinishReason::Length && by_q.contains_key(&a.question_id)
                    })
                    .count())
            };
            let truncated_answers = truncated(&model)?;
            let opponent_truncated = truncated(&opponent)?;
            let mut results = Vec::new();
            let mut missing = 0;
            for m in metas
                .values()
                .filter(|m| m.words < super::questions::MAX_QUESTION_WORDS)
            {
                match by_q.get(&m.id) {
                    Some(games) if games.len() >= 2 => results.push(QuestionResult {
                        id: m.id.clone(),
                        category: m.category.clone(),
                        sub_category: m.sub_category.clone(),
                        languages: m.languages.clone(),
                        difficulty: m.difficulty.clone(),
                        games: games.clone(),
                    }),
                    _ => missing += 1,
                }
            }
            let mut report = build_report(&ReportInput {
                model,
                opponent,
                judge,
                results,
                skipped_too_long: skipped,
                missing,
                resamples,
                seed,
                min_valid_share: super::report::MIN_VALID_SHARE,
                truncated_answers,
                opponent_truncated,
            });
            report.questions_source = source.clone();
            out.push(report);
        }
    }
    if out.is_empty() {
        bail!("no judgments under {}", root.display());
    }
    Ok(out)
}

/// Writes `report.md` (every pairing), `report.json` (a list) and `report.svg` (the first
/// pairing; `report-MODEL-vs-OPPONENT.svg` for each).
pub fn write_reports(eval_dir: &Path, reports: &[Report]) -> Result<String> {
    let md: Vec<String> = reports.iter().map(render_markdown).collect();
    let md = md.join("\n\n");
    write_atomic(&eval_dir.join("report.md"), md.as_bytes())?;
    write_atomic(
        &eval_dir.join("report.json"),
        serde_json::to_string_pretty(reports)?.as_bytes(),
    )?;
    for (i, r) in reports.iter().enumerate() {
        let svg = render_svg(r);
        if i == 0 {
            write_atomic(&eval_dir.join("report.svg"), svg.as_bytes())?;
        }
        let name = format!("report-{}-vs-{}.svg", safe_name(&r.model), safe_name(&r.opponent));
        write_atomic(&eval_dir.join(name), svg.as_bytes())?;
    }
    Ok(md)
}
