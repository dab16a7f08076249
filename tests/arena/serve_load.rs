//! `syncoder serve` under load and hostile requests: continuous batching (a long request does
//! not hold back short ones, and every answer equals the one it gets alone), the bounded queue
//! (429 with `Retry-After`), deadlines, clients that leave, shutdown on SIGTERM, and a load test
//! of 64 concurrent clients mixed with hostile requests under a memory bound.

use crate::common::fixtures;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server, its base URL (`http://HOST:PORT/v1`) and its log lines.
struct Server {
    child: Child,
    url: String,
    log: std::sync::mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_syncoder"))
            .args(["serve", "--model"])
            .arg(model)
            .args(["--port", "0", "--name", "m"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let url = line.split("http://").nth(1).unwrap().split_whitespace().next().unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in reader.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Server {
            url: format!("http://{url}"),
            child,
            log,
        }
    }

    fn addr(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches("/v1")
            .to_string()
    }

    fn log(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(200));
        self.log.try_iter().collect()
    }

    /// Peak resident memory of the server process, in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap();
        kb * 1024
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn chat(url: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(format!("{url}/chat/completions"))
        .json(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// Sends a chat request over a raw connection (to close it mid-reply) and returns the connection.
fn raw_post(addr: &str, body: &Value) -> std::io::Result<std::net::TcpStream> {
    let mut conn = std::net::TcpStream::connect(addr)?;
    let body = body.to_string();
    write!(
        conn,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    Ok(conn)
}

fn request(prompt: &str, max_tokens: u64) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0})
}

/// A random model big enough that a long reply takes seconds on the CPU (the fixture model's
/// tokenizer; 4096 positions), made once per test process.
fn slow_model() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("syncoder-slow-model-{}", std::process::id()));
        let src = fixtures().join("loss_model");
        let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
        cfg["hidden_size"] = json!(512);
        cfg["intermediate_size"] = json!(1536);
        cfg["num_hidden_layers"] = json!(8);
        cfg["layer_types"] = json!(vec!["full_attention"; 8]);
        cfg["num_attention_heads"] = json!(8);
        cfg["num_key_value_heads"] = json!(4);
        cfg["max_position_embeddings"] = json!(4096);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg_path = dir.join("init-config.json");
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
            .args(["init", "--config"])
            .arg(&cfg_path)
            .arg("--out")
            .arg(&dir)
            .arg("--force")
            .output()
            .unwrap();
        crate::common::ok(&out);
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        dir
    })
    .clone()
}

/// A streamed request: yields when its first delta arrives, then reads to the end and
/// returns when it ended and what the last data line said.
fn stream_long(
    url: &str,
    body: Value,
) -> (
    std::sync::mpsc::Receiver<()>,
    std::thread::JoinHandle<(Instant, String)>,
) {
    let (first_tx, first) = std::sync::mpsc::channel();
    let url = url.to_string();
    let handle = std::thread::spawn(move || {
        let mut body = body;
        body["stream"] = json!(true);
        let r = client()
            .post(format!("{url}/chat/completions"))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let mut reader = BufReader::new(r);
        let (mut line, mut last, mut told) = (String::new(), String::new(), false);
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(data) = line.trim().strip_prefix("data: ") {
                if !told && data.contains("\"content\"") && !data.contains("\"content\":\"\"") {
                    let _ = first_tx.send(());
                    told = true;
                }
                if data != "[DONE]" {
                    last = data.to_string();
                }
            }
            line.clear();
        }
        let _ = first_tx.send(());
        (Instant::now(), last)
    });
    (first, handle)
}

#[test]
fn a_long_request_does_not_hold_back_short_ones() {
    let model = slow_model();
    let s = Server::start(&model, &["--max-num-seqs", "8"]);
    let shorts: Vec<Value> = (0..3).map(|i| request(&format!("short question {i}"), 6 + i)).collect();
    // Each short request alone first.
    let alone: Vec<Value> = shorts.iter().map(|b| chat(&s.url, b).1).collect();
    let mut long = request("tell me everything", 1500);
    long["ignore_eos"] = json!(true);
    let (first, long_thread) = stream_long(&s.url, long);
    first.recv_timeout(Duration::from_secs(60)).unwrap();
    let started = Instant::now();
    let handles: Vec<_> = shorts
        .iter()
        .cloned()
        .map(|b| {
            let url = s.url.clone();
            std::thread::spawn(move || {
                let r = chat(&url, &b);
                (Instant::now(), r)
            })
        })
        .collect();
    let done: Vec<(Instant, (u16, Value))> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let (long_end, last) = long_thread.join().unwrap();
    assert!(last.contains("\"length\"") || last.contains("usage"), "{last}");
    for (i, (at, (status, r))) in done.iter().enumerate() {
        assert_eq!(*status, 200, "{r}");
        assert!(
            *at < long_end,
            "short request {i} ended {:?} after the long one (it waited behind it)",
            at.duration_since(long_end)
        );
        assert_eq!(
            r["choices"][0]["message"]["content"], alone[i]["choices"][0]["message"]["content"],
            "short request {i}: not the answer it gets alone"
        );
    }
    eprintln!(
        "shorts done within {:?}; the long reply ended {:?} after they started",
        done.iter().map(|d| d.0.duration_since(started)).max().unwrap(),
        long_end.duration_since(started)
    );
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let model = slow_model();
    let s = Server::start(&model, &["--max-num-seqs", "1", "--max-queue", "1"]);
    let mut long = request("occupy the batch", 800);
    long["ignore_eos"] = json!(true);
    let (first, long_thread) = stream_long(&s.url, long);
    first.recv_timeout(Duration::from_secs(60)).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let url = s.url.clone();
            std::thread::spawn(move || {
                let r = client()
                    .post(format!("{url}/chat/completions"))
                    .json(&request(&format!("q{i}"), 3))
                    .send()
                    .unwrap();
                let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                (r.status().as_u16(), retry)
            })
        })
        .collect();
    let results: Vec<(u16, Option<String>)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let busy: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert!(!busy.is_empty(), "{results:?}");
    assert!(busy.iter().all(|r| r.1.as_deref() == Some("1")), "{results:?}");
    assert!(results.iter().all(|r| r.0 == 429 || r.0 == 200), "{results:?}");
    long_thread.join().unwrap();
}

#[test]
fn deadlines_and_clients_that_leave_free_the_batch() {
    let model = slow_model();
    let s = Server::start(&model, &["--max-num-seqs", "1", "--request-timeout-s", "1"]);
    // A reply that would take far longer than the deadline: 503 naming the timeout, soon.
    let mut long = request("never ending", 4000);
    long["ignore_eos"] = json!(true);
    let t = Instant::now();
    let (status, r) = chat(&s.url, &long);
    assert_eq!(status, 503, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("timed out"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    drop(s);

    // A streaming client that disconnects mid-reply ends its sequence: the one place in the
    // batch is free again for the next request at once.
    let s = Server::start(&model, &["--max-num-seqs", "1"]);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "go"}], "max_tokens": 4000,
                      "ignore_eos": true, "stream": true});
    let mut conn = raw_post(&s.addr(), &body).unwrap();
    let mut buf = [0u8; 4096];
    let mut got = 0;
    while got < 2000 {
        got += conn.read(&mut buf).unwrap();
    }
    drop(conn);
    let t = Instant::now();
    let (status, r) = chat(&s.url, &request("next", 4));
    assert_eq!(status, 200, "{r}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let log = s.log();
    assert!(log.iter().any(|l| l.contains("the client is gone")), "{log:?}");

    // The same for a client waiting for a whole (non-streamed) reply.
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "go"}], "max_tokens": 4000,
                      "ignore_eos": true});
    let conn = raw_post(&s.addr(), &body).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(conn);
    let t = Instant::now();
    let (status, r) = chat(&s.url, &request("after", 4));
    assert_eq!(status, 200, "{r}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let log = s.log();
    assert!(log.iter().any(|l| l.contains("the client is gone")), "{log:?}");
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    let model = slow_model();
    for (grace, finished) in [("60", true), ("0", false)] {
        let mut s = Server::start(&model, &["--shutdown-grace-s", grace]);
        let mut long = request("finish me", 300);
        long["ignore_eos"] = json!(true);
        let (first, long_thread) = stream_long(&s.url, long);
        first.recv_timeout(Duration::from_secs(60)).unwrap();
        let pid = s.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let (_, last) = long_thread.join().unwrap();
        if finished {
            assert!(last.contains("usage") && last.contains("300"), "grace {grace}: {last}");
        } else {
            assert!(last.contains("shutting down"), "grace {grace}: {last}");
        }
        let status = s.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "grace {grace}");
        // Nothing listens any more.
        assert!(std::net::TcpStream::connect(s.addr()).is_err());
    }
}

#[test]
fn sixty_four_clients_and_hostile_requests_under_a_memory_bound() {
    let model = fixtures().join("loss_model");
    let s = Server::start(&model, &["--max-num-seqs", "16", "--max-queue", "128"]);
    let valid: Vec<Value> = (0..8)
        .map(|i| {
            request(
                &format!("question {i}: {}", "why ".repeat(i * 7)),
                [3, 40, 7, 120, 1, 60, 15, 90][i],
            )
        })
        .collect();
    let alone: Vec<Value> = valid
        .iter()
        .map(|b| {
            let (status, r) = chat(&s.url, b);
            assert_eq!(status, 200, "{r}");
            r["choices"][0]["message"]["content"].clone()
        })
        .collect();
    enum Hostile {
        Body(Value),
        Raw(String),
        Disconnect,
    }
    let hostile = [
        Hostile::Body(request("huge", 1_000_000_000_000)),
        Hostile::Body(request("negative", 0)),
        Hostile::Body(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5})),
        Hostile::Body(request(&"word ".repeat(3000), 10)),
        Hostile::Body(json!({"model": "m", "messages": "not a list"})),
        Hostile::Raw("{\"model\": \"m\", \"messages\": [".into()),
        Hostile::Raw(format!("{{\"pad\": \"{}\"}}", "x".repeat(3 << 20))),
        Hostile::Disconnect,
    ];
    let hostile = std::sync::Arc::new(hostile);
    let handles: Vec<_> = (0..64)
        .map(|c| {
            let (url, addr, valid, hostile) = (s.url.clone(), s.addr(), valid.clone(), hostile.clone());
            std::thread::spawn(move || -> Result<Option<(usize, Value)>, String> {
                if c % 8 == 7 {
                    // One in eight clients is hostile.
                    match &hostile[(c / 8) % hostile.len()] {
                        Hostile::Body(b) => {
                            let (status, r) = chat(&url, b);
                            if !(400..500).contains(&status) {
                                return Err(format!("hostile request answered {status}: {r}"));
                            }
                        }
                        Hostile::Raw(text) => {
                            let r = client()
                                .post(format!("{url}/chat/completions"))
                                .header("Content-Type", "application/json")
                                .body(text.clone())
                                .send()
                                .map_err(|e| e.to_string())?;
                            let status = r.status().as_u16();
                            if !(400..500).contains(&status) {
                                return Err(format!("raw hostile body answered {status}"));
                            }
                        }
                        Hostile::Disconnect => {
                            // Sent, then the connection is dropped unread.
                            raw_post(&addr, &request("leave early", 500)).map_err(|e| e.to_string())?;
                        }
                    }
                    return Ok(None);
                }
                let i = c % valid.len();
                let (status, r) = chat(&url, &valid[i]);
                if status != 200 {
                    return Err(format!("client {c}: {status} {r}"));
                }
                Ok(Some((i, r["choices"][0]["message"]["content"].clone())))
            })
        })
        .collect();
    let mut answered = 0;
    for h in handles {
        if let Some((i, text)) = h.join().unwrap().unwrap() {
            assert_eq!(text, alone[i], "request {i} under load differs from its answer alone");
            answered += 1;
        }
    }
    assert_eq!(answered, 56);
    let (status, _) = chat(&s.url, &valid[0]);
    assert_eq!(status, 200, "the server is still up");
    let health = client().get(s.url.replace("/v1", "/health")).send().unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let peak = s.peak_rss();
    eprintln!("peak RSS under load: {} MiB", peak >> 20);
    assert!(peak < 512 << 20, "peak RSS {} MiB", peak >> 20);
}
