use super::TOL;
use crate::common::{randn, rel_err};
use candle_core::{Device, Result, Tensor};
use syncoder::ops::adamw::composed as reference_adamw;
use syncoder::ops::adamw::{adamw_cpu, AdamWStep};
use syncoder::ops::adamw_update;
use syncoder::ops::grad_norm::check as reference;
use syncoder::ops::grad_norm::{global_norm, sum_squares, sum_squares_cpu};

fn step(t: u64, wd: f64, scale: f64) -> AdamWStep {
    AdamWStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: wd,
        step: t,
        grad_scale: scale,
    }
}

#[test]
fn adamw_matches_reference_over_several_steps() -> Result<()> {
    for (i, n) in [1usize, 17, 16385, 40_001].into_iter().enumerate() {
        let dev = Device::Cpu;
        let mut p = randn(i as u64, &[n], 1.0, &dev)?;
        let mut m = p.zeros_like()?;
        let mut v = p.zeros_like()?;
        let (mut rp, mut rm, mut rv) = (p.clone(), m.clone(), v.clone());
        for t in 1..=4u64 {
            let g = randn(100 + t * 7 + i as u64, &[n], 0.5, &dev)?;
            let h = step(t, if t % 2 == 0 { 0.1 } else { 0.0 }, 0.25 * t as f64);
            (p, m, v) = adamw_update(&p, &m, &v, &g, &h)?;
            (rp, rm, rv) = reference_adamw(&rp, &rm, &rv, &g, &h)?;
            for (what, a, b) in [("param", &p, &rp), ("exp_avg", &m, &rm), ("exp_avg_sq", &v, &rv)] {
                let e = rel_err(a, b)?;
                assert!(e <= TOL, "adamw n={n} step {t}: {what} rel err {e:e}");
            }
        }
        assert!(
            rel_err(&p, &randn(i as u64, &[n], 1.0, &dev)?)? > 1e-3,
            "the parameters moved"
        );
    }
    Ok(())
}

#[test]
fn adamw_first_step_moves_each_weight_by_about_lr() {
    // With bias correction the first update is lr · g/|g| (up to eps), whatever the scale.
    let mut p = vec![1.0f32, -2.0, 0.5];
    let (mut m, mut v) = (vec![0f32; 3], vec![0f32; 3]);
    adamw_cpu(&mut p, &mut m, &mut v, &[3.0, -0.001, 1e4], &step(1, 0.0, 1.0));
    let want = [1.0 - 1e-2, -2.0 + 1e-2, 0.5 - 1e-2];
    for (a, b) in p.iter().zip(want) {
        assert!((a - b).abs() < 1e-5, "{p:?}");
    }
    // Decoupled weight decay shrinks the weight by lr·wd even with a zero gradient.
    let mut p = vec![2.0f32];
    let (mut m, mut v) = (vec![0f32], vec![0f32]);
    adamw_cpu(&mut p, &mut m, &mut v, &[0.0], &step(1, 0.5, 1.0));
    assert!((p[0] - 2.0 * (1.0 - 1e-2 * 0.5)).abs() < 1e-6);
}

#[test]
fn adamw_rejects_mismatched_state() -> Result<()> {
    let p = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu)?;
    let g = Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu)?;
    assert!(adamw_update(&p, &p, &p, &g, &step(1, 0.0, 1.0)).is_err());
    let b = p.to_dtype(candle_core::DType::BF16)?;
    assert!(adamw_update(&b, &p, &p, &p, &step(1, 0.0, 1.0)).is_err());
    Ok(())
}

#[test]
fn sum_of_squares_matches_reference() -> Result<()> {
    let mut ts = vec![];
    for (i, n) in [1usize, 33, 16384, 16385, 100_003].into_iter().enumerate() {
        let t = randn(i as u64, &[n], 3.0, &Device::Cpu)?;
        let want = reference::sum_squares(&t)?;
        let got = sum_squares(&t)?;
        assert!(((got - want) / want).abs() < 1e-12, "n={n}: {got} vs {want}");
        assert_eq!(got, sum_squares_cpu(&t.to_vec1::<f32>()?), "deterministic");
        ts.push(t);
    }
    let want: f64 = ts
        .iter()
        .map(|t| reference::sum_squares(t).unwrap())
        .sum::<f64>()
        .sqrt();
    let got = global_norm(&ts)?;
    assert!(((got - want) / want).abs() < 1e-12);
    Ok(())
}
