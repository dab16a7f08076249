//! `syncoder exec-eval`: an execution benchmark (HumanEval, HumanEval+, MBPP, MBPP+,
//! MultiPL-E) for a model, an OpenAI-compatible endpoint, or a samples file
//! (`eval::exec_eval`).

use crate::arena::answers::{AnswerModel, AnswerSettings, AnswerSource};
use crate::eval::benchmark::Benchmark;
use crate::eval::exec_eval::{self, ExecEvalOptions, SampleSource};
use crate::eval::execute::RunLimits;
use crate::infer::{locate_model, InferDevice, Sampling};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  syncoder exec-eval --benchmark humaneval+ --model checkpoints/my-run --out eval/exec/my-run --device cuda
  syncoder exec-eval --benchmark multipl-e-cpp --endpoint http://127.0.0.1:8000/v1 --endpoint-model base --out eval/exec/base
  syncoder exec-eval --benchmark mbpp --samples samples.jsonl --out eval/exec/given")]
pub struct ExecEvalArgs {
    /// humaneval, humaneval+, mbpp, mbpp+, or multipl-e-LANG (LANG: cpp, java, js, ts, php, sh,
    /// cs, rs, go, py).
    #[arg(long)]
    pub benchmark: String,
    /// The problems: a file, directory, glob or hf://datasets/... source in the benchmark's own
    /// schema (default: the benchmark's dataset on the Hub).
    #[arg(long)]
    pub problems: Option<String>,
    /// The model that answers: a model or checkpoint directory, a run directory, or a Hub id.
    #[arg(long, conflicts_with_all = ["endpoint", "samples"])]
    pub model: Option<String>,
    #[command(flatten)]
    pub endpoint: super::endpoint::EndpointArgs,
    /// Test these samples instead (JSONL: task_id and one of solution, completion, reply).
    #[arg(long, conflicts_with = "endpoint")]
    pub samples: Option<PathBuf>,
    /// A directory with tokenizer.json and tokenizer_config.json (default: the model's).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub device: InferDevice,
    /// The output directory: model_answer/, results/, summary.json, summary.md.
    #[arg(long)]
    pub out: PathBuf,
    /// The name results are filed under (default: the last part of --model / the endpoint model
    /// / the samples file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// `chat`: the model answers an instruction through its chat template (instruct models);
    /// `completion`: it continues the problem's code prompt, cut at the stop tokens (base
    /// models; --model only).
    #[arg(long, default_value = "chat", value_parser = ["chat", "completion"])]
    pub mode: String,
    /// Samples per problem (1: greedy pass@1, the paper's protocol; more needs --temperature).
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// The k of pass@k to report besides 1, comma-separated (each at most --n).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub k: Vec<usize>,
    /// Sampling temperature (unset: greedy).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass (with --temperature).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Seed of the sampling streams (with --temperature).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokens an answer may have.
    #[arg(long, default_value_t = 1024)]
    pub max_new_tokens: usize,
    /// Problems generated together (with --endpoint: requests in flight).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// The instruction to chat models: a file in which `{language}` and `{prompt}` are
    /// replaced (default: the project's own wording; docs/exec-eval.md says where EvalPlus's
    /// and Qwen's are).
    #[arg(long)]
    pub prompt_template: Option<PathBuf>,
    /// Replace answers filed under the name that another model or setting produced.
    #[arg(long)]
    pub overwrite: bool,
    /// Seconds each program may run (wall and CPU; compiling gets 30 more).
    #[arg(long, default_value_t = 10)]
    pub timeout_s: u64,
    /// Memory each program may use, MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory_mib: u64,
    /// Programs run at once (default: the machine's cores).
    #[arg(long)]
    pub jobs: Option<usize>,
}

pub fn run(a: ExecEvalArgs) -> Result<()> {
    let benchmark = Benchmark::parse(&a.benchmark)?;
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    if a.n > 1 && a.temperature.is_none_or(|t| t <= 0.0) && a.samples.is_none() {
        bail!(
            "--n {} samples of greedy decoding would all be the same: give --temperature",
            a.n
        );
    }
    let sampling = match a.temperature {
        Some(t) if t > 0.0 => Sampling {
            temperature: t,
            top_p: a.top_p,
            seed: a.seed,
        },
        Some(t) if t < 0.0 => bail!("--temperature must be positive"),
        _ => Sampling::greedy(),
    };
    let settings = AnswerSettings {
        max_new_tokens: a.max_new_tokens,
        sampling,
        batch_size: a.batch_size,
        overwrite: a.overwrite,
    };
    let template = match &a.prompt_template {
        Some(p) => crate::eval::samples::read_template(p)?,
        None => crate::eval::samples::DEFAULT_TEMPLATE.to_string(),
    };
    let stem = |p: &std::path::Path| {
        p.file_stem()
            .or_else(|| p.file_name())
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "model".into())
    };
    let (samples, default_name) = match (&a.model, a.endpoint.settings(a.batch_size), &a.samples) {
        (Some(model), None, None) if a.mode == "completion" => {
            let dir = locate_model(model)?;
            let name = stem(&dir);
            let model = AnswerModel {
                dir,
                tokenizer: a.tokenizer.clone(),
                device: a.device.clone(),
            };
            (
                SampleSource::Completion {
                    model,
                    n: a.n,
                    settings,
                },
                name,
            )
        }
        (None, Some(_), None) if a.mode == "completion" => {
            bail!("--mode completion needs --model: completions through an endpoint are not built yet")
        }
        (Some(model), None, None) => {
            let dir = locate_model(model)?;
            let name = stem(&dir);
            let source = AnswerSource::Local(AnswerModel {
                dir,
                tokenizer: a.tokenizer.clone(),
                device: a.device.clone(),
            });
            (
                SampleSource::Model {
                    source: Box::new(source),
                    n: a.n,
                    settings,
                    template: template.clone(),
                },
                name,
            )
        }
        (None, Some(cfg), None) => {
            let model = cfg.model.clone();
            let source = AnswerSource::Endpoint(cfg);
            (
                SampleSource::Model {
                    source: Box::new(source),
                    n: a.n,
                    settings,
                    template: template.clone(),
                },
                model,
            )
        }
        (None, None, Some(path)) => (SampleSource::File(path.clone()), stem(path)),
        _ => bail!("give one of --model, --endpoint and --samples"),
    };
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let o = ExecEvalOptions {
        benchmark,
        problems: a.problems,
        out: a.out,
        name: a.name.unwrap_or(default_name),
        samples,
        ks: a.k,
        limits: RunLimits {
            run_seconds: a.timeout_s,
            memory_bytes: a.memory_mib << 20,
            ..RunLimits::default()
        },
        jobs,
    };
    let summary = exec_eval::run(&o)?;
    print!("{}", crate::eval::report::markdown(&summary));
    eprintln!("wrote {}", o.out.join("summary.json").display());
    Ok(())
}
