//! Config files, whatever component they configure: a TOML file, optionally overridden by
//! `--set section.key=value`, deserialised strictly into the component's own serde struct
//! (unknown keys and wrong types are errors naming the key's path), and [`ConfigError`], the one
//! error every "this key is wrong" message goes through. Imports nothing of the crate: each
//! component owns its section (`data::DataConfig`, `train::OptimConfig`, `arena::ArenaConfig`,
//! ...) and `train::RunConfig` composes them.

use anyhow::{anyhow, Context, Result};
use serde::de::DeserializeOwned;
use std::path::Path;

/// A config value that cannot be used, with the key's path (e.g. `data.seq_len`,
/// `stage[1].lr`) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// `Err(ConfigError)` unless `ok`.
pub fn ensure(ok: bool, key: &str, reason: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(key, reason()))
    }
}

/// Turns any error about the value of `key` into a [`ConfigError`] naming it.
pub trait KeyContext<T> {
    fn key_context(self, key: impl Into<String>) -> Result<T, ConfigError>;
}

impl<T> KeyContext<T> for Result<T> {
    fn key_context(self, key: impl Into<String>) -> Result<T, ConfigError> {
        self.map_err(|e| ConfigError::new(key, format!("{e:#}")))
    }
}

/// A mistake in a `--set` override (not in the config file).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--set {set}: {reason}")]
pub struct SetError {
    pub set: String,
    pub reason: String,
}

/// Reads the TOML file `path`, applies `--set` overrides and deserialises it strictly. An
/// error in what a `--set` wrote is blamed on the `--set`, not on the file.
pub fn load_toml<T: DeserializeOwned>(path: &Path, sets: &[String]) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
    match parse_toml(&text, sets) {
        Err(e) if e.is::<SetError>() => Err(e),
        r => r.with_context(|| format!("config {}", path.display())),
    }
}

/// Parses TOML text with `--set` overrides; a deserialisation error names the key's path (and
/// the `--set` that wrote it, if one did), in words rather than Rust type names, with the
/// closest valid key for an unknown one.
pub fn parse_toml<T: DeserializeOwned>(text: &str, sets: &[String]) -> Result<T> {
    let mut value: toml::Value = toml::from_str(text).map_err(|e| anyhow!("invalid TOML: {e}"))?;
    for set in sets {
        apply_set(&mut value, set).map_err(|reason| SetError {
            set: set.clone(),
            reason,
        })?;
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let reason = plain_message(e.into_inner().message());
        let err = ConfigError::new(key.clone(), reason);
        match sets.iter().find(|s| set_key(s) == key) {
            Some(set) => anyhow::Error::new(SetError {
                set: set.clone(),
                reason: err.to_string(),
            }),
            None => anyhow::Error::new(err),
        }
    })
}

/// The key path a `--set` writes, as serde_path_to_error spells it (`stage[0].lr`).
fn set_key(set: &str) -> String {
    let path = set.split_once('=').map_or(set, |(p, _)| p).trim();
    let mut out = String::new();
    for part in path.split('.') {
        if part.chars().all(|c| c.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// serde's message with Rust type names in words, and "did you mean" for an unknown field.
fn plain_message(msg: &str) -> String {
    let mut out = msg.to_string();
    for (rust, words) in [
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected usize", "expected a whole number ≥ 0"),
        ("expected u64", "expected a whole number ≥ 0"),
        ("expected u32", "expected a whole number ≥ 0"),
        ("expected u16", "expected a whole number ≥ 0"),
        ("expected i64", "expected a whole number"),
        ("expected a boolean", "expected true or false"),
    ] {
        if out.ends_with(rust) {
            out = format!("{}{words}", &out[..out.len() - rust.len()]);
        }
    }
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or("");
        let expected: Vec<&str> = rest.split('`').skip(2).step_by(2).collect();
        if let Some(best) = expected
            .iter()
            .map(|k| (strsim::damerau_levenshtein(field, k), *k))
            .filter(|(d, k)| {
                *d <= 3.max(field.len() / 3) || k.contains(field) || field.contains(k) || abbreviates(k, field)
            })
            .min()
        {
            out.push_str(&format!(" — did you mean `{}`?", best.1));
        }
    }
    out
}

/// Whether `short` abbreviates `long` (`lr` for `learning_rate`): the same first letter, and
/// its letters in order within `long`.
fn abbreviates(short: &str, long: &str) -> bool {
    let mut rest = long.chars();
    short.len() >= 2 && short.chars().next() == long.chars().next() && short.chars().all(|c| rest.any(|l| l == c))
}

/// Applies one `section.key=value` override (`value` in TOML syntax; a bare word is a string;
/// a numeric path segment indexes an array, e.g. `stage.0.lr=1e-4`); `section.key=` with
/// nothing after `=` removes the key (an optional key back to its default).
fn apply_set(root: &mut toml::Value, set: &str) -> Result<(), String> {
    let (path, raw) = set
        .split_once('=')
        .ok_or_else(|| "expected section.key=value".to_string())?;
    let unset = raw.trim().is_empty();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = path.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("empty key in {path:?}"));
    }
    let mut cur = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        cur = match cur {
            toml::Value::Table(t) => {
                if last && unset {
                    t.remove(*part);
                    return Ok(());
                }
                if last {
                    t.insert(part.to_string(), value);
                    return Ok(());
                }
                t.entry(part.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            }
            toml::Value::Array(a) => {
                let idx: usize = part
                    .parse()
                    .map_err(|_| format!("{part:?} is not an index into an array"))?;
                let len = a.len();
                let slot = a
                    .get_mut(idx)
                    .ok_or_else(|| format!("index {idx} is out of range (the array has {len})"))?;
                if last && unset {
                    return Err("an array element cannot be unset".into());
                }
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            _ => return Err(format!("{:?} is not a table", parts[..i].join("."))),
        };
    }
    Err("nothing to set".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        a: A,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct A {
        n: u32,
        list: Vec<u32>,
    }

    #[test]
    fn errors_name_the_key_and_sets_override() {
        let text = "[a]\nn = 1\nlist = [1, 2]\n";
        let d: Doc = parse_toml(text, &["a.n=5".into(), "a.list.1=7".into()]).unwrap();
        assert_eq!((d.a.n, d.a.list), (5, vec![1, 7]));
        let e = parse_toml::<Doc>("[a]\nn = \"x\"\nlist = []\n", &[]).unwrap_err();
        let ce = e.downcast_ref::<ConfigError>().expect("a ConfigError");
        assert_eq!(ce.key, "a.n");
        assert!(e.to_string().starts_with("key `a.n`: "), "{e}");
        let e = parse_toml::<Doc>(text, &["a.list.9=1".into()]).unwrap_err().to_string();
        assert!(e.contains("out of range") && e.starts_with("--set a.list.9=1: "), "{e}");
        // A --set mistake is the --set's, in words, with the closest key.
        let e = parse_toml::<Doc>(text, &["a.n=-1".into()]).unwrap_err();
        assert!(e.is::<SetError>(), "{e}");
        assert_eq!(
            e.to_string(),
            "--set a.n=-1: key `a.n`: invalid value: integer `-1`, expected a whole number ≥ 0"
        );
        let e = parse_toml::<Doc>(text, &["a.lst=[1]".into()]).unwrap_err().to_string();
        assert!(
            e.starts_with("--set a.lst=[1]: key `a.lst`: unknown field") && e.ends_with("did you mean `list`?"),
            "{e}"
        );
        let e = parse_toml::<Doc>("[a]\nn = 1\nlist = [1]\nlst = 2\n", &[]).unwrap_err();
        assert!(
            !e.is::<SetError>() && e.to_string().contains("did you mean `list`?"),
            "{e}"
        );
        let e: Result<()> = Err(anyhow!("inner")).context("outer");
        assert_eq!(e.key_context("x.y").unwrap_err().to_string(), "key `x.y`: outer: inner");
    }
}

#[cfg(test)]
mod unset_tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct M {
        path: Option<String>,
        init: Option<String>,
    }

    /// `--set key=` removes an optional key, so another one can take its place.
    #[test]
    fn an_empty_set_unsets_a_key() {
        let m: M = parse_toml("init = \"x.json\"\n", &["init=".into(), "path=/m".into()]).unwrap();
        assert_eq!((m.init, m.path.as_deref()), (None, Some("/m")));
    }
}
