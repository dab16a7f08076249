//! Verdict labels of a pairwise judgment: `[[A>>B]]`, `[[A>B]]`, `[[A=B]]`, `[[B>A]]`,
//! `[[B>>A]]`, found anywhere in the judge's reply; several different labels make the reply
//! unparsable (as in the official CodeArena / arena-hard scripts).

use serde::{Deserialize, Serialize};

/// One of the five verdicts, from the point of view of the two positions A and B.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Label {
    #[serde(rename = "A>>B")]
    AMuchBetter,
    #[serde(rename = "A>B")]
    ABetter,
    #[serde(rename = "A=B")]
    Tie,
    #[serde(rename = "B>A")]
    BBetter,
    #[serde(rename = "B>>A")]
    BMuchBetter,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::AMuchBetter => "A>>B",
            Label::ABetter => "A>B",
            Label::Tie => "A=B",
            Label::BBetter => "B>A",
            Label::BMuchBetter => "B>>A",
        }
    }

    fn from_inner(s: &str) -> Option<Self> {
        Some(match s {
            "A>>B" => Label::AMuchBetter,
            "A>B" => Label::ABetter,
            "A=B" => Label::Tie,
            "B>A" => Label::BBetter,
            "B>>A" => Label::BMuchBetter,
            _ => return None,
        })
    }

    /// Points for position A: +2, +1, 0, -1, -2.
    pub fn points_for_a(self) -> i32 {
        match self {
            Label::AMuchBetter => 2,
            Label::ABetter => 1,
            Label::Tie => 0,
            Label::BBetter => -1,
            Label::BMuchBetter => -2,
        }
    }
}

/// Which position a model held in a game.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Position {
    A,
    B,
}

impl Position {
    /// Points of the model in this position for `label` (+2 strong win ... -2 strong loss).
    pub fn points(self, label: Label) -> i32 {
        match self {
            Position::A => label.points_for_a(),
            Position::B => -label.points_for_a(),
        }
    }
}

/// The verdict of a judge reply: every `[[...]]` whose inside is made of `A`, `B`, `<`, `>`,
/// `=` is a candidate; the reply has a verdict when all candidates that are labels are the same
/// label. No label, or two different ones, gives `None` (unparsable).
pub fn parse_label(text: &str) -> Option<Label> {
    let mut found: Option<Label> = None;
    let mut rest = text;
    while let Some(start) = rest.find("[[") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("]]") else { break };
        let inner = &after[..end];
        if !inner.is_empty() && inner.chars().all(|c| matches!(c, 'A' | 'B' | '<' | '>' | '=')) {
            if let Some(label) = Label::from_inner(inner) {
                match found {
                    None => found = Some(label),
                    Some(prev) if prev != label => return None,
                    Some(_) => {}
                }
            }
            rest = &after[end + 2..];
        } else {
            // Not a label: look again one character on (a label may start inside, e.g. "[[[A>B]]").
            rest = &rest[start + 1..];
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_label() {
        for l in [
            Label::AMuchBetter,
            Label::ABetter,
            Label::Tie,
            Label::BBetter,
            Label::BMuchBetter,
        ] {
            assert_eq!(
                parse_label(&format!("Reasoning...\n\nMy final verdict is [[{}]].", l.as_str())),
                Some(l)
            );
        }
    }

    #[test]
    fn repeated_same_label_is_fine_different_labels_are_not() {
        assert_eq!(parse_label("[[A>B]] and again [[A>B]]"), Some(Label::ABetter));
        assert_eq!(parse_label("[[A>B]] ... no, [[B>A]]"), None);
        assert_eq!(parse_label("no verdict here"), None);
        assert_eq!(parse_label("[[A>>>B]] is not a label"), None);
        assert_eq!(parse_label("[[note]] then [[B>>A]]"), Some(Label::BMuchBetter));
        assert_eq!(parse_label("[[[A=B]]]"), Some(Label::Tie));
    }

    #[test]
    fn points_follow_the_position() {
        assert_eq!(Position::A.points(Label::AMuchBetter), 2);
        assert_eq!(Position::B.points(Label::AMuchBetter), -2);
        assert_eq!(Position::B.points(Label::BBetter), 1);
        assert_eq!(Position::A.points(Label::Tie), 0);
    }
}
