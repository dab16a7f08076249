//! A judge configuration in the arena-hard / CodeArena YAML format (the official
//! `judge_config.yaml`): `system_prompt`, `prompt_template` (user-message templates with the
//! fields `{question_1}`, `{answer_1}`, `{answer_2}`), `regex_pattern` (whose first group is a
//! verdict candidate) and `number_of_judgment_attempts`. Other keys of the format (judge model,
//! sampling, model lists) are read and ignored: the official CodeArena script overrides them.
//!
//! Templates are rendered as Python's `str.format(**fields)` renders them: one pass, `{{` and
//! `}}` for literal braces, the values never scanned again. The project carries no official
//! text; the `codearena` protocol reads the official file at run time.

use super::judge_client::ChatMessage;
use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::Deserialize;
use std::path::Path;

/// The keys the protocol uses (others are allowed and ignored).
#[derive(Deserialize)]
struct Keys {
    system_prompt: String,
    prompt_template: Vec<String>,
    regex_pattern: String,
    number_of_judgment_attempts: u32,
}

/// A parsed judge configuration.
#[derive(Clone, Debug)]
pub struct JudgeConfig {
    /// The system message.
    pub system: String,
    /// One user message each, in order.
    pub templates: Vec<String>,
    /// `regex_pattern` as written.
    pub pattern_text: String,
    pattern: Regex,
    /// Requests per game at most: the first, then re-asks while the replies hold no candidate.
    pub attempts: u32,
}

impl JudgeConfig {
    /// Reads and checks a configuration file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the judge config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("judge config {}", path.display()))
    }

    /// Parses and checks the YAML text of a configuration.
    pub fn parse(text: &str) -> Result<Self> {
        let keys: Keys = serde_norway::from_str(text).context("not a judge config in the arena-hard YAML format")?;
        if keys.prompt_template.is_empty() {
            bail!("key `prompt_template`: no template");
        }
        if keys.number_of_judgment_attempts == 0 {
            bail!("key `number_of_judgment_attempts`: must be at least 1");
        }
        let pattern = Regex::new(&keys.regex_pattern).with_context(|| {
            format!(
                "key `regex_pattern`: {:?} is not a regular expression",
                keys.regex_pattern
            )
        })?;
        let cfg = JudgeConfig {
            system: keys.system_prompt,
            templates: keys.prompt_template,
            pattern_text: keys.regex_pattern,
            pattern,
            attempts: keys.number_of_judgment_attempts,
        };
        // Every template must render with the fields a game supplies.
        for (i, t) in cfg.templates.iter().enumerate() {
            py_format(t, &game_fields("", "", "")).with_context(|| format!("key `prompt_template[{i}]`"))?;
        }
        Ok(cfg)
    }

    /// The messages of one game: the system prompt, then one user message per template.
    pub fn render(&self, question: &str, answer_a: &str, answer_b: &str) -> Result<Vec<ChatMessage>> {
        let fields = game_fields(question, answer_a, answer_b);
        let mut out = vec![ChatMessage::system(self.system.clone())];
        for t in &self.templates {
            out.push(ChatMessage::user(py_format(t, &fields)?));
        }
        Ok(out)
    }

    /// The verdict candidates of a reply, as Python's `re.findall` gives them for the pattern
    /// (its first group, or the whole match without groups), empty ones dropped.
    pub fn candidates<'a>(&self, text: &'a str) -> Vec<&'a str> {
        self.pattern
            .captures_iter(text)
            .filter_map(|c| c.get(1).or_else(|| c.get(0)))
            .map(|m| m.as_str())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// The fields the official script passes to the templates.
fn game_fields<'a>(question: &'a str, answer_a: &'a str, answer_b: &'a str) -> [(&'static str, &'a str); 3] {
    [("question_1", question), ("answer_1", answer_a), ("answer_2", answer_b)]
}

/// Python's `template.format(**fields)` for plain named fields: `{name}` is replaced by its
/// value, `{{` and `}}` stand for braces, and anything else Python would refuse (an unknown or
/// positional field, a conversion or format spec, a single `}`) is an error here too.
pub fn py_format(template: &str, fields: &[(&str, &str)]) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().is_some_and(|&(_, n)| n == '{') => {
                chars.next();
                out.push('{');
            }
            '{' => {
                let rest = &template[i + 1..];
                let Some(end) = rest.find('}') else {
                    bail!("a `{{` at byte {i} is never closed");
                };
                let name = &rest[..end];
                let Some((_, value)) = fields.iter().find(|(n, _)| *n == name) else {
                    bail!("unknown field `{{{name}}}` (fields: {})", names(fields));
                };
                out.push_str(value);
                for _ in 0..=end {
                    chars.next();
                }
            }
            '}' if chars.peek().is_some_and(|&(_, n)| n == '}') => {
                chars.next();
                out.push('}');
            }
            '}' => bail!("a single `}}` at byte {i} (write `}}}}` for a brace)"),
            _ => out.push(c),
        }
    }
    Ok(out)
}

fn names(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(n, _)| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration written for these tests in the format of the official file.
    const CONFIG: &str = r#"
name: judgment config file for a test arena
bench_name: test-arena
judge_model: some-judge
temperature: 0
max_tokens: 4096
number_of_judgment_attempts: 2
system_prompt: "You compare two answers.\nEnd with a label such as [[A>B]] or [[B>A]]."
prompt_template: ["<|Q|>\n{question_1}\n\n<|A|>\n{answer_1}\n<|/A|>\n\n<|B|>\n{answer_2}\n<|/B|> {{literal}}"]
regex_pattern: \[\[([AB<>=]+)\]\]
model_list:
  - some-model
"#;

    #[test]
    fn reads_the_format_and_renders_like_python() {
        let c = JudgeConfig::parse(CONFIG).unwrap();
        assert_eq!(c.attempts, 2);
        assert_eq!(
            c.system,
            "You compare two answers.\nEnd with a label such as [[A>B]] or [[B>A]]."
        );
        assert_eq!(c.pattern_text, r"\[\[([AB<>=]+)\]\]");
        let m = c.render("q {answer_1} {{x}}", "first", "second").unwrap();
        assert_eq!(m.len(), 2);
        // Values are inserted literally, never formatted again; `{{` in the template is a brace.
        assert_eq!(
            m[1].content,
            "<|Q|>\nq {answer_1} {{x}}\n\n<|A|>\nfirst\n<|/A|>\n\n<|B|>\nsecond\n<|/B|> {literal}"
        );
        assert_eq!(m[0].role, "system");
    }

    #[test]
    fn candidates_follow_the_pattern_like_findall() {
        let c = JudgeConfig::parse(CONFIG).unwrap();
        assert_eq!(c.candidates("a [[A>B]] b [[x]] [[[B<<A]]] [[A=B]"), vec!["A>B", "B<<A"]);
        let no_group = JudgeConfig::parse(&CONFIG.replace(r"\[\[([AB<>=]+)\]\]", r"V:[AB]")).unwrap();
        assert_eq!(no_group.candidates("V:A then V:B"), vec!["V:A", "V:B"]);
    }

    #[test]
    fn python_format_errors_are_errors() {
        let f = [("a", "1")];
        assert_eq!(py_format("{a}{{}}", &f).unwrap(), "1{}");
        for bad in ["{b}", "{}", "{a!r}", "{a:>3}", "x}y", "{a"] {
            assert!(py_format(bad, &f).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_configs_name_the_key() {
        let e = |text: &str| format!("{:#}", JudgeConfig::parse(text).unwrap_err());
        assert!(e(&CONFIG.replace("number_of_judgment_attempts: 2", "")).contains("number_of_judgment_attempts"));
        assert!(
            e(&CONFIG.replace("number_of_judgment_attempts: 2", "number_of_judgment_attempts: 0"))
                .contains("number_of_judgment_attempts")
        );
        assert!(e(&CONFIG.replace(r"\[\[([AB<>=]+)\]\]", r"([")).contains("regex_pattern"));
        let err = e(&CONFIG.replace("{answer_2}", "{answer_3}"));
        assert!(err.contains("prompt_template[0]") && err.contains("answer_3"), "{err}");
        assert!(e("just text").contains("arena-hard YAML"));
    }
}

/// The re-ask sentence of the official judging script (`judge_models.py`): the one user message
/// it appends, as a string literal, when a reply holds no verdict —
/// `conv.append({"role": "user", "content": "..."})`.
pub fn reask_from_script(text: &str) -> Result<String> {
    let re = Regex::new(r#"conv\.append\(\{\s*"role"\s*:\s*"user"\s*,\s*"content"\s*:\s*"((?:[^"\\]|\\.)*)"\s*\}\)"#)
        .expect("a valid pattern");
    let found: Vec<String> = re.captures_iter(text).map(|c| unescape(&c[1])).collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no re-ask sentence found (a `conv.append({{\"role\": \"user\", \"content\": \"...\"}})` with a literal)"
        ),
        _ => bail!("{} candidate re-ask sentences found; expected one", found.len()),
    }
}

/// A Python double-quoted literal's common escapes undone.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod reask_tests {
    use super::*;

    #[test]
    fn the_reask_literal_is_found_and_unescaped() {
        let script = "conv.append({\"role\": \"user\", \"content\": user_prompt})\n\
                      conv.append({\"role\": \"user\", \"content\": \"say \\\"it\\\" now\"})\n";
        assert_eq!(reask_from_script(script).unwrap(), "say \"it\" now");
        assert!(reask_from_script("print(1)").is_err());
        let twice = format!("{script}{script}");
        assert!(reask_from_script(&twice).is_err());
    }
}
