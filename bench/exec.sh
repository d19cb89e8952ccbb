#!/usr/bin/env bash
# Engine benchmark. A DAG of N tasks (default 10,000), each with a trivial
# agent and one trivial gate (/bin/true), jobs=2: braid's wall time against
# ninja -j2 running the same commands on the same DAG (and make -j2 once).
#
# Fair by construction:
#  - the gate really runs for every task (braid's result cache is off for
#    the head-to-head; with it on, every gate of this DAG would be answered
#    from the cache, since every scratch workspace is empty and alike);
#  - ninja and braid alternate, ROUNDS times (default 3), each in a fresh
#    folder, and nothing is deleted until the end: on an unjournaled ext4
#    (this machine's), creating a file costs hundreds of microseconds for
#    minutes after mass deletions, and braid creates four per task (two log
#    files, the task's log folder, its scratch folder) to ninja's one.
# Also: braid's CPU time, dispatch latency (a task's last blocker done ->
# its agent started, from the event log), and the all-cached re-run.
#
#   bench/exec.sh            N=1000 ROUNDS=1 bench/exec.sh
#
# Needs: python3, ninja-build, make, GNU time.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
N="${N:-10000}"
ROUNDS="${ROUNDS:-3}"
WORK="${WORK:-$(mktemp -d /tmp/braid-exec.XXXXXX)}"
mkdir -p "$WORK"
B="$ROOT/target/release/braid"
export NO_COLOR=1 BRAID_CACHE_DIR="$WORK/cache"
cargo build --release -q -p braid --manifest-path "$ROOT/Cargo.toml"
python3 "$ROOT/bench/gen_dag.py" "$N" "$WORK/dag"
echo "commit: $(git -C "$ROOT" rev-parse --short HEAD); N=$N; rounds=$ROUNDS"

config() {
  cat <<CFG
[run]
jobs = 2
[cache]
enabled = $1
[[agent]]
name = "true"
command = ["/bin/true"]
[[gate]]
name = "true"
command = ["/bin/true"]
CFG
}

ninja_run() {
  local D="$WORK/n$1"
  cp -r "$WORK/dag" "$D" && mkdir -p "$D/out"
  (cd "$D" && /usr/bin/time -f "%e" -o "$WORK/ninja.time" ninja -j2 >/dev/null)
  cat "$WORK/ninja.time"
}

braid_run() {
  local P="$WORK/p$1"
  mkdir -p "$P"
  (cd "$P" && "$B" init >/dev/null && config false > .braid/config.toml \
    && "$B" import "$WORK/dag/dag.jsonl" >/dev/null \
    && /usr/bin/time -f "%e %U %S %M" -o "$WORK/braid.time" "$B" run --json >"$WORK/run.jsonl")
  local done
  done=$(cd "$P" && "$B" health --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["by_state"].get("done", 0))')
  [ "$done" = "$N" ] || { echo "braid finished $done of $N tasks" >&2; exit 1; }
  cat "$WORK/braid.time"
}

echo "## make -j2 (once)"
cp -r "$WORK/dag" "$WORK/m" && mkdir -p "$WORK/m/out"
(cd "$WORK/m" && /usr/bin/time -f "make: wall %e s" make -j2 -s >/dev/null)

echo "## ninja -j2 and braid run (jobs=2, gates run, outside git), alternating"
printf "%-6s %10s %10s %8s %22s\n" round ninja_s braid_s ratio "braid user+sys s, RSS"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then n=$(ninja_run "$r"); read -r bw bu bs bm <<<"$(braid_run "$r")"
  else read -r bw bu bs bm <<<"$(braid_run "$r")"; n=$(ninja_run "$r"); fi
  printf "%-6s %10s %10s %8s %14s, %s MiB\n" "$r" "$n" "$bw" \
    "$(python3 -c "print(f'{$bw/$n:.2f}x')")" \
    "$(python3 -c "print(f'{$bu+$bs:.2f}')")" "$((bm / 1024))"
done
# Fail loudly if the last braid run did not run the gates.
ran=$(grep -c '"kind":"gate_finished"' "$WORK/run.jsonl" || true)
echo "gates run by braid in the last round: $ran of $N"

echo "## dispatch latency (blocker done -> dependent's agent started; ms, from events)"
P="$WORK/p$ROUNDS"
(cd "$P" && "$B" export --events -o "$WORK/export.jsonl" 2>/dev/null)
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
grep '^{"dispatched"' "$WORK/run.jsonl" 2>/dev/null || true

echo "## all cached: the cache on, every task reopened and run twice (the second run's gates are cache hits)"
(cd "$P" && config true > .braid/config.toml \
  && "$B" list --state done --json | python3 -c "import json,sys; print('\n'.join(t['id'] for t in json.load(sys.stdin)))" >"$WORK/ids" \
  && xargs -a "$WORK/ids" -n 1000 "$B" reopen >/dev/null && "$B" run --json >/dev/null \
  && xargs -a "$WORK/ids" -n 1000 "$B" reopen >/dev/null \
  && /usr/bin/time -f "braid run (cached gates): wall %e s" "$B" run --json >"$WORK/run2.jsonl")
echo "gate results cached: $(grep -c '"cached":true' "$WORK/run2.jsonl") of $N"
