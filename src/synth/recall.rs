//! Recall: a cheap filter keeping pages that are about code, before any request is spent on
//! them. A page scores a signal for each of: a fenced code block (3 each, at most 9), each
//! distinct programming keyword or construct it contains (`def `, `fn `, `#include`,
//! `public static`, `SELECT `, `=>`, ...; 1 each), and every 5 lines whose share of code
//! symbols (`{}()[];=<>`) is over 8 % (1 each). A page shorter than `min_chars` or scoring under
//! `min_score` is dropped, with the reason counted.

use super::config::RecallConfig;

/// Keywords and constructs that code tends to have and prose does not.
const KEYWORDS: &[&str] = &[
    "def ",
    "fn ",
    "func ",
    "function ",
    "class ",
    "#include",
    "import ",
    "return ",
    "public static",
    "const ",
    "let ",
    "var ",
    "=>",
    "->",
    "::",
    "println",
    "printf",
    "console.log",
    "SELECT ",
    "std::",
    "async ",
    "await ",
    "lambda",
    "struct ",
    "impl ",
    "package ",
    "#!/",
    "elif ",
    "else {",
    "} else",
];

/// Why a page was not recalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotCode {
    TooShort,
    NoCodeSignals,
}

impl NotCode {
    pub fn reason(self) -> &'static str {
        match self {
            NotCode::TooShort => "recall:too_short",
            NotCode::NoCodeSignals => "recall:no_code_signals",
        }
    }
}

/// The page's code score.
pub fn score(text: &str) -> u32 {
    let fences = (text.matches("```").count() / 2).min(3) as u32 * 3;
    let keywords = KEYWORDS.iter().filter(|k| text.contains(*k)).count() as u32;
    let dense = text
        .lines()
        .filter(|l| {
            let l = l.trim();
            let symbols = l.chars().filter(|c| "{}()[];=<>".contains(*c)).count();
            l.len() >= 8 && symbols * 100 > l.chars().count() * 8
        })
        .count() as u32
        / 5;
    fences + keywords + dense
}

/// Whether `text` is kept.
pub fn recall(text: &str, cfg: &RecallConfig) -> Result<(), NotCode> {
    if text.chars().count() < cfg.min_chars {
        return Err(NotCode::TooShort);
    }
    if score(text) < cfg.min_score {
        return Err(NotCode::NoCodeSignals);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_pages_pass_and_prose_does_not() {
        let cfg = RecallConfig::default();
        let code =
            "How to reverse a list in Python.\n\n```python\ndef rev(xs):\n    return xs[::-1]\n```\n\nThe slice \
                    xs[::-1] makes a reversed copy; list.reverse() works in place and returns None. "
                .repeat(2);
        assert_eq!(recall(&code, &cfg), Ok(()));
        let prose = "The weather in spring is mild and the gardens bloom. Visitors walk along the river and \
                     enjoy the long evenings with friends and family, far from the city noise."
            .repeat(3);
        assert_eq!(recall(&prose, &cfg), Err(NotCode::NoCodeSignals));
        assert_eq!(recall("fn main() {}", &cfg), Err(NotCode::TooShort));
    }
}
