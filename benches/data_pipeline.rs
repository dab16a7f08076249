//! Benchmark (not a test): raw JSONL -> chat template + loss mask -> tokens -> packed rows, with
//! the real Qwen tokenizer, through the same loader training uses. Prints tokens/s.
//! Run: `scripts/bench_data.sh` (makes the corpus and runs the Python baseline too), or
//! `BENCH_CORPUS=path.jsonl cargo bench --bench data_pipeline`.

/// mimalloc: glibc malloc contends badly across the tokenizer's and rayon's threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use syncoder::data::loader::{Loader, LoaderConfig, OnBadRecord};
use syncoder::data::pack::PackStrategy;
use syncoder::data::{ChatTemplate, Overflow, SampleBuilder, QWEN25_DEFAULT_SYSTEM};

fn main() -> anyhow::Result<()> {
    let corpus =
        PathBuf::from(std::env::var("BENCH_CORPUS").unwrap_or_else(|_| "target/bench-data/corpus.jsonl".into()));
    if !corpus.exists() {
        anyhow::bail!(
            "{} is missing: run scripts/make_bench_corpus.py first",
            corpus.display()
        );
    }
    let tok = common::qwen_tokenizer_path().map_err(anyhow::Error::msg)?;
    let builder = Arc::new(SampleBuilder::new(
        tokenizers::Tokenizer::from_file(tok).map_err(anyhow::Error::msg)?,
        ChatTemplate::qwen25_chatml(Some(QWEN25_DEFAULT_SYSTEM))?,
        4096,
        Overflow::Truncate,
    ));
    println!("| pipeline | threads | records | tokens | seconds | tokens/s | padding |");
    println!("|---|---|---|---|---|---|---|");
    // Prepared shards of the same corpus (tokenised once, ahead of time; not timed).
    let prepared_dir = corpus.with_extension("prepared");
    if !prepared_dir.join(syncoder::data::prepared::MANIFEST).exists() {
        syncoder::data::prepared::prepare(std::slice::from_ref(&corpus), &builder, &prepared_dir, 20_000, false)?;
    }
    let prepared = syncoder::data::prepared::resolve_training_sources(&[prepared_dir], &builder)?;
    for (name, pack, files) in [
        ("greedy", PackStrategy::Greedy, vec![corpus.clone()]),
        (
            "best-fit, window 1024",
            PackStrategy::BestFit { window: 1024 },
            vec![corpus.clone()],
        ),
        (
            "prepared shards, best-fit, window 1024",
            PackStrategy::BestFit { window: 1024 },
            prepared,
        ),
    ] {
        let cfg = LoaderConfig {
            seed: 0,
            shuffle_shards: true,
            shuffle_buffer: 4096,
            seq_len: 4096,
            rows_per_batch: 8,
            pack,
            pad_id: 151643,
            on_bad_record: OnBadRecord::Fail,
            max_epochs: Some(1),
        };
        let t = Instant::now();
        let mut loader = Loader::new(cfg, files, builder.clone())?;
        let mut rows = 0;
        while let Some(b) = loader.next_batch()? {
            rows += b.rows.len();
        }
        let secs = t.elapsed().as_secs_f64();
        let s = loader.stats();
        let tokens = s.row_tokens - s.padding_tokens;
        println!(
            "| syncoder loader ({name}) | {} | {} | {tokens} | {secs:.2} | {:.0} | {:.1}% |",
            rayon::current_num_threads(),
            s.records,
            tokens as f64 / secs,
            100.0 * s.padding_fraction()
        );
        assert!(rows > 0);
    }
    loader_state_table(&corpus, &builder)
}

/// What the resumable state costs at two shuffle-buffer sizes: the size of the saved state
/// (pretty JSON, as `trainer_state.json` holds it), the per-batch snapshot the prefetcher sends
/// (a `StateDelta`; the first batch, which fills the buffer, excluded) beside a whole `state()`,
/// and the time to restore (re-reading and re-tokenising the buffered samples).
fn loader_state_table(corpus: &std::path::Path, builder: &Arc<SampleBuilder>) -> anyhow::Result<()> {
    println!();
    println!("| shuffle buffer | state JSON | per-batch delta (mean) | whole state() (mean) | restore |");
    println!("|---|---|---|---|---|");
    for buffer in [1_000, 20_000] {
        let cfg = LoaderConfig {
            seed: 0,
            shuffle_shards: true,
            shuffle_buffer: buffer,
            seq_len: 4096,
            rows_per_batch: 1,
            pack: PackStrategy::BestFit { window: 64 },
            pad_id: 151643,
            on_bad_record: OnBadRecord::Fail,
            max_epochs: Some(1),
        };
        let files = vec![corpus.to_path_buf()];
        let mut loader = Loader::new(cfg.clone(), files.clone(), builder.clone())?;
        loader.track_changes();
        let (mut delta_s, mut state_s, mut n) = (0.0, 0.0, 0u32);
        for i in 0..200 {
            if loader.next_batch()?.is_none() {
                break;
            }
            let t = Instant::now();
            let d = loader.take_delta()?;
            let dt = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let st = loader.state();
            let st_t = t.elapsed().as_secs_f64();
            std::hint::black_box((d, st));
            if i > 0 {
                (delta_s, state_s, n) = (delta_s + dt, state_s + st_t, n + 1);
            }
        }
        let state = loader.state();
        let json = serde_json::to_string_pretty(&state)?;
        let t = Instant::now();
        let restored = Loader::restore(cfg, files, builder.clone(), state)?;
        let restore_s = t.elapsed().as_secs_f64();
        std::hint::black_box(restored);
        println!(
            "| {buffer} | {:.0} KB | {:.1} µs | {:.1} µs | {restore_s:.2} s |",
            json.len() as f64 / 1e3,
            1e6 * delta_s / n.max(1) as f64,
            1e6 * state_s / n.max(1) as f64,
        );
    }
    Ok(())
}
