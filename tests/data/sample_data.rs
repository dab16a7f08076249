//! The project's sample shard and its tiny tokenizer: the shard is valid, the committed
//! tokenizer is what `syncoder data train-tokenizer` produces from it, with the ChatML special
//! tokens first and the built-in chat template in its tokenizer_config.json.

use crate::common::repo;
use syncoder::data::{ChatTemplate, Record, QWEN25_DEFAULT_SYSTEM};

#[test]
fn sample_shard_is_valid_and_varied() {
    let report = syncoder::data::validate::validate_sources(&[repo().join("data/sample")], |f, l, m| {
        panic!("{}:{l}: {m}", f.display())
    })
    .unwrap();
    assert!(report.records >= 300, "{report:?}");
    let text = std::fs::read_to_string(repo().join("data/sample/syncode-sample.jsonl")).unwrap();
    let langs: std::collections::BTreeSet<String> =
        text.lines().filter_map(|l| Record::parse(l).ok()?.language).collect();
    assert!(langs.len() >= 8, "{langs:?}");
}

#[test]
fn train_tokenizer_reproduces_the_committed_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["data", "train-tokenizer"])
        .arg(repo().join("data/sample"))
        .args(["--vocab-size", "2048", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tok = tokenizers::Tokenizer::from_file(tmp.path().join("tokenizer.json")).unwrap();
    for (i, t) in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].iter().enumerate() {
        assert_eq!(tok.token_to_id(t), Some(i as u32));
    }
    let text = "<|im_start|>user\nfn main() { println!(\"hé\"); }<|im_end|>\n";
    let enc = tok.encode(text, false).unwrap();
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
    assert!(enc.get_ids().len() < text.len() / 2, "BPE merges compress the text");
    let committed = tokenizers::Tokenizer::from_file(repo().join("data/sample/tokenizer/tokenizer.json")).unwrap();
    assert_eq!(committed.encode(text, false).unwrap().get_ids(), enc.get_ids());

    let t = ChatTemplate::from_tokenizer_config(&tmp.path().join("tokenizer_config.json"))
        .unwrap()
        .unwrap();
    let builtin = ChatTemplate::qwen25_chatml(Some(QWEN25_DEFAULT_SYSTEM)).unwrap();
    let rec = Record::parse(r#"{"instruction": "q", "response": "a"}"#).unwrap();
    assert_eq!(
        t.render(&rec.messages, false).unwrap(),
        builtin.render(&rec.messages, false).unwrap()
    );
}
