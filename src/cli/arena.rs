//! `syncoder arena answer | judge | report | export | import`: the CodeArena steps over an
//! evaluation directory and its interchange with the official files,
//! and the question and generation options shared with `syncoder compare` (the judge's are
//! `arena::JudgeSettings`).

use crate::arena::answers::{
    answer_questions, AnswerModel, AnswerSettings, AnswerSource, DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS,
};
use crate::arena::evaluate::{judge, reports, write_questions_meta, write_reports, Opponent};
use crate::arena::interchange;
use crate::arena::questions::{self, Question};
use crate::arena::JudgeSettings;
use crate::infer::{locate_model, InferDevice, Sampling};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ArenaCommand {
    /// Answer the questions with a model (greedy by default), resuming where it stopped.
    Answer(AnswerArgs),
    /// Judge a model's answers against a stored baseline or another model, two games each.
    Judge(JudgeArgs),
    /// Scores, confidence intervals and Bradley–Terry win probability of every judged pairing.
    Report(ReportArgs),
    /// Write a model's answers and judgments as the official results.jsonl and
    /// results.jsonl.judge (which the official judge_models.py scores).
    Export(ExportArgs),
    /// Read the official results.jsonl (and results.jsonl.judge, if beside it) into an
    /// evaluation directory, to report on them or judge them further.
    Import(ImportArgs),
}

/// Where the questions come from.
#[derive(Args, Debug, Clone)]
pub struct QuestionArgs {
    /// CodeArena-format JSONL, or hf://datasets/CSJianYang/CodeArena (read at the leaderboard's
    /// revision 05a5f4c unless one is given as NAME@REVISION).
    #[arg(long)]
    pub questions: String,
    /// JSON map from task type to [main, sub] categories, or `official` for the official
    /// tasktype_to_levels.json (fetched at the pinned commit; the default for the official
    /// dataset), or `none`.
    #[arg(long)]
    pub categories: Option<String>,
}

impl QuestionArgs {
    /// The questions with their records, and where they came from.
    pub fn load_records(&self) -> Result<(Vec<questions::Record>, questions::QuestionSource)> {
        questions::load_with_categories(&self.questions, self.categories.as_deref())
    }

    /// Loads the questions and records their source in `eval_dir`.
    pub fn load_into(&self, eval_dir: &std::path::Path) -> Result<Vec<Question>> {
        let (records, source) = self.load_records()?;
        questions::record_source(eval_dir, &source)?;
        Ok(records.into_iter().map(|r| r.question).collect())
    }
}

/// Generation options of answering.
#[derive(Args, Debug, Clone)]
pub struct GenerationArgs {
    /// Tokens an answer may have (the official 16384 by default; each answer is also capped by
    /// what the model's context leaves after the question; answers cut short are marked
    /// `finish_reason: length` and counted in the report).
    #[arg(long, default_value_t = DEFAULT_MAX_NEW_TOKENS)]
    pub max_new_tokens: usize,
    /// Questions generated together (with --endpoint: requests in flight).
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Sample instead of greedy decoding (the protocol is greedy).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass (with --temperature).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Seed of the sampling streams (with --temperature).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace answers already filed under the name that another model, tokenizer or setting
    /// produced (their judgments are removed too); without it such a mismatch is refused.
    #[arg(long)]
    pub overwrite: bool,
}

impl GenerationArgs {
    pub fn settings(&self) -> Result<AnswerSettings> {
        let sampling = match self.temperature {
            Some(t) if t > 0.0 => Sampling {
                temperature: t,
                top_p: self.top_p,
                seed: self.seed,
            },
            Some(t) if t < 0.0 => bail!("--temperature must be positive"),
            _ => Sampling::greedy(),
        };
        if self.top_p <= 0.0 || self.top_p > 1.0 {
            bail!("--top-p must be in (0, 1]");
        }
        Ok(AnswerSettings {
            max_new_tokens: self.max_new_tokens,
            sampling,
            batch_size: self.batch_size,
            overwrite: self.overwrite,
        })
    }
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  syncoder arena answer --model checkpoints/my-run --name my-run --questions hf://datasets/CSJianYang/CodeArena --out eval/
  syncoder arena answer --model Qwen/Qwen2.5-Coder-1.5B-Instruct --name base --questions q.jsonl --out eval/ --device cuda")]
pub struct AnswerArgs {
    /// The model: a model or checkpoint step directory, a run directory (its latest checkpoint),
    /// or a Hugging Face Hub id (from the HF cache; HF_HUB_OFFLINE honoured).
    #[arg(long, required_unless_present = "endpoint", conflicts_with = "endpoint")]
    pub model: Option<String>,
    #[command(flatten)]
    pub endpoint: super::endpoint::EndpointArgs,
    /// A directory with tokenizer.json and tokenizer_config.json (default: the model's).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub device: InferDevice,
    /// The name the answers are filed under (model_answer/NAME.jsonl).
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub questions: QuestionArgs,
    /// The evaluation directory.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub generation: GenerationArgs,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  OPENAI_API_KEY=... syncoder arena judge --out eval/ --questions q.jsonl --name my-run --baseline gpt-4-turbo-2024-04-09
  syncoder arena judge --out eval/ --questions q.jsonl --name my-run --vs base --judge-url http://127.0.0.1:8000/v1 --judge-model judge")]
pub struct JudgeArgs {
    /// The evaluation directory (where `arena answer` wrote model_answer/).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub questions: QuestionArgs,
    /// The name whose answers are judged (model_answer/NAME.jsonl; `--model` is the same).
    #[arg(long = "name", alias = "model")]
    pub name: String,
    /// Judge against the stored answers of this baseline (e.g. gpt-4-turbo-2024-04-09).
    #[arg(long, conflicts_with = "vs", required_unless_present = "vs")]
    pub baseline: Option<String>,
    /// Judge against another model's answers (its name in model_answer/).
    #[arg(long)]
    pub vs: Option<String>,
    #[command(flatten)]
    pub judge: JudgeSettings,
    /// Exit with an error (the judged games stay saved) when more than this share of the
    /// pairing's verdicts cannot be parsed.
    #[arg(long, default_value_t = DEFAULT_MAX_UNPARSABLE)]
    pub max_unparsable: f64,
}

/// The share of unparsable verdicts above which judging ends in an error.
pub const DEFAULT_MAX_UNPARSABLE: f64 = 0.1;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The evaluation directory.
    pub eval_dir: PathBuf,
    /// Bootstrap resamples of the questions.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The pairing an export or import is about: NAME vs a stored baseline, by a judge.
#[derive(Args, Debug, Clone)]
pub struct PairingArgs {
    /// The model's name (model_answer/NAME.jsonl).
    #[arg(long)]
    pub name: String,
    /// The stored baseline the model is judged against.
    #[arg(long, default_value = "gpt-4-turbo-2024-04-09")]
    pub baseline: String,
    /// The judge's name (model_judgment/JUDGE/).
    #[arg(long, default_value = "gpt-4o")]
    pub judge: String,
}

/// The formats `arena export` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// The official CodeArena files (`infer_vllm.py`'s results.jsonl, `judge_models.py`'s
    /// results.jsonl.judge).
    Codearena,
}

#[derive(Args, Debug)]
#[command(after_help = "Example:
  syncoder arena export eval/ --format codearena --out official/my-run --questions hf://datasets/CSJianYang/CodeArena --name my-run --judge gpt-4o
  python judge_models.py --evaluation_only --output_path official/my-run/results.jsonl.judge   # the official scores")]
pub struct ExportArgs {
    /// The evaluation directory.
    pub eval_dir: PathBuf,
    /// The files to write (the official CodeArena ones).
    #[arg(long, value_enum, default_value = "codearena")]
    pub format: ExportFormat,
    /// Where results.jsonl and results.jsonl.judge go.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub questions: QuestionArgs,
    #[command(flatten)]
    pub pairing: PairingArgs,
    /// A judge configuration (arena-hard YAML) to render each game's `user_prompt` with;
    /// without it `user_prompt` is null (the official scoring does not read it).
    #[arg(long)]
    pub judge_config: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(after_help = "Example:
  syncoder arena import official/Qwen2.5-Coder-32B/ --out eval/ --name qwen32b-official --judge gpt-4o
  syncoder arena report eval/")]
pub struct ImportArgs {
    /// results.jsonl, or the directory holding it (results.jsonl.judge beside it is read too).
    pub from: PathBuf,
    /// The evaluation directory to write into.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub pairing: PairingArgs,
    /// JSON map from task type to [main, sub] categories, `official`, or `none` (the default:
    /// each record's `level`).
    #[arg(long)]
    pub categories: Option<String>,
}

pub fn run(cmd: ArenaCommand) -> Result<()> {
    match cmd {
        ArenaCommand::Answer(a) => {
            let qs = a.questions.load_into(&a.out)?;
            let settings = a.generation.settings()?;
            let source = match (&a.model, a.endpoint.settings(settings.batch_size)) {
                (Some(model), None) => AnswerSource::Local(AnswerModel {
                    dir: locate_model(model)?,
                    tokenizer: a.tokenizer,
                    device: a.device,
                }),
                (None, Some(cfg)) => AnswerSource::Endpoint(cfg),
                _ => bail!("give one of --model and --endpoint"),
            };
            answer_questions(&source, &a.name, &qs, &a.out, &settings)?;
            write_questions_meta(&a.out, &qs)?;
            Ok(())
        }
        ArenaCommand::Judge(a) => {
            let qs = a.questions.load_into(&a.out)?;
            let opponent = match (a.baseline, a.vs) {
                (Some(b), None) => Opponent::Baseline(b),
                (None, Some(v)) => Opponent::Model(v),
                _ => bail!("give exactly one of --baseline and --vs"),
            };
            run_judge(&a.out, &qs, &a.name, &opponent, &a.judge, a.max_unparsable)
        }
        ArenaCommand::Report(a) => {
            let rs = reports(&a.eval_dir, a.resamples.max(1), a.seed, None)?;
            println!("{}", write_reports(&a.eval_dir, &rs)?);
            Ok(())
        }
        ArenaCommand::Export(a) => {
            let ExportFormat::Codearena = a.format;
            // The export needs the records, not their categories: no map unless one is named.
            let mut qa = a.questions.clone();
            qa.categories.get_or_insert_with(|| "none".to_string());
            let (records, _) = qa.load_records()?;
            let prompt = a
                .judge_config
                .as_deref()
                .map(crate::arena::judge_config::JudgeConfig::from_file)
                .transpose()?;
            let s = interchange::export(&interchange::ExportRequest {
                eval_dir: &a.eval_dir,
                records: &records,
                model: &a.pairing.name,
                baseline: &a.pairing.baseline,
                judge: &a.pairing.judge,
                prompt: prompt.as_ref(),
                out_dir: &a.out,
            })?;
            eprintln!(
                "wrote {} answers to {} and {} judged questions to {} ({} questions without an answer left out)",
                s.answers,
                a.out.join(interchange::RESULTS).display(),
                s.judged,
                a.out.join(interchange::JUDGE).display(),
                s.unanswered
            );
            if s.judged == 0 {
                eprintln!(
                    "no judgments of {} vs {} by {}: only results.jsonl was written",
                    a.pairing.name, a.pairing.baseline, a.pairing.judge
                );
            }
            Ok(())
        }
        ArenaCommand::Import(a) => {
            let (cats, named) = questions::load_categories(a.categories.as_deref(), false)?;
            let s = interchange::import(&interchange::ImportRequest {
                from: &a.from,
                eval_dir: &a.out,
                name: &a.pairing.name,
                baseline: &a.pairing.baseline,
                judge: &a.pairing.judge,
                categories: cats.as_ref(),
                categories_name: named,
            })?;
            eprintln!(
                "imported {} answers of {} into {}{}",
                s.answers,
                a.pairing.name,
                a.out.display(),
                match &s.judgments_file {
                    Some(f) => format!(
                        " and {} judged questions ({} games without a verdict) into {}",
                        s.judged,
                        s.unparsable,
                        f.display()
                    ),
                    None => " (no results.jsonl.judge beside it)".to_string(),
                }
            );
            Ok(())
        }
    }
}

/// Judges one pairing (after checking the judge answers at all) and reports failures and
/// unparsable verdicts plainly (finished games stay written).
pub fn run_judge(
    out: &std::path::Path,
    qs: &[Question],
    model: &str,
    opponent: &Opponent,
    settings: &JudgeSettings,
    max_unparsable: f64,
) -> Result<()> {
    let (client, prompt) = settings.client()?;
    client.check()?;
    let s = judge(out, qs, model, opponent, &client, &prompt, settings.parallel())?;
    eprintln!(
        "{model} vs {}: {} games judged now, {} already judged, {} skipped (too long), {} without both answers",
        opponent.name(),
        s.judged,
        s.already_done,
        s.skipped_too_long,
        s.missing_answers
    );
    if s.failed > 0 {
        bail!(
            "{} games failed after retries (the judged ones are saved): {}",
            s.failed,
            failure_advice(&s.failures, settings)
        );
    }
    if s.unparsable > 0 {
        let share = s.unparsable as f64 / s.total_judged.max(1) as f64;
        let sample = s.unparsable_sample.as_deref().unwrap_or("");
        let flat: String = sample.split_whitespace().collect::<Vec<_>>().join(" ");
        let cut: String = flat.chars().take(300).collect();
        eprintln!(
            "{model} vs {}: {} of {} verdicts unparsable ({:.0}%); one such reply: {cut:?}{}",
            opponent.name(),
            s.unparsable,
            s.total_judged,
            share * 100.0,
            if flat.chars().count() > 300 { "…" } else { "" }
        );
        if share > max_unparsable {
            bail!(
                "{:.0}% of the verdicts could not be parsed (more than --max-unparsable {}): the judge does not \
                 answer in the protocol's format (is --judge-model a capable instruction-following model?). The \
                 games are saved; `arena report` marks the scores unreliable",
                share * 100.0,
                max_unparsable
            );
        }
    }
    Ok(())
}

/// What to do about failed judge requests, from their errors.
fn failure_advice(errors: &[String], settings: &JudgeSettings) -> String {
    let has = |code: &str| errors.iter().any(|e| e.contains(&format!("HTTP {code}")));
    if has("401") || has("403") {
        let set = std::env::var(&settings.key_env).is_ok_and(|v| !v.trim().is_empty());
        format!(
            "the judge refused the credentials: check ${} (set: {})",
            settings.key_env,
            if set { "yes" } else { "no" }
        )
    } else if has("404") || has("400") {
        format!(
            "the judge rejected the request: check --judge-url ({}) and --judge-model ({})",
            settings.url, settings.model
        )
    } else {
        "run the same command again to finish them".to_string()
    }
}
