//! Statistics over question outcomes: win/tie/loss tallies and the score, percentile bootstrap
//! confidence intervals over questions, and the arena-hard style Bradley–Terry win probability of
//! the model against its single opponent.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::arena::score::{GameVerdict, Outcome};

/// Lower quantile of the 95% confidence interval.
pub const CI_LOWER_Q: f64 = 0.025;
/// Upper quantile of the 95% confidence interval.
pub const CI_UPPER_Q: f64 = 0.975;

/// Logistic base of the Bradley–Terry ratings.
pub const BT_BASE: f64 = 10.0;
/// Logistic scale of the Bradley–Terry ratings (Elo-like: 400 points = 10:1 odds).
pub const BT_SCALE: f64 = 400.0;
/// Rating the opponent is anchored at.
pub const BT_ANCHOR: f64 = 1000.0;
/// Battles counted for a strong verdict (`>>`), as in arena-hard.
pub const BT_STRONG_BATTLES: f64 = 3.0;
/// Pseudo-battles of the symmetric prior (half won, half lost) that keep the fit finite when the
/// model wins or loses every battle. See [`bt_fit`].
pub const BT_PRIOR_BATTLES: f64 = 0.001;

/// Counts of question outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub n: usize,
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
}

impl Tally {
    /// Tally of a list of outcomes.
    pub fn from_outcomes(outcomes: &[Outcome]) -> Self {
        let mut tally = Tally::default();
        for &o in outcomes {
            tally.add(o);
        }
        tally
    }

    /// Counts one more outcome.
    pub fn add(&mut self, outcome: Outcome) {
        self.n += 1;
        match outcome {
            Outcome::Win => self.wins += 1,
            Outcome::Tie => self.ties += 1,
            Outcome::Loss => self.losses += 1,
        }
    }

    fn fraction(&self, count: usize) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            count as f64 / self.n as f64
        }
    }

    /// Fraction of wins (0 when empty).
    pub fn win_rate(&self) -> f64 {
        self.fraction(self.wins)
    }

    /// Fraction of ties (0 when empty).
    pub fn tie_rate(&self) -> f64 {
        self.fraction(self.ties)
    }

    /// Fraction of losses (0 when empty).
    pub fn loss_rate(&self) -> f64 {
        self.fraction(self.losses)
    }

    /// Score = (wins + ½ ties) / n (0 when empty).
    pub fn score(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            (self.wins as f64 + 0.5 * self.ties as f64) / self.n as f64
        }
    }
}

/// Quantile `q` (in 0..=1) of ascending `sorted` values, by linear interpolation between the
/// order statistics at rank `q·(len−1)` (numpy's default "linear" method). `None` when empty.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = q.clamp(0.0, 1.0) * last as f64;
    let lo = (rank.floor() as usize).min(last);
    let hi = (rank.ceil() as usize).min(last);
    let frac = rank - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// The 2.5% and 97.5% quantiles (see [`quantile`]) of `values`; `None` when empty.
pub fn percentile_interval(mut values: Vec<f64>) -> Option<(f64, f64)> {
    values.sort_by(f64::total_cmp);
    Some((quantile(&values, CI_LOWER_Q)?, quantile(&values, CI_UPPER_Q)?))
}

/// Draws `resamples` bootstrap resamples of `n` question indices (with replacement) from a
/// ChaCha8 generator seeded with `seed`, and keeps the statistic of each resample that has one.
fn bootstrap<F>(n: usize, resamples: usize, seed: u64, mut statistic: F) -> Vec<f64>
where
    F: FnMut(&[usize]) -> Option<f64>,
{
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut indices = vec![0; n];
    let mut out = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for slot in indices.iter_mut() {
            *slot = rng.random_range(0..n);
        }
        if let Some(value) = statistic(&indices) {
            out.push(value);
        }
    }
    out
}

/// 95% percentile-bootstrap CI of the score: questions are resampled with replacement
/// `resamples` times (ChaCha8Rng seeded with `seed`, so the result is deterministic for a seed),
/// the score is computed per resample and the 2.5% / 97.5% quantiles are returned (see
/// [`quantile`]). With fewer than two questions or no resamples, returns `(score, score)`.
pub fn bootstrap_score_ci(outcomes: &[Outcome], resamples: usize, seed: u64) -> (f64, f64) {
    let point = Tally::from_outcomes(outcomes).score();
    let n = outcomes.len();
    if n < 2 || resamples == 0 {
        return (point, point);
    }
    let values: Vec<f64> = outcomes.iter().map(|o| o.value()).collect();
    let scores = bootstrap(n, resamples, seed, |indices| {
        Some(indices.iter().map(|&i| values[i]).sum::<f64>() / n as f64)
    });
    percentile_interval(scores).unwrap_or((point, point))
}

/// Weighted battles of the model against the opponent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Battles {
    /// Battles won by the model, ties counting half.
    pub won: f64,
    /// All battles.
    pub total: f64,
}

impl Battles {
    /// Battles of one game from the model's view: a strong win/loss (`>>` on the model's side)
    /// is [`BT_STRONG_BATTLES`] battles, a slight win/loss 1 battle, a tie 1 battle won half;
    /// an unparsable game gives no battle.
    pub fn from_game(game: &GameVerdict) -> Self {
        match game.model_points() {
            None => Battles::default(),
            Some(p) if p >= 2 => Battles {
                won: BT_STRONG_BATTLES,
                total: BT_STRONG_BATTLES,
            },
            Some(1) => Battles { won: 1.0, total: 1.0 },
            Some(0) => Battles { won: 0.5, total: 1.0 },
            Some(-1) => Battles { won: 0.0, total: 1.0 },
            Some(_) => Battles {
                won: 0.0,
                total: BT_STRONG_BATTLES,
            },
        }
    }

    /// Sum of the battles of several games.
    pub fn from_games(games: &[GameVerdict]) -> Self {
        games
            .iter()
            .map(Battles::from_game)
            .fold(Battles::default(), Battles::plus)
    }

    /// Sum of two battle counts.
    pub fn plus(self, other: Battles) -> Battles {
        Battles {
            won: self.won + other.won,
            total: self.total + other.total,
        }
    }
}

/// A Bradley–Terry fit of the model against its opponent.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BtFit {
    /// The model's rating.
    pub model_rating: f64,
    /// The opponent's rating (always [`BT_ANCHOR`]).
    pub opponent_rating: f64,
    /// Probability that the model wins a battle: `1 / (1 + 10^((opponent − model) / 400))`.
    pub win_prob: f64,
}

/// Bradley–Terry fit from battle counts. With two players the maximum-likelihood estimate is
/// closed form, `p = won / total`; to keep the ratings finite when the model wins (or loses)
/// every battle, `p` is the MAP estimate under a symmetric prior worth [`BT_PRIOR_BATTLES`]
/// pseudo-battles, half of them won: `p = (won + ε/2) / (total + ε)`. The rating difference is
/// `400 · log10(p / (1 − p))`, the opponent anchored at 1000. `None` when there is no battle.
pub fn bt_fit(battles: Battles) -> Option<BtFit> {
    if !battles.total.is_finite() || battles.total <= 0.0 {
        return None;
    }
    let p = (battles.won + BT_PRIOR_BATTLES / 2.0) / (battles.total + BT_PRIOR_BATTLES);
    let diff = BT_SCALE * (p / (1.0 - p)).log(BT_BASE);
    Some(BtFit {
        model_rating: BT_ANCHOR + diff,
        opponent_rating: BT_ANCHOR,
        win_prob: p,
    })
}

/// Bradley–Terry fit over the games of all questions (one `Vec` of games per question); see
/// [`Battles::from_game`] for the battle weights and [`bt_fit`] for the fit. `None` when no
/// game is parsable.
pub fn bradley_terry(games: &[Vec<GameVerdict>]) -> Option<BtFit> {
    let battles = games
        .iter()
        .map(|q| Battles::from_games(q))
        .fold(Battles::default(), Battles::plus);
    bt_fit(battles)
}

/// 95% percentile-bootstrap CI of the Bradley–Terry win probability: questions are resampled
/// with replacement (ChaCha8Rng seeded with `seed`), refitted, and the 2.5% / 97.5% quantiles of
/// `win_prob` are returned (see [`quantile`]). Resamples without any parsable game are skipped.
/// `None` when the full set has no parsable game; `(p, p)` with one question or no resamples.
pub fn bootstrap_bt_ci(games_per_question: &[Vec<GameVerdict>], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    let point = bradley_terry(games_per_question)?.win_prob;
    let n = games_per_question.len();
    if n < 2 || resamples == 0 {
        return Some((point, point));
    }
    let per_question: Vec<Battles> = games_per_question.iter().map(|q| Battles::from_games(q)).collect();
    let probs = bootstrap(n, resamples, seed, |indices| {
        let battles = indices
            .iter()
            .map(|&i| per_question[i])
            .fold(Battles::default(), Battles::plus);
        bt_fit(battles).map(|fit| fit.win_prob)
    });
    Some(percentile_interval(probs).unwrap_or((point, point)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::verdict::{Label, Position};

    fn g(model_position: Position, label: Label) -> GameVerdict {
        GameVerdict {
            model_position,
            label: Some(label),
        }
    }

    #[test]
    fn tally_rates_and_score() {
        let t = Tally::from_outcomes(&[Outcome::Win, Outcome::Win, Outcome::Tie, Outcome::Loss]);
        assert_eq!(
            t,
            Tally {
                n: 4,
                wins: 2,
                ties: 1,
                losses: 1
            }
        );
        assert_eq!(t.win_rate(), 0.5);
        assert_eq!(t.tie_rate(), 0.25);
        assert_eq!(t.loss_rate(), 0.25);
        assert_eq!(t.score(), 0.625);
        let empty = Tally::default();
        assert_eq!((empty.score(), empty.win_rate()), (0.0, 0.0));
    }

    #[test]
    fn quantile_interpolates() {
        let v = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.0), Some(0.0));
        assert_eq!(quantile(&v, 1.0), Some(4.0));
        assert_eq!(quantile(&v, 0.5), Some(2.0));
        assert_eq!(quantile(&v, 0.125), Some(0.5));
        assert_eq!(quantile(&[7.0], 0.3), Some(7.0));
        assert_eq!(quantile(&[], 0.3), None);
    }

    fn outcomes(wins: usize, ties: usize, losses: usize) -> Vec<Outcome> {
        let mut v = vec![Outcome::Win; wins];
        v.extend(vec![Outcome::Tie; ties]);
        v.extend(vec![Outcome::Loss; losses]);
        v
    }

    #[test]
    fn score_ci_contains_point_and_is_deterministic() {
        let o = outcomes(12, 5, 8);
        let score = Tally::from_outcomes(&o).score();
        let (lo, hi) = bootstrap_score_ci(&o, 1000, 7);
        assert!(lo < score && score < hi, "{lo} {score} {hi}");
        assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi));
        assert_eq!(bootstrap_score_ci(&o, 1000, 7), (lo, hi));
        assert_ne!(bootstrap_score_ci(&o, 1000, 8), (lo, hi));
    }

    #[test]
    fn score_ci_narrows_with_more_questions() {
        let small = outcomes(6, 2, 4);
        let large = outcomes(60, 20, 40);
        let (a, b) = bootstrap_score_ci(&small, 1000, 1);
        let (c, d) = bootstrap_score_ci(&large, 1000, 1);
        assert!(d - c < (b - a) / 2.0, "{a} {b} {c} {d}");
    }

    #[test]
    fn score_ci_degenerate_inputs() {
        assert_eq!(bootstrap_score_ci(&[], 1000, 1), (0.0, 0.0));
        assert_eq!(bootstrap_score_ci(&[Outcome::Tie], 1000, 1), (0.5, 0.5));
        assert_eq!(bootstrap_score_ci(&outcomes(1, 0, 1), 0, 1), (0.5, 0.5));
        assert_eq!(bootstrap_score_ci(&outcomes(3, 0, 0), 100, 1), (1.0, 1.0));
    }

    #[test]
    fn battle_weights() {
        let b = |pos, label| Battles::from_game(&g(pos, label));
        assert_eq!(b(Position::A, Label::AMuchBetter), Battles { won: 3.0, total: 3.0 });
        assert_eq!(b(Position::B, Label::AMuchBetter), Battles { won: 0.0, total: 3.0 });
        assert_eq!(b(Position::B, Label::BBetter), Battles { won: 1.0, total: 1.0 });
        assert_eq!(b(Position::A, Label::BBetter), Battles { won: 0.0, total: 1.0 });
        assert_eq!(b(Position::A, Label::Tie), Battles { won: 0.5, total: 1.0 });
        let none = GameVerdict {
            model_position: Position::A,
            label: None,
        };
        assert_eq!(Battles::from_game(&none), Battles::default());
    }

    #[test]
    fn bt_equal_wins_and_losses_is_even() {
        let q = vec![vec![g(Position::A, Label::ABetter), g(Position::B, Label::BMuchBetter)]];
        let q2 = vec![vec![g(Position::A, Label::BBetter), g(Position::B, Label::AMuchBetter)]];
        let all: Vec<_> = q.into_iter().chain(q2).collect();
        let fit = bradley_terry(&all).unwrap();
        assert!((fit.win_prob - 0.5).abs() < 1e-12);
        assert!((fit.model_rating - 1000.0).abs() < 1e-9);
        assert_eq!(fit.opponent_rating, 1000.0);
    }

    #[test]
    fn bt_all_strong_wins_is_finite() {
        let q = vec![g(Position::A, Label::AMuchBetter), g(Position::B, Label::BMuchBetter)];
        let fit = bradley_terry(&vec![q; 10]).unwrap();
        assert!(fit.win_prob > 0.999 && fit.win_prob < 1.0);
        assert!(fit.model_rating.is_finite() && fit.model_rating > 2000.0);
        let lost = vec![g(Position::A, Label::BMuchBetter)];
        let fit = bradley_terry(&[lost]).unwrap();
        assert!(fit.win_prob > 0.0 && fit.win_prob < 0.01 && fit.model_rating.is_finite());
    }

    #[test]
    fn bt_known_case() {
        // 3 slight wins, 1 slight loss → p = 0.75 (up to the tiny prior), diff = 400·log10(3).
        let games = vec![
            vec![g(Position::A, Label::ABetter), g(Position::B, Label::BBetter)],
            vec![g(Position::A, Label::ABetter), g(Position::B, Label::ABetter)],
        ];
        let fit = bradley_terry(&games).unwrap();
        assert!((fit.win_prob - 0.75).abs() < 1e-4, "{}", fit.win_prob);
        assert!((fit.model_rating - fit.opponent_rating - 400.0 * 3f64.log10()).abs() < 0.1);
        // The logistic model reproduces the win probability from the ratings.
        let p = 1.0 / (1.0 + 10f64.powf((fit.opponent_rating - fit.model_rating) / 400.0));
        assert!((p - fit.win_prob).abs() < 1e-12);
        // Exact closed form without the prior's pseudo-battles.
        let exact = (3.0 + BT_PRIOR_BATTLES / 2.0) / (4.0 + BT_PRIOR_BATTLES);
        assert!((fit.win_prob - exact).abs() < 1e-15);
    }

    #[test]
    fn bt_none_without_parsable_games() {
        let none = GameVerdict {
            model_position: Position::A,
            label: None,
        };
        assert_eq!(bradley_terry(&[vec![none, none]]), None);
        assert_eq!(bradley_terry(&[]), None);
        assert_eq!(bootstrap_bt_ci(&[vec![none]], 100, 1), None);
    }

    #[test]
    fn bt_ci_contains_point_and_is_deterministic() {
        let win = vec![g(Position::A, Label::ABetter), g(Position::B, Label::BBetter)];
        let loss = vec![g(Position::A, Label::BMuchBetter), g(Position::B, Label::Tie)];
        let none = vec![GameVerdict {
            model_position: Position::A,
            label: None,
        }];
        let mut qs = vec![win; 9];
        qs.extend(vec![loss; 5]);
        qs.extend(vec![none; 2]);
        let p = bradley_terry(&qs).unwrap().win_prob;
        let (lo, hi) = bootstrap_bt_ci(&qs, 500, 3).unwrap();
        assert!(lo < p && p < hi, "{lo} {p} {hi}");
        assert_eq!(bootstrap_bt_ci(&qs, 500, 3), Some((lo, hi)));
        assert_ne!(bootstrap_bt_ci(&qs, 500, 4), Some((lo, hi)));
        let single = bradley_terry(&qs[..1]).unwrap().win_prob;
        assert_eq!(bootstrap_bt_ci(&qs[..1], 500, 3), Some((single, single)));
        assert_eq!(bootstrap_bt_ci(&qs, 0, 3), Some((p, p)));
    }
}
