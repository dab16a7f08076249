use super::check_op;
use crate::common::randn;
use crate::test_device;
use candle_core::{Device, Result};
use syncoder::ops::rope::check as reference;
use syncoder::ops::{QkvHeads, RopeTable};

test_device! {
fn qkv_rope_matches_reference(dev) {
    // (tokens, q heads, kv heads, head dim): GQA, MHA, a single pair, odd counts.
    for (i, &(n, hq, hkv, d)) in [(5, 3, 1, 8), (33, 2, 2, 64), (1, 1, 1, 2), (70, 7, 3, 18)].iter().enumerate() {
        // Positions restart mid-sequence (packed documents) and include large values.
        let positions: Vec<u32> = (0..n as u32)
            .map(|t| if t < n as u32 / 2 { t } else { 30000 + t })
            .collect();
        let table = RopeTable::new(&positions, d, 1_000_000.0, dev)?;
        let heads = QkvHeads { q: hq, kv: hkv };
        let w = (hq + 2 * hkv) * d;
        let qkv = randn(i as u64, &[n, w], 1.0, dev)?;
        let bias = randn(100 + i as u64, &[w], 0.5, dev)?;
        check_op(
            &format!("qkv_rope {n}x({hq}+{hkv}+{hkv})x{d}"),
            &[qkv, bias],
            |t| reference::qkv_rope_flat(&t[0], &t[1], &table, heads),
            |t| reference::qkv_rope(&t[0], &t[1], &table.cos, &table.sin, heads),
        )?;
    }
    Ok(())
}
}

#[test]
fn qkv_rope_refuses_shapes_that_do_not_fit() {
    let table = RopeTable::new(&[0, 1], 4, 10000.0, &Device::Cpu).unwrap();
    let heads = QkvHeads { q: 2, kv: 1 };
    let t = |shape: &[usize]| candle_core::Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = syncoder::ops::qkv_rope(&t(&[2, 15]), &t(&[15]), &table, heads).unwrap_err();
    assert!(e.to_string().contains("do not fit"), "{e}");
    let e = syncoder::ops::qkv_rope(&t(&[2, 16]), &t(&[12]), &table, heads).unwrap_err();
    assert!(e.to_string().contains("do not fit"), "{e}");
    let e = syncoder::ops::qkv_rope(&t(&[3, 16]), &t(&[16]), &table, heads).unwrap_err();
    assert!(e.to_string().contains("table"), "{e}");
    assert!(syncoder::ops::qkv_rope(&t(&[2, 16]), &t(&[16]), &table, heads).is_ok());
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
