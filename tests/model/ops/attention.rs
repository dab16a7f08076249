use super::check_op;
use crate::common::randn;
use crate::test_device;
use candle_core::{Device, Result};
use syncoder::ops::attention::composed_attention;
use syncoder::ops::chunked_attention::{chunked_attention, heads_per_block};
use syncoder::ops::{varlen_causal_attention, DocSegments};

/// Segments for rows of documents of the given lengths.
fn segments(rows: &[Vec<usize>]) -> Result<DocSegments> {
    let seq_len: usize = rows[0].iter().sum();
    let positions: Vec<u32> = rows
        .iter()
        .flat_map(|docs| docs.iter().flat_map(|&l| 0..l as u32))
        .collect();
    DocSegments::from_positions(&positions, rows.len(), seq_len)
}

test_device! {
fn attention_matches_reference(dev) {
    let cases = [
        (vec![vec![13]], 2, 2, 8),
        (vec![vec![5, 8], vec![13]], 4, 2, 16),
        (vec![vec![1, 1, 3, 2], vec![4, 3]], 4, 1, 6),
        (vec![vec![40, 27]], 6, 3, 64),
        // Documents longer than one query tile (128).
        (vec![vec![300]], 2, 1, 4),
        (vec![vec![130, 5], vec![2, 133]], 2, 2, 8),
    ];
    for (i, (rows, hq, hkv, d)) in cases.iter().enumerate() {
        let segs = segments(rows)?;
        let n = segs.len();
        let q = randn(3 * i as u64, &[n, *hq, *d], 1.0, dev)?;
        let k = randn(3 * i as u64 + 1, &[n, *hkv, *d], 1.0, dev)?;
        let v = randn(3 * i as u64 + 2, &[n, *hkv, *d], 1.0, dev)?;
        let scale = 1.0 / (*d as f64).sqrt();
        check_op(
            &format!("attention {rows:?} hq={hq} hkv={hkv} d={d}"),
            &[q, k, v],
            |t| varlen_causal_attention(&t[0], &t[1], &t[2], &segs, scale),
            |t| composed_attention(&t[0], &t[1], &t[2], &segs, scale),
        )?;
    }
    Ok(())
}
}

test_device! {
/// The GPU path (blocks of heads, recomputation in the backward), checked on the CPU against
/// the composed reference with one head per block, a block that does not divide the heads,
/// and all heads in one block.
fn chunked_attention_matches_reference(dev) {
    let cases = [
        (vec![vec![5, 8], vec![13]], 4, 2, 16),
        (vec![vec![1, 1, 3, 2], vec![4, 3]], 6, 3, 8),
        (vec![vec![40, 27]], 6, 1, 32),
    ];
    for (i, (rows, hq, hkv, d)) in cases.iter().enumerate() {
        let segs = segments(rows)?;
        let n = segs.len();
        let q = randn(7 * i as u64, &[n, *hq, *d], 1.0, dev)?;
        let k = randn(7 * i as u64 + 1, &[n, *hkv, *d], 1.0, dev)?;
        let v = randn(7 * i as u64 + 2, &[n, *hkv, *d], 1.0, dev)?;
        let scale = 1.0 / (*d as f64).sqrt();
        for heads in [Some(1), Some(4), None] {
            check_op(
                &format!("chunked attention {rows:?} hq={hq} hkv={hkv} d={d} heads={heads:?}"),
                &[q.clone(), k.clone(), v.clone()],
                |t| chunked_attention(&t[0], &t[1], &t[2], &segs, scale, heads),
                |t| composed_attention(&t[0], &t[1], &t[2], &segs, scale),
            )?;
        }
    }
    // Blocks shrink as sequences grow: 4096 tokens fit 4 heads per GiB block, 8192 one.
    assert_eq!(heads_per_block(1, 4096, 14), 4);
    assert_eq!(heads_per_block(1, 8192, 14), 1);
    assert_eq!(heads_per_block(1, 64, 14), 14);
    Ok(())
}
}

/// The device mask is built once per batch: every layer's forward and backward reuse it.
#[test]
fn the_attention_mask_is_built_once_per_batch() -> Result<()> {
    let segs = segments(&[vec![5, 8], vec![13]])?;
    assert!(!segs.has_device_mask());
    let (n, dev) = (segs.len(), Device::Cpu);
    let q = randn(1, &[n, 2, 8], 1.0, &dev)?;
    let k = randn(2, &[n, 2, 8], 1.0, &dev)?;
    let _ = chunked_attention(&q, &k, &k, &segs, 0.3, None)?;
    assert!(segs.has_device_mask());
    // A clone (what each layer's op keeps) shares the same mask tensor.
    let again = segs.clone().device_mask(&dev)?;
    assert_eq!(again.id(), segs.device_mask(&dev)?.id());
    let m4 = segs.device_mask(&dev)?.squeeze(1)?.to_vec3::<f32>()?;
    assert_eq!(m4[1][3][0], 0.0, "row 1 is one document of 13");
    assert_eq!(m4[0][6][4], f32::NEG_INFINITY, "token 6 starts document 2 of row 0");
    assert_eq!(m4[0][6][5], 0.0);
    Ok(())
}

#[test]
fn segments_follow_position_restarts() -> Result<()> {
    let segs = DocSegments::from_positions(&[0, 1, 2, 0, 1, 5, 6, 0], 2, 4)?;
    // Row 0: doc [0,1,2], doc [3]; row 1 starts a doc at 4 and at 5 (5 does not continue 1).
    assert_eq!(segs.start.as_slice(), &[0, 0, 0, 3, 4, 5, 5, 7]);
    Ok(())
}

#[test]
fn attention_does_not_cross_documents() -> Result<()> {
    // Changing the keys/values of one document leaves the other document's outputs unchanged.
    let segs = segments(&[vec![6, 5]])?;
    let q = randn(1, &[11, 2, 8], 1.0, &Device::Cpu)?;
    let k = randn(2, &[11, 2, 8], 1.0, &Device::Cpu)?;
    let v = randn(3, &[11, 2, 8], 1.0, &Device::Cpu)?;
    let o1 = varlen_causal_attention(&q, &k, &v, &segs, 0.3)?;
    let noise = randn(4, &[6, 2, 8], 5.0, &Device::Cpu)?;
    let k2 = k.slice_assign(&[0..6, 0..2, 0..8], &(k.narrow(0, 0, 6)? + &noise)?)?;
    let v2 = v.slice_assign(&[0..6, 0..2, 0..8], &(v.narrow(0, 0, 6)? + &noise)?)?;
    let o2 = varlen_causal_attention(&q, &k2, &v2, &segs, 0.3)?;
    let second = |o: &candle_core::Tensor| o.narrow(0, 6, 5)?.flatten_all()?.to_vec1::<f32>();
    assert_eq!(second(&o1)?, second(&o2)?);
    let first = |o: &candle_core::Tensor| o.narrow(0, 0, 6)?.flatten_all()?.to_vec1::<f32>();
    assert_ne!(first(&o1)?, first(&o2)?);
    Ok(())
}
