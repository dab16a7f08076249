use super::TOL;
use crate::common::{randn, rel_err};
use candle_core::{Device, Result, Tensor};
use syncoder::ops::cached_attention::check as reference;
use syncoder::ops::cached_attention::{cached_attention_cpu, CachedAttentionShape};

#[test]
fn cached_attention_matches_reference() -> Result<()> {
    // (new tokens, cached before, heads, kv heads, head dim)
    for (i, &(n, start, hq, hkv, d)) in [(1, 0, 2, 1, 8), (1, 37, 4, 2, 16), (9, 0, 6, 2, 12), (5, 13, 4, 4, 32)]
        .iter()
        .enumerate()
    {
        let dev = Device::Cpu;
        let t = start + n;
        let q = randn(i as u64, &[n, hq, d], 1.0, &dev)?;
        let k = randn(10 + i as u64, &[t, hkv, d], 1.0, &dev)?;
        let v = randn(20 + i as u64, &[t, hkv, d], 1.0, &dev)?;
        let scale = 1.0 / (d as f64).sqrt();
        let want = reference::cached_attention(&q, &k, &v, start, scale)?;
        let mut out = vec![f32::NAN; n * hq * d];
        let shape = CachedAttentionShape {
            heads: hq,
            kv_heads: hkv,
            head_dim: d,
            start,
            scale: scale as f32,
        };
        let flat = |x: &Tensor| x.flatten_all()?.to_vec1::<f32>();
        cached_attention_cpu(&flat(&q)?, &flat(&k)?, &flat(&v)?, shape, &mut out);
        let got = Tensor::from_vec(out, (n, hq, d), &dev)?;
        let e = rel_err(&got, &want)?;
        assert!(e <= TOL, "case {i}: rel err {e:e}");
    }
    Ok(())
}
