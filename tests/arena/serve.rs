//! `syncoder serve`: an OpenAI-compatible endpoint over a checkpoint, answering as `generate`
//! does, usable as the CodeArena judge with many concurrent keep-alive connections.

use crate::common::fixtures;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `syncoder serve` on a free port and returns its base URL.
fn serve() -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["serve", "--model"])
        .arg(fixtures().join("loss_model"))
        .args(["--port", "0", "--name", "tiny"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    Server(child, format!("http://{url}"))
}

#[test]
fn chat_completions_answer_like_generate() {
    let s = serve();
    let client = reqwest::blocking::Client::new();
    let body = serde_json::json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "Write a function that adds two numbers."}],
        "max_tokens": 40,
        "temperature": 0
    });
    let r: serde_json::Value = client
        .post(format!("{}/chat/completions", s.1))
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("generation/expected.json")).unwrap()).unwrap();
    let case = expected["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chat"] == "Write a function that adds two numbers.")
        .unwrap();
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["choices"][0]["message"]["content"], case["text"]);
    assert_eq!(
        r["usage"]["completion_tokens"],
        case["expected"].as_array().unwrap().len()
    );
    assert_eq!(
        r["usage"]["prompt_tokens"],
        case["prompt_ids"].as_array().unwrap().len()
    );
    let models: serde_json::Value = client.get(format!("{}/models", s.1)).send().unwrap().json().unwrap();
    assert_eq!(models["data"][0]["id"], "tiny");
    let bad = client
        .post(format!("{}/chat/completions", s.1))
        .json(&serde_json::json!({"messages": "hi"}))
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let v: serde_json::Value = bad.json().unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("messages"));
    let stream = client
        .post(format!("{}/chat/completions", s.1))
        .json(&serde_json::json!({"messages": [], "stream": true}))
        .send()
        .unwrap();
    assert_eq!(stream.status().as_u16(), 400);
    assert_eq!(
        client.get(format!("{}/nothing", s.1)).send().unwrap().status().as_u16(),
        404
    );
}

#[test]
fn a_served_checkpoint_can_be_the_judge() {
    let s = serve();
    let tmp = tempfile::tempdir().unwrap();
    let eval = tmp.path().join("eval");
    let q = fixtures().join("codearena/questions.jsonl");
    let bin = env!("CARGO_BIN_EXE_syncoder");
    let out = Command::new(bin)
        .args(["arena", "answer", "--model"])
        .arg(fixtures().join("loss_model"))
        .args(["--name", "m", "--max-new-tokens", "4", "--out"])
        .arg(&eval)
        .arg("--questions")
        .arg(&q)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(bin)
        .args([
            "arena",
            "judge",
            "--model",
            "m",
            "--baseline",
            "gpt-4-turbo-2024-04-09",
            "--out",
        ])
        .arg(&eval)
        .arg("--questions")
        .arg(&q)
        .args([
            "--judge-url",
            &s.1,
            "--judge-model",
            "tiny",
            "--protocol",
            "syncoder",
            "--judge-max-tokens",
            "6",
            "--concurrency",
            "2",
        ])
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    // Every verdict unparsable: said loudly, with a sample reply, and not a success.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("12 of 12 verdicts unparsable (100%); one such reply: \""),
        "{err}"
    );
    let lines = std::fs::read_to_string(eval.join("model_judgment/tiny/m.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 12, "the judged games are saved");
    let out = Command::new(bin).args(["arena", "report"]).arg(&eval).output().unwrap();
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("> **Warning: 12 of 12 games (100%)"), "{md}");
    assert!(
        md.contains("| overall | 6 | n/a | n/a | n/a | n/a | n/a | – | 12 of 12 |"),
        "{md}"
    );
    // A random tiny model writes no verdict label, even when asked again.
    for l in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["label"].is_null());
        assert!(v["reask"].is_string());
    }
}
