//! `syncoder data ...`: commands over instruction shards.

use crate::data::loader::OnBadRecord;
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
}

impl TokenizerArgs {
    pub fn builder(&self) -> Result<crate::data::SampleBuilder> {
        crate::data::sample::SampleBuilder::from_dir(&self.tokenizer, self.max_seq_len, self.overflow)
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
}

#[derive(Args, Debug)]
pub struct PrepareArgs {
    /// Shard files, directories or glob patterns.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Samples per prepared shard file.
    #[arg(long, default_value_t = 100_000)]
    pub docs_per_shard: usize,
    /// fail: stop at the first bad record (naming file and line); skip: skip and count.
    #[arg(long, value_enum, default_value_t = OnBadRecord::Fail)]
    pub on_bad_record: OnBadRecord,
}

#[derive(Args, Debug)]
pub struct DecontamArgs {
    /// Shard files, directories or glob patterns.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// Benchmark questions (JSONL; user turns of `messages`, or `question` / `prompt`).
    #[arg(long)]
    pub against: PathBuf,
    /// Output directory for the kept records (and dropped.txt).
    #[arg(long)]
    pub out: PathBuf,
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
            let skip = a.on_bad_record == OnBadRecord::Skip;
            let builder = a.tokenizer.builder()?;
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
            let r = crate::data::decontam::decontaminate(&a.sources, &a.against, &a.out)?;
            println!(
                "{} records: kept {}, dropped {} sharing a {}-gram with {}",
                r.records,
                r.kept,
                r.dropped,
                crate::data::decontam::NGRAM,
                a.against.display()
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
