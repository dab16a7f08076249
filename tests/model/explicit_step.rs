//! The explicit training step (`model::training`) against candle's autograd over the same
//! model: loss and every parameter's gradient within 1e-5 (f32), on random models with tied and
//! untied embeddings, grouped-query heads, packed documents and unsupervised tokens, over one
//! and several micro-batches; activation checkpointing changes no bit.

use crate::common::rel_err;
use candle_core::{DType, Device};
use syncoder::model::training::{Checkpointing, GradBuffers};
use syncoder::model::{Qwen2, Qwen2Config};
use syncoder::train::step::{autograd_step_gradients, step_gradients_into, MicroBatch};

fn config(layers: usize, heads: usize, kv: usize, tied: bool) -> Qwen2Config {
    let json = format!(
        r#"{{"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": {heads},
        "num_key_value_heads": {kv}, "num_hidden_layers": {layers}, "vocab_size": 97,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": {tied},
        "max_position_embeddings": 256, "initializer_range": 0.2}}"#
    );
    serde_json::from_str(&json).unwrap()
}

/// Two micro-batches of packed rows: documents of several lengths, the first tokens of some
/// unsupervised.
fn micros() -> Vec<MicroBatch> {
    use syncoder::data::pack::PackedRow;
    let row = |docs: &[(usize, u32)], seed: u32| -> PackedRow {
        let (mut ids, mut positions, mut mask, mut doc_lens) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for &(len, unsupervised) in docs {
            for p in 0..len {
                ids.push((seed * 31 + ids.len() as u32 * 17 + p as u32 * 7) % 97);
                positions.push(p as u32);
                mask.push(p as u32 >= unsupervised);
            }
            doc_lens.push(len);
        }
        PackedRow {
            ids,
            positions,
            mask,
            doc_lens,
        }
    };
    vec![
        MicroBatch::new(&[row(&[(7, 2), (9, 0), (8, 3)], 1), row(&[(24, 5)], 2)], &Device::Cpu).unwrap(),
        MicroBatch::new(&[row(&[(12, 4), (12, 1)], 3), row(&[(3, 0), (21, 2)], 4)], &Device::Cpu).unwrap(),
    ]
}

fn compare(cfg: Qwen2Config, seed: u64) {
    let model = Qwen2::random(cfg, seed, DType::F32, &Device::Cpu, true).unwrap();
    let micros = micros();
    let want = autograd_step_gradients(&model, &micros, 1.0).unwrap();
    let buffers = GradBuffers::new(&model.config, &Device::Cpu).unwrap();
    let mut previous: Option<Vec<Vec<f32>>> = None;
    for ckpt in [Checkpointing::None, Checkpointing::Every(1), Checkpointing::Every(2)] {
        let got = step_gradients_into(&model, &buffers, &micros, 1.0, ckpt, &mut |_| {}).unwrap();
        assert_eq!(got.supervised, want.supervised);
        assert!(
            (got.loss() - want.loss()).abs() <= 1e-6 * want.loss(),
            "{ckpt:?}: loss {} vs autograd {}",
            got.loss(),
            want.loss()
        );
        let mut bits = Vec::new();
        for (((name, _), g), w) in model.parameters().iter().zip(&got.grads).zip(&want.grads) {
            let e = rel_err(g, w).unwrap();
            assert!(e <= 1e-5, "{ckpt:?}: gradient of {name} rel err {e:e}");
            bits.push(g.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
        if let Some(prev) = &previous {
            assert!(prev == &bits, "{ckpt:?}: checkpointing changed the gradients");
        }
        previous = Some(bits);
    }
}

#[test]
fn explicit_step_equals_autograd_tied_gqa() {
    compare(config(3, 4, 2, true), 11);
}

#[test]
fn explicit_step_equals_autograd_untied_mha() {
    compare(config(2, 2, 2, false), 12);
}

#[test]
fn explicit_step_equals_autograd_untied_gqa4() {
    compare(config(2, 4, 1, false), 13);
}

#[test]
fn gradient_buffers_are_zeroed_at_each_step_and_summed_over_micro_batches() {
    let model = Qwen2::random(config(1, 2, 1, true), 5, DType::F32, &Device::Cpu, true).unwrap();
    let micros = micros();
    let buffers = GradBuffers::new(&model.config, &Device::Cpu).unwrap();
    let first = step_gradients_into(&model, &buffers, &micros, 1.0, Checkpointing::None, &mut |_| {}).unwrap();
    let first: Vec<Vec<f32>> = first
        .grads
        .iter()
        .map(|g| g.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    // The same step again into the same buffers: identical, not doubled.
    let again = step_gradients_into(&model, &buffers, &micros, 1.0, Checkpointing::None, &mut |_| {}).unwrap();
    let again: Vec<Vec<f32>> = again
        .grads
        .iter()
        .map(|g| g.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    assert!(first == again);
    // The embedding's buffer holds the output projection's gradient too (tied): a token that
    // never occurs as input still has a gradient row.
    let present: std::collections::HashSet<u32> = micros.iter().flat_map(|m| m.batch.ids.clone()).collect();
    let absent = (0..97u32).find(|v| !present.contains(v)).expect("an absent id");
    let embed = &buffers.named[0];
    assert_eq!(embed.0, "model.embed_tokens.weight");
    let row: Vec<f32> = embed.1.get(absent as usize).unwrap().to_vec1().unwrap();
    assert!(row.iter().any(|&x| x != 0.0));
}
