//! `{% generation %}…{% endgeneration %}` in chat templates: the blocks transformers'
//! `apply_chat_template(..., return_assistant_tokens_mask=True)` (and TRL's assistant-only loss)
//! uses to mark the text of each assistant turn that is trained on.
//!
//! minijinja has no such statement, so before parsing, each tag is rewritten into a statement it
//! has that prints one private-use character — `{%L generation R%}` becomes
//! `{%L if true %}{{ "\u{E000}" }}{% endif R%}` (and `endgeneration` prints `\u{E001}`). The
//! rewrite keeps the tag's whitespace control (`-`/`+`) on the outer side and the same block
//! boundaries, so `trim_blocks` and `lstrip_blocks` strip exactly what they strip around the
//! original tag. After rendering, `extract` removes the markers and returns the byte ranges they
//! enclosed; a conversation that itself contains a marker character is refused, so no text can
//! forge a span.

use anyhow::{bail, Result};
use std::ops::Range;

/// Printed where a generation block opens / closes.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// `source` with its generation tags rewritten, and whether it had any.
pub fn rewrite(source: &str) -> (String, bool) {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    let mut found = false;
    while let Some(at) = rest.find("{%") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        match parse_tag(tail) {
            Some(tag) => {
                let marker = if tag.close { CLOSE } else { OPEN };
                out.push_str(&format!(
                    "{{%{} if true %}}{{{{ \"{marker}\" }}}}{{% endif {}%}}",
                    tag.left, tag.right
                ));
                rest = &tail[tag.len..];
                found = true;
            }
            None => {
                out.push_str("{%");
                rest = &tail[2..];
            }
        }
    }
    out.push_str(rest);
    (out, found)
}

/// A generation tag at the start of a string.
struct Tag<'a> {
    /// Whitespace control after `{%` and before `%}` (`""`, `"-"` or `"+"`).
    left: &'a str,
    right: &'a str,
    close: bool,
    /// Bytes the tag spans.
    len: usize,
}

/// `{%[-+]? generation|endgeneration [-+]?%}` at the start of `s`.
fn parse_tag(s: &str) -> Option<Tag<'_>> {
    let body = s.strip_prefix("{%")?;
    let left = control(body);
    let after_left = body[left.len()..].trim_start();
    let (close, after_name) = if let Some(r) = after_left.strip_prefix("endgeneration") {
        (true, r)
    } else {
        (false, after_left.strip_prefix("generation")?)
    };
    // The name must end here (not `generation_prompt` or `generationfoo`).
    if after_name.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
        return None;
    }
    let before_right = after_name.trim_start();
    let right = control(before_right);
    let end = before_right[right.len()..].strip_prefix("%}")?;
    Some(Tag {
        left,
        right,
        close,
        len: s.len() - end.len(),
    })
}

/// The whitespace-control sign at the start of `s`, if any.
fn control(s: &str) -> &str {
    match s.as_bytes().first() {
        Some(b'-') | Some(b'+') => &s[..1],
        _ => "",
    }
}

/// Refuses inputs that contain a marker character (they would forge or break a span).
pub fn check_input(text: &str, what: &str) -> Result<()> {
    if text.contains([OPEN, CLOSE]) {
        bail!(
            "{what} contains U+E000 or U+E001, the private-use characters syncoder reserves for marking \
             {{% generation %}} blocks"
        );
    }
    Ok(())
}

/// The rendered text without its markers, and the byte ranges of it each generation block
/// enclosed, in order.
pub fn extract(marked: &str) -> Result<(String, Vec<Range<usize>>)> {
    let mut text = String::with_capacity(marked.len());
    let mut spans = vec![];
    let mut open: Option<usize> = None;
    for c in marked.chars() {
        match c {
            OPEN => {
                if open.is_some() {
                    bail!("the chat template opens a {{% generation %}} block inside another");
                }
                open = Some(text.len());
            }
            CLOSE => match open.take() {
                Some(start) => spans.push(start..text.len()),
                None => bail!("the chat template closes a {{% generation %}} block it did not open"),
            },
            c => text.push(c),
        }
    }
    if open.is_some() {
        bail!("the chat template leaves a {{% generation %}} block open");
    }
    Ok((text, spans))
}

/// `marked` without its markers (for inference, which ignores the blocks).
pub fn strip(marked: &str) -> String {
    marked.chars().filter(|&c| c != OPEN && c != CLOSE).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_rewritten_with_their_whitespace_control() {
        let (out, found) = rewrite("a{%- generation %}b{% endgeneration -%}c{%generation%}d{%+endgeneration+%}");
        assert!(found);
        assert_eq!(
            out,
            "a{%- if true %}{{ \"\u{E000}\" }}{% endif %}b{% if true %}{{ \"\u{E001}\" }}{% endif -%}c\
             {% if true %}{{ \"\u{E000}\" }}{% endif %}d{%+ if true %}{{ \"\u{E001}\" }}{% endif +%}"
        );
    }

    #[test]
    fn other_statements_and_names_that_start_alike_are_left_alone() {
        let src = "{% if add_generation_prompt %}x{% endif %}{% generation_prompt %}{% set generation = 1 %}{%";
        assert_eq!(rewrite(src), (src.to_string(), false));
    }

    #[test]
    fn markers_become_byte_ranges() {
        let (text, spans) = extract("ab\u{E000}cé\u{E001}d\u{E000}\u{E001}").unwrap();
        assert_eq!(text, "abcéd");
        assert_eq!(spans, vec![2..5, 6..6]);
        assert!(extract("\u{E000}a\u{E000}").is_err());
        assert!(extract("a\u{E001}").is_err());
        assert!(extract("\u{E000}a").is_err());
        assert_eq!(strip("a\u{E000}b\u{E001}"), "ab");
        assert!(check_input("x\u{E001}", "message 0").is_err());
        assert!(check_input("plain", "message 0").is_ok());
    }
}
