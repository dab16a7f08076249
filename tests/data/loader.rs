//! The resumable loader: packing invariants, seeded order, and exact resume — a loader restored
//! from the JSON state taken after any batch (mid-shard, mid-window, across epochs) yields
//! exactly the batches of one that never stopped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use syncoder::data::loader::{Batch, Loader, LoaderConfig, LoaderState, OnBadRecord};
use syncoder::data::pack::PackStrategy;
use syncoder::data::sample::Overflow;
use syncoder::data::{ChatTemplate, SampleBuilder, QWEN25_DEFAULT_SYSTEM};

fn builder(max_seq_len: usize) -> Arc<SampleBuilder> {
    let path = crate::common::qwen_tokenizer_path().unwrap_or_else(|e| panic!("{e}"));
    Arc::new(SampleBuilder::new(
        tokenizers::Tokenizer::from_file(path).unwrap(),
        ChatTemplate::qwen25_chatml(Some(QWEN25_DEFAULT_SYSTEM)).unwrap(),
        max_seq_len,
        Overflow::Truncate,
    ))
}

fn record(i: usize) -> String {
    let words = [
        "fn", "let", "mut", "match", "loop", "Vec", "impl", "trait", "async", "await",
    ];
    let answer: Vec<&str> = (0..(i * 7) % 45 + 1).map(|j| words[(i + j) % words.len()]).collect();
    serde_json::json!({"id": format!("r{i}"), "instruction": format!("question {i}"), "response": answer.join(" ")})
        .to_string()
}

/// `n` records from `first` on, as JSONL lines.
fn lines(first: usize, n: usize) -> String {
    (first..first + n).map(|i| record(i) + "\n").collect()
}

/// Three shards in three formats, with blank lines and two bad records.
fn shards(dir: &Path) -> Vec<PathBuf> {
    let a: Vec<String> = (0..23).map(record).collect();
    let mut a_text = a.join("\n");
    a_text.push_str("\n\n{\"instruction\": 5}\n");
    a_text.push_str(&record(100));
    a_text.push_str("\nnot json\n");
    std::fs::write(dir.join("a.jsonl"), a_text).unwrap();
    let b: String = (23..40).map(|i| record(i) + "\n").collect();
    std::fs::write(dir.join("b.jsonl.zst"), zstd::encode_all(b.as_bytes(), 3).unwrap()).unwrap();
    let c: String = (40..51).map(|i| record(i) + "\n").collect();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(c.as_bytes()).unwrap();
    std::fs::write(dir.join("c.jsonl.gz"), e.finish().unwrap()).unwrap();
    syncoder::data::shard::resolve_sources(&[dir.to_path_buf()]).unwrap()
}

fn config(pack: PackStrategy) -> LoaderConfig {
    LoaderConfig {
        seed: 3,
        shuffle_shards: true,
        shuffle_buffer: 7,
        seq_len: 128,
        rows_per_batch: 2,
        pack,
        pad_id: 151643,
        on_bad_record: OnBadRecord::Skip,
        max_epochs: Some(2),
    }
}

fn drain(loader: &mut Loader) -> Vec<Batch> {
    std::iter::from_fn(|| loader.next_batch().unwrap()).collect()
}

fn check_resume(pack: PackStrategy) {
    let dir = tempfile::tempdir().unwrap();
    let files = shards(dir.path());
    let b = builder(100);
    let mut full_loader = Loader::new(config(pack), files.clone(), b.clone()).unwrap();
    let full = drain(&mut full_loader);
    assert!(full.len() >= 10, "{} batches", full.len());
    let final_stats = full_loader.stats().clone();
    assert_eq!(final_stats.bad_records, 2 * 2, "two bad records, two epochs");
    for k in 0..=full.len() {
        let mut first = Loader::new(config(pack), files.clone(), b.clone()).unwrap();
        for batch in full.iter().take(k) {
            assert_eq!(&first.next_batch().unwrap().unwrap(), batch);
        }
        let json = serde_json::to_string(&first.state()).unwrap();
        drop(first);
        let state: LoaderState = serde_json::from_str(&json).unwrap();
        let mut resumed = Loader::restore(config(pack), files.clone(), b.clone(), state).unwrap();
        let rest = drain(&mut resumed);
        assert_eq!(rest, full[k..], "{pack:?}: resume after batch {k}");
        assert_eq!(resumed.stats(), &final_stats);
    }
}

#[test]
fn resume_at_every_cut_is_exact_best_fit() {
    check_resume(PackStrategy::BestFit { window: 5 });
}

#[test]
fn resume_at_every_cut_is_exact_greedy() {
    check_resume(PackStrategy::Greedy);
}

#[test]
fn rows_are_exact_and_lose_no_sample() {
    let dir = tempfile::tempdir().unwrap();
    let files = shards(dir.path());
    for pack in [PackStrategy::Greedy, PackStrategy::BestFit { window: 8 }] {
        let mut l = Loader::new(config(pack), files.clone(), builder(100)).unwrap();
        let batches = drain(&mut l);
        let mut docs = 0;
        for row in batches.iter().flat_map(|b| &b.rows) {
            assert_eq!(row.ids.len(), 128);
            assert_eq!(row.positions.len(), 128);
            let mut t = 0;
            for &len in &row.doc_lens {
                assert_eq!(row.positions[t..t + len], (0..len as u32).collect::<Vec<_>>()[..]);
                t += len;
            }
            assert!(row.mask[t..].iter().all(|&m| !m), "padding is never a target");
            docs += row.doc_lens.len();
        }
        let stats = l.stats();
        assert_eq!(
            docs as u64, stats.samples,
            "{pack:?}: every sample lands in exactly one row"
        );
        assert!(
            stats.padding_fraction() > 0.0 && stats.padding_fraction() < 0.6,
            "{}",
            stats.padding_fraction()
        );

        // The model's view of a batch keeps the documents apart.
        let mb = syncoder::train::step::MicroBatch::new(&batches[0].rows, &candle_core::Device::Cpu).unwrap();
        assert_eq!(mb.targets.dims1().unwrap(), mb.batch.num_tokens());
        let starts = mb.batch.segments.start.iter().filter(|&&s| s as usize == 0).count();
        assert_eq!(
            starts, batches[0].rows[0].doc_lens[0],
            "tokens of the first document all start at 0"
        );
    }
}

#[test]
fn prefetcher_yields_the_same_batches_and_states() {
    let dir = tempfile::tempdir().unwrap();
    let files = shards(dir.path());
    let b = builder(100);
    let cfg = config(PackStrategy::BestFit { window: 4 });
    let mut direct = Loader::new(cfg.clone(), files.clone(), b.clone()).unwrap();
    let mut pre = syncoder::data::loader::Prefetcher::spawn(Loader::new(cfg, files, b).unwrap(), 3);
    let mut state = pre.start_state().clone();
    assert_eq!(state, direct.state());
    let mut n = 0;
    while let Some(batch) = direct.next_batch().unwrap() {
        let (got, delta) = pre.next_batch().unwrap().expect("as many batches");
        assert_eq!(got, batch);
        state.apply(delta).unwrap();
        assert_eq!(state, direct.state(), "the deltas rebuild the state after batch {n}");
        n += 1;
    }
    assert!(pre.next_batch().unwrap().is_none());
    assert!(n > 5);
}

#[test]
fn seed_sets_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let files = shards(dir.path());
    let b = builder(100);
    let run = |seed: u64| {
        let mut cfg = config(PackStrategy::Greedy);
        cfg.seed = seed;
        drain(&mut Loader::new(cfg, files.clone(), b.clone()).unwrap())
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn bad_record_fails_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let files = shards(dir.path());
    let mut cfg = config(PackStrategy::Greedy);
    cfg.on_bad_record = OnBadRecord::Fail;
    cfg.shuffle_shards = false;
    let mut l = Loader::new(cfg, files, builder(100)).unwrap();
    let err = std::iter::from_fn(|| l.next_batch().transpose())
        .find_map(|r| r.err())
        .expect("a bad record");
    let msg = format!("{err:#}");
    assert!(msg.contains("a.jsonl:25") && msg.contains("instruction"), "{msg}");
}

/// The paper's buffer size: 20,000 samples over a 40,000-record corpus. The state names the
/// buffered samples by reference (under 1 MB as the trainer writes it, pretty-printed JSON),
/// resuming re-reads them and continues exactly, and after the buffer's first fill a batch's
/// state delta holds only the samples that moved.
#[test]
fn resume_is_exact_and_the_state_small_at_a_20000_sample_buffer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.jsonl"), lines(0, 15_000)).unwrap();
    std::fs::write(
        dir.path().join("b.jsonl.zst"),
        zstd::encode_all(lines(15_000, 15_000).as_bytes(), 3).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("c.jsonl"), lines(30_000, 10_000)).unwrap();
    let files = syncoder::data::shard::resolve_sources(&[dir.path().to_path_buf()]).unwrap();
    let b = builder(100);
    let cfg = LoaderConfig {
        shuffle_buffer: 20_000,
        rows_per_batch: 8,
        max_epochs: Some(1),
        ..config(PackStrategy::BestFit { window: 64 })
    };
    let mut full_loader = Loader::new(cfg.clone(), files.clone(), b.clone()).unwrap();
    full_loader.track_changes();
    let mut full = Vec::new();
    while let Some(batch) = full_loader.next_batch().unwrap() {
        let delta = full_loader.take_delta().unwrap();
        if !full.is_empty() {
            let docs: usize = batch.rows.iter().map(|r| r.doc_lens.len()).sum();
            assert!(
                delta.ops.len() <= 2 * (docs + 64),
                "batch {}: {} buffer changes for {docs} documents",
                full.len(),
                delta.ops.len()
            );
        }
        full.push(batch);
    }
    assert_eq!(full_loader.stats().samples, 40_000);
    let mut resumes = 0;
    for k in [1, full.len() / 2] {
        let mut first = Loader::new(cfg.clone(), files.clone(), b.clone()).unwrap();
        for batch in full.iter().take(k) {
            assert_eq!(&first.next_batch().unwrap().unwrap(), batch);
        }
        let state = first.state();
        assert!(state.buffer.0.len() > 19_000, "{}", state.buffer.0.len());
        let json = serde_json::to_string_pretty(&state).unwrap();
        assert!(
            json.len() < 1 << 20,
            "after batch {k}: {} bytes of loader state",
            json.len()
        );
        let state: LoaderState = serde_json::from_str(&json).unwrap();
        let mut resumed = Loader::restore(cfg.clone(), files.clone(), b.clone(), state).unwrap();
        assert_eq!(drain(&mut resumed), full[k..], "resume after batch {k}");
        resumes += 1;
    }
    assert_eq!(resumes, 2);
}

/// A shard edited after the checkpoint: resuming names the file and line instead of silently
/// continuing with other data.
#[test]
fn resume_refuses_a_shard_changed_since_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    std::fs::write(&path, lines(0, 40)).unwrap();
    let files = vec![path.clone()];
    let b = builder(100);
    let cfg = LoaderConfig {
        shuffle_buffer: 30,
        shuffle_shards: false,
        ..config(PackStrategy::Greedy)
    };
    let mut l = Loader::new(cfg.clone(), files.clone(), b.clone()).unwrap();
    l.next_batch().unwrap().unwrap();
    let state = l.state();
    let named = state.buffer.0[0].item;
    // The same line, another record.
    let mut text: Vec<String> = lines(0, 40).lines().map(String::from).collect();
    text[named as usize - 1] = record(1000);
    std::fs::write(&path, text.join("\n")).unwrap();
    let err = format!(
        "{:#}",
        Loader::restore(cfg.clone(), files.clone(), b.clone(), state.clone())
            .err()
            .unwrap()
    );
    assert!(
        err.contains(&format!("a.jsonl:{named}")) && err.contains("not the one"),
        "{err}"
    );
    // The shard cut short.
    std::fs::write(&path, lines(0, 3)).unwrap();
    let err = format!("{:#}", Loader::restore(cfg, files, b, state).err().unwrap());
    assert!(err.contains("a.jsonl"), "{err}");
}

/// Blank lines between records: a buffered sample right after one is re-read exactly.
#[test]
fn resume_is_exact_over_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..30).map(|i| record(i) + "\n\n").collect();
    std::fs::write(dir.path().join("a.jsonl"), format!("\n{text}")).unwrap();
    let files = vec![dir.path().join("a.jsonl")];
    let b = builder(100);
    let cfg = LoaderConfig {
        shuffle_buffer: 9,
        max_epochs: Some(1),
        ..config(PackStrategy::Greedy)
    };
    let full = drain(&mut Loader::new(cfg.clone(), files.clone(), b.clone()).unwrap());
    assert!(full.len() > 3);
    for k in 0..full.len() {
        let mut l = Loader::new(cfg.clone(), files.clone(), b.clone()).unwrap();
        for _ in 0..k {
            l.next_batch().unwrap();
        }
        let mut resumed = Loader::restore(cfg.clone(), files.clone(), b.clone(), l.state()).unwrap();
        assert_eq!(drain(&mut resumed), full[k..], "resume after batch {k}");
    }
}

/// A bad record stops the loader after the same batch whether it ran straight through or was
/// resumed (reading ahead does not move the failure earlier).
#[test]
fn a_bad_record_stops_after_the_same_batch_when_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let files = shards(dir.path());
    let b = builder(100);
    let cfg = LoaderConfig {
        on_bad_record: OnBadRecord::Fail,
        shuffle_shards: false,
        shuffle_buffer: 3,
        ..config(PackStrategy::Greedy)
    };
    let until_error = |l: &mut Loader| -> usize {
        let mut n = 0;
        loop {
            match l.next_batch() {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("no error"),
                Err(e) => {
                    assert!(format!("{e:#}").contains("a.jsonl:25"), "{e:#}");
                    return n;
                }
            }
        }
    };
    let straight = until_error(&mut Loader::new(cfg.clone(), files.clone(), b.clone()).unwrap());
    assert!(straight > 2, "{straight} batches before the bad record");
    for k in 1..straight {
        let mut l = Loader::new(cfg.clone(), files.clone(), b.clone()).unwrap();
        for _ in 0..k {
            l.next_batch().unwrap().unwrap();
        }
        let mut resumed = Loader::restore(cfg.clone(), files.clone(), b.clone(), l.state()).unwrap();
        assert_eq!(k + until_error(&mut resumed), straight, "resumed after batch {k}");
    }
}

/// A conversation of `1 + i % 4` user/assistant exchanges.
fn multi_turn(i: usize) -> String {
    let messages: Vec<serde_json::Value> = (0..1 + i % 4)
        .flat_map(|t| {
            [
                serde_json::json!({"role": "user", "content": format!("question {i}.{t}")}),
                serde_json::json!({"role": "assistant", "content": format!("answer {i}.{t} {}", "fn ".repeat((i + t) % 9))}),
            ]
        })
        .collect();
    serde_json::json!({ "id": format!("m{i}"), "messages": messages }).to_string()
}

#[test]
fn per_turn_samples_resume_exactly_inside_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let a: String = (0..13).map(|i| multi_turn(i) + "\n").collect();
    std::fs::write(dir.path().join("a.jsonl"), a).unwrap();
    let b: String = (13..21).map(|i| multi_turn(i) + "\n\n").collect();
    std::fs::write(dir.path().join("b.jsonl"), b).unwrap();
    let files = syncoder::data::shard::resolve_sources(&[dir.path().to_path_buf()]).unwrap();
    let path = crate::common::qwen_tokenizer_path().unwrap_or_else(|e| panic!("{e}"));
    let b = Arc::new(
        SampleBuilder::new(
            tokenizers::Tokenizer::from_file(path).unwrap(),
            ChatTemplate::qwen25_chatml(Some(QWEN25_DEFAULT_SYSTEM)).unwrap(),
            128,
            Overflow::Truncate,
        )
        .with_mask(syncoder::data::mask_policy::MaskPolicy::PerTurn),
    );
    let cfg = || LoaderConfig {
        shuffle_buffer: 3,
        ..config(PackStrategy::BestFit { window: 4 })
    };
    let mut full_loader = Loader::new(cfg(), files.clone(), b.clone()).unwrap();
    let full = drain(&mut full_loader);
    let stats = full_loader.stats().clone();
    let turns: usize = (0..21).map(|i| 1 + i % 4).sum();
    assert_eq!(stats.records, 2 * 21);
    assert_eq!(
        stats.samples as usize,
        2 * turns,
        "one sample per assistant turn, two epochs"
    );
    let mut inside = 0;
    for k in 0..=full.len() {
        let mut first = Loader::new(cfg(), files.clone(), b.clone()).unwrap();
        for batch in full.iter().take(k) {
            assert_eq!(&first.next_batch().unwrap().unwrap(), batch);
        }
        let json = serde_json::to_string(&first.state()).unwrap();
        inside += json.contains("\"part\":") as usize;
        drop(first);
        let state: LoaderState = serde_json::from_str(&json).unwrap();
        let mut resumed = Loader::restore(cfg(), files.clone(), b.clone(), state).unwrap();
        assert_eq!(drain(&mut resumed), full[k..], "resume after batch {k}");
        assert_eq!(resumed.stats(), &stats);
    }
    assert!(inside >= 3, "only {inside} cuts fell inside a record");
}
