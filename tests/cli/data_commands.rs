//! `syncoder data inspect` and `syncoder data decontam` on the project's sample shard.

use crate::common::syncoder_in_repo as syncoder;

#[test]
fn inspect_counts_tokens_and_languages() {
    let out = syncoder(&[
        "data",
        "inspect",
        "data/sample",
        "--tokenizer",
        "data/sample/tokenizer",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = r["records"].as_u64().unwrap();
    assert_eq!(r["samples"].as_u64().unwrap(), records);
    let (tokens, sup) = (r["tokens"].as_u64().unwrap(), r["supervised_tokens"].as_u64().unwrap());
    assert!(sup > 0 && sup < tokens);
    assert!(r["length_p50"].as_u64().unwrap() <= r["length_p90"].as_u64().unwrap());
    assert!(r["length_p99"].as_u64().unwrap() <= r["length_max"].as_u64().unwrap());
    let langs = r["languages"].as_object().unwrap();
    assert_eq!(langs.values().map(|v| v.as_u64().unwrap()).sum::<u64>(), records);
    assert_eq!(langs["rust"], 42);

    // Too-long samples are dropped and counted under --overflow drop.
    let out = syncoder(&[
        "data",
        "inspect",
        "data/sample",
        "--tokenizer",
        "data/sample/tokenizer",
        "--json",
        "--max-seq-len",
        "75",
        "--overflow",
        "drop",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["dropped_too_long"].as_u64().unwrap() > 0);
    assert_eq!(
        r["samples"].as_u64().unwrap() + r["dropped_too_long"].as_u64().unwrap(),
        records
    );
}

#[test]
fn decontam_drops_exactly_the_overlapping_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("train.jsonl");
    let rows = [
        r#"{"id": "clean", "instruction": "Write a function that adds two numbers", "response": "def add(a, b): return a + b"}"#,
        r#"{"id": "leak", "instruction": "Please solve: GIVEN an array of integers nums and an integer target, return indices of the two numbers", "response": "Use a hash map."}"#,
        r#"{"id": "nine", "instruction": "an array of integers nums and an integer target,", "response": "Only nine words match."}"#,
    ];
    std::fs::write(&data, rows.join("\n") + "\n").unwrap();
    let bench = tmp.path().join("bench.jsonl");
    std::fs::write(
        &bench,
        r#"{"id": 1, "messages": [{"role": "user", "content": "Given an array of integers nums and an integer target, return indices of the two numbers such that they add up to target."}]}"#.to_string() + "\n",
    )
    .unwrap();
    let out_dir = tmp.path().join("clean");
    let out = syncoder(&[
        "data",
        "decontam",
        data.to_str().unwrap(),
        "--against",
        bench.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kept 2, dropped 1"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let kept = std::fs::read_to_string(out_dir.join("train.jsonl")).unwrap();
    assert!(kept.contains("\"clean\"") && kept.contains("\"nine\"") && !kept.contains("\"leak\""));
    let dropped: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(out_dir.join("dropped.jsonl")).unwrap().trim()).unwrap();
    assert_eq!(dropped["id"], "leak");
    assert_eq!(dropped["question"], "1");
    assert_eq!(
        dropped["ngram"],
        "given an array of integers nums and an integer target,"
    );

    // A used --out is not overwritten without --force; --ngram 9 also catches "nine".
    let decontam = |extra: &[&str]| {
        let mut args = vec![
            "data",
            "decontam",
            data.to_str().unwrap(),
            "--against",
            bench.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ];
        args.extend(extra);
        syncoder(&args)
    };
    assert!(!decontam(&[]).status.success());
    let out = decontam(&["--ngram", "9", "--force"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept 1, dropped 2"));

    // A question shorter than n words is named: no n-gram can match it.
    let short = tmp.path().join("short.jsonl");
    std::fs::write(&short, "{\"id\": \"s1\", \"question\": \"add two numbers\"}\n").unwrap();
    let out = syncoder(&[
        "data",
        "decontam",
        data.to_str().unwrap(),
        "--against",
        short.to_str().unwrap(),
        "--out",
        tmp.path().join("o2").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("1 benchmark questions have fewer than 10 words") && err.contains("s1"),
        "{err}"
    );

    // A bad record stops it, leaving no partial output.
    let broken = tmp.path().join("broken.jsonl");
    std::fs::write(&broken, rows[0].to_string() + "\n{\"messages\": 3}\n").unwrap();
    let o3 = tmp.path().join("o3");
    let out = syncoder(&[
        "data",
        "decontam",
        broken.to_str().unwrap(),
        "--against",
        bench.to_str().unwrap(),
        "--out",
        o3.to_str().unwrap(),
    ]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("broken.jsonl:2"));
    assert!(!o3.exists());
    assert!(std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with(".tmp")));

    std::fs::write(&bench, "{\"id\": 1}\n").unwrap();
    let out = syncoder(&[
        "data",
        "decontam",
        data.to_str().unwrap(),
        "--against",
        bench.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bench.jsonl:1"));
}

#[test]
fn prepare_takes_its_lengths_from_a_run_config_and_a_mismatch_says_how_to_fix_it() {
    let tmp = tempfile::tempdir().unwrap();
    let fits = tmp.path().join("fits");
    let out = syncoder(&[
        "data",
        "prepare",
        "data/sample",
        "--config",
        "configs/smoke.toml",
        "--out",
        fits.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fits.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["max_seq_len"], 256, "the smoke run's data.seq_len");
    // Its own output dir: the repository's `checkpoints/smoke` may hold the README's smoke run.
    let out_dir = tmp.path().join("runs");
    let dry = |dir: &std::path::Path| {
        syncoder(&[
            "train",
            "--config",
            "configs/smoke.toml",
            "--set",
            &format!("stage.0.data=[\"{}\"]", dir.display()),
            "--set",
            &format!("run.output_dir={}", out_dir.display()),
            "--dry-run",
        ])
    };
    let out = dry(&fits);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The default length (32768) makes shards the smoke run refuses, saying how to fix it.
    let long = tmp.path().join("long");
    let out = syncoder(&[
        "data",
        "prepare",
        "data/sample",
        "--tokenizer",
        "data/sample/tokenizer",
        "--out",
        long.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = dry(&long);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--config RUN.toml") && err.contains("--max-seq-len 256"),
        "{err}"
    );
}

/// A tokenizer directory: the loss model's tokenizer and the R1-like template without
/// generation blocks (`chat_template/generation.json`), which rewrites earlier turns.
fn r1_plain_tokenizer() -> tempfile::TempDir {
    let fx = crate::common::fixtures();
    let gen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("chat_template/generation.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fx.join("loss_model/tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("loss_model/tokenizer_config.json")).unwrap()).unwrap();
    cfg["chat_template"] = gen["templates"]["r1_plain"].clone();
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
    dir
}

#[test]
fn inspect_show_prints_samples_with_the_trained_text_marked() {
    let tok = r1_plain_tokenizer();
    let think = crate::common::fixtures().join("template_loss/think.jsonl");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "data",
            "inspect",
            think.to_str().unwrap(),
            "--tokenizer",
            tok.path().to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        syncoder(&args)
    };
    let out = run(&["--show", "3", "--mask", "per_turn"]);
    crate::common::ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let samples: Vec<&str> = text.split("\n── sample ").skip(1).collect();
    assert_eq!(samples.len(), 3, "{text}");
    assert!(samples[1].contains("think.jsonl:2 · part 1/2"), "{}", samples[1]);
    // Sample 3 is conversation 2 up to its second answer: the first answer without its
    // <think> part and not trained, the second trained (after the prompt's "<think>\n").
    let third = samples[2];
    assert!(
        third.contains("part 2/2") && !third.contains("list.reverse() mutates"),
        "{third}"
    );
    assert!(third.contains("`xs.reverse()`<|im_end|>"), "{third}");
    assert!(third.contains("⟦Slicing with a negative step."), "{third}");
    assert!(!third.contains("⟦`xs.reverse()`"), "{third}");
    // The table: one row per token, trained rows flagged.
    let header = third.lines().position(|l| l.trim_start().starts_with("pos")).unwrap();
    let rows: Vec<&str> = third.lines().skip(header + 1).filter(|l| !l.is_empty()).collect();
    let tokens: usize = third
        .split(" tokens,")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(rows.len(), tokens);
    assert!(rows.iter().any(|r| r.contains(" T  ")));

    // auto cannot mask the multi-turn conversations of this template: --show says why in
    // place, and the report stops naming the file, the line and the policies that can.
    let out = run(&["--show", "2"]);
    crate::common::ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("error: ") && text.contains("per_turn"), "{text}");
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("think.jsonl:2") && err.contains("last_assistant_turn"),
        "{err}"
    );
    let out = run(&["--mask", "last_assistant_turn", "--json"]);
    crate::common::ok(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["samples"], 4);
}
