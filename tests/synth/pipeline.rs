//! The synthesis pipeline against a project-written scripted endpoint (tiny_http on loopback):
//! per page of `tests/fixtures/synth/web.jsonl` (each names its script with `DOC(name)`), the
//! endpoint writes a question, candidates, scores and tests — with a 429, a reply that is not
//! JSON, a scorer that never gives a parsable score, a low score, failing tests, two near
//! duplicates and a question from a benchmark among them. The drop reasons must equal the hand
//! count; a rerun, and a SIGKILL plus a rerun, must give the same shards byte for byte; the key
//! must appear in no file; the shards must validate and train.

use crate::common::{fixtures, ok, repo};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "sk-synth-test-3f9a1c";

/// What each scripted page asks for: the question's function, its body, its tests.
fn spec(name: &str) -> (&'static str, &'static str, &'static str) {
    match name {
        "keep2" => (
            "Implement mul(a, b) in Python: multiply two numbers, integers or floats, and return the product.",
            "def mul(a, b):\n    return a * b",
            "assert mul(2, 3) == 6\nassert mul(-2, 4) == -8",
        ),
        "reask" => (
            "Write clamp(x, lo, hi) in Python: return x limited to the closed range from lo to hi.",
            "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))",
            "assert clamp(5, 0, 3) == 3\nassert clamp(-1, 0, 3) == 0",
        ),
        "ratelimited" => (
            "Create a Python function sub(a, b) giving the difference a minus b for any two numbers.",
            "def sub(a, b):\n    return a - b",
            "assert sub(5, 3) == 2",
        ),
        "garbage" => (
            "Define neg(x) in Python so that it returns the additive inverse of its numeric argument.",
            "def neg(x):\n    return -x",
            "assert neg(4) == -4",
        ),
        "dupa" | "dupb" => (
            // Long, so the one differing word (the DOC marker) leaves them near duplicates.
            "Write square(n) in Python returning n times n; it must accept negative numbers and zero as well, \
             work for floats as for integers, never modify global state, return the same type it is given, \
             and come with a docstring that explains what it computes and shows one example call with its \
             result, so that a reader new to Python understands it at once.",
            "def square(n):\n    return n * n",
            "assert square(-3) == 9",
        ),
        "contaminated" => (
            "Write a function that returns the sum of two integers given as arguments and handles negative numbers too.",
            "def add(a, b):\n    return a + b",
            "assert add(-1, 1) == 0",
        ),
        "testsfail" => (
            "Write add(a, b) in Python that returns the sum of a and b.",
            "def add(a, b):\n    return a + b",
            "assert add(2, 3) == 6",
        ),
        _ => (
            "Write a Python function add(a, b) that returns the sum of its two arguments.",
            "def add(a, b):\n    return a + b",
            "assert add(2, 3) == 5\nassert add(-1, 1) == 0",
        ),
    }
}

/// The scripted endpoint: every reply a function of the request (plus one 429 and one
/// non-JSON reply the first time a request of those pages is seen).
struct Endpoint {
    url: String,
    requests: Arc<Mutex<u64>>,
    _server: Arc<tiny_http::Server>,
}

fn doc_name(text: &str) -> Option<String> {
    let start = text.find("DOC(")? + 4;
    Some(text[start..].split(')').next()?.to_string())
}

fn reply(status: u16, body: String) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_string(body).with_status_code(status)
}

fn chat(text: &str, seed: u64) -> String {
    json!({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
           "model": "scripted", "usage": {"prompt_tokens": 100 + seed % 7, "completion_tokens": 20}})
    .to_string()
}

impl Endpoint {
    fn start(delay: Duration) -> Endpoint {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let requests = Arc::new(Mutex::new(0u64));
        let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
        for _ in 0..4 {
            let (server, requests, seen) = (server.clone(), requests.clone(), seen.clone());
            std::thread::spawn(move || {
                for mut req in server.incoming_requests() {
                    let mut raw = String::new();
                    let _ = req.as_reader().read_to_string(&mut raw);
                    let auth = req
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv("Authorization"))
                        .map(|h| h.value.to_string());
                    *requests.lock().unwrap() += 1;
                    std::thread::sleep(delay);
                    if auth.as_deref() != Some(&format!("Bearer {KEY}")) {
                        let _ = req.respond(reply(401, "{\"error\":\"bad key\"}".into()));
                        continue;
                    }
                    let body: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
                    let (status, text) = answer(&body, &raw, &seen);
                    let _ = req.respond(reply(status, text));
                }
            });
        }
        Endpoint {
            url: format!("http://127.0.0.1:{port}/v1"),
            requests,
            _server: server,
        }
    }
}

fn answer(body: &Value, raw: &str, seen: &Mutex<HashSet<String>>) -> (u16, String) {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let first = messages
        .first()
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    let seed = body["seed"].as_u64().unwrap_or(0);
    let Some(name) = doc_name(&first) else {
        return (400, "{\"error\":\"no DOC marker\"}".into());
    };
    let first_time = seen.lock().unwrap().insert(raw.to_string());
    if first_time && name == "ratelimited" {
        return (429, "{\"error\":\"slow down\"}".into());
    }
    if first_time && name == "garbage" {
        return (200, "<html>upstream error</html>".into());
    }
    let (question, code, tests) = spec(&name);
    let text = if first.contains("PAGE:") {
        match name.as_str() {
            "skip" => "SKIP".to_string(),
            "garbled" => "Sure! Here is a nice question about adding numbers for you.".to_string(),
            "haskell" => format!(
                "LANGUAGE: haskell\nQUESTION:\nWrite a Haskell function add :: Int -> Int -> Int that sums its arguments. DOC({name})"
            ),
            _ => format!("LANGUAGE: python\nQUESTION:\n{question} DOC({name})"),
        }
    } else if first.contains("Rate the answer") {
        match name.as_str() {
            "badscore" => "This answer looks great to me!".to_string(),
            // Parsable only when asked again (the conversation then holds the re-ask).
            "reask" if messages.len() == 1 => "Great answer, 9 out of 10.".to_string(),
            "lowscore" => "SCORE: 4\nREASON: it ignores the edge cases.".to_string(),
            _ => "SCORE: 9\nREASON: correct and clear.".to_string(),
        }
    } else if first.contains("Write tests") {
        format!("```python\n{tests}\n```")
    } else if name == "haskell" {
        "```haskell\nadd :: Int -> Int -> Int\nadd a b = a + b\n```".to_string()
    } else {
        format!("Here is the function:\n\n```python\n{code}\n```\n\nIt is O(1).")
    };
    (200, chat(&text, seed))
}

/// Writes a synth config for `out` against `url`.
fn config(dir: &Path, out: &Path, url: &str, concurrency: usize) -> PathBuf {
    let fx = fixtures().join("synth");
    let text = format!(
        r#"
[input]
sources = ["{web}"]
id_field = "id"
url_field = "url"

[generator]
url = "{url}"
model = "scripted-generator"
key_env = "SYNTH_TEST_KEY"
concurrency = {concurrency}
timeout_s = 30
backoff_s = 0.01
price_input_per_mtok = 0.5
price_output_per_mtok = 1.5

[scorer]
url = "{url}"
model = "scripted-scorer"
key_env = "SYNTH_TEST_KEY"
backoff_s = 0.01

[respond]
candidates = 2

[decontam]
against = ["{bench}"]

[output]
dir = "{out}"
records_per_shard = 4
seed = 11
"#,
        web = fx.join("web.jsonl").display(),
        bench = fx.join("benchmark.jsonl").display(),
        out = out.display(),
    );
    let path = dir.join(format!("{}.toml", out.file_name().unwrap().to_string_lossy()));
    std::fs::write(&path, text).unwrap();
    path
}

fn synth(cfg: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["synth", "--quiet", "--config"])
        .arg(cfg)
        .env("SYNTH_TEST_KEY", KEY)
        .output()
        .unwrap()
}

/// Every file under `dir` (relative path → bytes).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn shards(out: &Path) -> BTreeMap<String, Vec<u8>> {
    files(&out.join("shards"))
}

fn summary(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn a_scripted_run_keeps_drops_resumes_and_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::start(Duration::ZERO);
    let a = tmp.path().join("a");
    let out = synth(&config(tmp.path(), &a, &endpoint.url, 3));
    ok(&out);
    let s = summary(&a);
    let dropped: BTreeMap<String, u64> = serde_json::from_value(s["dropped"].clone()).unwrap();
    let expected: BTreeMap<String, u64> = [
        ("recall:no_code_signals", 1),
        ("recall:too_short", 1),
        ("instruct:skipped", 1),
        ("instruct:unparsable", 1),
        ("score:unparsable", 1),
        ("validate:below_threshold", 1),
        ("validate:tests_failed", 1),
        ("dedup:near_duplicate", 1),
        ("decontam:benchmark.jsonl", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(dropped, expected, "{s:#}");
    assert_eq!(s["kept"], 7);
    assert_eq!(s["documents"], 16);
    assert!(s["usage"]["generator"]["requests"].as_u64().unwrap() > 20, "{s:#}");
    assert!(s["cost_usd"].as_f64().unwrap() > 0.0);

    // The kept records, in input order, with their provenance.
    let mut records = vec![];
    for (name, bytes) in shards(&a) {
        if name.ends_with(".jsonl.zst") {
            let text = String::from_utf8(zstd::decode_all(bytes.as_slice()).unwrap()).unwrap();
            records.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
        }
    }
    let sources: Vec<&str> = records.iter().map(|r| r["meta"]["source"].as_str().unwrap()).collect();
    assert_eq!(
        sources,
        [
            "p-keep-1",
            "p-ratelimited",
            "p-garbage",
            "p-dup-a",
            "p-haskell",
            "p-reask",
            "p-keep-2"
        ]
    );
    assert_eq!(records[0]["meta"]["tests"], "passed");
    assert_eq!(records[4]["meta"]["tests"], "not_run", "Haskell does not run here");
    assert_eq!(records[0]["meta"]["url"], "https://example.org/add");
    assert_eq!(records[0]["meta"]["score"], 9);
    assert_eq!(
        shards(&a).keys().filter(|k| k.ends_with(".zst")).count(),
        2,
        "4 records per shard"
    );

    // The key is in no file the run wrote.
    for (name, bytes) in files(&a) {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(KEY),
            "{name} holds the API key"
        );
    }

    // A rerun asks nothing and rewrites the same bytes; a second run from scratch gives the
    // same shards too.
    let before = *endpoint.requests.lock().unwrap();
    ok(&synth(&config(tmp.path(), &a, &endpoint.url, 3)));
    assert_eq!(
        *endpoint.requests.lock().unwrap(),
        before,
        "a finished run asks nothing again"
    );
    let b = tmp.path().join("b");
    ok(&synth(&config(tmp.path(), &b, &endpoint.url, 1)));
    assert_eq!(shards(&a), shards(&b), "same seed, other concurrency: the same shards");
    assert_eq!(summary(&a)["dropped"], summary(&b)["dropped"]);

    // The shards are training data.
    let v = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["data", "validate"])
        .arg(a.join("shards"))
        .output()
        .unwrap();
    ok(&v);
    let r = repo();
    let train_cfg = tmp.path().join("train.toml");
    std::fs::write(
        &train_cfg,
        format!(
            r#"
[run]
name = "synth"
output_dir = "{out}"
[model]
init_config = "{r}/configs/models/smoke-tiny.json"
tokenizer = "{r}/data/sample/tokenizer"
[data]
seq_len = 256
shuffle_buffer = 4
[batch]
micro_batch_rows = 2
global_rows = 2
[log]
progress = "lines"
[[stage]]
name = "synth"
data = ["{shards}"]
steps = 2
"#,
            out = tmp.path().join("runs").display(),
            r = r.display(),
            shards = a.join("shards").display(),
        ),
    )
    .unwrap();
    let t = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["train", "--config"])
        .arg(&train_cfg)
        .output()
        .unwrap();
    ok(&t);
}

#[test]
fn a_run_killed_mid_way_resumes_to_the_same_output() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    let fast = Endpoint::start(Duration::ZERO);
    ok(&synth(&config(tmp.path(), &clean, &fast.url, 2)));

    let slow = Endpoint::start(Duration::from_millis(40));
    let killed = tmp.path().join("killed");
    let cfg = config(tmp.path(), &killed, &slow.url, 2);
    let mut child = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["synth", "--quiet", "--config"])
        .arg(&cfg)
        .env("SYNTH_TEST_KEY", KEY)
        .spawn()
        .unwrap();
    let journal = killed.join("journal.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let lines = std::fs::read_to_string(&journal)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= 5 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the run journaled nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let journaled = std::fs::read_to_string(&journal).unwrap().lines().count();
    assert!(
        journaled < 15,
        "killed too late to test anything ({journaled} documents done)"
    );
    // A torn last line, as a kill mid-write leaves.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"doc\": 14, \"sour"))
        .unwrap();
    ok(&synth(&cfg));
    assert_eq!(shards(&killed), shards(&clean));
    let (k, c) = (summary(&killed), summary(&clean));
    assert_eq!(
        (&k["dropped"], &k["kept"], &k["usage"]),
        (&c["dropped"], &c["kept"], &c["usage"])
    );
}

#[test]
fn config_mistakes_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &tmp.path().join("x"), "http://127.0.0.1:9/v1", 1);
    let text = std::fs::read_to_string(&cfg).unwrap();
    for (from, to, key) in [
        ("candidates = 2", "candidates = 0", "respond.candidates"),
        ("candidates = 2", "candidates = 2\ncandidate = 3", "candidate"),
        (
            "records_per_shard = 4",
            "records_per_shard = 0",
            "output.records_per_shard",
        ),
    ] {
        std::fs::write(&cfg, text.replace(from, to)).unwrap();
        let out = synth(&cfg);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[test]
fn the_two_stage_recipes_load() {
    for name in ["stage1", "stage2"] {
        let path = repo().join(format!("configs/synth/{name}.toml"));
        let cfg = syncoder::synth::SynthConfig::load(&path).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(
            cfg.output.dir.ends_with(format!("data/syncode-instruct/{name}")),
            "{name}"
        );
    }
    let train = syncoder::train::RunConfig::load(&repo().join("configs/synth/sft-two-stage-0.5b.toml"), &[]).unwrap();
    assert_eq!(train.stages.len(), 2);
}
