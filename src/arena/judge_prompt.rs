//! The judge prompt: syncoder's own built-in system prompt and user template for a pairwise
//! comparison of two answers to a coding question, loading a replacement from a file, literal
//! single-pass rendering, a stable digest to record which prompt produced a judgment, and the
//! follow-up sent when a reply carries no verdict label.

use std::path::Path;

use anyhow::{bail, Context};

use super::judge_client::ChatMessage;

/// The three placeholders a user template must contain.
pub const PLACEHOLDERS: [&str; 3] = ["{question}", "{answer_a}", "{answer_b}"];

/// The follow-up user turn sent (once) when the judge's reply contains no verdict label.
pub const REASK: &str = "Your reply did not end with a verdict label. Please finish your judgment now: \
reply with exactly one of these five labels, and nothing else: [[A>>B]], [[A>B]], [[A=B]], [[B>A]], [[B>>A]].";

const BUILTIN_SYSTEM: &str = "\
You are a careful, impartial reviewer of programming help. You will see a user's coding question \
and the answers of two assistants, Assistant A and Assistant B. Decide which answer serves the user \
better.

How to judge:
1. Before reading the two answers closely, work out for yourself what a correct, complete answer \
would contain. Use it as a reference, but do not reject a different approach that is also correct.
2. Correctness comes first. Look for bugs, code that would not compile or run, wrong use of APIs, \
wrong complexity claims, unsafe or insecure practices, and statements that are false. A short \
answer that is right beats a long answer that is wrong.
3. Then weigh helpfulness (does it do what the user asked; if the question is ambiguous, does it \
ask or state its assumptions), relevance (does every part bear on the question), and conciseness \
(no padding, no needless repetition).
4. Note any important information that an answer leaves out and that the user would need.

Guard against bias:
- The order of the answers says nothing about their quality; judge as if they had been shown the \
other way round.
- Length is not merit: do not prefer an answer because it is longer or more elaborate.
- Ignore the names of the assistants, and style that does not change the substance.

Explain your reasoning briefly, pointing to concrete mistakes or omissions. Then end your reply \
with exactly one verdict label, written once, from this list:
- [[A>>B]]: Assistant A is significantly better.
- [[A>B]]: Assistant A is slightly better.
- [[A=B]]: the two answers are about equally good (a tie).
- [[B>A]]: Assistant B is slightly better.
- [[B>>A]]: Assistant B is significantly better.
For example: \"My final verdict is [[B>A]].\" Do not write any other label anywhere in your reply.";

const BUILTIN_TEMPLATE: &str = "\
<|User Question|>
{question}

<|Start of Assistant A's Answer|>
{answer_a}
<|End of Assistant A's Answer|>

<|Start of Assistant B's Answer|>
{answer_b}
<|End of Assistant B's Answer|>";

/// A system prompt plus a user template with `{question}`, `{answer_a}` and `{answer_b}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JudgePrompt {
    /// The system message.
    pub system: String,
    /// The user message, with the three placeholders.
    pub template: String,
}

impl JudgePrompt {
    /// syncoder's built-in judge prompt.
    pub fn builtin() -> Self {
        JudgePrompt {
            system: BUILTIN_SYSTEM.to_string(),
            template: BUILTIN_TEMPLATE.to_string(),
        }
    }

    /// Loads a prompt: if the file has a line that is exactly `===`, the text before the first
    /// such line is the system prompt and the text after it the user template; otherwise the whole
    /// file is the user template and the built-in system prompt is kept. Surrounding blank space
    /// of each part is trimmed. The template must contain all three placeholders.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the judge prompt file {}", path.display()))?;
        let mut split = None;
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            if line.trim_end_matches(['\n', '\r']) == "===" {
                split = Some((offset, offset + line.len()));
                break;
            }
            offset += line.len();
        }
        let (system, template) = match split {
            Some((start, end)) => {
                let system = text[..start].trim();
                if system.is_empty() {
                    bail!(
                        "judge prompt file {}: the system prompt before the `===` line is empty",
                        path.display()
                    );
                }
                (system.to_string(), text[end..].trim().to_string())
            }
            None => (BUILTIN_SYSTEM.to_string(), text.trim().to_string()),
        };
        for placeholder in PLACEHOLDERS {
            if !template.contains(placeholder) {
                bail!(
                    "judge prompt file {}: the user template has no {placeholder} placeholder",
                    path.display()
                );
            }
        }
        Ok(JudgePrompt { system, template })
    }

    /// The two messages (system, user) for one game. Placeholders are replaced in one pass over
    /// the template, so text inside the question or the answers is never substituted again.
    pub fn render(&self, question: &str, answer_a: &str, answer_b: &str) -> Vec<ChatMessage> {
        let values = [question, answer_a, answer_b];
        let mut out = String::with_capacity(self.template.len() + question.len() + answer_a.len() + answer_b.len());
        let mut rest = self.template.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let tail = &rest[open..];
            match PLACEHOLDERS.iter().position(|p| tail.starts_with(p)) {
                Some(i) => {
                    out.push_str(values[i]);
                    rest = &tail[PLACEHOLDERS[i].len()..];
                }
                None => {
                    out.push('{');
                    rest = &tail[1..];
                }
            }
        }
        out.push_str(rest);
        vec![ChatMessage::system(self.system.clone()), ChatMessage::user(out)]
    }

    /// A short stable hash of the prompt (FNV-1a 64 over system, a NUL, template), 16 hex digits.
    pub fn digest(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.system.bytes().chain([0u8]).chain(self.template.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::judge_test_server::temp_dir;
    use super::super::verdict::parse_label;
    use super::*;

    #[test]
    fn builtin_prompt_names_every_label_and_renders() {
        let p = JudgePrompt::builtin();
        for label in ["[[A>>B]]", "[[A>B]]", "[[A=B]]", "[[B>A]]", "[[B>>A]]"] {
            assert!(p.system.contains(label) && REASK.contains(label), "{label}");
        }
        for placeholder in PLACEHOLDERS {
            assert!(p.template.contains(placeholder));
        }
        let m = p.render("Q?", "ans A", "ans B");
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].role.as_str(), m[1].role.as_str()), ("system", "user"));
        assert!(m[1].content.contains("Q?") && m[1].content.contains("ans A") && m[1].content.contains("ans B"));
        assert!(!m[1].content.contains('{'));
        // The user message alone has no label, so a judge echoing it cannot confuse the parser.
        assert_eq!(parse_label(&m[1].content), None);
    }

    #[test]
    fn render_is_single_pass_and_literal() {
        let p = JudgePrompt {
            system: "s".into(),
            template: "Q={question} A={answer_a} B={answer_b} {other} {".into(),
        };
        let m = p.render("{answer_a}$1", "{answer_b} \\0", "{question}");
        assert_eq!(m[1].content, "Q={answer_a}$1 A={answer_b} \\0 B={question} {other} {");
    }

    #[test]
    fn digest_is_stable_and_sensitive() {
        let p = JudgePrompt::builtin();
        assert_eq!(p.digest(), JudgePrompt::builtin().digest());
        assert_eq!(p.digest().len(), 16);
        let mut q = p.clone();
        q.template.push(' ');
        assert_ne!(p.digest(), q.digest());
        // Moving text between system and template changes the digest too.
        let a = JudgePrompt {
            system: "ab".into(),
            template: "c".into(),
        };
        let b = JudgePrompt {
            system: "a".into(),
            template: "bc".into(),
        };
        assert_ne!(a.digest(), b.digest());
        // Empty system and template hash the single NUL byte.
        let empty = JudgePrompt {
            system: String::new(),
            template: String::new(),
        };
        assert_eq!(empty.digest(), "af63bd4c8601b7df");
    }

    #[test]
    fn from_file_with_and_without_system_part() {
        let dir = temp_dir("judge-prompt");
        let both = dir.join("both.txt");
        std::fs::write(
            &both,
            "Be a judge.\r\n===\r\nQ: {question}\nA: {answer_a}\nB: {answer_b}\n",
        )
        .unwrap();
        let p = JudgePrompt::from_file(&both).unwrap();
        assert_eq!(p.system, "Be a judge.");
        assert_eq!(p.template, "Q: {question}\nA: {answer_a}\nB: {answer_b}");

        let only = dir.join("only.txt");
        std::fs::write(
            &only,
            "Q: {question} ==== not a separator\nA: {answer_a}\nB: {answer_b}\n",
        )
        .unwrap();
        let p = JudgePrompt::from_file(&only).unwrap();
        assert_eq!(p.system, JudgePrompt::builtin().system);
        assert!(p.template.starts_with("Q: {question} ===="));

        let missing = dir.join("missing.txt");
        std::fs::write(&missing, "sys\n===\nQ: {question}\nA: {answer_a}\n").unwrap();
        let err = JudgePrompt::from_file(&missing).unwrap_err().to_string();
        assert!(err.contains("{answer_b}") && err.contains("missing.txt"), "{err}");

        let err = JudgePrompt::from_file(&dir.join("absent.txt")).unwrap_err().to_string();
        assert!(err.contains("absent.txt"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
