#!/usr/bin/env bash
# Engine benchmark (issue: the engine). A DAG of N tasks (default 10,000),
# each with a trivial agent and one trivial gate (/bin/true), jobs=2: braid's
# wall time against ninja -j2 and make -j2 running the same commands on the
# same DAG, in one run. Also: dispatch latency (a task's last blocker done ->
# its agent started, from the event log), the all-cached re-run, peak RSS.
#
#   bench/exec.sh            N=1000 bench/exec.sh
#
# Needs: python3, ninja-build, make, GNU time.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
N="${N:-10000}"
WORK="${WORK:-$(mktemp -d /tmp/braid-exec.XXXXXX)}"
mkdir -p "$WORK"
B="$ROOT/target/release/braid"
export NO_COLOR=1 BRAID_CACHE_DIR="$WORK/cache"
cargo build --release -q -p braid --manifest-path "$ROOT/Cargo.toml"
python3 "$ROOT/bench/gen_dag.py" "$N" "$WORK/dag"

echo "## ninja -j2"
(cd "$WORK/dag" && rm -rf out && mkdir out && /usr/bin/time -f "ninja: wall %e s, max RSS %M KiB" ninja -j2 >/dev/null)
echo "## make -j2"
(cd "$WORK/dag" && rm -rf out && mkdir out && /usr/bin/time -f "make: wall %e s, max RSS %M KiB" make -j2 -s >/dev/null)

echo "## braid run, jobs=2 (outside git: scratch workspaces)"
P="$WORK/proj"
rm -rf "$P" "$WORK/cache" && mkdir -p "$P" && cd "$P"
"$B" init >/dev/null
cat > .braid/config.toml <<CFG
[run]
jobs = 2
[[agent]]
name = "true"
command = ["/bin/true"]
[[gate]]
name = "true"
command = ["/bin/true"]
CFG
"$B" import "$WORK/dag/dag.jsonl" >/dev/null
/usr/bin/time -f "braid run: wall %e s, max RSS %M KiB" "$B" run --json >"$WORK/run.jsonl"
"$B" health | head -1

echo "## dispatch latency (blocker done -> dependent's agent started; ms, from events)"
"$B" export --events -o "$WORK/export.jsonl" 2>/dev/null
python3 - "$WORK/export.jsonl" <<'PY'
import json, sys
deps, done_at, started = {}, {}, {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("record") == "task":
        deps[r["id"]] = [d["id"] for d in r.get("deps", []) if d["kind"] == "blocks"]
    elif r.get("record") == "event":
        from datetime import datetime
        at = datetime.fromisoformat(r["at"].replace("Z", "+00:00")).timestamp() * 1000
        if r["kind"] == "state_changed" and r["payload"].get("to") == "done":
            done_at[r["task"]] = at
        elif r["kind"] == "dispatched" and r["task"] not in started:
            started[r["task"]] = at
lat = sorted(started[t] - max(done_at[d] for d in ds) for t, ds in deps.items() if ds and t in started)
if lat:
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print(f"tasks with blockers: {len(lat)}; p50 {q(0.5):.0f} ms, p99 {q(0.99):.0f} ms, max {lat[-1]:.0f} ms (1 ms resolution)")
PY

echo "## all cached: reopen every task, run again (agents run, every gate is a cache hit)"
"$B" list --state done --json | python3 -c "import json,sys; print('\n'.join(t['id'] for t in json.load(sys.stdin)))" >"$WORK/ids"
xargs -a "$WORK/ids" -n 1000 "$B" reopen >/dev/null
/usr/bin/time -f "braid run (cached gates): wall %e s" "$B" run --json >"$WORK/run2.jsonl"
echo "gate results cached: $(grep -c '"cached":true' "$WORK/run2.jsonl") of $N"
