//! The gate result cache (seed 004's per-developer cache, done right). A
//! gate's key is a BLAKE3 hash of its argv, the values of its allowed
//! environment variables, and the content of the workspace it runs in (git
//! tree of HEAD plus the uncommitted changes; outside git, every file). A hit
//! means the same command already passed on the same content: it is recorded
//! as `cached` and not run. Only passing results are cached, so a flaky
//! failure is always run again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use braid_store::cache_index::{CacheIndex, CacheStats, entry_path};
use serde::{Deserialize, Serialize};

use crate::config::{CacheConfig, Gate};

/// What a cache entry remembers of a passing gate run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CachedResult {
    pub gate: String,
    pub duration_ms: u64,
    pub at: i64,
    /// The end of the gate's output when it passed.
    pub tail: String,
}

pub struct Cache {
    index: CacheIndex,
    pub ns: String,
    max_size: u64,
    ttl: Duration,
    /// Hits not yet marked used in the index.
    touched: std::sync::Mutex<Vec<String>>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The content identity of a clean checkout of `tree` (a git tree id):
/// what [`workspace_identity`] says of a worktree with no changes.
pub fn tree_identity(tree: &str) -> String {
    git_identity(tree, &[])
}

fn git_identity(tree: &str, dirty: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"git\0");
    h.update(tree.as_bytes());
    h.update(b"\0");
    h.update(dirty);
    h.finalize().to_hex().to_string()
}

/// Why the cache could not answer or keep a result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    #[error("{}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the workspace's content with git")]
    Git(#[from] braid_git::Error),
    #[error("the cache index")]
    Index(#[from] braid_store::Error),
    #[error("encoding a cache entry")]
    Json(#[from] serde_json::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The content identity of a workspace, hashed.
pub fn workspace_identity(dir: &Path) -> Result<String, CacheError> {
    if dir.join(".git").exists() {
        let (tree, dirty) = braid_git::content_identity(dir)?;
        return Ok(git_identity(&tree, &dirty));
    }
    let mut h = blake3::Hasher::new();
    {
        // Outside git: every file's relative path and content, in a stable order.
        h.update(b"dir\0");
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let rd = std::fs::read_dir(&d).map_err(io(&d))?;
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
        files.sort();
        for f in files {
            h.update(
                f.strip_prefix(dir)
                    .unwrap_or(&f)
                    .to_string_lossy()
                    .as_bytes(),
            );
            h.update(b"\0");
            let bytes = std::fs::read(&f).map_err(io(&f))?;
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
    }
    Ok(h.finalize().to_hex().to_string())
}

/// The cache key of running `gate` on a workspace whose identity is `content`.
pub fn gate_key(gate: &Gate, content: &str) -> String {
    let mut h = blake3::Hasher::new();
    for a in &gate.command {
        h.update(a.as_bytes());
        h.update(b"\0");
    }
    h.update(b"\0env\0");
    for k in &gate.env {
        h.update(k.as_bytes());
        h.update(b"=");
        if let Some(v) = std::env::var_os(k) {
            h.update(v.to_string_lossy().as_bytes());
        }
        h.update(b"\0");
    }
    h.update(b"\0content\0");
    h.update(content.as_bytes());
    h.finalize().to_hex().to_string()
}

impl Cache {
    pub fn open(cfg: &CacheConfig) -> Result<Cache, braid_store::Error> {
        let index = CacheIndex::open(&cfg.dir)?;
        Ok(Cache {
            index,
            ns: cfg.namespace.clone(),
            max_size: cfg.max_size,
            ttl: cfg.ttl,
            touched: Default::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        self.index.dir()
    }

    fn path(&self, key: &str) -> PathBuf {
        entry_path(self.index.dir(), &self.ns, key)
    }

    /// A passing result for `key`, if one is cached and readable. A hit is
    /// marked used at the next [`Cache::flush`] (or store, or drop): hits
    /// are written together, not one commit each.
    pub fn lookup(&self, key: &str) -> Option<CachedResult> {
        let entry = match self.index.get(&self.ns, key) {
            Ok(e) => e?,
            Err(e) => {
                tracing::warn!(error = %braid_core::error::chain(&e), "reading the cache index");
                return None;
            }
        };
        let cutoff = braid_core::clock::now_ms() - self.ttl.as_millis() as i64;
        if entry.created < cutoff {
            return None;
        }
        let text = std::fs::read_to_string(self.path(key)).ok()?;
        let hit: CachedResult = serde_json::from_str(&text).ok()?;
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key.to_owned());
        Some(hit)
    }

    /// Writes the uses of the hits looked up since the last flush.
    pub fn flush(&mut self) {
        let keys = std::mem::take(self.touched.get_mut().unwrap_or_else(|p| p.into_inner()));
        if let Err(e) = self.index.touch_many(&self.ns, &keys) {
            // Only the eviction order suffers.
            tracing::warn!(error = %braid_core::error::chain(&e), "marking cache entries used");
        }
    }

    /// Records a passing result; evicts least recently used entries past the
    /// size limit.
    pub fn store(&mut self, key: &str, result: &CachedResult) -> Result<(), CacheError> {
        let path = self.path(key);
        let dir = path.parent().expect("entry paths have a parent");
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let bytes = serde_json::to_vec(result)?;
        // Atomic, not durable: an entry lost to a crash re-runs its gate,
        // and a torn one cannot be (it is renamed in whole).
        braid_store::fsx::write_replace(&path, &bytes).map_err(io(&path))?;
        self.index
            .insert(&self.ns, key, bytes.len() as u64, self.max_size)?;
        Ok(())
    }

    pub fn prune(&mut self) -> Result<usize, braid_store::Error> {
        Ok(self
            .index
            .prune(self.max_size, Some(self.ttl.as_millis() as i64))?
            .len())
    }

    pub fn stats(&self) -> Result<CacheStats, braid_store::Error> {
        self.index.stats()
    }
}
