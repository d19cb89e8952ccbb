//! The commands for a person an agent is waiting on: `needs` (what waits,
//! and what was asked), `answer` (resume the agent's session with the
//! answer) and `attach` (take the session over interactively).

use std::os::unix::process::CommandExt;

use anyhow::Result;
use braid_app::ops;
use braid_app::wire::AnswerIn;
use braid_core::TaskId;
use clap::Args;

use crate::cmd::{Ctx, parse_id};
use crate::exit::{self, Failure};

#[derive(Args, Debug)]
pub struct NeedsArgs {
    /// At most this many tasks, the newest question first.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub limit: usize,
}

/// Lists what waits for a person.
pub fn needs(ctx: &Ctx, a: NeedsArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let rows = ops::needs_you(&store, a.limit.clamp(1, 10_000))?;
    if ctx.global.json {
        ctx.print_json(&rows)?;
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        outln!("Nothing waits for you.");
        return Ok(exit::OK);
    }
    for r in &rows {
        outln!(
            "{}  {}  [{}{}]",
            ctx.style.bold(&r.id),
            r.title,
            r.reason,
            r.agent
                .as_deref()
                .map(|a| format!(", agent {a}"))
                .unwrap_or_default()
        );
        for l in r.question.lines() {
            outln!("    {l}");
        }
    }
    outln!(
        "Answer with `braid answer ID \"…\"` (the agent's session resumes with it), or take over with `braid attach ID`."
    );
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct AnswerArgs {
    /// The task that waits for an answer (`braid needs` lists them).
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
    /// The answer. The agent's session resumes with it as its next message.
    pub text: String,
}

/// Answers a task that waits on a person.
pub fn answer(ctx: &Ctx, a: AnswerArgs) -> Result<i32> {
    let (_, store) = ctx.open()?;
    let t = ops::answer(
        &store,
        &ctx.actor(),
        a.id.as_str(),
        AnswerIn { text: a.text },
    )?;
    if ctx.global.json {
        ctx.print_json(&t)?;
    } else {
        outln!(
            "Answered {}; it is {} again, and the next `braid run` resumes its agent with your answer.",
            t.id,
            t.state
        );
    }
    Ok(exit::OK)
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// The task whose agent session to continue.
    #[arg(value_parser = parse_id)]
    pub id: TaskId,
    /// Print the command instead of running it (the default when stdout
    /// is not a terminal).
    #[arg(long)]
    pub print: bool,
}

/// Continues a task's agent session interactively, in its worktree.
pub fn attach(ctx: &Ctx, a: AttachArgs) -> Result<i32> {
    let (project, store) = ctx.open()?;
    let id = ops::resolve(&store, a.id.as_str())?;
    let Some(last) = ops::last_session(&store, id.as_str())? else {
        return Err(Failure::usage(format!(
            "{id} has no agent session to attach to: no attempt of a claude or codex agent reported one (`braid show {id}` lists its attempts)"
        ))
        .into());
    };
    let session = last.session.clone().unwrap_or_default();
    let config = crate::run::load_config(&project)?;
    let agent = config.agent(&last.agent);
    let kind = agent.map(|a| a.kind).unwrap_or_default();
    // The CLI as the agent's command names it (a full path stays one).
    let program = agent
        .and_then(|a| a.command.first().cloned())
        .unwrap_or_else(|| last.agent.clone());
    let argv: Vec<String> = match kind {
        braid_run::adapter::Kind::Claude => vec![program, "--resume".into(), session.clone()],
        braid_run::adapter::Kind::Codex => vec![program, "resume".into(), session.clone()],
        braid_run::adapter::Kind::Command => {
            return Err(Failure::usage(format!(
                "agent {:?} is a plain command (kind \"command\"): braid cannot resume its sessions; set kind = \"claude\" or \"codex\" in its [[agent]]",
                last.agent
            ))
            .into());
        }
    };
    let workspace = crate::run::paths(&project).workspace(&id);
    if !workspace.is_dir() {
        return Err(Failure::usage(format!(
            "{id}'s worktree {} is gone (merged or collected); the session cannot continue there",
            workspace.display()
        ))
        .into());
    }
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "task": id, "agent": last.agent, "session": session,
            "cwd": workspace, "argv": argv,
        }))?;
        return Ok(exit::OK);
    }
    if a.print || !crate::term::is_terminal(crate::term::To::Out) {
        let quoted: Vec<String> = argv.iter().map(|s| quote(s)).collect();
        outln!(
            "cd {} && {}",
            quote(&workspace.to_string_lossy()),
            quoted.join(" ")
        );
        return Ok(exit::OK);
    }
    errln!(
        "Attaching to {} session {session} of {id} in {}",
        last.agent,
        workspace.display()
    );
    let err = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(&workspace)
        .exec();
    Err(Failure::usage(format!("{}: {err}", argv[0])).into())
}

/// A word as a POSIX shell reads it back.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
