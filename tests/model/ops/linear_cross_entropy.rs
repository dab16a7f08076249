use super::{tol, TOL};
use crate::common::{randn, rel_err};
use crate::test_device;
use candle_core::{Device, Result, Tensor, Var};
use syncoder::ops::linear_cross_entropy::check as reference;
use syncoder::ops::{linear_cross_entropy, IGNORE_INDEX};

fn targets(n: usize, v: usize, seed: u64) -> Vec<i64> {
    (0..n)
        .map(|i| {
            let x = (i as u64 * 2654435761 + seed * 97) % (v as u64 + 3);
            if x >= v as u64 {
                IGNORE_INDEX
            } else {
                x as i64
            }
        })
        .collect()
}

test_device! {
fn linear_cross_entropy_matches_reference(dev) {
    let tol = tol(dev);
    for (i, &(n, h, v)) in [(37, 19, 101), (64, 32, 500), (5, 8, 7), (300, 24, 1000)]
        .iter()
        .enumerate()
    {
        let hid = randn(i as u64, &[n, h], 1.0, dev)?;
        let w = randn(10 + i as u64, &[v, h], 0.5, dev)?;
        let t = targets(n, v, i as u64);
        let supervised = t.iter().filter(|&&x| x != IGNORE_INDEX).count();
        let tt = Tensor::new(t.as_slice(), dev)?;

        let (hv, wv) = (Var::from_tensor(&hid)?, Var::from_tensor(&w)?);
        let ref_loss = reference::linear_cross_entropy(hv.as_tensor(), wv.as_tensor(), &tt)?;
        let g = ref_loss.backward()?;
        let (rdh, rdw) = (
            g.get(hv.as_tensor()).unwrap().clone(),
            g.get(wv.as_tensor()).unwrap().clone(),
        );

        for chunk in [Some(1), Some(7), Some(n), Some(n + 9), None] {
            let (hv, wv) = (Var::from_tensor(&hid)?, Var::from_tensor(&w)?);
            let out = linear_cross_entropy(hv.as_tensor(), wv.as_tensor(), &tt, chunk)?;
            assert_eq!(out.supervised, supervised);
            // Scale the loss so the backward's use of the incoming gradient is checked too.
            let g = (out.loss_sum.clone() * 1.0)?.backward()?;
            let what = format!("lce n={n} h={h} v={v} chunk={chunk:?}");
            let e = rel_err(&out.loss_sum, &ref_loss)?;
            assert!(e <= tol, "{what}: loss rel err {e:e}");
            let e = rel_err(g.get(hv.as_tensor()).unwrap(), &rdh)?;
            assert!(e <= tol, "{what}: hidden grad rel err {e:e}");
            let e = rel_err(g.get(wv.as_tensor()).unwrap(), &rdw)?;
            assert!(e <= tol, "{what}: weight grad rel err {e:e}");
        }
    }
    Ok(())
}
}

#[test]
fn incoming_gradient_scales_the_saved_gradients() -> Result<()> {
    let hid = Var::from_tensor(&randn(1, &[9, 4], 1.0, &Device::Cpu)?)?;
    let w = randn(2, &[11, 4], 1.0, &Device::Cpu)?;
    let t = Tensor::new(&[1i64, 2, 3, 4, 5, 6, 7, 8, 9], &Device::Cpu)?;
    let g1 = linear_cross_entropy(hid.as_tensor(), &w, &t, Some(4))?
        .loss_sum
        .backward()?;
    let g3 = (linear_cross_entropy(hid.as_tensor(), &w, &t, Some(4))?.loss_sum * 3.0)?.backward()?;
    let a = (g1.get(hid.as_tensor()).unwrap() * 3.0)?;
    assert!(rel_err(g3.get(hid.as_tensor()).unwrap(), &a)? <= TOL);
    Ok(())
}

#[test]
fn out_of_range_target_is_an_error() -> Result<()> {
    let hid = randn(1, &[2, 4], 1.0, &Device::Cpu)?;
    let w = randn(2, &[5, 4], 1.0, &Device::Cpu)?;
    let t = Tensor::new(&[1i64, 5], &Device::Cpu)?;
    let err = linear_cross_entropy(&hid, &w, &t, None)
        .err()
        .expect("target 5 is outside a vocabulary of 5");
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    Ok(())
}

#[test]
fn all_ignored_gives_zero_loss_and_count() -> Result<()> {
    let hid = randn(1, &[3, 4], 1.0, &Device::Cpu)?;
    let w = randn(2, &[5, 4], 1.0, &Device::Cpu)?;
    let t = Tensor::new(&[IGNORE_INDEX; 3], &Device::Cpu)?;
    let out = linear_cross_entropy(&hid, &w, &t, None)?;
    assert_eq!(out.supervised, 0);
    assert_eq!(out.loss_sum.to_scalar::<f32>()?, 0.0);
    Ok(())
}
