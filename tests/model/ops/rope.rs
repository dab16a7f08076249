use super::check_op;
use crate::common::randn;
use crate::test_device;
use candle_core::{Device, Result};
use syncoder::ops::rope::check as reference;
use syncoder::ops::{rope, RopeTable};

test_device! {
fn rope_matches_reference(dev) {
    for (i, &(n, h, d)) in [(5, 3, 8), (33, 2, 64), (1, 1, 2), (70, 7, 18)].iter().enumerate() {
        // Positions restart mid-sequence (packed documents) and include large values.
        let positions: Vec<u32> = (0..n as u32)
            .map(|t| if t < n as u32 / 2 { t } else { 30000 + t })
            .collect();
        let table = RopeTable::new(&positions, d, 1_000_000.0, dev)?;
        let x = randn(i as u64, &[n, h, d], 1.0, dev)?;
        check_op(
            &format!("rope {n}x{h}x{d}"),
            &[x],
            |t| rope(&t[0], &table),
            |t| reference::rope(&t[0], &table.cos, &table.sin),
        )?;
    }
    Ok(())
}
}

#[test]
fn rope_table_matches_closed_form() -> Result<()> {
    // Position 0 is the identity; position p rotates pair i by p * theta^(-2i/d).
    let table = RopeTable::new(&[0, 3], 4, 10000.0, &Device::Cpu)?;
    let cos = table.cos.to_vec2::<f32>()?;
    let sin = table.sin.to_vec2::<f32>()?;
    assert_eq!(cos[0], vec![1.0, 1.0]);
    assert_eq!(sin[0], vec![0.0, 0.0]);
    assert!((cos[1][0] - 3f32.cos()).abs() < 1e-6);
    assert!((sin[1][1] - (3.0f32 / 100.0).sin()).abs() < 1e-6);
    Ok(())
}
