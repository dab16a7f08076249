//! Reading the generator's and the scorer's replies strictly: a question must come as
//! `LANGUAGE:` and `QUESTION:` (or the word `SKIP`), a score as exactly one `SCORE: N` line
//! (1–10, `N/10` accepted) and a non-empty `REASON:` line. Anything else is unparsable, never
//! guessed at.

/// What the generator made of a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Instruction {
    Question { language: String, question: String },
    Skip,
}

/// The question in an instruct reply, or why there is none.
pub fn parse_instruction(reply: &str) -> Result<Instruction, String> {
    let text = reply.trim();
    if text.eq_ignore_ascii_case("skip") {
        return Ok(Instruction::Skip);
    }
    let mut lines = text.lines();
    let language = lines
        .by_ref()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| strip_label(l, "LANGUAGE"))
        .map(|l| l.trim().to_ascii_lowercase())
        .ok_or("no LANGUAGE: line first")?;
    if language.is_empty() || language.contains(char::is_whitespace) {
        return Err(format!("LANGUAGE must be one word, not {language:?}"));
    }
    let label = lines.next().ok_or("no QUESTION: line")?;
    let inline = strip_label(label, "QUESTION").ok_or("no QUESTION: line after LANGUAGE:")?;
    let mut question = inline.trim().to_string();
    for l in lines {
        if !question.is_empty() {
            question.push('\n');
        }
        question.push_str(l);
    }
    let question = question.trim().to_string();
    if question.is_empty() {
        return Err("the question is empty".into());
    }
    Ok(Instruction::Question { language, question })
}

/// `line` without its `LABEL:` prefix (case-insensitive, `**` markdown bold tolerated).
fn strip_label<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    let l = line.trim().trim_start_matches("**");
    let (head, rest) = l.split_once(':')?;
    (head.trim().trim_end_matches("**").eq_ignore_ascii_case(label)).then(|| rest.trim_start_matches("**"))
}

/// A scorer's verdict on one candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Score {
    pub score: u32,
    pub reason: String,
}

/// The score in a scorer reply, or what is wrong with the reply.
pub fn parse_score(reply: &str) -> Result<Score, String> {
    let mut score = None;
    let mut reason = None;
    for line in reply.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(v) = strip_label(line, "SCORE") {
            if score.is_some() {
                return Err("more than one SCORE line".into());
            }
            let v = v.trim();
            let v = v
                .strip_suffix("/10")
                .or_else(|| v.strip_suffix("/ 10"))
                .unwrap_or(v)
                .trim();
            let n: u32 = v.parse().map_err(|_| format!("SCORE {v:?} is not an integer"))?;
            if !(1..=10).contains(&n) {
                return Err(format!("SCORE {n} is outside 1..=10"));
            }
            score = Some(n);
        } else if let Some(r) = strip_label(line, "REASON") {
            reason = Some(r.trim().to_string());
        } else {
            return Err(format!(
                "an unexpected line: {:?}",
                line.chars().take(80).collect::<String>()
            ));
        }
    }
    match (score, reason) {
        (Some(score), Some(reason)) if !reason.is_empty() => Ok(Score { score, reason }),
        (None, _) => Err("no SCORE line".into()),
        _ => Err("no REASON".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_parse_strictly() {
        assert_eq!(
            parse_instruction("LANGUAGE: Python\nQUESTION:\nWrite f.\nIt adds.").unwrap(),
            Instruction::Question {
                language: "python".into(),
                question: "Write f.\nIt adds.".into()
            }
        );
        assert_eq!(parse_instruction(" skip \n").unwrap(), Instruction::Skip);
        assert!(parse_instruction("Here is a question: write f").is_err());
        assert!(parse_instruction("LANGUAGE: python\nQUESTION:\n  ").is_err());
        assert!(parse_instruction("LANGUAGE: visual basic\nQUESTION: x").is_err());
    }

    #[test]
    fn scores_parse_strictly() {
        assert_eq!(
            parse_score("SCORE: 8\nREASON: correct and clear.").unwrap(),
            Score {
                score: 8,
                reason: "correct and clear.".into()
            }
        );
        assert_eq!(parse_score("**Score:** 9/10\n**Reason:** fine").unwrap().score, 9);
        for bad in [
            "I'd say 8 out of 10",
            "SCORE: eight\nREASON: x",
            "SCORE: 11\nREASON: x",
            "SCORE: 7",
            "SCORE: 7\nSCORE: 8\nREASON: x",
            "SCORE: 7\nREASON: x\nAlso, nice.",
        ] {
            assert!(parse_score(bad).is_err(), "{bad}");
        }
    }
}
