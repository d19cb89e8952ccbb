//! The telemetry exporter: engine events appended to
//! `.braid/telemetry/YYYY-MM-DD.jsonl` in batches (100 records or 5 s,
//! whichever first, and on exit) — never one write per event — and files
//! past the retention deleted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const BATCH: usize = 100;
pub const INTERVAL: Duration = Duration::from_secs(5);

pub struct Telemetry {
    dir: PathBuf,
    buf: Vec<String>,
    oldest: Option<Instant>,
    pub writes: usize,
}

impl Telemetry {
    pub fn new(dir: &Path, retention: Duration) -> Telemetry {
        prune(dir, retention);
        Telemetry {
            dir: dir.to_owned(),
            buf: Vec::with_capacity(BATCH),
            oldest: None,
            writes: 0,
        }
    }

    pub fn record(&mut self, line: String) {
        self.oldest.get_or_insert_with(Instant::now);
        self.buf.push(line);
        if self.buf.len() >= BATCH {
            self.flush();
        }
    }

    /// When the buffered records must be written at the latest.
    pub fn deadline(&self) -> Option<Instant> {
        self.oldest.map(|t| t + INTERVAL)
    }

    pub fn flush(&mut self) {
        self.oldest = None;
        if self.buf.is_empty() {
            return;
        }
        let day = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
        let path = self.dir.join(format!("{day}.jsonl"));
        let mut text = self.buf.join("\n");
        text.push('\n');
        self.buf.clear();
        let r = std::fs::create_dir_all(&self.dir).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
        });
        if r.is_ok() {
            self.writes += 1;
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Deletes day files older than the retention.
fn prune(dir: &Path, retention: Duration) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let cutoff = std::time::SystemTime::now() - retention;
    for e in rd.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|m| m < cutoff);
        if old
            && e.file_name().to_string_lossy().ends_with(".jsonl")
            && let Err(err) = std::fs::remove_file(e.path())
        {
            tracing::debug!(file = %e.path().display(), error = %err, "removing old telemetry");
        }
    }
}
