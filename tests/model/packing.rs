//! Packing never contaminates: documents packed in one row give exactly the losses they give
//! alone, and a mask that let attention cross the boundary would be caught.

use candle_core::{DType, Device};
use syncoder::model::{PackedBatch, Qwen2};

fn model() -> Qwen2 {
    let dir = crate::common::fixtures().join("untied_gqa4");
    Qwen2::load(&dir, DType::F32, &Device::Cpu, false).unwrap()
}

fn doc(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| (i * 7919 + seed * 104729) % 300).collect()
}

fn loss_sum(m: &Qwen2, b: &PackedBatch) -> (f32, usize) {
    let t = b.next_token_targets(None).unwrap();
    let out = m.loss(b, &t).unwrap();
    (out.loss_sum.to_scalar::<f32>().unwrap(), out.supervised)
}

#[test]
fn packed_loss_equals_sum_of_separate_losses() {
    let m = model();
    let (a, b, c) = (doc(1, 11), doc(2, 17), doc(3, 4));
    let packed = PackedBatch::from_documents(&[vec![a.clone(), b.clone(), c.clone()]], &Device::Cpu).unwrap();
    let (packed_loss, packed_n) = loss_sum(&m, &packed);
    let mut alone = 0f32;
    let mut alone_n = 0;
    for d in [&a, &b, &c] {
        let (l, n) = loss_sum(&m, &PackedBatch::single(d, &Device::Cpu).unwrap());
        alone += l;
        alone_n += n;
    }
    assert_eq!(packed_n, alone_n);
    assert_eq!(packed_n, 10 + 16 + 3, "no target crosses a document boundary");
    let rel = (packed_loss - alone).abs() / alone.abs();
    assert!(rel <= 1e-5, "packed {packed_loss} vs alone {alone}");

    // The same tokens read as one document (positions continuing) must give a different loss:
    // the test can tell a block-diagonal mask from a plain causal one.
    let ids: Vec<u32> = [a, b, c].concat();
    let joined = PackedBatch::single(&ids, &Device::Cpu).unwrap();
    let (joined_loss, _) = loss_sum(&m, &joined);
    assert!((joined_loss - packed_loss).abs() / packed_loss > 1e-3);
}

#[test]
fn packed_rows_are_independent() {
    // Two rows in one batch give the same logits as each row alone.
    let m = model();
    let rows = vec![vec![doc(4, 9), doc(5, 7)], vec![doc(6, 16)]];
    let both = m
        .logits(&PackedBatch::from_documents(&rows, &Device::Cpu).unwrap())
        .unwrap();
    let second = m
        .logits(&PackedBatch::from_documents(&rows[1..], &Device::Cpu).unwrap())
        .unwrap();
    let e = crate::common::rel_err(&both.narrow(0, 16, 16).unwrap(), &second).unwrap();
    assert!(e <= 1e-5, "{e:e}");
}

/// Validation's inference view shares the weights but records no backward state: the same
/// loss, and a loss tensor outside the autograd graph (the trainable model's is inside it).
#[test]
fn inference_view_gives_the_same_loss_without_backward_state() {
    let dir = crate::common::fixtures().join("untied_gqa4");
    let trainable = Qwen2::load(&dir, DType::F32, &Device::Cpu, true).unwrap();
    let view = trainable.inference_view().unwrap();
    let b = PackedBatch::from_documents(&[vec![doc(4, 13), doc(5, 6)]], &Device::Cpu).unwrap();
    let t = b.next_token_targets(None).unwrap();
    let (with_graph, without) = (trainable.loss(&b, &t).unwrap(), view.loss(&b, &t).unwrap());
    assert!(
        with_graph.loss_sum.track_op(),
        "the trainable model's loss is in the graph"
    );
    assert!(
        !without.loss_sum.track_op(),
        "the inference view's loss records no backward state"
    );
    let (a, b) = (
        with_graph.loss_sum.to_scalar::<f32>().unwrap(),
        without.loss_sum.to_scalar::<f32>().unwrap(),
    );
    if cfg!(feature = "openblas") {
        // The graph's products stay on candle's GEMM, the view's go to OpenBLAS.
        assert!((a - b).abs() <= 1e-6 * a.abs(), "{a} vs {b}");
    } else {
        assert_eq!(a, b);
    }
    assert!(!view.is_trainable());
}
