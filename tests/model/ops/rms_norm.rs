use super::check_op;
use crate::common::randn;
use crate::test_device;
use syncoder::ops::rms_norm::check as reference;
use syncoder::ops::{add_rms_norm, rms_norm};

test_device! {
fn rms_norm_matches_reference(dev) {
    for (i, shape) in [vec![1, 7], vec![3, 5, 33], vec![17, 256], vec![2, 1000], vec![65, 3]]
        .iter()
        .enumerate()
    {
        let h = *shape.last().unwrap();
        let x = randn(i as u64, shape, 1.5, dev)?;
        let w = (randn(100 + i as u64, &[h], 0.3, dev)? + 1.0)?;
        check_op(
            &format!("rms_norm {shape:?}"),
            &[x, w],
            |t| rms_norm(&t[0], &t[1], 1e-6),
            |t| reference::rms_norm(&t[0], &t[1], 1e-6),
        )?;
    }
    Ok(())
}
}

test_device! {
fn rms_norm_rejects_wrong_weight(dev) {
    let x = randn(0, &[4, 8], 1.0, dev)?;
    let w = randn(1, &[7], 1.0, dev)?;
    assert!(rms_norm(&x, &w, 1e-6).is_err());
    Ok(())
}
}

test_device! {
/// The residual-fused form against the reference add followed by the reference norm: both
/// outputs (stacked) and the gradients of x, delta and w.
fn add_rms_norm_matches_add_then_reference_norm(dev) {
    for (i, shape) in [vec![1, 7], vec![3, 5, 33], vec![17, 256], vec![2, 1000]]
        .iter()
        .enumerate()
    {
        let h = *shape.last().unwrap();
        let x = randn(10 + i as u64, shape, 1.5, dev)?;
        let delta = randn(20 + i as u64, shape, 0.7, dev)?;
        let w = (randn(30 + i as u64, &[h], 0.3, dev)? + 1.0)?;
        check_op(
            &format!("add_rms_norm {shape:?}"),
            &[x, delta, w],
            |t| {
                let (s, n) = add_rms_norm(&t[0], &t[1], &t[2], 1e-6)?;
                candle_core::Tensor::stack(&[s, n], 0)
            },
            |t| {
                let s = (&t[0] + &t[1])?;
                let n = reference::rms_norm(&s, &t[2], 1e-6)?;
                candle_core::Tensor::stack(&[s, n], 0)
            },
        )?;
    }
    let x = randn(0, &[4, 8], 1.0, dev)?;
    assert!(add_rms_norm(&x, &randn(1, &[4, 7], 1.0, dev)?, &randn(2, &[8], 1.0, dev)?, 1e-6).is_err());
    Ok(())
}
}
