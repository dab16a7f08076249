//! Prepared (pre-tokenised, memory-mapped) shards: the loader reads them into exactly the batches
//! it makes from the raw shards, resumes exactly, and refuses corrupt or mismatched data.

use crate::common::repo;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use syncoder::data::loader::{Batch, Loader, LoaderConfig, LoaderState, OnBadRecord};
use syncoder::data::pack::PackStrategy;
use syncoder::data::prepared::{open_manifest, prepare, resolve_training_sources};
use syncoder::data::{Overflow, SampleBuilder};

fn builder(max_seq_len: usize) -> SampleBuilder {
    SampleBuilder::from_dir(&repo().join("data/sample/tokenizer"), max_seq_len, Overflow::Truncate).unwrap()
}

fn config() -> LoaderConfig {
    LoaderConfig {
        seed: 9,
        shuffle_shards: false,
        shuffle_buffer: 16,
        seq_len: 256,
        rows_per_batch: 3,
        pack: PackStrategy::BestFit { window: 6 },
        pad_id: 0,
        on_bad_record: OnBadRecord::Fail,
        max_epochs: Some(1),
    }
}

fn drain(l: &mut Loader) -> Vec<Batch> {
    std::iter::from_fn(|| l.next_batch().unwrap()).collect()
}

fn prepared(dir: &Path) -> Vec<PathBuf> {
    let b = builder(200);
    let m = prepare(&[repo().join("data/sample")], &b, dir, 50, false).unwrap();
    assert_eq!(m.shards.len(), 7);
    assert_eq!(m.shards.iter().map(|s| s.docs).sum::<u64>(), 328);
    resolve_training_sources(&[dir.to_path_buf()], &b).unwrap()
}

#[test]
fn prepared_shards_give_the_same_batches_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = prepared(tmp.path());
    let b = Arc::new(builder(200));
    let raw = resolve_training_sources(&[repo().join("data/sample")], &b).unwrap();
    let from_raw = drain(&mut Loader::new(config(), raw, b.clone()).unwrap());
    let from_prepared = drain(&mut Loader::new(config(), shards.clone(), b.clone()).unwrap());
    assert_eq!(from_raw, from_prepared);
    for k in [0, 1, 5, from_prepared.len() / 2, from_prepared.len() - 1] {
        let mut l = Loader::new(config(), shards.clone(), b.clone()).unwrap();
        for _ in 0..k {
            l.next_batch().unwrap();
        }
        let state: LoaderState = serde_json::from_str(&serde_json::to_string(&l.state()).unwrap()).unwrap();
        let rest = drain(&mut Loader::restore(config(), shards.clone(), b.clone(), state).unwrap());
        assert_eq!(rest, from_prepared[k..], "resume after {k}");
    }
}

/// One epoch's row count from the shards' offsets alone equals what the loader packs, for
/// either strategy, any buffer, shuffled shard order.
#[test]
fn the_epoch_size_of_prepared_shards_comes_from_their_lengths() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = prepared(tmp.path());
    let b = Arc::new(builder(200));
    let mut seen = std::collections::HashSet::new();
    for (pack, buffer, shuffle_shards) in [
        (PackStrategy::Greedy, 1, false),
        (PackStrategy::Greedy, 40, true),
        (PackStrategy::BestFit { window: 6 }, 16, true),
        (PackStrategy::BestFit { window: 50 }, 300, false),
    ] {
        let cfg = LoaderConfig {
            shuffle_buffer: buffer,
            shuffle_shards,
            pack,
            ..config()
        };
        let counted: u64 = drain(&mut Loader::new(cfg.clone(), shards.clone(), b.clone()).unwrap())
            .iter()
            .map(|b| b.rows.len() as u64)
            .sum();
        let from_lengths = syncoder::data::epoch_size::prepared_epoch_rows(&cfg, &shards).unwrap();
        assert_eq!(from_lengths, Some(counted), "{pack:?}, buffer {buffer}");
        seen.insert(counted);
    }
    assert!(seen.len() > 1, "the settings change the count: {seen:?}");
    let raw = resolve_training_sources(&[repo().join("data/sample")], &b).unwrap();
    assert_eq!(
        syncoder::data::epoch_size::prepared_epoch_rows(&config(), &raw).unwrap(),
        None
    );
}

#[test]
fn corrupt_or_mismatched_prepared_data_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = prepared(tmp.path());
    assert!(open_manifest(tmp.path(), true).is_ok());
    let mut bytes = std::fs::read(&shards[2]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&shards[2], bytes).unwrap();
    let err = format!("{:#}", open_manifest(tmp.path(), true).unwrap_err());
    assert!(err.contains("shard-00002") && err.contains("checksum"), "{err}");

    // Another template (no default system turn) must not read these shards.
    let mut other = builder(200);
    other.template = syncoder::data::ChatTemplate::qwen25_chatml(None).unwrap();
    let err = format!(
        "{:#}",
        resolve_training_sources(&[tmp.path().to_path_buf()], &other).unwrap_err()
    );
    assert!(err.contains("another tokenizer or chat template"), "{err}");
    // Nor a run with shorter samples.
    let err = format!(
        "{:#}",
        resolve_training_sources(&[tmp.path().to_path_buf()], &builder(100)).unwrap_err()
    );
    assert!(err.contains("max_seq_len"), "{err}");
    // Nor a run that masks another way.
    let per_turn = builder(200).with_mask(syncoder::data::mask_policy::MaskPolicy::PerTurn);
    let err = format!(
        "{:#}",
        resolve_training_sources(&[tmp.path().to_path_buf()], &per_turn).unwrap_err()
    );
    assert!(
        err.contains("data.mask = \"auto\"") && err.contains("\"per_turn\""),
        "{err}"
    );
}
