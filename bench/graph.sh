#!/usr/bin/env bash
# Work-graph benchmarks (issue: the work graph). Whole-process wall times on
# this machine, with hyperfine and /usr/bin/time.
#
#   bench/graph.sh            # 1M tasks / 2M deps, 1M-deep chain, task-master at 10k
#   N=100000 bench/graph.sh   # smaller graph for a quick look
#
# Needs: python3, hyperfine, GNU time (apt-get install hyperfine time);
# for the task-master comparison, node + npm (installs task-master-ai into
# $WORK/tm unless TASKMASTER points at its binary; SKIP_TASKMASTER=1 skips it).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
N="${N:-1000000}"
TM_N="${TM_N:-10000}"
WORK="${WORK:-$(mktemp -d /tmp/braid-bench.XXXXXX)}"
mkdir -p "$WORK"
B="$ROOT/target/release/braid"
export NO_COLOR=1

echo "# braid graph benchmark: N=$N, work dir $WORK"
cargo build --release -q -p braid --manifest-path "$ROOT/Cargo.toml"
python3 "$ROOT/bench/gen_graph.py" graph "$N" "$WORK/graph.jsonl"
python3 "$ROOT/bench/gen_graph.py" chain "$N" "$WORK/chain.jsonl"

section() { printf '\n## %s\n' "$*"; }

section "import $N tasks + ~$((N * 2)) blocks deps"
rm -rf "$WORK/g" && mkdir -p "$WORK/g" && cd "$WORK/g" && "$B" init >/dev/null
/usr/bin/time -f "import: wall %e s, max RSS %M KiB" "$B" import "$WORK/graph.jsonl"
"$B" health

section "ready --limit 50, health, add, done of a task with 1,000 dependents"
hyperfine -N --warmup 5 --runs 200 "$B ready --limit 50" "$B health"
hyperfine -N --warmup 3 --runs 200 "$B add 'bench task' --parent e4-5 --dep t500"
"$B" done hub >/dev/null
hyperfine --warmup 2 --runs 30 --prepare "$B reopen hub" "$B done hub"

section "tree of a $N-deep chain"
rm -rf "$WORK/c" && mkdir -p "$WORK/c" && cd "$WORK/c" && "$B" init >/dev/null
/usr/bin/time -f "import chain: wall %e s" "$B" import "$WORK/chain.jsonl"
/usr/bin/time -f "tree c0 (whole chain): wall %e s, max RSS %M KiB" "$B" tree c0 >"$WORK/tree.txt"
/usr/bin/time -f "tree (all roots): wall %e s, max RSS %M KiB" "$B" tree >/dev/null
echo "lines: $(wc -l <"$WORK/tree.txt"); last: $(tail -c 60 "$WORK/tree.txt")"

if [ "${SKIP_TASKMASTER:-0}" != 1 ]; then
  section "task-master vs braid at $TM_N tasks (same graph, task-master's tasks.json)"
  TM="${TASKMASTER:-}"
  if [ -z "$TM" ]; then
    mkdir -p "$WORK/tm" && (cd "$WORK/tm" && npm init -y >/dev/null && npm install --silent task-master-ai >/dev/null 2>&1)
    TM="$WORK/tm/node_modules/.bin/task-master"
  fi
  rm -rf "$WORK/t" && mkdir -p "$WORK/t/.taskmaster/tasks" && cd "$WORK/t"
  python3 "$ROOT/bench/gen_graph.py" taskmaster "$TM_N" .taskmaster/tasks/tasks.json
  "$B" init >/dev/null && "$B" import .taskmaster/tasks/tasks.json >/dev/null
  "$TM" next >/dev/null 2>&1 || echo "(task-master next exited non-zero)"
  hyperfine --warmup 1 --runs 5 -i \
    "$TM next" "$B ready --limit 1" \
    "$TM list" "$B list"
fi
