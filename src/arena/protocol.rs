//! The judging protocol of a pairing and its digest. A protocol is the prompt (how a game's
//! messages are rendered), how a verdict is found in a reply, how many requests a game may make,
//! and the judge's sampling; two exist:
//!
//! - `syncoder`: syncoder's own prompt (`judge_prompt.rs`, or `--judge-prompt FILE`), the
//!   official verdict pattern, one re-ask; temperature 0, 4096 tokens.
//! - `codearena` (the default): the official CodeArena judge configuration, read from the
//!   arena-hard YAML file (`--judge-config FILE`, or fetched at the pinned commit by
//!   `official_files.rs`; see `judge_config.rs`), and the re-ask sentence of the official
//!   `judge_models.py` (beside the configuration file, or fetched); temperature 0.2 and 16384
//!   tokens, as that script sends them.
//!
//! Every judgment records the digest, so that a judging run resumed in an existing evaluation
//! directory refuses to mix its verdicts with verdicts given under another protocol, and a
//! report never mixes them either.

use super::games::Judgment;
use super::judge_client::ChatMessage;
use super::judge_config::{reask_from_script, JudgeConfig};
use super::judge_prompt::{JudgePrompt, REASK};
use super::judge_settings::JudgeSettings;
use super::official_files;
use super::verdict::{self, Label};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Which protocol (`--protocol`, `[arena] protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolKind {
    /// syncoder's own prompt.
    Syncoder,
    /// The official CodeArena judge configuration (`--judge-config FILE`, or fetched).
    #[default]
    Codearena,
}

impl ProtocolKind {
    /// The protocol's judge temperature and max_tokens unless overridden.
    pub fn sampling(self) -> (f64, u32) {
        match self {
            ProtocolKind::Syncoder => (0.0, 4096),
            ProtocolKind::Codearena => (0.2, 16384),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ProtocolKind::Syncoder => "syncoder",
            ProtocolKind::Codearena => "codearena",
        }
    }
}

/// A protocol ready to play games.
#[derive(Clone, Debug)]
pub enum Protocol {
    Syncoder(JudgePrompt),
    /// The configuration and the official script's re-ask sentence.
    Codearena(JudgeConfig, String),
}

impl Protocol {
    /// The protocol `judge` names, its prompt or configuration file read.
    pub fn load(judge: &JudgeSettings) -> Result<Self> {
        match judge.protocol {
            ProtocolKind::Syncoder => {
                if judge.judge_config.is_some() {
                    bail!(
                        "--judge-config belongs to --protocol codearena (the syncoder protocol takes --judge-prompt)"
                    );
                }
                Ok(Protocol::Syncoder(match &judge.prompt {
                    Some(p) => JudgePrompt::from_file(p)?,
                    None => JudgePrompt::builtin(),
                }))
            }
            ProtocolKind::Codearena => {
                if judge.prompt.is_some() {
                    bail!(
                        "--judge-prompt belongs to --protocol syncoder (the codearena protocol reads --judge-config)"
                    );
                }
                let path = match &judge.judge_config {
                    Some(p) => p.clone(),
                    None => official_files::fetch(&official_files::JUDGE_CONFIG)
                        .context("the codearena protocol reads the official judge configuration")?,
                };
                let config = JudgeConfig::from_file(&path)?;
                let script = judge_script_beside(&path).map_or_else(
                    || {
                        official_files::fetch(&official_files::JUDGE_SCRIPT)
                            .context("the codearena protocol reads the re-ask sentence of the official judging script")
                    },
                    Ok,
                )?;
                let text = std::fs::read_to_string(&script)
                    .with_context(|| format!("cannot read the judging script {}", script.display()))?;
                let reask = reask_from_script(&text).with_context(|| format!("judging script {}", script.display()))?;
                Ok(Protocol::Codearena(config, reask))
            }
        }
    }

    /// The messages of one game (question, answer in position A, answer in position B).
    pub fn render(&self, question: &str, answer_a: &str, answer_b: &str) -> Result<Vec<ChatMessage>> {
        match self {
            Protocol::Syncoder(p) => Ok(p.render(question, answer_a, answer_b)),
            Protocol::Codearena(c, _) => c.render(question, answer_a, answer_b),
        }
    }

    /// The verdict candidates of a reply.
    pub fn candidates<'a>(&self, text: &'a str) -> Vec<&'a str> {
        match self {
            Protocol::Syncoder(_) => verdict::candidates(text),
            Protocol::Codearena(c, _) => c.candidates(text),
        }
    }

    /// The verdict of a reply (`None`: unparsable).
    pub fn label(&self, text: &str) -> Option<Label> {
        verdict::verdict(&self.candidates(text))
    }

    /// Requests a game may make: the first, then re-asks while replies hold no candidate.
    pub fn attempts(&self) -> u32 {
        match self {
            Protocol::Syncoder(_) => 2,
            Protocol::Codearena(c, _) => c.attempts,
        }
    }

    /// The user message that asks again for a verdict.
    pub fn reask(&self) -> &str {
        match self {
            Protocol::Syncoder(_) => REASK,
            Protocol::Codearena(_, reask) => reask,
        }
    }

    /// A digest of the prompt text alone (recorded as `prompt_digest`).
    pub fn prompt_digest(&self) -> String {
        match self {
            Protocol::Syncoder(p) => p.digest(),
            Protocol::Codearena(c, _) => short_sha(&[&c.system, &c.templates.join("\0"), &c.pattern_text]),
        }
    }
}

/// `judge_models.py` beside a judge configuration file, or in the directory above it (the
/// official layout keeps the configuration in `utils/`).
fn judge_script_beside(config: &Path) -> Option<std::path::PathBuf> {
    let dir = config.parent()?;
    std::iter::once(dir.join("judge_models.py"))
        .chain(dir.parent().map(|p| p.join("judge_models.py")))
        .find(|p| p.is_file())
}

/// The protocol's digest: 16 hex digits of the SHA-256 of its kind, prompt, verdict pattern,
/// attempts, the judge model's name, and the temperature and max_tokens sent with every request.
pub fn digest(protocol: &Protocol, judge: &JudgeSettings) -> String {
    let (kind, texts): (&str, Vec<String>) = match protocol {
        // The syncoder protocol's digest is what it was before protocols had kinds.
        Protocol::Syncoder(p) => ("", vec![p.system.clone(), p.template.clone()]),
        Protocol::Codearena(c, reask) => (
            "codearena",
            vec![
                c.system.clone(),
                c.templates.join("\0"),
                c.pattern_text.clone(),
                c.attempts.to_string(),
                reask.clone(),
            ],
        ),
    };
    let mut parts: Vec<String> = texts;
    parts.push(judge.model.clone());
    parts.push(judge.temperature().to_bits().to_string());
    parts.push(judge.max_tokens().to_string());
    if !kind.is_empty() {
        parts.push(kind.to_string());
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    short_sha(&refs)
}

/// 16 hex digits of the SHA-256 of length-prefixed parts.
fn short_sha(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Refuses judgments already in `file` that were given under a protocol other than `current`.
pub fn ensure_same(file: &Path, done: &[Judgment], current: &str) -> Result<()> {
    let Some((i, j)) = done.iter().enumerate().find(|(_, j)| j.protocol != current) else {
        return Ok(());
    };
    let given = if j.protocol.is_empty() {
        "before judgments recorded their protocol".to_string()
    } else {
        format!("under judging protocol {}", j.protocol)
    };
    bail!(
        "{}: judgment {} (question {}, game {}) was given {given}, but this run's protocol is {current} \
         (the judge prompt, judge model, temperature or max_tokens differ); judge into another --out \
         directory, or remove {} to judge again under the new protocol",
        file.display(),
        i + 1,
        j.question_id,
        j.game,
        file.display()
    )
}

/// The one protocol of a judgment file's judgments; an error naming the file when they mix.
pub fn of_file(file: &Path, judgments: &[Judgment]) -> Result<Option<String>> {
    let Some(first) = judgments.first() else {
        return Ok(None);
    };
    ensure_same(file, judgments, &first.protocol).map_err(|_| {
        anyhow::anyhow!(
            "{}: holds judgments given under different judging protocols; a report would mix them \
             (split the file, or judge again into a new directory)",
            file.display()
        )
    })?;
    Ok(Some(first.protocol.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_of_the_protocol_changes_the_digest() {
        let p = Protocol::Syncoder(JudgePrompt::builtin());
        let mut j = JudgeSettings::new("http://x/v1", "judge");
        j.protocol = ProtocolKind::Syncoder;
        let base = digest(&p, &j);
        assert_eq!(base.len(), 16);
        assert_eq!(base, digest(&p, &j.clone()));
        let mut other = JudgePrompt::builtin();
        other.template.push(' ');
        assert_ne!(digest(&Protocol::Syncoder(other), &j), base);
        let mut other = JudgePrompt::builtin();
        other.system.push(' ');
        assert_ne!(digest(&Protocol::Syncoder(other), &j), base);
        for change in [
            |j: &mut JudgeSettings| j.model.push('x'),
            |j: &mut JudgeSettings| j.temperature = Some(0.2),
            |j: &mut JudgeSettings| j.max_tokens = Some(4097),
        ] {
            let mut k = j.clone();
            change(&mut k);
            assert_ne!(digest(&p, &k), base);
        }
        // The protocol's own defaults written out are the same protocol.
        let mut k = j.clone();
        (k.temperature, k.max_tokens) = (Some(0.0), Some(4096));
        assert_eq!(digest(&p, &k), base);
        // Transport settings are not the protocol.
        let mut k = j.clone();
        (k.url, k.concurrency, k.max_retries) = ("http://y/v1".into(), 1, 0);
        assert_eq!(digest(&p, &k), base);
    }

    #[test]
    fn each_protocol_takes_only_its_own_prompt_source() {
        let mut j = JudgeSettings::new("http://x/v1", "judge");
        assert_eq!(
            j.protocol,
            ProtocolKind::Codearena,
            "the official protocol is the default"
        );
        j.prompt = Some("p.txt".into());
        assert!(format!("{:#}", Protocol::load(&j).unwrap_err()).contains("--judge-prompt"));
        let mut j = JudgeSettings::new("http://x/v1", "judge");
        j.protocol = ProtocolKind::Syncoder;
        j.judge_config = Some("c.yaml".into());
        assert!(format!("{:#}", Protocol::load(&j).unwrap_err()).contains("--protocol codearena"));
    }
}
