//! CodeArena questions, read from a JSONL file or `hf://datasets/CSJianYang/CodeArena`: records
//! in the published schema (`id`, `messages` with the user turn, `meta.parsed.task_type[0]`,
//! `level` = `[main, sub]`, `programming_language`, `difficulty`, baseline answers under
//! `<model>_response` keys), or the simpler shape of users' own sets (`task_type`,
//! `main_category` or `category` at the top level). With a task-type map (`--categories`, the
//! official `tasktype_to_levels.json`) the task type is washed as the official code washes it
//! (`-` → space, lower case) and its first `[main, sub]` pair gives the categories; a task type
//! the map lacks is an error naming the question.

use crate::data::{Message, Role};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Questions of this many whitespace-separated words or more are skipped (as in CodeArena).
pub const MAX_QUESTION_WORDS: usize = 1024;

/// One question.
#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    pub id: String,
    /// The conversation to answer (ends with the user's turn).
    pub messages: Vec<Message>,
    pub category: String,
    /// The sub-category, where the map or the record's `level` gives one.
    pub sub_category: Option<String>,
    pub task_type: Option<String>,
    pub languages: Vec<String>,
    pub difficulty: Option<String>,
    /// Stored answers of baseline models, by model name (`gpt-4-turbo-2024-04-09`, ...).
    pub baselines: BTreeMap<String, String>,
}

/// What a report needs to know of a question (written to `EVAL_DIR/questions.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuestionMeta {
    pub id: String,
    pub category: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_category: Option<String>,
    pub languages: Vec<String>,
    pub difficulty: Option<String>,
    pub words: usize,
}

impl Question {
    /// The text the judge sees as the question: the user turns, joined.
    pub fn text(&self) -> String {
        self.messages
            .iter()
            .filter(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    pub fn words(&self) -> usize {
        self.text().split_whitespace().count()
    }

    /// Skipped for being too long.
    pub fn too_long(&self) -> bool {
        self.words() >= MAX_QUESTION_WORDS
    }

    pub fn meta(&self) -> QuestionMeta {
        QuestionMeta {
            id: self.id.clone(),
            category: self.category.clone(),
            sub_category: self.sub_category.clone(),
            languages: self.languages.clone(),
            difficulty: self.difficulty.clone(),
            words: self.words(),
        }
    }
}

/// A task type as the official code washes it before the map lookup: `-` → space, lower case
/// (and, here, surrounding blanks trimmed).
pub fn wash(task_type: &str) -> String {
    task_type.replace('-', " ").to_lowercase().trim().to_string()
}

/// Washed task type → (main category, sub-category).
#[derive(Clone, Debug, Default)]
pub struct Categories(HashMap<String, (String, Option<String>)>);

impl Categories {
    /// A JSON object from task type to its categories: a list of `[main, sub]` pairs whose first
    /// pair is used (the official `tasktype_to_levels.json` shape), or a main category name.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| anyhow!("{}: expected an object from task type to category", path.display()))?;
        let mut map = HashMap::new();
        for (k, v) in obj {
            let levels = match v {
                Value::String(s) => Some((s.clone(), None)),
                Value::Array(a) => match a.first() {
                    Some(Value::Array(pair)) => pair.first().and_then(|x| x.as_str()).map(|main| {
                        let sub = pair.get(1).and_then(|x| x.as_str()).map(String::from);
                        (main.to_string(), sub)
                    }),
                    Some(Value::String(s)) => Some((s.clone(), None)),
                    _ => None,
                },
                _ => None,
            }
            .ok_or_else(|| {
                anyhow!(
                    "{}: key {k:?}: expected [[main, sub], ...] or a category name",
                    path.display()
                )
            })?;
            map.insert(wash(k), levels);
        }
        Ok(Self(map))
    }

    /// The main category of a task type (washed before the lookup).
    pub fn get(&self, task_type: &str) -> Option<&str> {
        self.levels(task_type).map(|(main, _)| main)
    }

    /// `(main, sub)` of a task type (washed before the lookup).
    pub fn levels(&self, task_type: &str) -> Option<(&str, Option<&str>)> {
        self.0
            .get(&wash(task_type))
            .map(|(main, sub)| (main.as_str(), sub.as_deref()))
    }
}

fn string_field(obj: &serde_json::Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match obj.get(*k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// Parses one record's line; errors name the field.
pub fn parse_question(line: &str, categories: Option<&Categories>) -> Result<Question> {
    question_of(&parse_object(line)?, categories)
}

/// One line as a JSON object.
pub fn parse_object(line: &str) -> Result<serde_json::Map<String, Value>> {
    match serde_json::from_str(line).map_err(|e| anyhow!("invalid JSON: {e}"))? {
        Value::Object(m) => Ok(m),
        _ => bail!("expected a JSON object"),
    }
}

/// The question of a parsed record; errors name the field.
pub fn question_of(obj: &serde_json::Map<String, Value>, categories: Option<&Categories>) -> Result<Question> {
    let id = string_field(obj, &["id", "question_id"]).ok_or_else(|| anyhow!("field `id`: missing"))?;
    let msgs = match obj.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(_) => bail!("field `messages`: expected a non-empty list"),
        None => bail!("field `messages`: missing"),
    };
    let mut messages = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| crate::data::record::parse_message(m, i))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // The conversation to answer ends at its last user turn (a stored reference reply after it
    // is not part of the question).
    let last_user = messages
        .iter()
        .rposition(|m| m.role == Role::User)
        .ok_or_else(|| anyhow!("field `messages`: no user turn"))?;
    messages.truncate(last_user + 1);
    let languages = match obj.get("programming_language") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str())
            .map(|s| s.trim().to_string())
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.trim().to_string()],
        Some(Value::Null) | None => vec![],
        Some(_) => bail!("field `programming_language`: expected a list of names"),
    };
    let task_type = official_task_type(obj)?.or_else(|| string_field(obj, &["task_type", "subtask", "sub_category"]));
    let (category, sub_category) = categories_of(obj, &id, task_type.as_deref(), categories)?;
    let mut baselines = BTreeMap::new();
    for (k, v) in obj {
        if let (Some(name), Value::String(s)) = (k.strip_suffix("_response"), v) {
            baselines.insert(name.to_string(), s.clone());
        }
    }
    Ok(Question {
        id,
        messages,
        category,
        sub_category,
        task_type,
        languages,
        difficulty: string_field(obj, &["difficulty"]),
        baselines,
    })
}

/// `meta.parsed.task_type[0]` of a record in the published schema.
fn official_task_type(obj: &serde_json::Map<String, Value>) -> Result<Option<String>> {
    let Some(meta) = obj.get("meta").filter(|m| !m.is_null()) else {
        return Ok(None);
    };
    match meta.pointer("/parsed/task_type/0") {
        Some(Value::String(t)) if !t.trim().is_empty() => Ok(Some(t.clone())),
        None if meta.pointer("/parsed/task_type").is_none() => Ok(None),
        _ => bail!("field `meta.parsed.task_type`: expected a list whose first item is a task type"),
    }
}

/// The main and sub-category of a record: its `main_category` (simple shape); else the map's
/// `[main, sub]` for its task type (a task type the map lacks is an error); else its `level`
/// `[main, sub]`; else its `category`, its task type, or "uncategorized".
fn categories_of(
    obj: &serde_json::Map<String, Value>,
    id: &str,
    task_type: Option<&str>,
    categories: Option<&Categories>,
) -> Result<(String, Option<String>)> {
    if let Some(main) = string_field(obj, &["main_category"]) {
        return Ok((main, string_field(obj, &["sub_category"])));
    }
    if let (Some(map), Some(t)) = (categories, task_type) {
        let (main, sub) = map.levels(t).ok_or_else(|| {
            anyhow!(
                "question {id}: task type {t:?} (washed: {:?}) is not in the task-type map given by --categories",
                wash(t)
            )
        })?;
        return Ok((main.to_string(), sub.map(String::from)));
    }
    if let Some(Value::Array(level)) = obj.get("level") {
        let name = |i: usize| level.get(i).and_then(|x| x.as_str()).map(|s| s.trim().to_string());
        if let Some(main) = name(0).filter(|m| !m.is_empty()) {
            return Ok((main, name(1).filter(|s| !s.is_empty())));
        }
    }
    let main = string_field(obj, &["category"])
        .or_else(|| task_type.map(String::from))
        .unwrap_or_else(|| "uncategorized".into());
    Ok((main, None))
}

/// The official CodeArena questions on the Hugging Face Hub.
pub const CODEARENA_DATASET: &str = "hf://datasets/CSJianYang/CodeArena";

/// The revision of the official questions the leaderboard was computed on; used whenever
/// `CODEARENA_DATASET` is given without an `@REVISION` of its own.
pub const CODEARENA_REVISION: &str = "05a5f4c";

/// Whether `src` names the official dataset (at any revision, any file of it).
pub fn is_official(src: &str) -> bool {
    src.strip_prefix(CODEARENA_DATASET)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('@'))
}

/// `src`, with the pinned revision added when it names the official dataset without one.
pub fn pinned(src: &str) -> String {
    match src.strip_prefix(CODEARENA_DATASET) {
        Some(rest) if is_official(src) && !rest.starts_with('@') => {
            format!("{CODEARENA_DATASET}@{CODEARENA_REVISION}{rest}")
        }
        _ => src.to_string(),
    }
}

/// Where a question set came from, recorded in `EVAL_DIR/questions_source.json` and named in
/// the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuestionSource {
    /// The source as read (the official dataset with its revision).
    pub source: String,
    /// The file's name.
    pub file: String,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
    /// The task-type map used (`official`, a path), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<String>,
}

impl QuestionSource {
    /// The source `source` whose file `path` holds `text` (no task-type map yet).
    pub fn new(source: String, path: &Path, text: &str) -> Self {
        use sha2::{Digest, Sha256};
        Self {
            source,
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256: format!("{:x}", Sha256::digest(text.as_bytes())),
            categories: None,
        }
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        let cats = match &self.categories {
            Some(c) => format!("; categories from {c}"),
            None => String::new(),
        };
        format!(
            "`{}` ({}, SHA-256 {}…{cats})",
            self.source,
            self.file,
            &self.sha256[..self.sha256.len().min(12)]
        )
    }
}

/// Where `record_source` keeps the source of an evaluation directory's questions.
pub fn source_path(eval_dir: &Path) -> PathBuf {
    eval_dir.join("questions_source.json")
}

/// Records where the questions of `eval_dir` came from.
pub fn record_source(eval_dir: &Path, source: &QuestionSource) -> Result<()> {
    std::fs::create_dir_all(eval_dir).with_context(|| format!("creating {}", eval_dir.display()))?;
    crate::io::write_atomic(&source_path(eval_dir), serde_json::to_string_pretty(source)?.as_bytes())
}

/// The recorded source of `eval_dir`'s questions, if any (an unreadable record is an error).
pub fn read_source(eval_dir: &Path) -> Result<Option<QuestionSource>> {
    let path = source_path(eval_dir);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| {
        format!("{}: not a question source record", path.display())
    })?))
}

/// The JSONL file behind `src`: a local file, or `hf://datasets/...` fetched through hf-hub
/// (a repo without a file pattern gives its `CodeArena.jsonl`, or its only `.jsonl`). The
/// official dataset is read at `CODEARENA_REVISION` unless `src` names a revision.
pub fn resolve(src: &str) -> Result<PathBuf> {
    if !src.starts_with("hf://") {
        let p = PathBuf::from(src);
        if !p.is_file() {
            bail!("--questions {src}: no such file");
        }
        return Ok(p);
    }
    let src = pinned(src);
    let path = crate::data::hub::fetch(&src)?;
    if path.is_file() {
        return Ok(path);
    }
    let official = path.join("CodeArena.jsonl");
    if official.is_file() {
        return Ok(official);
    }
    let jsonl: Vec<PathBuf> = std::fs::read_dir(&path)
        .with_context(|| format!("listing {}", path.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    match jsonl.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "{src}: expected one .jsonl file in {}, found {}",
            path.display(),
            jsonl.len()
        ),
    }
}

/// The task-type map `--categories` (or `[arena] categories`) names (a path, `official`, `none`; unset: `official` when
/// `official_default`), and the name to record for it.
pub fn load_categories(spec: Option<&str>, official_default: bool) -> Result<(Option<Categories>, Option<String>)> {
    let official = || -> Result<String> {
        Ok(
            super::official_files::fetch(&super::official_files::TASKTYPE_TO_LEVELS)?
                .display()
                .to_string(),
        )
    };
    let (path, named) = match spec {
        Some("none") => (None, None),
        Some("official") => (Some(official()?), Some("official".to_string())),
        Some(path) => (Some(path.to_string()), Some(path.to_string())),
        None if official_default => (Some(official()?), Some("official".to_string())),
        None => (None, None),
    };
    let cats = path.as_deref().map(|p| Categories::load(Path::new(p))).transpose()?;
    Ok((cats, named))
}

/// The questions of `src` with the task-type map `categories` names (see `load_categories`):
/// the question file is found (downloaded) first, so that a missing dataset is the error given
/// before a missing map.
pub fn load_with_categories(src: &str, categories: Option<&str>) -> Result<(Vec<Record>, QuestionSource)> {
    let path = resolve(src)?;
    let (cats, named) = load_categories(categories, is_official(src))?;
    let (records, mut source) = read_records(src, &path, cats.as_ref())?;
    source.categories = named;
    Ok((records, source))
}

/// One question with the record it was read from (kept whole for `arena export`).
#[derive(Clone, Debug)]
pub struct Record {
    pub question: Question,
    pub raw: serde_json::Map<String, Value>,
}

/// Reads every question of `src` (its file resolved to `path`); a bad record is an error naming
/// the file, line and field, and so is a repeated id.
fn read_records(src: &str, path: &Path, categories: Option<&Categories>) -> Result<(Vec<Record>, QuestionSource)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| anyhow!("{}: not UTF-8 text ({e})", path.display()))?;
    let mut out: Vec<Record> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |e: anyhow::Error| anyhow!("{}:{}: {e}", path.display(), i + 1);
        let raw = parse_object(line).map_err(at)?;
        let q = question_of(&raw, categories).map_err(at)?;
        if !seen.insert(q.id.clone()) {
            bail!("{}:{}: field `id`: {:?} appears twice", path.display(), i + 1, q.id);
        }
        out.push(Record { question: q, raw });
    }
    if out.is_empty() {
        bail!("{}: holds no questions", path.display());
    }
    let source = if src.starts_with("hf://") {
        pinned(src)
    } else {
        src.to_string()
    };
    Ok((out, QuestionSource::new(source, path, &text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_codearena_shape() {
        let line = r#"{"id": 7, "messages": [{"role": "user", "content": "Sort a list in Go"}], "difficulty": "easy",
            "programming_language": ["Go"], "task_type": "Sorting Algorithms", "gpt-4-turbo-2024-04-09_response": "Use sort.Ints"}"#;
        let mut cats = Categories::default();
        cats.0.insert(
            "sorting algorithms".into(),
            ("Development and Programming".into(), None),
        );
        let q = parse_question(line, Some(&cats)).unwrap();
        assert_eq!(q.id, "7");
        assert_eq!(q.category, "Development and Programming");
        assert_eq!(q.baselines["gpt-4-turbo-2024-04-09"], "Use sort.Ints");
        assert_eq!(q.languages, ["Go"]);
        assert_eq!(parse_question(line, None).unwrap().category, "Sorting Algorithms");
    }

    /// A record in the published schema (fields as in `CSJianYang/CodeArena`, text ours).
    const REAL: &str = r#"{"id": 12, "messages": [{"role": "user", "content": "Fix my Rust borrow error"}],
        "meta": {"parsed": {"task_type": ["Code-Debugging", "other"]}}, "level": ["Level Main", "Level Sub"],
        "programming_language": ["Rust"], "difficulty": "hard", "input": "x", "prompt_len": 5,
        "gpt-4-turbo-2024-04-09_response": "Use clone", "gpt-4-turbo-2024-04-09_response_len": 2}"#;

    #[test]
    fn reads_the_published_schema_with_the_official_wash() {
        let mut cats = Categories::default();
        cats.0
            .insert("code debugging".into(), ("Main A".into(), Some("Sub B".into())));
        let q = parse_question(REAL, Some(&cats)).unwrap();
        assert_eq!((q.id.as_str(), q.task_type.as_deref()), ("12", Some("Code-Debugging")));
        assert_eq!(
            (q.category.as_str(), q.sub_category.as_deref()),
            ("Main A", Some("Sub B"))
        );
        assert_eq!(q.baselines["gpt-4-turbo-2024-04-09"], "Use clone");
        assert_eq!(q.baselines.len(), 1, "`_response_len` is not an answer");
        // Without a map, `level` gives both.
        let q = parse_question(REAL, None).unwrap();
        assert_eq!(
            (q.category.as_str(), q.sub_category.as_deref()),
            ("Level Main", Some("Level Sub"))
        );
        // A task type the map lacks names the question.
        let e = parse_question(REAL, Some(&Categories::default()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("question 12") && e.contains("code debugging"), "{e}");
        let bad = REAL.replace(r#"["Code-Debugging", "other"]"#, "3");
        assert!(parse_question(&bad, None)
            .unwrap_err()
            .to_string()
            .contains("meta.parsed.task_type"));
    }

    #[test]
    fn names_the_bad_field() {
        for (line, field) in [
            (r#"{"messages": [{"role": "user", "content": "x"}]}"#, "`id`"),
            (r#"{"id": "a", "messages": []}"#, "`messages`"),
            (
                r#"{"id": "a", "messages": [{"role": "bot", "content": "x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"id": "a", "messages": [{"role": "user", "content": 3}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"id": "a", "messages": [{"role": "user", "content": "x"}], "programming_language": 5}"#,
                "programming_language",
            ),
        ] {
            let e = parse_question(line, None).unwrap_err().to_string();
            assert!(e.contains(field), "{line}: {e}");
        }
    }
}
