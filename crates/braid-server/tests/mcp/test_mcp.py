"""Drives `braid mcp` with the official MCP Python SDK, as a coding agent's
client would: list the tools, run ready -> claim -> done, check that a bad
argument gives a clear error and the server keeps serving, and that every
answer stays within the token budget (lists page, long text is cut with a
marker). Exits non-zero on the first failed check."""

import asyncio
import json
import os
import subprocess
import sys
import tempfile

from mcp import ClientSession, MCPError
from mcp.client.stdio import StdioServerParameters, stdio_client

BRAID = os.environ["BRAID_BIN"]
BUDGET_TOKENS = 1000  # small, so the bounds are exercised with little data


def check(cond, message):
    if not cond:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)


def braid(project, *args):
    out = subprocess.run([BRAID, *args, "--json"], cwd=project, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


async def expect_error(session, name, args, needle):
    """A tool call that must fail with a message naming `needle`."""
    try:
        r = await session.call_tool(name, args)
    except MCPError as e:
        check(needle in str(e), f"{name} {args}: the error does not name {needle!r}: {e}")
        return str(e)
    message = "".join(c.text for c in r.content if c.type == "text")
    check(r.is_error and needle in message, f"{name} {args}: expected an error naming {needle!r}, got {r}")
    return message


def text_of(result):
    check(not result.is_error, f"tool answered an error: {result}")
    return "".join(c.text for c in result.content if c.type == "text")


async def main():
    project = tempfile.mkdtemp(prefix="braid-mcp-")
    subprocess.run([BRAID, "init"], cwd=project, check=True, capture_output=True)
    epic = braid(project, "add", "Billing", "--type", "epic")["id"]
    schema = braid(project, "add", "Design the schema", "--priority", "1", "--parent", epic)["id"]
    page = braid(project, "add", "Build the page", "--parent", epic, "--dep", schema)["id"]
    long_text = "".join(f"line {i}: the billing page shows invoices. " for i in range(2000))
    braid(project, "update", page, "--description", long_text)
    for i in range(60):
        braid(project, "add", f"filler task number {i} with a title of ordinary length", "--priority", "3")

    params = StdioServerParameters(command=BRAID, args=["mcp", "--budget", str(BUDGET_TOKENS)], cwd=project)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            check("claim" in (init.instructions or ""), "the server's instructions teach the workflow")

            tools = {t.name: t for t in (await session.list_tools()).tools}
            want = {"ready", "show", "add", "claim", "update", "done", "fail", "dep_add", "comment", "context", "needs", "answer"}
            check(want <= set(tools), f"tools missing: {want - set(tools)}")
            check("claim" in tools["ready"].description, "ready's description points to claim")
            print(f"ok tools: {sorted(tools)}")

            # ready pages within the budget and the pages cover the queue.
            seen, cursor, pages = [], None, 0
            while True:
                args = {"limit": 200}
                if cursor:
                    args["cursor"] = cursor
                raw = text_of(await session.call_tool("ready", args))
                check(len(raw) <= BUDGET_TOKENS * 4, f"a ready page took {len(raw)} characters")
                answer = json.loads(raw)
                seen += [t["id"] for t in answer["tasks"]]
                pages += 1
                cursor = answer["next_cursor"]
                if not cursor:
                    break
            check(len(seen) == answer["total_ready"] == len(set(seen)), f"pages gave {len(seen)} ids, {answer['total_ready']} ready")
            check(seen[0] == schema, "the most urgent task comes first")
            check(page not in seen, "a blocked task is not ready")
            print(f"ok ready: {len(seen)} tasks in {pages} pages, each within {BUDGET_TOKENS * 4} characters")

            # claim -> done: the dependent becomes ready.
            claimed = json.loads(text_of(await session.call_tool("claim", {"id": schema, "as": "test-agent"})))
            check(claimed["state"] == "in_progress" and claimed["lease"]["token"], f"claim: {claimed}")
            await expect_error(session, "claim", {"id": schema}, "in_progress")
            done = json.loads(text_of(await session.call_tool("done", {"id": schema, "reason": "schema merged"})))
            check(done["state"] == "done", f"done: {done}")
            check(any(t["id"] == page for t in done["now_ready"]), f"done lists what became ready: {done}")
            check(braid(project, "show", schema)["state"] == "done", "braid show agrees the task is done")
            print("ok ready -> claim -> done")

            # A long description is cut with a marker that says how to read on.
            shown = json.loads(text_of(await session.call_tool("show", {"id": page})))
            check("description_cut" in shown and "offset" in shown["description_cut"], "the description is cut with a marker")
            rest = json.loads(text_of(await session.call_tool("show", {"id": page, "offset": len(shown["description"])})))
            check(rest["description"].startswith(long_text[len(shown["description"]):][:50]), "offset reads on where the cut was")
            # An id typed short, in capitals, names the same task (as on the CLI and HTTP).
            short = json.loads(text_of(await session.call_tool("show", {"id": page[len("br-"):].upper()})))
            check(short["id"] == page, f"a short id resolves: {short['id']} != {page}")
            ctx = text_of(await session.call_tool("context", {"id": page}))
            check(len(ctx) <= BUDGET_TOKENS * 4 and "Build the page" in ctx, "context fits the budget")
            print("ok long text cut within the budget, offset reads on")

            # add, dep_add, comment, update, fail.
            added = json.loads(text_of(await session.call_tool("add", {"title": "Write the docs", "deps": [page], "labels": ["docs"]})))
            check(added["ready"] is False, f"a task with an unfinished dependency is not ready: {added}")
            text_of(await session.call_tool("comment", {"id": page, "text": "Use the invoice table", "author": "test-agent"}))
            check(braid(project, "show", page)["comments"][-1]["text"] == "Use the invoice table", "the comment is stored")
            text_of(await session.call_tool("update", {"id": added["id"], "priority": 0}))
            check(braid(project, "show", added["id"])["priority"] == 0, "update changed the priority")
            text_of(await session.call_tool("claim", {"id": page}))
            failed = json.loads(text_of(await session.call_tool("fail", {"id": page, "reason": "tests fail"})))
            check(failed["state"] == "failed", f"fail: {failed}")
            print("ok add, comment, update, fail")

            # needs and answer: a task waiting for a person is listed, and an
            # answer reopens it; answering again is refused.
            waiting = json.loads(text_of(await session.call_tool("add", {"title": "Which database?", "labels": ["needs-human"]})))
            listed = json.loads(text_of(await session.call_tool("needs", {})))
            check(any(n["id"] == waiting["id"] for n in listed), f"needs lists the waiting task: {listed}")
            text_of(await session.call_tool("answer", {"id": waiting["id"], "text": "PostgreSQL"}))
            after = braid(project, "show", waiting["id"])
            check("needs-human" not in after["labels"] and after["comments"][-1]["text"] == "PostgreSQL", f"answered: {after}")
            await expect_error(session, "answer", {"id": waiting["id"], "text": "again"}, "not waiting for an answer")
            print("ok needs and answer")

            # Bad arguments: clear errors, and the server keeps serving.
            for name, args, needle in [
                ("show", {"id": "not an id!"}, "not an id!"),
                ("show", {"id": "br-nope"}, "br-nope"),
                ("dep_add", {"id": schema, "on": schema}, schema),
                ("add", {"title": "x", "priority": 9}, "priority"),
                ("ready", {"cursor": "bogus"}, "cursor"),
            ]:
                await expect_error(session, name, args, needle)
            cycle_from = json.loads(text_of(await session.call_tool("add", {"title": "c1"})))["id"]
            cycle_to = json.loads(text_of(await session.call_tool("add", {"title": "c2", "deps": [cycle_from]})))["id"]
            await expect_error(session, "dep_add", {"id": cycle_from, "on": cycle_to}, "cycle")
            still = json.loads(text_of(await session.call_tool("ready", {"limit": 1})))
            check(len(still["tasks"]) == 1, "the server still serves after errors")
            print("ok bad arguments answered with clear errors; the server kept serving")
    print("mcp: all checks passed")


asyncio.run(main())
