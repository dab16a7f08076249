//! Config files, whatever component they configure: a TOML file, optionally overridden by
//! `--set section.key=value`, deserialised strictly into the component's own serde struct
//! (unknown keys and wrong types are errors naming the key's path), and [`ConfigError`], the one
//! error every "this key is wrong" message goes through. Imports nothing of the crate: each
//! component owns its section (`data::DataConfig`, `train::OptimConfig`, `arena::ArenaConfig`,
//! ...) and `train::RunConfig` composes them.

use anyhow::{anyhow, bail, Context, Result};
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

/// Reads the TOML file `path`, applies `--set` overrides and deserialises it strictly.
pub fn load_toml<T: DeserializeOwned>(path: &Path, sets: &[String]) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
    parse_toml(&text, sets).with_context(|| format!("config {}", path.display()))
}

/// Parses TOML text with `--set` overrides; a deserialisation error names the key's path.
pub fn parse_toml<T: DeserializeOwned>(text: &str, sets: &[String]) -> Result<T> {
    let mut value: toml::Value = toml::from_str(text).map_err(|e| anyhow!("invalid TOML: {e}"))?;
    for set in sets {
        apply_set(&mut value, set)?;
    }
    Ok(serde_path_to_error::deserialize(value)
        .map_err(|e| ConfigError::new(e.path().to_string(), e.into_inner().message().to_string()))?)
}

/// Applies one `section.key=value` override (`value` in TOML syntax; a bare word is a string;
/// a numeric path segment indexes an array, e.g. `stage.0.lr=1e-4`).
fn apply_set(root: &mut toml::Value, set: &str) -> Result<()> {
    let (path, raw) = set
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {set:?}: expected section.key=value"))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = path.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("--set {set:?}: empty key in {path:?}");
    }
    let mut cur = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        cur = match cur {
            toml::Value::Table(t) => {
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
                    .map_err(|_| anyhow!("--set {set:?}: {part:?} is not an index into an array"))?;
                let len = a.len();
                let slot = a
                    .get_mut(idx)
                    .ok_or_else(|| anyhow!("--set {set:?}: index {idx} is out of range (the array has {len})"))?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            _ => bail!("--set {set:?}: {:?} is not a table", parts[..i].join(".")),
        };
    }
    bail!("--set {set:?}: nothing to set")
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
        let e = parse_toml::<Doc>(text, &["a.n=\"x\"".into()]).unwrap_err();
        let ce = e.downcast_ref::<ConfigError>().expect("a ConfigError");
        assert_eq!(ce.key, "a.n");
        assert!(e.to_string().starts_with("key `a.n`: "), "{e}");
        let e = parse_toml::<Doc>(text, &["a.list.9=1".into()]).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
        let e: Result<()> = Err(anyhow!("inner")).context("outer");
        assert_eq!(e.key_context("x.y").unwrap_err().to_string(), "key `x.y`: outer: inner");
    }
}
