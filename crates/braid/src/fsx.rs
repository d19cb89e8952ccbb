//! Durable file writes: temp file, fsync, rename, fsync the directory.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    braid_store::sqlite::sync_dir(dir)?;
    Ok(())
}

/// A file written in place of `path` only when committed: a temp file in the
/// same directory, fsynced and renamed, then the directory fsynced.
pub struct AtomicFile {
    path: std::path::PathBuf,
    tmp: tempfile::NamedTempFile,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<Self> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("creating a temp file in {}", dir.display()))?;
        Ok(AtomicFile {
            path: path.to_owned(),
            tmp,
        })
    }

    pub fn file(&self) -> &std::fs::File {
        self.tmp.as_file()
    }

    pub fn commit(self) -> Result<()> {
        let path = self.path;
        set_readable(self.tmp.as_file(), &path)?;
        self.tmp
            .as_file()
            .sync_all()
            .with_context(|| format!("syncing {}", path.display()))?;
        self.tmp
            .persist(&path)
            .with_context(|| format!("renaming into {}", path.display()))?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        braid_store::sqlite::sync_dir(dir)?;
        Ok(())
    }
}

/// Temp files start private (0600); what braid writes is an ordinary file.
fn set_readable(file: &std::fs::File, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting permissions of {}", path.display()))
}
