//! The program a sample is tested as: the problem's setup, the sample's code, then the tests.
//!
//! A sample is one of
//! - a **completion** (a base model continuing the prompt): the prompt, then the completion cut
//!   at the first of the problem's stop tokens;
//! - a **solution** (whole code, as EvalPlus's `solution` field);
//! - a chat **reply**: its code (`extract`). A reply that does not define the entry point
//!   itself (a body, a helper) is appended to the prompt instead. For Java and C#, whose
//!   MultiPL-E tests close the class the prompt opens, a reply that repeats the prompt's
//!   class has its last closing brace removed so the tests close it.

use super::benchmark::Problem;
use super::extract::extract;
use super::language::Language;
use serde::{Deserialize, Serialize};

/// What a model (or a samples file) gave for a problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleText {
    Completion(String),
    Solution(String),
    Reply(String),
}

/// `completion` cut at the first of `stops`.
pub fn truncate_at_stops(completion: &str, stops: &[String]) -> String {
    let cut = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| completion.find(s.as_str()))
        .min()
        .unwrap_or(completion.len());
    completion[..cut].to_string()
}

/// Whether `code` defines the problem's entry point (Python), or repeats the prompt's
/// signature line (other languages).
fn defines(problem: &Problem, code: &str) -> bool {
    match (&problem.entry_point, problem.language) {
        (Some(f), Language::Python) => code.contains(&format!("def {f}(")),
        _ => signature_line(&problem.prompt).is_some_and(|sig| code.contains(sig.trim())),
    }
}

/// The prompt's last non-comment line with a `(`: the function's signature.
fn signature_line(prompt: &str) -> Option<&str> {
    prompt
        .lines()
        .rev()
        .find(|l| l.contains('(') && !l.trim_start().starts_with(['#', '/', '*']))
}

/// The sample's code (what goes between the setup and the tests).
pub fn code_of(problem: &Problem, sample: &SampleText) -> String {
    match sample {
        SampleText::Completion(c) => format!("{}{}", problem.prompt, truncate_at_stops(c, &problem.stop_tokens)),
        SampleText::Solution(s) => s.clone(),
        SampleText::Reply(r) => {
            let code = extract(r, problem.language, problem.entry_point.as_deref());
            if !defines(problem, &code) {
                return format!("{}{}", problem.prompt, code);
            }
            match problem.language {
                Language::Java | Language::CSharp => match code.rfind('}') {
                    Some(i) => code[..i].to_string(),
                    None => code,
                },
                _ => code,
            }
        }
    }
}

/// The whole program of `sample` for `problem`.
pub fn program(problem: &Problem, sample: &SampleText) -> String {
    let code = code_of(problem, sample);
    let mut out = String::new();
    if !problem.setup.is_empty() {
        out.push_str(&problem.setup);
        out.push('\n');
    }
    out.push_str(&code);
    out.push_str("\n\n");
    out.push_str(&problem.tests);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py() -> Problem {
        Problem {
            id: "t/0".into(),
            language: Language::Python,
            prompt: "def add(a, b):\n    \"\"\"Add.\"\"\"\n".into(),
            instruction: String::new(),
            entry_point: Some("add".into()),
            setup: "import math".into(),
            tests: "def check(f):\n    assert f(1, 2) == 3\n\ncheck(add)\n".into(),
            stop_tokens: vec!["\ndef ".into(), "\nif __name__".into()],
            reference: None,
        }
    }

    #[test]
    fn a_completion_is_cut_at_the_first_stop_and_follows_the_prompt() {
        let p = py();
        let s = SampleText::Completion("    return a + b\n\ndef unused():\n    pass\n".into());
        assert_eq!(
            program(&p, &s),
            "import math\ndef add(a, b):\n    \"\"\"Add.\"\"\"\n    return a + b\n\n\ndef check(f):\n    assert f(1, 2) == 3\n\ncheck(add)\n"
        );
    }

    #[test]
    fn a_reply_defining_the_function_stands_alone_and_a_body_follows_the_prompt() {
        let p = py();
        let whole = SampleText::Reply("```python\ndef add(a, b):\n    return a + b\n```".into());
        assert_eq!(code_of(&p, &whole), "def add(a, b):\n    return a + b");
        let body = SampleText::Reply("```python\n    return a + b\n```".into());
        assert_eq!(
            code_of(&p, &body),
            "def add(a, b):\n    \"\"\"Add.\"\"\"\n    return a + b"
        );
    }

    #[test]
    fn a_java_reply_repeating_the_class_leaves_its_closing_brace_to_the_tests() {
        let p = Problem {
            language: Language::Java,
            prompt: "import java.util.*;\nclass Problem {\n    public static long add(long a, long b) {\n".into(),
            entry_point: Some("add".into()),
            setup: String::new(),
            tests: "    public static void main(String[] args) {\n    assert(add(1l, 2l) == 3l);\n    }\n\n}\n".into(),
            ..py()
        };
        let reply = "```java\nimport java.util.*;\nclass Problem {\n    public static long add(long a, long b) {\n        return a + b;\n    }\n}\n```";
        let prog = program(&p, &SampleText::Reply(reply.into()));
        assert_eq!(prog.matches('}').count(), prog.matches('{').count(), "{prog}");
        assert!(
            prog.trim_end().ends_with("}\n\n}") || prog.trim_end().ends_with('}'),
            "{prog}"
        );
    }
}
