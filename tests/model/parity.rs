//! Parity with transformers on the golden fixtures of `scripts/make_fixtures.py`: logits,
//! loss and parameter gradients of two tiny random Qwen2 models (tied embeddings with GQA
//! ratio 2; untied with GQA ratio 4), and the logits of a packed row of two documents.

use crate::common::rel_err;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
use syncoder::model::training::{Checkpointing, GradBuffers};
use syncoder::model::{PackedBatch, Qwen2};
use syncoder::ops::IGNORE_INDEX;

fn fixture(name: &str) -> (PathBuf, HashMap<String, Tensor>) {
    let dir = crate::common::repo().join("tests/fixtures").join(name);
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    (dir, expected)
}

fn ids_of(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

fn check_model(name: &str) {
    let (dir, exp) = fixture(name);
    let model = Qwen2::load(&dir, DType::F32, &Device::Cpu, true).unwrap();
    let (rows, seq) = exp["input_ids"].dims2().unwrap();
    let ids = ids_of(&exp["input_ids"]);
    let positions: Vec<u32> = (0..rows).flat_map(|_| 0..seq as u32).collect();
    let batch = PackedBatch::new(ids, positions, rows, &Device::Cpu).unwrap();

    // Logits.
    let logits = model.logits(&batch).unwrap();
    let want = exp["logits"].reshape((rows * seq, ())).unwrap();
    let e = rel_err(&logits, &want).unwrap();
    assert!(e <= 1e-4, "{name}: logits rel err {e:e}");

    // Loss: transformers shifts labels, so token t predicts labels[t + 1].
    let labels = exp["labels"].flatten_all().unwrap().to_vec1::<i64>().unwrap();
    let mask: Vec<bool> = labels.iter().map(|&l| l != IGNORE_INDEX).collect();
    let targets = batch.next_token_targets(Some(&mask)).unwrap();
    let out = model.loss(&batch, &targets).unwrap();
    let loss = (out.loss_sum / out.supervised as f64).unwrap();
    let e = rel_err(&loss, &exp["loss"]).unwrap();
    assert!(
        e <= 1e-5,
        "{name}: loss {} vs {} rel err {e:e}",
        loss.to_scalar::<f32>().unwrap(),
        exp["loss"].to_scalar::<f32>().unwrap()
    );

    // Gradients.
    let grads = model.named_grads(&loss.backward().unwrap()).unwrap();
    let mut checked = 0;
    for (pname, got) in &grads {
        let Some(want) = exp.get(&format!("grad.{pname}")) else {
            continue;
        };
        let got = got
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: {pname} received no gradient"));
        let e = rel_err(got, want).unwrap();
        assert!(e <= 1e-4, "{name}: gradient of {pname} rel err {e:e}");
        checked += 1;
    }
    assert!(checked >= 8, "{name}: only {checked} gradients compared");
    // Every parameter receives a gradient (candle's own qwen2 reaches only 1 of 50).
    assert_eq!(grads.len(), model.parameters().len());
    for (pname, got) in &grads {
        assert!(got.is_some(), "{name}: {pname} received no gradient");
    }

    // The same loss and gradients through the explicit step the trainer runs (no autograd),
    // with and without activation checkpointing.
    for ckpt in [Checkpointing::None, Checkpointing::Every(1)] {
        let buffers = GradBuffers::new(&model.config, &Device::Cpu).unwrap();
        let scale = 1.0 / out.supervised as f64;
        let step = model.forward_backward(&batch, &targets, scale, &buffers, ckpt).unwrap();
        let loss = (step.loss_sum * scale).unwrap();
        let e = rel_err(&loss, &exp["loss"]).unwrap();
        assert!(e <= 1e-5, "{name} ({ckpt:?}): explicit-step loss rel err {e:e}");
        let mut checked = 0;
        for (pname, got) in &buffers.named {
            let Some(want) = exp.get(&format!("grad.{pname}")) else {
                continue;
            };
            let e = rel_err(got, want).unwrap();
            assert!(
                e <= 1e-4,
                "{name} ({ckpt:?}): explicit gradient of {pname} rel err {e:e}"
            );
            checked += 1;
        }
        assert!(checked >= 8, "{name}: only {checked} explicit gradients compared");
    }

    // Packed row: two documents, positions restarting; transformers used a block-diagonal mask.
    let packed = PackedBatch::new(
        ids_of(&exp["packed_ids"]),
        ids_of(&exp["packed_positions"]),
        1,
        &Device::Cpu,
    )
    .unwrap();
    let logits = model.logits(&packed).unwrap();
    let e = rel_err(&logits, &exp["packed_logits"]).unwrap();
    assert!(e <= 1e-4, "{name}: packed logits rel err {e:e}");
}

#[test]
fn tied_gqa2_matches_transformers() {
    check_model("tied_gqa2");
}

#[test]
fn untied_gqa4_matches_transformers() {
    check_model("untied_gqa4");
}
