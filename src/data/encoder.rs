//! The tokenizer as the data path runs it, many samples at once on every core:
//!
//! - each thread encodes with its own copy (`thread_local::ThreadLocal`): a shared tokenizer
//!   shares its regexes' scratch caches, and all but one thread then take them through a lock
//!   (7 % of the pipeline's profile on 2 threads);
//! - a tokenizer whose normaliser is NFC encodes text that is already NFC (checked with
//!   `unicode-normalization`'s quick check; ASCII always is) through a copy without the
//!   normaliser: NFC leaves such text unchanged, so the ids and offsets are the same, and the
//!   per-character decomposition and recomposition with alignments (~10 % of the profile) is
//!   skipped.
//!
//! `tests/data/chat_template.rs` proves the ids unchanged against transformers.

use anyhow::{anyhow, Result};
use thread_local::ThreadLocal;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::{Encoding, Tokenizer};
use unicode_normalization::{is_nfc_quick, IsNormalized};

/// One thread's copies.
struct Local {
    full: Tokenizer,
    /// The same without its NFC normaliser (`None`: the normaliser is not exactly NFC).
    without_nfc: Option<Tokenizer>,
}

pub struct Encoder {
    tokenizer: Tokenizer,
    local: ThreadLocal<Local>,
}

impl Encoder {
    pub fn new(tokenizer: Tokenizer) -> Self {
        Self {
            tokenizer,
            local: ThreadLocal::new(),
        }
    }

    /// The tokenizer itself.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn local(&self) -> &Local {
        self.local.get_or(|| {
            let full = self.tokenizer.clone();
            let without_nfc = if matches!(full.get_normalizer(), Some(NormalizerWrapper::NFC(_))) {
                let mut t = full.clone();
                t.with_normalizer(None::<NormalizerWrapper>).is_ok().then_some(t)
            } else {
                None
            };
            Local { full, without_nfc }
        })
    }

    /// `text` encoded without added special tokens, with byte offsets.
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        let local = self.local();
        let tok = match &local.without_nfc {
            Some(t) if is_nfc(text) => t,
            _ => &local.full,
        };
        tok.encode(text, false).map_err(|e| anyhow!("tokenizing: {e}"))
    }
}

/// Whether NFC leaves `text` unchanged, by the quick check (a "maybe" counts as no).
fn is_nfc(text: &str) -> bool {
    text.is_ascii() || is_nfc_quick(text.chars()) == IsNormalized::Yes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_check_accepts_composed_text_only() {
        assert!(is_nfc("fn main() {}"));
        assert!(is_nfc("café — 日本語"));
        // "e" + combining acute accent: NFC composes it.
        assert!(!is_nfc("cafe\u{301}"));
    }
}
