//! `[arena]` in a run config: CodeArena evaluation of the run's checkpoints — the questions,
//! who each checkpoint is judged against, how often, how answers are generated, and the judge
//! ([`JudgeSettings`], the same type the `--judge-*` flags fill). The table keeps its keys flat
//! (`judge_url`, `timeout_s`, ...); every default comes from `judge_settings` and `answers`.

use super::answers::{DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS};
use super::judge_settings::JudgeSettings;
use super::protocol::ProtocolKind;
use crate::config::{ensure, ConfigError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Who a run's checkpoints are judged against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RunOpponent {
    /// `"base"`: the run's starting model, answered under the name `base`.
    Base,
    /// `"baseline:NAME"`: the stored answers of `NAME` in the questions file.
    Baseline(String),
}

impl TryFrom<String> for RunOpponent {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "base" {
            return Ok(Self::Base);
        }
        match s.strip_prefix("baseline:") {
            Some(b) if !b.is_empty() => Ok(Self::Baseline(b.to_string())),
            _ => Err(format!("{s:?} is not \"base\" or \"baseline:NAME\"")),
        }
    }
}

impl fmt::Display for RunOpponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Base => f.write_str("base"),
            Self::Baseline(b) => write!(f, "baseline:{b}"),
        }
    }
}

impl From<RunOpponent> for String {
    fn from(o: RunOpponent) -> String {
        o.to_string()
    }
}

/// `[arena]`: CodeArena evaluation of checkpoints (answers, an LLM judge, a report per step).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "ArenaKeys", into = "ArenaKeys")]
pub struct ArenaConfig {
    /// CodeArena-format JSONL or `hf://datasets/CSJianYang/CodeArena`.
    pub questions: String,
    /// The task-type map: a path to one (task type → `[[main, sub], ...]`), `official` (the
    /// official `tasktype_to_levels.json`, fetched at the pinned commit; the default for the
    /// official dataset) or `none` (each record's `level`).
    pub categories: Option<String>,
    pub judge: JudgeSettings,
    pub opponents: Vec<RunOpponent>,
    /// Evaluate every this many checkpoints (0: only at the end).
    pub every_checkpoints: u64,
    pub at_end: bool,
    pub max_new_tokens: usize,
    /// Questions answered together.
    pub batch_size: usize,
}

impl ArenaConfig {
    /// Rejects impossible values, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(!self.opponents.is_empty(), "arena.opponents", || {
            "give at least one of \"base\", \"baseline:NAME\"".into()
        })?;
        ensure(
            self.at_end || self.every_checkpoints > 0,
            "arena.every_checkpoints",
            || "with arena.at_end = false, give how often to evaluate".into(),
        )
    }
}

/// The `[arena]` table as written: flat keys, judge settings optional.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArenaKeys {
    questions: String,
    #[serde(default)]
    categories: Option<String>,
    judge_url: String,
    judge_model: String,
    #[serde(default)]
    judge_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    protocol: ProtocolKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    judge_config: Option<PathBuf>,
    #[serde(default)]
    judge_prompt: Option<PathBuf>,
    #[serde(default = "default_opponents")]
    opponents: Vec<RunOpponent>,
    #[serde(default)]
    every_checkpoints: u64,
    #[serde(default = "yes")]
    at_end: bool,
    #[serde(default)]
    max_new_tokens: Option<usize>,
    #[serde(default)]
    batch_size: Option<usize>,
    #[serde(default)]
    concurrency: Option<usize>,
    #[serde(default)]
    timeout_s: Option<u64>,
    #[serde(default)]
    max_retries: Option<u32>,
    #[serde(default)]
    backoff_s: Option<f64>,
    #[serde(default)]
    backoff_cap_s: Option<f64>,
    #[serde(default)]
    judge_max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    judge_temperature: Option<f64>,
}

fn is_default(p: &ProtocolKind) -> bool {
    *p == ProtocolKind::default()
}

fn default_opponents() -> Vec<RunOpponent> {
    vec![RunOpponent::Baseline("gpt-4-turbo-2024-04-09".into())]
}

fn yes() -> bool {
    true
}

impl From<ArenaKeys> for ArenaConfig {
    fn from(k: ArenaKeys) -> Self {
        let mut judge = JudgeSettings::new(k.judge_url, k.judge_model);
        judge.prompt = k.judge_prompt;
        judge.protocol = k.protocol;
        judge.judge_config = k.judge_config;
        judge.max_tokens = k.judge_max_tokens;
        judge.temperature = k.judge_temperature;
        if let Some(v) = k.judge_key_env {
            judge.key_env = v;
        }
        if let Some(v) = k.concurrency {
            judge.concurrency = v;
        }
        if let Some(v) = k.timeout_s {
            judge.timeout_s = v;
        }
        if let Some(v) = k.max_retries {
            judge.max_retries = v;
        }
        if let Some(v) = k.backoff_s {
            judge.backoff_s = v;
        }
        if let Some(v) = k.backoff_cap_s {
            judge.backoff_cap_s = v;
        }
        Self {
            questions: k.questions,
            categories: k.categories,
            judge,
            opponents: k.opponents,
            every_checkpoints: k.every_checkpoints,
            at_end: k.at_end,
            max_new_tokens: k.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
            batch_size: k.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
        }
    }
}

impl From<ArenaConfig> for ArenaKeys {
    fn from(c: ArenaConfig) -> Self {
        let j = c.judge;
        Self {
            questions: c.questions,
            categories: c.categories,
            judge_url: j.url,
            judge_model: j.model,
            judge_key_env: Some(j.key_env),
            protocol: j.protocol,
            judge_config: j.judge_config,
            judge_prompt: j.prompt,
            opponents: c.opponents,
            every_checkpoints: c.every_checkpoints,
            at_end: c.at_end,
            max_new_tokens: Some(c.max_new_tokens),
            batch_size: Some(c.batch_size),
            concurrency: Some(j.concurrency),
            timeout_s: Some(j.timeout_s),
            max_retries: Some(j.max_retries),
            backoff_s: Some(j.backoff_s),
            backoff_cap_s: Some(j.backoff_cap_s),
            judge_max_tokens: j.max_tokens,
            judge_temperature: j.temperature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        arena: ArenaConfig,
    }

    #[test]
    fn flat_keys_fill_the_judge_settings_and_errors_name_the_key() {
        let text = "[arena]\nquestions = \"q.jsonl\"\njudge_url = \"http://x/v1\"\njudge_model = \"j\"\n";
        let doc: Doc = crate::config::parse_toml(text, &["arena.backoff_s=0.5".into()]).unwrap();
        assert_eq!(
            doc.arena.judge,
            JudgeSettings {
                backoff_s: 0.5,
                ..JudgeSettings::new("http://x/v1", "j")
            }
        );
        assert_eq!(doc.arena.opponents, default_opponents());
        assert_eq!((doc.arena.max_new_tokens, doc.arena.batch_size), (16384, 8));
        // What run.toml holds reads back to the same settings.
        let again: Doc = crate::config::parse_toml(&toml::to_string(&doc).unwrap(), &[]).unwrap();
        assert_eq!(again.arena, doc.arena);
        let e = crate::config::parse_toml::<Doc>(text, &["arena.timeout_s=\"x\"".into()]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--set arena.timeout_s=\"x\": key `arena.timeout_s`"),
            "{e}"
        );
        let e = crate::config::parse_toml::<Doc>(text, &["arena.judge_temprature=1".into()]).unwrap_err();
        assert!(e.to_string().contains("judge_temprature"), "{e}");
        let e = crate::config::parse_toml::<Doc>(text, &["arena.opponents=[\"best\"]".into()]).unwrap_err();
        assert!(e.to_string().contains("is not \"base\" or \"baseline:NAME\""), "{e}");
    }
}
