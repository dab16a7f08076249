//! Chat template and loss mask against transformers (fixtures of
//! `scripts/make_template_fixtures.py`, real Qwen tokenizer): the rendered text, the token ids
//! `apply_chat_template(..., tokenize=True)` gives, and the assistant-token mask, for the
//! built-in Qwen2.5 template and a model-supplied one.

use syncoder::data::sample::{Dropped, Overflow};
use syncoder::data::{ChatTemplate, Record, SampleBuilder, QWEN25_DEFAULT_SYSTEM};
use tokenizers::Tokenizer;

fn tokenizer() -> Tokenizer {
    let path = crate::common::qwen_tokenizer_path().unwrap_or_else(|e| panic!("{e}"));
    Tokenizer::from_file(&path).unwrap()
}

fn cases() -> serde_json::Value {
    let p = crate::common::fixtures().join("chat_template/cases.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn builder(template: ChatTemplate, max_seq_len: usize, overflow: Overflow) -> SampleBuilder {
    SampleBuilder::new(tokenizer(), template, max_seq_len, overflow)
}

#[test]
fn ids_and_mask_match_transformers() {
    let fx = cases();
    let model_template = fx["model_template"].as_str().unwrap();
    let builtin = builder(
        ChatTemplate::qwen25_chatml(Some(QWEN25_DEFAULT_SYSTEM)).unwrap(),
        1 << 20,
        Overflow::Drop,
    );
    let model = builder(
        ChatTemplate::from_jinja(model_template, "<|im_end|>", "", "<|im_end|>").unwrap(),
        1 << 20,
        Overflow::Drop,
    );
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let record = Record::from_value(&case["record"]).unwrap();
        let b = if case["template"] == "builtin" {
            &builtin
        } else {
            &model
        };
        let what = format!("{} / {}", case["record"]["id"], case["template"]);
        let (text, _) = b.template.render_supervised(&record.messages).unwrap();
        assert_eq!(text, case["text"].as_str().unwrap(), "{what}: rendered text");
        let sample = b.build(&record).unwrap().unwrap();
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let mask: Vec<bool> = case["mask"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_bool().unwrap())
            .collect();
        assert_eq!(sample.ids, ids, "{what}: token ids");
        assert_eq!(sample.mask, mask, "{what}: loss mask");
        // The mask ends each assistant turn on <|im_end|> (151645) and never covers the
        // system or user turns' tokens.
        let last = sample.mask.iter().rposition(|&m| m).unwrap();
        assert_eq!(
            sample.ids[last], 151645,
            "{what}: the last supervised token is <|im_end|>"
        );
        assert!(!sample.mask[0], "{what}");
    }
}

#[test]
fn overflow_policy_truncates_or_drops() {
    let rec = Record::parse(
        r#"{"instruction": "Say hi in ten languages.", "response": "hi hallo salut hola ciao olá hej ahoj hei czesc"}"#,
    )
    .unwrap();
    let t = || ChatTemplate::qwen25_chatml(Some(QWEN25_DEFAULT_SYSTEM)).unwrap();
    let full = builder(t(), 4096, Overflow::Drop).build(&rec).unwrap().unwrap();
    let n = full.ids.len();
    assert_eq!(
        builder(t(), n - 3, Overflow::Drop).build(&rec).unwrap(),
        Err(Dropped::TooLong)
    );
    let cut = builder(t(), n - 3, Overflow::Truncate).build(&rec).unwrap().unwrap();
    assert_eq!(cut.ids, full.ids[..n - 3]);
    assert_eq!(cut.mask, full.mask[..n - 3]);
    // Truncated before the answer: nothing left to learn, so it is dropped.
    let first_supervised = full.mask.iter().position(|&m| m).unwrap();
    assert_eq!(
        builder(t(), first_supervised, Overflow::Truncate).build(&rec).unwrap(),
        Err(Dropped::NoSupervisedTokens)
    );
}

#[test]
fn template_without_end_of_turn_is_an_error() {
    let t = ChatTemplate::from_jinja(
        "{% for m in messages %}{{ m.content }}{% endfor %}",
        "<|im_end|>",
        "",
        "",
    )
    .unwrap();
    let rec = Record::parse(r#"{"instruction": "a", "response": "b"}"#).unwrap();
    let err = t.render_supervised(&rec.messages).unwrap_err().to_string();
    assert!(err.contains("<|im_end|>"), "{err}");
}
