//! Chat templates: rendering conversations to text with the model's own Jinja template
//! (minijinja, as Hugging Face's text-generation-inference does) or syncoder's built-in
//! Qwen2.5 ChatML template, and locating the text each assistant turn must be trained on.
//!
//! The supervised text of an assistant turn is found by rendering growing prefixes of the
//! conversation: it starts where the rendering of the turns before it with the generation
//! prompt ends, and ends after the last end-of-turn token of the rendering that includes it.
//! No marker of any particular template is hard-coded.
//!
//! Templates may mark the trained text themselves with `{% generation %}…{% endgeneration %}`
//! blocks (as transformers allows): `render_marked` returns the byte ranges they enclose, and
//! every other rendering ignores them (`generation_blocks`).

use super::generation_blocks;
use super::record::Message;
use anyhow::{bail, Context, Result};
use minijinja::{context, Environment, ErrorKind};
use std::ops::Range;
use std::path::Path;

/// Qwen2.5's default system turn, added when a conversation has none.
pub const QWEN25_DEFAULT_SYSTEM: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// The built-in ChatML template body; `with_default_system` prepends the system prompt as a Jinja
/// `set` so the written template is self-contained for transformers and vLLM.
const CHATML_BODY: &str = include_str!("qwen25_chatml.jinja");

#[derive(Clone)]
pub struct ChatTemplate {
    source: String,
    env: Environment<'static>,
    /// The source has `{% generation %}` blocks.
    generation_blocks: bool,
    /// Text that closes a turn (`<|im_end|>` for ChatML); part of the supervised text.
    pub end_of_turn: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// The built-in Qwen2.5 ChatML template, with `default_system` as the system turn of
    /// conversations that have none (`None`: no default system turn).
    pub fn qwen25_chatml(default_system: Option<&str>) -> Result<Self> {
        Self::from_jinja(&chatml_source(default_system), "<|im_end|>", "", "<|im_end|>")
    }

    /// A template from Jinja source. `end_of_turn` closes each turn; `bos_token` and
    /// `eos_token` are passed to the template as transformers does.
    pub fn from_jinja(source: &str, end_of_turn: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        if end_of_turn.is_empty() {
            bail!("chat template: the end-of-turn token is empty");
        }
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        // transformers renders with trim_blocks and lstrip_blocks on.
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .context("configuring the template syntax")?,
        );
        let (rewritten, generation_blocks) = generation_blocks::rewrite(source);
        env.add_template_owned("chat", rewritten)
            .context("parsing the chat template")?;
        Ok(Self {
            source: source.to_string(),
            env,
            generation_blocks,
            end_of_turn: end_of_turn.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The model's own template from its `tokenizer_config.json` (`chat_template`, a string or
    /// a list with a `default` entry), closing turns with its `eos_token`; `None` if it has none.
    pub fn from_tokenizer_config(path: &Path) -> Result<Option<Self>> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let cfg: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let token = |key: &str| -> String {
            match cfg.get(key) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Object(o)) => o
                    .get("content")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_string(),
                _ => String::new(),
            }
        };
        let source = match cfg.get("chat_template") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str())
                .with_context(|| format!("{}: chat_template list has no \"default\" entry", path.display()))?
                .to_string(),
            Some(_) => bail!("{}: chat_template must be a string or a list", path.display()),
        };
        let eos = token("eos_token");
        if eos.is_empty() {
            bail!("{}: a chat_template needs an eos_token to close turns", path.display());
        }
        Self::from_jinja(&source, &eos, &token("bos_token"), &eos)
            .with_context(|| format!("in the chat_template of {}", path.display()))
            .map(Some)
    }

    /// The Jinja source (written into checkpoints so downstream tools render the same).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template marks its trained text with `{% generation %}` blocks.
    pub fn has_generation_blocks(&self) -> bool {
        self.generation_blocks
    }

    /// Renders `messages` as transformers' `apply_chat_template(..., tokenize=False)` does.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let raw = self.render_raw(messages, add_generation_prompt)?;
        Ok(if self.generation_blocks {
            generation_blocks::strip(&raw)
        } else {
            raw
        })
    }

    /// The rendering and the byte ranges of it the template's `{% generation %}` blocks
    /// enclose (none when it has no blocks), as transformers'
    /// `return_assistant_tokens_mask=True` locates them.
    pub fn render_marked(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<(String, Vec<Range<usize>>)> {
        let raw = self.render_raw(messages, add_generation_prompt)?;
        if self.generation_blocks {
            generation_blocks::extract(&raw)
        } else {
            Ok((raw, vec![]))
        }
    }

    /// The template's output, generation markers included.
    fn render_raw(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        if self.generation_blocks {
            for (k, m) in messages.iter().enumerate() {
                generation_blocks::check_input(&m.content, &format!("message {k}"))?;
            }
        }
        let tmpl = self.env.get_template("chat")?;
        tmpl.render(context! {
            messages => messages_value(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
        .context("rendering the chat template")
    }

    /// The full text of a conversation and the byte ranges of it that are trained on: each
    /// assistant turn's content and its closing end-of-turn token.
    pub fn render_supervised(&self, messages: &[Message]) -> Result<(String, Vec<Range<usize>>)> {
        let full = self.render(messages, false)?;
        let mut spans = vec![];
        for (k, m) in messages.iter().enumerate() {
            if m.role != super::record::Role::Assistant {
                continue;
            }
            // Each turn located as the last of its prefix, and that prefix the start of the whole.
            let (upto, span) = self.render_last_turn(&messages[..=k])?;
            if !full.starts_with(&upto) {
                bail!(
                    "the chat template does not render this conversation as growing prefixes, so the text of \
                     assistant turn {k} cannot be located"
                );
            }
            spans.push(span);
        }
        Ok((full, spans))
    }

    /// The full text of a conversation that ends with an assistant turn, and the byte range of
    /// that last turn (its content and closing end-of-turn token): it starts where the rendering
    /// of the turns before it with the generation prompt ends. Only the last turn needs to be
    /// rendered as a growing prefix, so templates that rewrite earlier turns (dropping their
    /// `<think>` part, say) are fine.
    pub fn render_last_turn(&self, messages: &[Message]) -> Result<(String, Range<usize>)> {
        let Some((last, before)) = messages.split_last() else {
            bail!("an empty conversation has no last turn");
        };
        if last.role != super::record::Role::Assistant {
            bail!("the conversation does not end with an assistant turn");
        }
        let k = before.len();
        let prompt = self.render(before, true)?;
        let full = self.render(messages, false)?;
        if !full.starts_with(&prompt) {
            bail!(
                "the chat template's rendering of the turns before assistant turn {k} with the generation prompt is \
                 not the start of its rendering with that turn, so the turn's text cannot be located"
            );
        }
        let Some(close) = full[prompt.len()..].rfind(&self.end_of_turn) else {
            bail!(
                "the chat template does not close assistant turn {k} with {:?}",
                self.end_of_turn
            );
        };
        let end = prompt.len() + close + self.end_of_turn.len();
        Ok((full, prompt.len()..end))
    }
}

/// Messages as the template sees them: a list of `{role, content}` maps.
fn messages_value(messages: &[Message]) -> minijinja::Value {
    messages
        .iter()
        .map(|m| {
            minijinja::Value::from_pairs([
                ("role", minijinja::Value::from(m.role.as_str())),
                ("content", minijinja::Value::from(m.content.as_str())),
            ])
        })
        .collect()
}

/// The built-in template's source with `default_system` embedded.
pub fn chatml_source(default_system: Option<&str>) -> String {
    match default_system {
        Some(s) => {
            let literal = serde_json::to_string(s).expect("a string serialises");
            format!("{{%- set default_system = {literal} %}}\n{CHATML_BODY}")
        }
        None => format!("{{%- set default_system = '' %}}\n{CHATML_BODY}"),
    }
}
