//! The prompts of the pipeline: the project's own wording, each replaceable by a file
//! (`[prompts]`). Placeholders `{page}`, `{language}`, `{question}`, `{answer}` are filled in one
//! pass, so text that itself contains a placeholder is never expanded again.

use super::config::PromptFiles;
use anyhow::{Context, Result};

const INSTRUCT: &str = "You write programming exercises from web pages. Read the page below and write one \
self-contained programming question grounded in its topic and code, in the programming language the page uses. \
The question must give everything needed to answer it: never refer to \"the page\" or \"the article\".

Reply in exactly this format:
LANGUAGE: <the programming language, one lowercase word>
QUESTION:
<the question>

If the page offers nothing to build a programming question from, reply with the single word SKIP.

PAGE:
{page}";

const RESPOND: &str = "{question}";

const SCORE: &str = "Rate the answer to the programming question below from 1 to 10 for correctness, completeness \
and clarity (10: correct, complete and clear; 1: wrong or unusable).

QUESTION:
{question}

ANSWER:
{answer}

Reply in exactly this format and nothing else:
SCORE: <an integer from 1 to 10>
REASON: <one sentence>";

const TESTS: &str = "Write tests for answers to the {language} programming question below: code that is appended \
to an answer's code and fails (raises, or exits with a non-zero status) when the answer is wrong. For Python, write \
top-level assert statements. Use only names the question asks for. Reply with one fenced code block and nothing \
else.

QUESTION:
{question}";

/// What the scorer is told when its reply did not parse.
pub const SCORE_AGAIN: &str = "Your reply did not follow the format. Reply with exactly two lines:\nSCORE: <an \
integer from 1 to 10>\nREASON: <one sentence>";

/// The four prompts in use.
#[derive(Clone, Debug)]
pub struct Prompts {
    pub instruct: String,
    pub respond: String,
    pub score: String,
    pub tests: String,
}

impl Prompts {
    /// The built-in prompts, each replaced by its file when one is given.
    pub fn load(files: &PromptFiles) -> Result<Self> {
        let read = |f: &Option<std::path::PathBuf>, default: &str| -> Result<String> {
            match f {
                Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading the prompt {}", p.display())),
                None => Ok(default.to_string()),
            }
        };
        Ok(Self {
            instruct: read(&files.instruct, INSTRUCT)?,
            respond: read(&files.respond, RESPOND)?,
            score: read(&files.score, SCORE)?,
            tests: read(&files.tests, TESTS)?,
        })
    }
}

/// `template` with each `{name}` of `values` replaced, in one pass.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    'scan: while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        for (name, value) in values {
            if let Some(after) = tail
                .strip_prefix('{')
                .and_then(|t| t.strip_prefix(name))
                .and_then(|t| t.strip_prefix('}'))
            {
                out.push_str(value);
                rest = after;
                continue 'scan;
            }
        }
        out.push('{');
        rest = &tail[1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_fill_once() {
        let t = "Q: {question}\nA: {answer} {other}";
        assert_eq!(
            fill(t, &[("question", "what is {answer}?"), ("answer", "42")]),
            "Q: what is {answer}?\nA: 42 {other}"
        );
    }
}
