use super::check_op;
use crate::common::randn;
use crate::test_device;
use syncoder::ops::swiglu;
use syncoder::ops::swiglu::check as reference;

test_device! {
fn swiglu_matches_reference(dev) {
    // Stacked `[.., 2·I]` rows (gate then up, at different scales); widths around the CPU's
    // chunking and a single long row.
    for (i, shape) in [vec![13], vec![7, 129], vec![3, 5, 704], vec![1, 4099], vec![9000, 1]].iter().enumerate() {
        let g = randn(i as u64, shape, 2.0, dev)?;
        let u = randn(50 + i as u64, shape, 1.0, dev)?;
        let gu = candle_core::Tensor::cat(&[g, u], shape.len() - 1)?;
        check_op(&format!("swiglu {shape:?}"), &[gu], |t| swiglu(&t[0]), |t| reference::swiglu(&t[0]))?;
    }
    Ok(())
}
}
