//! The `braid` command line, run as a real process against real SQLite
//! files in temp directories.

// The tests' own notes are not braid's output (src/term.rs is for that).
#![allow(clippy::disallowed_methods, clippy::disallowed_macros)]

mod agents;
mod cli;
mod concurrency;
mod control;
mod faults;
mod faults_db;
mod merge;
mod newcomer;
mod postgres;
mod remote;
mod review;
mod run;
mod serve;
mod snapshot;
mod stack;
mod transfer;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A project in a temp directory, and a way to run braid in it.
pub struct Proj {
    pub dir: tempfile::TempDir,
    /// The gate result cache, outside the project so it never counts as
    /// project content.
    pub cache: tempfile::TempDir,
}

impl Proj {
    pub fn init() -> Proj {
        let p = Proj::empty();
        p.ok(&["init"]);
        p
    }

    pub fn empty() -> Proj {
        Proj {
            dir: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn db(&self) -> PathBuf {
        self.path().join(".braid/braid.db")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_braid"));
        c.current_dir(self.path())
            .env_remove("BRAID_DB")
            .env("BRAID_ACTOR", "tester")
            .env("NO_COLOR", "1")
            .env("BRAID_CACHE_DIR", self.cache.path());
        c
    }

    /// Runs braid to completion; a run that hangs fails the test after two
    /// minutes instead of hanging the suite.
    pub fn run(&self, args: &[&str]) -> Output {
        use std::io::Read;
        use wait_timeout::ChildExt;
        let mut child = self
            .cmd()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let o = std::thread::spawn(move || {
            let mut v = Vec::new();
            out.read_to_end(&mut v).unwrap();
            v
        });
        let e = std::thread::spawn(move || {
            let mut v = Vec::new();
            err.read_to_end(&mut v).unwrap();
            v
        });
        let Some(status) = child
            .wait_timeout(std::time::Duration::from_secs(120))
            .unwrap()
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("braid {args:?} did not finish within 2 minutes");
        };
        Output {
            status,
            stdout: o.join().unwrap(),
            stderr: e.join().unwrap(),
        }
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "braid {args:?} failed ({:?}):\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs with --json and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let s = self.ok(&a);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"))
    }

    /// Runs expecting failure with `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "braid {args:?}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn add(&self, args: &[&str]) -> String {
        let mut a = vec!["add"];
        a.extend_from_slice(args);
        self.json(&a)["id"].as_str().unwrap().to_owned()
    }
}

/// Kills a child process when dropped, so a failing test leaves no orphan
/// holding the test runner's pipes open.
pub struct Reap(pub std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs git in `dir`, failing the test (with git's stderr) if git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs git in `dir`; whether it succeeded.
pub fn git_ok(dir: &Path, args: &[&str]) -> bool {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
        .status
        .success()
}
