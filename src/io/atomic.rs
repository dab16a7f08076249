//! Files that are whole or absent: a write goes to a temporary file beside the target, is
//! fsynced, then renamed over it, so a kill at any moment leaves the old file or the new one.
//! Directories the same way (`write_dir_atomic`): filled under a temporary name, renamed into
//! place only when complete.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Makes the entries of `dir` (files created, renamed or removed in it) durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Fills a new directory `out` through `fill` (given a temporary directory beside it), then
/// renames it into place; on an error nothing is left behind. `out` must not exist or be empty,
/// unless `replace`, which removes what is there once the new one is complete.
pub fn write_dir_atomic<T>(out: &Path, replace: bool, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if out.exists() && std::fs::read_dir(out)?.next().is_some() && !replace {
        bail!("{}: exists and is not empty", out.display());
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = parent.join(format!(".tmp-{name}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let value = match fill(&tmp).and_then(|v| fsync_dir(&tmp).map(|_| v)) {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("replacing {}", out.display()))?;
    }
    std::fs::rename(&tmp, out).with_context(|| format!("renaming into {}", out.display()))?;
    fsync_dir(parent)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_appears_whole_or_not_at_all() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let n = write_dir_atomic(&out, false, |d| {
            std::fs::write(d.join("a"), "1")?;
            Ok(7)
        })
        .unwrap();
        assert_eq!(
            (n, std::fs::read_to_string(out.join("a")).unwrap()),
            (7, "1".to_string())
        );
        // Not over a used directory, unless replacing.
        assert!(write_dir_atomic(&out, false, |_| Ok(())).is_err());
        let failed = write_dir_atomic(&root.path().join("bad"), false, |d| -> Result<()> {
            std::fs::write(d.join("half"), "x")?;
            bail!("broken midway")
        });
        assert!(failed.is_err());
        let left: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("out")],
            "nothing of the failed one is left"
        );
        write_dir_atomic(&out, true, |d| std::fs::write(d.join("b"), "2").map_err(Into::into)).unwrap();
        assert!(!out.join("a").exists() && out.join("b").exists());
    }
}
