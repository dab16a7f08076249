use super::check_op;
use crate::common::randn;
use crate::test_device;
use syncoder::ops::swiglu;
use syncoder::ops::swiglu::check as reference;

test_device! {
fn swiglu_matches_reference(dev) {
    for (i, shape) in [vec![13], vec![7, 129], vec![3, 5, 704], vec![4099]].iter().enumerate() {
        let g = randn(i as u64, shape, 2.0, dev)?;
        let u = randn(50 + i as u64, shape, 1.0, dev)?;
        check_op(
            &format!("swiglu {shape:?}"),
            &[g, u],
            |t| swiglu(&t[0], &t[1]),
            |t| reference::swiglu(&t[0], &t[1]),
        )?;
    }
    Ok(())
}
}
