//! braid: the command line. Parses arguments (clap), finds the project,
//! runs a command against the store and prints human or `--json` output.
//! Exit codes are in [`exit`]; everything printed goes through [`term`].

#[macro_use]
mod term;

mod attend;
mod cmd;
mod demo;
mod doctor;
mod epic;
mod events;
mod exit;
mod formats;
mod gc;
mod merge;
mod migrate;
mod project;
mod review;
mod run;
mod serve;
mod snapshot;
mod status;
mod style;
mod transfer;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// braid orchestrates parallel software work: a graph of tasks with typed
/// dependencies, a ready queue, claims, and an event log.
///
/// Start with `braid init` in a repository (or `braid demo` to see a sample
/// project), add work with `braid add`, see what can start with `braid
/// ready`, take it with `braid claim`, finish it with `braid done`.
#[derive(Parser, Debug)]
#[command(name = "braid", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Verb,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Print JSON (one document; JSON lines for streams). Shapes: docs/json.md.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
    /// The database: a file path, a directory holding braid.db, or a
    /// PostgreSQL server (postgres://user@host:port/db). Default: $BRAID_DB,
    /// else the nearest .braid/ upward.
    #[arg(
        long,
        global = true,
        env = "BRAID_DB",
        value_name = "PATH|URL",
        help_heading = "Global options"
    )]
    pub db: Option<PathBuf>,
    /// Who is acting, as recorded in events. Default: $BRAID_ACTOR, else $USER.
    #[arg(
        long,
        global = true,
        env = "BRAID_ACTOR",
        value_name = "NAME",
        help_heading = "Global options"
    )]
    pub actor: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Create a project: .braid/ with the database and a config template.
    Init(cmd::InitArgs),
    /// Add a task (or epic, bug, chore).
    Add(cmd::AddArgs),
    /// Show tasks in full: fields, dependencies, why blocked, recent events.
    Show(cmd::ShowArgs),
    /// List tasks, filtered by state, type, label, parent, assignee.
    List(cmd::ListArgs),
    /// List work that can start now, highest priority first.
    Ready(cmd::ReadyArgs),
    /// Show the hierarchy of epics and tasks.
    Tree(cmd::TreeArgs),
    /// Epics: `braid epic status` shows how far each one is.
    #[command(subcommand)]
    Epic(epic::EpicCmd),
    /// Add, remove or check dependencies.
    #[command(subcommand)]
    Dep(cmd::DepCmd),
    /// Claim a task: the next ready one, or the one named. Atomic.
    Claim(cmd::ClaimArgs),
    /// Change a task's fields.
    Update(cmd::UpdateArgs),
    /// Mark tasks done.
    Done(cmd::ReasonArgs),
    /// Comment on a task (shown by `show`, the API and the board).
    Comment(cmd::CommentArgs),
    /// Mark a task failed, with the reason.
    Fail(cmd::FailArgs),
    /// Reopen a task (from done, failed, cancelled, deferred, review or in progress).
    Reopen(cmd::IdsArgs),
    /// Defer tasks: they and everything under them leave the ready queue.
    Defer(cmd::IdsArgs),
    /// Cancel tasks: a cancelled blocker no longer blocks.
    Cancel(cmd::ReasonArgs),
    /// Counts by state, ready and blocked work (maintained counters, instant).
    Health,
    /// The project at a glance: health, what is being worked on, what
    /// needs you, what awaits review.
    Status,
    /// What agents cost: the ledger of their attempts, summed by task,
    /// agent, model or day (tokens and USD as each agent's CLI reported).
    Cost(cmd::CostArgs),
    /// What waits for you: tasks whose agent stopped to ask (a permission
    /// it was refused, a question), or that a budget or braid handed over.
    Needs(attend::NeedsArgs),
    /// Answer a task that waits for you: its agent's session resumes with
    /// the answer at the next `braid run`.
    Answer(attend::AnswerArgs),
    /// Continue a task's agent session yourself, interactively, in its
    /// worktree (`claude --resume` / `codex resume`); --print prints it.
    Attach(attend::AttachArgs),
    /// Show a task's branch against where it started (the whole diff, or
    /// --stat for the files).
    Diff(review::DiffArgs),
    /// Review finished work before it lands: list, show, approve, or send
    /// back with line comments the agent is told.
    #[command(subcommand)]
    Review(review::ReviewCmd),
    /// Print the event log; --follow keeps printing new events.
    Events(events::EventsArgs),
    /// Import tasks from braid's JSONL export, beads' issues.jsonl or task-master's tasks.json.
    Import(transfer::ImportArgs),
    /// Export every task (and with --events, the event log) as JSONL.
    Export(transfer::ExportArgs),
    /// Copy a SQLite project's work graph into PostgreSQL and verify it.
    Migrate(migrate::MigrateArgs),
    /// Save, list, restore and prune database snapshots in .braid/backups/.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
    /// Check this machine and project: the database's integrity, the
    /// config, agents' programs, git, leftovers, disk, memory, snapshots,
    /// the server's port; each problem with its fix (exit 1 on a failure).
    Doctor,
    /// Dispatch ready work to agents, run gates, retry failures (see docs/config.md).
    Run(run::RunArgs),
    /// Print exactly what an agent would be told about a task.
    Context(run::ContextArgs),
    /// Show a task's agent and gate logs; --follow keeps printing.
    Logs(run::LogsArgs),
    /// Remove what nobody needs: workspaces of ended tasks, logs of tasks
    /// ended longer ago than [gc] keep, old telemetry (--dry-run lists
    /// what, and how many bytes).
    Gc(gc::GcArgs),
    /// Run a task's gates by hand.
    #[command(subcommand)]
    Gate(run::GateCmd),
    /// Inspect or prune the gate result cache.
    #[command(subcommand)]
    Cache(run::CacheCmd),
    /// Serve the board, the JSON API (OpenAPI at /openapi.json), event
    /// streams (/ws, /events) and /metrics; mirror tasks to .braid/tasks.
    Serve(serve::ServeArgs),
    /// Plan how finished branches merge into the target (merge pyramid),
    /// and land them: `merge plan` shows the order, `merge run` merges.
    #[command(subcommand)]
    Merge(merge::MergeCmd),
    /// Apply edited task files in .braid/tasks and rewrite stale ones, once.
    Sync(serve::SyncArgs),
    /// Serve the work graph to a coding agent over MCP (stdio). Register it
    /// with your agent as the command `braid mcp` (see the README).
    Mcp(serve::McpArgs),
    /// Create a sample project (an epic tree of ~30 tasks) and show it.
    Demo(demo::DemoArgs),
    /// Print a shell completion script: `braid completions bash >
    /// ~/.local/share/bash-completion/completions/braid` (zsh: a file
    /// named `_braid` on your $fpath; fish:
    /// ~/.config/fish/completions/braid.fish).
    Completions(CompletionsArgs),
    /// Print braid's man page (roff): `braid man > ~/.local/share/man/man1/braid.1`.
    Man,
    /// Print the reference of .braid/config.toml: every key, its default
    /// and examples (the text of docs/config.md).
    #[command(long_about = CONFIG_DOC)]
    Config,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// docs/config.md, built in: `braid config` and `braid help config`.
pub const CONFIG_DOC: &str = include_str!("../../../docs/config.md");

/// `braid list | head` closes our stdout early: end quietly, as a process
/// killed by SIGPIPE would (status 141), instead of printing a panic.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// Library warnings (a cache entry that could not be kept, a worktree left
/// over) go to stderr; `BRAID_LOG=debug` (any `tracing` filter) shows more.
fn init_logging() {
    // By default only braid's own warnings: the libraries under it (rmcp,
    // hyper) log what braid already reports in its own words.
    const DEFAULT: &str = "error,braid=warn,braid_core=warn,braid_store=warn,braid_git=warn,\
        braid_app=warn,braid_run=warn,braid_server=warn";
    let filter = tracing_subscriber::EnvFilter::try_from_env("BRAID_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| term::ErrWriter)
        .with_ansi(term::colour(term::To::Err))
        .without_time()
        .with_target(false)
        .compact()
        .init();
}

/// The arguments, or the end of the process: help and version on stdout,
/// a usage error on stderr (exit 2), through [`term`] like everything else
/// (an argument echoed back may hold an escape sequence).
fn parse_args() -> Cli {
    let e = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    let to = if e.use_stderr() {
        term::To::Err
    } else {
        term::To::Out
    };
    // Asked for JSON: a usage error is a JSON document too (docs/json.md),
    // with the message clap would print (its first line, and the tip).
    if e.use_stderr() && std::env::args_os().any(|a| a == "--json") {
        let message = e
            .render()
            .to_string()
            .lines()
            .filter(|l| {
                !l.trim().is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more")
            })
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ")
            .trim_start_matches("error: ")
            .to_owned();
        let doc = serde_json::json!({"error": {"code": "invalid", "message": message}});
        errln!("{}", term::json_safe(&doc.to_string()));
        std::process::exit(e.exit_code());
    }
    let text = if term::colour(to) {
        e.render().ansi().to_string()
    } else {
        e.render().to_string()
    };
    term::write(to, &text);
    std::process::exit(e.exit_code());
}

fn main() {
    quiet_on_broken_pipe();
    init_logging();
    let cli = parse_args();
    let json = cli.global.json;
    let db = cli.global.db.clone();
    let code = match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let err = exit::explain(err, db.as_deref());
            if err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                std::process::exit(141);
            }
            let (code, name) = exit::classify(&err);
            if json {
                let doc =
                    serde_json::json!({"error": {"code": name, "message": format!("{err:#}")}});
                errln!("{}", term::json_safe(&doc.to_string()));
            } else {
                let style = style::Style::for_stderr();
                errln!("{} {err:#}", style.paint("31", "error:"));
            }
            code
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument of every command, with the command's path, that has
    /// no help text.
    fn undescribed(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            if a.is_hide_set() || a.get_help().is_some() {
                continue;
            }
            out.push(format!("{path} {}", a.get_id()));
        }
        for sub in cmd.get_subcommands() {
            undescribed(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_argument_and_option_says_what_it_is() {
        let mut missing = Vec::new();
        undescribed(&super::Cli::command(), "braid", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
