//! pass@k: the unbiased estimator of the chance that at least one of k samples passes, from n
//! samples of which c passed (Chen et al. 2021): 1 − C(n−c, k) / C(n, k), computed as
//! 1 − Π_{i=n−c+1}^{n} (1 − k/i) so that no binomial coefficient overflows; and a percentile
//! bootstrap interval over problems for the benchmark's mean.

/// pass@k of one problem with `n` samples, `c` of them correct (`k ≤ n`; `None` otherwise).
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Option<f64> {
    if k == 0 || k > n || c > n {
        return None;
    }
    if n - c < k {
        return Some(1.0);
    }
    let mut miss = 1.0f64;
    for i in (n - c + 1)..=n {
        miss *= 1.0 - k as f64 / i as f64;
    }
    Some(1.0 - miss)
}

/// The mean of `scores` (one per problem) and its `level` (e.g. 0.95) percentile bootstrap
/// interval from `rounds` resamples of the problems with replacement (seeded: the same numbers
/// every time).
pub fn mean_with_interval(scores: &[f64], level: f64, rounds: usize, seed: u64) -> (f64, f64, f64) {
    let n = scores.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let mean = scores.iter().sum::<f64>() / n as f64;
    let mut state = seed | 1;
    // xorshift64*: the interval needs only a reproducible uniform index.
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut means: Vec<f64> = (0..rounds.max(1))
        .map(|_| (0..n).map(|_| scores[(next() % n as u64) as usize]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    let tail = (1.0 - level) / 2.0;
    (mean, at(tail), at(1.0 - tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The estimator against the binomial formula written out, for small n.
    #[test]
    fn matches_the_binomial_formula() {
        fn choose(n: usize, k: usize) -> f64 {
            if k > n {
                return 0.0;
            }
            (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
        }
        for n in 1..=12 {
            for c in 0..=n {
                for k in 1..=n {
                    let want = 1.0 - choose(n - c, k) / choose(n, k);
                    let got = pass_at_k(n, c, k).unwrap();
                    assert!((got - want).abs() < 1e-12, "n={n} c={c} k={k}: {got} vs {want}");
                }
            }
        }
        assert_eq!(pass_at_k(1, 1, 1), Some(1.0));
        assert_eq!(pass_at_k(1, 0, 1), Some(0.0));
        assert!((pass_at_k(10, 3, 1).unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(pass_at_k(3, 1, 5), None);
    }

    #[test]
    fn the_interval_holds_the_mean_and_narrows_with_more_problems() {
        let few: Vec<f64> = (0..10).map(|i| (i % 2) as f64).collect();
        let many: Vec<f64> = (0..1000).map(|i| (i % 2) as f64).collect();
        let (m, lo, hi) = mean_with_interval(&few, 0.95, 1000, 7);
        assert!((m - 0.5).abs() < 1e-12 && lo < m && m < hi, "{lo} {m} {hi}");
        let (m2, lo2, hi2) = mean_with_interval(&many, 0.95, 1000, 7);
        assert!(
            lo2 < m2 && m2 < hi2 && hi2 - lo2 < (hi - lo) / 3.0,
            "{lo2} {hi2} vs {lo} {hi}"
        );
        assert_eq!(mean_with_interval(&few, 0.95, 1000, 7), (m, lo, hi));
        assert_eq!(mean_with_interval(&[], 0.95, 10, 1), (0.0, 0.0, 0.0));
    }
}
