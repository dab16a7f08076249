//! Judging games and keeping them on disk: one game asks the judge to compare the model's answer
//! with the opponent's in a given position (with one re-ask when the reply has no label), a
//! bounded pool of worker threads plays many games, and every finished game is appended at once
//! to a JSON-lines log (fsynced) so that an interrupted run resumes without asking any game twice.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

use crate::io::AppendLog;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::judge_client::{ChatMessage, JudgeClient};
use super::protocol::Protocol;
use super::verdict::{Label, Position};

/// One game to judge: the model's answer and the opponent's, already placed in positions A and B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GameJob {
    /// The question's id.
    pub question_id: String,
    /// 1 or 2 (the two orders of the same pair).
    pub game: u8,
    /// Where the evaluated model's answer is.
    pub model_position: Position,
    /// The user's question.
    pub question: String,
    /// The answer shown as Assistant A.
    pub answer_a: String,
    /// The answer shown as Assistant B.
    pub answer_b: String,
}

impl GameJob {
    /// SHA-256 of the question and both answers in their positions.
    pub fn answers_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [&self.question, &self.answer_a, &self.answer_b] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        format!("{:x}", h.finalize())
    }
}

/// Names recorded with every judgment of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GameMeta {
    /// The evaluated model.
    pub model: String,
    /// The baseline it is compared with.
    pub opponent: String,
    /// The judge model.
    pub judge: String,
    /// The judging protocol's digest (`protocol::digest`).
    pub protocol: String,
}

/// One judged game, as stored in the log (one JSON object per line).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Judgment {
    /// The question's id.
    pub question_id: String,
    /// 1 or 2.
    pub game: u8,
    /// The evaluated model.
    pub model: String,
    /// The baseline model.
    pub opponent: String,
    /// The judge model.
    pub judge: String,
    /// Where the evaluated model's answer was.
    pub model_position: Position,
    /// The verdict (positions A/B), `None` when unparsable.
    pub label: Option<Label>,
    /// The judge's first reply.
    pub judgment: String,
    /// The reply to the re-ask, when one was needed.
    pub reask: Option<String>,
    /// The `usage` objects of the requests, in order.
    pub usage: Vec<Value>,
    /// [`JudgePrompt::digest`] of the prompt used.
    pub prompt_digest: String,
    /// The judging protocol's digest (`protocol::digest`: prompt, judge model, temperature,
    /// max_tokens); empty in logs written before it was recorded.
    #[serde(default)]
    pub protocol: String,
    /// The model the judge's API said answered (its reply's `model` field), when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_reported: Option<String>,
    /// `GameJob::answers_digest` of the answers judged; empty in logs written before it was
    /// recorded. A judgment whose answers have changed since is not reused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub answers_sha256: String,
}

/// What [`judge_game`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct GameOutcome {
    /// The verdict (positions A/B), `None` when unparsable.
    pub label: Option<Label>,
    /// The judge's first reply.
    pub judgment: String,
    /// The reply to the re-ask, when one was needed.
    pub reask: Option<String>,
    /// The `usage` objects of the requests, in order.
    pub usage: Vec<Value>,
    /// The model the API reported for the first reply.
    pub judge_reported: Option<String>,
}

/// Plays one game: renders the protocol's messages, asks the judge, and finds the verdict. While
/// a reply has no verdict candidate at all (and the protocol allows more attempts: two for
/// `syncoder`), the conversation is continued with the reply and the protocol's re-ask and the answer to that
/// is parsed instead. A reply with two different candidates is unparsable (`None`) and is not
/// re-asked: the judge did answer, just inconsistently. A failed request (after the client's
/// retries), a re-ask included, fails the whole game.
pub fn judge_game(client: &JudgeClient, protocol: &Protocol, job: &GameJob) -> anyhow::Result<GameOutcome> {
    let mut messages = protocol.render(&job.question, &job.answer_a, &job.answer_b)?;
    let mut usage: Vec<Value> = Vec::new();
    let mut replies: Vec<String> = Vec::new();
    let mut judge_reported = None;
    let attempts = protocol.attempts().max(1);
    for attempt in 0..attempts {
        let reply = if attempt == 0 {
            client.complete(&messages)?
        } else {
            client
                .complete(&messages)
                .context("the re-ask for a verdict label failed")?
        };
        usage.extend(reply.usage);
        judge_reported = judge_reported.or(reply.model);
        let found = !protocol.candidates(&reply.text).is_empty();
        replies.push(reply.text);
        if found || attempt + 1 == attempts {
            break;
        }
        messages.push(ChatMessage::assistant(replies[replies.len() - 1].clone()));
        messages.push(ChatMessage::user(protocol.reask()));
    }
    let label = protocol.label(&replies[replies.len() - 1]);
    let judgment = replies.remove(0);
    let reask = (!replies.is_empty()).then(|| replies.join("\n"));
    Ok(GameOutcome {
        label,
        judgment,
        reask,
        usage,
        judge_reported,
    })
}

/// The judgments of one pairing: an append-only JSONL file (see `io::jsonl::AppendLog`).
#[derive(Debug)]
pub struct JudgmentLog(AppendLog);

impl JudgmentLog {
    /// Opens (or creates, with its parent directories) the log and returns the judgments already
    /// in it; a torn last line is dropped, a bad line elsewhere is an error naming `file:line`.
    pub fn open(path: &Path) -> anyhow::Result<(Self, Vec<Judgment>)> {
        let (log, judgments) = AppendLog::open(path)?;
        Ok((JudgmentLog(log), judgments))
    }

    /// Appends one judgment as one JSON line, in a single write, and fsyncs the file.
    pub fn append(&mut self, j: &Judgment) -> anyhow::Result<()> {
        self.0.append(j)
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// The jobs whose `(question_id, game)` is not among `done`, in their original order.
pub fn pending(jobs: Vec<GameJob>, done: &[Judgment]) -> Vec<GameJob> {
    let done: HashSet<(&str, u8)> = done.iter().map(|j| (j.question_id.as_str(), j.game)).collect();
    jobs.into_iter()
        .filter(|job| !done.contains(&(job.question_id.as_str(), job.game)))
        .collect()
}

/// The outcome of [`run_games`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Games judged and appended to the log (unparsable verdicts included).
    pub judged: usize,
    /// Games whose requests failed: `(question_id, game, error)`; nothing was written for them.
    pub failed: Vec<(String, u8, String)>,
}

/// Judges `jobs` with up to `concurrency` requests in flight (worker threads pulling from a shared
/// queue). Each finished game is appended to `log` by the calling thread as soon as it arrives,
/// then passed to `on_done`, so an interruption loses at most the games in flight. Games that
/// fail are listed in the summary and the others go on. An error writing the log stops the run
/// (the workers finish the games they hold, which are lost) and is returned. Callers resuming a
/// run pass only [`pending`] jobs.
pub fn run_games(
    client: &JudgeClient,
    protocol: &Protocol,
    jobs: Vec<GameJob>,
    meta: &GameMeta,
    concurrency: usize,
    log: &mut JudgmentLog,
    on_done: &mut dyn FnMut(&Judgment),
) -> anyhow::Result<RunSummary> {
    let workers = concurrency.max(1).min(jobs.len());
    let queue = Mutex::new(VecDeque::from(jobs));
    let stop = AtomicBool::new(false);
    let digest = protocol.prompt_digest();
    let mut summary = RunSummary::default();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let (tx, rx) = mpsc::channel::<(GameJob, anyhow::Result<GameOutcome>)>();
        for _ in 0..workers {
            let tx = tx.clone();
            let (queue, stop) = (&queue, &stop);
            scope.spawn(move || loop {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let next = queue
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .pop_front();
                let Some(job) = next else { break };
                let outcome = judge_game(client, protocol, &job);
                if tx.send((job, outcome)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (job, outcome) in rx {
            match outcome {
                Ok(GameOutcome {
                    label,
                    judgment,
                    reask,
                    usage,
                    judge_reported,
                }) => {
                    let answers_sha256 = job.answers_digest();
                    let j = Judgment {
                        answers_sha256,
                        question_id: job.question_id,
                        game: job.game,
                        model: meta.model.clone(),
                        opponent: meta.opponent.clone(),
                        judge: meta.judge.clone(),
                        model_position: job.model_position,
                        label,
                        judgment,
                        reask,
                        usage,
                        prompt_digest: digest.clone(),
                        protocol: meta.protocol.clone(),
                        judge_reported,
                    };
                    if let Err(e) = log.append(&j) {
                        stop.store(true, Ordering::SeqCst);
                        return Err(e);
                    }
                    summary.judged += 1;
                    on_done(&j);
                }
                Err(e) => summary.failed.push((job.question_id, job.game, format!("{e:#}"))),
            }
        }
        Ok(())
    })?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::super::judge_prompt::{JudgePrompt, REASK};
    use super::super::judge_settings::JudgeSettings;
    use super::super::judge_test_server::{temp_dir, unique_name, ScriptServer};
    use super::*;

    fn client(server: &ScriptServer) -> JudgeClient {
        let cfg = JudgeSettings {
            key_env: unique_name("JUDGE_GAMES_UNSET_KEY"),
            timeout_s: 30,
            max_retries: 2,
            backoff_s: 0.005,
            backoff_cap_s: 0.02,
            ..JudgeSettings::new(server.base_url(), "judge-model")
        };
        JudgeClient::new(cfg).unwrap()
    }

    fn job(question_id: &str, game: u8, script: &str) -> GameJob {
        let model_position = if game == 1 { Position::B } else { Position::A };
        GameJob {
            question_id: question_id.to_string(),
            game,
            model_position,
            question: format!("How do I reverse a list? SCRIPT({script})"),
            answer_a: "Use reversed(). {answer_b}".to_string(),
            answer_b: "Use list[::-1].".to_string(),
        }
    }

    fn meta() -> GameMeta {
        GameMeta {
            model: "mine".into(),
            opponent: "base".into(),
            judge: "judge-model".into(),
            protocol: "p1".into(),
        }
    }

    fn judgment(id: &str, game: u8) -> Judgment {
        Judgment {
            question_id: id.into(),
            game,
            model: "m".into(),
            opponent: "o".into(),
            judge: "j".into(),
            model_position: Position::A,
            label: Some(Label::Tie),
            judgment: "line one\nline two [[A=B]]".into(),
            reask: None,
            usage: vec![serde_json::json!({"total_tokens": 3})],
            prompt_digest: "0123".into(),
            protocol: "p1".into(),
            judge_reported: None,
            answers_sha256: String::new(),
        }
    }

    /// A judge configuration in the arena-hard format drives the game: its system prompt and
    /// template reach the judge, its pattern finds the verdict, and it may re-ask up to its
    /// number of attempts.
    #[test]
    fn a_codearena_config_renders_parses_and_reasks_up_to_its_attempts() {
        let yaml = "number_of_judgment_attempts: 3\nsystem_prompt: \"SYS\"\n\
                    prompt_template: [\"Q={question_1}|A={answer_1}|B={answer_2}\"]\n\
                    regex_pattern: \\[\\[([AB<>=]+)\\]\\]\n";
        let proto = Protocol::Codearena(
            super::super::judge_config::JudgeConfig::parse(yaml).unwrap(),
            "THE SCRIPT'S RE-ASK".into(),
        );
        let server = ScriptServer::start();
        let o = judge_game(&client(&server), &proto, &job("q", 1, "ca L:B<A")).unwrap();
        assert_eq!(o.label, Some(Label::ABetter), "the mirror of A>B");
        let body = &server.bodies("ca")[0];
        assert_eq!(body["messages"][0]["content"], "SYS");
        let user = body["messages"][1]["content"].as_str().unwrap();
        assert!(
            user.starts_with("Q=How do I reverse a list?") && user.contains("|B=Use list[::-1]."),
            "{user}"
        );
        let o = judge_game(&client(&server), &proto, &job("q", 1, "three none none L:A>>B")).unwrap();
        assert_eq!((o.label, server.count("three")), (Some(Label::AMuchBetter), 3));
        // The re-ask is the protocol's (the official script's sentence).
        let last = &server.bodies("three")[2]["messages"];
        assert_eq!(last[3]["content"], "THE SCRIPT'S RE-ASK");
        assert_eq!(last[5]["content"], "THE SCRIPT'S RE-ASK");
        let reask = o.reask.unwrap();
        assert!(
            reask.contains("hard to say") && reask.contains("[[A>>B]]"),
            "both re-ask replies kept: {reask}"
        );
    }

    #[test]
    fn verdicts_are_parsed_in_both_positions() {
        let server = ScriptServer::start();
        let c = client(&server);
        let p = JudgePrompt::builtin();
        let proto = Protocol::Syncoder(p.clone());
        let o = judge_game(&c, &proto, &job("q1", 1, "v1 L:A>>B")).unwrap();
        assert_eq!(o.judge_reported.as_deref(), Some("judge-model-2024-01-01"));
        let (label, text, reask, usage) = (o.label, o.judgment, o.reask, o.usage);
        assert_eq!(label, Some(Label::AMuchBetter));
        assert!(text.contains("[[A>>B]]") && reask.is_none() && usage.len() == 1);
        let label = judge_game(&c, &proto, &job("q1", 2, "v2 L:B>A")).unwrap().label;
        assert_eq!(label, Some(Label::BBetter));
        // The answers reach the judge literally, in their positions.
        let body = &server.bodies("v1")[0];
        let user = body["messages"][1]["content"].as_str().unwrap();
        assert!(user.contains("Use reversed(). {answer_b}"), "{user}");
        assert!(user.find("Use reversed()").unwrap() < user.find("Use list[::-1]").unwrap());
        assert_eq!(body["messages"][0]["content"], p.system.as_str());
    }

    #[test]
    fn a_reply_without_label_is_reasked_once() {
        let server = ScriptServer::start();
        let o = judge_game(
            &client(&server),
            &Protocol::Syncoder(JudgePrompt::builtin()),
            &job("q", 1, "re none L:B>>A"),
        )
        .unwrap();
        let (label, text, reask, usage) = (o.label, o.judgment, o.reask, o.usage);
        assert_eq!(label, Some(Label::BMuchBetter));
        assert!(text.contains("hard to say"));
        assert!(reask.unwrap().contains("[[B>>A]]"));
        assert_eq!(usage.len(), 2);
        assert_eq!(server.count("re"), 2);
        let messages = server.bodies("re")[1]["messages"].as_array().unwrap().clone();
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[2]["role"], "assistant");
        assert_eq!(messages[2]["content"].as_str().unwrap(), text);
        assert_eq!(messages[3]["role"], "user");
        assert_eq!(messages[3]["content"], REASK);
    }

    #[test]
    fn a_second_labelless_reply_is_unparsable() {
        let server = ScriptServer::start();
        let o = judge_game(
            &client(&server),
            &Protocol::Syncoder(JudgePrompt::builtin()),
            &job("q", 1, "twice none"),
        )
        .unwrap();
        let (label, reask) = (o.label, o.reask);
        assert_eq!(label, None);
        assert!(reask.is_some());
        assert_eq!(server.count("twice"), 2);
    }

    #[test]
    fn conflicting_labels_are_unparsable_without_reask() {
        let server = ScriptServer::start();
        let o = judge_game(
            &client(&server),
            &Protocol::Syncoder(JudgePrompt::builtin()),
            &job("q", 1, "clash conflict"),
        )
        .unwrap();
        let (label, text, reask) = (o.label, o.judgment, o.reask);
        assert_eq!(label, None);
        assert!(text.contains("[[A>B]]") && reask.is_none());
        assert_eq!(server.count("clash"), 1);
    }

    #[test]
    fn log_round_trips_and_terminates_an_unterminated_line() {
        let dir = temp_dir("judge-log");
        let path = dir.join("nested/deeper/judgments.jsonl");
        let (mut log, existing) = JudgmentLog::open(&path).unwrap();
        assert!(existing.is_empty());
        log.append(&judgment("a", 1)).unwrap();
        log.append(&judgment("a", 2)).unwrap();
        drop(log);
        let (_, back) = JudgmentLog::open(&path).unwrap();
        assert_eq!(back, vec![judgment("a", 1), judgment("a", 2)]);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);

        // A complete last line without its newline is kept, and appending goes on a new line.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.trim_end()).unwrap();
        let (mut log, back) = JudgmentLog::open(&path).unwrap();
        assert_eq!(back.len(), 2);
        log.append(&judgment("b", 1)).unwrap();
        let (_, back) = JudgmentLog::open(&path).unwrap();
        assert_eq!(back.len(), 3);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn torn_last_line_is_dropped_but_bad_middle_line_is_an_error() {
        let dir = temp_dir("judge-log-torn");
        let path = dir.join("j.jsonl");
        let (mut log, _) = JudgmentLog::open(&path).unwrap();
        log.append(&judgment("a", 1)).unwrap();
        drop(log);
        let good = std::fs::read_to_string(&path).unwrap();
        let full = serde_json::to_string(&judgment("a", 2)).unwrap();
        std::fs::write(&path, format!("{good}{}", &full[..full.len() / 2])).unwrap();
        let (mut log, back) = JudgmentLog::open(&path).unwrap();
        assert_eq!(back, vec![judgment("a", 1)]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
        log.append(&judgment("a", 2)).unwrap();
        drop(log);
        assert_eq!(JudgmentLog::open(&path).unwrap().1.len(), 2);

        std::fs::write(&path, format!("{good}{{broken\n{good}")).unwrap();
        let err = JudgmentLog::open(&path).unwrap_err().to_string();
        assert!(err.contains("j.jsonl:2"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn run_games_logs_each_game_and_resume_asks_none_twice() {
        let server = ScriptServer::start();
        let c = client(&server);
        let p = JudgePrompt::builtin();
        let proto = Protocol::Syncoder(p.clone());
        let dir = temp_dir("judge-run");
        let path = dir.join("run/judgments.jsonl");
        // g3 fails (400) in the first run and works in the second; the others work at once.
        let scripts = [
            "g0 L:A>B",
            "g1 L:B>A",
            "g2 none L:A=B",
            "g3 r400 L:B>>A",
            "g4 conflict",
            "g5 L:A>>B",
        ];
        // Game 1 of question i uses script id "gi", game 2 uses "gib", so each game is counted apart.
        let jobs: Vec<GameJob> = scripts
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                let id = format!("q{i}");
                [job(&id, 1, s), job(&id, 2, &s.replacen(' ', "b ", 1))]
            })
            .collect();
        assert_eq!(jobs.len(), 12);

        let (mut log, done) = JudgmentLog::open(&path).unwrap();
        let todo = pending(jobs.clone(), &done);
        assert_eq!(todo.len(), 12);
        let mut seen = Vec::new();
        let summary = run_games(&c, &proto, todo, &meta(), 3, &mut log, &mut |j| {
            seen.push(j.question_id.clone())
        })
        .unwrap();
        assert_eq!(summary.judged, 10);
        assert_eq!(seen.len(), 10);
        let mut failed: Vec<(String, u8)> = summary.failed.iter().map(|f| (f.0.clone(), f.1)).collect();
        failed.sort();
        assert_eq!(failed, vec![("q3".to_string(), 1), ("q3".to_string(), 2)]);
        assert!(summary.failed[0].2.contains("400"));
        drop(log);

        // Simulate a crash in the middle of a write, then resume.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"{\"question_id\":\"q3\",\"ga").unwrap();
        drop(f);
        let (mut log, done) = JudgmentLog::open(&path).unwrap();
        assert_eq!(done.len(), 10);
        let todo = pending(jobs.clone(), &done);
        assert_eq!(
            todo.iter()
                .map(|j| (j.question_id.as_str(), j.game))
                .collect::<Vec<_>>(),
            [("q3", 1), ("q3", 2)]
        );
        let summary = run_games(&c, &proto, todo, &meta(), 3, &mut log, &mut |_| {}).unwrap();
        assert_eq!((summary.judged, summary.failed.len()), (2, 0));
        drop(log);

        let (_, all) = JudgmentLog::open(&path).unwrap();
        assert_eq!(all.len(), 12);
        assert!(pending(jobs, &all).is_empty());
        let keys: HashSet<(String, u8)> = all.iter().map(|j| (j.question_id.clone(), j.game)).collect();
        assert_eq!(keys.len(), 12);
        for id in ["g0", "g0b", "g1", "g1b", "g4", "g4b", "g5", "g5b"] {
            assert_eq!(server.count(id), 1, "{id}");
        }
        for id in ["g2", "g2b", "g3", "g3b"] {
            assert_eq!(server.count(id), 2, "{id}");
        }
        let q0 = all.iter().find(|j| j.question_id == "q0" && j.game == 1).unwrap();
        assert_eq!(
            (q0.label, q0.model_position, q0.model.as_str()),
            (Some(Label::ABetter), Position::B, "mine")
        );
        assert_eq!(q0.prompt_digest, p.digest());
        assert_eq!(q0.protocol, "p1");
        let q4 = all.iter().find(|j| j.question_id == "q4").unwrap();
        assert_eq!(q4.label, None);
        let q2 = all.iter().find(|j| j.question_id == "q2").unwrap();
        assert_eq!((q2.label, q2.usage.len()), (Some(Label::Tie), 2));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_key_never_reaches_the_log_or_the_failures() {
        let secret = "sk-test-SECRET-123";
        let key_env = unique_name("JUDGE_GAMES_KEY");
        std::env::set_var(&key_env, secret);
        let server = ScriptServer::start();
        let cfg = JudgeSettings {
            key_env,
            max_retries: 1,
            backoff_s: 0.005,
            backoff_cap_s: 0.02,
            ..JudgeSettings::new(server.base_url(), "judge-model")
        };
        let c = JudgeClient::new(cfg).unwrap();
        let dir = temp_dir("judge-key");
        let path = dir.join("j.jsonl");
        let (mut log, _) = JudgmentLog::open(&path).unwrap();
        let jobs = vec![
            job("ok", 1, "k-ok L:A>B"),
            job("bad", 1, "k-bad r401echo"),
            job("bad5", 1, "k-bad5 r500echo"),
        ];
        let summary = run_games(
            &c,
            &Protocol::Syncoder(JudgePrompt::builtin()),
            jobs,
            &meta(),
            2,
            &mut log,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(summary.judged, 1);
        assert_eq!(summary.failed.len(), 2);
        for (_, _, e) in &summary.failed {
            assert!(e.contains("***") && !e.contains(secret), "{e}");
        }
        assert_eq!(server.auth("k-ok"), vec![Some(format!("Bearer {secret}"))]);
        assert!(!std::fs::read_to_string(&path).unwrap().contains(secret));
        let _ = std::fs::remove_dir_all(dir);
    }
}
