//! Gradient accumulation: one optimizer step over k micro-batches gives the loss and gradients
//! of one batch k times larger (the loss is normalised by the step's total supervised tokens),
//! and the optimizer keeps fp32 master weights for bf16 parameters.

use crate::common::rel_err;
use crate::common::repo;
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;
use syncoder::data::loader::{Batch, Loader, LoaderConfig, OnBadRecord};
use syncoder::data::pack::PackStrategy;
use syncoder::data::sample::Overflow;
use syncoder::data::SampleBuilder;
use syncoder::model::{Qwen2, Qwen2Config};
use syncoder::train::optimizer::AdamW;
use syncoder::train::step::{step_gradients, MicroBatch};
use syncoder::train::OptimConfig;

fn tiny(dtype: DType) -> Qwen2 {
    let cfg = Qwen2Config::from_file(&repo().join("configs/models/smoke-tiny.json")).unwrap();
    Qwen2::random(cfg, 3, dtype, &Device::Cpu, true).unwrap()
}

/// Eight packed rows of 48 tokens from the sample shard.
fn rows() -> Batch {
    let builder =
        Arc::new(SampleBuilder::from_dir(&repo().join("data/sample/tokenizer"), 48, Overflow::Truncate).unwrap());
    let cfg = LoaderConfig {
        seed: 5,
        shuffle_shards: false,
        shuffle_buffer: 16,
        seq_len: 48,
        rows_per_batch: 8,
        pack: PackStrategy::Greedy,
        pad_id: 0,
        on_bad_record: OnBadRecord::Fail,
        max_epochs: Some(1),
    };
    let mut loader = Loader::new(cfg, vec![repo().join("data/sample/syncode-sample.jsonl")], builder).unwrap();
    loader.next_batch().unwrap().unwrap()
}

fn micros(all: &Batch, per: usize) -> Vec<MicroBatch> {
    all.rows
        .chunks(per)
        .map(|c| MicroBatch::new(c, &Device::Cpu).unwrap())
        .collect()
}

#[test]
fn accumulated_micro_batches_equal_one_large_batch() {
    let model = tiny(DType::F32);
    let all = rows();
    let calls = syncoder::ops::device_calls::DeviceCalls::now();
    let one = step_gradients(&model, &micros(&all, 8), 1.0, &mut |_| {}).unwrap();
    let one_reads = syncoder::ops::device_calls::DeviceCalls::since(calls).host_reads;
    assert_eq!(one_reads, 1, "the loss, read once at the step's end");
    for per in [4, 2, 1] {
        let mbs = micros(&all, per);
        let calls = syncoder::ops::device_calls::DeviceCalls::now();
        let acc = step_gradients(&model, &mbs, 1.0, &mut |_| {}).unwrap();
        // Nothing per micro-batch comes back to the host: still one read for the step.
        assert_eq!(
            syncoder::ops::device_calls::DeviceCalls::since(calls).host_reads,
            one_reads,
            "{} micro-batches",
            mbs.len()
        );
        assert_eq!(acc.supervised, one.supervised);
        assert!(
            (acc.loss() - one.loss()).abs() < 1e-6 * one.loss(),
            "{per}: {} vs {}",
            acc.loss(),
            one.loss()
        );
        for ((name, _), (a, b)) in model.parameters().iter().zip(acc.grads.iter().zip(&one.grads)) {
            let e = rel_err(a, b).unwrap();
            assert!(
                e <= 1e-5,
                "{per} rows per micro-batch: gradient of {name} rel err {e:e}"
            );
        }
        // The average of per-micro-batch means is a different loss: the rows carry different
        // numbers of supervised tokens, so the test above can tell the two apart.
        let means: f64 = mbs
            .iter()
            .map(|m| {
                let g = step_gradients(&model, std::slice::from_ref(m), 1.0, &mut |_| {}).unwrap();
                g.loss()
            })
            .sum::<f64>()
            / mbs.len() as f64;
        assert!(
            (means - one.loss()).abs() > 1e-4,
            "{per}: mean of means {means} vs {}",
            one.loss()
        );
    }
}

#[test]
fn bf16_parameters_get_fp32_master_weights() {
    let model = tiny(DType::BF16);
    let mut opt = AdamW::new(
        &model,
        &OptimConfig {
            lr: 1e-3,
            weight_decay: 0.1,
            ..Default::default()
        },
    )
    .unwrap();
    let grads: Vec<Tensor> = model
        .parameters()
        .iter()
        .map(|(_, p)| (p.ones_like().unwrap().to_dtype(DType::F32).unwrap() * 1e-3).unwrap())
        .collect();
    for _ in 0..3 {
        opt.update(&grads, 1e-3, 1.0).unwrap();
    }
    let state = opt.state_tensors();
    let masters: Vec<&(String, Tensor)> = state.iter().filter(|(n, _)| n.starts_with("master.")).collect();
    assert_eq!(masters.len(), model.parameters().len());
    for (name, master) in masters {
        assert_eq!(master.dtype(), DType::F32);
        let param = &model
            .parameters()
            .iter()
            .find(|(n, _)| *n == name["master.".len()..])
            .unwrap()
            .1;
        assert_eq!(param.dtype(), DType::BF16);
        // The parameter is the master rounded to bf16; the master keeps what bf16 loses.
        let rounded = master.to_dtype(DType::BF16).unwrap();
        assert_eq!(rel_err(param, &rounded).unwrap(), 0.0, "{name}");
    }
    // Norm weights (no decay) moved by 3 · lr from 1; bf16 alone could not hold 0.997.
    let (_, norm_master) = state.iter().find(|(n, _)| n == "master.model.norm.weight").unwrap();
    let v = norm_master.to_vec1::<f32>().unwrap();
    assert!((v[0] - 0.997).abs() < 1e-5, "{}", v[0]);
    let f32_model = tiny(DType::F32);
    let opt = AdamW::new(&f32_model, &OptimConfig::default()).unwrap();
    assert!(opt.state_tensors().iter().all(|(n, _)| !n.starts_with("master.")));
}

#[test]
fn weight_decay_skips_norms_and_biases_unless_asked() {
    let model = tiny(DType::F32);
    let opt = AdamW::new(&model, &OptimConfig::default()).unwrap();
    for (name, decay) in opt.decay_mask() {
        let want = !(name.ends_with(".bias") || name.contains("norm"));
        assert_eq!(decay, want, "{name}");
    }
    let opt = AdamW::new(
        &model,
        &OptimConfig {
            decay_norms_and_biases: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(opt.decay_mask().iter().all(|(_, d)| *d));
}
