#!/usr/bin/env bash
# Work through a git remote (issue: stacked bases and remotes).
#  (1) Landing through a remote: 50 branches (2 bad), `braid merge run`
#      batched as usual (batches of 8, 3 slots), once on a local repository
#      and once on a clone whose target and branches live on a bare
#      `origin` (fetch, candidates, push --force-with-lease). Gate runs,
#      rounds and wall time, side by side.
#  (2) Stacked bases on dispatch: a chain of 200 tasks (each depends on the
#      one before) with no [merge] target, so every task's worktree starts
#      from a merge of its dependency's unlanded branch onto the target;
#      against 200 independent tasks (started from the target). Dispatch
#      latency (ready -> agent spawned) p50/p99 and wall time.
#
#   bench/remote.sh [RUNS]      (default 3 runs of each)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${1:-3}"
WORK="${WORK:-$(mktemp -d /tmp/braid-remote.XXXXXX)}"
B="$ROOT/target/release/braid"
export NO_COLOR=1
cargo build --release -q -p braid --manifest-path "$ROOT/Cargo.toml"
echo "commit $(git -C "$ROOT" rev-parse --short HEAD); $(nproc) cores; work in $WORK"

# A repository whose 50 branches braid/bNN each add one file; those listed
# as bad carry BAD, which the gate refuses.
seed_repo() { # seed_repo DIR
  local dir=$1
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  git init -q -b main && git config user.email b@example.com && git config user.name bench
  echo .braid/ > .gitignore && echo base > base.txt && git add -A && git commit -qm base
  python3 - "$dir" <<'PY'
import subprocess, sys, json
repo = sys.argv[1]
bad = {13, 37}
def out(*a, inp=None):
    return subprocess.run(["git", "-C", repo, *a], input=inp, check=True, capture_output=True, text=True).stdout.strip()
listing = out("ls-tree", "main")
for i in range(1, 51):
    blob = out("hash-object", "-w", "--stdin", inp="BAD\n" if i in bad else "ok\n")
    tree = out("mktree", inp=listing + f"\n100644 blob {blob}\tb{i:02d}.txt\n")
    c = out("commit-tree", tree, "-p", "main", "-m", f"b{i:02d}")
    out("branch", f"braid/b{i:02d}", c)
json.dump({"into": "main", "branches": [{"name": f"braid/b{i:02d}"} for i in range(1, 51)]}, open(f"{repo}/../plan.json", "w"))
PY
}

config() { # config DIR [remote]
  cat > "$1/.braid/config.toml" <<'TOML'
[cache]
enabled = false
[merge]
into = "main"
[[gate]]
name = "nobad"
command = ["sh", "-c", "! grep -rq BAD --exclude-dir=.git ."]
TOML
  if [ -n "${2:-}" ]; then
    printf '[git]\nremote = "%s"\n' "$2" >> "$1/.braid/config.toml"
  fi
}

report() { # report JSON NAME START END
  python3 - "$@" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
assert sorted(r["branch"] for r in o["rejected"]) == ["braid/b13", "braid/b37"], o["rejected"]
assert len(o["landed"]) == 48, len(o["landed"])
print(f"  {sys.argv[2]:>7}: {o['gate_runs']} gate runs, {o['rounds']} rounds, {len(o['landed'])} landed, wall {float(sys.argv[4]) - float(sys.argv[3]):.2f} s")
PY
}

echo
echo "(1) 50 branches, 2 bad, batches of 8, 3 slots: local vs through a remote"
for run in $(seq "$RUNS"); do
  echo " run $run"
  seed_repo "$WORK/local" >/dev/null
  "$B" init >/dev/null && config "$WORK/local"
  start=$(date +%s.%N)
  "$B" merge run --plan "$WORK/plan.json" --jobs 3 --json > "$WORK/local.json" || true
  end=$(date +%s.%N)
  report "$WORK/local.json" local "$start" "$end"

  seed_repo "$WORK/seed" >/dev/null
  rm -rf "$WORK/origin.git" "$WORK/node"
  git clone -q --bare "$WORK/seed" "$WORK/origin.git"
  git clone -q "$WORK/origin.git" "$WORK/node"
  cd "$WORK/node" && git config user.email b@example.com && git config user.name bench
  "$B" init >/dev/null && config "$WORK/node" origin
  start=$(date +%s.%N)
  "$B" merge run --plan "$WORK/plan.json" --jobs 3 --json > "$WORK/remote.json" || true
  end=$(date +%s.%N)
  report "$WORK/remote.json" remote "$start" "$end"
  landed=$(git -C "$WORK/origin.git" ls-tree --name-only main | grep -c '^b[0-9]')
  [ "$landed" = 48 ] || { echo "origin's main holds $landed of 48"; exit 1; }
done

echo
echo "(2) dispatch with stacked bases: a chain of 200 against 200 independent tasks (jobs 1)"
chain() { # chain DIR stacked|independent
  local dir=$1 mode=$2
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  git init -q -b main && git config user.email b@example.com && git config user.name bench
  echo base > base.txt && git add -A && git commit -qm base
  "$B" init >/dev/null
  cat > .braid/config.toml <<TOML
[run]
jobs = 1
[[agent]]
name = "commit"
command = ["$ROOT/crates/braid/tests/fixtures/agents/commit.sh"]
TOML
  python3 - "$mode" <<'PY' > tasks.jsonl
import json, sys
chain = sys.argv[1] == "stacked"
print(json.dumps({"record": "braid-export", "version": 1}))
at = "2026-12-01T00:00:00Z"
for i in range(200):
    t = {"record": "task", "id": f"br-c{i:03d}", "title": f"step {i}", "description": "",
         "type": "task", "priority": 2, "state": "open", "parent": None, "labels": [],
         "assignee": None, "acceptance": "", "gates": [], "agent": None, "branch": None,
         "created_at": at, "updated_at": at, "closed_at": None, "close_reason": None,
         "deps": [{"id": f"br-c{i-1:03d}", "kind": "blocks"}] if chain and i else []}
    print(json.dumps(t))
PY
  "$B" import tasks.jsonl >/dev/null
}
for run in $(seq "$RUNS"); do
  echo " run $run"
  for mode in independent stacked; do
    chain "$WORK/chain-$mode" "$mode"
    start=$(date +%s.%N)
    "$B" run --json > /dev/null 2> "$WORK/chain.err" || true
    end=$(date +%s.%N)
    python3 - "$WORK/chain.err" "$mode" "$start" "$end" <<'PY'
import json, sys
s = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")][-1]
lat = s["dispatch_latency_ms"]
assert s["done"] == 200, s
print(f"  {sys.argv[2]:>11}: 200 done, dispatch latency p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, wall {float(sys.argv[4]) - float(sys.argv[3]):.1f} s")
PY
  done
done
