//! The execution benchmarks and their problems, read from the datasets' own schemas (local
//! JSONL / JSONL.gz / Parquet files, or `hf://datasets/...` through the Hub cache):
//!
//! | benchmark | default source | fields read | tests |
//! |---|---|---|---|
//! | `humaneval` | `openai/openai_humaneval` | `task_id`, `prompt`, `entry_point`, `test`, `canonical_solution` | `test` defines `check(candidate)`; `check(ENTRY_POINT)` is called |
//! | `humaneval+` | `evalplus/humanevalplus` | the same | its `test` (the base and the extra inputs together) |
//! | `mbpp` | `evalplus/mbppplus` (EvalPlus's MBPP: its problems, their original asserts) | `task_id`, `prompt`, `code`, `test_imports`, `test_list` | the `test_list` asserts, after `test_imports` |
//! | `mbpp+` | `evalplus/mbppplus` | `task_id`, `prompt`, `code`, `test_imports`, `test` | its `test` program (base and extra inputs) |
//! | `multipl-e-LANG` | `nuprl/MultiPL-E`, config `humaneval-LANG` | `name`, `language`, `prompt`, `tests`, `stop_tokens` | `tests` appended to the program |
//!
//! `mbpp` also reads the original dataset's schema (`google-research-datasets/mbpp`: `text`,
//! `code`, `test_list`, `test_setup_code`) when its records have `text`. A record without a
//! field its benchmark needs is an error naming the file, line and field.

use super::language::Language;
use crate::data::shard::{resolve_sources, ShardLines};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Benchmark {
    HumanEval,
    HumanEvalPlus,
    Mbpp,
    MbppPlus,
    /// MultiPL-E's translation of HumanEval into a language.
    MultiPlE(Language),
}

impl Benchmark {
    /// `humaneval`, `humaneval+`, `mbpp`, `mbpp+`, `multipl-e-LANG` (LANG as MultiPL-E names it:
    /// `cpp`, `java`, `js`, `ts`, `php`, `sh`, `cs`, `rs`, `go`, `py`).
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "humaneval" => Self::HumanEval,
            "humaneval+" | "humanevalplus" => Self::HumanEvalPlus,
            "mbpp" => Self::Mbpp,
            "mbpp+" | "mbppplus" => Self::MbppPlus,
            other => match other.strip_prefix("multipl-e-") {
                Some(lang) => Self::MultiPlE(Language::parse(lang)?),
                None => bail!(
                    "--benchmark {name:?}: one of humaneval, humaneval+, mbpp, mbpp+, multipl-e-LANG (LANG: cpp, java, \
                     js, ts, php, sh, cs, rs, go, py)"
                ),
            },
        })
    }

    pub fn name(self) -> String {
        match self {
            Self::HumanEval => "humaneval".into(),
            Self::HumanEvalPlus => "humaneval+".into(),
            Self::Mbpp => "mbpp".into(),
            Self::MbppPlus => "mbpp+".into(),
            Self::MultiPlE(l) => format!("multipl-e-{}", l.multipl_e_name()),
        }
    }

    pub fn language(self) -> Language {
        match self {
            Self::MultiPlE(l) => l,
            _ => Language::Python,
        }
    }

    /// Where its problems are when `--problems` is not given.
    pub fn default_source(self) -> String {
        match self {
            Self::HumanEval => "hf://datasets/openai/openai_humaneval".into(),
            Self::HumanEvalPlus => "hf://datasets/evalplus/humanevalplus".into(),
            Self::Mbpp | Self::MbppPlus => "hf://datasets/evalplus/mbppplus".into(),
            Self::MultiPlE(l) => format!("hf://datasets/nuprl/MultiPL-E/humaneval-{}/*", l.multipl_e_name()),
        }
    }
}

/// One problem: what a model is asked, and how its answer is tested.
#[derive(Clone, Debug)]
pub struct Problem {
    pub id: String,
    pub language: Language,
    /// The code a completion continues (a signature and its docstring or comment).
    pub prompt: String,
    /// The problem as an instruct model is asked it (the prompt for HumanEval-style problems;
    /// MBPP's statement with one of its tests).
    pub instruction: String,
    /// The function the tests call.
    pub entry_point: Option<String>,
    /// Code the tests need before the solution (imports).
    pub setup: String,
    /// The test code appended after the solution.
    pub tests: String,
    /// Where a base model's completion ends (MultiPL-E's, EvalPlus's for Python).
    pub stop_tokens: Vec<String>,
    /// The dataset's reference solution, when it has one.
    pub reference: Option<String>,
}

/// Where a completion of a Python function ends (EvalPlus / Codex's stop sequences).
pub const PYTHON_STOPS: [&str; 5] = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert "];

/// The problems of `bench` from `src` (files, directories, globs or `hf://datasets/...`).
pub fn load(bench: Benchmark, src: &str) -> Result<Vec<Problem>> {
    let files = resolve_sources(&[PathBuf::from(src)]).with_context(|| format!("the problems of {}", bench.name()))?;
    let mut out = Vec::new();
    for file in files {
        let lines = ShardLines::open_any(&file)?;
        for line in lines {
            let line = line?;
            let at = format!("{}:{}", file.display(), line.line);
            let rec: serde_json::Map<String, Value> =
                serde_json::from_str(&line.text).with_context(|| format!("{at}: not a JSON object"))?;
            out.push(problem(bench, &rec).with_context(|| format!("{at}: not a {} problem", bench.name()))?);
        }
    }
    if out.is_empty() {
        bail!("{src}: no problems");
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(p) = out.iter().find(|p| !seen.insert(p.id.clone())) {
        bail!("{src}: problem {:?} appears twice", p.id);
    }
    Ok(out)
}

fn text(rec: &serde_json::Map<String, Value>, key: &str) -> Result<String> {
    match rec.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => bail!("field `{key}` is {other}, not a string"),
        None => bail!("no field `{key}`"),
    }
}

fn opt_text(rec: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>> {
    match rec.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => text(rec, key).map(Some),
    }
}

fn strings(rec: &serde_json::Map<String, Value>, key: &str) -> Result<Vec<String>> {
    match rec.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => bail!("field `{key}` holds {other}, not a string"),
            })
            .collect(),
        None | Some(Value::Null) => Ok(vec![]),
        Some(other) => bail!("field `{key}` is {other}, not a list of strings"),
    }
}

fn problem(bench: Benchmark, rec: &serde_json::Map<String, Value>) -> Result<Problem> {
    let stops = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Ok(match bench {
        Benchmark::HumanEval | Benchmark::HumanEvalPlus => {
            let prompt = text(rec, "prompt")?;
            let entry = text(rec, "entry_point")?;
            Problem {
                id: text(rec, "task_id")?,
                language: Language::Python,
                instruction: prompt.clone(),
                tests: format!("{}\n\ncheck({entry})\n", text(rec, "test")?),
                reference: opt_text(rec, "canonical_solution")?.map(|s| format!("{prompt}{s}")),
                prompt,
                entry_point: Some(entry),
                setup: String::new(),
                stop_tokens: stops(&PYTHON_STOPS),
            }
        }
        Benchmark::Mbpp | Benchmark::MbppPlus => {
            let asserts = strings(rec, "test_list")?;
            let original = rec.contains_key("text");
            let statement = if original {
                text(rec, "text")?
            } else {
                text(rec, "prompt")?
            };
            let code = text(rec, "code")?;
            let entry = asserts
                .first()
                .and_then(|a| called_function(a))
                .or_else(|| defined_function(&code));
            let setup = if original {
                opt_text(rec, "test_setup_code")?.unwrap_or_default()
            } else {
                strings(rec, "test_imports")?.join("\n")
            };
            let tests = match bench {
                Benchmark::MbppPlus => text(rec, "test")?,
                _ if asserts.is_empty() => bail!("no field `test_list` (or it is empty)"),
                _ => asserts.join("\n") + "\n",
            };
            // EvalPlus asks for the function with one of the original tests as an example.
            let example = asserts.first().cloned().unwrap_or_default();
            let instruction = format!("\"\"\"\n{}\n{example}\n\"\"\"\n", statement.trim());
            Problem {
                id: text(rec, "task_id")?,
                language: Language::Python,
                prompt: instruction.clone(),
                instruction,
                entry_point: entry,
                setup,
                tests,
                stop_tokens: stops(&PYTHON_STOPS),
                reference: Some(code),
            }
        }
        Benchmark::MultiPlE(lang) => {
            if let Some(l) = opt_text(rec, "language")? {
                let got = Language::parse(&l)?;
                if got != lang {
                    bail!("a {} problem in a multipl-e-{} file", l, lang.multipl_e_name());
                }
            }
            let prompt = text(rec, "prompt")?;
            let mut stop_tokens = strings(rec, "stop_tokens")?;
            if stop_tokens.is_empty() {
                bail!("no field `stop_tokens` (or it is empty)");
            }
            stop_tokens.sort();
            stop_tokens.dedup();
            Problem {
                id: text(rec, "name")?,
                language: lang,
                instruction: prompt.clone(),
                entry_point: function_in_prompt(&prompt, lang),
                prompt,
                setup: String::new(),
                tests: text(rec, "tests")?,
                stop_tokens,
                reference: None,
            }
        }
    })
}

/// `assert name(...) == ...` → `name`.
fn called_function(assert: &str) -> Option<String> {
    let rest = assert.trim().strip_prefix("assert")?.trim_start();
    let rest = rest.strip_prefix("not ").unwrap_or(rest).trim_start();
    let rest = rest.strip_prefix('(').unwrap_or(rest);
    let rest = ["math.isclose(", "set(", "abs(", "round(", "sorted(", "list("]
        .iter()
        .find_map(|w| rest.strip_prefix(w))
        .unwrap_or(rest);
    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!name.is_empty() && rest[name.len()..].starts_with('(')).then_some(name)
}

/// The first `def name(` of Python code.
fn defined_function(code: &str) -> Option<String> {
    code.lines().find_map(|l| {
        let rest = l.strip_prefix("def ")?;
        Some(rest.split('(').next()?.trim().to_string())
    })
}

/// The function a MultiPL-E prompt declares: the last name before `(` on its signature line.
fn function_in_prompt(prompt: &str, lang: Language) -> Option<String> {
    let line = prompt
        .lines()
        .rev()
        .find(|l| l.contains('(') && !l.trim_start().starts_with(['#', '/', '*']))?;
    let before = match lang {
        Language::Bash => line.split("()").next()?,
        _ => line.split('(').next()?,
    };
    let name = before.split_whitespace().last()?.trim_start_matches(['$', '&', '*']);
    let name: String = name.chars().filter(|c| c.is_alphanumeric() || *c == '_').collect();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benchmark_names_parse_and_unknown_ones_say_what_exists() {
        for n in [
            "humaneval",
            "humaneval+",
            "mbpp",
            "mbpp+",
            "multipl-e-cpp",
            "multipl-e-sh",
        ] {
            assert_eq!(Benchmark::parse(n).unwrap().name(), n);
        }
        assert_eq!(
            Benchmark::parse("multipl-e-js").unwrap().language(),
            Language::JavaScript
        );
        let e = Benchmark::parse("apps").unwrap_err().to_string();
        assert!(e.contains("multipl-e-LANG"), "{e}");
        assert!(Benchmark::parse("multipl-e-cobol").is_err());
    }

    #[test]
    fn function_names_from_asserts_definitions_and_prompts() {
        assert_eq!(
            called_function("assert similar_elements((3, 4), (5, 4)) == (4,)").as_deref(),
            Some("similar_elements")
        );
        assert_eq!(
            called_function("assert math.isclose(area(2), 12.5, rel_tol=0.001)").as_deref(),
            Some("area")
        );
        assert_eq!(called_function("assert not is_prime(4)").as_deref(), Some("is_prime"));
        assert_eq!(
            defined_function("import re\ndef f_1(a):\n  pass").as_deref(),
            Some("f_1")
        );
        assert_eq!(
            function_in_prompt(
                "#include<assert.h>\n// Add\nlong add(long a, long b) {\n",
                Language::Cpp
            )
            .as_deref(),
            Some("add")
        );
        assert_eq!(
            function_in_prompt("#!/bin/bash\n# Add.\n#\n# $1 is an integer\nadd() {\n", Language::Bash).as_deref(),
            Some("add")
        );
    }
}
