//! `hf://datasets/ORG/NAME[@REVISION][/GLOB]` data sources through the Hugging Face Hub client
//! (hf-hub): the matching files of the revision (a branch, tag or commit; the default branch when
//! absent) are downloaded into (or, offline, found in) the Hugging Face cache, then read like
//! local shards. `HF_HOME`, `HF_HUB_CACHE` and `HF_TOKEN` are honoured by the client;
//! `HF_HUB_OFFLINE=1` restricts resolution to the cache.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

pub const PREFIX: &str = "hf://datasets/";

const SHAPE: &str = "a Hub data source looks like hf://datasets/ORG/NAME[@REVISION][/GLOB]";

/// A parsed `hf://datasets/ORG/NAME[@REVISION][/GLOB]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubSource {
    pub owner: String,
    pub name: String,
    /// The branch, tag or commit (`None`: the default branch).
    pub revision: Option<String>,
    /// Files to take, relative to the repository root (`None`: every shard file).
    pub pattern: Option<String>,
}

impl HubSource {
    pub fn parse(s: &str) -> Result<Self> {
        let Some(rest) = s.strip_prefix(PREFIX) else {
            bail!("{s}: {SHAPE}");
        };
        let mut parts = rest.splitn(3, '/');
        let (owner, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (name, revision) = match name.split_once('@') {
            Some((name, rev)) if !rev.is_empty() => (name, Some(rev.to_string())),
            Some(_) => bail!("{s}: nothing after `@`: {SHAPE}"),
            None => (name, None),
        };
        if owner.is_empty() || name.is_empty() {
            bail!("{s}: {SHAPE}");
        }
        let pattern = parts.next().filter(|p| !p.is_empty()).map(str::to_string);
        Ok(Self {
            owner: owner.into(),
            name: name.into(),
            revision,
            pattern,
        })
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

/// Downloads (or finds in the cache) the files of `src`; returns the snapshot directory, or the
/// glob of the wanted files inside it.
pub fn fetch(src: &str) -> Result<PathBuf> {
    let hub = HubSource::parse(src)?;
    let repo = match &hub.revision {
        Some(rev) => format!("{}/{} at revision {rev}", hub.owner, hub.name),
        None => format!("{}/{}", hub.owner, hub.name),
    };
    let client = hf_hub::HFClientSync::new().context("setting up the Hugging Face Hub client")?;
    let offline = offline();
    let result = client
        .dataset(hub.owner.clone(), hub.name.clone())
        .snapshot_download()
        .local_files_only(offline)
        .maybe_revision(hub.revision.clone())
        .maybe_allow_patterns(hub.pattern.clone().map(|p| vec![p]))
        .send();
    let dir = match result {
        Ok(dir) => dir,
        Err(e) if offline => bail!(
            "dataset {repo} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: download it on a \
             connected machine (or unset HF_HUB_OFFLINE); {e}"
        ),
        Err(e) => return Err(e).with_context(|| format!("downloading dataset {repo} from the Hugging Face Hub")),
    };
    Ok(match hub.pattern {
        Some(p) => dir.join(p),
        None => dir,
    })
}

/// Downloads (or finds in the cache) the files of model repo `repo` (`owner/name`) needed to
/// train it: config, weights, tokenizer and generation config. Returns the snapshot directory.
pub fn fetch_model(repo: &str, revision: Option<&str>) -> Result<PathBuf> {
    let Some((owner, name)) = repo.split_once('/') else {
        bail!("model.hub {repo:?}: expected OWNER/NAME, e.g. Qwen/Qwen2.5-Coder-0.5B");
    };
    let client = hf_hub::HFClientSync::new().context("setting up the Hugging Face Hub client")?;
    let offline = offline();
    let patterns = ["*.json", "*.safetensors", "merges.txt", "vocab.json"]
        .map(String::from)
        .to_vec();
    let result = client
        .model(owner.to_string(), name.to_string())
        .snapshot_download()
        .local_files_only(offline)
        .maybe_revision(revision.map(String::from))
        .allow_patterns(patterns)
        .send();
    match result {
        Ok(dir) => Ok(dir),
        Err(e) if offline => bail!(
            "model {repo} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: download it on a connected \
             machine (`huggingface-cli download {repo}`) or point model.path at a local copy; {e}"
        ),
        Err(e) => Err(e).with_context(|| {
            format!(
                "downloading model {repo} from the Hugging Face Hub (without network: set HF_HUB_OFFLINE=1 to use \
                 the cache, or model.path to a local directory)"
            )
        }),
    }
}
