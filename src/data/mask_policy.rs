//! `data.mask`: which text of a conversation is trained on, and how a conversation becomes
//! samples.
//!
//! - `generation`: the template's `{% generation %}` blocks (transformers' assistant mask);
//! - `prefix`: every assistant turn, located by rendering growing prefixes — needs a template
//!   that renders each prefix of a conversation as the start of the whole;
//! - `last_assistant_turn`: only the final assistant turn, in the rendering the model sees when
//!   it produces that turn — for templates that rewrite earlier turns (DeepSeek-R1-Distill,
//!   QwQ: earlier turns lose their `<think>` part);
//! - `per_turn`: a conversation of k assistant turns becomes k samples, sample j the rendering
//!   of the conversation up to turn j, trained on turn j;
//! - `auto`: `generation` when the template has blocks, else `prefix`; a conversation neither
//!   can mask is an error that names the other policies.
//!
//! Under `last_assistant_turn` and `per_turn`, a template with generation blocks locates the
//! trained turn by its block (the last one of the rendering); one without, by the prefix rule
//! applied to that turn alone.

use super::record::{Message, Role};
use super::template::ChatTemplate;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::ops::Range;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MaskPolicy {
    #[default]
    Auto,
    Generation,
    Prefix,
    #[value(name = "last_assistant_turn")]
    LastAssistantTurn,
    #[value(name = "per_turn")]
    PerTurn,
}

/// What to tell a user whose template cannot be masked by the rule they got.
const OPTIONS: &str = "set data.mask (or --mask) to \"last_assistant_turn\" (train the final assistant turn only) \
     or \"per_turn\" (one sample per assistant turn), or give the template {% generation %} blocks; see \
     docs/data-format.md";

impl MaskPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            MaskPolicy::Auto => "auto",
            MaskPolicy::Generation => "generation",
            MaskPolicy::Prefix => "prefix",
            MaskPolicy::LastAssistantTurn => "last_assistant_turn",
            MaskPolicy::PerTurn => "per_turn",
        }
    }

    /// How many samples a conversation gives: one per assistant turn under `per_turn`, else one.
    pub fn parts(self, messages: &[Message]) -> usize {
        match self {
            MaskPolicy::PerTurn => messages.iter().filter(|m| m.role == Role::Assistant).count().max(1),
            _ => 1,
        }
    }

    /// The text of sample `part` of a conversation and the byte ranges of it that are trained on.
    pub fn supervised(
        self,
        template: &ChatTemplate,
        messages: &[Message],
        part: usize,
    ) -> Result<(String, Vec<Range<usize>>)> {
        if part >= self.parts(messages) {
            bail!(
                "data.mask = \"{}\" gives this conversation {} sample(s); there is no sample {part}",
                self.as_str(),
                self.parts(messages)
            );
        }
        match self {
            MaskPolicy::Generation if !template.has_generation_blocks() => bail!(
                "data.mask = \"generation\", but the chat template has no {{% generation %}} blocks; use \"auto\" \
                 or \"prefix\""
            ),
            MaskPolicy::Generation => template.render_marked(messages, false),
            MaskPolicy::Auto if template.has_generation_blocks() => template.render_marked(messages, false),
            MaskPolicy::Auto | MaskPolicy::Prefix => template.render_supervised(messages).map_err(|e| {
                anyhow::anyhow!(
                    "{e:#}; data.mask = \"{}\" cannot mask this conversation: {OPTIONS}",
                    self.as_str()
                )
            }),
            MaskPolicy::LastAssistantTurn => last_turn(template, messages),
            MaskPolicy::PerTurn => {
                let Some((k, _)) = messages
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.role == Role::Assistant)
                    .nth(part)
                else {
                    bail!("the conversation has no assistant turn {part}");
                };
                last_turn(template, &messages[..=k])
            }
        }
    }
}

/// The conversation up to its last assistant turn, trained on that turn only.
fn last_turn(template: &ChatTemplate, messages: &[Message]) -> Result<(String, Vec<Range<usize>>)> {
    let Some(k) = messages.iter().rposition(|m| m.role == Role::Assistant) else {
        bail!("the conversation has no assistant turn");
    };
    let messages = &messages[..=k];
    if template.has_generation_blocks() {
        let (text, spans) = template.render_marked(messages, false)?;
        return Ok((text, spans.last().cloned().into_iter().collect()));
    }
    let (text, span) = template.render_last_turn(messages)?;
    Ok((text, vec![span]))
}
