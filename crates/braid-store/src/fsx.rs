//! Crash-safe file writes, the one way braid replaces a file: a temp file in
//! the same directory, fsynced, renamed over the target, then the directory
//! fsynced, so a crash at any instant leaves the old content or the new,
//! never a torn mix. Every crate that writes a file braid keeps uses this.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.file_mut().write_all(bytes)?;
    f.commit()
}

/// Writes `bytes` to `path` atomically but without waiting for the disk:
/// after a crash the file holds the old content, the new, or (on some
/// filesystems) nothing — never a mix. For what braid can make again and
/// checks when it reads (a gate cache entry: a lost one re-runs the gate),
/// where two fsyncs per write would cost more than they save.
pub fn write_replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.file_mut().write_all(bytes)?;
    f.replace()
}

/// fsyncs a directory, so a rename or a new entry inside it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A file that replaces `path` only when committed; dropped uncommitted, it
/// leaves nothing behind.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    tmp: tempfile::NamedTempFile,
}

impl AtomicFile {
    pub fn create(path: &Path) -> std::io::Result<AtomicFile> {
        let tmp = tempfile::Builder::new()
            .prefix(".braid-tmp")
            .tempfile_in(parent_of(path))?;
        Ok(AtomicFile {
            path: path.to_owned(),
            tmp,
        })
    }

    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    pub fn file_mut(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Syncs the content, renames it over the target and syncs the
    /// directory. Temp files start private (0600); what braid writes is an
    /// ordinary file (0644).
    pub fn commit(self) -> std::io::Result<()> {
        let dir = parent_of(&self.path).to_owned();
        self.tmp.as_file().sync_all()?;
        self.replace()?;
        sync_dir(&dir)
    }

    /// Renames the content over the target without syncing (see
    /// [`write_replace`]).
    fn replace(self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        self.tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_file_replaces_the_old_and_an_uncommitted_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.file_mut().write_all(b"three").unwrap();
        }
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
}
