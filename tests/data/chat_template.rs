//! Chat template and loss mask against transformers (fixtures of
//! `scripts/make_template_fixtures.py`, real Qwen tokenizer): the rendered text, the token ids
//! `apply_chat_template(..., tokenize=True)` gives, and the assistant-token mask, for the
//! built-in Qwen2.5 template and a model-supplied one.

use syncoder::data::mask_policy::MaskPolicy;
use syncoder::data::sample::{Dropped, Overflow};
use syncoder::data::{ChatTemplate, Record, SampleBuilder, QWEN25_DEFAULT_SYSTEM};
use tokenizers::Tokenizer;

fn tokenizer() -> Tokenizer {
    static LOADED: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = crate::common::qwen_tokenizer_path().unwrap_or_else(|e| panic!("{e}"));
            Tokenizer::from_file(&path).unwrap()
        })
        .clone()
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
        let sample = b.build_part(&record, 0).unwrap().unwrap();
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
    let full = builder(t(), 4096, Overflow::Drop).build_part(&rec, 0).unwrap().unwrap();
    let n = full.ids.len();
    assert_eq!(
        builder(t(), n - 3, Overflow::Drop).build_part(&rec, 0).unwrap(),
        Err(Dropped::TooLong)
    );
    let cut = builder(t(), n - 3, Overflow::Truncate)
        .build_part(&rec, 0)
        .unwrap()
        .unwrap();
    assert_eq!(cut.ids, full.ids[..n - 3]);
    assert_eq!(cut.mask, full.mask[..n - 3]);
    // Truncated before the answer: nothing left to learn, so it is dropped.
    let first_supervised = full.mask.iter().position(|&m| m).unwrap();
    assert_eq!(
        builder(t(), first_supervised, Overflow::Truncate)
            .build_part(&rec, 0)
            .unwrap(),
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

/// The fixtures of templates beyond plain ChatML (`generation.json`).
fn generation_cases() -> serde_json::Value {
    let p = crate::common::fixtures().join("chat_template/generation.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn template_of(fx: &serde_json::Value, name: &str) -> ChatTemplate {
    ChatTemplate::from_jinja(fx["templates"][name].as_str().unwrap(), "<|im_end|>", "", "<|im_end|>").unwrap()
}

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn bools(v: &serde_json::Value) -> Vec<bool> {
    v.as_array().unwrap().iter().map(|x| x.as_bool().unwrap()).collect()
}

#[test]
fn generation_blocks_give_transformers_assistant_masks() {
    let fx = generation_cases();
    let mut checked = 0;
    for case in fx["cases"].as_array().unwrap() {
        let name = case["template"].as_str().unwrap();
        let record = Record::from_value(&case["record"]).unwrap();
        let what = format!("{} / {name}", case["record"]["id"]);
        let template = template_of(&fx, name);
        // Inference renders every template (blocks ignored), as transformers does.
        let prompt = &record.messages[..record.messages.len() - 1];
        assert_eq!(
            template.render(prompt, true).unwrap(),
            case["prompt_text"].as_str().unwrap(),
            "{what}: generation prompt"
        );
        let Some(masks) = case.get("assistant_masks") else {
            assert!(!template.has_generation_blocks(), "{what}");
            continue;
        };
        assert!(template.has_generation_blocks(), "{what}");
        for policy in [MaskPolicy::Generation, MaskPolicy::Auto] {
            let b = builder(template.clone(), 1 << 20, Overflow::Drop).with_mask(policy);
            assert_eq!(b.parts(&record), 1);
            let r = b.render(&record, 0).unwrap();
            assert_eq!(r.text, case["text"].as_str().unwrap(), "{what}: text");
            assert_eq!(r.ids, u32s(&case["ids"]), "{what}: ids");
            assert_eq!(r.mask, bools(masks), "{what} ({policy:?}): assistant mask");
            checked += 1;
        }
    }
    assert_eq!(
        checked, 16,
        "two generation-block templates × four conversations × two policies"
    );
}

#[test]
fn each_mask_policy_gives_its_samples() {
    let fx = generation_cases();
    let (mut refused, mut samples) = (0, 0);
    for case in fx["cases"].as_array().unwrap() {
        let name = case["template"].as_str().unwrap();
        let record = Record::from_value(&case["record"]).unwrap();
        for (policy, key) in [
            (MaskPolicy::Prefix, "prefix"),
            (MaskPolicy::LastAssistantTurn, "last_assistant_turn"),
            (MaskPolicy::PerTurn, "per_turn"),
        ] {
            let what = format!("{} / {name} / {key}", case["record"]["id"]);
            let b = builder(template_of(&fx, name), 1 << 20, Overflow::Drop).with_mask(policy);
            let expected = &case["policies"][key];
            if expected.is_null() {
                let err = format!("{:#}", b.build_part(&record, 0).unwrap_err());
                assert!(err.contains("growing prefixes"), "{what}: {err}");
                assert!(
                    err.contains("last_assistant_turn") && err.contains("per_turn"),
                    "{what}: {err}"
                );
                refused += 1;
                continue;
            }
            let expected = expected.as_array().unwrap();
            assert_eq!(b.parts(&record), expected.len(), "{what}: samples");
            for (part, want) in expected.iter().enumerate() {
                let r = b.render(&record, part).unwrap();
                assert_eq!(r.text, want["text"].as_str().unwrap(), "{what} sample {part}: text");
                assert_eq!(r.ids, u32s(&want["ids"]), "{what} sample {part}: ids");
                assert_eq!(r.mask, bools(&want["mask"]), "{what} sample {part}: mask");
                samples += 1;
            }
            assert_eq!(b.build_all(&record).unwrap().len(), expected.len(), "{what}");
        }
    }
    // The R1-like templates rewrite the history of the three multi-turn conversations.
    assert_eq!(refused, 6, "refused by the prefix rule");
    assert_eq!(samples, 42);
}

#[test]
fn a_template_that_rewrites_history_needs_a_policy() {
    let fx = generation_cases();
    let plain = template_of(&fx, "r1_plain");
    let case = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["template"] == "r1_plain" && c["record"]["id"] == "think-3")
        .unwrap();
    let record = Record::from_value(&case["record"]).unwrap();
    let auto = builder(plain.clone(), 1 << 20, Overflow::Drop);
    let err = format!("{:#}", auto.build_part(&record, 0).unwrap_err());
    assert!(
        err.contains("data.mask") && err.contains("last_assistant_turn") && err.contains("per_turn"),
        "{err}"
    );
    let generation = builder(plain.clone(), 1 << 20, Overflow::Drop).with_mask(MaskPolicy::Generation);
    let err = format!("{:#}", generation.build_part(&record, 0).unwrap_err());
    assert!(err.contains("no {% generation %} blocks"), "{err}");
    // per_turn: three samples, each the conversation up to its turn, trained on that turn only;
    // a sample it does not have is an error, not a panic.
    let per_turn = builder(plain, 1 << 20, Overflow::Drop).with_mask(MaskPolicy::PerTurn);
    let all: Vec<_> = per_turn
        .build_all(&record)
        .unwrap()
        .into_iter()
        .map(|s| s.unwrap())
        .collect();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].ids.len() < w[1].ids.len()));
    assert!(per_turn.build_part(&record, 3).is_err());
}

#[test]
fn generation_markers_in_a_conversation_are_refused() {
    let fx = generation_cases();
    let b = builder(template_of(&fx, "chatml_generation"), 1 << 20, Overflow::Drop);
    let rec = Record::parse("{\"instruction\": \"a\", \"response\": \"b\u{E001}c\"}").unwrap();
    let err = format!("{:#}", b.build_part(&rec, 0).unwrap_err());
    assert!(err.contains("U+E000") && err.contains("message 1"), "{err}");
}
