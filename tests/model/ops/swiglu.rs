use super::check_op;
use candle_core::{Device, Result};
use syncoder::ops::{reference, swiglu};
use syncoder::testing::randn;

#[test]
fn swiglu_matches_reference() -> Result<()> {
    for (i, shape) in [vec![13], vec![7, 129], vec![3, 5, 704], vec![4099]].iter().enumerate() {
        let g = randn(i as u64, shape, 2.0, &Device::Cpu)?;
        let u = randn(50 + i as u64, shape, 1.0, &Device::Cpu)?;
        check_op(
            &format!("swiglu {shape:?}"),
            &[g, u],
            |t| swiglu(&t[0], &t[1]),
            |t| reference::swiglu(&t[0], &t[1]),
        )?;
    }
    Ok(())
}
