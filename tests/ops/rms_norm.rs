use super::check_op;
use candle_core::{Device, Result};
use syncoder::ops::{reference, rms_norm};
use syncoder::testing::randn;

#[test]
fn rms_norm_matches_reference() -> Result<()> {
    for (i, shape) in [vec![1, 7], vec![3, 5, 33], vec![17, 256], vec![2, 1000], vec![65, 3]]
        .iter()
        .enumerate()
    {
        let h = *shape.last().unwrap();
        let x = randn(i as u64, shape, 1.5, &Device::Cpu)?;
        let w = (randn(100 + i as u64, &[h], 0.3, &Device::Cpu)? + 1.0)?;
        check_op(
            &format!("rms_norm {shape:?}"),
            &[x, w],
            |t| rms_norm(&t[0], &t[1], 1e-6),
            |t| reference::rms_norm(&t[0], &t[1], 1e-6),
        )?;
    }
    Ok(())
}

#[test]
fn rms_norm_rejects_wrong_weight() -> Result<()> {
    let x = randn(0, &[4, 8], 1.0, &Device::Cpu)?;
    let w = randn(1, &[7], 1.0, &Device::Cpu)?;
    assert!(rms_norm(&x, &w, 1e-6).is_err());
    Ok(())
}
