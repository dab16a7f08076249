//! Generation: greedy output equals transformers' greedy `generate` token for token on the
//! fixture models (f32), batched prompts of different lengths give what each gives alone, the
//! chat prompt is tokenised as transformers does, and sampling repeats for a seed. The KV caches
//! of GPU generation (device tensors) are exercised here too, on the CPU.

use crate::common::fixtures;
use candle_core::{DType, Device};
use std::process::Command;
use syncoder::infer::{generate, generate_placed, ChatFormat, FinishReason, GenerationSettings, Sampling};
use syncoder::model::KvPlacement;
use syncoder::model::Qwen2;

fn cases() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixtures().join("generation/expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn settings(max_new_tokens: usize, stop_ids: Vec<u32>) -> GenerationSettings {
    GenerationSettings {
        max_new_tokens,
        sampling: Sampling::greedy(),
        stop_ids,
    }
}

#[test]
fn greedy_matches_transformers_batched_and_alone() {
    for name in ["tied_gqa2", "untied_gqa4"] {
        let model = Qwen2::load(&fixtures().join(name), DType::F32, &Device::Cpu, false).unwrap();
        let mine: Vec<serde_json::Value> = cases().into_iter().filter(|c| c["model"] == name).collect();
        let prompts: Vec<Vec<u32>> = mine.iter().map(|c| ids(&c["prompt_ids"])).collect();
        let batched = generate(&model, &prompts, &settings(24, vec![])).unwrap();
        for (c, got) in mine.iter().zip(&batched) {
            assert_eq!(
                got.token_ids,
                ids(&c["expected"]),
                "{name} {:?} (batched)",
                c["prompt_ids"]
            );
            assert_eq!(got.finish_reason, FinishReason::Length);
            let alone = generate(&model, &[ids(&c["prompt_ids"])], &settings(24, vec![])).unwrap();
            assert_eq!(alone[0], *got, "alone vs batched");
        }
        // The path of GPU generation (KV caches as device tensors, attention composed from
        // tensor ops), run here on the CPU: the same tokens, batched.
        let on_device = generate_placed(&model, &prompts, &settings(24, vec![]), KvPlacement::Device).unwrap();
        assert_eq!(on_device, batched, "{name}: device-placed caches");
    }
}

#[test]
fn stop_tokens_end_a_sequence_and_are_kept() {
    let model = Qwen2::load(&fixtures().join("tied_gqa2"), DType::F32, &Device::Cpu, false).unwrap();
    let c = &cases()[0];
    let expected = ids(&c["expected"]);
    let stop = expected[5];
    let first = expected.iter().position(|&t| t == stop).unwrap();
    let out = generate(&model, &[ids(&c["prompt_ids"])], &settings(24, vec![stop])).unwrap();
    assert_eq!(out[0].token_ids, expected[..=first]);
    assert_eq!(out[0].finish_reason, FinishReason::Stop);
}

#[test]
fn the_generate_command_matches_transformers_on_a_chat_prompt() {
    let dir = fixtures().join("loss_model");
    let format = ChatFormat::from_dir(&dir).unwrap();
    for c in cases().iter().filter(|c| c["model"] == "loss_model") {
        let msgs = vec![syncoder::data::Message {
            role: syncoder::data::Role::User,
            content: c["chat"].as_str().unwrap().to_string(),
        }];
        assert_eq!(
            format.chat_ids(&msgs).unwrap(),
            ids(&c["prompt_ids"]),
            "chat prompt ids"
        );
        let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
            .args(["generate", "--model"])
            .arg(&dir)
            .args([
                "--prompt",
                c["chat"].as_str().unwrap(),
                "--max-new-tokens",
                "40",
                "--greedy",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(ids(&v["token_ids"]), ids(&c["expected"]));
        assert_eq!(v["text"], c["text"]);
    }
}

#[test]
fn sampling_repeats_for_a_seed() {
    let model = Qwen2::load(&fixtures().join("tied_gqa2"), DType::F32, &Device::Cpu, false).unwrap();
    let s = |seed| GenerationSettings {
        max_new_tokens: 16,
        sampling: Sampling {
            temperature: 1.5,
            top_p: 0.95,
            seed,
        },
        stop_ids: vec![],
    };
    let p = vec![vec![5u32, 6, 7], vec![9u32]];
    let a = generate(&model, &p, &s(1)).unwrap();
    assert_eq!(a, generate(&model, &p, &s(1)).unwrap());
    assert_ne!(a, generate(&model, &p, &s(2)).unwrap());
}

#[test]
fn the_generate_command_reports_bad_input() {
    let bin = env!("CARGO_BIN_EXE_syncoder");
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("m.json");
    std::fs::write(&bad, r#"[{"role": "robot", "content": "hi"}]"#).unwrap();
    let out = Command::new(bin)
        .args(["generate", "--model"])
        .arg(fixtures().join("loss_model"))
        .arg("--messages")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("messages[0].role"));
}
