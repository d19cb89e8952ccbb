//! The result cache's index: which entries exist in which namespace, their
//! sizes, when they were last used. Kept in a small SQLite file beside the
//! entries; the total size is a maintained counter (never a directory walk),
//! eviction is least-recently-used by a use counter (so two uses within one
//! clock tick still have an order), expiry by age on an injected clock. A
//! corrupted index is set aside and rebuilt from the entry files — the only
//! time entries are listed.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::db_err;
use crate::Result;
use braid_core::SharedClock;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    ns        TEXT NOT NULL,
    key       TEXT NOT NULL,
    size      INTEGER NOT NULL,
    created   INTEGER NOT NULL,
    last_used INTEGER NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_lru ON entries(last_used);
CREATE TABLE IF NOT EXISTS totals (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO totals VALUES ('size', 0), ('count', 0);
";

/// One cached result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    pub ns: String,
    pub key: String,
    pub size: u64,
    pub created: i64,
    pub last_used: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: u64,
    pub size: u64,
    /// (namespace, entries, bytes)
    pub namespaces: Vec<(String, u64, u64)>,
    /// True when this open had to rebuild a corrupted index.
    pub rebuilt: bool,
}

pub struct CacheIndex {
    conn: Connection,
    dir: PathBuf,
    pub rebuilt: bool,
    clock: SharedClock,
}

/// Maps `ns, key, size, created, last_used` to an entry.
fn entry_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CacheEntry> {
    Ok(CacheEntry {
        ns: r.get(0)?,
        key: r.get(1)?,
        size: r.get::<_, i64>(2)? as u64,
        created: r.get(3)?,
        last_used: r.get(4)?,
    })
}

/// Where an entry's file lives.
pub fn entry_path(dir: &Path, ns: &str, key: &str) -> PathBuf {
    dir.join(ns)
        .join(&key[..2.min(key.len())])
        .join(format!("{key}.json"))
}

fn open_checked(path: &Path) -> std::result::Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    // A file that is not a database (or a damaged header) fails here; a full
    // integrity check on every open would cost time proportional to the index.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // A lost last entry after a power cut costs one gate re-run, not data.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    // Version 2: the use counter that orders eviction (an index made by an
    // older braid gets the column; its entries start unordered).
    if conn.prepare("SELECT uses FROM entries LIMIT 0").is_err() {
        conn.execute_batch("ALTER TABLE entries ADD COLUMN uses INTEGER NOT NULL DEFAULT 0")?;
    }
    conn.execute_batch("CREATE INDEX IF NOT EXISTS entries_uses ON entries(uses)")?;
    conn.query_row("SELECT count(*) FROM totals", [], |r| r.get::<_, i64>(0))?;
    Ok(conn)
}

impl CacheIndex {
    /// Opens (creating) the index in `dir`; rebuilds it if it is corrupted.
    pub fn open(dir: &Path) -> Result<CacheIndex> {
        std::fs::create_dir_all(dir).map_err(|e| crate::sqlite::io_err(dir, e))?;
        let path = dir.join("index.db");
        match open_checked(&path) {
            Ok(conn) => Ok(CacheIndex {
                conn,
                dir: dir.to_owned(),
                rebuilt: false,
                clock: braid_core::clock::system(),
            }),
            Err(e) => {
                // Set the broken index aside (never lose evidence), start over.
                let aside = dir.join(format!("index.db.corrupt-{}", braid_core::clock::now_ms()));
                tracing::warn!(index = %path.display(), error = %e, aside = %aside.display(), "the cache index is damaged; rebuilding it");
                std::fs::rename(&path, &aside).map_err(|e| crate::sqlite::io_err(&path, e))?;
                for ext in ["-wal", "-shm"] {
                    // Belonged to the set-aside file; may not exist.
                    let _ = std::fs::remove_file(dir.join(format!("index.db{ext}")));
                }
                let conn = open_checked(&path).map_err(db_err)?;
                let mut idx = CacheIndex {
                    conn,
                    dir: dir.to_owned(),
                    rebuilt: true,
                    clock: braid_core::clock::system(),
                };
                idx.rebuild()?;
                Ok(idx)
            }
        }
    }

    /// Re-creates the index from the entry files on disk.
    fn rebuild(&mut self) -> Result<()> {
        let tx = self.conn.transaction().map_err(db_err)?;
        let mut stack = vec![self.dir.clone()];
        let (mut size, mut count) = (0i64, 0i64);
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let Some(key) = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".json"))
                else {
                    continue;
                };
                // <dir>/<ns>/<xx>/<key>.json
                let Some(ns) = p
                    .parent()
                    .and_then(|x| x.parent())
                    .and_then(|x| x.file_name())
                    .and_then(|x| x.to_str())
                else {
                    continue;
                };
                let meta = e.metadata().map_err(|er| crate::sqlite::io_err(&p, er))?;
                let at = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or_else(|| self.clock.now_ms());
                // Uses are ordered by the files' times (a later use counts
                // on from the largest).
                tx.execute(
                    "INSERT OR REPLACE INTO entries (ns, key, size, created, last_used, uses) VALUES (?1, ?2, ?3, ?4, ?4, ?4)",
                    params![ns, key, meta.len() as i64, at],
                )
                .map_err(db_err)?;
                size += meta.len() as i64;
                count += 1;
            }
        }
        tx.execute("UPDATE totals SET value = ?1 WHERE name = 'size'", [size])
            .map_err(db_err)?;
        tx.execute("UPDATE totals SET value = ?1 WHERE name = 'count'", [count])
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Times entries (creation, last use, expiry) by `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Looks an entry up without marking it used (a read; see
    /// [`CacheIndex::touch_many`]).
    pub fn get(&self, ns: &str, key: &str) -> Result<Option<CacheEntry>> {
        self.conn
            .prepare_cached(
                "SELECT ns, key, size, created, last_used FROM entries WHERE ns = ?1 AND key = ?2",
            )
            .and_then(|mut st| st.query_row(params![ns, key], entry_from_row).optional())
            .map_err(db_err)
    }

    /// Marks entries used, in order (the last most recently), in one
    /// transaction: hits are gathered and written together, not one commit
    /// each.
    pub fn touch_many(&mut self, ns: &str, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let tx = self.conn.transaction().map_err(db_err)?;
        {
            let mut st = tx
                .prepare_cached(
                    "UPDATE entries SET last_used = ?3, uses = (SELECT coalesce(max(uses), 0) + 1 FROM entries) \
                     WHERE ns = ?1 AND key = ?2",
                )
                .map_err(db_err)?;
            for k in keys {
                st.execute(params![ns, k, now]).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    /// Looks an entry up and marks it used (most recently, of all).
    pub fn touch(&self, ns: &str, key: &str) -> Result<Option<CacheEntry>> {
        let now = self.clock.now_ms();
        let e = self
            .conn
            .query_row(
                "UPDATE entries SET last_used = ?3, uses = (SELECT coalesce(max(uses), 0) + 1 FROM entries) \
                 WHERE ns = ?1 AND key = ?2 RETURNING ns, key, size, created, last_used",
                params![ns, key, now],
                entry_from_row,
            )
            .optional()
            .map_err(db_err)?;
        Ok(e)
    }

    /// Records a new entry (its file already written) and evicts the least
    /// recently used entries while the total exceeds `max_size`. Returns the
    /// entries evicted (their files are deleted here).
    pub fn insert(
        &mut self,
        ns: &str,
        key: &str,
        size: u64,
        max_size: u64,
    ) -> Result<Vec<CacheEntry>> {
        let now = self.clock.now_ms();
        let tx = self.conn.transaction().map_err(db_err)?;
        let old: Option<i64> = tx
            .query_row(
                "SELECT size FROM entries WHERE ns = ?1 AND key = ?2",
                params![ns, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        tx.execute(
            "INSERT OR REPLACE INTO entries (ns, key, size, created, last_used, uses) \
             VALUES (?1, ?2, ?3, ?4, ?4, (SELECT coalesce(max(uses), 0) + 1 FROM entries))",
            params![ns, key, size as i64, now],
        )
        .map_err(db_err)?;
        tx.execute(
            "UPDATE totals SET value = value + ?1 WHERE name = 'size'",
            [size as i64 - old.unwrap_or(0)],
        )
        .map_err(db_err)?;
        if old.is_none() {
            tx.execute(
                "UPDATE totals SET value = value + 1 WHERE name = 'count'",
                [],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        self.evict(max_size, None)
    }

    /// Deletes entries older than `ttl_ms` (by last use) and then the least
    /// recently used while the total exceeds `max_size`.
    pub fn prune(&mut self, max_size: u64, ttl_ms: Option<i64>) -> Result<Vec<CacheEntry>> {
        self.evict(max_size, ttl_ms.map(|t| self.clock.now_ms() - t))
    }

    fn evict(&mut self, max_size: u64, older_than: Option<i64>) -> Result<Vec<CacheEntry>> {
        let mut gone = Vec::new();
        loop {
            let total = self.total_size()?;
            let row: Option<CacheEntry> = self
                .conn
                .query_row(
                    "SELECT ns, key, size, created, last_used FROM entries ORDER BY uses LIMIT 1",
                    [],
                    entry_from_row,
                )
                .optional()
                .map_err(db_err)?;
            let Some(e) = row else { break };
            // The least recently used may not be the oldest by time (an
            // index from an older braid): expiry looks for the oldest too.
            let expired = match older_than {
                Some(cut) => self
                    .conn
                    .query_row(
                        "SELECT ns, key, size, created, last_used FROM entries WHERE last_used < ?1 LIMIT 1",
                        [cut],
                        entry_from_row,
                    )
                    .optional()
                    .map_err(db_err)?,
                None => None,
            };
            let e = match expired {
                Some(old) => old,
                None if total > max_size => e,
                None => break,
            };
            let tx = self.conn.transaction().map_err(db_err)?;
            tx.execute(
                "DELETE FROM entries WHERE ns = ?1 AND key = ?2",
                params![e.ns, e.key],
            )
            .map_err(db_err)?;
            tx.execute(
                "UPDATE totals SET value = value - ?1 WHERE name = 'size'",
                [e.size as i64],
            )
            .map_err(db_err)?;
            tx.execute(
                "UPDATE totals SET value = value - 1 WHERE name = 'count'",
                [],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            let file = entry_path(&self.dir, &e.ns, &e.key);
            if let Err(err) = std::fs::remove_file(&file)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(entry = %file.display(), error = %err, "removing an evicted cache entry");
            }
            gone.push(e);
        }
        Ok(gone)
    }

    pub fn total_size(&self) -> Result<u64> {
        let v: i64 = self
            .conn
            .query_row("SELECT value FROM totals WHERE name = 'size'", [], |r| {
                r.get(0)
            })
            .map_err(db_err)?;
        Ok(v.max(0) as u64)
    }

    pub fn stats(&self) -> Result<CacheStats> {
        let get = |name: &str| -> Result<u64> {
            let v: i64 = self
                .conn
                .query_row("SELECT value FROM totals WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .map_err(db_err)?;
            Ok(v.max(0) as u64)
        };
        let mut stmt = self
            .conn
            .prepare("SELECT ns, count(*), sum(size) FROM entries GROUP BY ns ORDER BY ns")
            .map_err(db_err)?;
        let namespaces = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)?;
        Ok(CacheStats {
            entries: get("count")?,
            size: get("size")?,
            namespaces,
            rebuilt: self.rebuilt,
        })
    }
}

impl std::fmt::Debug for CacheIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheIndex")
            .field("dir", &self.dir)
            .finish()
    }
}
