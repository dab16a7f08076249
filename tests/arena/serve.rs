//! `syncoder serve`: an OpenAI-compatible endpoint over a checkpoint, answering as `generate`
//! does, usable as the CodeArena judge with many concurrent keep-alive connections.

use crate::common::fixtures;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running server: the process, its base URL, and the lines it writes to standard error.
struct Server(Child, String, std::sync::mpsc::Receiver<String>);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    /// The log lines written so far.
    fn log(&self) -> Vec<String> {
        std::thread::sleep(std::time::Duration::from_millis(100));
        self.2.try_iter().collect()
    }
}

/// Starts `syncoder serve` on a free port and returns its base URL.
fn serve() -> Server {
    serve_with(&[], &[])
}

fn serve_with(extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["serve", "--model"])
        .arg(fixtures().join("loss_model"))
        .args(["--port", "0", "--name", "tiny"])
        .args(extra)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    reader.read_line(&mut line).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in reader.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let url = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    Server(child, format!("http://{url}"), rx)
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
    assert_eq!(
        client.get(format!("{}/nothing", s.1)).send().unwrap().status().as_u16(),
        404
    );
}

#[test]
fn a_served_checkpoint_can_be_the_judge() {
    // The judge prompt is longer than the tiny model's 1024 positions.
    let s = serve_with(&["--max-model-len", "4096"], &[]);
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

fn post(s: &Server, body: serde_json::Value) -> reqwest::blocking::Response {
    post_to(&s.1, body)
}

fn post_to(base: &str, body: serde_json::Value) -> reqwest::blocking::Response {
    reqwest::blocking::Client::new()
        .post(format!("{base}/chat/completions"))
        .json(&body)
        .send()
        .unwrap()
}

/// The `data:` payloads of a server-sent-events body.
fn sse_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(|d| d.trim().to_string())
        .collect()
}

#[test]
fn streaming_stop_strings_and_refusals_behave_as_openai_clients_expect() {
    let s = serve();
    let ask = |extra: serde_json::Value| {
        let mut body = serde_json::json!({
            "model": "tiny",
            "messages": [{"role": "user", "content": "Write a function that adds two numbers."}],
            "max_tokens": 40,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let whole: serde_json::Value = post(&s, ask(serde_json::json!({}))).json().unwrap();
    let text = whole["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(text.chars().count() > 8, "{text:?}");

    // Streamed: the deltas add up to the same text; then the finish reason, usage and [DONE].
    let r = post(&s, ask(serde_json::json!({"stream": true})));
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let data = sse_data(&r.text().unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<serde_json::Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "tiny"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, text);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(
        finish["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], serde_json::json!([]));
    assert_eq!(usage["usage"], whole["usage"]);

    // A stop string ends the reply before it, in both modes.
    let cut: String = text.chars().skip(4).take(3).collect();
    let expect: String = text[..text.find(&cut).unwrap()].to_string();
    let stopped: serde_json::Value = post(&s, ask(serde_json::json!({"stop": [cut.clone()]})))
        .json()
        .unwrap();
    assert_eq!(stopped["choices"][0]["message"]["content"], expect.as_str());
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    let data = sse_data(
        &post(&s, ask(serde_json::json!({"stop": cut, "stream": true})))
            .text()
            .unwrap(),
    );
    let streamed: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, expect);

    // Refusals that name what is wrong.
    let status_and_message = |body: serde_json::Value| {
        let r = post(&s, body);
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().unwrap();
        (status, v["error"]["message"].as_str().unwrap_or("").to_string())
    };
    let (st, msg) = status_and_message(ask(serde_json::json!({"model": "gpt-4o"})));
    assert!(
        st == 404 && msg.contains("gpt-4o") && msg.contains("tiny"),
        "{st} {msg}"
    );
    let (st, msg) = status_and_message(ask(serde_json::json!({"n": 2})));
    assert!(st == 400 && msg.contains("`n`"), "{st} {msg}");
    let (st, msg) = status_and_message(ask(serde_json::json!({"logprobs": true})));
    assert!(st == 400 && msg.contains("logprobs"), "{st} {msg}");
    let (st, msg) = status_and_message(ask(serde_json::json!({"max_tokens": -5})));
    assert!(st == 400 && msg.contains("max_tokens"), "{st} {msg}");
    let (st, msg) = status_and_message(ask(serde_json::json!({"max_tokens": 1_000_000_000_000u64})));
    assert!(st == 400 && msg.contains("context"), "{st} {msg}");

    // One log line per request.
    let log = s.log();
    assert!(
        log.iter().any(|l| l.starts_with("POST /v1/chat/completions 200")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.starts_with("POST /v1/chat/completions 404")),
        "{log:?}"
    );
}

#[test]
fn requests_that_arrive_together_get_the_answers_they_get_alone() {
    let s = serve();
    let prompts = [
        "Write a function that adds two numbers.",
        "Reverse a string.",
        "hello",
        "Sort a list.",
    ];
    let body = |p: &str, seed: u64| {
        serde_json::json!({"messages": [{"role": "user", "content": p}], "max_tokens": 12 + seed as usize,
                           "temperature": if seed.is_multiple_of(2) { 0.0 } else { 0.8 }, "seed": seed})
    };
    let alone: Vec<serde_json::Value> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| post(&s, body(p, i as u64)).json().unwrap())
        .collect();
    let together: Vec<serde_json::Value> = std::thread::scope(|sc| {
        let handles: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let base = s.1.as_str();
                sc.spawn(move || post_to(base, body(p, i as u64)).json::<serde_json::Value>().unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (a, t) in alone.iter().zip(&together) {
        assert_eq!(a["choices"], t["choices"]);
        assert_eq!(a["usage"], t["usage"]);
    }
}

#[test]
fn a_key_guards_the_api_and_a_public_bind_requires_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["serve", "--model"])
        .arg(fixtures().join("loss_model"))
        .args(["--host", "0.0.0.0", "--port", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--api-key-env"), "{err}");
    let s = serve_with(&["--api-key-env", "SERVE_TEST_KEY"], &[("SERVE_TEST_KEY", "k-123")]);
    let client = reqwest::blocking::Client::new();
    let url = format!("{}/models", s.1);
    assert_eq!(client.get(&url).send().unwrap().status().as_u16(), 401);
    let wrong = client.get(&url).bearer_auth("nope").send().unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let right = client.get(&url).bearer_auth("k-123").send().unwrap();
    assert_eq!(right.status().as_u16(), 200);
    assert!(s.log().iter().all(|l| !l.contains("k-123")));
}

#[test]
fn a_checkpoint_is_served_as_run_slash_step() {
    let tmp = tempfile::tempdir().unwrap();
    let step = tmp.path().join("my-run/step-00000042");
    std::fs::create_dir_all(&step).unwrap();
    for e in std::fs::read_dir(fixtures().join("loss_model")).unwrap().flatten() {
        std::fs::copy(e.path(), step.join(e.file_name())).unwrap();
    }
    std::fs::write(tmp.path().join("my-run/latest"), "step-00000042\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["serve", "--port", "0", "--model"])
        .arg(tmp.path().join("my-run"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("serving my-run/step-00000042 on"), "{line}");
}

/// `arena answer` of the fixture questions into `eval` under `name`.
fn answer(eval: &std::path::Path, name: &str, how: &[&str], max_new_tokens: &str) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args([
            "arena",
            "answer",
            "--name",
            name,
            "--max-new-tokens",
            max_new_tokens,
            "--out",
        ])
        .arg(eval)
        .arg("--questions")
        .arg(fixtures().join("codearena/questions.jsonl"))
        .args(how)
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut answers: Vec<serde_json::Value> = std::fs::read_to_string(eval.join(format!("model_answer/{name}.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    answers.sort_by_key(|a| a["question_id"].as_str().unwrap().to_string());
    answers
}

#[test]
fn answers_through_an_endpoint_equal_the_built_in_greedy_answers() {
    let s = serve();
    let tmp = tempfile::tempdir().unwrap();
    let eval = tmp.path().join("eval");
    let model = fixtures().join("loss_model");
    let here = answer(&eval, "here", &["--model", model.to_str().unwrap()], "12");
    let there = answer(&eval, "there", &["--endpoint", &s.1, "--endpoint-model", "tiny"], "12");
    assert_eq!(here.len(), 6);
    assert_eq!(here.len(), there.len());
    for (h, t) in here.iter().zip(&there) {
        assert_eq!(h["question_id"], t["question_id"]);
        assert_eq!(h["answer"], t["answer"]);
        assert_eq!(h["tokens"], t["tokens"]);
        assert_eq!(h["finish_reason"], t["finish_reason"]);
    }
    assert!(
        there[0]["endpoint"].as_str().unwrap().ends_with("model tiny"),
        "{}",
        there[0]
    );
    assert!(there[0].get("weights_sha256").is_none_or(|w| w == ""), "{}", there[0]);
}

#[test]
fn answers_may_run_to_the_end_of_the_models_context_and_are_counted_when_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let eval = tmp.path().join("eval");
    let model = fixtures().join("loss_model");
    // Far beyond the fixture model's 1024 positions: each answer stops at its stop token or where
    // the context ends, never beyond.
    let answers = answer(&eval, "long", &["--model", model.to_str().unwrap()], "100000");
    let cut = answers.iter().filter(|a| a["finish_reason"] == "length").count();
    for a in &answers {
        assert!(a["tokens"].as_u64().unwrap() < 1024, "{a}");
        assert_eq!(a["max_new_tokens"], 100000);
    }
    assert!(
        cut > 0,
        "the random tiny model should run into its context at least once"
    );
    // The report counts the cut answers of the scored questions.
    let (url, _) = {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        std::thread::spawn(move || {
            for req in server.incoming_requests() {
                let body = if *req.method() == tiny_http::Method::Get {
                    r#"{"data":[]}"#.to_string()
                } else {
                    serde_json::json!({"choices": [{"message": {"role": "assistant", "content": "[[A=B]]"}}]})
                        .to_string()
                };
                let _ = req.respond(tiny_http::Response::from_string(body));
            }
        });
        (format!("http://127.0.0.1:{port}/v1"), ())
    };
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args([
            "arena",
            "judge",
            "--name",
            "long",
            "--baseline",
            "gpt-4-turbo-2024-04-09",
            "--out",
        ])
        .arg(&eval)
        .arg("--questions")
        .arg(fixtures().join("codearena/questions.jsonl"))
        .args([
            "--judge-url",
            &url,
            "--judge-model",
            "j",
            "--concurrency",
            "2",
            "--judge-config",
        ])
        .arg(fixtures().join("codearena/judge_config.yaml"))
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval.join("report.json")).unwrap_or_else(|_| {
            let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
                .args(["arena", "report"])
                .arg(&eval)
                .output()
                .unwrap();
            assert!(out.status.success());
            std::fs::read_to_string(eval.join("report.json")).unwrap()
        }))
        .unwrap();
    let scored: std::collections::BTreeSet<String> = std::fs::read_to_string(eval.join("model_judgment/j/long.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["question_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let want = answers
        .iter()
        .filter(|a| a["finish_reason"] == "length" && scored.contains(a["question_id"].as_str().unwrap()))
        .count();
    assert_eq!(report[0]["truncated_answers"], want);
}

#[test]
fn templates_with_generation_blocks_are_served_and_generated() {
    // The R1-like template with {% generation %} blocks (fixtures of
    // scripts/make_template_fixtures.py), over the loss model's tokenizer.
    let tok = tempfile::tempdir().unwrap();
    let model = fixtures().join("loss_model");
    std::fs::copy(model.join("tokenizer.json"), tok.path().join("tokenizer.json")).unwrap();
    std::fs::copy(
        fixtures().join("template_loss/r1_generation.tokenizer_config.json"),
        tok.path().join("tokenizer_config.json"),
    )
    .unwrap();
    let gen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("chat_template/generation.json")).unwrap())
            .unwrap();
    let case = gen["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["template"] == "r1_generation" && c["record"]["id"] == "think-2")
        .unwrap();
    let mut messages = case["record"]["messages"].as_array().unwrap().clone();
    messages.pop();
    // transformers' rendering of the prompt, in this tokenizer's ids.
    let tokenizer = tokenizers::Tokenizer::from_file(model.join("tokenizer.json")).unwrap();
    let prompt_ids = tokenizer
        .encode(case["prompt_text"].as_str().unwrap(), false)
        .unwrap()
        .get_ids()
        .len();

    let file = tok.path().join("messages.json");
    std::fs::write(&file, serde_json::Value::Array(messages.clone()).to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["generate", "--model"])
        .arg(&model)
        .arg("--tokenizer")
        .arg(tok.path())
        .arg("--messages")
        .arg(&file)
        .args(["--max-new-tokens", "6", "--greedy", "--json"])
        .output()
        .unwrap();
    crate::common::ok(&out);
    let generated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let s = serve_with(&["--tokenizer", tok.path().to_str().unwrap()], &[]);
    let r: serde_json::Value = post(
        &s,
        serde_json::json!({"model": "tiny", "messages": messages, "max_tokens": 6, "temperature": 0}),
    )
    .json()
    .unwrap();
    assert_eq!(r["usage"]["prompt_tokens"], prompt_ids, "{r}");
    assert_eq!(r["choices"][0]["message"]["content"], generated["text"], "{r}");
}
