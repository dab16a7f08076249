//! The judging protocol of a pairing — the prompt text, the judge model and its sampling
//! (temperature, max_tokens) — and its digest. Every judgment records the digest, so that a
//! judging run resumed in an existing evaluation directory refuses to mix its verdicts with
//! verdicts given under another protocol, and a report never mixes them either.

use super::games::Judgment;
use super::judge_prompt::JudgePrompt;
use super::judge_settings::JudgeSettings;
use anyhow::{bail, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The protocol's digest: 16 hex digits of the SHA-256 of the prompt's system and user texts,
/// the judge model's name, the temperature and the max_tokens sent with every request.
pub fn digest(prompt: &JudgePrompt, judge: &JudgeSettings) -> String {
    let mut h = Sha256::new();
    for part in [
        prompt.system.as_str(),
        prompt.template.as_str(),
        judge.model.as_str(),
        &judge.temperature.to_bits().to_string(),
        &judge.max_tokens.to_string(),
    ] {
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
        let p = JudgePrompt::builtin();
        let j = JudgeSettings::new("http://x/v1", "judge");
        let base = digest(&p, &j);
        assert_eq!(base.len(), 16);
        assert_eq!(base, digest(&p, &j.clone()));
        let mut other = p.clone();
        other.template.push(' ');
        assert_ne!(digest(&other, &j), base);
        let mut other = p.clone();
        other.system.push(' ');
        assert_ne!(digest(&other, &j), base);
        for change in [
            |j: &mut JudgeSettings| j.model.push('x'),
            |j: &mut JudgeSettings| j.temperature = 0.2,
            |j: &mut JudgeSettings| j.max_tokens += 1,
        ] {
            let mut k = j.clone();
            change(&mut k);
            assert_ne!(digest(&p, &k), base);
        }
        // Transport settings are not the protocol.
        let mut k = j.clone();
        (k.url, k.concurrency, k.max_retries) = ("http://y/v1".into(), 1, 0);
        assert_eq!(digest(&p, &k), base);
    }
}
