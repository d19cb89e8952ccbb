//! What braid knows of the agent CLIs it runs (`[[agent]] kind`): how to
//! start each non-interactively with structured output, and how to read
//! that output — the session, the model, tokens, the cost, turns, the final
//! message, a rate limit, permission denials. `command` agents are opaque:
//! an exit code and text. The formats are those of the real CLIs, captured
//! in crates/braid/tests/agents/FORMATS.md.
//!
//! An agent's output goes to its log file; the report is read from the log
//! after it exits, a line at a time (a line longer than [`MAX_LINE`] is
//! skipped), so a flood of output costs no memory.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::{Value, json};

/// Lines longer than this are not parsed (a report line is a few KiB).
const MAX_LINE: u64 = 4 << 20;

/// Which CLI an agent is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// Anything: argv in, exit code and text out.
    #[default]
    Command,
    /// Claude Code: `claude -p --output-format stream-json`.
    Claude,
    /// Codex: `codex exec --json`.
    Codex,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "command" => Some(Kind::Command),
            "claude" => Some(Kind::Claude),
            "codex" => Some(Kind::Codex),
            _ => None,
        }
    }

    /// The command an agent of this kind runs when its config names none:
    /// non-interactive, structured output, allowed to edit its worktree,
    /// the prompt last (after `--`, which Claude's list-taking options
    /// would otherwise swallow).
    pub fn default_command(self) -> Vec<String> {
        let argv: &[&str] = match self {
            Kind::Command => &[],
            Kind::Claude => &[
                "claude",
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--permission-mode",
                "acceptEdits",
                "--",
                "{prompt}",
            ],
            Kind::Codex => &[
                "codex",
                "exec",
                "--json",
                "-s",
                "workspace-write",
                "--skip-git-repo-check",
                "{prompt}",
            ],
        };
        argv.iter().map(|s| (*s).to_owned()).collect()
    }
}

/// The most bytes an argument may hold (Linux's `MAX_ARG_STRLEN`, 32
/// pages, with its terminating NUL), less a margin.
pub const ARG_MAX: usize = 128 * 1024 - 1024;

/// `argv` (with `{prompt}` still in it) changed to read the prompt from
/// standard input, for a prompt too large for an argument: Claude reads it
/// from stdin when none is given after `--`; Codex when the prompt is `-`.
/// `None` for a `command` agent (its program's way to read a prompt is its
/// own: `{prompt_file}` says where the file is).
pub fn prompt_on_stdin(kind: Kind, argv: &[String]) -> Option<Vec<String>> {
    let at = argv.iter().position(|a| a == "{prompt}")?;
    let mut out = argv.to_vec();
    match kind {
        Kind::Command => return None,
        Kind::Claude => {
            out.remove(at);
        }
        Kind::Codex => out[at] = "-".to_owned(),
    }
    Some(out)
}

/// The argv that resumes `session` with a new message, from the agent's
/// own argv template (before `{prompt}` is put in): Claude takes
/// `--resume ID` before the `--` that ends its options; Codex takes
/// `resume ID` between its options and the prompt (its `-s` and `--json`
/// stay before, where `exec resume` honours them). `None` for `command`
/// agents, or a template without `{prompt}` (nothing to say the message
/// with).
pub fn resume_argv(kind: Kind, argv: &[String], session: &str) -> Option<Vec<String>> {
    let prompt_at = argv.iter().rposition(|a| a.contains("{prompt"))?;
    let mut out = argv.to_vec();
    match kind {
        Kind::Command => return None,
        Kind::Claude => {
            let at = argv[..prompt_at]
                .iter()
                .position(|a| a == "--")
                .unwrap_or(prompt_at);
            out.splice(at..at, ["--resume".to_owned(), session.to_owned()]);
        }
        Kind::Codex => {
            out.splice(
                prompt_at..prompt_at,
                ["resume".to_owned(), session.to_owned()],
            );
        }
    }
    Some(out)
}

/// What an agent's structured output said about its run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub session: Option<String>,
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// As the CLI reported it; `None` when it reports none (Codex).
    pub cost_usd: Option<f64>,
    pub turns: Option<u64>,
    pub final_message: Option<String>,
    /// It ended on a rate limit (HTTP 429 or the provider's rate-limit
    /// error), as its structured output says.
    pub rate_limited: bool,
    /// It ended on an error (the API's, after the CLI's own retries).
    pub error: Option<String>,
    /// Tools it was refused (Claude's `permission_denials`).
    pub denials: Vec<String>,
    /// What each refusal said (Claude's `permission_denied` lines: the
    /// tool, what it would have done, why it needs approval).
    pub denied: Vec<String>,
    /// Tool calls it made.
    pub tool_calls: u64,
    /// The run's closing line was seen (a CLI killed mid-stream has none;
    /// what it printed before is kept).
    pub complete: bool,
    /// The cost was computed from `[prices]`, not reported.
    pub priced: bool,
}

impl Report {
    /// Prices the tokens when the CLI reported no cost (USD per million
    /// tokens of each sort); `true` when it did.
    pub fn price(&mut self, p: &crate::config::Price) -> bool {
        if self.cost_usd.is_some() {
            return false;
        }
        let m = |tokens: u64, usd: f64| tokens as f64 * usd / 1e6;
        self.cost_usd = Some(
            m(self.input_tokens, p.input)
                + m(self.output_tokens, p.output)
                + m(self.cache_read_tokens, p.cache_read)
                + m(self.cache_write_tokens, p.cache_write),
        );
        true
    }

    /// What the agent stopped to ask a person, when it did: it was refused
    /// a permission, or its final message is a question, and it left no
    /// work behind (`no_work`) — an agent that did its work and was
    /// refused something on the way is judged by the gates. The rules are
    /// the same for both CLIs (docs/agents.md).
    pub fn asks(&self, no_work: bool) -> Option<(&'static str, String)> {
        if !no_work || !self.complete || self.error.is_some() {
            return None;
        }
        let last = self.final_message.as_deref().unwrap_or("").trim();
        if !self.denials.is_empty() {
            let mut q = format!("The agent was refused: {}.", self.denials.join(", "));
            for d in &self.denied {
                q.push_str("\n- ");
                q.push_str(d);
            }
            if !last.is_empty() {
                q.push_str("\nIt said: ");
                q.push_str(last);
            }
            return Some(("denied", q));
        }
        let asks = last
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .is_some_and(|l| l.trim_end().ends_with('?'));
        asks.then(|| ("question", last.to_owned()))
    }

    /// The ledger's fields, as the `usage` object of `agent_finished`.
    pub fn usage_json(&self) -> Value {
        json!({
            "model": self.model,
            "session": self.session,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cost_usd": self.cost_usd,
            "turns": self.turns,
            "tool_calls": self.tool_calls,
            "complete": self.complete,
            "cost_source": match (self.cost_usd, self.priced) {
                (None, _) => None,
                (Some(_), true) => Some("prices"),
                (Some(_), false) => Some("reported"),
            },
        })
    }
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads the report of an agent of `kind` from its log, from byte `from`
/// (where this attempt's output began). `None` for `command` agents, or
/// when the log holds nothing structured.
pub fn read(kind: Kind, log: &Path, from: u64) -> Option<Report> {
    if kind == Kind::Command {
        return None;
    }
    let mut f = std::fs::File::open(log).ok()?;
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut r = BufReader::new(f);
    let mut report = Report::default();
    let mut seen = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut r).take(MAX_LINE).read_until(b'\n', &mut line).ok()?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') && n as u64 == MAX_LINE {
            // Too long to be a report line: skip to its end, holding
            // nothing.
            loop {
                let buf = r.fill_buf().ok()?;
                if buf.is_empty() {
                    break;
                }
                if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                    r.consume(i + 1);
                    break;
                }
                let n = buf.len();
                r.consume(n);
            }
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&line) else {
            continue; // stderr text, a progress line
        };
        seen |= match kind {
            Kind::Claude => claude_line(&v, &mut report),
            Kind::Codex => codex_line(&v, &mut report),
            Kind::Command => false,
        };
    }
    seen.then_some(report)
}

/// The latest action in a stretch of an agent's structured output: the
/// tool it called (with what it names: a file, a command) or the last line
/// of text it wrote, one line of at most 120 bytes. `None` when the stretch
/// shows none (or the agent is a `command`).
pub fn latest_action(kind: Kind, bytes: &[u8]) -> Option<String> {
    let mut latest = None;
    for line in bytes.split(|&b| b == b'\n') {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        let found = match kind {
            Kind::Command => return None,
            Kind::Claude => claude_action(&v),
            Kind::Codex => codex_action(&v),
        };
        if found.is_some() {
            latest = found;
        }
    }
    let one_line = latest?.split_whitespace().collect::<Vec<_>>().join(" ");
    let clipped = clip(&one_line, 120);
    Some(if clipped.len() < one_line.len() {
        format!("{clipped}…")
    } else {
        one_line
    })
}

fn last_line(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}

fn claude_action(v: &Value) -> Option<String> {
    if v["type"] != "assistant" {
        return None;
    }
    let mut out = None;
    for item in v["message"]["content"].as_array()? {
        match item["type"].as_str() {
            Some("tool_use") => {
                let name = item["name"].as_str().unwrap_or("a tool");
                let input = &item["input"];
                let what = [
                    "file_path",
                    "command",
                    "pattern",
                    "path",
                    "url",
                    "description",
                ]
                .iter()
                .find_map(|k| input[*k].as_str());
                out = Some(match what {
                    Some(w) => format!("{name} {w}"),
                    None => name.to_owned(),
                });
            }
            Some("text") => {
                if let Some(l) = item["text"].as_str().and_then(last_line) {
                    out = Some(l);
                }
            }
            _ => {}
        }
    }
    out
}

fn codex_action(v: &Value) -> Option<String> {
    if v["type"] != "item.started" && v["type"] != "item.completed" {
        return None;
    }
    let item = &v["item"];
    match item["type"].as_str()? {
        "command_execution" => Some(format!("$ {}", item["command"].as_str().unwrap_or(""))),
        "file_change" => {
            let paths: Vec<&str> = item["changes"]
                .as_array()?
                .iter()
                .filter_map(|c| c["path"].as_str())
                .collect();
            Some(format!("edit {}", paths.join(", ")))
        }
        "agent_message" => item["text"].as_str().and_then(last_line),
        "mcp_tool_call" => Some(format!(
            "{} {}",
            item["server"].as_str().unwrap_or(""),
            item["tool"].as_str().unwrap_or("")
        )),
        "web_search" => Some(format!("search {}", item["query"].as_str().unwrap_or(""))),
        _ => None,
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// One line of `claude -p --output-format stream-json --verbose`.
fn claude_line(v: &Value, r: &mut Report) -> bool {
    match v["type"].as_str() {
        Some("system") if v["subtype"] == "permission_denied" => {
            let tool = v["tool_name"].as_str().unwrap_or("a tool");
            let msg = v["message"].as_str().unwrap_or("");
            if r.denied.len() < 10 {
                r.denied
                    .push(clip(&format!("{tool}: {msg}"), 1000).to_owned());
            }
            true
        }
        Some("system") if v["subtype"] == "init" => {
            r.session = s(&v["session_id"]).or(r.session.take());
            r.model = s(&v["model"]).or(r.model.take());
            true
        }
        Some("assistant") => {
            if let Some(items) = v["message"]["content"].as_array() {
                r.tool_calls += items.iter().filter(|i| i["type"] == "tool_use").count() as u64;
            }
            if v["api_error_status"] == 429 || v["error"] == "rate_limit" {
                r.rate_limited = true;
            }
            true
        }
        Some("result") => {
            // The sum over this invocation's model calls (the assistant
            // lines carry only a snapshot at each message's start).
            let usage = &v["usage"];
            r.input_tokens = u(&usage["input_tokens"]);
            r.output_tokens = u(&usage["output_tokens"]);
            r.cache_read_tokens = u(&usage["cache_read_input_tokens"]);
            r.cache_write_tokens = u(&usage["cache_creation_input_tokens"]);
            r.cost_usd = v["total_cost_usd"].as_f64();
            r.turns = v["num_turns"].as_u64();
            r.final_message = s(&v["result"]);
            r.session = s(&v["session_id"]).or(r.session.take());
            if r.model.is_none()
                && let Some(m) = v["modelUsage"].as_object().and_then(|m| m.keys().next())
            {
                r.model = Some(m.clone());
            }
            // `subtype` says "success" even when the run died on API
            // errors: `is_error` tells.
            if v["is_error"] == true {
                r.error = s(&v["result"]).or_else(|| Some("error".into()));
            }
            if v["api_error_status"] == 429 || v["api_error_type"] == "rate_limit_error" {
                r.rate_limited = true;
            }
            r.denials = v["permission_denials"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .map(|x| x["tool_name"].as_str().unwrap_or("?").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            r.complete = true;
            true
        }
        Some("user") => true,
        _ => false,
    }
}

/// One line of `codex exec --json`.
fn codex_line(v: &Value, r: &mut Report) -> bool {
    match v["type"].as_str() {
        Some("thread.started") => {
            r.session = s(&v["thread_id"]);
            true
        }
        Some("item.completed") => {
            let item = &v["item"];
            match item["type"].as_str() {
                Some("agent_message") => r.final_message = s(&item["text"]),
                Some("command_execution" | "file_change" | "mcp_tool_call" | "web_search") => {
                    r.tool_calls += 1
                }
                _ => {}
            }
            true
        }
        Some("turn.completed") => {
            // OpenAI's meaning: input includes the cached tokens; braid's
            // ledger keeps Anthropic's (input apart from cache reads).
            let usage = &v["usage"];
            let cached = u(&usage["cached_input_tokens"]);
            r.input_tokens = u(&usage["input_tokens"]).saturating_sub(cached);
            r.cache_read_tokens = cached;
            r.cache_write_tokens = u(&usage["cache_write_input_tokens"]);
            r.output_tokens = u(&usage["output_tokens"]);
            r.complete = true;
            true
        }
        Some("turn.failed") | Some("error") => {
            let msg = s(&v["error"]["message"]).or_else(|| s(&v["message"]));
            if let Some(m) = &msg {
                let l = m.to_ascii_lowercase();
                if (l.contains("429") || l.contains("rate limit")) && !l.starts_with("reconnecting")
                {
                    r.rate_limited = true;
                }
            }
            if v["type"] == "turn.failed" {
                r.error = msg;
                r.complete = true;
            }
            true
        }
        Some(_) => true,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &[&str]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), lines.join("\n") + "\n").unwrap();
        f
    }

    #[test]
    fn claude_reports_are_read_from_the_result_line() {
        // Lines as Claude Code 2.1.332 printed them (FORMATS.md 1.4).
        let f = log(&[
            "earlier attempt's text",
            r#"{"type":"system","subtype":"init","session_id":"4c14a0e4","model":"claude-opus-5-5"}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t1","name":"Write","input":{}}],"usage":{"input_tokens":100,"output_tokens":1}}}"#,
            r#"{"type":"user","message":{"content":[]}}"#,
            r#"{"type":"result","subtype":"success","is_error":false,"num_turns":2,"result":"I wrote hello.txt.","session_id":"4c14a0e4","total_cost_usd":0.0018180000000000002,"usage":{"input_tokens":250,"cache_creation_input_tokens":40,"cache_read_input_tokens":90,"output_tokens":30},"permission_denials":[]}"#,
        ]);
        let r = read(Kind::Claude, f.path(), 0).unwrap();
        assert_eq!(r.session.as_deref(), Some("4c14a0e4"));
        assert_eq!(r.model.as_deref(), Some("claude-opus-5-5"));
        assert_eq!(
            (
                r.input_tokens,
                r.output_tokens,
                r.cache_read_tokens,
                r.cache_write_tokens
            ),
            (250, 30, 90, 40)
        );
        assert_eq!(r.cost_usd, Some(0.0018180000000000002));
        assert_eq!((r.turns, r.tool_calls), (Some(2), 1));
        assert_eq!(r.final_message.as_deref(), Some("I wrote hello.txt."));
        assert!(r.complete && !r.rate_limited && r.error.is_none());
        assert_eq!(read(Kind::Command, f.path(), 0), None);
    }

    #[test]
    fn a_claude_rate_limit_or_denial_is_recognised_and_a_cut_run_keeps_what_it_said() {
        let f = log(&[
            r#"{"type":"system","subtype":"init","session_id":"s","model":"m"}"#,
            r#"{"type":"system","subtype":"api_retry","attempt":1,"error_status":429,"error":"rate_limit"}"#,
            r#"{"type":"result","subtype":"success","is_error":true,"num_turns":1,"result":"API Error: Request rejected (429)","api_error_status":429,"api_error_type":"rate_limit_error","total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0},"permission_denials":[{"tool_name":"Bash","tool_use_id":"x","tool_input":{}}]}"#,
        ]);
        let r = read(Kind::Claude, f.path(), 0).unwrap();
        assert!(r.rate_limited);
        assert_eq!(
            r.error.as_deref(),
            Some("API Error: Request rejected (429)")
        );
        assert_eq!(r.denials, ["Bash"]);
        // Killed mid-stream: no result line.
        let f = log(&[r#"{"type":"system","subtype":"init","session_id":"s2","model":"m"}"#]);
        let r = read(Kind::Claude, f.path(), 0).unwrap();
        assert_eq!(r.session.as_deref(), Some("s2"));
        assert!(!r.complete);
        assert_eq!(r.cost_usd, None);
    }

    #[test]
    fn codex_reports_count_input_apart_from_cache_reads() {
        let f = log(&[
            r#"{"type":"thread.started","thread_id":"01a23bf9"}"#,
            r#"{"type":"turn.started"}"#,
            r#"{"type":"item.completed","item":{"id":"item_0","type":"file_change","changes":[],"status":"completed"}}"#,
            r#"{"type":"item.completed","item":{"id":"item_2","type":"agent_message","text":"I created hello.txt."}}"#,
            r#"{"type":"turn.completed","usage":{"input_tokens":3300,"cached_input_tokens":2100,"cache_write_input_tokens":300,"output_tokens":90,"reasoning_output_tokens":4}}"#,
        ]);
        let r = read(Kind::Codex, f.path(), 0).unwrap();
        assert_eq!(r.session.as_deref(), Some("01a23bf9"));
        assert_eq!(
            (
                r.input_tokens,
                r.cache_read_tokens,
                r.cache_write_tokens,
                r.output_tokens
            ),
            (1200, 2100, 300, 90)
        );
        assert_eq!((r.cost_usd, r.tool_calls), (None, 1));
        let f = log(&[
            r#"{"type":"error","message":"Reconnecting... 1/2 (exceeded retry limit, last status: 429 Too Many Requests)"}"#,
            r#"{"type":"turn.failed","error":{"message":"exceeded retry limit, last status: 429 Too Many Requests"}}"#,
        ]);
        let r = read(Kind::Codex, f.path(), 0).unwrap();
        assert!(r.rate_limited && r.complete);
    }

    #[test]
    fn a_flood_line_is_skipped_not_held() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut text = vec![b'x'; (MAX_LINE + 10) as usize];
        text.push(b'\n');
        text.extend_from_slice(br#"{"type":"thread.started","thread_id":"t"}"#);
        text.push(b'\n');
        std::fs::write(f.path(), &text).unwrap();
        assert_eq!(
            read(Kind::Codex, f.path(), 0).unwrap().session.as_deref(),
            Some("t")
        );
    }
}
