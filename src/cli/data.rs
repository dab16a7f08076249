//! `syncoder data ...`: commands over instruction shards.

use crate::data::loader::OnBadRecord;
use crate::data::mask_policy::MaskPolicy;
use crate::data::validate::validate_sources;
use crate::data::Overflow;
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Check every record of the given shard files or directories; print each bad record as
    /// FILE:LINE: reason and exit non-zero if there is any.
    Validate(ValidateArgs),
    /// Corpus statistics: records, tokens, supervised ratio, length percentiles, languages.
    Inspect(InspectArgs),
    /// Tokenise shards once into memory-mapped prepared shards (ids + mask + document offsets,
    /// with a manifest and checksums) that training reads directly.
    Prepare(PrepareArgs),
    /// Drop samples sharing any 10-gram of whitespace tokens with a benchmark's questions.
    Decontam(DecontamArgs),
    /// Train a small byte-level BPE tokenizer (with the ChatML special tokens) on chat-rendered
    /// records; writes tokenizer.json and tokenizer_config.json (with the chat template).
    TrainTokenizer(TrainTokenizerArgs),
}

/// Where the tokenizer and chat template come from.
#[derive(Args, Debug)]
pub struct TokenizerArgs {
    /// A model or tokenizer directory holding tokenizer.json (and tokenizer_config.json with
    /// its chat template; without one the built-in Qwen2.5 ChatML template is used).
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Samples longer than this many tokens are handled by --overflow.
    #[arg(long, default_value_t = 32768)]
    pub max_seq_len: usize,
    /// truncate: keep the first --max-seq-len tokens; drop: skip the sample.
    #[arg(long, value_enum, default_value_t = Overflow::Truncate)]
    pub overflow: Overflow,
    /// Which text is trained on (a run's data.mask; see docs/data-format.md).
    #[arg(long, value_enum, default_value_t = MaskPolicy::Auto)]
    pub mask: MaskPolicy,
}

impl TokenizerArgs {
    pub fn builder(&self) -> Result<crate::data::SampleBuilder> {
        Ok(
            crate::data::sample::SampleBuilder::from_dir(&self.tokenizer, self.max_seq_len, self.overflow)?
                .with_mask(self.mask),
        )
    }
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Shard files, directories or glob patterns.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print the first N samples instead of the report: the rendered text with the trained
    /// text marked, and each token's position, id, trained flag and text.
    #[arg(long, value_name = "N", conflicts_with = "json")]
    pub show: Option<usize>,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  syncoder data prepare shards/ --config configs/qwen2.5-coder-0.5b.toml --out prepared/
  syncoder data prepare shards/ --tokenizer data/sample/tokenizer --max-seq-len 4096 --out prepared/")]
pub struct PrepareArgs {
    /// Shard files, directories or glob patterns.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// A run config: take the tokenizer, the length (data.max_seq_len or data.seq_len), the
    /// overflow rule and the bad-record rule from it, so the shards suit that run.
    #[arg(long, conflicts_with_all = ["tokenizer", "max_seq_len", "overflow", "mask"])]
    pub config: Option<PathBuf>,
    /// A model or tokenizer directory holding tokenizer.json (and tokenizer_config.json with
    /// its chat template).
    #[arg(long, required_unless_present = "config")]
    pub tokenizer: Option<PathBuf>,
    /// Samples longer than this many tokens are handled by --overflow [default: 32768].
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// truncate: keep the first --max-seq-len tokens; drop: skip the sample [default: truncate].
    #[arg(long, value_enum)]
    pub overflow: Option<Overflow>,
    /// Which text is trained on (a run's data.mask) [default: auto].
    #[arg(long, value_enum)]
    pub mask: Option<MaskPolicy>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Samples per prepared shard file.
    #[arg(long, default_value_t = 100_000)]
    pub docs_per_shard: usize,
    /// fail: stop at the first bad record (naming file and line); skip: skip and count
    /// [default: fail, or the run config's].
    #[arg(long, value_enum)]
    pub on_bad_record: Option<OnBadRecord>,
}

impl PrepareArgs {
    /// The sample builder and the bad-record rule: from the run config, or from the flags.
    fn builder(&self) -> Result<(crate::data::SampleBuilder, OnBadRecord)> {
        if let Some(path) = &self.config {
            let cfg = crate::train::RunConfig::load(path, &[])?;
            let dirs = crate::train::model_source::model_dirs(&cfg.model)?;
            let b =
                crate::data::SampleBuilder::from_dir(&dirs.tokenizer, cfg.data.max_sample_len(), cfg.data.overflow)?
                    .with_mask(cfg.data.mask);
            return Ok((b, self.on_bad_record.unwrap_or(cfg.data.on_bad_record)));
        }
        let tokenizer = self
            .tokenizer
            .as_ref()
            .expect("clap requires --tokenizer without --config");
        let b = crate::data::SampleBuilder::from_dir(
            tokenizer,
            self.max_seq_len.unwrap_or(32768),
            self.overflow.unwrap_or(Overflow::Truncate),
        )?
        .with_mask(self.mask.unwrap_or_default());
        Ok((b, self.on_bad_record.unwrap_or(OnBadRecord::Fail)))
    }
}

#[derive(Args, Debug)]
pub struct DecontamArgs {
    /// Shard files, directories or glob patterns.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// Benchmark questions (JSONL; user turns of `messages`, or `question` / `prompt`).
    #[arg(long)]
    pub against: PathBuf,
    /// Output directory for the kept records and dropped.jsonl (written whole or not at all).
    #[arg(long)]
    pub out: PathBuf,
    /// Words per n-gram: a sample sharing any n consecutive words with a question is dropped.
    #[arg(long, default_value_t = crate::data::decontam::NGRAM)]
    pub ngram: usize,
    /// Replace a non-empty --out directory.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct TrainTokenizerArgs {
    /// Shard files or directories.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// Vocabulary size, special tokens included.
    #[arg(long, default_value_t = 2048)]
    pub vocab_size: usize,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Render records without the Qwen2.5 default system turn.
    #[arg(long)]
    pub no_default_system: bool,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Shard files (.jsonl, .jsonl.zst, .jsonl.gz) or directories holding them.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Inspect(a) => {
            let builder = a.tokenizer.builder()?;
            if let Some(n) = a.show {
                use std::io::IsTerminal;
                let stdout = std::io::stdout();
                let color = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
                let marks = if color {
                    &crate::data::show::COLOR
                } else {
                    &crate::data::show::BRACKETS
                };
                let shown = crate::data::show::show(&a.sources, &builder, n, marks, &mut stdout.lock())?;
                if shown < n {
                    eprintln!("the data holds {shown} samples");
                }
                return Ok(());
            }
            let mut shown = 0;
            let r = crate::data::inspect::inspect(&a.sources, &builder, |msg| {
                if shown < 20 {
                    eprintln!("bad record: {msg}");
                }
                shown += 1;
            })?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("files              {}", r.files);
                println!("records            {} ({} bad)", r.records, r.bad_records);
                println!(
                    "samples            {} (dropped: {} too long, {} without supervised tokens)",
                    r.samples, r.dropped_too_long, r.dropped_no_supervised
                );
                println!("tokens             {}", r.tokens);
                println!(
                    "supervised tokens  {} ({:.1}%)",
                    r.supervised_tokens,
                    100.0 * r.supervised_ratio()
                );
                println!(
                    "sample length      p50 {}  p90 {}  p99 {}  max {}",
                    r.length_p50, r.length_p90, r.length_p99, r.length_max
                );
                println!("languages");
                let mut langs: Vec<_> = r.languages.iter().collect();
                langs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                for (lang, n) in langs {
                    println!("  {lang:<16} {n}");
                }
            }
            Ok(())
        }
        DataCommand::Prepare(a) => {
            let (builder, on_bad) = a.builder()?;
            let skip = on_bad == OnBadRecord::Skip;
            let m = crate::data::prepared::prepare(&a.sources, &builder, &a.out, a.docs_per_shard.max(1), skip)?;
            let tokens: u64 = m.shards.iter().map(|s| s.tokens).sum();
            let docs: u64 = m.shards.iter().map(|s| s.docs).sum();
            println!(
                "prepared {docs} samples ({tokens} tokens) from {} records into {} shards in {} \
                 ({} bad, {} too long, {} without supervised tokens)",
                m.records,
                m.shards.len(),
                a.out.display(),
                m.bad_records,
                m.dropped_too_long,
                m.dropped_no_supervised
            );
            Ok(())
        }
        DataCommand::Decontam(a) => {
            let r = crate::data::decontam::decontaminate(&a.sources, &a.against, &a.out, a.ngram, a.force)?;
            if !r.too_short.is_empty() {
                let shown: Vec<&str> = r.too_short.iter().take(10).map(String::as_str).collect();
                eprintln!(
                    "warning: {} benchmark questions have fewer than {} words and cannot be matched: {}{} \
                     (a smaller --ngram catches them, at the price of more false matches)",
                    r.too_short.len(),
                    a.ngram,
                    shown.join(", "),
                    if r.too_short.len() > 10 { ", …" } else { "" }
                );
            }
            println!(
                "{} records: kept {}, dropped {} sharing a {}-gram with {} (see {})",
                r.records,
                r.kept,
                r.dropped,
                a.ngram,
                a.against.display(),
                a.out.join("dropped.jsonl").display()
            );
            Ok(())
        }
        DataCommand::TrainTokenizer(a) => {
            let system = (!a.no_default_system).then_some(crate::data::QWEN25_DEFAULT_SYSTEM);
            let tok = crate::data::tokenizer_train::train_tokenizer(&a.sources, a.vocab_size, system, &a.out)?;
            println!(
                "wrote a tokenizer of {} tokens to {}",
                tok.get_vocab_size(true),
                a.out.display()
            );
            Ok(())
        }
        DataCommand::Validate(args) => {
            let report = validate_sources(&args.sources, |file, line, msg| {
                if line == 0 {
                    println!("{}: {msg}", file.display());
                } else {
                    println!("{}:{line}: {msg}", file.display());
                }
            })?;
            println!(
                "{} records in {} files, {} bad",
                report.records, report.files, report.bad
            );
            if report.bad > 0 {
                bail!("{} bad records", report.bad);
            }
            Ok(())
        }
    }
}
