#!/usr/bin/env bash
# Crash soak for the engine: kill -9 `braid run` at random moments, TRIALS
# times (default 500), then let a final run finish, and check the invariants
# of a crash: no task lost, none completed twice, no recorded gate run again.
#
#   bench/soak.sh            TRIALS=2000 TASKS=200 bench/soak.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TRIALS="${TRIALS:-500}"
TASKS="${TASKS:-100}"
B="$ROOT/target/release/braid"
cargo build --release -q -p braid --manifest-path "$ROOT/Cargo.toml"
W="$(mktemp -d /tmp/braid-soak.XXXXXX)"
export BRAID_CACHE_DIR="$W/cache" NO_COLOR=1
cd "$W" && git init -q -b main && git config user.email s@x && git config user.name s
echo x >README && git add . && git commit -qm init
"$B" init >/dev/null
cat >.braid/config.toml <<CFG
[run]
jobs = 3
lease = "400ms"
[[agent]]
name = "fake"
command = ["$ROOT/crates/braid/tests/fixtures/agents/commit.sh"]
[[gate]]
name = "ok"
command = ["true"]
CFG
for i in $(seq 1 "$TASKS"); do "$B" add "t$i" >/dev/null; done
for t in $(seq 1 "$TRIALS"); do
  BRAID_TEST_DELAY=0.02 "$B" run >/dev/null 2>&1 &
  pid=$!
  sleep "0.$((RANDOM % 300))"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done
"$B" run >/dev/null
"$B" export --events -o "$W/export.jsonl" 2>/dev/null
python3 - "$W/export.jsonl" <<'PY'
import collections, json, sys
tasks, done, gates, rescued = {}, collections.Counter(), collections.Counter(), 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("record") == "task":
        tasks[r["id"]] = r["state"]
    elif r.get("record") == "event":
        p = r["payload"]
        if r["kind"] == "state_changed" and p.get("to") == "done":
            done[r["task"]] += 1
        if r["kind"] == "gate_finished" and p.get("passed") and not p.get("cached"):
            gates[r["task"]] += 1
        rescued += r["kind"] == "rescued"
lost = [t for t, s in tasks.items() if s != "done"]
twice = [t for t, n in done.items() if n != 1]
regated = [t for t, n in gates.items() if n > 1]
print(f"tasks {len(tasks)}, rescues {rescued}, lost {len(lost)}, completed twice {len(twice)}, gate re-run {len(regated)}")
sys.exit(1 if lost or twice or regated else 0)
PY
