//! Verdict labels of a pairwise judgment, found anywhere in the judge's reply as the official
//! CodeArena / arena-hard scripts find them: every `[[X]]` with `X` made of `A`, `B`, `<`, `>`,
//! `=` (their regex `\[\[([AB<>=]+)\]\]`) is a candidate; one distinct candidate is the verdict,
//! two different ones (even `[[A>B]]` and its mirror `[[B<A]]`) make the reply unparsable. The
//! five labels `A>>B`, `A>B`, `A=B`, `B>A`, `B>>A` and their mirrors `B<<A`, `B<A`, `B=A`,
//! `A<B`, `A<<B` score as the official code scores them; any other candidate scores nothing.

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

    /// The label a candidate's text names, mirrored forms included.
    pub fn from_candidate(s: &str) -> Option<Self> {
        Some(match s {
            "A>>B" | "B<<A" => Label::AMuchBetter,
            "A>B" | "B<A" => Label::ABetter,
            "A=B" | "B=A" => Label::Tie,
            "B>A" | "A<B" => Label::BBetter,
            "B>>A" | "A<<B" => Label::BMuchBetter,
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

/// The verdict candidates of a reply, left to right: the insides of every non-overlapping
/// `[[X]]` with `X` one or more of `A`, `B`, `<`, `>`, `=` (what Python's `re.findall` gives for
/// the official pattern).
pub fn candidates(text: &str) -> Vec<&str> {
    let is_label_char = |c: u8| matches!(c, b'A' | b'B' | b'<' | b'>' | b'=');
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'[' && bytes[i + 1] == b'[' {
            let start = i + 2;
            let mut end = start;
            while end < bytes.len() && is_label_char(bytes[end]) {
                end += 1;
            }
            if end > start && bytes[end..].starts_with(b"]]") {
                out.push(&text[start..end]);
                i = end + 2;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// The verdict of a judge reply: the label of its one distinct candidate; `None` (unparsable)
/// with no candidate, with two different ones, or with one that names no label.
pub fn parse_label(text: &str) -> Option<Label> {
    verdict(&candidates(text))
}

/// The verdict of a reply's candidates (from any pattern): the label of the one distinct
/// candidate; `None` with none, with two different ones, or with one that names no label.
pub fn verdict(found: &[&str]) -> Option<Label> {
    let first = *found.first()?;
    if found.iter().any(|c| *c != first) {
        return None;
    }
    Label::from_candidate(first)
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
        // As the official scripts count: any second distinct candidate, even a mirror or a
        // non-label, makes the reply unparsable.
        assert_eq!(parse_label("[[A>>>B]] then [[A>B]]"), None);
        assert_eq!(parse_label("[[A>B]], i.e. [[B<A]]"), None);
        assert_eq!(parse_label("[[note]] then [[B>>A]]"), Some(Label::BMuchBetter));
        assert_eq!(parse_label("[[[A=B]]]"), Some(Label::Tie));
    }

    #[test]
    fn mirrored_labels_score_as_the_official_code_scores_them() {
        for (text, label) in [
            ("B<<A", Label::AMuchBetter),
            ("B<A", Label::ABetter),
            ("B=A", Label::Tie),
            ("A<B", Label::BBetter),
            ("A<<B", Label::BMuchBetter),
        ] {
            assert_eq!(
                parse_label(&format!("My final verdict is [[{text}]].")),
                Some(label),
                "{text}"
            );
        }
        assert_eq!(candidates("[[[A=B]]] [[x]] [[]] [[A<B]"), vec!["A=B"]);
    }

    #[test]
    fn points_follow_the_position() {
        assert_eq!(Position::A.points(Label::AMuchBetter), 2);
        assert_eq!(Position::B.points(Label::AMuchBetter), -2);
        assert_eq!(Position::B.points(Label::BBetter), 1);
        assert_eq!(Position::A.points(Label::Tie), 0);
    }
}
