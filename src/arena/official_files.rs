//! The official CodeArena files the `codearena` protocol reads at run time — syncoder carries no
//! copy of them: fetched once over HTTPS from the official repository at a pinned commit,
//! checked against a pinned SHA-256 where one is known, and kept in a cache directory
//! (`$SYNCODER_CACHE`, else `$XDG_CACHE_HOME/syncoder`, else `~/.cache/syncoder`). Offline, the
//! error says where to put the file.

use crate::io::write_atomic;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The repository and commit the files are read from.
pub const REPO: &str = "QwenLM/Qwen2.5-Coder";
pub const COMMIT: &str = "d5ead97fea36bca3744e1a4c49e882f6fa2f406a";

/// Where raw files of a GitHub repository are served (`$SYNCODER_OFFICIAL_BASE_URL` overrides).
pub const RAW_BASE: &str = "https://raw.githubusercontent.com";

/// One pinned file.
#[derive(Clone, Copy, Debug)]
pub struct OfficialFile {
    /// Path inside the repository.
    pub path: &'static str,
    /// Its SHA-256 at `COMMIT`, when pinned.
    pub sha256: Option<&'static str>,
    /// How a user gives the file instead (named in the offline error).
    pub instead: &'static str,
}

/// The judge configuration (arena-hard format) of the official evaluation.
pub const JUDGE_CONFIG: OfficialFile = OfficialFile {
    path: "qwencoder-eval/instruct/CodeArena/utils/judge_config.yaml",
    sha256: Some("b6e9c9287ce89733a346b048d901ec1c20cecf73607d5d9e2093c17f016e1284"),
    instead: "pass its path with --judge-config",
};

/// The official judging script, read for the one judging text not in the configuration: the
/// re-ask sent when a reply holds no verdict.
pub const JUDGE_SCRIPT: OfficialFile = OfficialFile {
    path: "qwencoder-eval/instruct/CodeArena/judge_models.py",
    sha256: Some("b1ace37d587f5c5c9f8a2b1c2e295190ca72dbe02b96cc09c288b9dcb927f497"),
    instead: "put judge_models.py beside the file given to --judge-config",
};

/// The official map from a (washed) task type to its `[main, sub]` categories.
pub const TASKTYPE_TO_LEVELS: OfficialFile = OfficialFile {
    path: "qwencoder-eval/instruct/CodeArena/utils/tasktype_to_levels.json",
    sha256: Some("56839adef0ab3dc9218e52ca3f82d5c90efcbdf408442af50c8885ac6158cc10"),
    instead: "pass its path with --categories",
};

impl OfficialFile {
    /// The file's name.
    pub fn name(&self) -> &'static str {
        self.path.rsplit('/').next().unwrap_or(self.path)
    }

    /// The URL of the file at the pinned commit under `base`.
    pub fn url(&self, base: &str) -> String {
        format!("{}/{REPO}/{COMMIT}/{}", base.trim_end_matches('/'), self.path)
    }
}

/// The cache directory of the pinned commit's files.
pub fn cache_dir() -> PathBuf {
    let root = std::env::var_os("SYNCODER_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("syncoder")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/syncoder")))
        .unwrap_or_else(|| PathBuf::from(".syncoder-cache"));
    root.join("codearena").join(COMMIT)
}

/// The local path of `file`, fetched into the cache when it is not there yet.
pub fn fetch(file: &OfficialFile) -> Result<PathBuf> {
    let base = std::env::var("SYNCODER_OFFICIAL_BASE_URL").unwrap_or_else(|_| RAW_BASE.to_string());
    fetch_into(file, &base, &cache_dir())
}

/// `fetch` with the server and cache given.
pub fn fetch_into(file: &OfficialFile, base: &str, cache: &Path) -> Result<PathBuf> {
    let dest = cache.join(file.name());
    if dest.is_file() {
        let bytes = std::fs::read(&dest).with_context(|| format!("reading {}", dest.display()))?;
        check(file, &bytes).with_context(|| format!("{} (remove it to fetch it again)", dest.display()))?;
        return Ok(dest);
    }
    let url = file.url(base);
    let bytes = download(&url).with_context(|| {
        format!(
            "cannot fetch the official {} ({url}); without network, download it on another machine \
             and put it at {} (or {})",
            file.name(),
            dest.display(),
            file.instead
        )
    })?;
    check(file, &bytes).with_context(|| format!("{url}: not used"))?;
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    write_atomic(&dest, &bytes)?;
    Ok(dest)
}

fn download(url: &str) -> Result<Vec<u8>> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(15))
        .build()?;
    let response = client.get(url).send()?;
    if !response.status().is_success() {
        bail!("HTTP {}", response.status());
    }
    Ok(response.bytes()?.to_vec())
}

/// Refuses bytes whose SHA-256 is not the pinned one.
fn check(file: &OfficialFile, bytes: &[u8]) -> Result<()> {
    let Some(want) = file.sha256 else {
        return Ok(());
    };
    let got: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    if got != want {
        bail!("SHA-256 {got} is not the pinned {want} of {} at {COMMIT}", file.path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answering every request with `body`; returns its base URL.
    fn serve(body: &'static str) -> String {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        std::thread::spawn(move || {
            for req in server.incoming_requests() {
                let _ = req.respond(tiny_http::Response::from_string(body));
            }
        });
        format!("http://127.0.0.1:{port}")
    }

    #[test]
    fn fetches_once_and_checks_the_pinned_digest() {
        let dir = tempfile::tempdir().unwrap();
        // Unpinned: fetched, cached, then read from the cache without the server.
        let free = OfficialFile {
            path: "a/b/file.json",
            sha256: None,
            instead: "",
        };
        let got = fetch_into(&free, &serve("{}"), dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&got).unwrap(), "{}");
        assert_eq!(fetch_into(&free, "http://127.0.0.1:9", dir.path()).unwrap(), got);
        // Pinned: anything but the pinned bytes is refused and not cached.
        let e = format!(
            "{:#}",
            fetch_into(&JUDGE_CONFIG, &serve("not it"), dir.path()).unwrap_err()
        );
        assert!(e.contains("not the pinned") && e.contains("not used"), "{e}");
        assert!(!dir.path().join("judge_config.yaml").exists());
        // Offline: the error says where the file goes.
        let e = format!(
            "{:#}",
            fetch_into(&JUDGE_CONFIG, "http://127.0.0.1:9", dir.path()).unwrap_err()
        );
        assert!(
            e.contains(&dir.path().join("judge_config.yaml").display().to_string()) && e.contains("--judge-config"),
            "{e}"
        );
        // A cached copy with other bytes is refused too.
        std::fs::write(dir.path().join("judge_config.yaml"), "edited").unwrap();
        let e = format!(
            "{:#}",
            fetch_into(&JUDGE_CONFIG, "http://127.0.0.1:9", dir.path()).unwrap_err()
        );
        assert!(e.contains("remove it"), "{e}");
        assert!(JUDGE_CONFIG.url(RAW_BASE).starts_with(
            "https://raw.githubusercontent.com/QwenLM/Qwen2.5-Coder/d5ead97fea36bca3744e1a4c49e882f6fa2f406a/qwencoder-eval/"
        ));
    }
}
