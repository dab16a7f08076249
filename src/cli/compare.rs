//! `syncoder compare`: did the fine-tune beat its base model? Answers with both models (cached),
//! judges tuned against base in two games per question, optionally both against a stored
//! baseline, and reports; with `--exec`, also runs execution benchmarks with both models and
//! writes the paper's table of pass@1 beside CodeArena (`comparison.md`).

use super::arena::{run_judge, GenerationArgs, QuestionArgs};
use crate::arena::answers::{answer_questions, AnswerModel, AnswerSettings, AnswerSource};
use crate::arena::evaluate::{reports, write_questions_meta, write_reports, Opponent};
use crate::arena::JudgeSettings;
use crate::eval::benchmark::Benchmark;
use crate::eval::exec_eval::{self, ExecEvalOptions, SampleSource};
use crate::eval::execute::RunLimits;
use crate::eval::paper_table::{Comparison, ModelRow};
use crate::eval::samples::DEFAULT_TEMPLATE;
use crate::infer::{locate_model, InferDevice, Sampling};
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
    /// Also run these execution benchmarks with both models (greedy pass@1), comma-separated:
    /// humaneval, humaneval+, mbpp, mbpp+, multipl-e-LANG.
    #[arg(long, value_delimiter = ',')]
    pub exec: Vec<String>,
    /// Where an execution benchmark's problems are, as BENCH=SOURCE (repeatable; default: its
    /// dataset on the Hub).
    #[arg(long)]
    pub exec_problems: Vec<String>,
    /// Tokens an execution-benchmark answer may have.
    #[arg(long, default_value_t = 1024)]
    pub exec_max_new_tokens: usize,
    /// Seconds each execution-benchmark program may run.
    #[arg(long, default_value_t = 10)]
    pub exec_timeout_s: u64,
}

/// The execution benchmarks of `--exec`, each with its `--exec-problems` source; refused before
/// any generation when a name, a source or a toolchain is wrong.
fn exec_benchmarks(a: &CompareArgs) -> Result<Vec<(Benchmark, Option<String>)>> {
    let mut sources = std::collections::HashMap::new();
    for spec in &a.exec_problems {
        let Some((b, src)) = spec.split_once('=') else {
            bail!("--exec-problems {spec:?}: expected BENCH=SOURCE");
        };
        sources.insert(Benchmark::parse(b)?.name(), src.to_string());
    }
    let mut out = Vec::new();
    for name in &a.exec {
        let b = Benchmark::parse(name)?;
        if let Some(tool) = b.language().missing_tool() {
            bail!("--exec {name}: `{tool}` is not installed here, so its programs cannot run");
        }
        out.push((b, sources.remove(&b.name())));
    }
    if let Some(b) = sources.keys().next() {
        bail!("--exec-problems names {b}, which --exec does not run");
    }
    Ok(out)
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
    let benches = exec_benchmarks(&a)?;
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
    if benches.is_empty() {
        return Ok(());
    }
    let head_to_head = rs
        .iter()
        .find(|r| r.model == a.tuned_name && r.opponent == a.base_name)
        .map(|r| r.overall.wt.clone());
    let exec_settings = AnswerSettings {
        max_new_tokens: a.exec_max_new_tokens,
        sampling: Sampling::greedy(),
        batch_size: a.generation.batch_size,
        overwrite: a.generation.overwrite,
    };
    let mut rows = Vec::new();
    for (name, source) in [(&a.tuned_name, &tuned), (&a.base_name, &base)] {
        let mut pass = Vec::new();
        for (bench, problems) in &benches {
            let o = ExecEvalOptions {
                benchmark: *bench,
                problems: problems.clone(),
                out: a.out.join("exec").join(name).join(bench.name()),
                name: name.clone(),
                samples: SampleSource::Model {
                    source: Box::new(source.clone()),
                    n: 1,
                    settings: exec_settings.clone(),
                    template: DEFAULT_TEMPLATE.to_string(),
                },
                ks: vec![1],
                limits: RunLimits {
                    run_seconds: a.exec_timeout_s,
                    ..RunLimits::default()
                },
                jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            };
            let s = exec_eval::run(&o).with_context(|| format!("{} on {}", name, bench.name()))?;
            pass.push((bench.name(), s.pass_at_1));
        }
        rows.push(ModelRow {
            model: name.clone(),
            pass_at_1: pass,
            codearena: if *name == a.tuned_name {
                head_to_head.clone()
            } else {
                None
            },
        });
    }
    let table = Comparison {
        codearena_column: format!("win/tie % vs {}", a.base_name),
        rows,
    };
    table.write(&a.out)?;
    println!("{}", table.markdown());
    Ok(())
}
