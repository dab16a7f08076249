//! `syncoder exec-eval` through the binary, on the project's fixtures in each benchmark's real
//! schema (`scripts/make_exec_eval_fixtures.py`): pass@1 and the verdicts equal the hand count
//! for Python and every language whose toolchain is installed (CI sets
//! `SYNCODER_EXEC_EVAL_REQUIRE=1`, so none may be missing there); hostile programs end as
//! failures of their kind without harming the evaluator; a SIGKILLed evaluator resumes with a
//! consistent results file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/exec_eval")
        .join(name)
}

fn exec_eval(bench: &str, problems: &Path, samples: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new("timeout")
        .arg("300")
        .arg(env!("CARGO_BIN_EXE_syncoder"))
        .args(["exec-eval", "--benchmark", bench, "--problems"])
        .arg(problems)
        .arg("--samples")
        .arg(samples)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

fn tool_missing(tools: &[&str]) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    tools
        .iter()
        .find(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
        .map(|t| t.to_string())
}

/// (benchmark, problems file, samples file, passing, problems, tools, [(verdict, count)]).
type Case = (
    &'static str,
    &'static str,
    &'static str,
    usize,
    usize,
    &'static [&'static str],
    &'static [(&'static str, u64)],
);

const CASES: &[Case] = &[
    (
        "humaneval",
        "humaneval.jsonl",
        "humaneval_samples.jsonl",
        2,
        4,
        &["python3"],
        &[("wrong answer", 1), ("crash", 1)],
    ),
    (
        "humaneval+",
        "humanevalplus.jsonl",
        "humaneval_samples.jsonl",
        1,
        4,
        &["python3"],
        &[("wrong answer", 2), ("crash", 1)],
    ),
    (
        "mbpp",
        "mbpp.jsonl",
        "mbpp_samples.jsonl",
        2,
        3,
        &["python3"],
        &[("timeout", 1)],
    ),
    (
        "mbpp",
        "mbppplus.jsonl",
        "mbpp_samples.jsonl",
        2,
        3,
        &["python3"],
        &[("timeout", 1)],
    ),
    (
        "mbpp+",
        "mbppplus.jsonl",
        "mbpp_samples.jsonl",
        1,
        3,
        &["python3"],
        &[("wrong answer", 1), ("timeout", 1)],
    ),
    (
        "multipl-e-sh",
        "multipl-e-sh.jsonl",
        "multipl-e-sh_samples.jsonl",
        1,
        2,
        &["bash"],
        &[("wrong answer", 1)],
    ),
    (
        "multipl-e-js",
        "multipl-e-js.jsonl",
        "multipl-e-js_samples.jsonl",
        2,
        3,
        &["node"],
        &[("wrong answer", 1)],
    ),
    (
        "multipl-e-cpp",
        "multipl-e-cpp.jsonl",
        "multipl-e-cpp_samples.jsonl",
        1,
        3,
        &["g++"],
        &[("compile error", 1), ("wrong answer", 1)],
    ),
    (
        "multipl-e-java",
        "multipl-e-java.jsonl",
        "multipl-e-java_samples.jsonl",
        1,
        2,
        &["javac", "java"],
        &[("wrong answer", 1)],
    ),
    (
        "multipl-e-php",
        "multipl-e-php.jsonl",
        "multipl-e-php_samples.jsonl",
        1,
        2,
        &["php"],
        &[("wrong answer", 1)],
    ),
    (
        "multipl-e-ts",
        "multipl-e-ts.jsonl",
        "multipl-e-ts_samples.jsonl",
        1,
        3,
        &["tsc", "node"],
        &[("compile error", 1), ("wrong answer", 1)],
    ),
];

#[test]
fn pass_at_1_equals_the_hand_count_on_every_benchmark_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let required = std::env::var_os("SYNCODER_EXEC_EVAL_REQUIRE").is_some();
    for (i, (bench, problems, samples, passing, n, tools, verdicts)) in CASES.iter().enumerate() {
        let out = tmp.path().join(format!("{i}-{bench}"));
        let run = exec_eval(
            bench,
            &fixture(problems),
            &fixture(samples),
            &out,
            &["--timeout-s", "3"],
        );
        let err = String::from_utf8_lossy(&run.stderr);
        if let Some(tool) = tool_missing(tools) {
            assert!(
                !required,
                "{bench}: `{tool}` is missing and SYNCODER_EXEC_EVAL_REQUIRE is set"
            );
            assert!(
                !run.status.success() && err.contains("is not installed") && err.contains(&tool),
                "{err}"
            );
            eprintln!("{bench}: skipped, `{tool}` is not installed here");
            continue;
        }
        assert!(run.status.success(), "{bench}: {err}");
        let s = summary(&out);
        let want = *passing as f64 / *n as f64;
        assert!(
            (s["pass@1"].as_f64().unwrap() - want).abs() < 1e-12,
            "{bench} on {problems}: pass@1 {} where the hand count is {passing}/{n}\n{s:#}",
            s["pass@1"]
        );
        assert_eq!(s["problems"], *n as u64, "{bench}");
        for (verdict, count) in *verdicts {
            assert_eq!(s["verdicts"][verdict], *count, "{bench}: {verdict}\n{s:#}");
        }
        assert_eq!(s["verdicts"]["passed"], *passing as u64, "{bench}");
        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        assert!(md.contains("| pass@1 |"), "{md}");
    }
}

#[test]
fn bad_samples_and_problems_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let samples = tmp.path().join("s.jsonl");
    std::fs::write(&samples, "{\"task_id\": \"Fixture/9\", \"solution\": \"x\"}\n").unwrap();
    let run = exec_eval(
        "humaneval",
        &fixture("humaneval.jsonl"),
        &samples,
        &tmp.path().join("o"),
        &[],
    );
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("s.jsonl:1") && err.contains("Fixture/9"),
        "{err}"
    );
    std::fs::write(
        &samples,
        "{\"task_id\": \"Fixture/0\", \"solution\": \"x\", \"completion\": \"y\"}\n",
    )
    .unwrap();
    let run = exec_eval(
        "humaneval",
        &fixture("humaneval.jsonl"),
        &samples,
        &tmp.path().join("o"),
        &[],
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("exactly one of"));
    // A MultiPL-E file given as HumanEval: the missing field is named with its line.
    let run = exec_eval(
        "humaneval",
        &fixture("multipl-e-sh.jsonl"),
        &samples,
        &tmp.path().join("o"),
        &[],
    );
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("multipl-e-sh.jsonl:1") && err.contains("no field `entry_point`"),
        "{err}"
    );
}

/// The hostile programs: a problem `f() == 1` whose samples misbehave.
fn hostile_problem(dir: &Path) -> PathBuf {
    let p = dir.join("hostile.jsonl");
    let rec = serde_json::json!({
        "task_id": "Hostile/0",
        "prompt": "def f():\n    \"\"\"Return 1.\"\"\"\n",
        "canonical_solution": "    return 1\n",
        "test": "\n\ndef check(candidate):\n    assert candidate() == 1\n",
        "entry_point": "f",
    });
    std::fs::write(&p, format!("{rec}\n")).unwrap();
    p
}

#[test]
fn hostile_programs_fail_with_their_kind_and_the_evaluator_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let problems = hostile_problem(tmp.path());
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let outside = tmp.path().join("escaped.txt");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut cases: Vec<(&str, String, &str)> = vec![
        ("infinite loop", "def f():\n    while True:\n        pass\n".into(), "timeout"),
        (
            "fork bomb",
            "import os\ndef f():\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n".into(),
            "timeout",
        ),
        ("memory hog", "def f():\n    x = bytearray(16 << 30)\n    return 1\n".into(), "memory"),
        (
            "gigabytes of output",
            "import sys\ndef f():\n    for _ in range(1 << 18):\n        sys.stdout.write('x' * 4096)\n    return 0\n".into(),
            "wrong answer",
        ),
        (
            "a socket to the host",
            format!("import socket\ndef f():\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    return 1\n"),
            "crash",
        ),
    ];
    if root {
        cases.push((
            "a write outside its directory",
            format!(
                "def f():\n    open({:?}, 'w').write('x')\n    return 1\n",
                outside.display().to_string()
            ),
            "crash",
        ));
        cases.push((
            "killing its parent",
            "import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 1\n".into(),
            "crash",
        ));
    } else {
        eprintln!("not root: programs run as this user, so writes outside their directory and signals to the evaluator are not prevented; those two cases are skipped");
    }
    let t0 = Instant::now();
    for (what, solution, kind) in &cases {
        let samples = tmp.path().join("s.jsonl");
        std::fs::write(
            &samples,
            format!(
                "{}\n",
                serde_json::json!({"task_id": "Hostile/0", "solution": solution})
            ),
        )
        .unwrap();
        let out = tmp.path().join(what.replace(' ', "-"));
        let run = exec_eval(
            "humaneval",
            &problems,
            &samples,
            &out,
            &["--timeout-s", "3", "--memory-mib", "512"],
        );
        assert!(
            run.status.success(),
            "{what}: the evaluator failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let s = summary(&out);
        if *what == "a socket to the host" && !s["network_isolated"].as_bool().unwrap() {
            eprintln!("no network namespace here: the socket case is not isolated");
            continue;
        }
        assert_eq!(s["verdicts"][kind], 1, "{what}: expected {kind}\n{s:#}");
    }
    assert!(!outside.exists(), "a sandboxed program wrote {}", outside.display());
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "the hostile suite took {:?}",
        t0.elapsed()
    );
    drop(listener);
}

#[test]
fn a_killed_evaluator_resumes_with_a_consistent_results_file() {
    let tmp = tempfile::tempdir().unwrap();
    // 6 problems whose samples each take about a second.
    let problems = tmp.path().join("p.jsonl");
    let samples = tmp.path().join("s.jsonl");
    let (mut p, mut s) = (String::new(), String::new());
    for i in 0..6 {
        let rec = serde_json::json!({
            "task_id": format!("Slow/{i}"),
            "prompt": format!("def f{i}():\n    pass\n"),
            "test": format!("\n\ndef check(candidate):\n    assert candidate() == {}\n", i % 2),
            "entry_point": format!("f{i}"),
        });
        p.push_str(&format!("{rec}\n"));
        let sol = format!("import time\ndef f{i}():\n    time.sleep(1)\n    return 0\n");
        s.push_str(&format!(
            "{}\n",
            serde_json::json!({"task_id": format!("Slow/{i}"), "solution": sol})
        ));
    }
    std::fs::write(&problems, p).unwrap();
    std::fs::write(&samples, s).unwrap();
    let out = tmp.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["exec-eval", "--benchmark", "humaneval", "--jobs", "2", "--problems"])
        .arg(&problems)
        .arg("--samples")
        .arg(&samples)
        .arg("--out")
        .arg(&out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let results = out.join("results/s.jsonl");
    let t0 = Instant::now();
    while std::fs::read_to_string(&results).map_or(0, |t| t.lines().count()) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no results appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // A torn last line, as a kill in the middle of a write leaves.
    let mut text = std::fs::read_to_string(&results).unwrap();
    let before = text.lines().count();
    assert!((2..6).contains(&before), "{before} results before the kill");
    text.push_str("{\"benchmark\": \"humaneval\", \"task_");
    std::fs::write(&results, text).unwrap();
    let run = exec_eval("humaneval", &problems, &samples, &out, &["--jobs", "2"]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(err.contains(&format!("{before} samples judged before")), "{err}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut ids: Vec<&str> = lines.iter().map(|v| v["task_id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((lines.len(), ids.len()), (6, 6), "{lines:?}");
    // Half return the expected 0.
    assert_eq!(summary(&out)["pass@1"], 0.5);
}

#[test]
fn a_model_answers_each_problem_and_a_rerun_reuses_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loss_model");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_syncoder"))
            .args(["exec-eval", "--benchmark", "humaneval", "--problems"])
            .arg(fixture("humaneval.jsonl"))
            .arg("--model")
            .arg(&model)
            .args(["--max-new-tokens", "8", "--timeout-s", "3", "--out"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let first = run(&[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let answers = std::fs::read_to_string(out.join("model_answer/loss_model.jsonl")).unwrap();
    assert_eq!(answers.lines().count(), 4);
    let s = summary(&out);
    assert_eq!(
        (s["problems"].as_u64(), s["samples_per_problem"].as_u64()),
        (Some(4), Some(1))
    );
    // A random tiny model solves nothing; every reply was still run and judged.
    assert_eq!(s["pass@1"], 0.0);
    let judged: u64 = s["verdicts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(judged, 4);
    let again = run(&[]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && err.contains("0 new answers") && err.contains("4 samples judged before"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("model_answer/loss_model.jsonl")).unwrap(),
        answers
    );
    // Sampled: two samples per problem, each with its own seed.
    let sampled = run(&["--n", "2", "--temperature", "1.0", "--k", "1,2", "--name", "sampled"]);
    assert!(sampled.status.success(), "{}", String::from_utf8_lossy(&sampled.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("model_answer/sampled.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    let text = |id: &str| lines.iter().find(|l| l["question_id"] == id).unwrap()["answer"].clone();
    assert!(
        (0..4).any(|i| text(&format!("Fixture/{i}#0")) != text(&format!("Fixture/{i}#1"))),
        "the two samples of every problem are the same"
    );
    let s = summary(&out);
    assert_eq!(s["samples_per_problem"], 2);
    assert_eq!(s["pass_at_k"].as_array().unwrap().len(), 2);
    // A base model continues the code prompt instead (no chat template), resumably.
    let completion = run(&["--mode", "completion", "--name", "base"]);
    let err = String::from_utf8_lossy(&completion.stderr);
    assert!(
        completion.status.success() && err.contains("base: 4 new completions"),
        "{err}"
    );
    let lines = std::fs::read_to_string(out.join("completions/base.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4);
    let again = run(&["--mode", "completion", "--name", "base"]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && err.contains("base: 0 new completions, 4 present before"),
        "{err}"
    );
    assert_eq!(
        summary(&out)["verdicts"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        4
    );
}
