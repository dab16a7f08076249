//! CodeArena end to end on loopback: answers from a tiny model, a scripted judge server (a real
//! HTTP server on 127.0.0.1) giving chosen verdicts, a reply without a label (then one on the
//! re-ask), conflicting labels and a 429 with Retry-After; exact scores on the project's
//! fixture questions; resume after killing the judging process midway; the API key never in
//! any output or file.

use crate::common::fixtures;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "sk-test-SECRET-98765";
const BASELINE: &str = "gpt-4-turbo-2024-04-09";

fn questions() -> PathBuf {
    fixtures().join("codearena/questions.jsonl")
}

/// Requests seen per (question, game), and the replies to give.
#[derive(Default)]
struct Judge {
    seen: HashMap<(String, u8), usize>,
    bad_auth: usize,
    /// Every request body, in arrival order.
    bodies: Vec<serde_json::Value>,
}

/// The scripted verdicts: per question, (game 1 reply, game 2 reply). Game 1 has the baseline
/// (or the opponent) as A; game 2 as B.
fn script(q: &str, game: u8, attempt: usize) -> (u16, String) {
    let v = |s: &str| (200, format!("Both answers were read carefully. Final verdict: {s}"));
    match (q, game) {
        ("Q1", 1) => v("[[B>>A]]"), // the model (B) much better: +2
        ("Q1", 2) => v("[[A>>B]]"), // the model (A) much better: +2
        ("Q2", 1) => v("[[A>B]]"),  // -1
        ("Q2", 2) => v("[[A=B]]"),  // 0
        // No label at first; the re-ask gets one: +1.
        ("Q3", 1) if attempt == 1 => (200, "I think the second is a bit better overall.".into()),
        ("Q3", 1) => v("[[B>A]]"),
        ("Q3", 2) => v("[[A=B]]"),
        ("Q4", 1) => v("[[A>B]] ... on reflection [[B>A]]"), // conflicting: unparsable, 0
        ("Q4", 2) => v("[[B>A]]"),                           // the model is A: -1
        ("Q5", _) if attempt == 1 => (429, "slow down".into()),
        ("Q5", _) => v("[[A=B]]"),
        ("Q7", 1) => v("[[A>>B]]"), // -2
        ("Q7", 2) => v("[[A>B]]"),  // +1
        _ => (400, "unexpected question".into()),
    }
}

/// Answers the client's check (`GET /v1/models`) with an empty list; gives back any other
/// request.
fn unless_models_list(req: tiny_http::Request) -> Option<tiny_http::Request> {
    if *req.method() != tiny_http::Method::Get {
        return Some(req);
    }
    let _ = req.respond(tiny_http::Response::from_string(r#"{"object":"list","data":[]}"#));
    None
}

fn start_judge(delay: Duration) -> (String, Arc<Mutex<Judge>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    let state = Arc::new(Mutex::new(Judge::default()));
    let st = state.clone();
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let Some(mut req) = unless_models_list(req) else {
                continue;
            };
            let mut body = String::new();
            req.as_reader().read_to_string(&mut body).unwrap();
            let auth_ok = req
                .headers()
                .iter()
                .any(|h| h.field.equiv("Authorization") && h.value.as_str() == format!("Bearer {SECRET}"));
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let msgs = v["messages"].as_array().unwrap();
            let user = msgs.iter().find(|m| m["role"] == "user").unwrap()["content"]
                .as_str()
                .unwrap()
                .to_string();
            let q = user
                .split("[Q")
                .nth(1)
                .map(|s| format!("Q{}", &s[..1]))
                .unwrap_or_default();
            // Game 1 when the baseline's answer comes first.
            let marker = format!("BASELINE-ANSWER-{q}");
            let base_pos = user.find(&marker);
            let model_pos = user.rfind("model-answer-start");
            let game = match (base_pos, model_pos) {
                (Some(b), Some(m)) => {
                    if b < m {
                        1
                    } else {
                        2
                    }
                }
                _ => 0,
            };
            let reask = msgs.len() > 2;
            let attempt = {
                let mut s = st.lock().unwrap();
                if !auth_ok {
                    s.bad_auth += 1;
                }
                s.bodies.push(v.clone());
                let n = s.seen.entry((q.clone(), game)).or_insert(0);
                *n += 1;
                *n
            };
            std::thread::sleep(delay);
            let (status, text) = script(&q, game, if reask { 2 } else { attempt });
            let resp = if status == 200 {
                serde_json::json!({"choices": [{"message": {"role": "assistant", "content": text}}],
                                   "usage": {"prompt_tokens": 10, "completion_tokens": 5}})
                .to_string()
            } else {
                text
            };
            let mut r = tiny_http::Response::from_string(resp).with_status_code(status);
            if status == 429 {
                r = r.with_header(tiny_http::Header::from_bytes("Retry-After", "1").unwrap());
            }
            let _ = req.respond(r);
        }
    });
    (format!("http://127.0.0.1:{port}/v1"), state)
}

fn syncoder(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_syncoder"));
    c.args(args).env("OPENAI_API_KEY", SECRET);
    // Never the network or the user's cache for the official files: a closed port.
    c.env("SYNCODER_OFFICIAL_BASE_URL", "http://127.0.0.1:9")
        .env("SYNCODER_CACHE", std::env::temp_dir().join("syncoder-test-no-cache"));
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(SECRET), "the key leaked into the output");
}

/// Answers for the model `tuned` whose text starts with a marker the judge can find.
fn write_answers(eval: &Path) {
    let out = syncoder(&["arena", "answer", "--model"], &[])
        .arg(fixtures().join("loss_model"))
        .args(["--name", "tuned", "--out"])
        .arg(eval)
        .arg("--questions")
        .arg(questions())
        .args(["--max-new-tokens", "6", "--batch-size", "3"])
        .output()
        .unwrap();
    ok(&out);
    // Prefix each generated answer with the marker (the tiny random model writes noise).
    let path = eval.join("model_answer/tuned.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["answer"] = format!("model-answer-start {}", v["answer"].as_str().unwrap()).into();
            v.to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

/// `arena judge` under the default (codearena) protocol with the project-written judge config.
fn judge_cmd(eval: &Path, url: &str, concurrency: &str) -> Command {
    let mut c = judge_base(eval, url, concurrency);
    c.arg("--judge-config")
        .arg(fixtures().join("codearena/judge_config.yaml"));
    c
}

/// `arena judge` without protocol arguments.
fn judge_base(eval: &Path, url: &str, concurrency: &str) -> Command {
    let mut c = syncoder(&["arena", "judge", "--out"], &[]);
    c.arg(eval)
        .arg("--questions")
        .arg(questions())
        .args([
            "--model",
            "tuned",
            "--baseline",
            BASELINE,
            "--judge-url",
            url,
            "--judge-model",
            "scripted-judge",
        ])
        .args(["--concurrency", concurrency, "--timeout-s", "20", "--backoff-s", "0.01"]);
    c
}

/// The fixture's categories and their `W/T` cells, counted by hand from `script`.
const HAND_CATEGORIES: &[(&str, &str)] = &[
    ("Databases and Data Handling", "50.0/0.0"),        // Q3 win, Q4 loss
    ("Development and Programming", "50.0/0.0"),        // Q1 win, Q2 loss
    ("User Interface and User Experience", "0.0/50.0"), // Q5 tie, Q7 loss
];
const HAND_SUB_CATEGORIES: &[(&str, &str)] = &[
    ("Algorithm Design and Implementation", "100.0/0.0"), // Q1
    ("Database Management", "50.0/0.0"),                  // Q3, Q4
    ("Front-End Development", "0.0/50.0"),                // Q5, Q7
    ("Memory and Concurrency Management", "0.0/0.0"),     // Q2
];

/// `(name, wt)` of a report's groups.
fn hand_cells(groups: &serde_json::Value) -> Vec<(&str, &str)> {
    groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["name"].as_str().unwrap(), g["wt"].as_str().unwrap()))
        .collect()
}

fn no_secret_in(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            no_secret_in(&p);
        } else {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(SECRET),
                "key in {}",
                p.display()
            );
        }
    }
}

#[test]
fn scores_are_exact_on_the_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let eval = tmp.path().join("eval");
    write_answers(&eval);
    let answers = std::fs::read_to_string(eval.join("model_answer/tuned.jsonl")).unwrap();
    assert_eq!(answers.lines().count(), 6, "q6 is too long and skipped");
    let (url, state) = start_judge(Duration::ZERO);
    let t0 = Instant::now();
    let out = judge_cmd(&eval, &url, "4").output().unwrap();
    ok(&out);
    // Q5's 429s are retried, each retry said as it happens.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HTTP 429") && err.contains("retrying in"), "{err}");
    assert!(t0.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was honoured");
    {
        let s = state.lock().unwrap();
        assert_eq!(s.bad_auth, 0, "every request carried the key");
        assert_eq!(s.seen[&("Q3".into(), 1)], 2, "one re-ask");
        assert_eq!(s.seen[&("Q5".into(), 1)], 2, "one retry after 429");
        assert_eq!(s.seen[&("Q1".into(), 1)], 1);
        assert!(!s.seen.contains_key(&("Q6".into(), 1)));
    }
    let out = syncoder(&["arena", "report"], &[]).arg(&eval).output().unwrap();
    ok(&out);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval.join("report.json")).unwrap()).unwrap();
    let r = &report[0];
    let o = &r["overall"];
    assert_eq!(
        (
            o["n"].as_u64(),
            o["wins"].as_u64(),
            o["ties"].as_u64(),
            o["losses"].as_u64()
        ),
        (Some(6), Some(2), Some(1), Some(3))
    );
    assert!((o["score"].as_f64().unwrap() - 2.5 / 6.0).abs() < 1e-12);
    let ci = o["score_ci"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= 2.5 / 6.0 && 2.5 / 6.0 <= ci[1].as_f64().unwrap());
    assert_eq!(r["skipped_too_long"], 1);
    assert_eq!(r["unparsable_games"], 1);
    assert_eq!(r["opponent"], BASELINE);
    let cat = |name: &str| {
        r["by_category"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap()
            .clone()
    };
    let db = cat("Databases and Data Handling");
    assert_eq!((db["wins"].as_u64(), db["losses"].as_u64()), (Some(1), Some(1)));
    // The leaderboard's cells against a hand count (categories from the records' `level`):
    // wins Q1 Q3, tie Q5, losses Q2 Q4 Q7; Q6 (too long) nowhere.
    assert_eq!(o["wt"], "33.3/16.7");
    assert_eq!(hand_cells(&r["by_category"]), HAND_CATEGORIES);
    assert_eq!(hand_cells(&r["by_sub_category"]), HAND_SUB_CATEGORIES);
    let langs: Vec<&str> = r["by_language"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(langs.contains(&"SQL") && langs.contains(&"Python"));
    let md = std::fs::read_to_string(eval.join("report.md")).unwrap();
    assert!(md.contains("Databases and Data Handling"));
    // Q4's unparsable game leaves its groups under 90% parsed: n/a in the leaderboard form.
    assert!(
        md.contains("| n/a |") && md.contains("Database Management n/a;"),
        "{md}"
    );
    assert!(std::fs::read_to_string(eval.join("report.svg"))
        .unwrap()
        .starts_with("<svg"));
    no_secret_in(tmp.path());
    // Judging again asks nothing.
    let before: usize = state.lock().unwrap().seen.values().sum();
    ok(&judge_cmd(&eval, &url, "4").output().unwrap());
    assert_eq!(state.lock().unwrap().seen.values().sum::<usize>(), before);
}

#[test]
fn a_killed_judging_run_resumes_without_asking_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let eval = tmp.path().join("eval");
    write_answers(&eval);
    let (url, state) = start_judge(Duration::from_millis(150));
    let file = eval.join("model_judgment/scripted-judge/tuned.jsonl");
    let mut child = judge_cmd(&eval, &url, "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::fs::read_to_string(&file).map_or(0, |t| t.lines().count()) < 4 && t0.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let written: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        written.len() >= 4 && written.len() < 12,
        "killed midway: {}",
        written.len()
    );
    let asked_before: HashMap<(String, u8), usize> = state.lock().unwrap().seen.clone();
    ok(&judge_cmd(&eval, &url, "2").output().unwrap());
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12, "6 questions × 2 games, none lost");
    let mut keys: Vec<(String, u64)> = lines
        .iter()
        .map(|j| {
            (
                j["question_id"].as_str().unwrap().to_string(),
                j["game"].as_u64().unwrap(),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 12, "no game written twice");
    // Games finished before the kill were not asked again.
    let seen = state.lock().unwrap().seen.clone();
    for j in &written {
        let q = format!("Q{}", j["question_id"].as_str().unwrap());
        let key = (q, j["game"].as_u64().unwrap() as u8);
        assert_eq!(seen[&key], asked_before[&key], "{key:?} asked again after the resume");
    }
    no_secret_in(tmp.path());
}

/// Judgments record their protocol: judging again in the same directory with another judge
/// max_tokens (part of the protocol) refuses, naming the file, and asks the judge nothing;
/// the same protocol resumes (nothing left to ask); the report reads the file.
#[test]
fn a_changed_protocol_refuses_to_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let eval = tmp.path().join("eval");
    write_answers(&eval);
    let (url, state) = start_judge(Duration::ZERO);
    ok(&judge_cmd(&eval, &url, "4").output().unwrap());
    let file = eval.join("model_judgment/scripted-judge/tuned.jsonl");
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&file).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["protocol"].as_str().unwrap().len(), 16, "{first}");
    let asked = state.lock().unwrap().seen.values().sum::<usize>();
    let out = judge_cmd(&eval, &url, "4")
        .args(["--judge-max-tokens", "999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tuned.jsonl") && err.contains("protocol") && err.contains("another --out"),
        "{err}"
    );
    assert_eq!(
        state.lock().unwrap().seen.values().sum::<usize>(),
        asked,
        "nothing asked"
    );
    ok(&judge_cmd(&eval, &url, "4").output().unwrap());
    assert_eq!(
        state.lock().unwrap().seen.values().sum::<usize>(),
        asked,
        "nothing left to ask"
    );
    ok(&syncoder(&["arena", "report"], &[]).arg(&eval).output().unwrap());
}

/// `arena export` writes the official files (games in the official order, replies joined as the
/// official script joins them, `id` the line index), `arena import` reads them into a new
/// directory with the same scores, category by category, and exporting the import gives the
/// same bytes again; judging more into the imported pairing under a live protocol is refused.
#[test]
fn export_and_import_round_trip_the_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let eval = tmp.path().join("eval");
    write_answers(&eval);
    let (url, _state) = start_judge(Duration::ZERO);
    ok(&judge_cmd(&eval, &url, "4").output().unwrap());
    let config = fixtures().join("codearena/judge_config.yaml");
    let export = |from: &Path, questions: &Path, to: &Path| {
        let out = syncoder(&["arena", "export"], &[])
            .arg(from)
            .args([
                "--format",
                "codearena",
                "--name",
                "tuned",
                "--judge",
                "scripted-judge",
                "--out",
            ])
            .arg(to)
            .arg("--questions")
            .arg(questions)
            .arg("--judge-config")
            .arg(&config)
            .output()
            .unwrap();
        ok(&out);
    };
    let official = tmp.path().join("official");
    export(&eval, &questions(), &official);
    let read = |p: PathBuf| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let results = read(official.join("results.jsonl"));
    let judged = read(official.join("results.jsonl.judge"));
    assert_eq!((results.len(), judged.len()), (6, 6), "Q6 has no answer");
    assert_eq!(results[0]["model"], "tuned");
    assert!(results[0]["response"]
        .as_str()
        .unwrap()
        .starts_with("model-answer-start"));
    assert_eq!(
        results[0]["level"][1], "Algorithm Design and Implementation",
        "the record is kept"
    );
    let q1 = &judged[0];
    assert_eq!(
        (q1["id"].as_u64(), q1["question"][0].as_str()),
        (Some(0), results[0]["messages"][0]["content"].as_str())
    );
    // The first official game has the baseline as A: Q1's scripted game 1 said B (the model) >> A.
    assert_eq!(q1["games"][0]["score"], "B>>A");
    assert_eq!(q1["games"][1]["score"], "A>>B");
    let prompt = q1["games"][0]["user_prompt"].as_str().unwrap();
    assert!(prompt.find("BASELINE-ANSWER-Q1").unwrap() < prompt.find("model-answer-start").unwrap());
    // Q3's first game needed a re-ask: both replies, each after a newline.
    let q3 = judged[2]["games"][0]["judgment"].as_str().unwrap();
    assert!(
        q3.starts_with("\nI think the second") && q3.contains("\nBoth answers") && q3.ends_with("[[B>A]]"),
        "{q3}"
    );
    assert!(judged[3]["games"][0]["score"].is_null(), "Q4's conflicting labels");

    let again = tmp.path().join("imported");
    let out = syncoder(&["arena", "import"], &[])
        .arg(&official)
        .args(["--name", "tuned", "--judge", "scripted-judge", "--out"])
        .arg(&again)
        .arg("--categories")
        .arg(fixtures().join("codearena/categories.json"))
        .output()
        .unwrap();
    ok(&out);
    let report = |dir: &Path| -> serde_json::Value {
        ok(&syncoder(&["arena", "report"], &[]).arg(dir).output().unwrap());
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
            [0]
        .clone()
    };
    let (a, b) = (report(&eval), report(&again));
    for key in [
        "overall",
        "by_category",
        "by_sub_category",
        "by_language",
        "by_difficulty",
    ] {
        let strip = |v: &serde_json::Value| -> Vec<(String, String, u64, u64, u64, u64)> {
            let list = if v.is_array() {
                v.as_array().unwrap().clone()
            } else {
                vec![v.clone()]
            };
            list.iter()
                .map(|g| {
                    (
                        g["name"].to_string(),
                        g["wt"].to_string(),
                        g["n"].as_u64().unwrap(),
                        g["wins"].as_u64().unwrap(),
                        g["ties"].as_u64().unwrap(),
                        g["unparsable_games"].as_u64().unwrap(),
                    )
                })
                .collect()
        };
        assert_eq!(strip(&a[key]), strip(&b[key]), "{key}");
    }
    assert_eq!(b["overall"]["wt"], "33.3/16.7");
    assert_eq!(hand_cells(&b["by_sub_category"]), HAND_SUB_CATEGORIES);
    assert!(b["questions_source"].as_str().unwrap().contains("results.jsonl"));

    // Exporting the import gives the same files.
    let twice = tmp.path().join("twice");
    export(&again, &official.join("results.jsonl"), &twice);
    for f in ["results.jsonl", "results.jsonl.judge"] {
        assert_eq!(
            std::fs::read_to_string(official.join(f)).unwrap(),
            std::fs::read_to_string(twice.join(f)).unwrap(),
            "{f}"
        );
    }
    // Importing again over it is refused; so is judging the imported pairing under a protocol.
    let out = syncoder(&["arena", "import"], &[])
        .arg(&official)
        .args(["--name", "tuned", "--judge", "scripted-judge", "--out"])
        .arg(&again)
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("exists"));
    let out = judge_cmd(&again, &url, "4").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("imported:"), "{err}");
}

/// The official dataset is read at the leaderboard's revision (05a5f4c) from the Hugging Face
/// cache, and with the official task-type map by default: offline without that map, the error
/// says where to put it; with a map given, the answers are made and the source recorded.
#[test]
fn the_official_dataset_is_read_at_its_pinned_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hf/hub/datasets--CSJianYang--CodeArena");
    let commit = "05a5f4c0000000000000000000000000000000aa";
    std::fs::create_dir_all(hub.join("refs")).unwrap();
    std::fs::write(hub.join("refs/05a5f4c"), commit).unwrap();
    let snap = hub.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::copy(questions(), snap.join("CodeArena.jsonl")).unwrap();
    let eval = tmp.path().join("eval");
    let answer = |extra: &[&str]| {
        syncoder(&["arena", "answer", "--model"], &[])
            .arg(fixtures().join("loss_model"))
            .args(["--name", "m", "--out"])
            .arg(&eval)
            .args([
                "--questions",
                "hf://datasets/CSJianYang/CodeArena",
                "--max-new-tokens",
                "2",
            ])
            .args(extra)
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HOME", tmp.path().join("hf"))
            .env("HF_HUB_CACHE", tmp.path().join("hf/hub"))
            .output()
            .unwrap()
    };
    let out = answer(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tasktype_to_levels.json")
            && err.contains("syncoder-test-no-cache")
            && err.contains("--categories"),
        "{err}"
    );
    let cats = fixtures().join("codearena/categories.json");
    ok(&answer(&["--categories", cats.to_str().unwrap()]));
    let source: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval.join("questions_source.json")).unwrap()).unwrap();
    assert_eq!(source["source"], "hf://datasets/CSJianYang/CodeArena@05a5f4c");
    assert_eq!(source["file"], "CodeArena.jsonl");
    let metas: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval.join("questions.json")).unwrap()).unwrap();
    assert!(metas
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["sub_category"] == "Memory and Concurrency Management"));
}

/// Bad official files are named by file, line and field.
#[test]
fn import_names_bad_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("official");
    std::fs::create_dir_all(&dir).unwrap();
    let lines: Vec<String> = std::fs::read_to_string(questions())
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["model"] = "m".into();
            v["response"] = "an answer".into();
            v.to_string()
        })
        .collect();
    let import = || {
        let out = syncoder(&["arena", "import"], &[])
            .arg(&dir)
            .args(["--name", "m", "--out"])
            .arg(tmp.path().join(format!("eval-{}", rand_suffix())))
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let mut broken = lines.clone();
    broken[1] = broken[1].replace("\"response\"", "\"answer\"");
    std::fs::write(dir.join("results.jsonl"), broken.join("\n")).unwrap();
    let err = import();
    assert!(err.contains("results.jsonl:2") && err.contains("`response`"), "{err}");
    std::fs::write(dir.join("results.jsonl"), lines.join("\n")).unwrap();
    // A judgment whose id names another question's line.
    let mut judged: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    judged["id"] = 2.into();
    judged["games"] = serde_json::json!([{"judgment": "x", "score": "A>B"}, {"judgment": "y", "score": null}]);
    std::fs::write(dir.join("results.jsonl.judge"), judged.to_string() + "\n").unwrap();
    let err = import();
    assert!(
        err.contains("results.jsonl.judge:1") && err.contains("question differs"),
        "{err}"
    );
    judged["id"] = 0.into();
    judged["games"] = serde_json::json!([{"judgment": "x", "score": "A>B"}]);
    std::fs::write(dir.join("results.jsonl.judge"), judged.to_string() + "\n").unwrap();
    let err = import();
    assert!(err.contains("`games`"), "{err}");
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst).to_string()
}

/// The codearena protocol (the default) reads a judge configuration in the official format: its
/// prompt reaches the judge with the protocol's sampling (0.2, 16384 tokens), the verdicts are
/// scored, and the judgments carry a digest other than the syncoder protocol's. Without
/// `--judge-config` and without network it says where the official file goes.
#[test]
fn the_codearena_protocol_reads_an_official_format_config() {
    let tmp = tempfile::tempdir().unwrap();
    let eval = tmp.path().join("eval");
    write_answers(&eval);
    let (url, state) = start_judge(Duration::ZERO);
    // Offline (a closed port stands for the official server) it says where the file goes.
    let out = judge_base(&eval, &url, "4").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--judge-config") && err.contains("syncoder-test-no-cache") && err.contains("d5ead97f"),
        "{err}"
    );
    assert_eq!(state.lock().unwrap().seen.values().sum::<usize>(), 0);
    let out = judge_cmd(&eval, &url, "4")
        .args(["--protocol", "codearena"])
        .output()
        .unwrap();
    ok(&out);
    let s = state.lock().unwrap();
    let body = s.bodies.first().expect("the judge was asked");
    assert!(body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .starts_with("You are a test judge."));
    assert!(body["messages"][1]["content"]
        .as_str()
        .unwrap()
        .starts_with("<|User Prompt|>\n"));
    assert_eq!(
        (body["temperature"].as_f64(), body["max_tokens"].as_u64()),
        (Some(0.2), Some(16384))
    );
    // Q3's first reply has no verdict: the re-ask is the judging script's sentence (read from
    // the judge_models.py beside the configuration).
    let reasks: Vec<&serde_json::Value> = s
        .bodies
        .iter()
        .filter(|b| b["messages"].as_array().is_some_and(|m| m.len() > 3))
        .collect();
    assert!(!reasks.is_empty());
    for b in reasks {
        assert_eq!(
            b["messages"][3]["content"],
            "TEST RE-ASK: now end with one verdict label"
        );
    }
    drop(s);
    let file = eval.join("model_judgment/scripted-judge/tuned.jsonl");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    assert!(lines.iter().filter(|j| !j["label"].is_null()).count() >= 10);
    // The syncoder protocol may not resume these judgments.
    let out = judge_base(&eval, &url, "4")
        .args(["--protocol", "syncoder"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("protocol"));
}

#[test]
fn bad_questions_are_named_by_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q.jsonl");
    let good = std::fs::read_to_string(questions())
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    std::fs::write(
        &q,
        format!("{good}\n{{\"id\": \"x\", \"messages\": [{{\"role\": \"user\"}}]}}\n"),
    )
    .unwrap();
    let out = syncoder(&["arena", "answer", "--model"], &[])
        .arg(fixtures().join("loss_model"))
        .args(["--name", "m", "--out"])
        .arg(tmp.path().join("e"))
        .arg("--questions")
        .arg(&q)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("q.jsonl:2") && err.contains("messages[0].content"),
        "{err}"
    );
    let out = syncoder(
        &["arena", "answer", "--model"],
        &[("HF_HUB_OFFLINE", "1"), ("HF_HOME", "/nonexistent-hf")],
    )
    .arg(fixtures().join("loss_model"))
    .args(["--name", "m", "--out"])
    .arg(tmp.path().join("e"))
    .args(["--questions", "hf://datasets/CSJianYang/CodeArena"])
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HF_HUB_OFFLINE"));
}

/// A judge that always gives `reply`; returns its URL and request counter.
fn start_fixed_judge(reply: &'static str) -> (String, Arc<Mutex<usize>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    let count = Arc::new(Mutex::new(0usize));
    let c = count.clone();
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let Some(mut req) = unless_models_list(req) else {
                continue;
            };
            let mut body = String::new();
            req.as_reader().read_to_string(&mut body).unwrap();
            *c.lock().unwrap() += 1;
            let v = serde_json::json!({"choices": [{"message": {"role": "assistant", "content": reply}}]});
            let _ = req.respond(tiny_http::Response::from_string(v.to_string()));
        }
    });
    (format!("http://127.0.0.1:{port}/v1"), count)
}

#[test]
fn compare_judges_tuned_against_base_in_both_orders() {
    let tmp = tempfile::tempdir().unwrap();
    let eval = tmp.path().join("eval");
    // A judge that always prefers position A: the swapped games cancel its bias into ties.
    let (url, count) = start_fixed_judge("A is better. [[A>B]]");
    let run = || {
        syncoder(&["compare", "--base"], &[])
            .arg(fixtures().join("loss_model"))
            .arg("--tuned")
            .arg(fixtures().join("loss_model"))
            .arg("--questions")
            .arg(questions())
            .arg("--categories")
            .arg(fixtures().join("codearena/categories.json"))
            .args(["--baseline", BASELINE, "--judge-url", &url, "--judge-model", "a-lover"])
            .arg("--judge-config")
            .arg(fixtures().join("codearena/judge_config.yaml"))
            // Execution benchmarks beside CodeArena, on the project's fixture.
            .args([
                "--exec",
                "humaneval",
                "--exec-max-new-tokens",
                "8",
                "--exec-timeout-s",
                "3",
            ])
            .arg(format!(
                "--exec-problems=humaneval={}",
                fixtures().join("exec_eval/humaneval.jsonl").display()
            ))
            // At most 4 connections: tiny_http (the scripted judge) stalls on more.
            .args([
                "--max-new-tokens",
                "4",
                "--resamples",
                "200",
                "--concurrency",
                "4",
                "--out",
            ])
            .arg(&eval)
            .output()
            .unwrap()
    };
    let out = run();
    ok(&out);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval.join("report.json")).unwrap()).unwrap();
    let pairs: Vec<(String, String)> = report
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["model"].as_str().unwrap().into(),
                r["opponent"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        pairs[0],
        ("tuned".to_string(), "base".to_string()),
        "the head-to-head comes first"
    );
    assert_eq!(pairs.len(), 3, "plus each against the baseline");
    for r in report.as_array().unwrap() {
        assert_eq!(r["overall"]["ties"], 6, "position bias cancels: {}", r["model"]);
        assert_eq!(r["overall"]["score"], 0.5);
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("tuned"));
    assert_eq!(*count.lock().unwrap(), 3 * 12);
    // The paper's table: each model's pass@1 beside the head-to-head CodeArena cell.
    let table = std::fs::read_to_string(eval.join("comparison.md")).unwrap();
    let cell = report.as_array().unwrap()[0]["overall"]["wt"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        table.contains("| model | humaneval | CodeArena (win/tie % vs base) |"),
        "{table}"
    );
    assert!(table.contains(&format!("| tuned | 0.0 | {cell} |")), "{table}");
    assert!(table.contains("| base | 0.0 | – |"), "{table}");
    assert!(eval.join("exec/base/humaneval/summary.json").is_file());
    // Everything is cached: a second run generates and asks nothing.
    let answers = std::fs::read_to_string(eval.join("model_answer/base.jsonl")).unwrap();
    ok(&run());
    assert_eq!(*count.lock().unwrap(), 3 * 12);
    assert_eq!(
        std::fs::read_to_string(eval.join("model_answer/base.jsonl")).unwrap(),
        answers
    );
}

#[test]
fn answering_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let eval = tmp.path().join("eval");
    write_answers(&eval);
    let path = eval.join("model_answer/tuned.jsonl");
    let full = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = full.lines().collect();
    // As if killed after four answers, mid-way through writing the fifth.
    std::fs::write(&path, format!("{}\n{}", lines[..4].join("\n"), &lines[4][..10])).unwrap();
    let out = syncoder(&["arena", "answer", "--model"], &[])
        .arg(fixtures().join("loss_model"))
        .args(["--name", "tuned", "--out"])
        .arg(&eval)
        .arg("--questions")
        .arg(questions())
        .args(["--max-new-tokens", "6"])
        .output()
        .unwrap();
    ok(&out);
    let now = std::fs::read_to_string(&path).unwrap();
    let now: Vec<&str> = now.lines().collect();
    assert_eq!(now.len(), 6);
    assert_eq!(now[..4], lines[..4], "finished answers are kept as they were");
    let ids: std::collections::BTreeSet<String> = now
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["question_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 6);
}

/// `arena answer` of `model` under `name` into `eval`.
fn answer(eval: &Path, model: &Path, name: &str, extra: &[&str]) -> Output {
    syncoder(&["arena", "answer", "--model"], &[])
        .arg(model)
        .args(["--name", name, "--out"])
        .arg(eval)
        .arg("--questions")
        .arg(questions())
        .args(if extra.contains(&"--max-new-tokens") {
            &[][..]
        } else {
            &["--max-new-tokens", "6"][..]
        })
        .args(extra)
        .output()
        .unwrap()
}

/// A copy of the fixture model with one weight changed.
fn other_model(dir: &Path) -> PathBuf {
    let src = fixtures().join("loss_model");
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01; // a low mantissa bit of the last weight
    std::fs::write(&path, bytes).unwrap();
    dir.to_path_buf()
}

#[test]
fn answers_of_another_model_or_setting_are_never_reused_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let eval = tmp.path().join("eval");
    let first = fixtures().join("loss_model");
    ok(&answer(&eval, &first, "x", &[]));
    let path = eval.join("model_answer/x.jsonl");
    let before = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(before.lines().next().unwrap()).unwrap();
    assert_eq!(v["weights_sha256"].as_str().unwrap().len(), 64, "{v}");
    assert_eq!(v["tokenizer_sha256"].as_str().unwrap().len(), 64, "{v}");

    // Nothing to do: said so.
    let out = answer(&eval, &first, "x", &[]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("x: 0 new answers, 6 present"), "{err}");

    // Another model, or another setting, under the same name: refused, naming both.
    let second = other_model(&tmp.path().join("other"));
    let out = answer(&eval, &second, "x", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("loss_model") && err.contains("other") && err.contains("--overwrite"),
        "{err}"
    );
    let out = answer(&eval, &first, "x", &["--max-new-tokens", "7"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("max_new_tokens 6") && err.contains("max_new_tokens 7"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        before,
        "the answers are untouched"
    );

    // Judged, then overwritten: the judgments of the replaced answers go too.
    let (url, _count) = start_fixed_judge("Fine. [[A=B]]");
    let judge = |eval: &Path| {
        syncoder(&["arena", "judge", "--out"], &[])
            .arg(eval)
            .arg("--questions")
            .arg(questions())
            .args([
                "--name",
                "x",
                "--baseline",
                BASELINE,
                "--judge-url",
                &url,
                "--judge-model",
                "j",
            ])
            .args(["--concurrency", "2"])
            .args(["--judge-config"])
            .arg(fixtures().join("codearena/judge_config.yaml"))
            .output()
            .unwrap()
    };
    ok(&judge(&eval));
    let judged = eval.join("model_judgment/j/x.jsonl");
    assert!(judged.is_file());
    ok(&answer(&eval, &second, "x", &["--overwrite"]));
    assert!(!judged.exists(), "judgments of replaced answers are removed");
    let now = std::fs::read_to_string(&path).unwrap();
    assert!(now.lines().all(|l| l.contains("other")), "{now}");

    // Answers edited under a judgment file: the stale verdicts are not reused.
    ok(&judge(&eval));
    let edited: Vec<String> = now
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["answer"] = format!("edited {}", v["answer"].as_str().unwrap()).into();
            v.to_string()
        })
        .collect();
    std::fs::write(&path, edited.join("\n") + "\n").unwrap();
    let out = judge(&eval);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("answers that have changed since"),
        "{err}"
    );
}

#[test]
fn an_unreachable_or_refusing_judge_fails_in_seconds_before_any_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let eval = tmp.path().join("eval");
    write_answers(&eval);
    // Nothing listens on port 9.
    let t0 = std::time::Instant::now();
    let out = judge_cmd(&eval, "http://127.0.0.1:9/v1", "2").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot be reached"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());

    // `compare` checks the judge before generating anything.
    let cmp = tmp.path().join("cmp");
    let out = syncoder(&["compare", "--base"], &[])
        .arg(fixtures().join("loss_model"))
        .arg("--tuned")
        .arg(fixtures().join("loss_model"))
        .arg("--out")
        .arg(&cmp)
        .arg("--questions")
        .arg(questions())
        .args([
            "--judge-url",
            "http://127.0.0.1:9/v1",
            "--judge-model",
            "j",
            "--judge-config",
        ])
        .arg(fixtures().join("codearena/judge_config.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot be reached"), "{err}");
    assert!(
        !cmp.join("model_answer").exists(),
        "answers were generated before the judge was checked"
    );

    // A judge that refuses the key: advice about the key, not "run again".
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let _ = req.respond(tiny_http::Response::from_string("{\"error\":\"bad key\"}").with_status_code(401));
        }
    });
    let out = judge_cmd(&eval, &format!("http://127.0.0.1:{port}/v1"), "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("HTTP 401") && err.contains("$OPENAI_API_KEY (set: yes)"),
        "{err}"
    );
    assert!(!err.contains(SECRET));

    // A judge listing its models, none of them the one asked for.
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let _ = req.respond(tiny_http::Response::from_string(
                r#"{"data":[{"id":"gpt-4o"},{"id":"qwen"}]}"#,
            ));
        }
    });
    let out = judge_cmd(&eval, &format!("http://127.0.0.1:{port}/v1"), "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not serve model \"scripted-judge\"") && err.contains("gpt-4o, qwen"),
        "{err}"
    );
}
