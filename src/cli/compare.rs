//! `syncoder compare`: did the fine-tune beat its base model? Answers with both models (cached),
//! judges tuned against base in two games per question, optionally both against a stored
//! baseline, and reports.

use super::arena::{run_judge, GenerationArgs, QuestionArgs};
use crate::arena::answers::{answer_questions, AnswerModel, AnswerSource};
use crate::arena::evaluate::{reports, write_questions_meta, write_reports, Opponent};
use crate::arena::JudgeSettings;
use crate::infer::{locate_model, InferDevice};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Example:
  OPENAI_API_KEY=... syncoder compare --base Qwen/Qwen2.5-Coder-1.5B-Instruct --tuned checkpoints/my-run \\
      --questions hf://datasets/CSJianYang/CodeArena --out eval/ --device cuda")]
pub struct CompareArgs {
    /// The base model: a model directory, a run directory (its latest checkpoint) or a Hub id.
    #[arg(long)]
    pub base: String,
    /// The fine-tuned model: a run directory (its latest checkpoint), a step directory, a model
    /// directory or a Hub id.
    #[arg(long)]
    pub tuned: String,
    /// A tokenizer directory for a model that has none of its own (default: each model's).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub device: InferDevice,
    /// Names in the answer and judgment files (default: `base`, `tuned`).
    #[arg(long, default_value = "base")]
    pub base_name: String,
    /// See --base-name.
    #[arg(long, default_value = "tuned")]
    pub tuned_name: String,
    #[command(flatten)]
    pub questions: QuestionArgs,
    /// Also judge each model against this stored baseline (e.g. gpt-4-turbo-2024-04-09).
    #[arg(long)]
    pub baseline: Option<String>,
    /// The evaluation directory.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub judge: JudgeSettings,
    #[command(flatten)]
    pub generation: GenerationArgs,
    /// Exit with an error when more than this share of a pairing's verdicts cannot be parsed.
    #[arg(long, default_value_t = super::arena::DEFAULT_MAX_UNPARSABLE)]
    pub max_unparsable: f64,
    /// Bootstrap resamples of the questions.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub report_seed: u64,
}

/// The model `spec` names, for `flag`.
fn model(spec: &str, flag: &str, a: &CompareArgs) -> Result<AnswerSource> {
    let dir = locate_model(spec).with_context(|| flag.to_string())?;
    let tokenizer = a.tokenizer.clone().filter(|_| !dir.join("tokenizer.json").is_file());
    Ok(AnswerSource::Local(AnswerModel {
        dir,
        tokenizer,
        device: a.device.clone(),
    }))
}

pub fn run(a: CompareArgs) -> Result<()> {
    if a.base_name == a.tuned_name {
        bail!("--base-name and --tuned-name must differ");
    }
    let tuned = model(&a.tuned, "--tuned", &a)?;
    let base = model(&a.base, "--base", &a)?;
    let qs = a.questions.load_into(&a.out)?;
    let settings = a.generation.settings()?;
    // The judge answers before hours of generation, not after.
    a.judge.client()?.0.check()?;
    write_questions_meta(&a.out, &qs)?;
    answer_questions(&tuned, &a.tuned_name, &qs, &a.out, &settings)?;
    answer_questions(&base, &a.base_name, &qs, &a.out, &settings)?;
    run_judge(
        &a.out,
        &qs,
        &a.tuned_name,
        &Opponent::Model(a.base_name.clone()),
        &a.judge,
        a.max_unparsable,
    )?;
    if let Some(b) = &a.baseline {
        for name in [&a.tuned_name, &a.base_name] {
            run_judge(
                &a.out,
                &qs,
                name,
                &Opponent::Baseline(b.clone()),
                &a.judge,
                a.max_unparsable,
            )?;
        }
    }
    let mut rs = reports(&a.out, a.resamples.max(1), a.report_seed, None)?;
    // The head-to-head first.
    rs.sort_by_key(|r| !(r.model == a.tuned_name && r.opponent == a.base_name));
    println!("{}", write_reports(&a.out, &rs)?);
    Ok(())
}
