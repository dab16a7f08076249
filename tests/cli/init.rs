//! `syncoder init`: the written model loads in transformers with the same logits (fixture made by
//! `scripts/make_fixtures.py` from the output of `syncoder init --seed 7`), is initialised like
//! transformers, is reproducible, shards above the threshold, and never overwrites silently.

use crate::common::rel_err;
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};
use std::process::Command;
use syncoder::model::weights::WeightFiles;
use syncoder::model::{PackedBatch, Qwen2};

fn fixture_dir() -> PathBuf {
    crate::common::fixtures().join("init")
}

fn init(out: &Path, seed: u64, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["init", "--config"])
        .arg(fixture_dir().join("config.json"))
        .arg("--out")
        .arg(out)
        .args(["--seed", &seed.to_string()])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn init_output_matches_transformers_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let out = init(tmp.path(), 7, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let model = Qwen2::load(tmp.path(), DType::F32, &Device::Cpu, false).unwrap();
    let exp = candle_core::safetensors::load(fixture_dir().join("expected.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = exp["input_ids"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect();
    let logits = model.logits(&PackedBatch::single(&ids, &Device::Cpu).unwrap()).unwrap();
    let e = rel_err(&logits, &exp["logits"]).unwrap();
    assert!(
        e <= 1e-4,
        "logits of the init model differ from transformers': rel err {e:e}"
    );
}

#[test]
fn init_is_like_transformers_and_reproducible() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    assert!(init(a.path(), 3, &[]).status.success());
    assert!(init(b.path(), 3, &[]).status.success());
    assert!(init(c.path(), 4, &[]).status.success());
    let read = |p: &Path| std::fs::read(p.join("model.safetensors")).unwrap();
    assert_eq!(read(a.path()), read(b.path()), "same seed, same bytes");
    assert_ne!(read(a.path()), read(c.path()), "another seed, other weights");

    let m = Qwen2::load(a.path(), DType::F32, &Device::Cpu, false).unwrap();
    for (name, t) in m.parameters() {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        if name.ends_with("bias") {
            assert!(v.iter().all(|&x| x == 0.0), "{name} should be zeros");
        } else if name.contains("norm") {
            assert!(v.iter().all(|&x| x == 1.0), "{name} should be ones");
        } else {
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt();
            assert!(
                (std - 0.02).abs() < 0.002 && mean.abs() < 0.002,
                "{name}: mean {mean} std {std}"
            );
        }
    }
}

#[test]
fn init_shards_above_threshold_and_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let out = init(tmp.path(), 5, &["--max-shard-bytes", "100000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(tmp.path().join("model.safetensors.index.json").exists());
    assert!(!tmp.path().join("model.safetensors").exists());
    let shards = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("model-0000")
        })
        .count();
    assert!(shards >= 3, "{shards} shards");
    let sharded = Qwen2::load(tmp.path(), DType::F32, &Device::Cpu, false).unwrap();
    let single = tempfile::tempdir().unwrap();
    assert!(init(single.path(), 5, &[]).status.success());
    let whole = Qwen2::load(single.path(), DType::F32, &Device::Cpu, false).unwrap();
    for ((n1, t1), (n2, t2)) in sharded.parameters().iter().zip(whole.parameters()) {
        assert_eq!(n1, n2);
        assert_eq!(rel_err(t1, t2).unwrap(), 0.0, "{n1}");
    }
    assert_eq!(
        WeightFiles::open(tmp.path()).unwrap().names().len(),
        sharded.parameters().len()
    );
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(init(tmp.path(), 1, &[]).status.success());
    let again = init(tmp.path(), 2, &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(init(tmp.path(), 2, &["--force"]).status.success());
}

#[test]
fn init_writes_bf16_weights_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(init(tmp.path(), 1, &["--dtype", "bf16"]).status.success());
    let cfg = std::fs::read_to_string(tmp.path().join("config.json")).unwrap();
    assert!(cfg.contains("\"torch_dtype\": \"bfloat16\""), "{cfg}");
    let files = WeightFiles::open(tmp.path()).unwrap();
    let t = files.load("model.norm.weight", &[64], &Device::Cpu).unwrap();
    assert_eq!(t.dtype(), DType::BF16);
}
