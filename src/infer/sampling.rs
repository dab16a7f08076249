//! Choosing the next token from logits: greedy (argmax, the first index on ties, as
//! `torch.argmax`), or temperature + nucleus (top-p) sampling from a seeded stream.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How tokens are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0: greedy.
    pub temperature: f64,
    /// Keep the smallest set of most likely tokens whose probability reaches this (1: all).
    pub top_p: f64,
    pub seed: u64,
}

impl Sampling {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

/// Index of the largest logit (the first one on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] || logits[best].is_nan() && !x.is_nan() {
            best = i;
        }
    }
    best as u32
}

/// A token drawn from `softmax(logits / temperature)` restricted to the top-p nucleus.
pub fn sample(logits: &[f32], temperature: f64, top_p: f64, rng: &mut ChaCha8Rng) -> u32 {
    let t = temperature.max(1e-6);
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| (i as u32, ((x as f64 - max) / t).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = 0;
    let mut mass = 0.0;
    for p in &probs {
        mass += p.1 / total;
        kept += 1;
        if mass >= top_p {
            break;
        }
    }
    let nucleus = &probs[..kept.max(1)];
    let sum: f64 = nucleus.iter().map(|p| p.1).sum();
    let mut u = rng.random::<f64>() * sum;
    for p in nucleus {
        if u < p.1 {
            return p.0;
        }
        u -= p.1;
    }
    nucleus[nucleus.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, 1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -1.0]), 1);
    }

    #[test]
    fn top_p_keeps_only_the_nucleus_and_seeds_repeat() {
        let logits = [5.0f32, 4.0, -10.0, -10.0];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..200 {
            assert!(sample(&logits, 1.0, 0.9, &mut rng) < 2);
        }
        let draw = |seed| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            (0..20).map(|_| sample(&logits, 2.0, 1.0, &mut r)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        // A tiny top-p is greedy.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        assert!((0..50).all(|_| sample(&logits, 1.0, 1e-9, &mut rng) == 0));
    }
}
