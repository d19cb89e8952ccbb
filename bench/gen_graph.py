#!/usr/bin/env python3
"""Generates benchmark graphs for braid (and the same graph for task-master).

  gen_graph.py graph N OUT.jsonl      N tasks under epics 4 levels deep, 2 blocks
                                      edges per task (3 for every 40th: 2M in all) (to earlier tasks, so no
                                      cycles), ~30% done, plus one hub task with
                                      1,000 dependents. braid JSONL.
  gen_graph.py chain N OUT.jsonl      an N-deep parent chain. braid JSONL.
  gen_graph.py taskmaster N OUT.json  the graph's shape in task-master's
                                      tasks.json (top-level tasks, deps by id).

Deterministic (seeded), so runs are comparable.
"""
import json
import random
import sys

TS = "2026-01-01T00:00:00Z"


def task_line(tid, title, kind="task", state="open", parent=None, deps=(), priority=2):
    return json.dumps({
        "record": "task", "id": tid, "title": title, "type": kind, "priority": priority,
        "state": state, "parent": parent, "created_at": TS, "updated_at": TS,
        "closed_at": TS if state == "done" else None,
        "deps": [{"id": d, "kind": "blocks"} for d in deps],
    }, separators=(",", ":"))


def graph(n, out):
    rnd = random.Random(42)
    w = out.write
    w('{"record":"braid-export","version":1}\n')
    # Epics: 10 -> 100 -> 1,000 -> 10,000 (4 levels), tasks under the last level.
    fan = 10
    levels = [[f"e1-{i}" for i in range(fan)]]
    for i, e in enumerate(levels[0]):
        w(task_line(e, f"epic {e}", "epic") + "\n")
    for depth in range(2, 5):
        level = []
        for i in range(fan ** depth):
            e = f"e{depth}-{i}"
            w(task_line(e, f"epic {e}", "epic", parent=levels[-1][i // fan]) + "\n")
            level.append(e)
        levels.append(level)
    leaves = levels[-1]
    epics = sum(len(l) for l in levels)
    count = n - epics
    w(task_line("hub", "hub task with 1,000 dependents", parent=leaves[0]) + "\n")
    for i in range(count - 1):
        tid = f"t{i}"
        deps = []
        if i >= 2:
            deps = rnd.sample(range(max(0, i - 5000), i), 3 if i % 40 == 0 else 2)
            deps = [f"t{d}" for d in deps]
        if i < 1000:
            deps = deps[:1] + ["hub"]
        state = "done" if rnd.random() < 0.3 else "open"
        w(task_line(tid, f"task {i}", state=state, parent=leaves[i % len(leaves)], deps=deps,
                    priority=rnd.randint(0, 4)) + "\n")


def chain(n, out):
    w = out.write
    w('{"record":"braid-export","version":1}\n')
    for i in range(n):
        w(task_line(f"c{i}", f"link {i}", parent=None if i == 0 else f"c{i-1}") + "\n")


def taskmaster(n, out):
    rnd = random.Random(42)
    tasks = []
    for i in range(1, n + 1):
        deps = rnd.sample(range(max(1, i - 5000), i), 2) if i > 2 else []
        tasks.append({
            "id": i, "title": f"task {i}", "description": f"task {i}", "details": "",
            "testStrategy": "", "status": "done" if rnd.random() < 0.3 else "pending",
            "priority": rnd.choice(["high", "medium", "low"]), "dependencies": deps, "subtasks": [],
        })
    json.dump({"master": {"tasks": tasks, "metadata": {"created": TS, "updated": TS,
                                                      "description": "bench"}}}, out)


if __name__ == "__main__":
    kind, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(path, "w") as f:
        {"graph": graph, "chain": chain, "taskmaster": taskmaster}[kind](n, f)
