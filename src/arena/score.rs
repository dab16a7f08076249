//! CodeArena scoring of one question: each question is judged in two games with the answer
//! positions swapped; the model's points over its games decide a win, a tie or a loss.

use serde::{Deserialize, Serialize};

use crate::arena::verdict::{Label, Position};

/// The judge's verdict on one game, together with the position the evaluated model held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameVerdict {
    /// Position (A or B) of the evaluated model's answer in this game.
    pub model_position: Position,
    /// The parsed verdict; `None` when the judge's reply was unparsable.
    pub label: Option<Label>,
}

impl GameVerdict {
    /// Points of the model in this game (+2 strong win ... -2 strong loss); `None` when unparsable.
    pub fn model_points(&self) -> Option<i32> {
        self.label.map(|label| self.model_position.points(label))
    }
}

/// Result of one question from the model's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Win,
    Tie,
    Loss,
}

impl Outcome {
    /// Contribution to the score: 1 for a win, 0.5 for a tie, 0 for a loss.
    pub fn value(self) -> f64 {
        match self {
            Outcome::Win => 1.0,
            Outcome::Tie => 0.5,
            Outcome::Loss => 0.0,
        }
    }
}

/// Sum of the model's points over the games of one question; unparsable games count 0.
pub fn question_points(games: &[GameVerdict]) -> i32 {
    games.iter().filter_map(GameVerdict::model_points).sum()
}

/// Outcome of a question from its points: > 0 win, 0 tie, < 0 loss.
pub fn outcome(points: i32) -> Outcome {
    match points.cmp(&0) {
        std::cmp::Ordering::Greater => Outcome::Win,
        std::cmp::Ordering::Equal => Outcome::Tie,
        std::cmp::Ordering::Less => Outcome::Loss,
    }
}

/// Outcome of a question from its games: `outcome(question_points(games))`.
pub fn question_outcome(games: &[GameVerdict]) -> Outcome {
    outcome(question_points(games))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn game(model_position: Position, label: Option<Label>) -> GameVerdict {
        GameVerdict { model_position, label }
    }

    #[test]
    fn points_sum_over_swapped_games() {
        // Model is A then B; the judge prefers the model both times.
        let games = [
            game(Position::A, Some(Label::AMuchBetter)),
            game(Position::B, Some(Label::BBetter)),
        ];
        assert_eq!(question_points(&games), 3);
        assert_eq!(question_outcome(&games), Outcome::Win);
        // Position bias: the judge always prefers A → the points cancel.
        let games = [
            game(Position::A, Some(Label::ABetter)),
            game(Position::B, Some(Label::ABetter)),
        ];
        assert_eq!(question_points(&games), 0);
        assert_eq!(question_outcome(&games), Outcome::Tie);
    }

    #[test]
    fn unparsable_games_count_zero() {
        let games = [game(Position::A, None), game(Position::B, Some(Label::AMuchBetter))];
        assert_eq!(question_points(&games), -2);
        assert_eq!(question_outcome(&games), Outcome::Loss);
        assert_eq!(question_points(&[game(Position::A, None), game(Position::B, None)]), 0);
        assert_eq!(question_points(&[]), 0);
    }

    #[test]
    fn outcome_sign() {
        assert_eq!(outcome(1), Outcome::Win);
        assert_eq!(outcome(0), Outcome::Tie);
        assert_eq!(outcome(-4), Outcome::Loss);
    }

    #[test]
    fn outcome_serializes_snake_case() {
        assert_eq!(serde_json::to_string(&Outcome::Win).unwrap(), "\"win\"");
        assert_eq!(serde_json::from_str::<Outcome>("\"loss\"").unwrap(), Outcome::Loss);
        let g = game(Position::B, Some(Label::BMuchBetter));
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(json, r#"{"model_position":"B","label":"B>>A"}"#);
        assert_eq!(serde_json::from_str::<GameVerdict>(&json).unwrap(), g);
    }
}
