//! `[arena]` in a run config: checkpoints are handed to the CodeArena evaluator during
//! training; results land in `RUN/eval/step-N/` and as `codearena_win_rate` lines in
//! `metrics.jsonl`; a failing judge is reported and retried later, never stopping training.

use crate::common::repo;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A judge that fails its first `fail` requests with 500, then calls every game a tie.
fn start_judge(fail: usize) -> (String, Arc<AtomicUsize>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for mut req in server.incoming_requests() {
            let mut body = String::new();
            req.as_reader().read_to_string(&mut body).unwrap();
            let n = c.fetch_add(1, Ordering::SeqCst);
            let resp = if n < fail {
                tiny_http::Response::from_string("overloaded").with_status_code(500)
            } else {
                let v =
                    serde_json::json!({"choices": [{"message": {"role": "assistant", "content": "Equal. [[A=B]]"}}]});
                tiny_http::Response::from_string(v.to_string()).with_status_code(200)
            };
            let _ = req.respond(resp);
        }
    });
    (format!("http://127.0.0.1:{port}/v1"), count)
}

#[test]
fn checkpoints_are_evaluated_during_training_and_judge_failures_are_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, count) = start_judge(1);
    let r = repo();
    let text = format!(
        r#"
[run]
name = "run"
output_dir = "{out}"

[model]
path = "{r}/tests/fixtures/loss_model"

[data]
seq_len = 64
shuffle_buffer = 8
pack_window = 4

[optim]
lr = 1e-3

[batch]
micro_batch_rows = 2
global_rows = 2

[checkpoint]
every_steps = 3

[log]
progress = "lines"

[arena]
questions = "{r}/tests/fixtures/codearena/questions.jsonl"
categories = "{r}/tests/fixtures/codearena/categories.json"
judge_url = "{url}"
judge_model = "tie-judge"
judge_config = "{r}/tests/fixtures/codearena/judge_config.yaml"
opponents = ["base", "baseline:gpt-4-turbo-2024-04-09"]
every_checkpoints = 1
max_new_tokens = 4
max_retries = 0
# The scripted judge (tiny_http) stalls on more than four keep-alive connections.
concurrency = 4

[[stage]]
name = "s"
data = ["{r}/data/sample/syncode-sample.jsonl"]
steps = 6
"#,
        out = tmp.path().display(),
        r = r.display()
    );
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["train", "--config"])
        .arg(&cfg)
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("evaluating step 3 failed"),
        "the first evaluation met the failing judge: {err}"
    );
    let run = tmp.path().join("run");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let arena: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("codearena_win_rate").is_some()).collect();
    // Steps 3 (retried at the end) and 6, each against the base model and the baseline.
    let mut got: Vec<(u64, String)> = arena
        .iter()
        .map(|l| (l["step"].as_u64().unwrap(), l["opponent"].as_str().unwrap().to_string()))
        .collect();
    got.sort();
    let want: Vec<(u64, String)> = [3u64, 6]
        .iter()
        .flat_map(|&s| [(s, "base".to_string()), (s, "gpt-4-turbo-2024-04-09".to_string())])
        .collect();
    assert_eq!(got, want);
    for l in &arena {
        // The judge calls everything a tie.
        assert_eq!(l["codearena_win_rate"], 0.0);
        assert_eq!(l["codearena_tie_rate"], 1.0);
        assert_eq!(l["questions"], 6);
    }
    assert_eq!(lines.iter().filter(|l| l.get("loss").is_some()).count(), 6);
    for step in ["step-00000003", "step-00000006"] {
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("eval").join(step).join("report.json")).unwrap())
                .unwrap();
        assert_eq!(report.as_array().unwrap().len(), 2);
    }
    assert!(run.join("eval/model_answer/base.jsonl").is_file());
    // 2 checkpoints × 2 opponents × 6 questions × 2 games, plus the failed first request.
    assert_eq!(count.load(Ordering::SeqCst), 2 * 2 * 6 * 2 + 1);
    assert!(run.join("loss.svg").is_file());
}
