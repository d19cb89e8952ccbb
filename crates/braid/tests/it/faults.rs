//! Faults of the machine, met as a user meets them: a prompt too large
//! for an argument, and what braid does about each — the message, the
//! state of every task, nothing charged that was not the agent's fault.

use crate::run::repo_project;

/// A description of about 300 KB (more than one argument can hold).
fn large() -> String {
    "Make the change below exactly as written.\n".repeat(7_500)
}

#[test]
fn a_prompt_too_large_for_an_argument_is_refused_for_a_command_agent_uncharged() {
    let p = repo_project(
        "[run]\njobs = 1\n[[agent]]\nname = \"echo\"\ncommand = [\"sh\", \"-c\", \"true\", \"agent\", \"{prompt}\"]\n",
    );
    let file = p.path().join("desc.md");
    std::fs::write(&file, large()).unwrap();
    let id = p.add(&["big", "--description-file", file.to_str().unwrap()]);
    let out = p.run(&["run"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("more than one argument can hold") && text.contains("{prompt_file}"),
        "{text}"
    );
    let t = p.json(&["show", &id]);
    assert_eq!(t["state"], "open", "given back: {t}");
    assert!(t["lease"].is_null());
    // Not charged: the next claim is attempt 1 again.
    let claimed = p.json(&["claim", &id]);
    assert_eq!(claimed["lease"]["attempt"], 1, "{claimed}");
}

#[test]
fn a_large_prompt_reaches_a_command_agent_as_a_file() {
    let p = repo_project(
        "[run]\njobs = 1\n[[agent]]\nname = \"reader\"\n\
         command = [\"sh\", \"-c\", \"wc -c < \\\"$1\\\" > size.txt; git add size.txt; git commit -qm size\", \"agent\", \"{prompt_file}\"]\n",
    );
    let file = p.path().join("desc.md");
    std::fs::write(&file, large()).unwrap();
    let id = p.add(&["big", "--description-file", file.to_str().unwrap()]);
    p.ok(&["run"]);
    assert_eq!(p.json(&["show", &id])["state"], "done");
    let size: usize = crate::git(p.path(), &["show", &format!("braid/{id}:size.txt")])
        .trim()
        .parse()
        .unwrap();
    assert!(size > large().len(), "the whole prompt: {size}");
}

#[test]
fn a_comment_comes_from_stdin_or_a_file() {
    use std::io::Write;
    let p = crate::Proj::init();
    let id = p.add(&["one"]);
    let mut child = p
        .cmd()
        .args(["comment", &id, "-", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let file = p.path().join("c.md");
    std::fs::write(&file, "from a file\n").unwrap();
    p.ok(&["comment", &id, "--file", file.to_str().unwrap()]);
    let texts: Vec<String> = p.json(&["show", &id])["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["from stdin", "from a file"]);
}
