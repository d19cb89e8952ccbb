#!/usr/bin/env python3
"""Generates one DAG of N tasks as braid JSONL, build.ninja and a Makefile,
for bench/exec.sh. Layers of mixed widths (1 to 200) and depths; each task
depends on 0-3 tasks of earlier layers. Every task runs the same two
commands everywhere: an "agent" (/bin/true) and a gate (/bin/true).

  gen_dag.py N OUTDIR
"""
import json
import os
import random
import sys

TS = "2026-01-01T00:00:00Z"


def main(n, out):
    rnd = random.Random(7)
    layers, made = [], 0
    while made < n:
        w = min(n - made, rnd.choice([1, 2, 5, 20, 50, 200]))
        layers.append(list(range(made, made + w)))
        made += w
    deps = {}
    for li, layer in enumerate(layers):
        earlier = [t for l in layers[max(0, li - 5):li] for t in l]
        for t in layer:
            k = min(len(earlier), rnd.choice([0, 1, 1, 2, 3]))
            deps[t] = rnd.sample(earlier, k) if k else []
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "dag.jsonl"), "w") as f:
        f.write('{"record":"braid-export","version":1}\n')
        for t in range(n):
            f.write(json.dumps({
                "record": "task", "id": f"d{t}", "title": f"task {t}", "type": "task",
                "priority": 2, "state": "open", "created_at": TS, "updated_at": TS,
                "deps": [{"id": f"d{d}", "kind": "blocks"} for d in deps[t]],
            }, separators=(",", ":")) + "\n")
    with open(os.path.join(out, "build.ninja"), "w") as f:
        f.write("rule run\n  command = /bin/true && /bin/true && : > $out\n\n")
        for t in range(n):
            dd = " ".join(f"out/d{d}" for d in deps[t])
            f.write(f"build out/d{t}: run{' | ' + dd if dd else ''}\n")
    with open(os.path.join(out, "Makefile"), "w") as f:
        f.write("all: " + " ".join(f"out/d{t}" for t in range(n)) + "\n\n")
        for t in range(n):
            dd = " ".join(f"out/d{d}" for d in deps[t])
            f.write(f"out/d{t}: {dd}\n\t@/bin/true && /bin/true && : > $@\n")
    print(f"{n} tasks in {len(layers)} layers, {sum(len(v) for v in deps.values())} edges")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
