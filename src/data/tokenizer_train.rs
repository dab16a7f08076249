//! Training a small byte-level BPE tokenizer with the ChatML special tokens on chat-rendered
//! records (for the smoke run's tiny model), and writing it with a `tokenizer_config.json`
//! that carries syncoder's chat template so transformers renders conversations the same way.

use super::record::Record;
use super::shard::{resolve_sources, ShardLines};
use super::template::{chatml_source, ChatTemplate};
use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::SplitDelimiterBehavior;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper};
use tokenizers::{Tokenizer, TokenizerBuilder};

/// Pre-tokenisation of Qwen2 tokenizers. transformers' `Qwen2Tokenizer` applies this pattern to
/// any qwen2 model's tokenizer whatever its tokenizer.json says, so the project's own tokenizer
/// uses it too and tokenises the same in syncoder and in transformers.
const PRE_TOKENIZE_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The ChatML special tokens, in id order after the learned vocabulary's first entries.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Trains on every record of `sources` rendered with the built-in template (`default_system`
/// as its system turn) and writes `tokenizer.json` and `tokenizer_config.json` into `out`.
pub fn train_tokenizer(
    sources: &[PathBuf],
    vocab_size: usize,
    default_system: Option<&str>,
    out: &Path,
) -> Result<Tokenizer> {
    let template = ChatTemplate::qwen25_chatml(default_system)?;
    let mut texts = vec![];
    for file in resolve_sources(sources)? {
        for line in ShardLines::open(&file)? {
            let line = line?;
            let record = Record::parse(&line.text).map_err(|e| anyhow!("{}:{}: {e}", file.display(), line.line))?;
            texts.push(template.render(&record.messages, false)?);
        }
    }
    let specials = || -> Vec<AddedToken> { SPECIAL_TOKENS.iter().map(|t| AddedToken::from(*t, true)).collect() };
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .special_tokens(specials())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .show_progress(false)
        .build()
        .into();
    // Words are split by the Qwen2 pattern, then mapped to bytes.
    let split = Split::new(
        SplitPattern::Regex(PRE_TOKENIZE_PATTERN.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| anyhow!("pre-tokenizer pattern: {e}"))?;
    let byte_level = ByteLevel::new(false, false, false);
    let pre = Sequence::new(vec![split.into(), byte_level.into()]);
    let mut tok = TokenizerBuilder::<
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(BPE::default().into())
    .with_normalizer(None)
    .with_pre_tokenizer(Some(pre.into()))
    .with_post_processor(None)
    .with_decoder(Some(byte_level.into()))
    .build()
    .map_err(|e| anyhow!("building the tokenizer: {e}"))?;
    // Added before training so the special tokens are never split into bytes in the corpus.
    tok.add_special_tokens(specials())
        .map_err(|e| anyhow!("adding special tokens: {e}"))?;
    tok.train(&mut trainer, texts.iter())
        .map_err(|e| anyhow!("training the tokenizer: {e}"))?;
    let tokenizer = Tokenizer::from(tok);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = tokenizer
        .to_string(true)
        .map_err(|e| anyhow!("serialising the tokenizer: {e}"))?;
    crate::io::write_atomic(&out.join("tokenizer.json"), json.as_bytes())?;
    let config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "add_bos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 32768,
        "chat_template": chatml_source(default_system),
    });
    crate::io::write_atomic(
        &out.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    Ok(tokenizer)
}
